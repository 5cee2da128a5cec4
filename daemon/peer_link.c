/* peer_link.c - the peer links' transport (peer_link.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clockns.h"
#include "frame.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "peer_conn.h"
#include "peer_link.h"
#include "vcd.h"
#include "wire.h"

#define PEER_PROTOCOL_VERSION	  1
/* Frames waiting for a link's handshake: every migration that may be kept
 * can have its Prepare there (a burst of StartMigration to a peer not yet
 * connected), within the bytes an established link may queue. Beyond, the
 * request fails at once, naming why. */
#define LINK_MAX_QUEUED_FRAMES	  (2 * VCD_MAX_MIGRATIONS)
#define LINK_MAX_QUEUED_BYTES	  PEER_CONN_MAX_PENDING_BYTES
#define LINK_MAX_PENDING_REQUESTS 1024

struct queued_frame {
	struct queued_frame *next;
	uint8_t *buf;
	size_t len;
};

struct peer_request {
	struct peer_request *next;
	uint64_t id;
	char migration_id[VC_MIGRATION_ID_LEN + 1];
};

static const struct peer_conn_ops link_ops;

/* Send (or queue until the handshake) a packed frame; takes buf. -ENOBUFS
 * when the queue is full, -errno when the connection refuses it. */
static int send_frame(struct peer_link *link, uint8_t *buf, size_t len)
{
	struct queued_frame *q;
	int r;

	if (link->established) {
		/* peer_conn_send adds the header itself. */
		r = peer_conn_send(link->conn, buf + FRAME_HEADER_BYTES, len - FRAME_HEADER_BYTES);
		if (r < 0)
			log_warning_errno(r, "peer=%s: cannot send", link->identity);
		free(buf);
		return r;
	}
	if (link->n_queued >= LINK_MAX_QUEUED_FRAMES ||
	    link->queued_bytes + len > LINK_MAX_QUEUED_BYTES) {
		log_warning("peer=%s: %zu messages (%zu bytes) already wait for the handshake; "
			    "message refused",
			    link->address, link->n_queued, link->queued_bytes);
		free(buf);
		return -ENOBUFS;
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		free(buf);
		return -ENOMEM;
	}
	q->buf = buf;
	q->len = len;
	*link->queue_tail = q;
	link->queue_tail = &q->next;
	link->n_queued++;
	link->queued_bytes += len;
	return 0;
}

int peer_link_send(struct peer_link *link, const Vcounter__V1__PeerMessage *msg)
{
	uint8_t *buf;
	size_t len;
	int r;

	r = wire_peer_pack_frame(msg, &buf, &len);
	if (r < 0) {
		log_error_errno(r, "peer=%s: cannot pack message", link->address);
		return r;
	}
	return send_frame(link, buf, len);
}

void peer_link_send_error(struct peer_link *link, uint64_t request_id, int error, const char *fmt,
			  ...)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Error e = VCOUNTER__V1__ERROR__INIT;
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	log_ratelimited(&link->log_limit, LOG_WARNING, 0,
			"peer=%s: refusing request %" PRIu64 ": %s", link->identity, request_id,
			text);
	e.code = wire_error_code_from_errno(error);
	e.errno_value = error < 0 ? -error : error;
	e.message = text;
	msg.id = request_id;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR;
	msg.error = &e;
	(void)peer_link_send(link, &msg);
}

int peer_link_request(struct peer_link *link, const char *migration_id,
		      Vcounter__V1__PeerMessage *msg)
{
	struct peer_request *req;
	int r;

	if (link->n_requests >= LINK_MAX_PENDING_REQUESTS)
		return -ENOBUFS;
	req = calloc(1, sizeof(*req));
	if (!req)
		return -ENOMEM;
	req->id = ++link->next_request_id;
	snprintf(req->migration_id, sizeof(req->migration_id), "%s", migration_id);
	msg->id = req->id;
	r = peer_link_send(link, msg);
	if (r < 0) {
		free(req);
		return r;
	}
	req->next = link->requests;
	link->requests = req;
	link->n_requests++;
	return 0;
}

/* Forget request id; true if it was ours (and copy its migration id). */
static bool take_request(struct peer_link *link, uint64_t id,
			 char ret_migration_id[VC_MIGRATION_ID_LEN + 1])
{
	for (struct peer_request **p = &link->requests; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct peer_request *req = *p;

			*p = req->next;
			link->n_requests--;
			memcpy(ret_migration_id, req->migration_id, VC_MIGRATION_ID_LEN + 1);
			free(req);
			return true;
		}
	}
	return false;
}

static void link_free(struct peer_link *link)
{
	struct peer_links *pl = link->owner;
	struct queued_frame *q;
	struct peer_request *req;

	for (struct peer_link **p = &pl->list; *p; p = &(*p)->next) {
		if (*p == link) {
			*p = link->next;
			pl->n--;
			break;
		}
	}
	while ((q = link->queue)) {
		link->queue = q->next;
		free(q->buf);
		free(q);
	}
	while ((req = link->requests)) {
		link->requests = req->next;
		free(req);
	}
	free(link);
}

