/* peer_conn.c - one peer-link connection (TCP + mutual TLS 1.3 through a libevent openssl
 * bufferevent) carrying length-prefixed frames, and the listener that accepts such connections. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "admission.h"
#include "cleanup.h"
#include "clockns.h"
#include "frame.h"
#include "listener.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "peer_conn.h"
#include "ratelimit.h"
#include "tls.h"

/* Handshakes in flight on one listener, and of those from one address (admission.h): a
 * stranger must not be able to grow our memory, nor keep an allowed peer out, by opening
 * connections it never completes. When all are taken the oldest makes room; the deadline
 * shrinks from PEER_CONN_HANDSHAKE_TIMEOUT_MS at half full to PEER_HANDSHAKE_PRESSED_MS. */
#define PEER_LISTENER_MAX_HANDSHAKES 64
#define PEER_LISTENER_MAX_PER_SOURCE 8
#define PEER_HANDSHAKE_PRESSED_MS    1000
#define PEER_SHED_LOG_BURST	     10
#define PEER_SHED_LOG_INTERVAL_S     10
#define PEER_LISTENER_BACKLOG	     16
#define PEER_CONN_REASON_MAX	     1024
/* "[" + host + "]:" + port */
#define PEER_HOST_MAX		     256
#define PEER_PORT_MAX		     6

enum conn_state {
	CONN_TCP_CONNECTING, /* client: waiting for connect() */
	CONN_HANDSHAKE,	     /* TLS handshake running */
	CONN_ESTABLISHED,    /* verified; frames flow */
	CONN_CLOSED,	     /* on_close running; only destruction follows */
};

struct peer_conn {
	struct event_base *base;
	SSL_CTX *ctx; /* a reference of ours: the daemon may swap its contexts (reload) */
	const struct peer_conn_ops *ops;
	void *userdata;
	enum conn_state state;
	bool is_client;

	/* User callbacks on the stack; peer_conn_free() inside one only sets free_requested and
	 * the code that made the call destroys the conn once the callback has returned. */
	unsigned callback_depth;
	bool free_requested;

	/* Accepted connection still handshaking: listed on its listener (which frees it if the
	 * listener goes first). Once established, the conn belongs to the user. */
	struct peer_listener *listener;
	struct peer_conn *pending_prev, *pending_next;
	char source[ADMISSION_SOURCE_MAX]; /* accepted: the remote address, its port aside */
	unsigned deadline_ms;

	/* Client connect phase: each resolved address in turn. */
	struct addrinfo *addrs;
	const struct addrinfo *next_addr;
	int fd;
	struct event *connect_ev;
	int connect_error;
	char remote[PEER_HOST_MAX + PEER_PORT_MAX + 4];

	/* Absolute deadline for connect + handshake; also carries a failure found synchronously
	 * to the next loop iteration (on_close is never called from inside an API call). */
	struct event *deadline_ev;
	int deferred_error;
	char deferred_reason[PEER_CONN_REASON_MAX];

	struct bufferevent *bev; /* owns ssl and the socket */
	SSL *ssl;
	char expected_name[TLS_PEER_NAME_MAX + 1];
	char identity[TLS_PEER_NAME_MAX + 1];
};

struct peer_listener {
	struct event_base *base;
	SSL_CTX *ctx; /* a reference of ours, for connections accepted from now on */
	const struct peer_conn_ops *ops;
	void *userdata;
	struct listener *listener;
	struct ratelimit shed_log; /* connections closed at accept */
	struct peer_conn *pending;
	size_t n_pending;
};

/* --- addresses --- */

/* "127.0.0.1:7777", "[::1]:7777", "localhost:7777" -> host and port strings. A bare IPv6
 * address without brackets is ambiguous and refused. */
