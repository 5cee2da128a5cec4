/* control.c - libvcounter's controller client (vcounter/control.h): gRPC
 * (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md) over one
 * HTTP/2 connection driven by an nghttp2 client session, on the unix socket
 * (h2c, prior knowledge) or TCP with TLS 1.3 and ALPN h2. One call at a
 * time, each on a new stream; the socket is non-blocking and every wait is a
 * poll() bounded by the call's deadline. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clockns.h"
#include "config.h"
#include "grpc_wire.h"
#include "macro.h"
#include "report.h"
#include "vcounter.pb-c.h"
#include "vcounter/control.h"
#include "wire.h"

/* gRPC's default receive limit; the daemon sends at most 1 MiB
 * (GRPC_MAX_MESSAGE_BYTES in daemon/grpc.h). */
#define CTL_MAX_MESSAGE_BYTES  (4u << 20)
/* HTTP/2 receive windows: a whole message in flight without waiting for a
 * WINDOW_UPDATE round trip (RFC 9113 section 6.9.2; the default is 64 KiB). */
#define CTL_WINDOW_BYTES       (4 << 20)
#define CTL_IO_BYTES	       16384
/* Bound on connect + TLS handshake + the server's SETTINGS when the options
 * set no timeout (the daemon allows GRPC_HANDSHAKE_TIMEOUT_S, 10 s). */
#define CTL_CONNECT_TIMEOUT_MS 10000
/* After a local deadline: how long the RST_STREAM may take to leave. */
#define CTL_CANCEL_FLUSH_MS    1000
#define CTL_METHOD_PREFIX      "/vcounter.v1.Control/"
#define CTL_UNIX_AUTHORITY     "localhost"

#define CTL_N_STATUSES (VCOUNTER_CTL_STATUS_UNAUTHENTICATED + 1)

/* Name and -errno of each status; control.h documents the same table. */
static const struct {
	const char *name;
	int negative_errno;
} status_table[CTL_N_STATUSES] = {
	[VCOUNTER_CTL_STATUS_OK] = { "OK", 0 },
	[VCOUNTER_CTL_STATUS_CANCELLED] = { "CANCELLED", -ECANCELED },
	[VCOUNTER_CTL_STATUS_UNKNOWN] = { "UNKNOWN", -EIO },
	[VCOUNTER_CTL_STATUS_INVALID_ARGUMENT] = { "INVALID_ARGUMENT", -EINVAL },
	[VCOUNTER_CTL_STATUS_DEADLINE_EXCEEDED] = { "DEADLINE_EXCEEDED", -ETIME },
	[VCOUNTER_CTL_STATUS_NOT_FOUND] = { "NOT_FOUND", -ENOENT },
	[VCOUNTER_CTL_STATUS_ALREADY_EXISTS] = { "ALREADY_EXISTS", -EEXIST },
	[VCOUNTER_CTL_STATUS_PERMISSION_DENIED] = { "PERMISSION_DENIED", -EPERM },
	[VCOUNTER_CTL_STATUS_RESOURCE_EXHAUSTED] = { "RESOURCE_EXHAUSTED", -ENOBUFS },
	[VCOUNTER_CTL_STATUS_FAILED_PRECONDITION] = { "FAILED_PRECONDITION", -EBUSY },
	[VCOUNTER_CTL_STATUS_ABORTED] = { "ABORTED", -EAGAIN },
	[VCOUNTER_CTL_STATUS_OUT_OF_RANGE] = { "OUT_OF_RANGE", -ERANGE },
	[VCOUNTER_CTL_STATUS_UNIMPLEMENTED] = { "UNIMPLEMENTED", -EOPNOTSUPP },
	[VCOUNTER_CTL_STATUS_INTERNAL] = { "INTERNAL", -EIO },
	[VCOUNTER_CTL_STATUS_UNAVAILABLE] = { "UNAVAILABLE", -EHOSTUNREACH },
	[VCOUNTER_CTL_STATUS_DATA_LOSS] = { "DATA_LOSS", -EIO },
	[VCOUNTER_CTL_STATUS_UNAUTHENTICATED] = { "UNAUTHENTICATED", -EACCES },
};

/* One call's stream. */
struct ctl_call {
	int32_t stream_id;
	const uint8_t *body; /* grpc prefix + packed request */
	size_t body_len;
	size_t body_sent;
	struct grpc_wire_decoder decoder;
	int http_status; /* 0 until :status */
	bool grpc_content_type;
	bool headers_done; /* the response headers (not trailers) arrived */
	int grpc_status;   /* -1 until grpc-status */
	char grpc_message[256];
	bool closed;
	bool reset_by_daemon;	   /* an RST_STREAM arrived */
	uint32_t close_error_code; /* RST_STREAM's, or 0 */
	unsigned n_messages;
	bool partial; /* the stream ended inside a message */
	/* A handler's nonzero return: the stream is reset, this is kept. */
	int stop;
	/* Handlers: the response headers arrived (not trailers-only), and each
	 * message. Nonzero stops the call. */
	int (*on_headers)(void *userdata);
	int (*on_message)(const uint8_t *msg, size_t len, void *userdata);
	void *userdata;
};

struct vcounter_ctl {
	int fd;
	BIO_METHOD *bio_method;
	SSL_CTX *ssl_ctx;
	SSL *ssl;
	nghttp2_session *session;
	bool tls;
	bool broken; /* the connection failed; every later call fails */
	bool got_settings;
	char authority[300];
	unsigned timeout_ms;
	struct ctl_call *call; /* the call in progress */
	int status;
	char last_error[512];
};

/* Why the last vcounter_ctl_connect() of this thread failed (no ctl exists
 * to hold it). */
static _Thread_local char connect_error[1024];

static int set_error(struct vcounter_ctl *ctl, int status, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int set_error(struct vcounter_ctl *ctl, int status, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctl->last_error, sizeof(ctl->last_error), fmt, ap);
	va_end(ap);
	ctl->status = status;
	return r;
}

const char *vcounter_ctl_last_error(const struct vcounter_ctl *ctl)
{
	return ctl ? ctl->last_error : connect_error;
}

int vcounter_ctl_status(const struct vcounter_ctl *ctl)
{
	return ctl ? ctl->status : VCOUNTER_CTL_STATUS_LOCAL;
}

const char *vcounter_ctl_status_name(int status)
{
	if (status == VCOUNTER_CTL_STATUS_LOCAL)
		return "LOCAL";
	if (status < 0 || status >= CTL_N_STATUSES)
		return "UNKNOWN";
	return status_table[status].name;
}

static int status_to_errno(int status)
{
	if (status < 0 || status >= CTL_N_STATUSES)
		return -EIO; /* UNKNOWN, as gRPC reads a status it does not know */
	return status_table[status].negative_errno;
}

void vcounter_ctl_set_timeout(struct vcounter_ctl *ctl, unsigned timeout_ms)
{
	if (ctl)
		ctl->timeout_ms = timeout_ms;
}

/* ---- clocks and waits ---- */

/* 0: no deadline. */
static uint64_t deadline_after_ms(unsigned ms)
{
	return ms ? clock_ns(CLOCK_MONOTONIC) + (uint64_t)ms * NSEC_PER_MSEC : 0;
}

