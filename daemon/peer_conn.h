/* peer_conn.h - one peer-link connection: TCP + mutual TLS 1.3 through a
 * libevent openssl bufferevent, carrying length-prefixed frames
 * (common/frame.h). It knows nothing of the messages inside. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <netdb.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "tls.h"

/* Bytes queued for sending on one connection before peer_conn_send refuses. */
#define PEER_CONN_MAX_PENDING_BYTES    (4u * 1024 * 1024)
/* A TLS handshake that has not finished by then is dropped. */
#define PEER_CONN_HANDSHAKE_TIMEOUT_MS 10000

struct peer_conn;
struct peer_listener;

struct peer_conn_ops {
	/* Handshake done, chain and identity verified; identity is the
	 * allow-listed SAN. */
	void (*on_established)(struct peer_conn *conn, const char *identity, void *userdata);
	/* One whole frame's payload (already length-checked). */
	void (*on_frame)(struct peer_conn *conn, const uint8_t *payload, size_t len,
			 void *userdata);
	/* Connection gone: error is 0 for orderly close, else -errno
	 * (-EPROTO TLS failure, -EMSGSIZE oversize frame, -EPERM identity,
	 * -ETIMEDOUT handshake timeout, -ECONNRESET ...). reason is a sentence
	 * (OpenSSL's reason where there is one). The conn must not be used
	 * after this returns; it is freed by peer_conn itself.
	 * error 0 only after the peer's close_notify at a frame boundary
	 * (peer_conn_free sends one); TCP FIN without close_notify, or in the
	 * middle of a frame, is -ECONNRESET. TLS 1.3: a client finishes its
	 * handshake before the server has judged the client's certificate, so
	 * on the client on_established may still be followed by
	 * on_close(-EPROTO) when the server refuses us. */
	void (*on_close)(struct peer_conn *conn, int error, const char *reason, void *userdata);
};

/* Connect to host:port ("127.0.0.1:7777", "[::1]:7777", "name:port"),
 * expecting the peer to carry SAN expected_name (and to be on the context's
 * allow-list). Asynchronous: ops->on_established or ops->on_close follows.
 * The connection takes a reference on ctx (the caller may free its own). */
int peer_conn_connect(struct event_base *base, SSL_CTX *ctx, const char *host_port,
		      const char *expected_name, const struct peer_conn_ops *ops, void *userdata,
		      struct peer_conn **ret_conn);

/* Frame and queue payload. -EMSGSIZE if over VC_MAX_FRAME_BYTES, -ENOBUFS if
 * the pending output would exceed PEER_CONN_MAX_PENDING_BYTES, -ENOTCONN
 * before on_established. */
int peer_conn_send(struct peer_conn *conn, const uint8_t *payload, size_t len);

/* Allow-listed identity of the peer, "" before on_established. */
const char *peer_conn_identity(const struct peer_conn *conn);

/* Close now (no on_close callback) and free. Accepts NULL; returns NULL.
 * Queued frames go to the kernel as far as it takes them without blocking,
 * then close_notify. May be called from the conn's own on_established or
 * on_frame (takes effect when the callback returns: no further callbacks).
 * The process must ignore SIGPIPE (OpenSSL writes with write(2)). */
struct peer_conn *peer_conn_free(struct peer_conn *conn);

/* Listen on addr ("127.0.0.1:0" picks a port). Each accepted connection gets
 * ops/userdata; on_established fires after a verified handshake. A failed
 * handshake (plaintext, wrong CA, SAN not allowed, TLS 1.2) closes only that
 * connection (ops->on_close with the reason) and the listener keeps serving.
 * The listener takes a reference on ctx. */
int peer_listener_new(struct event_base *base, SSL_CTX *ctx, const char *addr,
		      const struct peer_conn_ops *ops, void *userdata,
		      struct peer_listener **ret_listener);
int peer_listener_port(const struct peer_listener *listener);
/* Connections accepted from now on use ctx (a new certificate, CA or
 * allow-list: a configuration reload); those already accepted keep theirs. */
void peer_listener_set_ctx(struct peer_listener *listener, SSL_CTX *ctx);
/* Connections still in their handshake are dropped (no on_close);
 * established ones belong to the user and live on. */
struct peer_listener *peer_listener_free(struct peer_listener *listener);

/* "host:port", "[v6]:port" -> getaddrinfo's list for TCP (freeaddrinfo()).
 * passive: for bind (AI_PASSIVE; port 0 allowed). -EINVAL when it is not
 * host:port, -EHOSTUNREACH for an unknown name, -EAGAIN, -ENOMEM. Shared by
 * the peer link and the control API's TCP listener. */
int tcp_resolve(const char *host_port, bool passive, struct addrinfo **ret_addrs);
