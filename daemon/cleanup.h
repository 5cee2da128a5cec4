/* cleanup.h - the daemon's destructors for what it holds of libevent,
 * OpenSSL and protobuf-c, in systemd's two forms: X_unref() takes NULL and
 * returns NULL, so that `p = event_unref(p);` frees and clears in one
 * statement; _cleanup_X_ frees a local when it leaves scope. */
#pragma once

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <protobuf-c/protobuf-c.h>

#include "macro.h"

static inline struct event *event_unref(struct event *ev)
{
	if (ev)
		event_free(ev);
	return NULL;
}

/* With BEV_OPT_CLOSE_ON_FREE this also frees its SSL and closes its fd. */
static inline struct bufferevent *bufferevent_unref(struct bufferevent *bev)
{
	if (bev)
		bufferevent_free(bev);
	return NULL;
}

static inline SSL *ssl_unref(SSL *ssl)
{
	SSL_free(ssl); /* NULL-safe */
	return NULL;
}

/* Drops this reference: a context shared with a server or a connection
 * (SSL_CTX_up_ref) lives on in them. */
static inline SSL_CTX *ssl_ctx_unref(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx); /* NULL-safe */
	return NULL;
}

/* A message protobuf-c unpacked (any type: its descriptor frees it). */
static inline void *protobuf_unref(void *msg)
{
	if (msg)
		protobuf_c_message_free_unpacked(msg, NULL);
	return NULL;
}

static inline void event_freep(struct event **ev)
{
	event_unref(*ev);
}

static inline void ssl_freep(SSL **ssl)
{
	ssl_unref(*ssl);
}

static inline void ssl_ctx_freep(SSL_CTX **ctx)
{
	ssl_ctx_unref(*ctx);
}

static inline void protobuf_freep(void *msg)
{
	protobuf_unref(*(void **)msg);
}

#define _cleanup_event_	   _cleanup_(event_freep)
#define _cleanup_ssl_	   _cleanup_(ssl_freep)
#define _cleanup_ssl_ctx_  _cleanup_(ssl_ctx_freep)
#define _cleanup_protobuf_ _cleanup_(protobuf_freep)