/* Wait until fd is ready for events or the deadline (CLOCK_MONOTONIC ns, 0:
 * none) passes: 0, -ETIME or -errno. */
static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		int timeout_ms = -1;
		int n;

		if (deadline_ns) {
			uint64_t now = clock_ns(CLOCK_MONOTONIC);

			if (now >= deadline_ns)
				return -ETIME;
			/* Round up: poll's granularity must not end a wait early. */
			timeout_ms = (int)((deadline_ns - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
		}
		n = poll(&pfd, 1, timeout_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n > 0)
			return 0; /* ready, or POLLERR/POLLHUP: the I/O call tells */
	}
}

/* ---- transport: plain socket or TLS, non-blocking ---- */

/* A socket BIO that writes with MSG_NOSIGNAL: a daemon that goes away must
 * give the caller EPIPE, not kill its process with SIGPIPE (BIO_s_socket
 * uses write()). */
static int sock_bio_write(BIO *bio, const char *buf, int len)
{
	ssize_t n = send((int)(intptr_t)BIO_get_data(bio), buf, (size_t)len, MSG_NOSIGNAL);

	BIO_clear_retry_flags(bio);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		BIO_set_retry_write(bio);
	return (int)n;
}

static int sock_bio_read(BIO *bio, char *buf, int len)
{
	ssize_t n = recv((int)(intptr_t)BIO_get_data(bio), buf, (size_t)len, 0);

	BIO_clear_retry_flags(bio);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		BIO_set_retry_read(bio);
	return (int)n;
}

static long sock_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int sock_bio_create(BIO *bio)
{
	BIO_set_init(bio, 1);
	return 1;
}

/* OpenSSL's reason for the first queued error, queue emptied. */
static const char *ssl_reason(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();

	if (!e) {
		snprintf(buf, size, "no reason given");
	} else {
		const char *reason = ERR_reason_error_string(e);

		if (reason)
			snprintf(buf, size, "%s", reason);
		else
			ERR_error_string_n(e, buf, size);
	}
	ERR_clear_error();
	return buf;
}

/* An SSL_ERROR_SSL from a read or write: an alert from the daemon (it
 * refused this controller's certificate: TLS 1.3 sends that verdict after
 * the client's handshake has completed, RFC 8446 section 4.4.2.4) or a
 * protocol failure. */
static int ssl_failure(struct vcounter_ctl *ctl, const char *what)
{
	unsigned long e = ERR_peek_error();
	bool alert = ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET;
	char reason[256];

	ssl_reason(reason, sizeof(reason));
	if (alert)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ECONNREFUSED,
				 "the daemon refused the TLS connection (%s)", reason);
	return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO, "TLS %s failed: %s", what,
			 reason);
}

/* Read what is there (at least one byte, waiting up to the deadline): the
 * count, 0 at end of stream, or -errno with last_error set. */
static ssize_t ctl_read(struct vcounter_ctl *ctl, uint8_t *buf, size_t size, uint64_t deadline_ns)
{
	for (;;) {
		short wait_for = POLLIN;
		int r;

		if (ctl->ssl) {
			int n;

			errno = 0;
			n = SSL_read(ctl->ssl, buf, (int)size);

			if (n > 0)
				return n;
			switch (SSL_get_error(ctl->ssl, n)) {
			case SSL_ERROR_WANT_READ:
				break;
			case SSL_ERROR_WANT_WRITE:
				wait_for = POLLOUT;
				break;
			case SSL_ERROR_ZERO_RETURN:
				return 0;
			case SSL_ERROR_SYSCALL:
				ERR_clear_error();
				if (n == 0 || errno == 0)
					return 0; /* EOF without close_notify */
				return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -errno,
						 "reading from the daemon: %s", strerror(errno));
			default:
				return ssl_failure(ctl, "read");
			}
		} else {
			ssize_t n = recv(ctl->fd, buf, size, 0);

			if (n >= 0)
				return n;
			if (errno != EAGAIN && errno != EINTR)
				return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -errno,
						 "reading from the daemon: %s", strerror(errno));
		}
		r = wait_fd(ctl->fd, wait_for, deadline_ns);
		if (r < 0)
			return r; /* -ETIME: the caller words it */
	}
}

/* Write all of buf before the deadline: 0 or -errno with last_error set
 * (-ETIME without). */
static int ctl_write(struct vcounter_ctl *ctl, const uint8_t *buf, size_t len, uint64_t deadline_ns)
{
	while (len > 0) {
		short wait_for = POLLOUT;
		int r;

		if (ctl->ssl) {
			int chunk = len > INT32_MAX ? INT32_MAX : (int)len;
			int n;

			errno = 0;
			n = SSL_write(ctl->ssl, buf, chunk);

			if (n > 0) {
				buf += n;
				len -= (size_t)n;
				continue;
			}
			switch (SSL_get_error(ctl->ssl, n)) {
			case SSL_ERROR_WANT_WRITE:
				break;
			case SSL_ERROR_WANT_READ:
				wait_for = POLLIN;
				break;
			case SSL_ERROR_SYSCALL:
				ERR_clear_error();
				return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL,
						 errno ? -errno : -EPIPE,
						 "writing to the daemon: %s",
						 errno ? strerror(errno) : "connection closed");
			default:
				return ssl_failure(ctl, "write");
			}
		} else {
			ssize_t n = send(ctl->fd, buf, len, MSG_NOSIGNAL);

			if (n >= 0) {
				buf += n;
				len -= (size_t)n;
				continue;
			}
			if (errno != EAGAIN && errno != EINTR)
				return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -errno,
						 "writing to the daemon: %s", strerror(errno));
		}
		r = wait_fd(ctl->fd, wait_for, deadline_ns);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- HTTP/2 session ---- */

/* Send every frame nghttp2 has queued. */
static int ctl_flush(struct vcounter_ctl *ctl, uint64_t deadline_ns)
{
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(ctl->session, &data);
		int r;

		if (n < 0)
			return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO, "HTTP/2: %s",
					 nghttp2_strerror((int)n));
		if (n == 0)
			return 0;
		r = ctl_write(ctl, data, (size_t)n, deadline_ns);
		if (r < 0)
			return r;
	}
}

/* Read once and hand it to nghttp2 (which runs the callbacks below). */
static int ctl_receive(struct vcounter_ctl *ctl, uint64_t deadline_ns)
{
	uint8_t buf[CTL_IO_BYTES];
	ssize_t n, used;

	n = ctl_read(ctl, buf, sizeof(buf), deadline_ns);
	if (n < 0)
		return (int)n;
	if (n == 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ECONNRESET,
				 "the daemon closed the connection");
	used = nghttp2_session_mem_recv(ctl->session, buf, (size_t)n);
	if (used < 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
				 "HTTP/2 from the daemon: %s", nghttp2_strerror((int)used));
	return 0;
}

