/* metrics_http.c - GET /metrics for Prometheus: a minimal HTTP/1.1 responder
 * on bufferevents of the daemon's loop. One request per connection, answered
 * with Connection: close.
 *
 * Why not libevent's evhttp: the 2.1 series Debian ships (2.1.12) has no
 * connection limit (evhttp_set_max_connections is 2.2), answers disallowed
 * methods 501 instead of 405, and keeps connections alive; it would also add
 * libevent_extra and a general HTTP server's attack surface for one fixed,
 * small response. A scrape needs only: read a request head under a size cap
 * and a deadline, judge it (metrics_http_judge_request, unit-tested), write
 * one response. Every limit is a named constant in metrics_http.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "admission.h"
#include "cleanup.h"
#include "clockns.h"
#include "control.h"
#include "listener.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "metrics_http.h"
#include "migration.h"
#include "netaddr.h"
#include "sync_source.h"
#include "vcd.h"

#include "config.h"

#define METRICS_HTTP_BACKLOG	  64
#define METRICS_HTTP_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum http_state {
	HTTP_READING,	/* waiting for the whole request head */
	HTTP_WRITING,	/* response queued, reading stopped */
	HTTP_LINGERING, /* response sent, write side shut: drop input until EOF */
};

struct http_conn {
	struct http_conn *prev, *next;
	struct metrics_http *srv;
	struct bufferevent *bev; /* owns the socket */
	struct event *timer;
	enum http_state state;
	size_t discarded;
	unsigned id;
	char source[ADMISSION_SOURCE_MAX];
};

struct metrics_http {
	struct vcd *vcd;
	struct listener *listener;
	struct http_conn *conns;
	size_t n_conns;
	unsigned next_id;
	uint64_t start_time_ns; /* CLOCK_REALTIME of the daemon's start */
};

/* ---- requests ---- */

/* RFC 9110 section 5.6.2. */
static bool is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static const unsigned char *find_lf(const unsigned char *p, size_t from, size_t len)
{
	return from < len ? memchr(p + from, '\n', len - from) : NULL;
}

int metrics_http_judge_request(const char *data, size_t len)
{
	const unsigned char *p = (const unsigned char *)data, *lf;
	size_t start = 0, i, line_end, target, target_end, pos;
	bool is_get, is_metrics;

	/* RFC 9112 section 2.2: empty lines before the request line are ignored. */
	while (start < len && (p[start] == '\r' || p[start] == '\n'))
		start++;
	if (start > METRICS_HTTP_MAX_REQUEST_BYTES)
		return 431;
	/* The method is checked as it arrives: garbage is refused at once. */
	for (i = start; i < len && p[i] != ' '; i++)
		if (!is_tchar(p[i]))
			return 400;
	if (i == len)
		return len - start > METRICS_HTTP_MAX_LINE_BYTES ? 414 : 0;
	if (i == start)
		return 400;
	is_get = i - start == 3 && memcmp(p + start, "GET", 3) == 0;

	/* request-line = method SP request-target SP HTTP-version CRLF (RFC
	 * 9112 section 3); a bare LF ends a line too (section 2.2). */
	lf = find_lf(p, i, len);
	if (!lf)
		return len - start > METRICS_HTTP_MAX_LINE_BYTES ? 414 : 0;
	line_end = (size_t)(lf - p);
	if (line_end > i && p[line_end - 1] == '\r')
		line_end--;
	if (line_end - start > METRICS_HTTP_MAX_LINE_BYTES)
		return 414;
	target = i + 1;
	for (target_end = target; target_end < line_end && p[target_end] != ' '; target_end++)
		if (p[target_end] < 0x21 || p[target_end] > 0x7e)
			return 400;
	if (target_end == target || target_end == line_end)
		return 400;
	if (line_end - target_end - 1 != 8 || memcmp(p + target_end + 1, "HTTP/", 5) != 0 ||
	    p[target_end + 6] < '0' || p[target_end + 6] > '9' || p[target_end + 7] != '.' ||
	    p[target_end + 8] < '0' || p[target_end + 8] > '9')
		return 400;
	if (p[target_end + 6] != '1')
		return 505;
	if (!is_get)
		return 405;

	/* field-line = field-name ":" OWS field-value OWS (RFC 9112 section 5):
	 * no space before the colon, no obs-fold, no control characters but HT. */
	for (pos = (size_t)(lf - p) + 1;;) {
		size_t end;

		lf = find_lf(p, pos, len);
		if (!lf)
			return len > METRICS_HTTP_MAX_REQUEST_BYTES ? 431 : 0;
		if ((size_t)(lf - p) + 1 > METRICS_HTTP_MAX_REQUEST_BYTES)
			return 431;
		end = (size_t)(lf - p);
		if (end > pos && p[end - 1] == '\r')
			end--;
		if (end == pos)
			break;
		for (i = pos; i < end && p[i] != ':'; i++)
			if (!is_tchar(p[i]))
				return 400;
		if (i == pos || i == end)
			return 400;
		for (; i < end; i++)
			if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f)
				return 400;
		pos = (size_t)(lf - p) + 1;
	}
	is_metrics = target_end - target >= 8 && memcmp(p + target, "/metrics", 8) == 0 &&
		     (target_end - target == 8 || p[target + 8] == '?');
	return is_metrics ? 200 : 404;
}