static struct peer_link *link_new(struct peer_links *pl)
{
	struct peer_link *link;

	if (pl->n >= VCD_MAX_PEER_LINKS)
		return NULL;
	link = calloc(1, sizeof(*link));
	if (!link)
		return NULL;
	link->owner = pl;
	link->id = ++pl->next_id;
	link->log_limit = RATELIMIT_INIT(PEER_LOG_INTERVAL_NS, PEER_LOG_BURST);
	link->queue_tail = &link->queue;
	link->next = pl->list;
	pl->list = link;
	pl->n++;
	return link;
}

struct peer_link *peer_link_find(struct peer_links *pl, uint64_t id)
{
	for (struct peer_link *l = pl->list; l; l = l->next)
		if (l->id == id)
			return l;
	return NULL;
}

int peer_link_get_outgoing(struct peer_links *pl, const char *address, const char *name,
			   struct peer_link **ret)
{
	struct vcd *vcd = pl->vcd;
	struct peer_link *link;
	int r;

	for (link = pl->list; link; link = link->next)
		if (link->outgoing && strcmp(link->address, address) == 0 &&
		    strcmp(link->expected_name, name) == 0) {
			*ret = link;
			return 0;
		}
	if (!vcd->tls_client)
		return -ENOKEY;
	link = link_new(pl);
	if (!link)
		return -ENOSPC;
	link->outgoing = true;
	snprintf(link->address, sizeof(link->address), "%s", address);
	snprintf(link->expected_name, sizeof(link->expected_name), "%s", name);
	r = peer_conn_connect(vcd->base, vcd->tls_client, address, name, &link_ops, pl,
			      &link->conn);
	if (r < 0) {
		link_free(link);
		return r;
	}
	*ret = link;
	return 0;
}

static void send_hello(struct peer_link *link)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Hello hello = VCOUNTER__V1__HELLO__INIT;
	/* What this daemon lets its VMMs use. State is exchanged by counter
	 * architecture (CounterState.arch), so this is information for the
	 * peer's logs, not a negotiation. */
	const struct vcd_config *cfg = &link->owner->vcd->config;
	Vcounter__V1__Backend backends[_BACKEND_KIND_MAX];
	size_t n = 0;

	if (cfg->n_backends == 0) {
		backends[n++] = VCOUNTER__V1__BACKEND__BACKEND_KVM_SYSCOUNTER;
		backends[n++] = VCOUNTER__V1__BACKEND__BACKEND_KVM_X86;
	}
	for (size_t i = 0; i < cfg->n_backends; i++)
		backends[n++] = wire_backend_to_pb(cfg->backends[i]);

	hello.protocol_version = PEER_PROTOCOL_VERSION;
	hello.host_name = (char *)(cfg->host_name ? cfg->host_name : "");
	hello.n_backends = n;
	hello.backends = backends;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_HELLO;
	msg.hello = &hello;
	peer_link_send(link, &msg);
}

static struct peer_link *link_by_conn(struct peer_links *pl, const struct peer_conn *conn)
{
	for (struct peer_link *l = pl->list; l; l = l->next)
		if (l->conn == conn)
			return l;
	return NULL;
}

static void link_established_cb(struct peer_conn *conn, const char *identity, void *userdata)
{
	struct peer_links *pl = userdata;
	struct peer_link *link = link_by_conn(pl, conn);
	struct queued_frame *q;

	if (!link) {
		/* An accepted connection: it becomes a link once it is verified. */
		link = link_new(pl);
		if (!link) {
			log_ratelimited(&pl->excess_log, LOG_WARNING, 0,
					"peer=%s: too many peer links, connection dropped",
					identity);
			peer_conn_free(conn);
			return;
		}
		link->conn = conn;
		snprintf(link->address, sizeof(link->address), "incoming");
	}

	link->established = true;
	/* An outgoing link was verified to carry the name the migration asked
	 * for; that is the identity its sessions name. */
	snprintf(link->identity, sizeof(link->identity), "%s",
		 link->outgoing ? link->expected_name : identity);
	log_ratelimited(&link->log_limit, LOG_INFO, 0, "peer=%s address=%s: link up (%s)", identity,
			link->outgoing ? link->address : "incoming",
			link->outgoing ? "outgoing" : "incoming");
	send_hello(link);
	while ((q = link->queue)) {
		link->queue = q->next;
		link->n_queued--;
		link->queued_bytes -= q->len;
		(void)send_frame(link, q->buf, q->len);
		free(q);
	}
	link->queue_tail = &link->queue;
}