static void call_stop(struct vcounter_ctl *ctl, struct ctl_call *call, int value)
{
	call->stop = value;
	/* CANCEL: "the stream is no longer needed" (RFC 9113 section 7), as
	 * gRPC clients cancel (PROTOCOL-HTTP2.md, Errors). */
	nghttp2_submit_rst_stream(ctl->session, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
}

static struct ctl_call *call_of(struct vcounter_ctl *ctl, int32_t stream_id)
{
	return ctl->call && ctl->call->stream_id == stream_id ? ctl->call : NULL;
}

static bool header_is(const uint8_t *name, size_t len, const char *literal)
{
	return len == strlen(literal) && memcmp(name, literal, len) == 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	struct vcounter_ctl *ctl = user_data;
	struct ctl_call *call = call_of(ctl, frame->hd.stream_id);

	if (!call || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	/* nghttp2 has checked the field block (RFC 9113 section 8.2.1): one
	 * :status, in the first block only, three digits. */
	if (header_is(name, namelen, ":status")) {
		call->http_status = atoi((const char *)value);
	} else if (header_is(name, namelen, "content-type")) {
		/* "application/grpc" [("+proto" / "+json" / {custom})] */
		call->grpc_content_type = valuelen >= 16 &&
					  memcmp(value, "application/grpc", 16) == 0 &&
					  (valuelen == 16 || value[16] == '+' || value[16] == ';');
	} else if (header_is(name, namelen, "grpc-status")) {
		unsigned long status = 0;
		bool ok = valuelen > 0 && valuelen <= 9;

		for (size_t i = 0; ok && i < valuelen; i++) {
			ok = value[i] >= '0' && value[i] <= '9';
			status = status * 10 + (unsigned long)(value[i] - '0');
		}
		/* Unparseable: UNKNOWN, as gRPC's own clients read it. */
		call->grpc_status = ok ? (int)status : VCOUNTER_CTL_STATUS_UNKNOWN;
	} else if (header_is(name, namelen, "grpc-message")) {
		grpc_wire_percent_decode((const char *)value, valuelen, call->grpc_message,
					 sizeof(call->grpc_message));
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct vcounter_ctl *ctl = user_data;
	struct ctl_call *call;

	if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
		ctl->got_settings = true;
	call = call_of(ctl, frame->hd.stream_id);
	if (call && frame->hd.type == NGHTTP2_RST_STREAM)
		call->reset_by_daemon = true;
	if (!call || frame->hd.type != NGHTTP2_HEADERS || call->headers_done)
		return 0;
	if (call->http_status >= 100 && call->http_status < 200) {
		call->http_status = 0; /* informational: the response follows */
		return 0;
	}
	call->headers_done = true;
	/* Headers without END_STREAM open a response (a trailers-only one ends
	 * here and says all in its status). */
	if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && call->http_status == 200 &&
	    call->grpc_content_type && call->on_headers && !call->stop) {
		int r = call->on_headers(call->userdata);

		if (r)
			call_stop(ctl, call, r);
	}
	return 0;
}

static int call_message(const uint8_t *msg, size_t len, void *userdata)
{
	struct ctl_call *call = userdata;

	call->n_messages++;
	return call->on_message(msg, len, call->userdata);
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			      const uint8_t *data, size_t len, void *user_data)
{
	struct vcounter_ctl *ctl = user_data;
	struct ctl_call *call = call_of(ctl, stream_id);
	int r;

	/* A body that is not gRPC (an HTTP error page) is not read: the
	 * status comes from :status then. */
	if (!call || call->stop || call->http_status != 200 || !call->grpc_content_type)
		return 0;
	r = grpc_wire_decoder_feed(&call->decoder, data, len, call_message, call);
	if (r == -EMSGSIZE)
		r = set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EMSGSIZE,
			      "the daemon sent a message over %u bytes", CTL_MAX_MESSAGE_BYTES);
	else if (r == -EBADMSG)
		r = set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EBADMSG,
			      "the daemon sent a compressed or malformed message prefix");
	else if (r == -ENOMEM)
		r = set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "out of memory");
	if (r)
		call_stop(ctl, call, r);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user_data)
{
	struct vcounter_ctl *ctl = user_data;
	struct ctl_call *call = call_of(ctl, stream_id);

	if (call) {
		call->closed = true;
		call->close_error_code = error_code;
	}
	return 0;
}

static ssize_t body_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
			 uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct ctl_call *call = source->ptr;
	size_t n = call->body_len - call->body_sent;

	if (n > length)
		n = length;
	memcpy(buf, call->body + call->body_sent, n);
	call->body_sent += n;
	if (call->body_sent == call->body_len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* ---- connect ---- */

static int connect_unix(struct vcounter_ctl *ctl, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;

	if (strlen(path) >= sizeof(sa.sun_path))
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENAMETOOLONG, "path too long");
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -errno, "socket: %s",
				 strerror(errno));
	/* A unix connect completes at once or fails; EAGAIN (the daemon's
	 * backlog is full) is a failure like any other here. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -errno, "cannot connect: %s",
				 strerror(errno));
	ctl->fd = TAKE_FD(fd);
	snprintf(ctl->authority, sizeof(ctl->authority), "%s", CTL_UNIX_AUTHORITY);
	return 0;
}

/* "host:port" or "[v6]:port" into its parts. */
static int split_address(const char *address, char *host, size_t host_size, char *port,
			 size_t port_size)
{
	const char *colon, *h = address;
	size_t hlen;

	if (address[0] == '[') {
		const char *close = strchr(address, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h = address + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(address, ':');
		if (!colon || strchr(address, ':') != colon)
			return -EINVAL;
		hlen = (size_t)(colon - address);
	}
	if (hlen == 0 || hlen >= host_size || strlen(colon + 1) == 0 ||
	    strlen(colon + 1) >= port_size || strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	snprintf(port, port_size, "%s", colon + 1);
	return 0;
}

static int connect_tcp(struct vcounter_ctl *ctl, const char *address, const char *host,
		       const char *port, uint64_t deadline_ns)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	int r = -EHOSTUNREACH, gai;

	gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EHOSTUNREACH,
				 "cannot resolve %s: %s", host, gai_strerror(gai));
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		_cleanup_close_ int fd = -1;
		int one = 1, so_error = 0;
		socklen_t len = sizeof(so_error);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			if (errno != EINPROGRESS) {
				r = -errno;
				continue;
			}
			r = wait_fd(fd, POLLOUT, deadline_ns);
			if (r < 0)
				break; /* the deadline is the whole connect's */
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0)
				so_error = errno;
			if (so_error) {
				r = -so_error;
				continue;
			}
		}
		/* Requests are small and each waits for its answer (Nagle would
		 * hold the second segment of a request for an ACK). */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ctl->fd = TAKE_FD(fd);
		r = 0;
		break;
	}
	freeaddrinfo(res);
	if (r == -ETIME)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ETIME, "connect timed out");
	if (r < 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, r, "cannot connect: %s",
				 strerror(-r));
	snprintf(ctl->authority, sizeof(ctl->authority), "%s", address);
	return 0;
}

static bool is_ip_literal(const char *name)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

