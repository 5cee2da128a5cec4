/* sync_source.c - this host's clock-error estimate from the source the
 * operator picked: the spec, chronyd polled on the daemon's loop, and the
 * estimate put into a sync_error. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cleanup.h"
#include "chrony.h"
#include "clockns.h"
#include "hostclock.h"
#include "log.h"
#include "macro.h"
#include "ptp_mgmt.h"
#include "sync_source.h"

struct sync_source {
	struct sync_source_spec spec;
	/* chrony, linuxptp */
	int fd;
	struct event *ev_read;
	struct event *ev_poll;
	uint32_t seq; /* of the request last sent */
	/* chrony: the newest answer, and when it arrived (CLOCK_MONOTONIC) */
	bool has_reading;
	struct chrony_tracking last;
	uint64_t last_ns;
	/* linuxptp: the newest answer to each GET, and when each arrived */
	bool has_ptp_status, has_ptp_ds, has_ptp_props;
	struct ptp_time_status ptp_status;
	struct ptp_current_ds ptp_ds;
	struct ptp_port_props ptp_props; /* the newest port's answer */
	uint64_t ptp_status_ns, ptp_ds_ns, ptp_props_ns;
	char last_error[128]; /* why the last poll got no answer, "" */
	bool warned;	      /* last_error logged already */
};

uint64_t sync_source_chrony_maxerror_ns(const struct chrony_tracking *t, uint64_t age_ns,
					bool *ret_unsynced)
{
	uint64_t bound = chrony_tracking_bound_ns(t, ret_unsynced);
	double rate_ppm =
		fabs(t->skew_ppm) + fabs(t->resid_freq_ppm) + SYNC_SOURCE_CHRONY_MAXCLOCKERROR_PPM;
	double growth = ceil((double)age_ns * rate_ppm / 1e6);

	if (*ret_unsynced)
		return UINT64_MAX;
	if (!isfinite(growth) || growth >= (double)(UINT64_MAX - bound)) {
		*ret_unsynced = true;
		return UINT64_MAX;
	}
	return bound + (uint64_t)growth;
}

/* Says once why chronyd does not answer, and once when it does again. */
static void set_error(struct sync_source *ss, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_error(struct sync_source *ss, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ss->last_error, sizeof(ss->last_error), fmt, ap);
	va_end(ap);
	if (!ss->warned)
		log_warning("sync source %s: %s", ss->spec.text, ss->last_error);
	ss->warned = true;
}

static void answered(struct sync_source *ss)
{
	ss->last_error[0] = '\0';
	if (ss->warned)
		log_info("sync source %s answers again", ss->spec.text);
	ss->warned = false;
}

/* One ptp4l answer: TIME_STATUS_NP, CURRENT_DATA_SET or PORT_PROPERTIES_NP
 * to this poll. */
static void ptp_reply(struct sync_source *ss, const uint8_t *buf, size_t len)
{
	uint16_t id = 0, seq = 0;
	int r = ptp_mgmt_reply_id(buf, len, &id, &seq);

	if (r == 0 && seq != (uint16_t)ss->seq)
		return; /* a late answer to an earlier poll */
	if (r == -EPROTO) {
		set_error(ss, "ptp4l answers GET %#x with an error", id);
		return;
	}
	if (r == 0 && id == PTP_MGMT_TIME_STATUS_NP &&
	    ptp_mgmt_time_status(buf, len, &ss->ptp_status) == 0) {
		ss->has_ptp_status = true;
		ss->ptp_status_ns = clock_ns(CLOCK_MONOTONIC);
		answered(ss);
		return;
	}
	if (r == 0 && id == PTP_MGMT_CURRENT_DATA_SET &&
	    ptp_mgmt_current_ds(buf, len, &ss->ptp_ds) == 0) {
		ss->has_ptp_ds = true;
		ss->ptp_ds_ns = clock_ns(CLOCK_MONOTONIC);
		answered(ss);
		return;
	}
	if (r == 0 && id == PTP_MGMT_PORT_PROPERTIES_NP) {
		struct ptp_port_props props;

		/* One answer per port; ptp4l stamps on every port as its
		 * time_stamping option says, so any one of them tells. */
		if (ptp_mgmt_port_props(buf, len, &props) == 0) {
			ss->ptp_props = props;
			ss->has_ptp_props = true;
			ss->ptp_props_ns = clock_ns(CLOCK_MONOTONIC);
			answered(ss);
			return;
		}
	}
	set_error(ss, "not a ptp4l management answer");
}