/* ---- connections ---- */

static void conn_free(struct http_conn *conn)
{
	struct metrics_http *srv = conn->srv;

	if (conn->prev)
		conn->prev->next = conn->next;
	else
		srv->conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	srv->n_conns--;
	conn->timer = event_unref(conn->timer);
	conn->bev = bufferevent_unref(conn->bev);
	free(conn);
}

static void conn_arm(struct http_conn *conn, unsigned timeout_ms)
{
	const struct timeval tv = {
		.tv_sec = timeout_ms / 1000,
		.tv_usec = (timeout_ms % 1000) * 1000,
	};

	evtimer_add(conn->timer, &tv);
}

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 414:
		return "URI Too Long";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Internal Server Error";
	}
}

static void snapshot(struct metrics_http *srv, struct metrics_snapshot *ret)
{
	struct vcd *vcd = srv->vcd;
	size_t established = 0, connecting = 0;
	struct sync_error sync;
	char why[256];

	*ret = (struct metrics_snapshot){
		.version = VCOUNTER_VERSION,
		.start_time_ns = srv->start_time_ns,
		.migrations_running = migrations_running(vcd),
		.control_watchers = control_watcher_count(vcd),
	};
	/* As the VMM status reply counts them: before its probe a VM has no
	 * backend. */
	for (const struct vm_entry *vm = vm_registry_first(&vcd->vms); vm; vm = vm->next)
		if (vm->probed && (vm->role == VM_ROLE_SOURCE || vm->role == VM_ROLE_TARGET) &&
		    vm->backend >= 0 && vm->backend < _BACKEND_KIND_MAX)
			ret->vms[vm->role][vm->backend]++;
	migrations_link_counts(vcd, &established, &connecting);
	ret->peer_links_established = established;
	ret->peer_links_connecting = connecting;
	ret->sync_source = sync_source_spec(vcd->sync)->kind;
	ret->clock_error_ns = UINT64_MAX;
	if (sync_source_read(vcd->sync, &sync, why, sizeof(why)) == 0 && !sync.unsynced)
		ret->clock_error_ns = sync.maxerror_ns;
}

/* Queue the response, stop reading, and close once it is out. */
static void conn_respond(struct http_conn *conn, int status)
{
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	_cleanup_free_ char *body = NULL;
	struct metrics_snapshot snap;
	const char *type = "text/plain; charset=utf-8";
	int len = -ENOMEM;

	if (status == 200) {
		body = malloc(METRICS_TEXT_MAX);
		if (body) {
			snapshot(conn->srv, &snap);
			len = metrics_render(&vcd_metrics, &snap, body, METRICS_TEXT_MAX);
		}
		if (len < 0) {
			log_error_errno(len, "metrics: cannot render the metrics text");
			status = 500;
		} else
			type = METRICS_HTTP_CONTENT_TYPE;
	}
	if (status != 200) {
		free(body);
		body = NULL;
		if (asprintf(&body, "%d %s\n", status, status_text(status)) < 0)
			body = NULL;
		len = body ? (int)strlen(body) : 0;
	}
	log_debug("metrics conn=%u: %d %s", conn->id, status, status_text(status));
	evbuffer_add_printf(out,
			    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
			    "%sConnection: close\r\n\r\n",
			    status, status_text(status), type, len,
			    status == 405 ? "Allow: GET\r\n" : "");
	if (body)
		evbuffer_add(out, body, (size_t)len);
	conn->state = HTTP_WRITING;
	bufferevent_disable(conn->bev, EV_READ);
	conn_arm(conn, METRICS_HTTP_WRITE_TIMEOUT_MS);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct http_conn *conn = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in);
	int status;

	if (conn->state == HTTP_LINGERING) {
		conn->discarded += len;
		evbuffer_drain(in, len);
		if (conn->discarded > METRICS_HTTP_LINGER_MAX_BYTES)
			conn_free(conn);
		return;
	}
	if (conn->state != HTTP_READING)
		return;
	/* One byte over the cap is enough to judge it too large. */
	if (len > METRICS_HTTP_MAX_REQUEST_BYTES + 1)
		len = METRICS_HTTP_MAX_REQUEST_BYTES + 1;
	status = metrics_http_judge_request((const char *)evbuffer_pullup(in, (ssize_t)len), len);
	if (status != 0)
		conn_respond(conn, status);
}

