/* grpc.c - the Control API's gRPC server: libnghttp2 server sessions, fed
 * with nghttp2_session_mem_recv/mem_send from libevent bufferevents, on a
 * unix socket (h2c, SO_PEERCRED) and on TCP + TLS 1.3 (ALPN h2, client
 * certificates). Message framing and headers: common/grpc_wire.c, after
 * https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cleanup.h"
#include "admission.h"
#include "clockns.h"
#include "grpc.h"
#include "grpc_wire.h"
#include "listener.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "peer_conn.h"
#include "ratelimit.h"
#include "tls.h"
#include "unix_fd.h"

#define LISTEN_BACKLOG 64

/* A request's header block: a gRPC call has a handful of short headers, so
 * more than this is refused (RST_STREAM) rather than kept. */
#define CALL_MAX_HEADER_BYTES  8192
#define CALL_PATH_MAX	       128
#define CALL_ENCODING_MAX      32
/* grpc-message before and after percent-encoding (3 bytes per byte at most). */
#define CALL_MESSAGE_MAX       512
#define CALL_MESSAGE_ENC_MAX   (3 * CALL_MESSAGE_MAX + 1)
/* Request messages being received on one connection, all streams together
 * (one message per call: service Control has no client streaming). */
#define CONN_MAX_REQUEST_BYTES (2 * GRPC_MAX_MESSAGE_BYTES)
/* Our HTTP/2 receive windows: a whole request message fits one stream's. */
#define STREAM_WINDOW_BYTES    (GRPC_MAX_MESSAGE_BYTES + GRPC_WIRE_PREFIX_BYTES)
#define CONN_WINDOW_BYTES      (CONN_MAX_REQUEST_BYTES + GRPC_WIRE_PREFIX_BYTES)
/* Frames are handed to the bufferevent only while its output holds less
 * than this; the rest waits in the streams' queues (which are bounded) until
 * the socket takes it. One DATA frame is at most DATA_CHUNK_BYTES. */
#define CONN_OUTPUT_HIGH_BYTES (64u << 10)
#define DATA_CHUNK_BYTES       (16u << 10)
/* A connection closing after GOAWAY gets this long to take it. */
#define CONN_DRAIN_TIMEOUT_S   2
/* Timers further out than this are not armed: the deadline is in effect never. */
#define DEADLINE_MAX_NS	       (UINT64_C(10) * 365 * 24 * 3600 * NSEC_PER_SEC)

enum conn_state {
	CONN_HANDSHAKE, /* TLS handshake running */
	CONN_OPEN,	/* HTTP/2 session running */
};

enum call_state {
	CALL_RECEIVING, /* request headers and message arriving; no handler yet */
	CALL_ACTIVE,	/* the handler has it: send, finish, cancel */
	CALL_ENDED,	/* answered, finished or cancelled; only the stream remains */
};

struct grpc_conn;

struct grpc_call {
	struct grpc_conn *conn;
	struct grpc_call *prev, *next;
	int32_t stream_id;
	enum call_state state;
	bool stream_gone;	/* nghttp2 closed the stream, or the connection went */
	unsigned pins;		/* handler or cancel callback on the stack */
	bool counted_streaming; /* in server->n_streaming */

	/* request */
	const struct grpc_method *method;
	size_t header_bytes;
	bool headers_done;
	bool request_ended; /* the client's END_STREAM arrived */
	bool method_is_post;
	bool content_type_ok;
	char content_type[64];
	char path[CALL_PATH_MAX + 1];
	char encoding[CALL_ENCODING_MAX + 1]; /* grpc-encoding, "" if none */
	bool timeout_bad;
	char timeout_value[16];
	uint64_t timeout_ns; /* 0: none */
	uint64_t deadline_ns;
	struct event *deadline_ev;
	struct grpc_wire_decoder decoder;
	uint32_t reserved_bytes; /* counted in conn->request_bytes */
	ProtobufCMessage *request;

	/* response */
	bool response_started; /* HEADERS submitted with a data provider */
	bool trailers_pending; /* finish() came: trailers follow the queue */
	int trailer_status;
	char *trailer_message; /* percent-encoded; malloc'd: most calls have none */
	struct evbuffer *out;  /* framed messages nghttp2 has not taken yet */

	grpc_cancel_cb cancel_cb;
	void *cancel_userdata;
};

struct grpc_conn {
	struct grpc_server *server;
	struct grpc_conn *prev, *next;
	unsigned id;
	enum conn_state state;
	struct bufferevent *bev; /* owns the socket (and the SSL) */
	SSL *ssl;		 /* TLS only */
	nghttp2_session *session;
	struct event *timer_ev; /* handshake, then drain timeout */
	struct event *idle_ev;	/* no call open for a while: close */
	struct event *pump_ev;	/* manual: pump, or the pending close */
	struct grpc_caller caller;
	char remote[NI_MAXHOST + NI_MAXSERV + 4]; /* TCP: "[host]:port" */
	bool tcp;				  /* else the unix socket: its own pool */
	char source[ADMISSION_SOURCE_MAX];	  /* TCP: the address, its port aside */

	unsigned depth;	    /* entry points on the stack: destroy waits for 0 */
	bool in_session;    /* inside nghttp2_session_mem_recv/mem_send */
	bool closing;	    /* calls cancelled, nghttp2 no longer used */
	bool draining;	    /* closing, but the output (GOAWAY) is still flushing */
	bool close_pending; /* conn_close_later(): pump_ev closes */
	int close_priority;
	char close_reason[128];
	size_t request_bytes; /* request messages being buffered */
	size_t queued_bytes;  /* response bytes in the calls' out queues */
	struct grpc_call *calls;
};

struct grpc_server {
	struct event_base *base;
	const struct grpc_method *methods;
	size_t n_methods;
	void *userdata;

	struct listener *unix_listener;
	char *unix_path; /* created by us: unlinked on free */
	int unix_fd;	 /* the listener's socket, closed on free */
	struct listener *tcp_listener;
	int tcp_port;
	SSL_CTX *tls;

	uid_t *operator_uids, *reader_uids;
	gid_t *operator_gids, *reader_gids;
	size_t n_operator_uids, n_reader_uids, n_operator_gids, n_reader_gids;
	char **operator_names, **reader_names;
	size_t n_operator_names, n_reader_names;

	struct grpc_conn *conns;
	size_t n_conns;	    /* on the unix socket */
	size_t n_tcp_conns; /* over TCP: a pool of their own, so strangers cannot fill the local one */
	struct ratelimit shed_log[_METRICS_SHED_MAX]; /* per reason, so each shows */
	struct ratelimit handshake_log;		      /* TCP handshakes that failed */
	unsigned next_conn_id;
	size_t n_streaming;
};

/* --- names --- */