static void on_reply(evutil_socket_t fd, short what, void *arg)
{
	struct sync_source *ss = arg;
	uint8_t buf[512];
	struct chrony_tracking t;
	ssize_t n;
	int r;

	(void)what;
	for (;;) {
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			/* A connected socket hears that nothing listens there
			 * (UDP: an ICMP port unreachable). */
			set_error(ss, "%s", strerror(errno));
			return;
		}
		if (ss->spec.kind == SYNC_SOURCE_LINUXPTP) {
			ptp_reply(ss, buf, (size_t)n);
			continue;
		}
		r = chrony_tracking_parse(buf, (size_t)n, ss->seq, &t);
		if (r == -ESRCH)
			continue; /* a late answer to an earlier poll */
		if (r == -EACCES) {
			set_error(ss, "chronyd refuses the tracking request (cmdallow?)");
			continue;
		}
		if (r < 0) {
			set_error(ss, "not a chronyd tracking reply (%s)", strerror(-r));
			continue;
		}
		ss->last = t;
		ss->last_ns = clock_ns(CLOCK_MONOTONIC);
		ss->has_reading = true;
		answered(ss);
	}
}

static void send_or_say(struct sync_source *ss, const uint8_t *req, size_t len)
{
	if (send(ss->fd, req, len, 0) < 0 && errno != EAGAIN)
		set_error(ss, "cannot send: %s", strerror(errno));
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct sync_source *ss = arg;

	(void)fd;
	(void)what;
	if (ss->spec.kind == SYNC_SOURCE_LINUXPTP) {
		uint8_t req[PTP_MGMT_GET_LEN];
		uint16_t port = (uint16_t)getpid();

		ss->seq++;
		ptp_mgmt_get(PTP_MGMT_TIME_STATUS_NP, port, (uint16_t)ss->seq, req);
		send_or_say(ss, req, sizeof(req));
		ptp_mgmt_get(PTP_MGMT_CURRENT_DATA_SET, port, (uint16_t)ss->seq, req);
		send_or_say(ss, req, sizeof(req));
		ptp_mgmt_get(PTP_MGMT_PORT_PROPERTIES_NP, port, (uint16_t)ss->seq, req);
		send_or_say(ss, req, sizeof(req));
	} else {
		uint8_t req[CHRONY_TRACKING_LEN];

		chrony_tracking_request(++ss->seq, req);
		send_or_say(ss, req, sizeof(req));
	}
}

/* ptp4l answers the address a request came from: an unnamed datagram socket
 * has none, so bind one in the abstract namespace (no file to clean up). */
static int bind_client(struct sync_source *ss)
{
	static unsigned n;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int len;

	if (ss->spec.kind != SYNC_SOURCE_LINUXPTP)
		return 0;
	len = snprintf(sun.sun_path + 1, sizeof(sun.sun_path) - 1, "vcounterd-ptp-%d-%u",
		       (int)getpid(), n++);
	return bind(ss->fd, (struct sockaddr *)&sun,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len));
}

int sync_source_new(struct event_base *base, const struct sync_source_spec *spec,
		    struct sync_source **ret, char *err, size_t err_size)
{
	struct sync_source *ss = calloc(1, sizeof(*ss));
	const struct timeval every = { SYNC_SOURCE_POLL_MS / 1000,
				       (SYNC_SOURCE_POLL_MS % 1000) * 1000 };
	int r;