/* The response is out: shut the write side and drain what the client still
 * sends, so that the close does not reset the connection under it. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct http_conn *conn = arg;

	if (conn->state != HTTP_WRITING)
		return;
	conn->state = HTTP_LINGERING;
	bufferevent_disable(bev, EV_WRITE);
	if (shutdown(bufferevent_getfd(bev), SHUT_WR) < 0) {
		conn_free(conn);
		return;
	}
	conn_arm(conn, METRICS_HTTP_LINGER_MS);
	bufferevent_enable(bev, EV_READ);
	conn_read_cb(bev, conn);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct http_conn *conn = arg;

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	/* A client that ends before its request is complete gets nothing; one
	 * that ends while lingering is done; an error ends any state. */
	log_debug("metrics conn=%u: %s while %s", conn->id,
		  what & BEV_EVENT_EOF ? "end of stream" : "connection error",
		  conn->state == HTTP_READING	? "reading the request"
		  : conn->state == HTTP_WRITING ? "writing the response"
						: "closing");
	conn_free(conn);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_conn *conn = arg;

	if (conn->state == HTTP_READING) {
		metrics_shed(&vcd_metrics, METRICS_SOCKET_METRICS, METRICS_SHED_DEADLINE);
		conn_respond(conn, 408);
		return;
	}
	log_debug("metrics conn=%u: %s", conn->id,
		  conn->state == HTTP_WRITING ? "client does not read the response, closed"
					      : "closed after the response");
	conn_free(conn);
}

/* Over the limit: say so if the socket takes it without waiting, and close. */
static void refuse_busy(evutil_socket_t fd)
{
	static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
				   "Content-Type: text/plain; charset=utf-8\r\n"
				   "Content-Length: 24\r\nConnection: close\r\n\r\n"
				   "503 Service Unavailable\n";

	(void)!send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	close_nointr(fd);
}

static const struct admission_limits request_limits = {
	.max_total = METRICS_HTTP_MAX_CONNECTIONS,
	.max_per_source = METRICS_HTTP_MAX_PER_SOURCE,
	.normal_ms = METRICS_HTTP_REQUEST_TIMEOUT_MS,
	.pressed_ms = METRICS_HTTP_PRESSED_MS,
};

