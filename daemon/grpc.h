/* grpc.h - a gRPC server (HTTP/2 through libnghttp2) on the daemon's libevent
 * loop, for service Control (proto/vcounter.proto). Any stock gRPC client
 * can call it:
 *
 *  - a unix socket speaking h2c with prior knowledge, callers authorised by
 *    SO_PEERCRED (uid/gid lists, one for each role);
 *  - optionally TCP with TLS 1.3, ALPN "h2" and a client certificate from
 *    the fleet CA whose identity (SAN) is on the reader or operator list.
 *
 * Framing is gRPC's: per message a compressed flag byte and a 4-byte
 * big-endian length; responses carry content-type application/grpc and end
 * with grpc-status / grpc-message trailers. grpc-timeout is honoured
 * (DEADLINE_EXCEEDED). The transport, not the handlers, answers protocol
 * faults: unknown method (UNIMPLEMENTED), a request over
 * GRPC_MAX_MESSAGE_BYTES (RESOURCE_EXHAUSTED), the compressed flag
 * (INTERNAL without grpc-encoding, UNIMPLEMENTED with one: no compression is
 * offered), a request that does not unpack, or is not exactly one message,
 * or has a malformed grpc-timeout (INVALID_ARGUMENT), a role too low
 * (PERMISSION_DENIED), a content-type not application/grpc (HTTP 415 with
 * UNKNOWN, as PROTOCOL-HTTP2.md asks), a method other than POST (HTTP 405
 * with UNIMPLEMENTED). A malformed HTTP/2 preface or any other connection
 * error gets GOAWAY and closes that connection only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <openssl/ssl.h>
#include <protobuf-c/protobuf-c.h>

#define GRPC_MAX_MESSAGE_BYTES	       (1u << 20)   /* one request or response message */
#define GRPC_MAX_STREAM_QUEUE	       (256u << 10) /* bytes queued for one stream */
#define GRPC_MAX_CONN_QUEUE	       (1u << 20)   /* bytes queued for one connection */
#define GRPC_MAX_CONNECTIONS	       256
#define GRPC_MAX_STREAMS	       128 /* concurrent streams per connection */
#define GRPC_MAX_IDENTITIES	       64  /* per role list */
#define GRPC_IDENTITY_MAX	       255
#define GRPC_HANDSHAKE_TIMEOUT_S       10
/* TCP handshakes running, of those from one address, and the deadline when
 * all are taken (admission.h); unix and TCP connections each have their own
 * GRPC_MAX_CONNECTIONS. */
#define GRPC_MAX_HANDSHAKES	       64
#define GRPC_MAX_HANDSHAKES_PER_SOURCE 8
#define GRPC_HANDSHAKE_PRESSED_MS      1000
/* Connections closed before they were served, logged: this many per interval. */
#define GRPC_SHED_LOG_BURST	       10
#define GRPC_SHED_LOG_INTERVAL_NS      (10 * UINT64_C(1000000000))
#define GRPC_IDLE_TIMEOUT_S	       300 /* no call open: GOAWAY and close */
#define GRPC_IDLE_TIMEOUT_NO_ROLE_S    10  /* the same, for a caller with no role */

/* https://grpc.github.io/grpc/core/md_doc_statuscodes.html */
enum grpc_status {
	GRPC_STATUS_OK = 0,
	GRPC_STATUS_CANCELLED = 1,
	GRPC_STATUS_UNKNOWN = 2,
	GRPC_STATUS_INVALID_ARGUMENT = 3,
	GRPC_STATUS_DEADLINE_EXCEEDED = 4,
	GRPC_STATUS_NOT_FOUND = 5,
	GRPC_STATUS_ALREADY_EXISTS = 6,
	GRPC_STATUS_PERMISSION_DENIED = 7,
	GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
	GRPC_STATUS_FAILED_PRECONDITION = 9,
	GRPC_STATUS_ABORTED = 10,
	GRPC_STATUS_OUT_OF_RANGE = 11,
	GRPC_STATUS_UNIMPLEMENTED = 12,
	GRPC_STATUS_INTERNAL = 13,
	GRPC_STATUS_UNAVAILABLE = 14,
	GRPC_STATUS_DATA_LOSS = 15,
	GRPC_STATUS_UNAUTHENTICATED = 16,
};

/* "INVALID_ARGUMENT", ...; "UNKNOWN" for anything else. */
const char *grpc_status_to_string(int status);

enum grpc_role {
	GRPC_ROLE_NONE = 0,	/* may connect, every call is PERMISSION_DENIED */
	GRPC_ROLE_READER = 1,	/* list, get, watch */
	GRPC_ROLE_OPERATOR = 2, /* and start, abort */
};

const char *grpc_role_to_string(enum grpc_role role);

/* Who is calling, fixed for the connection's life. */
struct grpc_caller {
	enum grpc_role role;
	bool tls;
	/* TLS: the certificate SAN found on a role list (or the leaf's first
	 * SAN when on none); unix: "uid=U pid=P". For logs and events. */
	char identity[GRPC_IDENTITY_MAX + 1];
	pid_t pid; /* unix only; 0 for TLS */
	uid_t uid;
	gid_t gid;
};