static int split_host_port(const char *host_port, bool allow_port_zero, char host[PEER_HOST_MAX],
			   char port[PEER_PORT_MAX], bool *ret_bracketed)
{
	const char *colon, *host_start, *host_end, *p;
	unsigned long port_num = 0;
	bool bracketed;
	size_t host_len;

	if (!host_port)
		return -EINVAL;
	bracketed = host_port[0] == '[';
	if (bracketed) {
		host_start = host_port + 1;
		host_end = strchr(host_start, ']');
		if (!host_end || host_end[1] != ':')
			return -EINVAL;
		colon = host_end + 1;
	} else {
		host_start = host_port;
		colon = strchr(host_port, ':');
		if (!colon || strchr(colon + 1, ':'))
			return -EINVAL;
		host_end = colon;
	}
	host_len = (size_t)(host_end - host_start);
	if (host_len == 0 || host_len >= PEER_HOST_MAX)
		return -EINVAL;

	p = colon + 1;
	if (*p == '\0' || strlen(p) >= PEER_PORT_MAX)
		return -EINVAL;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		port_num = port_num * 10 + (unsigned long)(*p - '0');
	}
	if (port_num > 65535 || (port_num == 0 && !allow_port_zero))
		return -EINVAL;

	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	snprintf(port, PEER_PORT_MAX, "%lu", port_num);
	*ret_bracketed = bracketed;
	return 0;
}

static int gai_to_errno(int gai)
{
	switch (gai) {
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_SYSTEM:
		return errno > 0 ? -errno : -EIO;
	case EAI_NONAME:
#ifdef EAI_NODATA
	case EAI_NODATA:
#endif
	case EAI_FAIL:
		return -EHOSTUNREACH;
	default:
		return -EINVAL;
	}
}

/* Resolve with getaddrinfo. Names are resolved synchronously (numeric addresses and
 * /etc/hosts names are instant; the fleet is not expected to depend on DNS at migration time). */