static void link_close_cb(struct peer_conn *conn, int error, const char *reason, void *userdata)
{
	struct peer_links *pl = userdata;
	struct peer_link *link = link_by_conn(pl, conn);

	if (!link) {
		/* Never verified: a failed handshake on the listener. */
		metrics_tls_handshake_failed(&vcd_metrics, METRICS_LISTENER_PEER);
		log_ratelimited(&pl->unverified_log, LOG_WARNING, 0,
				"peer link: incoming connection refused: %s", reason);
		return;
	}

	metrics_peer_link_closed(&vcd_metrics, error);
	if (error < 0)
		log_ratelimited(&link->log_limit, LOG_WARNING, 0,
				"peer=%s address=%s: link closed: %s",
				link->identity[0] ? link->identity : "?", link->address, reason);
	else
		log_ratelimited(&link->log_limit, LOG_INFO, 0, "peer=%s: link closed",
				link->identity[0] ? link->identity : "?");
	pl->h->closed(link, error, reason, pl->userdata);
	link->conn = NULL; /* peer_conn frees itself after this callback */
	link_free(link);
}

static void link_frame_cb(struct peer_conn *conn, const uint8_t *payload, size_t len,
			  void *userdata)
{
	struct peer_links *pl = userdata;
	struct peer_link *link = link_by_conn(pl, conn);
	char migration_id[VC_MIGRATION_ID_LEN + 1];
	Vcounter__V1__PeerMessage *msg;
	uint64_t id = 0;
	int r;

	if (!link)
		return;

	r = wire_peer_unpack(payload, len, &msg, &id);
	if (r == -ENOMSG) {
		peer_link_send_error(link, id, r, "unknown or missing message type");
		return;
	}
	if (r < 0) {
		peer_link_send_error(link, 0, -EBADMSG, "message is not a valid PeerMessage");
		return;
	}

	switch (msg->body_case) {
	case VCOUNTER__V1__PEER_MESSAGE__BODY_HELLO:
		log_debug("peer=%s: hello from %s, protocol %u", link->identity,
			  msg->hello->host_name ? msg->hello->host_name : "?",
			  msg->hello->protocol_version);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE:
	case VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE:
	case VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED:
	case VCOUNTER__V1__PEER_MESSAGE__BODY_ABORT:
		pl->h->request(link, msg, pl->userdata);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE_ACK:
	case VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_ACK:
	case VCOUNTER__V1__PEER_MESSAGE__BODY_ACK:
	case VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR:
		/* Replies must answer a request of ours on this very link. */
		if (!take_request(link, msg->id, migration_id)) {
			log_ratelimited(&link->log_limit, LOG_WARNING, 0,
					"peer=%s: reply to unknown request %" PRIu64 " ignored",
					link->identity, msg->id);
			break;
		}
		pl->h->reply(link, msg, migration_id, pl->userdata);
		break;
	default: /* every body wire_peer_unpack lets through is handled above */
		break;
	}
	wire_peer_free(msg);
}

static const struct peer_conn_ops link_ops = {
	.on_established = link_established_cb,
	.on_frame = link_frame_cb,
	.on_close = link_close_cb,
};

int peer_links_start(struct peer_links *pl, struct vcd *vcd, const struct peer_link_handlers *h,
		     void *userdata)
{
	int r;

	*pl = (struct peer_links){
		.vcd = vcd,
		.h = h,
		.userdata = userdata,
		.unverified_log = RATELIMIT_INIT(PEER_LOG_INTERVAL_NS, PEER_LOG_BURST),
		.excess_log = RATELIMIT_INIT(PEER_LOG_INTERVAL_NS, PEER_LOG_BURST),
	};
	if (!vcd->config.listen_addr)
		return 0;
	if (!vcd->tls_server)
		return -ENOKEY;
	r = peer_listener_new(vcd->base, vcd->tls_server, vcd->config.listen_addr, &link_ops, pl,
			      &pl->listener);
	if (r < 0)
		return r;
	log_info("peer link: listening on %s (port %d)", vcd->config.listen_addr,
		 peer_listener_port(pl->listener));
	return 0;
}

void peer_links_stop(struct peer_links *pl)
{
	pl->listener = peer_listener_free(pl->listener);
	while (pl->list) {
		pl->list->conn = peer_conn_free(pl->list->conn);
		link_free(pl->list);
	}
}

int peer_links_listen_port(const struct peer_links *pl)
{
	return pl->listener ? peer_listener_port(pl->listener) : -1;
}

void peer_links_tls_changed(struct peer_links *pl)
{
	if (pl->listener && pl->vcd->tls_server)
		peer_listener_set_ctx(pl->listener, pl->vcd->tls_server);
}

void peer_links_count(const struct peer_links *pl, size_t *ret_established, size_t *ret_connecting)
{
	size_t established = 0, connecting = 0;

	for (const struct peer_link *l = pl->list; l; l = l->next) {
		if (l->established)
			established++;
		else
			connecting++;
	}
	*ret_established = established;
	*ret_connecting = connecting;
}