struct grpc_server_config {
	/* Unix socket: listen_unix_fd >= 0 is an already bound, listening
	 * socket (systemd socket activation), the server's once
	 * grpc_server_new() succeeds (grpc_server_free closes it), still the
	 * caller's when it fails; otherwise unix_path is created (an old
	 * socket file there is replaced, anything else is -EEXIST), 0660.
	 * Neither: no unix socket. */
	int listen_unix_fd;
	const char *unix_path;
	/* SO_PEERCRED: uid 0 and the daemon's own euid are operators; these
	 * add more. A caller on neither list gets GRPC_ROLE_NONE. */
	const uid_t *operator_uids;
	size_t n_operator_uids;
	const uid_t *reader_uids;
	size_t n_reader_uids;
	const gid_t *operator_gids;
	size_t n_operator_gids;
	const gid_t *reader_gids;
	size_t n_reader_gids;

	/* TCP + TLS: tcp_addr "host:port" (port 0: any; see
	 * grpc_server_tcp_port), NULL: none. tls is a server context that
	 * already requires and verifies a client certificate against the fleet
	 * CA (TLS 1.3 only); grpc_server_new() adds ALPN "h2" and takes a
	 * reference. A client whose ALPN is not h2 is closed. The caller's role
	 * comes from its certificate's SANs: on operator_names, operator; on
	 * reader_names, reader; else none. */
	const char *tcp_addr;
	SSL_CTX *tls;
	const char *const *operator_names;
	size_t n_operator_names;
	const char *const *reader_names;
	size_t n_reader_names;
};

struct grpc_call;

/* Called once per call with the unpacked request (owned by the transport,
 * valid during the call only). A unary handler calls grpc_call_send() once
 * and grpc_call_finish(OK), or grpc_call_finish() with an error; a
 * server-streaming handler sends any number of messages, now or later, and
 * may finish later. Either may finish before returning. */
typedef void (*grpc_handler)(struct grpc_call *call, const ProtobufCMessage *request,
			     void *userdata);

struct grpc_method {
	const char *path; /* "/vcounter.v1.Control/ListVms" */
	const ProtobufCMessageDescriptor *request;
	bool server_streaming;
	enum grpc_role role; /* least role that may call it */
	grpc_handler handler;
};

struct grpc_server;

/* Listen as configured and serve methods (the array must outlive the
 * server) on base; userdata goes to every handler. -errno, with a sentence
 * in err, when a socket or file cannot be set up. */
int grpc_server_new(struct event_base *base, const struct grpc_server_config *config,
		    const struct grpc_method *methods, size_t n_methods, void *userdata,
		    struct grpc_server **ret, char *err, size_t err_size);
/* Ends every call (their cancel callbacks run), closes every socket,
 * unlinks the unix socket it created. NULL ok. Not from inside a handler
 * or cancel callback. */
struct grpc_server *grpc_server_free(struct grpc_server *server);
/* A configuration reload: the role lists of config (uids, gids, names; the
 * rest is ignored) replace the server's for connections accepted from now
 * on; a connection's caller stays as it was judged. -errno with a sentence
 * in err, and the old lists stay. */
int grpc_server_set_roles(struct grpc_server *server, const struct grpc_server_config *config,
			  char *err, size_t err_size);
/* Connections accepted from now on handshake with tls (as config's tls: a
 * reference is taken, ALPN "h2" added); open ones keep theirs. Nothing
 * without a TCP listener. */
void grpc_server_set_tls(struct grpc_server *server, SSL_CTX *tls);
/* The TCP port bound (tcp_addr with port 0), -ENOTCONN without TCP. */
int grpc_server_tcp_port(const struct grpc_server *server);
/* Open server-streaming calls (for status). */
size_t grpc_server_stream_count(const struct grpc_server *server);

/* ---- within a call ---- */

const struct grpc_caller *grpc_call_caller(const struct grpc_call *call);
/* CLOCK_MONOTONIC ns when grpc-timeout runs out; 0: no deadline. At the
 * deadline the transport ends the call with DEADLINE_EXCEEDED itself. */
uint64_t grpc_call_deadline_ns(const struct grpc_call *call);

/* send() and finish() only queue and submit: the frames go out from the
 * event loop, and neither runs another call's callback, so a caller walking
 * a list of its calls sees only the call it passed vanish (-ENOBUFS).
 *
 * Queue one response message. 0, or:
 *   -EMSGSIZE  it packs to more than GRPC_MAX_MESSAGE_BYTES (nothing sent)
 *   -ENOBUFS   the client does not read: over GRPC_MAX_STREAM_QUEUE (or the
 *              connection over GRPC_MAX_CONN_QUEUE) is waiting. The
 *              transport has reset the stream (RST_STREAM CANCEL) and ran
 *              the cancel callback; call is gone.
 *   -EPIPE     the call has ended (e.g. from its own cancel callback) or
 *              its connection is closing (the cancel callback follows)
 */
int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *message);

/* End the call with trailers grpc-status and (if fmt) grpc-message,
 * percent-encoded. call is gone after this; the cancel callback does not
 * run. */
void grpc_call_finish(struct grpc_call *call, enum grpc_status status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* cb runs once when the call ends other than by grpc_call_finish(): the
 * client reset the stream or closed the connection, the deadline passed
 * (after DEADLINE_EXCEEDED went out), a send overflowed, the server is
 * freed. call is gone when cb returns. */
typedef void (*grpc_cancel_cb)(struct grpc_call *call, void *userdata);
void grpc_call_on_cancel(struct grpc_call *call, grpc_cancel_cb cb, void *userdata);