int tcp_resolve(const char *host_port, bool passive, struct addrinfo **ret_addrs)
{
	char host[PEER_HOST_MAX], port[PEER_PORT_MAX];
	struct addrinfo hints = {
		.ai_socktype = SOCK_STREAM,
		.ai_protocol = IPPROTO_TCP,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	bool bracketed;
	int r;

	r = split_host_port(host_port, passive, host, port, &bracketed);
	if (r < 0)
		return r;
	if (bracketed) {
		hints.ai_family = AF_INET6;
		hints.ai_flags |= AI_NUMERICHOST;
	}
	r = getaddrinfo(host, port, &hints, ret_addrs);
	if (r != 0)
		return gai_to_errno(r);
	return 0;
}

/* Frames are small requests and answers on the migration's critical path: Nagle plus delayed
 * ACKs would add up to ~40 ms per round trip of VM downtime. */
static void set_nodelay(int fd)
{
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* SNI and OpenSSL's own host check take DNS names only; a URI identity is checked after the
 * handshake by tls_peer_has_name(). */
static bool name_is_dns(const char *name)
{
	if (!*name || *name == '.')
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
			return false;
	return true;
}

/* --- connection life cycle --- */

static void conn_listener_unlink(struct peer_conn *conn)
{
	struct peer_listener *l = conn->listener;

	if (!l)
		return;
	if (conn->pending_prev)
		conn->pending_prev->pending_next = conn->pending_next;
	else
		l->pending = conn->pending_next;
	if (conn->pending_next)
		conn->pending_next->pending_prev = conn->pending_prev;
	conn->pending_prev = conn->pending_next = NULL;
	conn->listener = NULL;
	l->n_pending--;
}

/* On an established link: hand what is queued to TLS and the kernel as far as they take it
 * without blocking, then send close_notify, so that a "send this, then hang up" sequence
 * normally reaches the peer and the peer sees an orderly close. Best effort: whatever does not
 * fit in the socket buffer now is dropped ("close now"). */
static void conn_flush_and_shutdown(struct peer_conn *conn)
{
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	size_t len = evbuffer_get_length(out);

	if (len > 0 && len <= PEER_CONN_MAX_PENDING_BYTES + FRAME_HEADER_BYTES) {
		/* One SSL_write of the whole buffer: if libevent's last SSL_write is waiting to be
		 * retried, OpenSSL accepts the retry only with at least as many bytes, and the
		 * buffer starts with exactly those bytes. */
		unsigned char *data = evbuffer_pullup(out, -1);

		if (data)
			(void)SSL_write(conn->ssl, data, (int)len);
	}
	(void)SSL_shutdown(conn->ssl);
	ERR_clear_error();
}

static void conn_destroy(struct peer_conn *conn)
{
	conn_listener_unlink(conn);
	conn->connect_ev = event_unref(conn->connect_ev);
	conn->deadline_ev = event_unref(conn->deadline_ev);
	if (conn->bev) {
		/* Inside the event callback of this very bufferevent is fine: libevent defers the
		 * final free until its callbacks have returned. */
		bufferevent_setcb(conn->bev, NULL, NULL, NULL, NULL);
		if (conn->state == CONN_ESTABLISHED)
			conn_flush_and_shutdown(conn);
		conn->bev =
			bufferevent_unref(conn->bev); /* BEV_OPT_CLOSE_ON_FREE: SSL_free + close */
	}
	close_nointr(conn->fd);
	if (conn->addrs)
		freeaddrinfo(conn->addrs);
	conn->ctx = ssl_ctx_unref(conn->ctx);
	free(conn);
}

/* Report the end to the user (last use of conn by anyone), then free it. */
static void conn_close(struct peer_conn *conn, int error, const char *reason)
{
	/* Closed, not established: conn_destroy sends no close_notify after a failure. */
	conn->state = CONN_CLOSED;
	if (conn->ops->on_close) {
		conn->callback_depth++;
		conn->ops->on_close(conn, error, reason, conn->userdata);
		conn->callback_depth--;
	}
	conn_destroy(conn);
}

/* Fail from a context where on_close must not run yet (inside peer_conn_connect): the deadline
 * event runs at the next loop iteration and reports it. */
static void conn_fail_later(struct peer_conn *conn, int error, const char *reason)
{
	conn->deferred_error = error;
	snprintf(conn->deferred_reason, sizeof(conn->deferred_reason), "%s", reason);
	event_active(conn->deadline_ev, EV_TIMEOUT, 1);
}

static void conn_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct peer_conn *conn = arg;
	char reason[PEER_CONN_REASON_MAX];

	if (conn->deferred_error) {
		conn_close(conn, conn->deferred_error, conn->deferred_reason);
		return;
	}
	snprintf(reason, sizeof(reason), "%s %s did not complete within %d ms",
		 conn->state == CONN_TCP_CONNECTING ? "TCP connect to" : "TLS handshake with",
		 conn->remote, conn->deadline_ms);
	if (conn->listener)
		metrics_shed(&vcd_metrics, METRICS_SOCKET_PEER, METRICS_SHED_DEADLINE);
	conn_close(conn, -ETIMEDOUT, reason);
}

static struct peer_conn *conn_new(struct event_base *base, SSL_CTX *ctx,
				  const struct peer_conn_ops *ops, void *userdata)
{
	struct peer_conn *conn;

	conn = calloc(1, sizeof(*conn));
	if (!conn)
		return NULL;
	conn->base = base;
	conn->ops = ops;
	conn->userdata = userdata;
	conn->fd = -1;
	conn->deadline_ev = evtimer_new(base, conn_deadline_cb, conn);
	if (!conn->deadline_ev) {
		free(conn);
		return NULL;
	}
	/* A client needs its context after connect(), which is later (SSL_new holds one then). */
	SSL_CTX_up_ref(ctx);
	conn->ctx = ctx;
	return conn;
}

static int conn_arm_deadline(struct peer_conn *conn, unsigned ms)
{
	const struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	conn->deadline_ms = ms;
	return evtimer_add(conn->deadline_ev, &tv) < 0 ? -ENOMEM : 0;
}

/* Call a user callback; false if the user freed conn inside it (it is gone now). */
#define CONN_CALLBACK(conn, cb, ...)                                            \
	__extension__({                                                         \
		(conn)->callback_depth++;                                       \
		if ((conn)->ops->cb)                                            \
			(conn)->ops->cb((conn), __VA_ARGS__, (conn)->userdata); \
		(conn)->callback_depth--;                                       \
		bool _alive_ = !(conn)->free_requested;                         \
		if (!_alive_)                                                   \
			conn_destroy(conn);                                     \
		_alive_;                                                        \
	})

/* Deliver every whole frame in the input buffer; false if conn is gone. */
static bool conn_process_input(struct peer_conn *conn)
{
	struct evbuffer *in = bufferevent_get_input(conn->bev);

	for (;;) {
		uint8_t header[FRAME_HEADER_BYTES];
		size_t avail = evbuffer_get_length(in);
		unsigned char *frame;
		uint32_t len;

		if (avail < FRAME_HEADER_BYTES)
			return true;
		if (evbuffer_copyout(in, header, sizeof(header)) != (ev_ssize_t)sizeof(header)) {
			conn_close(conn, -EIO, "cannot read frame header from input buffer");
			return false;
		}
		/* The length is checked before the payload is waited for: no stream resync. */
		if (frame_header_decode(header, VC_MAX_FRAME_BYTES, &len) < 0) {
			char reason[PEER_CONN_REASON_MAX];

			snprintf(reason, sizeof(reason), "peer %s announced a frame over %u bytes",
				 conn->identity, (unsigned)VC_MAX_FRAME_BYTES);
			conn_close(conn, -EMSGSIZE, reason);
			return false;
		}
		if (avail - FRAME_HEADER_BYTES < len)
			return true;
		frame = evbuffer_pullup(in, (ev_ssize_t)(FRAME_HEADER_BYTES + len));
		if (!frame) {
			conn_close(conn, -ENOMEM, "cannot assemble frame");
			return false;
		}
		if (!CONN_CALLBACK(conn, on_frame, frame + FRAME_HEADER_BYTES, (size_t)len))
			return false;
		evbuffer_drain(in, FRAME_HEADER_BYTES + len);
	}
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct peer_conn *conn = arg;

	/* Bytes that beat BEV_EVENT_CONNECTED wait until the identity is verified. */
	if (conn->state == CONN_ESTABLISHED)
		(void)conn_process_input(conn);
}

static void conn_established(struct peer_conn *conn)
{
	char name[TLS_PEER_NAME_MAX + 1];
	char reason[PEER_CONN_REASON_MAX];
	int r;

	/* The verify callback already refused leaves without an allow-listed SAN; this is the
	 * second lock, and it tells us which name the peer is. */
	r = tls_peer_identity(conn->ssl, name, sizeof(name));
	if (r < 0) {
		snprintf(reason, sizeof(reason),
			 "peer %s: certificate carries no allow-listed subjectAltName",
			 conn->remote);
		conn_close(conn, -EPERM, reason);
		return;
	}
	if (conn->is_client && !tls_peer_has_name(conn->ssl, conn->expected_name)) {
		snprintf(reason, sizeof(reason), "peer %s is %s, not the expected %s", conn->remote,
			 name, conn->expected_name);
		conn_close(conn, -EPERM, reason);
		return;
	}

	snprintf(conn->identity, sizeof(conn->identity), "%s", name);
	evtimer_del(conn->deadline_ev);
	/* Idle links are normal (one link serves many migrations): no read/write timeouts. */
	bufferevent_set_timeouts(conn->bev, NULL, NULL);
	conn_listener_unlink(conn);
	conn->state = CONN_ESTABLISHED;

	if (!CONN_CALLBACK(conn, on_established, conn->identity))
		return;
	(void)conn_process_input(conn);
}

/* Turn what libevent and OpenSSL know about a failure into -errno and a sentence. */
static int conn_error(struct peer_conn *conn, short what, char *reason, size_t reason_size)
{
	unsigned long e, root = 0;
	socklen_t soerr_len = sizeof(int);
	int soerr = 0, fd;
	long verify;

	/* libevent hands its saved errors back last-in first-out, possibly with an SSL_get_error()
	 * code among them (no library part): the last real one popped is the root cause. */
	while ((e = bufferevent_get_openssl_error(conn->bev)) != 0)
		if (ERR_GET_LIB(e) != 0)
			root = e;

	verify = SSL_get_verify_result(conn->ssl);
	if (conn->state == CONN_HANDSHAKE && verify != X509_V_OK) {
		/* Our side refused the peer's certificate. */
		if (verify == X509_V_ERR_APPLICATION_VERIFICATION) {
			snprintf(reason, reason_size,
				 "peer %s refused: no subjectAltName of its certificate is on the "
				 "allow-list",
				 conn->remote);
			return -EPERM;
		}
		if (verify == X509_V_ERR_HOSTNAME_MISMATCH) {
			snprintf(reason, reason_size,
				 "peer %s refused: its certificate does not name %s", conn->remote,
				 conn->expected_name);
			return -EPERM;
		}
		snprintf(reason, reason_size,
			 "peer %s refused: certificate verification failed: %s", conn->remote,
			 X509_verify_cert_error_string(verify));
		return -EPROTO;
	}

	if (root) {
		const char *s = ERR_reason_error_string(root);
		char buf[128];

		if (!s) {
			ERR_error_string_n(root, buf, sizeof(buf));
			s = buf;
		}
		/* OpenSSL 3 reports a TCP FIN without close_notify as an error. Such a peer went
		 * away (crash, kill, cable); an orderly peer_conn_free() sends close_notify. */
		if (ERR_GET_LIB(root) == ERR_LIB_SSL &&
		    ERR_GET_REASON(root) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
			snprintf(reason, reason_size,
				 "peer %s closed the connection without TLS close_notify",
				 conn->remote);
			return -ECONNRESET;
		}
		snprintf(reason, reason_size, "TLS with peer %s failed: %s", conn->remote, s);
		return -EPROTO;
	}

	if (what & BEV_EVENT_TIMEOUT) {
		snprintf(reason, reason_size, "peer %s timed out", conn->remote);
		return -ETIMEDOUT;
	}

	/* The errno of the failed read or write is gone by the time this deferred callback runs;
	 * a pending socket error is the best we have, else call it a reset. */
	fd = bufferevent_getfd(conn->bev);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerr_len) < 0 || soerr == 0)
		soerr = ECONNRESET;
	snprintf(reason, reason_size, "connection to peer %s lost: %s", conn->remote,
		 strerror(soerr));
	return -soerr;
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct peer_conn *conn = arg;
	char reason[PEER_CONN_REASON_MAX];
	int error;

	if (what & BEV_EVENT_CONNECTED) {
		conn_established(conn);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return;

	/* Frames that arrived before the end are still delivered. */
	if (conn->state == CONN_ESTABLISHED && !conn_process_input(conn))
		return;

	if (what & BEV_EVENT_EOF) {
		if (conn->state != CONN_ESTABLISHED) {
			snprintf(reason, sizeof(reason),
				 "peer %s closed the connection during the TLS handshake",
				 conn->remote);
			error = -ECONNRESET;
		} else if (evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
			snprintf(reason, sizeof(reason),
				 "peer %s closed the connection in the middle of a frame",
				 conn->remote);
			error = -ECONNRESET;
		} else {
			snprintf(reason, sizeof(reason), "peer %s closed the connection",
				 conn->remote);
			error = 0;
		}
	} else
		error = conn_error(conn, what, reason, sizeof(reason));
	conn_close(conn, error, reason);
}