	if (!ss) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	ss->spec = *spec;
	ss->fd = -1;
	if (spec->kind != SYNC_SOURCE_CHRONY && spec->kind != SYNC_SOURCE_LINUXPTP) {
		*ret = ss;
		return 0;
	}
	ss->fd = socket(spec->addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (ss->fd < 0 || bind_client(ss) < 0 ||
	    connect(ss->fd, (const struct sockaddr *)&spec->addr, spec->addr_len) < 0) {
		r = -errno;
		snprintf(err, err_size, "sync source %s: %s", spec->text, strerror(-r));
		sync_source_free(ss);
		return r;
	}
	/* A random first sequence number: a stale reply to an earlier daemon's
	 * request on a reused port is not taken for ours. */
	ss->seq = (uint32_t)clock_ns(CLOCK_MONOTONIC) ^ (uint32_t)getpid();
	ss->ev_read = event_new(base, ss->fd, EV_READ | EV_PERSIST, on_reply, ss);
	ss->ev_poll = event_new(base, -1, EV_PERSIST, on_poll, ss);
	if (!ss->ev_read || !ss->ev_poll || event_add(ss->ev_read, NULL) < 0 ||
	    event_add(ss->ev_poll, &every) < 0) {
		snprintf(err, err_size, "sync source %s: cannot poll", spec->text);
		sync_source_free(ss);
		return -ENOMEM;
	}
	on_poll(-1, 0, ss);
	*ret = ss;
	return 0;
}

int sync_source_open(struct event_base *base, const char *text, struct sync_source **ret, char *err,
		     size_t err_size)
{
	struct sync_source_spec spec;
	int r;

	r = sync_source_spec_parse(text, &spec, err, err_size);
	if (r < 0)
		return r;
	return sync_source_new(base, &spec, ret, err, err_size);
}

struct sync_source *sync_source_free(struct sync_source *ss)
{
	if (!ss)
		return NULL;
	ss->ev_read = event_unref(ss->ev_read);
	ss->ev_poll = event_unref(ss->ev_poll);
	if (ss->fd >= 0)
		close(ss->fd);
	free(ss);
	return NULL;
}

const struct sync_source_spec *sync_source_spec(const struct sync_source *ss)
{
	return &ss->spec;
}

static int ptp_apply(const struct sync_source *ss, uint64_t now, struct sync_error *sync, char *err,
		     size_t err_size)
{
	const struct ptp_time_status *ts = &ss->ptp_status;
	uint64_t since = ss->ptp_status_ns < ss->ptp_ds_ns ? ss->ptp_status_ns : ss->ptp_ds_ns;
	int64_t real_ns, sync_age_ns;

	if (ss->ptp_props_ns < since)
		since = ss->ptp_props_ns;
	if (!ss->has_ptp_status || !ss->has_ptp_ds || !ss->has_ptp_props || now < since ||
	    now - since > SYNC_SOURCE_MAX_AGE_NS) {
		snprintf(err, err_size, "sync source %s: no answer%s%s%s", ss->spec.text,
			 ss->has_ptp_status ? " for 30 s" : " yet", ss->last_error[0] ? ": " : "",
			 ss->last_error);
		return -ENODATA;
	}
	if (!ts->gm_present) {
		snprintf(err, err_size,
			 "sync source %s: this host is its own PTP grandmaster, whose clock error "
			 "ptp4l cannot tell (use chrony or fixed: here)",
			 ss->spec.text);
		return -ENODATA;
	}
	if (ss->ptp_props.timestamping != PTP_MGMT_TS_SOFTWARE) {
		snprintf(err, err_size,
			 "sync source %s: ptp4l timestamps in hardware on %s, so it disciplines "
			 "that NIC's clock; phc2sys copies it into the system clock with an error "
			 "ptp4l cannot tell (use chrony with 'refclock PHC', or fixed: here)",
			 ss->spec.text,
			 ss->ptp_props.interface[0] ? ss->ptp_props.interface : "its port");
		return -ENODATA;
	}
	/* With software timestamps ptp4l disciplines CLOCK_REALTIME and stamps
	 * ingress_time with it. */
	real_ns = (int64_t)clock_ns(CLOCK_REALTIME);
	sync_age_ns = real_ns - ts->ingress_time_ns;
	if (sync_age_ns > (int64_t)SYNC_SOURCE_MAX_AGE_NS) {
		snprintf(err, err_size, "sync source %s: ptp4l has had no Sync for %" PRId64 " s",
			 ss->spec.text, sync_age_ns / 1000000000);
		return -ENODATA;
	}
	sync->maxerror_ns = ptp_mgmt_bound_ns(ts, &ss->ptp_ds, real_ns, SYNC_SOURCE_PTP_DRIFT_PPM,
					      &sync->unsynced);
	sync->esterror_ns = ts->master_offset_ns < 0 ? -(uint64_t)ts->master_offset_ns
						     : (uint64_t)ts->master_offset_ns;
	return 0;
}

int sync_source_apply(const struct sync_source *ss, uint64_t now, struct sync_error *sync,
		      char *err, size_t err_size)
{
	uint64_t age;

	sync->source = ss->spec.kind;
	switch (ss->spec.kind) {
	case SYNC_SOURCE_FIXED:
		/* The operator vouches for it: a PTP host whose own servo
		 * statistics bound its clock, say. */
		sync->maxerror_ns = ss->spec.fixed_ns;
		sync->esterror_ns = 0;
		sync->unsynced = false;
		return 0;
	case SYNC_SOURCE_CHRONY:
		age = now - ss->last_ns;
		if (!ss->has_reading || now < ss->last_ns || age > SYNC_SOURCE_MAX_AGE_NS) {
			if (ss->has_reading)
				snprintf(err, err_size,
					 "sync source %s: no answer for %" PRIu64 " s%s%s",
					 ss->spec.text, age / 1000000000,
					 ss->last_error[0] ? ": " : "", ss->last_error);
			else
				snprintf(err, err_size, "sync source %s: no answer yet%s%s",
					 ss->spec.text, ss->last_error[0] ? ": " : "",
					 ss->last_error);
			return -ENODATA;
		}
		sync->maxerror_ns = sync_source_chrony_maxerror_ns(&ss->last, age, &sync->unsynced);
		sync->esterror_ns = (uint64_t)ceil(fabs(ss->last.rms_offset) * 1e9);
		return 0;
	case SYNC_SOURCE_LINUXPTP:
		return ptp_apply(ss, now, sync, err, err_size);
	default:
		return 0;
	}
}

int sync_source_read(const struct sync_source *ss, struct sync_error *ret, char *err,
		     size_t err_size)
{
	struct sync_error sync;
	int r;

	r = hostclock_sync_error(&sync);
	if (r < 0) {
		snprintf(err, err_size, "adjtimex: %s", strerror(-r));
		return r;
	}
	r = sync_source_apply(ss, clock_ns(CLOCK_MONOTONIC), &sync, err, err_size);
	*ret = sync;
	return r;
}
