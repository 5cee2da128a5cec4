/* peer_link.h - the peer links' transport, for the migrations: one
 * verified connection per peer (peer_conn.h), frames queued until its
 * handshake, a Hello each way, the daemon's own requests matched to their
 * replies. The migrations hear requests, replies and link losses through
 * the handlers they give (struct peer_link_handlers) and answer through
 * the calls below; this module never calls them by name. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "counter_state.h"
#include "ratelimit.h"
#include "tls.h"
#include "vcounter.pb-c.h"

struct peer_conn;
struct peer_links;
struct vcd;

struct peer_link {
	struct peer_link *next;
	uint64_t id; /* never reused: a migration names its link by it */
	struct peer_links *owner;
	struct peer_conn *conn;
	bool outgoing;
	bool established;  /* verified: frames go out, and identity is set */
	char address[256]; /* outgoing: host:port; "incoming" */
	char expected_name[TLS_PEER_NAME_MAX + 1];
	/* The peer's verified name: for an outgoing link the one asked for. */
	char identity[TLS_PEER_NAME_MAX + 1];
	/* The transport's own. */
	struct queued_frame *queue, **queue_tail;
	size_t n_queued, queued_bytes;
	struct peer_request *requests;
	size_t n_requests;
	uint64_t next_request_id;
	struct ratelimit log_limit;
};

struct peer_link_handlers {
	/* A request of the peer's (Prepare, FinalState, Applied, Abort): the
	 * handler answers on link, by msg->id. */
	void (*request)(struct peer_link *link, const Vcounter__V1__PeerMessage *msg,
			void *userdata);
	/* A reply (PrepareAck, FinalAck, Ack, Error) to a request of ours
	 * (peer_link_request) for migration_id. */
	void (*reply)(struct peer_link *link, const Vcounter__V1__PeerMessage *msg,
		      const char *migration_id, void *userdata);
	/* The link is gone: lost, closed, or never up (established false: its
	 * connect or handshake failed, error says why). Freed after. */
	void (*closed)(struct peer_link *link, int error, const char *reason, void *userdata);
};

/* What one link logs is limited to PEER_LOG_BURST lines per
 * PEER_LOG_INTERVAL_NS, then a count; connections never verified share one
 * such budget, and links over the limit another. */
#define PEER_LOG_BURST	     20
#define PEER_LOG_INTERVAL_NS (10 * UINT64_C(1000000000))

struct peer_links {
	struct vcd *vcd;
	const struct peer_link_handlers *h;
	void *userdata;
	struct peer_listener *listener;
	struct peer_link *list;
	size_t n;
	uint64_t next_id;
	struct ratelimit unverified_log;
	struct ratelimit excess_log; /* verified links over VCD_MAX_PEER_LINKS */
};

/* Listen on vcd->config.listen_addr (none: outgoing links only) with
 * vcd->tls_server: 0, -ENOKEY without TLS, or peer_listener_new's error. */
int peer_links_start(struct peer_links *pl, struct vcd *vcd, const struct peer_link_handlers *h,
		     void *userdata);
/* Close every link (no handler is called) and the listener. */
void peer_links_stop(struct peer_links *pl);
int peer_links_listen_port(const struct peer_links *pl); /* -1 when not listening */
/* vcd->tls_server was replaced (a reload): new connections use it. */
void peer_links_tls_changed(struct peer_links *pl);
void peer_links_count(const struct peer_links *pl, size_t *ret_established, size_t *ret_connecting);

struct peer_link *peer_link_find(struct peer_links *pl, uint64_t id);
/* The outgoing link to address verified as name, opened if there is none:
 * 0, -ENOKEY (no TLS client context), -ENOSPC (too many links), or
 * peer_conn_connect's error. */
int peer_link_get_outgoing(struct peer_links *pl, const char *address, const char *name,
			   struct peer_link **ret);

/* Send msg (queued until the handshake): 0, -ENOBUFS when the queue is
 * full, or -errno. */
int peer_link_send(struct peer_link *link, const Vcounter__V1__PeerMessage *msg);
/* Refuse request request_id with an Error of error and a sentence (also
 * logged). */
void peer_link_send_error(struct peer_link *link, uint64_t request_id, int error, const char *fmt,
			  ...) __attribute__((format(printf, 4, 5)));
/* Send a request, its id chosen here; its reply reaches the reply handler
 * with migration_id. 0, -ENOBUFS (too many pending), or -errno. */
int peer_link_request(struct peer_link *link, const char *migration_id,
		      Vcounter__V1__PeerMessage *msg);