/* Wrap a connected (client) or accepted (server) socket in TLS; takes fd in all cases. */
static int conn_start_tls(struct peer_conn *conn, int fd, enum bufferevent_ssl_state ssl_state)
{
	SSL *ssl;

	ssl = SSL_new(conn->ctx);
	if (!ssl) {
		ERR_clear_error();
		close_nointr(fd);
		return -ENOMEM;
	}
	if (conn->is_client && name_is_dns(conn->expected_name)) {
		/* The chain check itself then includes the name (RFC 6125 style), exact only. */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_WILDCARDS |
					       X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
		if (!SSL_set_tlsext_host_name(ssl, conn->expected_name) ||
		    !SSL_set1_host(ssl, conn->expected_name)) {
			ERR_clear_error();
			ssl = ssl_unref(ssl);
			close_nointr(fd);
			return -ENOMEM;
		}
	}

	/* On failure libevent 2.1 has already freed ssl (BEV_OPT_CLOSE_ON_FREE), not the fd. */
	conn->bev = bufferevent_openssl_socket_new(conn->base, fd, ssl, ssl_state,
						   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!conn->bev) {
		close_nointr(fd);
		return -ENOMEM;
	}
	conn->ssl = ssl;
	conn->state = CONN_HANDSHAKE;
	/* A peer without close_notify is reported, not taken for an orderly end (see
	 * conn_error); OpenSSL 3 reports it as an SSL error anyway. */
	bufferevent_openssl_set_allow_dirty_shutdown(conn->bev, 0);
	bufferevent_setcb(conn->bev, conn_read_cb, NULL, conn_event_cb, conn);
	/* Whole frames are consumed as soon as they are complete, so the input never needs more
	 * than one maximal frame: stop reading from the socket beyond that. */
	bufferevent_setwatermark(conn->bev, EV_READ, 0, FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES);
	if (bufferevent_enable(conn->bev, EV_READ | EV_WRITE) < 0)
		return -ENOMEM;
	return 0;
}