static int tls_context(struct vcounter_ctl *ctl, const struct vcounter_ctl_options *o)
{
	static const unsigned char alpn_h2[] = { 2, 'h', '2' };
	char reason[256];

	if (!o->ca_file || !o->cert_file || !o->key_file)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EINVAL,
				 "TLS needs a CA file, a certificate and its key");
	ctl->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!ctl->ssl_ctx)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "SSL_CTX_new: %s",
				 ssl_reason(reason, sizeof(reason)));
	if (!SSL_CTX_set_min_proto_version(ctl->ssl_ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctl->ssl_ctx, TLS1_3_VERSION))
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO, "TLS 1.3 unavailable: %s",
				 ssl_reason(reason, sizeof(reason)));
	if (SSL_CTX_load_verify_locations(ctl->ssl_ctx, o->ca_file, NULL) != 1)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOENT, "CA file %s: %s",
				 o->ca_file, ssl_reason(reason, sizeof(reason)));
	if (SSL_CTX_use_certificate_chain_file(ctl->ssl_ctx, o->cert_file) != 1)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOENT, "certificate %s: %s",
				 o->cert_file, ssl_reason(reason, sizeof(reason)));
	if (SSL_CTX_use_PrivateKey_file(ctl->ssl_ctx, o->key_file, SSL_FILETYPE_PEM) != 1)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOENT, "key %s: %s", o->key_file,
				 ssl_reason(reason, sizeof(reason)));
	if (SSL_CTX_check_private_key(ctl->ssl_ctx) != 1)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EKEYREJECTED,
				 "key %s does not match certificate %s", o->key_file, o->cert_file);
	SSL_CTX_set_verify(ctl->ssl_ctx, SSL_VERIFY_PEER, NULL);
	/* A daemon that closes without close_notify has closed: HTTP/2's own
	 * framing tells a cut-short answer (OpenSSL 3 would call it an error). */
	SSL_CTX_set_options(ctl->ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_verify_depth(ctl->ssl_ctx, 4);
	/* SSL_CTX_set_alpn_protos returns 0 on success. */
	if (SSL_CTX_set_alpn_protos(ctl->ssl_ctx, alpn_h2, sizeof(alpn_h2)) != 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "ALPN: %s",
				 ssl_reason(reason, sizeof(reason)));
	return 0;
}

static int tls_handshake(struct vcounter_ctl *ctl, const char *server_name, uint64_t deadline_ns)
{
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	char reason[256];
	BIO *bio;

	ctl->bio_method =
		BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "vcounter-socket");
	if (!ctl->bio_method || !BIO_meth_set_write(ctl->bio_method, sock_bio_write) ||
	    !BIO_meth_set_read(ctl->bio_method, sock_bio_read) ||
	    !BIO_meth_set_ctrl(ctl->bio_method, sock_bio_ctrl) ||
	    !BIO_meth_set_create(ctl->bio_method, sock_bio_create))
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "BIO_meth_new failed");
	ctl->ssl = SSL_new(ctl->ssl_ctx);
	bio = BIO_new(ctl->bio_method);
	if (!ctl->ssl || !bio) {
		BIO_free(bio);
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "SSL_new: %s",
				 ssl_reason(reason, sizeof(reason)));
	}
	BIO_set_data(bio, (void *)(intptr_t)ctl->fd);
	SSL_set_bio(ctl->ssl, bio, bio); /* the SSL owns it now */
	/* The daemon's certificate must name server_name (an IP literal is
	 * checked against IP SANs: SSL_set1_host, OpenSSL >= 3.0). SNI carries
	 * DNS names only (RFC 6066 section 3). */
	if (SSL_set1_host(ctl->ssl, server_name) != 1)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EINVAL,
				 "server name \"%s\" unusable", server_name);
	if (!is_ip_literal(server_name) && SSL_set_tlsext_host_name(ctl->ssl, server_name) != 1)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EINVAL, "SNI \"%s\" unusable",
				 server_name);

	for (;;) {
		int n = SSL_connect(ctl->ssl), r;
		short wait_for;

		if (n == 1)
			break;
		switch (SSL_get_error(ctl->ssl, n)) {
		case SSL_ERROR_WANT_READ:
			wait_for = POLLIN;
			break;
		case SSL_ERROR_WANT_WRITE:
			wait_for = POLLOUT;
			break;
		case SSL_ERROR_SYSCALL:
			ERR_clear_error();
			return set_error(
				ctl, VCOUNTER_CTL_STATUS_LOCAL, -ECONNRESET, "TLS handshake: %s",
				errno ? strerror(errno) : "the daemon closed the connection");
		default: {
			long v = SSL_get_verify_result(ctl->ssl);

			if (v != X509_V_OK) {
				ERR_clear_error();
				return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EKEYREJECTED,
						 "the daemon's certificate is refused "
						 "(expecting \"%s\"): %s",
						 server_name, X509_verify_cert_error_string(v));
			}
			return ssl_failure(ctl, "handshake");
		}
		}
		r = wait_fd(ctl->fd, wait_for, deadline_ns);
		if (r == -ETIME)
			return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ETIME,
					 "TLS handshake timed out");
		if (r < 0)
			return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, r, "poll: %s",
					 strerror(-r));
	}
	SSL_get0_alpn_selected(ctl->ssl, &alpn, &alpn_len);
	if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
				 "no ALPN \"h2\" negotiated: not a gRPC server");
	return 0;
}

static int session_new(struct vcounter_ctl *ctl)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_settings_entry settings[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, CTL_WINDOW_BYTES },
	};
	int r;

	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "out of memory");
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	r = nghttp2_session_client_new(&ctl->session, cbs, ctl);
	nghttp2_session_callbacks_del(cbs);
	if (r != 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "HTTP/2 session: %s",
				 nghttp2_strerror(r));
	r = nghttp2_submit_settings(ctl->session, NGHTTP2_FLAG_NONE, settings,
				    ELEMENTSOF(settings));
	if (r == 0)
		r = nghttp2_session_set_local_window_size(ctl->session, NGHTTP2_FLAG_NONE, 0,
							  CTL_WINDOW_BYTES);
	if (r != 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO, "HTTP/2 settings: %s",
				 nghttp2_strerror(r));
	return 0;
}

/* Send the connection preface and wait for the daemon's SETTINGS: a
 * connection that returns from connect speaks HTTP/2 (and, with TLS, the
 * daemon accepted this controller's certificate). */
static int exchange_preface(struct vcounter_ctl *ctl, uint64_t deadline_ns)
{
	int r = ctl_flush(ctl, deadline_ns);

	while (r == 0 && !ctl->got_settings) {
		r = ctl_receive(ctl, deadline_ns);
		if (r == 0)
			r = ctl_flush(ctl, deadline_ns);
		/* nghttp2 answers a malformed preface with GOAWAY and stops
		 * reading (RFC 9113 section 3.4). */
		if (r == 0 && !ctl->got_settings && !nghttp2_session_want_read(ctl->session))
			r = set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
				      "not an HTTP/2 server");
	}
	if (r == -ETIME)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ETIME,
				 "no HTTP/2 SETTINGS from the daemon in time");
	if (r == -ECONNRESET && ctl->tls)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ECONNRESET,
				 "the daemon closed the connection after the TLS handshake "
				 "(did it refuse this controller's certificate?)");
	return r;
}