static const char *const status_names[] = {
	[GRPC_STATUS_OK] = "OK",
	[GRPC_STATUS_CANCELLED] = "CANCELLED",
	[GRPC_STATUS_UNKNOWN] = "UNKNOWN",
	[GRPC_STATUS_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
	[GRPC_STATUS_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
	[GRPC_STATUS_NOT_FOUND] = "NOT_FOUND",
	[GRPC_STATUS_ALREADY_EXISTS] = "ALREADY_EXISTS",
	[GRPC_STATUS_PERMISSION_DENIED] = "PERMISSION_DENIED",
	[GRPC_STATUS_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
	[GRPC_STATUS_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
	[GRPC_STATUS_ABORTED] = "ABORTED",
	[GRPC_STATUS_OUT_OF_RANGE] = "OUT_OF_RANGE",
	[GRPC_STATUS_UNIMPLEMENTED] = "UNIMPLEMENTED",
	[GRPC_STATUS_INTERNAL] = "INTERNAL",
	[GRPC_STATUS_UNAVAILABLE] = "UNAVAILABLE",
	[GRPC_STATUS_DATA_LOSS] = "DATA_LOSS",
	[GRPC_STATUS_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *grpc_status_to_string(int status)
{
	if (status < 0 || (size_t)status >= ELEMENTSOF(status_names))
		return "UNKNOWN";
	return status_names[status];
}

const char *grpc_role_to_string(enum grpc_role role)
{
	switch (role) {
	case GRPC_ROLE_NONE:
		return "none";
	case GRPC_ROLE_READER:
		return "reader";
	case GRPC_ROLE_OPERATOR:
		return "operator";
	}
	return "invalid";
}

/* --- connection life cycle (declarations) --- */

static void conn_enter(struct grpc_conn *conn);
static void shed(struct grpc_server *server, bool tcp, enum metrics_shed why, const char *who,
		 const char *what);
static void conn_leave(struct grpc_conn *conn);
static void conn_close(struct grpc_conn *conn, bool flush, int priority, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void conn_pump(struct grpc_conn *conn);
static void conn_schedule_pump(struct grpc_conn *conn);
static void conn_idle_update(struct grpc_conn *conn);
static void conn_close_later(struct grpc_conn *conn, int priority, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* --- calls --- */

static void call_free(struct grpc_call *call)
{
	struct grpc_conn *conn = call->conn;

	if (call->prev)
		call->prev->next = call->next;
	else
		conn->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	conn->request_bytes -= call->reserved_bytes;
	if (call->out) {
		conn->queued_bytes -= evbuffer_get_length(call->out);
		evbuffer_free(call->out);
	}
	call->deadline_ev = event_unref(call->deadline_ev);
	grpc_wire_decoder_free(&call->decoder);
	call->request = protobuf_unref(call->request);
	free(call->trailer_message);
	free(call);
	conn_idle_update(conn);
}

/* Freed once nobody can reach it: the user is done with it (ended), nghttp2
 * is done with the stream, and no callback of ours has it on the stack. */
static void call_maybe_free(struct grpc_call *call)
{
	if (call->state == CALL_ENDED && call->stream_gone && call->pins == 0)
		call_free(call);
}

static void call_drop_queue(struct grpc_call *call)
{
	size_t len = evbuffer_get_length(call->out);

	evbuffer_drain(call->out, len);
	call->conn->queued_bytes -= len;
}

/* ACTIVE -> ENDED: from here the user no longer owns the call. */
static void call_leave_active(struct grpc_call *call)
{
	call->state = CALL_ENDED;
	if (call->deadline_ev)
		event_del(call->deadline_ev);
	if (call->counted_streaming) {
		call->counted_streaming = false;
		call->conn->server->n_streaming--;
	}
}

static void call_run_cancel(struct grpc_call *call)
{
	grpc_cancel_cb cb = call->cancel_cb;

	call->cancel_cb = NULL;
	if (!cb)
		return;
	call->pins++;
	cb(call, call->cancel_userdata);
	call->pins--;
}

/* End an ACTIVE call that did not finish: the cancel callback runs. */
static void call_cancel(struct grpc_call *call)
{
	if (call->state != CALL_ACTIVE)
		return;
	call_leave_active(call);
	call_run_cancel(call);
}

static void call_reset(struct grpc_call *call, uint32_t error_code)
{
	struct grpc_conn *conn = call->conn;

	call_drop_queue(call);
	if (!conn->closing && !call->stream_gone)
		(void)nghttp2_submit_rst_stream(conn->session, NGHTTP2_FLAG_NONE, call->stream_id,
						error_code);
}

static size_t format_status(const char *fmt, va_list ap, char out[CALL_MESSAGE_ENC_MAX])
	__attribute__((format(printf, 1, 0)));
static size_t format_status(const char *fmt, va_list ap, char out[CALL_MESSAGE_ENC_MAX])
{
	char message[CALL_MESSAGE_MAX];

	vsnprintf(message, sizeof(message), fmt, ap);
	return grpc_wire_percent_encode(message, out, CALL_MESSAGE_ENC_MAX);
}

static size_t encode_status(char out[CALL_MESSAGE_ENC_MAX], const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static size_t encode_status(char out[CALL_MESSAGE_ENC_MAX], const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = format_status(fmt, ap, out);
	va_end(ap);
	return n;
}

#define NV(name, value, value_len)                                                    \
	{                                                                             \
		(uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, (value_len), \
			NGHTTP2_NV_FLAG_NO_COPY_NAME                                  \
	}

/* HEADERS with END_STREAM that carry the status too ("Trailers-Only",
 * PROTOCOL-HTTP2.md): the answer to a call that sends no message. */
static int call_submit_trailers_only(struct grpc_call *call, const char *http_status, int status,
				     const char *message_enc)
{
	char status_str[12];
	size_t n_nva = 3;
	int n;

	n = snprintf(status_str, sizeof(status_str), "%d", status);
	nghttp2_nv nva[] = {
		NV(":status", http_status, strlen(http_status)),
		NV("content-type", "application/grpc", strlen("application/grpc")),
		NV("grpc-status", status_str, (size_t)n),
		NV("grpc-message", message_enc, strlen(message_enc)),
	};
	if (*message_enc)
		n_nva++;
	call->response_started = true;
	return nghttp2_submit_response(call->conn->session, call->stream_id, nva, n_nva, NULL);
}

static int call_submit_trailers(struct grpc_call *call)
{
	char status_str[12];
	size_t n_nva = 1;
	const char *message = call->trailer_message ? call->trailer_message : "";
	int n, r;

	n = snprintf(status_str, sizeof(status_str), "%d", call->trailer_status);
	nghttp2_nv nva[] = {
		NV("grpc-status", status_str, (size_t)n),
		NV("grpc-message", message, strlen(message)),
	};
	if (*message)
		n_nva++;
	r = nghttp2_submit_trailer(call->conn->session, call->stream_id, nva, n_nva);
	free(call->trailer_message); /* nghttp2 copied it */
	call->trailer_message = NULL;
	return r;
}

/* nghttp2 pulls response DATA from the call's queue; an empty queue defers
 * the stream until send() or finish() resumes it. */
static ssize_t call_data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
				 size_t length, uint32_t *data_flags, nghttp2_data_source *source,
				 void *user_data)
{
	struct grpc_call *call = source->ptr;
	struct grpc_conn *conn = user_data;
	int n;

	if (length > DATA_CHUNK_BYTES)
		length = DATA_CHUNK_BYTES;
	n = evbuffer_remove(call->out, buf, length);
	if (n < 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	conn->queued_bytes -= (size_t)n;
	if (evbuffer_get_length(call->out) == 0 && call->trailers_pending) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		call->trailers_pending = false;
		if (call_submit_trailers(call) < 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		return n;
	}
	if (n == 0)
		return NGHTTP2_ERR_DEFERRED;
	return n;
}

static int call_submit_headers(struct grpc_call *call)
{
	nghttp2_nv nva[] = {
		NV(":status", "200", 3),
		NV("content-type", "application/grpc", strlen("application/grpc")),
	};
	nghttp2_data_provider provider = {
		.source.ptr = call,
		.read_callback = call_data_read_cb,
	};

	call->response_started = true;
	return nghttp2_submit_response(call->conn->session, call->stream_id, nva, ELEMENTSOF(nva),
				       &provider);
}

/* Submit the end of the response: trailers-only if nothing was sent yet,
 * else trailers after whatever is queued. */
static void call_submit_end(struct grpc_call *call, int status, const char *message_enc)
{
	struct grpc_conn *conn = call->conn;

	if (conn->closing || call->stream_gone)
		return;
	if (!call->response_started) {
		if (call_submit_trailers_only(call, "200", status, message_enc) < 0)
			call_reset(call, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	call->trailer_status = status;
	/* Without memory for it the status still goes, without its message. */
	call->trailer_message = *message_enc ? strdup(message_enc) : NULL;
	call->trailers_pending = true;
	(void)nghttp2_session_resume_data(conn->session, call->stream_id);
}

/* The transport answers a call that never reached a handler (protocol
 * fault, permission, deadline while receiving). */
static void call_answer(struct grpc_call *call, const char *http_status, int status,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void call_answer(struct grpc_call *call, const char *http_status, int status,
			const char *fmt, ...)
{
	struct grpc_conn *conn = call->conn;
	char message_enc[CALL_MESSAGE_ENC_MAX];
	va_list ap;

	if (call->state != CALL_RECEIVING)
		return;
	va_start(ap, fmt);
	format_status(fmt, ap, message_enc);
	va_end(ap);
	call->state = CALL_ENDED;
	if (call->deadline_ev)
		event_del(call->deadline_ev);
	conn->request_bytes -= call->reserved_bytes;
	call->reserved_bytes = 0;
	grpc_wire_decoder_free(&call->decoder);
	log_debug("control conn=%u %s: stream %d %s: %s %s", conn->id, conn->caller.identity,
		  (int)call->stream_id, call->path, grpc_status_to_string(status), message_enc);
	if (conn->closing || call->stream_gone)
		return;
	/* When this comes before the client's END_STREAM, RFC 9113 section 8.1
	 * allows RST_STREAM NO_ERROR to stop its upload, but grpc-core clients
	 * (python3-grpcio 1.51, measured) then report INTERNAL instead of our
	 * status. So no RST: the rest of the request is read and dropped. */
	if (call_submit_trailers_only(call, http_status, status, message_enc) < 0)
		call_reset(call, NGHTTP2_INTERNAL_ERROR);
}

static void call_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct grpc_call *call = arg;
	struct grpc_conn *conn = call->conn;
	char message_enc[CALL_MESSAGE_ENC_MAX];

	conn_enter(conn);
	call->pins++;
	if (call->state == CALL_RECEIVING) {
		call_answer(call, "200", GRPC_STATUS_DEADLINE_EXCEEDED,
			    "deadline of %s exceeded before the request was complete",
			    call->timeout_value);
	} else if (call->state == CALL_ACTIVE) {
		encode_status(message_enc, "deadline of %s exceeded", call->timeout_value);
		call_leave_active(call);
		/* Trailers may follow whole messages only: with a message still
		 * queued, the stream is reset instead. */
		if (evbuffer_get_length(call->out) == 0)
			call_submit_end(call, GRPC_STATUS_DEADLINE_EXCEEDED, message_enc);
		else
			call_reset(call, NGHTTP2_CANCEL);
		log_debug("control conn=%u %s: stream %d %s: DEADLINE_EXCEEDED after %s", conn->id,
			  conn->caller.identity, (int)call->stream_id, call->path,
			  call->timeout_value);
		call_run_cancel(call);
	}
	conn_pump(conn);
	call->pins--;
	call_maybe_free(call);
	conn_leave(conn);
}

/* Accounting of the request bytes held for this call. */
static void call_update_reserved(struct grpc_call *call)
{
	uint32_t reserved =
		call->decoder.prefix_have == GRPC_WIRE_PREFIX_BYTES ? call->decoder.len : 0;

	call->conn->request_bytes = call->conn->request_bytes - call->reserved_bytes + reserved;
	call->reserved_bytes = reserved;
}

static int call_on_message(const uint8_t *msg, size_t msg_len, void *userdata)
{
	struct grpc_call *call = userdata;

	if (call->request)
		return -E2BIG;
	call->request = protobuf_c_message_unpack(call->method->request, NULL, msg_len, msg);
	if (!call->request)
		return -EINVAL;
	return 0;
}

static void call_feed(struct grpc_call *call, const uint8_t *data, size_t len)
{
	struct grpc_conn *conn = call->conn;
	struct grpc_wire_decoder *d = &call->decoder;
	int r;

	/* The next prefix is judged against what this connection may still
	 * buffer, so many streams cannot add up to more than
	 * CONN_MAX_REQUEST_BYTES. */
	if (d->prefix_have < GRPC_WIRE_PREFIX_BYTES) {
		size_t room = CONN_MAX_REQUEST_BYTES - conn->request_bytes;

		d->max_len =
			room < GRPC_MAX_MESSAGE_BYTES ? (uint32_t)room : GRPC_MAX_MESSAGE_BYTES;
	}
	r = grpc_wire_decoder_feed(d, data, len, call_on_message, call);
	call_update_reserved(call);
	switch (r) {
	case 0:
		return;
	case -E2BIG:
		call_answer(call, "200", GRPC_STATUS_INVALID_ARGUMENT,
			    "more than one request message for %s", call->path);
		return;
	case -EINVAL:
		call_answer(call, "200", GRPC_STATUS_INVALID_ARGUMENT,
			    "request does not parse as %s", call->method->request->name);
		return;
	case -EMSGSIZE:
		if (d->len > GRPC_MAX_MESSAGE_BYTES)
			call_answer(call, "200", GRPC_STATUS_RESOURCE_EXHAUSTED,
				    "request message of %" PRIu32 " bytes is over the limit of %u",
				    d->len, GRPC_MAX_MESSAGE_BYTES);
		else
			call_answer(call, "200", GRPC_STATUS_RESOURCE_EXHAUSTED,
				    "too many request bytes in flight on this connection");
		return;
	case -EBADMSG:
		/* PROTOCOL-HTTP2.md: a compressed message in an encoding the
		 * server does not support is UNIMPLEMENTED; the flag without an
		 * encoding (or with identity) is a protocol error, INTERNAL. */
		if (d->compressed && call->encoding[0] && strcmp(call->encoding, "identity") != 0)
			call_answer(call, "200", GRPC_STATUS_UNIMPLEMENTED,
				    "grpc-encoding %s is not supported (identity only)",
				    call->encoding);
		else if (d->compressed)
			call_answer(call, "200", GRPC_STATUS_INTERNAL,
				    "compressed flag set without a grpc-encoding");
		else
			call_answer(call, "200", GRPC_STATUS_INTERNAL,
				    "message flag byte is neither 0 nor 1");
		return;
	default:
		call_answer(call, "200", GRPC_STATUS_RESOURCE_EXHAUSTED,
			    "cannot buffer the request: %s", strerror(-r));
		return;
	}
}

static const struct grpc_method *server_find_method(const struct grpc_server *server,
						    const char *path)
{
	for (size_t i = 0; i < server->n_methods; i++)
		if (strcmp(server->methods[i].path, path) == 0)
			return &server->methods[i];
	return NULL;
}

static bool arm_deadline(struct grpc_call *call)
{
	struct grpc_conn *conn = call->conn;
	struct timeval tv;

	call->deadline_ns = clock_ns(CLOCK_MONOTONIC);
	if (__builtin_add_overflow(call->deadline_ns, call->timeout_ns, &call->deadline_ns))
		call->deadline_ns = UINT64_MAX;
	if (call->timeout_ns > DEADLINE_MAX_NS)
		return true;
	call->deadline_ev = evtimer_new(conn->server->base, call_deadline_cb, call);
	if (!call->deadline_ev)
		return false;
	tv.tv_sec = (time_t)(call->timeout_ns / NSEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(call->timeout_ns % NSEC_PER_SEC / NSEC_PER_USEC);
	return evtimer_add(call->deadline_ev, &tv) == 0;
}

/* The request's header block is complete: route and check before any of
 * the body is buffered. */
static void call_headers_done(struct grpc_call *call)
{
	struct grpc_conn *conn = call->conn;
	const struct grpc_method *method;

	call->headers_done = true;
	if (!call->method_is_post) {
		call_answer(call, "405", GRPC_STATUS_UNIMPLEMENTED, "HTTP method is not POST");
		return;
	}
	method = server_find_method(conn->server, call->path);
	if (!method) {
		call_answer(call, "200", GRPC_STATUS_UNIMPLEMENTED, "unknown method %s",
			    call->path);
		return;
	}
	call->method = method;
	/* "If Content-Type does not begin with application/grpc, gRPC servers
	 * SHOULD respond with HTTP status of 415": its mapping back to gRPC is
	 * UNKNOWN (PROTOCOL-HTTP2.md, HTTP to gRPC Status Code Mapping). */
	if (!call->content_type_ok) {
		call_answer(call, "415", GRPC_STATUS_UNKNOWN,
			    "content-type \"%s\" is not application/grpc", call->content_type);
		return;
	}
	/* A grpc-timeout that does not parse is refused rather than ignored:
	 * the client meant a deadline and would not get one. */
	if (call->timeout_bad) {
		call_answer(call, "200", GRPC_STATUS_INVALID_ARGUMENT,
			    "grpc-timeout \"%s\" is malformed", call->timeout_value);
		return;
	}
	if (conn->caller.role < method->role) {
		call_answer(call, "200", GRPC_STATUS_PERMISSION_DENIED,
			    "%s needs the %s role; caller %s has %s", method->path,
			    grpc_role_to_string(method->role), conn->caller.identity,
			    grpc_role_to_string(conn->caller.role));
		return;
	}
	if (call->timeout_value[0] && !arm_deadline(call)) {
		call_answer(call, "200", GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
}

/* The request is complete: exactly one message, then the handler. */
static void call_request_done(struct grpc_call *call)
{
	struct grpc_conn *conn = call->conn;
	struct grpc_server *server = conn->server;

	call->request_ended = true;
	if (call->state != CALL_RECEIVING)
		return;
	if (grpc_wire_decoder_partial(&call->decoder)) {
		call_answer(call, "200", GRPC_STATUS_INVALID_ARGUMENT,
			    "request message cut short by the end of the stream");
		return;
	}
	if (!call->request) {
		call_answer(call, "200", GRPC_STATUS_INVALID_ARGUMENT, "no request message for %s",
			    call->path);
		return;
	}
	grpc_wire_decoder_free(&call->decoder);

	call->state = CALL_ACTIVE;
	if (call->method->server_streaming) {
		/* Headers go out now, so the client knows the call is running
		 * before the first message. */
		if (call_submit_headers(call) < 0) {
			call_leave_active(call);
			call_reset(call, NGHTTP2_INTERNAL_ERROR);
			return;
		}
		call->counted_streaming = true;
		server->n_streaming++;
	}
	log_debug("control conn=%u %s: stream %d %s", conn->id, conn->caller.identity,
		  (int)call->stream_id, call->path);
	call->pins++;
	call->method->handler(call, call->request, server->userdata);
	call->pins--;
	call_maybe_free(call);
}

static struct grpc_call *call_new(struct grpc_conn *conn, int32_t stream_id)
{
	struct grpc_call *call;

	call = calloc(1, sizeof(*call));
	if (!call)
		return NULL;
	call->out = evbuffer_new();
	if (!call->out) {
		free(call);
		return NULL;
	}
	call->conn = conn;
	call->stream_id = stream_id;
	grpc_wire_decoder_init(&call->decoder, GRPC_MAX_MESSAGE_BYTES);
	call->next = conn->calls;
	if (conn->calls)
		conn->calls->prev = call;
	conn->calls = call;
	conn_idle_update(conn);
	return call;
}

/* --- nghttp2 callbacks (conn->in_session) --- */

static struct grpc_call *stream_call(struct grpc_conn *conn, int32_t stream_id)
{
	return nghttp2_session_get_stream_user_data(conn->session, stream_id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call;

	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	call = call_new(conn, frame->hd.stream_id);
	if (!call)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call) < 0) {
		call->stream_gone = true;
		call->state = CALL_ENDED;
		call_free(call);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return 0;
}

static bool header_is(const uint8_t *name, size_t namelen, const char *literal)
{
	return namelen == strlen(literal) && memcmp(name, literal, namelen) == 0;
}

static void copy_value(char *out, size_t size, const uint8_t *value, size_t valuelen)
{
	size_t n = valuelen < size - 1 ? valuelen : size - 1;

	memcpy(out, value, n);
	out[n] = '\0';
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call;

	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	call = stream_call(conn, frame->hd.stream_id);
	if (!call || call->headers_done)
		return 0; /* request trailers: nothing in them matters */
	/* HPACK lets a small frame name large headers (RFC 7541 section 7.3);
	 * what we keep per call is bounded here (+32 as in RFC 9113 6.5.2). */
	call->header_bytes += namelen + valuelen + 32;
	if (call->header_bytes > CALL_MAX_HEADER_BYTES)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;

	if (header_is(name, namelen, ":method")) {
		call->method_is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
	} else if (header_is(name, namelen, ":path")) {
		if (valuelen > CALL_PATH_MAX) /* not a method of ours; kept as a name */
			valuelen = CALL_PATH_MAX;
		copy_value(call->path, sizeof(call->path), value, valuelen);
	} else if (header_is(name, namelen, "content-type")) {
		static const char grpc_type[] = "application/grpc";

		/* "application/grpc" optionally followed by "+proto" or ";..." */
		call->content_type_ok =
			valuelen >= sizeof(grpc_type) - 1 &&
			memcmp(value, grpc_type, sizeof(grpc_type) - 1) == 0 &&
			(valuelen == sizeof(grpc_type) - 1 || value[sizeof(grpc_type) - 1] == '+' ||
			 value[sizeof(grpc_type) - 1] == ';');
		copy_value(call->content_type, sizeof(call->content_type), value, valuelen);
	} else if (header_is(name, namelen, "grpc-timeout")) {
		copy_value(call->timeout_value, sizeof(call->timeout_value), value, valuelen);
		call->timeout_bad = grpc_wire_parse_timeout((const char *)value, valuelen,
							    &call->timeout_ns) < 0;
	} else if (header_is(name, namelen, "grpc-encoding")) {
		copy_value(call->encoding, sizeof(call->encoding), value, valuelen);
	}
	return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			      const uint8_t *data, size_t len, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call;

	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	call = stream_call(conn, stream_id);
	/* Data after an answer (or before the headers were judged) is dropped:
	 * it was counted against the window and is no longer wanted. */
	if (call && call->state == CALL_RECEIVING && call->headers_done)
		call_feed(call, data, len);
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call;

	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	call = stream_call(conn, frame->hd.stream_id);
	if (!call)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && !call->headers_done)
		call_headers_done(call);
	if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
		call_request_done(call);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call;

	call = stream_call(conn, stream_id);
	if (!call)
		return 0;
	(void)nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	call->stream_gone = true;
	if (call->state == CALL_ACTIVE)
		log_debug("control conn=%u %s: stream %d %s: cancelled by the client (%s)",
			  conn->id, conn->caller.identity, (int)stream_id, call->path,
			  nghttp2_http2_strerror(error_code));
	if (call->state == CALL_RECEIVING)
		call->state = CALL_ENDED;
	call->pins++;
	call_cancel(call);
	call->pins--;
	call_maybe_free(call);
	return 0;
}

/* --- connections --- */

static void conn_enter(struct grpc_conn *conn)
{
	conn->depth++;
}

static void conn_destroy(struct grpc_conn *conn)
{
	struct grpc_server *server = conn->server;

	/* nghttp2 first: no callback of it may see a freed call. */
	if (conn->session)
		nghttp2_session_del(conn->session);
	while (conn->calls) {
		struct grpc_call *call = conn->calls;

		call->stream_gone = true;
		call->state = CALL_ENDED;
		call_free(call);
	}
	conn->timer_ev = event_unref(conn->timer_ev);
	conn->idle_ev = event_unref(conn->idle_ev);
	conn->pump_ev = event_unref(conn->pump_ev);
	if (conn->bev) {
		if (conn->ssl && conn->state == CONN_OPEN &&
		    evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0) {
			(void)SSL_shutdown(conn->ssl);
			ERR_clear_error();
		}
		conn->bev =
			bufferevent_unref(conn->bev); /* BEV_OPT_CLOSE_ON_FREE: SSL_free + close */
	}
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		server->conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	if (conn->tcp)
		server->n_tcp_conns--;
	else
		server->n_conns--;
	free(conn);
}

static void conn_leave(struct grpc_conn *conn)
{
	if (--conn->depth == 0 && conn->closing && !conn->draining)
		conn_destroy(conn);
}

static void conn_drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct grpc_conn *conn = arg;

	conn_enter(conn);
	if (conn->state == CONN_HANDSHAKE) {
		metrics_tls_handshake_failed(&vcd_metrics, METRICS_LISTENER_CONTROL);
		shed(conn->server, true, METRICS_SHED_DEADLINE, conn->remote,
		     "TLS handshake not complete within its deadline, closed");
		conn_close(conn, false, LOG_DEBUG, "handshake timeout");
	}
	conn->draining = false; /* drain timeout: close now */
	conn_leave(conn);
}

/* Close: every ACTIVE call is cancelled now (its callback runs), and nghttp2
 * is not used again. With flush, a GOAWAY is sent first and the connection
 * stays until its output is written (bounded by CONN_DRAIN_TIMEOUT_S); the
 * memory goes when the outermost entry point leaves. */
static void conn_close(struct grpc_conn *conn, bool flush, int priority, const char *fmt, ...)
{
	char reason[256];
	va_list ap;

	if (conn->closing)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	log_msg(priority, "control conn=%u %s: closed: %s", conn->id,
		conn->caller.identity[0] ? conn->caller.identity : conn->remote, reason);

	conn->closing = true;
	if (flush && conn->session && !conn->in_session) {
		/* GOAWAY, and whatever nghttp2 queued before it (RFC 9113 6.8:
		 * the last stream id tells the client what was processed). */
		(void)nghttp2_session_terminate_session(conn->session, NGHTTP2_PROTOCOL_ERROR);
		conn->in_session = true;
		for (;;) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(conn->session, &data);

			if (n <= 0 || bufferevent_write(conn->bev, data, (size_t)n) < 0)
				break;
		}
		conn->in_session = false;
	}
	for (struct grpc_call *call = conn->calls; call;) {
		if (call->state != CALL_ACTIVE) {
			call = call->next;
			continue;
		}
		/* The callback may end other calls, but nothing is freed before
		 * conn_destroy (stream_gone is false while nghttp2 lives). */
		call_cancel(call);
		call = conn->calls;
	}
	if (conn->bev)
		bufferevent_disable(conn->bev, EV_READ);
	if (flush && conn->bev && evbuffer_get_length(bufferevent_get_output(conn->bev)) > 0) {
		const struct timeval tv = { .tv_sec = CONN_DRAIN_TIMEOUT_S };

		conn->draining = true;
		evtimer_add(conn->timer_ev, &tv);
	}
}

/* Move frames from nghttp2 to the bufferevent while its output is below
 * CONN_OUTPUT_HIGH_BYTES; the write callback calls again as it drains. */
static void conn_pump(struct grpc_conn *conn)
{
	struct evbuffer *output;

	if (conn->closing || conn->close_pending || conn->in_session || !conn->session)
		return;
	output = bufferevent_get_output(conn->bev);
	conn->in_session = true;
	while (evbuffer_get_length(output) < CONN_OUTPUT_HIGH_BYTES) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(conn->session, &data);

		if (n < 0) {
			conn->in_session = false;
			conn_close(conn, false, LOG_DEBUG, "HTTP/2 error: %s",
				   nghttp2_strerror((int)n));
			return;
		}
		if (n == 0)
			break;
		if (bufferevent_write(conn->bev, data, (size_t)n) < 0) {
			conn->in_session = false;
			conn_close(conn, false, LOG_WARNING, "out of memory for output");
			return;
		}
	}
	conn->in_session = false;
	if (!nghttp2_session_want_read(conn->session) &&
	    !nghttp2_session_want_write(conn->session)) {
		/* Ended cleanly (the client's GOAWAY, all streams done): our
		 * GOAWAY says NO_ERROR; conn_close's own PROTOCOL_ERROR is then a
		 * no-op (nghttp2 terminates a session once). */
		(void)nghttp2_session_terminate_session(conn->session, NGHTTP2_NO_ERROR);
		conn_close(conn, true, LOG_DEBUG, "HTTP/2 session ended");
	}
}

static void conn_schedule_pump(struct grpc_conn *conn)
{
	if (!conn->closing)
		event_active(conn->pump_ev, EV_TIMEOUT, 1);
}

static void conn_close_later(struct grpc_conn *conn, int priority, const char *fmt, ...)
{
	va_list ap;

	if (conn->closing || conn->close_pending)
		return;
	conn->close_pending = true;
	conn->close_priority = priority;
	va_start(ap, fmt);
	vsnprintf(conn->close_reason, sizeof(conn->close_reason), fmt, ap);
	va_end(ap);
	event_active(conn->pump_ev, EV_TIMEOUT, 1);
}

static void conn_pump_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct grpc_conn *conn = arg;

	conn_enter(conn);
	if (conn->close_pending)
		conn_close(conn, false, conn->close_priority, "%s", conn->close_reason);
	else
		conn_pump(conn);
	conn_leave(conn);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct grpc_conn *conn = arg;
	struct evbuffer *input = bufferevent_get_input(bev);

	conn_enter(conn);
	while (!conn->closing && !conn->close_pending && evbuffer_get_length(input) > 0) {
		struct evbuffer_iovec vec;
		ssize_t n;

		if (evbuffer_peek(input, -1, NULL, &vec, 1) < 1)
			break;
		conn->in_session = true;
		n = nghttp2_session_mem_recv(conn->session, vec.iov_base, vec.iov_len);
		conn->in_session = false;
		if (conn->closing)
			break;
		if (n < 0) {
			/* Not HTTP/2 (bad preface), a flood, or our callback
			 * failed: say GOAWAY if we can, and close. */
			evbuffer_drain(input, evbuffer_get_length(input));
			conn_close(conn, true, LOG_DEBUG, "HTTP/2 error: %s",
				   nghttp2_strerror((int)n));
			break;
		}
		evbuffer_drain(input, (size_t)n);
	}
	conn_pump(conn);
	conn_leave(conn);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct grpc_conn *conn = arg;

	conn_enter(conn);
	if (conn->draining && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn->draining = false;
	conn_pump(conn);
	conn_leave(conn);
}

/* Why the bufferevent failed, in words. */
static const char *conn_error_string(struct grpc_conn *conn, char *buf, size_t size)
{
	unsigned long e, root = 0;
	socklen_t len = sizeof(int);
	int soerr = 0;
	long verify;

	if (conn->ssl) {
		/* libevent hands its saved errors back last-in first-out, with
		 * SSL_get_error() codes (no library) among them: the last real
		 * one popped is the root cause. */
		while ((e = bufferevent_get_openssl_error(conn->bev)) != 0)
			if (ERR_GET_LIB(e) != 0)
				root = e;
		ERR_clear_error();
		verify = SSL_get_verify_result(conn->ssl);
		if (conn->state == CONN_HANDSHAKE && verify != X509_V_OK) {
			snprintf(buf, size, "client certificate refused: %s",
				 verify == X509_V_ERR_APPLICATION_VERIFICATION
					 ? "no SAN on the control lists"
					 : X509_verify_cert_error_string(verify));
			return buf;
		}
		if (root) {
			ERR_error_string_n(root, buf, size);
			return buf;
		}
	}
	if (getsockopt(bufferevent_getfd(conn->bev), SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 &&
	    soerr != 0)
		return strerror(soerr);
	return "connection closed";
}

/* The leaf's first SAN (dNSName or URI), for a caller on neither list. */
static void first_san(SSL *ssl, char *out, size_t size)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	GENERAL_NAMES *sans;

	snprintf(out, size, "(no SAN)");
	if (!cert)
		return;
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	if (!sans)
		return;
	for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		const ASN1_IA5STRING *s;

		if (gn->type == GEN_DNS)
			s = gn->d.dNSName;
		else if (gn->type == GEN_URI)
			s = gn->d.uniformResourceIdentifier;
		else
			continue;
		/* Printable ASCII only: the name goes to logs and events. */
		char name[GRPC_IDENTITY_MAX + 1];
		int len = ASN1_STRING_length(s);
		const unsigned char *p = ASN1_STRING_get0_data(s);

		if (len <= 0 || (size_t)len > GRPC_IDENTITY_MAX)
			continue;
		for (int k = 0; k < len; k++)
			name[k] = p[k] >= 0x21 && p[k] <= 0x7e ? (char)p[k] : '?';
		name[len] = '\0';
		snprintf(out, size, "%s", name);
		break;
	}
	GENERAL_NAMES_free(sans);
}

static void conn_tls_caller(struct grpc_conn *conn)
{
	struct grpc_server *server = conn->server;
	struct grpc_caller *caller = &conn->caller;

	caller->tls = true;
	for (size_t i = 0; i < server->n_operator_names; i++)
		if (tls_peer_has_name(conn->ssl, server->operator_names[i])) {
			caller->role = GRPC_ROLE_OPERATOR;
			snprintf(caller->identity, sizeof(caller->identity), "%s",
				 server->operator_names[i]);
			return;
		}
	for (size_t i = 0; i < server->n_reader_names; i++)
		if (tls_peer_has_name(conn->ssl, server->reader_names[i])) {
			caller->role = GRPC_ROLE_READER;
			snprintf(caller->identity, sizeof(caller->identity), "%s",
				 server->reader_names[i]);
			return;
		}
	caller->role = GRPC_ROLE_NONE;
	first_san(conn->ssl, caller->identity, sizeof(caller->identity));
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* Per connection: a burst of 200 stream resets, then 20 a second; 8
 * CONTINUATION frames per header block; 32 entries per SETTINGS; 1000 acks
 * owed at once. A controller opens a handful of streams a second. */
#define STREAM_RESET_BURST   200
#define STREAM_RESET_RATE    20
#define MAX_CONTINUATIONS    8
#define MAX_SETTINGS_ENTRIES 32
#define MAX_OUTBOUND_ACKS    1000

static int conn_start_session(struct grpc_conn *conn)
{
	nghttp2_session_callbacks *callbacks;
	nghttp2_option *option;
	const nghttp2_settings_entry settings[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, GRPC_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW_BYTES },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, CALL_MAX_HEADER_BYTES },
	};
	int r;

	if (nghttp2_session_callbacks_new(&callbacks) != 0)
		return -ENOMEM;
	nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
	/* Floods a client can send without ever opening a call: resets (the
	 * "rapid reset" attack, CVE-2023-44487), CONTINUATION frames,
	 * SETTINGS and PINGs whose acks pile up. nghttp2 ends the session
	 * (GOAWAY) when one is exceeded; only that connection closes. */
	if (nghttp2_option_new(&option) != 0) {
		nghttp2_session_callbacks_del(callbacks);
		return -ENOMEM;
	}
	nghttp2_option_set_stream_reset_rate_limit(option, STREAM_RESET_BURST, STREAM_RESET_RATE);
	nghttp2_option_set_max_continuations(option, MAX_CONTINUATIONS);
	nghttp2_option_set_max_settings(option, MAX_SETTINGS_ENTRIES);
	nghttp2_option_set_max_outbound_ack(option, MAX_OUTBOUND_ACKS);
	r = nghttp2_session_server_new2(&conn->session, callbacks, conn, option);
	nghttp2_option_del(option);
	nghttp2_session_callbacks_del(callbacks);
	if (r != 0)
		return -ENOMEM;
	r = nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, settings,
				    ELEMENTSOF(settings));
	if (r == 0)
		r = nghttp2_session_set_local_window_size(conn->session, NGHTTP2_FLAG_NONE, 0,
							  CONN_WINDOW_BYTES);
	if (r != 0)
		return -ENOMEM;
	conn->state = CONN_OPEN;
	bufferevent_setcb(conn->bev, conn_read_cb, conn_write_cb, conn_event_cb, conn);
	return 0;
}

static void conn_opened(struct grpc_conn *conn)
{
	log_debug("control conn=%u %s: open, role %s", conn->id, conn->caller.identity,
		  grpc_role_to_string(conn->caller.role));
	conn_idle_update(conn);
}

/* A connection holds one of GRPC_MAX_CONNECTIONS slots: one that has no
 * call open gives it back after a while (a caller with no role, who can
 * only be refused, sooner), with GOAWAY so that a client reconnects. */
static void conn_idle_update(struct grpc_conn *conn)
{
	struct timeval tv = { .tv_sec = conn->caller.role == GRPC_ROLE_NONE
						? GRPC_IDLE_TIMEOUT_NO_ROLE_S
						: GRPC_IDLE_TIMEOUT_S };

	if (!conn->idle_ev)
		return;
	if (conn->calls || conn->closing || conn->state != CONN_OPEN)
		event_del(conn->idle_ev);
	else
		evtimer_add(conn->idle_ev, &tv);
}

static void conn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct grpc_conn *conn = arg;

	conn_enter(conn);
	if (!conn->closing && !conn->calls)
		conn_close(conn, true, LOG_DEBUG, "idle for %d s",
			   conn->caller.role == GRPC_ROLE_NONE ? GRPC_IDLE_TIMEOUT_NO_ROLE_S
							       : GRPC_IDLE_TIMEOUT_S);
	conn_leave(conn);
}

static void conn_handshake_done(struct grpc_conn *conn)
{
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;

	event_del(conn->timer_ev);
	SSL_get0_alpn_selected(conn->ssl, &alpn, &alpn_len);
	if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
		log_warning("control conn=%u %s: TLS client did not offer ALPN h2, closed",
			    conn->id, conn->remote);
		conn_close(conn, false, LOG_DEBUG, "no ALPN h2");
		return;
	}
	conn_tls_caller(conn);
	if (conn_start_session(conn) < 0) {
		conn_close(conn, false, LOG_WARNING, "out of memory for the HTTP/2 session");
		return;
	}
	conn_opened(conn);
	/* The client's preface may have come with its Finished. */
	if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
		conn_read_cb(conn->bev, conn);
	else
		conn_pump(conn);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct grpc_conn *conn = arg;
	char buf[256];

	conn_enter(conn);
	if (conn->closing) {
		conn->draining = false; /* the socket is gone: nothing left to flush */
	} else if (what & BEV_EVENT_CONNECTED) {
		if (conn->state == CONN_HANDSHAKE)
			conn_handshake_done(conn);
	} else if (conn->state == CONN_HANDSHAKE) {
		metrics_tls_handshake_failed(&vcd_metrics, METRICS_LISTENER_CONTROL);
		log_ratelimited(&conn->server->handshake_log, LOG_WARNING, 0,
				"control conn=%u %s: TLS handshake failed: %s", conn->id,
				conn->remote, conn_error_string(conn, buf, sizeof(buf)));
		conn_close(conn, false, LOG_DEBUG, "handshake failed");
	} else if (what & BEV_EVENT_EOF) {
		conn_close(conn, false, LOG_DEBUG, "end of stream from the client");
	} else {
		conn_close(conn, false, LOG_DEBUG, "%s", conn_error_string(conn, buf, sizeof(buf)));
	}
	conn_leave(conn);
}

static struct grpc_conn *conn_new(struct grpc_server *server)
{
	struct grpc_conn *conn = calloc(1, sizeof(*conn));

	if (!conn)
		return NULL;
	conn->server = server;
	conn->id = ++server->next_conn_id;
	conn->timer_ev = evtimer_new(server->base, conn_drain_timeout_cb, conn);
	conn->idle_ev = evtimer_new(server->base, conn_idle_cb, conn);
	conn->pump_ev = event_new(server->base, -1, 0, conn_pump_ev_cb, conn);
	if (!conn->timer_ev || !conn->idle_ev || !conn->pump_ev) {
		conn->timer_ev = event_unref(conn->timer_ev);
		conn->idle_ev = event_unref(conn->idle_ev);
		conn->pump_ev = event_unref(conn->pump_ev);
		free(conn);
		return NULL;
	}
	conn->next = server->conns;
	if (server->conns)
		server->conns->prev = conn;
	server->conns = conn;
	return conn;
}

static bool id_in(uint32_t id, const uint32_t *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] == id)
			return true;
	return false;
}

static enum grpc_role unix_role(const struct grpc_server *server, uid_t uid, gid_t gid)
{
	if (uid == 0 || uid == geteuid() ||
	    id_in(uid, server->operator_uids, server->n_operator_uids) ||
	    id_in(gid, server->operator_gids, server->n_operator_gids))
		return GRPC_ROLE_OPERATOR;
	if (id_in(uid, server->reader_uids, server->n_reader_uids) ||
	    id_in(gid, server->reader_gids, server->n_reader_gids))
		return GRPC_ROLE_READER;
	return GRPC_ROLE_NONE;
}

static const struct admission_limits tcp_handshake_limits = {
	.max_total = GRPC_MAX_HANDSHAKES,
	.max_per_source = GRPC_MAX_HANDSHAKES_PER_SOURCE,
	.normal_ms = GRPC_HANDSHAKE_TIMEOUT_S * 1000,
	.pressed_ms = GRPC_HANDSHAKE_PRESSED_MS,
};

/* A connection closed before it was served: counted, and logged within a budget. */
static void shed(struct grpc_server *server, bool tcp, enum metrics_shed why, const char *who,
		 const char *what)
{
	metrics_shed(&vcd_metrics, tcp ? METRICS_SOCKET_CONTROL_TCP : METRICS_SOCKET_CONTROL_UNIX,
		     why);
	log_ratelimited(&server->shed_log[why], LOG_WARNING, 0, "control connection %s %s: %s",
			tcp ? "from" : "on the unix socket,", who, what);
}

static bool unix_full(struct grpc_server *server, const char *who)
{
	char what[96];

	if (server->n_conns < GRPC_MAX_CONNECTIONS)
		return false;
	snprintf(what, sizeof(what), "refused: %zu connections open (max %d)", server->n_conns,
		 GRPC_MAX_CONNECTIONS);
	shed(server, false, METRICS_SHED_FULL, who, what);
	return true;
}

/* Room for a TCP connection from source? Its address may hold a share of
 * the handshakes running; when they or the TCP connections are all taken,
 * the oldest handshake makes room. *ret_deadline_ms: its handshake's. */
static bool tcp_admit(struct grpc_server *server, const char *source, const char *who,
		      unsigned *ret_deadline_ms)
{
	struct grpc_conn *oldest = NULL;
	unsigned n_hs = 0, n_same = 0;
	enum admission_verdict v;
	char what[128];

	for (struct grpc_conn *c = server->conns; c; c = c->next) {
		if (!c->tcp || c->state != CONN_HANDSHAKE || c->closing)
			continue;
		n_hs++;
		n_same += strcmp(c->source, source) == 0;
		oldest = c; /* the list is newest first */
	}
	v = admission_judge(&tcp_handshake_limits, n_hs, n_same);
	if (v == ADMISSION_ADMIT && server->n_tcp_conns >= GRPC_MAX_CONNECTIONS)
		v = oldest ? ADMISSION_EVICT_OLDEST : ADMISSION_REFUSE_SOURCE;
	switch (v) {
	case ADMISSION_REFUSE_SOURCE:
		if (n_same >= GRPC_MAX_HANDSHAKES_PER_SOURCE) {
			snprintf(what, sizeof(what),
				 "closed at accept: that address has %u TLS handshakes running "
				 "(limit %d)",
				 n_same, GRPC_MAX_HANDSHAKES_PER_SOURCE);
			shed(server, true, METRICS_SHED_PER_SOURCE, who, what);
		} else {
			snprintf(what, sizeof(what), "refused: %zu TCP connections open (max %d)",
				 server->n_tcp_conns, GRPC_MAX_CONNECTIONS);
			shed(server, true, METRICS_SHED_FULL, who, what);
		}
		return false;
	case ADMISSION_EVICT_OLDEST:
		shed(server, true, METRICS_SHED_EVICTED, oldest->remote,
		     "TLS handshake not finished when the slots were taken: the oldest, closed to "
		     "make room");
		conn_enter(oldest);
		conn_close(oldest, false, LOG_DEBUG, "evicted");
		oldest->draining = false;
		conn_leave(oldest);
		break;
	case ADMISSION_ADMIT:
		break;
	}
	*ret_deadline_ms = admission_deadline_ms(&tcp_handshake_limits, n_hs);
	return true;
}

static void unix_accept_cb(evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
	struct grpc_server *server = arg;
	_cleanup_close_ int cfd = fd;
	char who[64];
	struct grpc_conn *conn;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int r;

	r = unix_fd_peer_cred(cfd, &pid, &uid, &gid);
	if (r < 0) {
		log_warning_errno(r, "control connection without credentials refused");
		return;
	}
	snprintf(who, sizeof(who), "pid=%d uid=%u", (int)pid, (unsigned)uid);
	if (unix_full(server, who))
		return;
	conn = conn_new(server);
	if (!conn) {
		log_warning("control connection refused: out of memory");
		return;
	}
	server->n_conns++;
	conn->caller.pid = pid;
	conn->caller.uid = uid;
	conn->caller.gid = gid;
	conn->caller.role = unix_role(server, uid, gid);
	snprintf(conn->caller.identity, sizeof(conn->caller.identity), "uid=%u pid=%d",
		 (unsigned)uid, (int)pid);

	conn_enter(conn);
	conn->bev = bufferevent_socket_new(server->base, cfd,
					   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!conn->bev) {
		conn_close(conn, false, LOG_WARNING, "out of memory");
		conn_leave(conn);
		return;
	}
	TAKE_FD(cfd);
	if (conn_start_session(conn) < 0) {
		conn_close(conn, false, LOG_WARNING, "out of memory for the HTTP/2 session");
		conn_leave(conn);
		return;
	}
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	conn_opened(conn);
	conn_pump(conn);
	conn_leave(conn);
}

static void tcp_accept_cb(evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
	struct grpc_server *server = arg;
	char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?", source[ADMISSION_SOURCE_MAX];
	struct grpc_conn *conn;
	unsigned deadline_ms;
	struct timeval tv;
	int one = 1;
	SSL *ssl;

	(void)getnameinfo(sa, (socklen_t)socklen, host, sizeof(host), port, sizeof(port),
			  NI_NUMERICHOST | NI_NUMERICSERV);
	admission_source(sa, (size_t)socklen, source);
	if (!tcp_admit(server, source, host, &deadline_ms)) {
		close_nointr(fd);
		return;
	}
	tv = (struct timeval){ .tv_sec = deadline_ms / 1000,
			       .tv_usec = (deadline_ms % 1000) * 1000 };
	conn = conn_new(server);
	if (!conn) {
		log_warning("control connection from %s refused: out of memory", host);
		close_nointr(fd);
		return;
	}
	conn->tcp = true;
	server->n_tcp_conns++;
	snprintf(conn->source, sizeof(conn->source), "%s", source);
	conn_enter(conn);
	snprintf(conn->remote, sizeof(conn->remote), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
		 port);
	log_debug("control conn=%u %s: TCP connection", conn->id, conn->remote);
	/* Calls are small requests and answers: Nagle plus delayed ACKs would
	 * add 40 ms to some of them. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ssl = SSL_new(server->tls);
	if (!ssl) {
		ERR_clear_error();
		close_nointr(fd);
		conn_close(conn, false, LOG_WARNING, "out of memory for TLS");
		conn_leave(conn);
		return;
	}
	/* A client that vanishes without close_notify has simply gone: OpenSSL
	 * 3 would make that an error (unexpected EOF), libevent then an error
	 * event rather than BEV_EVENT_EOF. */
	SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* On failure libevent 2.1 has already freed ssl (BEV_OPT_CLOSE_ON_FREE), not the fd. */
	conn->bev = bufferevent_openssl_socket_new(server->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
						   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!conn->bev) {
		close_nointr(fd);
		conn_close(conn, false, LOG_WARNING, "out of memory for TLS");
		conn_leave(conn);
		return;
	}
	conn->ssl = ssl;
	conn->state = CONN_HANDSHAKE;
	bufferevent_openssl_set_allow_dirty_shutdown(conn->bev, 1);
	bufferevent_setcb(conn->bev, NULL, NULL, conn_event_cb, conn);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	evtimer_add(conn->timer_ev, &tv);
	conn_leave(conn);
}

/* --- listeners --- */

static int unix_listen(const char *path, char *err, size_t err_size)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_un sa;
	const char *what;
	struct stat st;
	int r;

	r = unix_fd_address(path, &sa);
	if (r < 0) {
		snprintf(err, err_size, "control socket path %s is too long", path);
		return r;
	}
	/* Replace a socket left by an earlier run; anything else at the path is
	 * not ours to delete. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, err_size, "%s exists and is not a socket", path);
			return -EEXIST;
		}
		if (unlink(path) < 0) {
			what = "cannot remove the old socket";
			goto fail;
		}
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		what = "socket(AF_UNIX) for";
		goto fail;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		what = "cannot bind";
		goto fail;
	}
	/* Before listen(): nobody connects while the mode is the umask's. */
	if (chmod(path, 0660) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		what = "cannot chmod or listen on";
		r = -errno;
		(void)unlink(path);
		errno = -r;
		goto fail;
	}
	return TAKE_FD(fd);

fail:
	r = -errno;
	snprintf(err, err_size, "%s control socket %s: %s", what, path, strerror(-r));
	return r;
}

static int tcp_listen(const char *host_port, int *ret_port, char *err, size_t err_size)
{
	struct addrinfo *addrs = NULL;
	struct sockaddr_storage ss;
	socklen_t ss_len = sizeof(ss);
	int fd = -1, r, one = 1;

	r = tcp_resolve(host_port, true, &addrs);
	if (r == -EINVAL) {
		snprintf(err, err_size, "control address \"%s\" is not host:port", host_port);
		return r;
	}
	if (r < 0) {
		snprintf(err, err_size, "cannot resolve control address %s: %s", host_port,
			 strerror(-r));
		return -EADDRNOTAVAIL;
	}
	r = -EADDRNOTAVAIL;
	for (const struct addrinfo *ai = addrs; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
			break;
		r = -errno;
		fd = close_nointr(fd);
	}
	freeaddrinfo(addrs);
	if (fd < 0) {
		snprintf(err, err_size, "cannot listen on control address %s: %s", host_port,
			 strerror(-r));
		return r;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &ss_len) < 0) {
		r = -errno;
		snprintf(err, err_size, "getsockname on control address %s: %s", host_port,
			 strerror(-r));
		close_nointr(fd);
		return r;
	}
	*ret_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* ALPN: h2 or nothing (RFC 7301); without it the handshake completes and
 * conn_handshake_done() closes, so a client sees a clean close. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	for (unsigned i = 0; i < inlen;) {
		unsigned len = in[i];

		if (i + 1 + len > inlen)
			break;
		if (len == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + len;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

static int copy_ids(const uint32_t *ids, size_t n, uint32_t **ret, size_t *ret_n, const char *what,
		    char *err, size_t err_size)
{
	if (n > GRPC_MAX_IDENTITIES) {
		snprintf(err, err_size, "more than %d control %s", GRPC_MAX_IDENTITIES, what);
		return -E2BIG;
	}
	if (n == 0)
		return 0;
	*ret = malloc(n * sizeof(**ret));
	if (!*ret)
		return -ENOMEM;
	memcpy(*ret, ids, n * sizeof(**ret));
	*ret_n = n;
	return 0;
}

static int copy_names(const char *const *names, size_t n, char ***ret, size_t *ret_n,
		      const char *what, char *err, size_t err_size)
{
	if (n > GRPC_MAX_IDENTITIES) {
		snprintf(err, err_size, "more than %d control %s", GRPC_MAX_IDENTITIES, what);
		return -E2BIG;
	}
	if (n == 0)
		return 0;
	*ret = calloc(n, sizeof(**ret));
	if (!*ret)
		return -ENOMEM;
	*ret_n = n;
	for (size_t i = 0; i < n; i++) {
		if (!names[i] || !*names[i] || strlen(names[i]) > GRPC_IDENTITY_MAX) {
			snprintf(err, err_size, "control %s name %zu is empty or too long", what,
				 i);
			return -EINVAL;
		}
		(*ret)[i] = strdup(names[i]);
		if (!(*ret)[i])
			return -ENOMEM;
	}
	return 0;
}

static void free_names(char **names, size_t n)
{
	if (!names)
		return;
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int grpc_server_new(struct event_base *base, const struct grpc_server_config *config,
		    const struct grpc_method *methods, size_t n_methods, void *userdata,
		    struct grpc_server **ret, char *err, size_t err_size)
{
	struct grpc_server *server;
	int fd, r;

	snprintf(err, err_size, "out of memory");
	if (!base || !config || (!methods && n_methods > 0) || !ret) {
		snprintf(err, err_size, "invalid arguments");
		return -EINVAL;
	}
	if (config->tcp_addr && !config->tls) {
		snprintf(err, err_size, "control address %s needs a TLS context", config->tcp_addr);
		return -EINVAL;
	}
	server = calloc(1, sizeof(*server));
	if (!server)
		return -ENOMEM;
	server->base = base;
	server->methods = methods;
	server->n_methods = n_methods;
	server->userdata = userdata;
	server->tcp_port = -ENOTCONN;
	server->unix_fd = -1;
	for (int i = 0; i < _METRICS_SHED_MAX; i++)
		server->shed_log[i] =
			RATELIMIT_INIT(GRPC_SHED_LOG_INTERVAL_NS, GRPC_SHED_LOG_BURST);
	server->handshake_log = RATELIMIT_INIT(GRPC_SHED_LOG_INTERVAL_NS, GRPC_SHED_LOG_BURST);

	r = copy_ids(config->operator_uids, config->n_operator_uids, &server->operator_uids,
		     &server->n_operator_uids, "operator uids", err, err_size);
	if (r == 0)
		r = copy_ids(config->reader_uids, config->n_reader_uids, &server->reader_uids,
			     &server->n_reader_uids, "reader uids", err, err_size);
	if (r == 0)
		r = copy_ids(config->operator_gids, config->n_operator_gids, &server->operator_gids,
			     &server->n_operator_gids, "operator gids", err, err_size);
	if (r == 0)
		r = copy_ids(config->reader_gids, config->n_reader_gids, &server->reader_gids,
			     &server->n_reader_gids, "reader gids", err, err_size);
	if (r == 0)
		r = copy_names(config->operator_names, config->n_operator_names,
			       &server->operator_names, &server->n_operator_names, "operator", err,
			       err_size);
	if (r == 0)
		r = copy_names(config->reader_names, config->n_reader_names, &server->reader_names,
			       &server->n_reader_names, "reader", err, err_size);
	if (r < 0)
		goto fail;

	if (config->listen_unix_fd >= 0 || config->unix_path) {
		if (config->listen_unix_fd >= 0) {
			fd = config->listen_unix_fd;
		} else {
			fd = unix_listen(config->unix_path, err, err_size);
			if (fd < 0) {
				r = fd;
				goto fail;
			}
			server->unix_path = strdup(config->unix_path);
			if (!server->unix_path) {
				(void)unlink(config->unix_path);
				close_nointr(fd);
				r = -ENOMEM;
				goto fail;
			}
		}
		if (config->listen_unix_fd < 0)
			server->unix_fd = fd;
		server->unix_fd = fd;
		r = listener_new(base, METRICS_SOCKET_CONTROL_UNIX, fd, false, unix_accept_cb,
				 server, &server->unix_listener);
		if (r < 0)
			goto fail;
	}

	if (config->tcp_addr) {
		fd = tcp_listen(config->tcp_addr, &server->tcp_port, err, err_size);
		if (fd < 0) {
			r = fd;
			goto fail;
		}
		r = listener_new(base, METRICS_SOCKET_CONTROL_TCP, fd, true, tcp_accept_cb, server,
				 &server->tcp_listener);
		if (r < 0) {
			close_nointr(fd);
			server->tcp_port = -ENOTCONN;
			goto fail;
		}
		SSL_CTX_up_ref(config->tls);
		server->tls = config->tls;
		SSL_CTX_set_alpn_select_cb(server->tls, alpn_select_cb, NULL);
	}

	*ret = server;
	return 0;

fail:
	/* A listen_unix_fd handed in stays the caller's when we fail. */
	if (config->listen_unix_fd >= 0 && server->unix_fd == config->listen_unix_fd)
		server->unix_fd = -1;
	grpc_server_free(server);
	return r;
}

struct grpc_server *grpc_server_free(struct grpc_server *server)
{
	if (!server)
		return NULL;
	while (server->conns) {
		struct grpc_conn *conn = server->conns;

		/* Not from inside one of our callbacks: a connection on the
		 * stack could not be freed. */
		assert(conn->depth == 0);
		conn_enter(conn);
		conn_close(conn, false, LOG_DEBUG, "server shutting down");
		conn->draining = false;
		conn_leave(conn);
	}
	server->unix_listener = listener_free(server->unix_listener);
	close_nointr(server->unix_fd);
	if (server->unix_path) {
		(void)unlink(server->unix_path);
		free(server->unix_path);
	}
	server->tcp_listener = listener_free(server->tcp_listener);
	server->tls = ssl_ctx_unref(server->tls);
	free(server->operator_uids);
	free(server->reader_uids);
	free(server->operator_gids);
	free(server->reader_gids);
	free_names(server->operator_names, server->n_operator_names);
	free_names(server->reader_names, server->n_reader_names);
	free(server);
	return NULL;
}

int grpc_server_set_roles(struct grpc_server *server, const struct grpc_server_config *config,
			  char *err, size_t err_size)
{
	/* All copied before anything is swapped: on failure the old lists stand. */
	struct grpc_server n = { 0 };
	int r;

	snprintf(err, err_size, "out of memory");
	r = copy_ids(config->operator_uids, config->n_operator_uids, &n.operator_uids,
		     &n.n_operator_uids, "operator uids", err, err_size);
	if (r == 0)
		r = copy_ids(config->reader_uids, config->n_reader_uids, &n.reader_uids,
			     &n.n_reader_uids, "reader uids", err, err_size);
	if (r == 0)
		r = copy_ids(config->operator_gids, config->n_operator_gids, &n.operator_gids,
			     &n.n_operator_gids, "operator gids", err, err_size);
	if (r == 0)
		r = copy_ids(config->reader_gids, config->n_reader_gids, &n.reader_gids,
			     &n.n_reader_gids, "reader gids", err, err_size);
	if (r == 0)
		r = copy_names(config->operator_names, config->n_operator_names, &n.operator_names,
			       &n.n_operator_names, "operator", err, err_size);
	if (r == 0)
		r = copy_names(config->reader_names, config->n_reader_names, &n.reader_names,
			       &n.n_reader_names, "reader", err, err_size);
	if (r == 0) {
		struct grpc_server old = *server;

		server->operator_uids = n.operator_uids;
		server->n_operator_uids = n.n_operator_uids;
		server->reader_uids = n.reader_uids;
		server->n_reader_uids = n.n_reader_uids;
		server->operator_gids = n.operator_gids;
		server->n_operator_gids = n.n_operator_gids;
		server->reader_gids = n.reader_gids;
		server->n_reader_gids = n.n_reader_gids;
		server->operator_names = n.operator_names;
		server->n_operator_names = n.n_operator_names;
		server->reader_names = n.reader_names;
		server->n_reader_names = n.n_reader_names;
		n = old; /* freed below */
	}
	free(n.operator_uids);
	free(n.reader_uids);
	free(n.operator_gids);
	free(n.reader_gids);
	free_names(n.operator_names, n.n_operator_names);
	free_names(n.reader_names, n.n_reader_names);
	return r;
}

void grpc_server_set_tls(struct grpc_server *server, SSL_CTX *tls)
{
	if (!server || !server->tcp_listener || !tls || tls == server->tls)
		return;
	SSL_CTX_up_ref(tls);
	SSL_CTX_set_alpn_select_cb(tls, alpn_select_cb, NULL);
	server->tls = ssl_ctx_unref(server->tls);
	server->tls = tls;
}

int grpc_server_tcp_port(const struct grpc_server *server)
{
	if (!server || !server->tcp_listener)
		return -ENOTCONN;
	return server->tcp_port;
}

size_t grpc_server_stream_count(const struct grpc_server *server)
{
	return server ? server->n_streaming : 0;
}

/* --- within a call --- */

const struct grpc_caller *grpc_call_caller(const struct grpc_call *call)
{
	return &call->conn->caller;
}

uint64_t grpc_call_deadline_ns(const struct grpc_call *call)
{
	return call->timeout_value[0] ? call->deadline_ns : 0;
}

/* The API functions below never run nghttp2 nor another call's callback:
 * they queue, submit and schedule the pump (conn->pump_ev), so a caller
 * iterating its own lists (watchers) sees no call vanish but this one, and
 * only when the contract says so (-ENOBUFS). */

/* End an ACTIVE call that could not send: RST_STREAM CANCEL, then its cancel
 * callback. */
static int call_overflow(struct grpc_call *call, uint32_t error_code)
{
	call_leave_active(call);
	call_reset(call, error_code);
	conn_schedule_pump(call->conn);
	call->pins++;
	call_run_cancel(call);
	call->pins--;
	return -ENOBUFS;
}

int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *message)
{
	struct grpc_conn *conn;
	struct evbuffer_iovec vec;
	size_t size, conn_waiting;

	if (!call || call->state != CALL_ACTIVE || call->conn->closing)
		return -EPIPE;
	conn = call->conn;
	size = protobuf_c_message_get_packed_size(message);
	if (size > GRPC_MAX_MESSAGE_BYTES)
		return -EMSGSIZE;
	if (conn->close_pending)
		return call_overflow(call, NGHTTP2_CANCEL);

	/* What is already waiting decides, so one message of any allowed size
	 * can always go to a client that reads. */
	if (evbuffer_get_length(call->out) > GRPC_MAX_STREAM_QUEUE) {
		log_warning("control conn=%u %s: stream %d %s: client does not read, %zu bytes "
			    "waiting; stream reset",
			    conn->id, conn->caller.identity, (int)call->stream_id, call->path,
			    evbuffer_get_length(call->out));
		return call_overflow(call, NGHTTP2_CANCEL);
	}
	conn_waiting = conn->queued_bytes + evbuffer_get_length(bufferevent_get_output(conn->bev));
	if (conn_waiting > GRPC_MAX_CONN_QUEUE) {
		/* The connection goes too, from the loop (its other calls'
		 * callbacks must not run inside this call). */
		conn_close_later(conn, LOG_WARNING,
				 "client does not read, %zu bytes waiting on the connection",
				 conn_waiting);
		return call_overflow(call, NGHTTP2_CANCEL);
	}

	if (evbuffer_reserve_space(call->out, GRPC_WIRE_PREFIX_BYTES + size, &vec, 1) < 1)
		goto nomem;
	grpc_wire_prefix(vec.iov_base, (uint32_t)size);
	protobuf_c_message_pack(message, (uint8_t *)vec.iov_base + GRPC_WIRE_PREFIX_BYTES);
	vec.iov_len = GRPC_WIRE_PREFIX_BYTES + size;
	if (evbuffer_commit_space(call->out, &vec, 1) < 0)
		goto nomem;
	conn->queued_bytes += vec.iov_len;
	if (!call->response_started) {
		if (call_submit_headers(call) < 0)
			goto nomem;
	} else {
		(void)nghttp2_session_resume_data(conn->session, call->stream_id);
	}
	conn_schedule_pump(conn);
	return 0;

nomem:
	log_warning("control conn=%u %s: stream %d %s: out of memory for a response; reset",
		    conn->id, conn->caller.identity, (int)call->stream_id, call->path);
	return call_overflow(call, NGHTTP2_INTERNAL_ERROR);
}

void grpc_call_finish(struct grpc_call *call, enum grpc_status status, const char *fmt, ...)
{
	struct grpc_conn *conn;
	char message_enc[CALL_MESSAGE_ENC_MAX] = "";
	va_list ap;

	if (!call || call->state != CALL_ACTIVE)
		return;
	conn = call->conn;
	if (fmt) {
		va_start(ap, fmt);
		format_status(fmt, ap, message_enc);
		va_end(ap);
	}
	call_leave_active(call);
	call_submit_end(call, (int)status, message_enc);
	if (status != GRPC_STATUS_OK)
		log_debug("control conn=%u %s: stream %d %s: %s %s", conn->id,
			  conn->caller.identity, (int)call->stream_id, call->path,
			  grpc_status_to_string((int)status), message_enc);
	conn_schedule_pump(conn);
}

void grpc_call_on_cancel(struct grpc_call *call, grpc_cancel_cb cb, void *userdata)
{
	if (!call || call->state != CALL_ACTIVE)
		return;
	call->cancel_cb = cb;
	call->cancel_userdata = userdata;
}