static void conn_try_next_addr(struct peer_conn *conn);

static void conn_connect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct peer_conn *conn = arg;
	socklen_t len = sizeof(int);
	int soerr = 0, r;

	conn->connect_ev = event_unref(conn->connect_ev);
	if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		soerr = errno;
	if (soerr != 0) {
		conn->connect_error = -soerr;
		conn->fd = close_nointr(conn->fd);
		conn_try_next_addr(conn);
		return;
	}

	r = conn_start_tls(conn, TAKE_FD(conn->fd), BUFFEREVENT_SSL_CONNECTING);
	if (r < 0)
		conn_close(conn, r, "cannot set up TLS on the connection");
}

/* Start connecting to the next resolved address; when none is left, fail with the last error. */
static void conn_try_next_addr(struct peer_conn *conn)
{
	char reason[PEER_CONN_REASON_MAX];

	while (conn->next_addr) {
		const struct addrinfo *ai = conn->next_addr;
		_cleanup_close_ int fd = -1;

		conn->next_addr = ai->ai_next;
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			conn->connect_error = -errno;
			continue;
		}
		set_nodelay(fd);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			conn->connect_error = -errno;
			continue;
		}
		conn->connect_ev = event_new(conn->base, fd, EV_WRITE, conn_connect_cb, conn);
		if (!conn->connect_ev || event_add(conn->connect_ev, NULL) < 0) {
			conn->connect_error = -ENOMEM;
			conn->connect_ev = event_unref(conn->connect_ev);
			break;
		}
		conn->fd = TAKE_FD(fd);
		return;
	}

	if (conn->connect_error == 0)
		conn->connect_error = -EHOSTUNREACH;
	snprintf(reason, sizeof(reason), "cannot connect to %s: %s", conn->remote,
		 strerror(-conn->connect_error));
	conn_fail_later(conn, conn->connect_error, reason);
}