void vcounter_ctl_close(struct vcounter_ctl *ctl)
{
	if (!ctl)
		return;
	if (ctl->session && !ctl->broken) {
		/* Best effort, not waited for: GOAWAY tells the daemon this
		 * was an orderly close. */
		nghttp2_session_terminate_session(ctl->session, NGHTTP2_NO_ERROR);
		ctl_flush(ctl, deadline_after_ms(100));
	}
	nghttp2_session_del(ctl->session);
	if (ctl->ssl) {
		if (!ctl->broken)
			SSL_shutdown(ctl->ssl);
		SSL_free(ctl->ssl);
	}
	SSL_CTX_free(ctl->ssl_ctx);
	BIO_meth_free(ctl->bio_method);
	close_nointr(ctl->fd);
	free(ctl);
}

static int ctl_open(struct vcounter_ctl *ctl, const struct vcounter_ctl_options *o)
{
	uint64_t deadline_ns =
		deadline_after_ms(o->timeout_ms ? o->timeout_ms : CTL_CONNECT_TIMEOUT_MS);
	char host[256], port[16];
	int r;

	if (o->socket_path && o->address)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EINVAL,
				 "a unix socket or an address, not both");
	if (o->address) {
		if (split_address(o->address, host, sizeof(host), port, sizeof(port)) < 0)
			return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EINVAL, "not HOST:PORT");
		r = tls_context(ctl, o);
		if (r < 0)
			return r;
		r = connect_tcp(ctl, o->address, host, port, deadline_ns);
		if (r < 0)
			return r;
		ctl->tls = true;
		r = tls_handshake(ctl, o->server_name ? o->server_name : host, deadline_ns);
	} else {
		r = connect_unix(ctl,
				 o->socket_path ? o->socket_path : VCOUNTER_DEFAULT_CONTROL_SOCKET);
	}
	if (r < 0)
		return r;
	r = session_new(ctl);
	if (r < 0)
		return r;
	return exchange_preface(ctl, deadline_ns);
}

int vcounter_ctl_connect(const struct vcounter_ctl_options *options, struct vcounter_ctl **ret)
{
	struct vcounter_ctl *ctl;
	int r;

	connect_error[0] = '\0';
	if (!options || !ret) {
		snprintf(connect_error, sizeof(connect_error), "no options");
		return -EINVAL;
	}
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl) {
		snprintf(connect_error, sizeof(connect_error), "out of memory");
		return -ENOMEM;
	}
	ctl->fd = -1;
	ctl->timeout_ms = options->timeout_ms;
	ctl->status = VCOUNTER_CTL_STATUS_OK;
	r = ctl_open(ctl, options);
	if (r < 0) {
		snprintf(connect_error, sizeof(connect_error), "%s: %s",
			 options->address
				 ? options->address
				 : (options->socket_path ? options->socket_path
							 : VCOUNTER_DEFAULT_CONTROL_SOCKET),
			 ctl->last_error);
		ctl->broken = true; /* nothing to say goodbye on */
		vcounter_ctl_close(ctl);
		return r;
	}
	*ret = ctl;
	return 0;
}

/* ---- calls ---- */

/* Run one call to its end: 0 when the stream closed (by the daemon, or
 * reset after a handler stopped it; call->* tell how), -ETIME at the
 * deadline (stream cancelled, connection kept), other -errno when the
 * connection failed (it stays unusable). */
static int ctl_run(struct vcounter_ctl *ctl, struct ctl_call *call, const char *method,
		   const ProtobufCMessage *request)
{
	char path[128], timeout[10];
	nghttp2_nv nva[7];
	nghttp2_data_provider provider = { .source.ptr = call, .read_callback = body_read };
	_cleanup_free_ uint8_t *body = NULL;
	uint64_t deadline_ns = deadline_after_ms(ctl->timeout_ms);
	size_t n_nv = 0, packed;
	int r;

#define NV(n, v)                                                                           \
	nva[n_nv++] = (nghttp2_nv)                                                         \
	{                                                                                  \
		(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE \
	}

	if (ctl->broken)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOTCONN,
				 "the connection to the daemon failed earlier");
	packed = protobuf_c_message_get_packed_size(request);
	if (packed > CTL_MAX_MESSAGE_BYTES)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EMSGSIZE, "request too large");
	body = malloc(GRPC_WIRE_PREFIX_BYTES + packed);
	if (!body)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "out of memory");
	grpc_wire_prefix(body, (uint32_t)packed);
	protobuf_c_message_pack(request, body + GRPC_WIRE_PREFIX_BYTES);
	call->body = body;
	call->body_len = GRPC_WIRE_PREFIX_BYTES + packed;
	call->grpc_status = -1;
	grpc_wire_decoder_init(&call->decoder, CTL_MAX_MESSAGE_BYTES);

	snprintf(path, sizeof(path), CTL_METHOD_PREFIX "%s", method);
	/* PROTOCOL-HTTP2.md, Requests: pseudo-headers first, then
	 * content-type, te (proxies must not strip trailers), grpc-timeout. */
	NV(":method", "POST");
	NV(":scheme", ctl->tls ? "https" : "http");
	NV(":path", path);
	NV(":authority", ctl->authority);
	NV("content-type", "application/grpc");
	NV("te", "trailers");
	if (ctl->timeout_ms) {
		grpc_wire_format_timeout((uint64_t)ctl->timeout_ms * NSEC_PER_MSEC, timeout);
		NV("grpc-timeout", timeout);
	}
#undef NV
	call->stream_id = nghttp2_submit_request(ctl->session, NULL, nva, n_nv, &provider, NULL);
	if (call->stream_id < 0) {
		grpc_wire_decoder_free(&call->decoder);
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO, "HTTP/2 request: %s",
				 nghttp2_strerror(call->stream_id));
	}
	ctl->call = call;
	ctl->status = VCOUNTER_CTL_STATUS_LOCAL;
	ctl->last_error[0] = '\0';

	r = 0;
	while (r == 0 && !call->closed) {
		r = ctl_flush(ctl, deadline_ns);
		/* A write cut short leaves half a frame (or an SSL_write that
		 * must be retried) on the connection: nothing can follow it. */
		if (r == -ETIME)
			ctl->broken = true;
		if (r < 0 || call->closed)
			break;
		if (!nghttp2_session_want_read(ctl->session)) {
			r = set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
				      "the daemon ended the HTTP/2 session");
			break;
		}
		r = ctl_receive(ctl, deadline_ns);
	}
	if (r == -ETIME) {
		/* Our deadline: cancel the stream, keep the connection (when
		 * the deadline passed while reading). */
		nghttp2_submit_rst_stream(ctl->session, NGHTTP2_FLAG_NONE, call->stream_id,
					  NGHTTP2_CANCEL);
		if (ctl->broken || ctl_flush(ctl, deadline_after_ms(CTL_CANCEL_FLUSH_MS)) < 0)
			ctl->broken = true;
		r = set_error(ctl, VCOUNTER_CTL_STATUS_DEADLINE_EXCEEDED, -ETIME,
			      "deadline exceeded (%u ms)", ctl->timeout_ms);
	} else if (r < 0) {
		ctl->broken = true;
	} else {
		/* WINDOW_UPDATEs and the like; a failure shows on the next call. */
		ctl_flush(ctl, deadline_ns);
	}
	ctl->call = NULL;
	call->partial = grpc_wire_decoder_partial(&call->decoder);
	grpc_wire_decoder_free(&call->decoder);
	call->body = NULL;
	return r;
}