static void accept_cb(evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
	struct metrics_http *srv = arg;
	struct event_base *base = srv->vcd->base;
	struct http_conn *conn, *oldest = NULL;
	char source[ADMISSION_SOURCE_MAX];
	unsigned n_same = 0, n_reading = 0;
	enum admission_verdict v;

	/* The slots are the connections' (a served one goes within ms);
	 * those still reading their request may be evicted. */
	admission_source(sa, (size_t)socklen, source);
	for (struct http_conn *c = srv->conns; c; c = c->next) {
		n_same += strcmp(c->source, source) == 0;
		if (c->state == HTTP_READING) {
			n_reading++;
			oldest = c; /* the list is newest first */
		}
	}
	v = admission_judge(&request_limits, (unsigned)srv->n_conns, n_same);
	if (v == ADMISSION_EVICT_OLDEST && !oldest)
		v = ADMISSION_REFUSE_SOURCE;
	switch (v) {
	case ADMISSION_REFUSE_SOURCE:
		metrics_shed(&vcd_metrics, METRICS_SOCKET_METRICS,
			     n_same >= METRICS_HTTP_MAX_PER_SOURCE ? METRICS_SHED_PER_SOURCE
								   : METRICS_SHED_FULL);
		log_debug("metrics: connection from %s refused (503): %u of its %zu open", source,
			  n_same, srv->n_conns);
		refuse_busy(fd);
		return;
	case ADMISSION_EVICT_OLDEST:
		metrics_shed(&vcd_metrics, METRICS_SOCKET_METRICS, METRICS_SHED_EVICTED);
		log_debug("metrics conn=%u: request not read when every slot was taken: the "
			  "oldest, closed to make room",
			  oldest->id);
		conn_free(oldest);
		break;
	case ADMISSION_ADMIT:
		break;
	}
	conn = calloc(1, sizeof(*conn));
	if (!conn) {
		close_nointr(fd);
		return;
	}
	conn->srv = srv;
	conn->id = ++srv->next_id;
	conn->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = conn;
	srv->conns = conn;
	srv->n_conns++;
	conn->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!conn->bev) {
		close_nointr(fd);
		conn_free(conn);
		return;
	}
	bufferevent_setcb(conn->bev, conn_read_cb, conn_write_cb, conn_event_cb, conn);
	conn->timer = evtimer_new(base, conn_timer_cb, conn);
	if (!conn->timer || bufferevent_enable(conn->bev, EV_READ) < 0) {
		conn_free(conn);
		return;
	}
	snprintf(conn->source, sizeof(conn->source), "%s", source);
	conn_arm(conn, admission_deadline_ms(&request_limits, n_reading));
}

/* ---- the server ---- */

static uint64_t start_time_ns(const struct vcd *vcd)
{
	uint64_t now = clock_ns(CLOCK_REALTIME),
		 uptime = clock_ns(CLOCK_MONOTONIC) - vcd->started_ns;

	return now > uptime ? now - uptime : 0;
}

int metrics_http_start(struct vcd *vcd)
{
	const char *listen = vcd->config.metrics_listen;
	char host[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss;
	struct metrics_http *srv;
	socklen_t len;
	int r;

	if (!listen)
		return 0;
	r = netaddr_parse(listen, &ss, &len);
	if (r < 0)
		return log_error_errno(r,
				       "metrics: invalid listen address '%s' (PORT, IPV4:PORT or "
				       "[IPV6]:PORT, numeric)",
				       listen);
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return log_error_errno(-ENOMEM, "metrics: cannot start");
	srv->vcd = vcd;
	srv->start_time_ns = start_time_ns(vcd);
	vcd->metrics_http = srv;
	r = listener_new_bind(vcd->base, METRICS_SOCKET_METRICS, (struct sockaddr *)&ss, len,
			      METRICS_HTTP_BACKLOG, accept_cb, srv, &srv->listener);
	if (r < 0) {
		metrics_http_stop(vcd);
		return log_error_errno(r, "metrics: cannot listen on %s", listen);
	}
	if (inet_ntop(ss.ss_family,
		      ss.ss_family == AF_INET6
			      ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
			      : (const void *)&((struct sockaddr_in *)&ss)->sin_addr,
		      host, sizeof(host)) == NULL)
		snprintf(host, sizeof(host), "?");
	if (netaddr_is_loopback((struct sockaddr *)&ss))
		log_info("metrics: serving GET /metrics on %s%s%s:%d",
			 ss.ss_family == AF_INET6 ? "[" : "", host,
			 ss.ss_family == AF_INET6 ? "]" : "", metrics_http_port(vcd));
	else
		log_warning("metrics: serving GET /metrics on %s%s%s:%d, not a loopback address: "
			    "whoever reaches it reads this host's metrics, without TLS or "
			    "authentication",
			    ss.ss_family == AF_INET6 ? "[" : "", host,
			    ss.ss_family == AF_INET6 ? "]" : "", metrics_http_port(vcd));
	return 0;
}

int metrics_http_port(const struct vcd *vcd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (!vcd->metrics_http || !vcd->metrics_http->listener)
		return -ENOTCONN;
	if (getsockname(listener_fd(vcd->metrics_http->listener), (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void metrics_http_stop(struct vcd *vcd)
{
	struct metrics_http *srv = vcd->metrics_http;

	if (!srv)
		return;
	while (srv->conns)
		conn_free(srv->conns);
	srv->listener = listener_free(srv->listener);
	free(srv);
	vcd->metrics_http = NULL;
}