int peer_conn_connect(struct event_base *base, SSL_CTX *ctx, const char *host_port,
		      const char *expected_name, const struct peer_conn_ops *ops, void *userdata,
		      struct peer_conn **ret_conn)
{
	struct addrinfo *addrs = NULL;
	struct peer_conn *conn;
	int r;

	if (!base || !ctx || !host_port || !expected_name || !ops || !ret_conn)
		return -EINVAL;
	if (!*expected_name || strlen(expected_name) > TLS_PEER_NAME_MAX)
		return -EINVAL;
	r = tcp_resolve(host_port, false, &addrs);
	if (r < 0)
		return r;

	conn = conn_new(base, ctx, ops, userdata);
	if (!conn) {
		freeaddrinfo(addrs);
		return -ENOMEM;
	}
	conn->is_client = true;
	conn->state = CONN_TCP_CONNECTING;
	conn->addrs = addrs;
	conn->next_addr = addrs;
	snprintf(conn->remote, sizeof(conn->remote), "%s", host_port);
	snprintf(conn->expected_name, sizeof(conn->expected_name), "%s", expected_name);

	r = conn_arm_deadline(conn, PEER_CONN_HANDSHAKE_TIMEOUT_MS);
	if (r < 0) {
		conn_destroy(conn);
		return r;
	}
	conn_try_next_addr(conn);
	*ret_conn = conn;
	return 0;
}