/* The outcome of a call that ran to its end (ctl_run returned 0 and no
 * handler stopped it): 0 for OK, else -errno with status and last_error. */
static int call_status(struct vcounter_ctl *ctl, const struct ctl_call *call)
{
	if (call->grpc_status >= 0) {
		if (call->grpc_status == VCOUNTER_CTL_STATUS_OK) {
			if (call->partial)
				return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
						 "the daemon's last message was cut short");
			return set_error(ctl, VCOUNTER_CTL_STATUS_OK, 0, "%s", "");
		}
		return set_error(ctl, call->grpc_status, status_to_errno(call->grpc_status),
				 "%s%s%s", vcounter_ctl_status_name(call->grpc_status),
				 call->grpc_message[0] ? ": " : "", call->grpc_message);
	}
	if (call->http_status != 0 && call->http_status != 200) {
		/* https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md */
		int status;

		switch (call->http_status) {
		case 400:
			status = VCOUNTER_CTL_STATUS_INTERNAL;
			break;
		case 401:
			status = VCOUNTER_CTL_STATUS_UNAUTHENTICATED;
			break;
		case 403:
			status = VCOUNTER_CTL_STATUS_PERMISSION_DENIED;
			break;
		case 404:
			status = VCOUNTER_CTL_STATUS_UNIMPLEMENTED;
			break;
		case 429:
		case 502:
		case 503:
		case 504:
			status = VCOUNTER_CTL_STATUS_UNAVAILABLE;
			break;
		default:
			status = VCOUNTER_CTL_STATUS_UNKNOWN;
			break;
		}
		return set_error(ctl, status, status_to_errno(status), "%s: HTTP status %d",
				 vcounter_ctl_status_name(status), call->http_status);
	}
	if (call->reset_by_daemon || call->close_error_code != NGHTTP2_NO_ERROR)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
				 "the daemon reset the stream (RST_STREAM %s) %s",
				 nghttp2_http2_strerror(call->close_error_code),
				 call->headers_done ? "before its trailers" : "without an answer");
	if (call->headers_done && !call->grpc_content_type)
		return set_error(ctl, VCOUNTER_CTL_STATUS_UNKNOWN,
				 status_to_errno(VCOUNTER_CTL_STATUS_UNKNOWN),
				 "UNKNOWN: the daemon's answer is not gRPC (content-type)");
	return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
			 "the stream ended without grpc-status");
}

struct unary {
	struct vcounter_ctl *ctl;
	const ProtobufCMessageDescriptor *reply_desc;
	ProtobufCMessage *reply;
};

static int unary_message(const uint8_t *msg, size_t len, void *userdata)
{
	struct unary *u = userdata;

	if (u->reply)
		return set_error(u->ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
				 "the daemon sent more than one reply to a unary call");
	u->reply = protobuf_c_message_unpack(u->reply_desc, NULL, len, msg);
	if (!u->reply)
		return set_error(u->ctl, VCOUNTER_CTL_STATUS_LOCAL, -EBADMSG,
				 "the daemon's %s does not unpack", u->reply_desc->short_name);
	return 0;
}

/* One request, one reply: *ret_reply (free with protobuf_c_message_free_unpacked). */
static int ctl_unary(struct vcounter_ctl *ctl, const char *method, const ProtobufCMessage *request,
		     const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret_reply)
{
	struct unary u = { .ctl = ctl, .reply_desc = reply_desc };
	struct ctl_call call = { .on_message = unary_message, .userdata = &u };
	int r;

	r = ctl_run(ctl, &call, method, request);
	if (r == 0)
		r = call.stop ? call.stop : call_status(ctl, &call);
	if (r == 0 && !u.reply)
		r = set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EPROTO,
			      "the daemon sent no reply to %s", method);
	if (r < 0) {
		if (u.reply)
			protobuf_c_message_free_unpacked(u.reply, NULL);
		return r;
	}
	*ret_reply = u.reply;
	return 0;
}

/* ---- conversions: validated protobuf -> control.h structs ---- */

static void copy_text(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

static const char *or_unknown(const char *name)
{
	return name ? name : "unknown";
}

static const char *role_name(Vcounter__V1__Role pb)
{
	enum vm_role role;

	return wire_role_from_pb(pb, &role) < 0 ? "unknown" : or_unknown(vm_role_to_string(role));
}

static const char *backend_name(Vcounter__V1__Backend pb)
{
	enum backend_kind kind;

	return wire_backend_from_pb(pb, &kind) < 0 ? "unknown"
						   : or_unknown(backend_kind_to_string(kind));
}

static const char *sync_source_name(Vcounter__V1__SyncSource pb)
{
	enum sync_source_kind kind;

	return wire_sync_source_from_pb(pb, &kind) < 0
		       ? "unknown"
		       : or_unknown(sync_source_kind_to_string(kind));
}

static const char *arch_name(Vcounter__V1__CounterArch pb)
{
	enum counter_arch arch;

	return wire_counter_arch_from_pb(pb, &arch) < 0 ? "unknown"
							: or_unknown(counter_arch_to_string(arch));
}

static int vm_from_pb(struct vcounter_ctl *ctl, const Vcounter__V1__Vm *pb,
		      struct vcounter_ctl_vm *ret)
{
	if (!pb)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EBADMSG, "the daemon sent no VM");
	/* Ids are what a caller acts on next: refused, never truncated. */
	if (!vm_id_is_valid(pb->vm_id))
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EBADMSG,
				 "the daemon sent an invalid vm_id \"%.64s\"",
				 pb->vm_id ? pb->vm_id : "");
	memset(ret, 0, sizeof(*ret));
	copy_text(ret->vm_id, sizeof(ret->vm_id), pb->vm_id);
	copy_text(ret->role, sizeof(ret->role), role_name(pb->role));
	copy_text(ret->backend, sizeof(ret->backend), backend_name(pb->backend));
	copy_text(ret->arch, sizeof(ret->arch), arch_name(pb->arch));
	ret->vcpu_count = pb->vcpu_count;
	ret->offset_control = pb->offset_control;
	ret->registration_complete = pb->registration_complete;
	copy_text(ret->probe_detail, sizeof(ret->probe_detail), pb->probe_detail);
	ret->guest_tsc_khz = pb->guest_tsc_khz;
	ret->registered_by_pid = pb->registered_by_pid;
	ret->registered_by_uid = pb->registered_by_uid;
	return 0;
}

void vcounter_ctl_migration_clear(struct vcounter_ctl_migration *m)
{
	if (!m)
		return;
	report_clear(&m->report);
	m->has_report = false;
}

void vcounter_ctl_migrations_free(struct vcounter_ctl_migration *m, size_t n)
{
	if (!m)
		return;
	for (size_t i = 0; i < n; i++)
		vcounter_ctl_migration_clear(&m[i]);
	free(m);
}