int peer_conn_send(struct peer_conn *conn, const uint8_t *payload, size_t len)
{
	uint8_t header[FRAME_HEADER_BYTES];
	struct evbuffer *out;
	size_t pending;

	if (!conn || (!payload && len > 0))
		return -EINVAL;
	if (conn->state != CONN_ESTABLISHED || conn->free_requested)
		return -ENOTCONN;
	if (frame_header_encode(len, header) < 0)
		return -EMSGSIZE;

	out = bufferevent_get_output(conn->bev);
	pending = evbuffer_get_length(out);
	if (pending + FRAME_HEADER_BYTES + len > PEER_CONN_MAX_PENDING_BYTES)
		return -ENOBUFS;
	/* Reserve room first so that header and payload go in together or not at all. */
	if (evbuffer_expand(out, FRAME_HEADER_BYTES + len) < 0)
		return -ENOMEM;
	if (evbuffer_add(out, header, sizeof(header)) < 0)
		return -ENOMEM;
	if (len > 0 && evbuffer_add(out, payload, len) < 0)
		return -ENOMEM;
	return 0;
}

const char *peer_conn_identity(const struct peer_conn *conn)
{
	return conn ? conn->identity : "";
}

struct peer_conn *peer_conn_free(struct peer_conn *conn)
{
	if (!conn)
		return NULL;
	if (conn->callback_depth > 0) {
		/* Inside one of its own callbacks: destroyed when the callback returns. */
		conn->free_requested = true;
		return NULL;
	}
	conn_destroy(conn);
	return NULL;
}

/* --- listener --- */

static const struct admission_limits handshake_limits = {
	.max_total = PEER_LISTENER_MAX_HANDSHAKES,
	.max_per_source = PEER_LISTENER_MAX_PER_SOURCE,
	.normal_ms = PEER_CONN_HANDSHAKE_TIMEOUT_MS,
	.pressed_ms = PEER_HANDSHAKE_PRESSED_MS,
};