static int migration_from_pb(struct vcounter_ctl *ctl, const Vcounter__V1__Migration *pb,
			     struct vcounter_ctl_migration *ret)
{
	struct vcounter_ctl_migration m = { 0 };
	enum migration_step step;
	char err[256];
	int r;

	if (!pb)
		return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EBADMSG,
				 "the daemon sent no migration");
	if (!migration_id_is_valid(pb->migration_id) || !vm_id_is_valid(pb->vm_id))
		return set_error(
			ctl, VCOUNTER_CTL_STATUS_LOCAL, -EBADMSG,
			"the daemon sent a migration with invalid ids (\"%.40s\", \"%.64s\")",
			pb->migration_id ? pb->migration_id : "", pb->vm_id ? pb->vm_id : "");
	/* The numbers are the wire's MigrationStep (counter_state.h). */
	step = (enum migration_step)pb->step;
	copy_text(m.migration_id, sizeof(m.migration_id), pb->migration_id);
	copy_text(m.vm_id, sizeof(m.vm_id), pb->vm_id);
	copy_text(m.role, sizeof(m.role), role_name(pb->role));
	copy_text(m.step, sizeof(m.step), or_unknown(migration_step_to_string(step)));
	m.terminal = migration_step_is_terminal(step);
	copy_text(m.peer_identity, sizeof(m.peer_identity), pb->peer_identity);
	copy_text(m.peer_address, sizeof(m.peer_address), pb->peer_address);
	m.generation = pb->generation;
	m.started_by_controller = pb->started_by_controller;
	m.recovered = pb->recovered;
	m.awaiting_source = pb->awaiting_source;
	m.age_ns = pb->age_ns;
	m.step_age_ns = pb->step_age_ns;
	m.planned_delta_cycles = pb->planned_delta_cycles;
	m.planned_error_bound_ns = pb->planned_error_bound_ns;
	copy_text(m.failure_reason, sizeof(m.failure_reason), pb->failure_reason);
	if (pb->report) {
		r = report_from_pb(pb->report, &m.report, err, sizeof(err));
		if (r == -ENOMEM)
			return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, r, "out of memory");
		if (r < 0)
			return set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -EBADMSG,
					 "migration %s: invalid report from the daemon: %s",
					 m.migration_id, err);
		m.has_report = true;
	}
	*ret = m;
	return 0;
}

static void host_from_pb(const Vcounter__V1__HostStatus *pb, struct vcounter_ctl_host *ret)
{
	memset(ret, 0, sizeof(*ret));
	copy_text(ret->version, sizeof(ret->version), pb->version);
	copy_text(ret->host_name, sizeof(ret->host_name), pb->host_name);
	/* The first VCOUNTER_CTL_MAX_BACKENDS in preference order: this
	 * version knows 3. */
	for (size_t i = 0; i < pb->n_backends && i < VCOUNTER_CTL_MAX_BACKENDS; i++) {
		const Vcounter__V1__BackendSupport *b = pb->backends[i];
		struct vcounter_ctl_backend *out = &ret->backends[ret->n_backends++];

		copy_text(out->name, sizeof(out->name), backend_name(b->backend));
		out->allowed = b->allowed;
		out->kernel_support = b->kernel_support;
		copy_text(out->detail, sizeof(out->detail), b->detail);
		out->vm_count = b->vm_count;
	}
	if (pb->sync) {
		ret->clock_synced = !pb->sync->unsynced;
		ret->maxerror_ns = pb->sync->maxerror_ns;
		ret->esterror_ns = pb->sync->esterror_ns;
		ret->tai_offset_s = pb->sync->tai_offset_s;
		copy_text(ret->sync_source, sizeof(ret->sync_source),
			  sync_source_name(pb->sync->source));
	}
	copy_text(ret->sync_problem, sizeof(ret->sync_problem), pb->sync_problem);
	ret->error_bound_ns = pb->error_bound_ns;
	ret->vm_count = pb->vm_count;
	ret->migrations_running = pb->migrations_running;
	ret->migrations_kept = pb->migrations_kept;
	ret->watchers = pb->watchers;
	copy_text(ret->peer_listen_address, sizeof(ret->peer_listen_address),
		  pb->peer_listen_address);
	ret->uptime_ns = pb->uptime_ns;
	ret->host_tsc_khz = pb->host_tsc_khz;
}

/* ---- the API ---- */

int vcounter_ctl_host_status(struct vcounter_ctl *ctl, struct vcounter_ctl_host *ret)
{
	Vcounter__V1__GetHostStatusRequest req = VCOUNTER__V1__GET_HOST_STATUS_REQUEST__INIT;
	ProtobufCMessage *reply;
	int r;

	if (!ctl || !ret)
		return -EINVAL;
	r = ctl_unary(ctl, "GetHostStatus", &req.base, &vcounter__v1__host_status__descriptor,
		      &reply);
	if (r < 0)
		return r;
	host_from_pb((Vcounter__V1__HostStatus *)reply, ret);
	protobuf_c_message_free_unpacked(reply, NULL);
	return 0;
}

int vcounter_ctl_list_vms(struct vcounter_ctl *ctl, struct vcounter_ctl_vm **ret, size_t *ret_n)
{
	Vcounter__V1__ListVmsRequest req = VCOUNTER__V1__LIST_VMS_REQUEST__INIT;
	Vcounter__V1__ListVmsReply *reply;
	_cleanup_free_ struct vcounter_ctl_vm *vms = NULL;
	size_t n;
	int r;

	if (!ctl || !ret || !ret_n)
		return -EINVAL;
	r = ctl_unary(ctl, "ListVms", &req.base, &vcounter__v1__list_vms_reply__descriptor,
		      (ProtobufCMessage **)&reply);
	if (r < 0)
		return r;
	n = reply->n_vms;
	/* One more than needed: calloc(0) may return NULL. */
	vms = calloc(n + 1, sizeof(*vms));
	if (!vms)
		r = set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < n; i++)
		r = vm_from_pb(ctl, reply->vms[i], &vms[i]);
	protobuf_c_message_free_unpacked(&reply->base, NULL);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(vms);
	*ret_n = n;
	return 0;
}

int vcounter_ctl_list_migrations(struct vcounter_ctl *ctl, const char *vm_id, bool running_only,
				 struct vcounter_ctl_migration **ret, size_t *ret_n)
{
	Vcounter__V1__ListMigrationsRequest req = VCOUNTER__V1__LIST_MIGRATIONS_REQUEST__INIT;
	Vcounter__V1__ListMigrationsReply *reply;
	struct vcounter_ctl_migration *ms;
	size_t n, done = 0;
	int r;