static void listener_accept_cb(evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
	struct peer_listener *l = arg;
	char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?", source[ADMISSION_SOURCE_MAX];
	struct peer_conn *conn, *oldest = NULL;
	unsigned n_same = 0;

	admission_source(sa, (size_t)socklen, source);
	for (struct peer_conn *c = l->pending; c; c = c->pending_next) {
		n_same += strcmp(c->source, source) == 0;
		oldest = c; /* the list is newest first */
	}
	switch (admission_judge(&handshake_limits, (unsigned)l->n_pending, n_same)) {
	case ADMISSION_REFUSE_SOURCE:
		metrics_shed(&vcd_metrics, METRICS_SOCKET_PEER, METRICS_SHED_PER_SOURCE);
		log_ratelimited(&l->shed_log, LOG_WARNING, 0,
				"peer link: connection from %s closed at accept: that address has "
				"%u TLS handshakes running (limit %d)",
				source, n_same, PEER_LISTENER_MAX_PER_SOURCE);
		close_nointr(fd);
		return;
	case ADMISSION_EVICT_OLDEST:
		metrics_shed(&vcd_metrics, METRICS_SOCKET_PEER, METRICS_SHED_EVICTED);
		conn_close(oldest, -ETIMEDOUT,
			   "TLS handshake not finished when every handshake slot was taken: the "
			   "oldest, closed to make room");
		break;
	case ADMISSION_ADMIT:
		break;
	}
	conn = conn_new(l->base, l->ctx, l->ops, l->userdata);
	if (!conn) {
		close_nointr(fd);
		return;
	}
	(void)getnameinfo(sa, (socklen_t)socklen, host, sizeof(host), port, sizeof(port),
			  NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(conn->remote, sizeof(conn->remote), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
		 port);
	snprintf(conn->source, sizeof(conn->source), "%s", source);
	set_nodelay(fd);
	if (conn_start_tls(conn, fd, BUFFEREVENT_SSL_ACCEPTING) < 0 ||
	    conn_arm_deadline(
		    conn, admission_deadline_ms(&handshake_limits, (unsigned)l->n_pending)) < 0) {
		conn_destroy(conn);
		return;
	}

	conn->listener = l;
	conn->pending_next = l->pending;
	if (l->pending)
		l->pending->pending_prev = conn;
	l->pending = conn;
	l->n_pending++;
}

int peer_listener_new(struct event_base *base, SSL_CTX *ctx, const char *addr,
		      const struct peer_conn_ops *ops, void *userdata,
		      struct peer_listener **ret_listener)
{
	struct addrinfo *addrs = NULL;
	struct peer_listener *l;
	int r;

	if (!base || !ctx || !addr || !ops || !ret_listener)
		return -EINVAL;
	r = tcp_resolve(addr, true, &addrs);
	if (r < 0)
		return r;

	l = calloc(1, sizeof(*l));
	if (!l) {
		r = -ENOMEM;
		goto fail;
	}
	l->base = base;
	l->ops = ops;
	l->userdata = userdata;
	l->shed_log = RATELIMIT_INIT(PEER_SHED_LOG_INTERVAL_S * NSEC_PER_SEC, PEER_SHED_LOG_BURST);
	r = listener_new_bind(base, METRICS_SOCKET_PEER, addrs->ai_addr, addrs->ai_addrlen,
			      PEER_LISTENER_BACKLOG, listener_accept_cb, l, &l->listener);
	if (r < 0)
		goto fail;
	freeaddrinfo(addrs);
	SSL_CTX_up_ref(ctx);
	l->ctx = ctx;
	*ret_listener = l;
	return 0;

fail:
	free(l);
	freeaddrinfo(addrs);
	return r;
}

int peer_listener_port(const struct peer_listener *listener)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (!listener)
		return -EINVAL;
	if (getsockname(listener_fd(listener->listener), (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	switch (ss.ss_family) {
	case AF_INET:
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	case AF_INET6:
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	default:
		return -EAFNOSUPPORT;
	}
}

struct peer_listener *peer_listener_free(struct peer_listener *listener)
{
	if (!listener)
		return NULL;
	/* Handshakes still running die with the listener, without on_close (their user never
	 * saw them established). One inside its own on_close is finished by that path. */
	while (listener->pending) {
		struct peer_conn *conn = listener->pending;

		conn_listener_unlink(conn);
		peer_conn_free(conn);
	}
	listener->listener = listener_free(listener->listener);
	listener->ctx = ssl_ctx_unref(listener->ctx);
	free(listener);
	return NULL;
}

void peer_listener_set_ctx(struct peer_listener *listener, SSL_CTX *ctx)
{
	if (!listener || !ctx || ctx == listener->ctx)
		return;
	SSL_CTX_up_ref(ctx);
	listener->ctx = ssl_ctx_unref(listener->ctx);
	listener->ctx = ctx;
}