	if (!ctl || !ret || !ret_n)
		return -EINVAL;
	req.vm_id = (char *)(vm_id ? vm_id : "");
	req.running_only = running_only;
	r = ctl_unary(ctl, "ListMigrations", &req.base,
		      &vcounter__v1__list_migrations_reply__descriptor,
		      (ProtobufCMessage **)&reply);
	if (r < 0)
		return r;
	n = reply->n_migrations;
	ms = calloc(n + 1, sizeof(*ms));
	if (!ms)
		r = set_error(ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "out of memory");
	for (; r == 0 && done < n; done++)
		r = migration_from_pb(ctl, reply->migrations[done], &ms[done]);
	protobuf_c_message_free_unpacked(&reply->base, NULL);
	if (r < 0) {
		vcounter_ctl_migrations_free(ms, done);
		return r;
	}
	*ret = ms;
	*ret_n = n;
	return 0;
}

static int migration_call(struct vcounter_ctl *ctl, const char *method,
			  const ProtobufCMessage *request, struct vcounter_ctl_migration *ret)
{
	ProtobufCMessage *reply;
	struct vcounter_ctl_migration m;
	int r;

	r = ctl_unary(ctl, method, request, &vcounter__v1__migration__descriptor, &reply);
	if (r < 0)
		return r;
	r = migration_from_pb(ctl, (Vcounter__V1__Migration *)reply, &m);
	protobuf_c_message_free_unpacked(reply, NULL);
	if (r < 0)
		return r;
	if (ret)
		*ret = m;
	else
		vcounter_ctl_migration_clear(&m);
	return 0;
}

int vcounter_ctl_get_migration(struct vcounter_ctl *ctl, const char *migration_id,
			       struct vcounter_ctl_migration *ret)
{
	Vcounter__V1__GetMigrationRequest req = VCOUNTER__V1__GET_MIGRATION_REQUEST__INIT;

	if (!ctl || !migration_id)
		return -EINVAL;
	req.migration_id = (char *)migration_id;
	return migration_call(ctl, "GetMigration", &req.base, ret);
}

int vcounter_ctl_start_migration(struct vcounter_ctl *ctl, const char *vm_id,
				 const char *peer_address, const char *peer_name,
				 struct vcounter_ctl_migration *ret)
{
	Vcounter__V1__StartMigrationRequest req = VCOUNTER__V1__START_MIGRATION_REQUEST__INIT;

	if (!ctl || !vm_id || !peer_address || !peer_name)
		return -EINVAL;
	req.vm_id = (char *)vm_id;
	req.peer_address = (char *)peer_address;
	req.peer_name = (char *)peer_name;
	return migration_call(ctl, "StartMigration", &req.base, ret);
}

int vcounter_ctl_abort_migration(struct vcounter_ctl *ctl, const char *migration_id,
				 const char *reason, struct vcounter_ctl_migration *ret)
{
	Vcounter__V1__AbortMigrationRequest req = VCOUNTER__V1__ABORT_MIGRATION_REQUEST__INIT;

	if (!ctl || !migration_id)
		return -EINVAL;
	req.migration_id = (char *)migration_id;
	req.reason = (char *)(reason ? reason : "");
	return migration_call(ctl, "AbortMigration", &req.base, ret);
}

struct watch {
	struct vcounter_ctl *ctl;
	int (*cb)(const struct vcounter_ctl_event *event, void *userdata);
	void *userdata;
	bool caller_stopped; /* cb's value, not a local failure */
};

static int watch_headers(void *userdata)
{
	struct watch *w = userdata;
	int r = w->cb(NULL, w->userdata);

	w->caller_stopped = r != 0;
	return r;
}

static int watch_message(const uint8_t *msg, size_t len, void *userdata)
{
	struct watch *w = userdata;
	Vcounter__V1__Event *pb;
	struct vcounter_ctl_event *ev;
	int r = 0;

	pb = vcounter__v1__event__unpack(NULL, len, msg);
	if (!pb)
		return set_error(w->ctl, VCOUNTER_CTL_STATUS_LOCAL, -EBADMSG,
				 "the daemon's Event does not unpack");
	/* struct vcounter_ctl_event is 2 KiB: not on the stack of a callback
	 * nested in nghttp2's. */
	ev = calloc(1, sizeof(*ev));
	if (!ev) {
		vcounter__v1__event__free_unpacked(pb, NULL);
		return set_error(w->ctl, VCOUNTER_CTL_STATUS_LOCAL, -ENOMEM, "out of memory");
	}
	ev->seq = pb->seq;
	ev->realtime_ns = pb->realtime_ns;
	switch (pb->kind) {
	case VCOUNTER__V1__EVENT_KIND__EVENT_KIND_VM_REGISTERED:
	case VCOUNTER__V1__EVENT_KIND__EVENT_KIND_VM_UNREGISTERED:
		ev->kind = pb->kind == VCOUNTER__V1__EVENT_KIND__EVENT_KIND_VM_REGISTERED
				   ? VCOUNTER_CTL_EVENT_VM_REGISTERED
				   : VCOUNTER_CTL_EVENT_VM_UNREGISTERED;
		r = vm_from_pb(w->ctl, pb->vm, &ev->vm);
		break;
	case VCOUNTER__V1__EVENT_KIND__EVENT_KIND_MIGRATION_STEP:
	case VCOUNTER__V1__EVENT_KIND__EVENT_KIND_MIGRATION_OUTCOME:
		ev->kind = pb->kind == VCOUNTER__V1__EVENT_KIND__EVENT_KIND_MIGRATION_STEP
				   ? VCOUNTER_CTL_EVENT_MIGRATION_STEP
				   : VCOUNTER_CTL_EVENT_MIGRATION_OUTCOME;
		r = migration_from_pb(w->ctl, pb->migration, &ev->migration);
		break;
	default:
		/* A kind this version does not know (a newer daemon): skipped. */
		ev->kind = 0;
		break;
	}
	vcounter__v1__event__free_unpacked(pb, NULL);
	if (r == 0 && ev->kind) {
		r = w->cb(ev, w->userdata);
		w->caller_stopped = r != 0;
	}
	vcounter_ctl_migration_clear(&ev->migration);
	free(ev);
	return r;
}

int vcounter_ctl_watch(struct vcounter_ctl *ctl, const char *vm_id, const char *migration_id,
		       int (*cb)(const struct vcounter_ctl_event *event, void *userdata),
		       void *userdata)
{
	Vcounter__V1__WatchEventsRequest req = VCOUNTER__V1__WATCH_EVENTS_REQUEST__INIT;
	struct watch w = { .ctl = ctl, .cb = cb, .userdata = userdata };
	struct ctl_call call = { .on_headers = watch_headers,
				 .on_message = watch_message,
				 .userdata = &w };
	int r;

	if (!ctl || !cb)
		return -EINVAL;
	req.vm_id = (char *)(vm_id ? vm_id : "");
	req.migration_id = (char *)(migration_id ? migration_id : "");
	r = ctl_run(ctl, &call, "WatchEvents", &req.base);
	if (r < 0)
		return r;
	if (call.stop && w.caller_stopped)
		return set_error(ctl, VCOUNTER_CTL_STATUS_CANCELLED, call.stop,
				 "the watch was cancelled by its callback");
	if (call.stop)
		return call.stop; /* a local failure, last_error says which */
	r = call_status(ctl, &call);
	if (r == 0)
		return set_error(ctl, VCOUNTER_CTL_STATUS_OK, -EPIPE, "the daemon ended the watch");
	return r;
}
