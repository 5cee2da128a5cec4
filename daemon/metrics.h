/* metrics.h - the daemon's Prometheus metrics: the counters and the apply
 * latency histogram that hooks in migration.c and grpc.c feed, and their
 * text exposition (format 0.0.4). Pure: no I/O, no clocks; what is read from
 * the daemon when scraped (VMs, links, watchers) comes in a snapshot, and
 * metrics_http.c serves the text. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "counter_state.h"
#include "migration_view.h"
#include "session.h"

/* Upper bounds (le) of vcounterd_apply_latency_seconds: 1-2.5-5 per decade
 * from 10 us to 10 s, plus +Inf. The apply is one VMM round trip (tens of us
 * on an idle host, 15 ms measured in the nested rig, README). */
#define METRICS_APPLY_LATENCY_BUCKETS 19
/* The text is a fixed set of series, whatever the daemon holds; the unit test
 * renders every value at its widest and stays under this. */
#define METRICS_TEXT_MAX	      16384

/* Where an incoming TLS handshake failed. */
enum metrics_listener {
	METRICS_LISTENER_PEER = 0, /* --listen, the peer link */
	METRICS_LISTENER_CONTROL,  /* --control-listen, service Control */
	_METRICS_LISTENER_MAX,
	_METRICS_LISTENER_INVALID = -1,
};

const char *metrics_listener_to_string(enum metrics_listener listener);

/* The daemon's listening sockets, as vcounterd_accept_failures_total names them. */
enum metrics_socket {
	METRICS_SOCKET_VMM = 0,	     /* the VMM socket (unix) */
	METRICS_SOCKET_PEER,	     /* --listen */
	METRICS_SOCKET_CONTROL_UNIX, /* --control-socket */
	METRICS_SOCKET_CONTROL_TCP,  /* --control-listen */
	METRICS_SOCKET_METRICS,	     /* --metrics-listen */
	_METRICS_SOCKET_MAX,
	_METRICS_SOCKET_INVALID = -1,
};

const char *metrics_socket_to_string(enum metrics_socket socket);

/* Why a request or connection on the VMM socket was refused, from the errno
 * of the Error reply (metrics_refusal_from_errno). */
enum metrics_refusal {
	METRICS_REFUSAL_MALFORMED = 0, /* EBADMSG, ENOMSG: not a frame or message we serve */
	METRICS_REFUSAL_TOO_LARGE,     /* EMSGSIZE, E2BIG */
	METRICS_REFUSAL_INVALID,       /* EINVAL: a field or an fd that is not what it claims */
	METRICS_REFUSAL_NOT_ALLOWED,   /* EPERM: uid/gid, or another connection's VM */
	METRICS_REFUSAL_LIMIT,	       /* ENOSPC, EBUSY: a limit of vcounterd(8) LIMITS */
	METRICS_REFUSAL_EXISTS,	       /* EEXIST */
	METRICS_REFUSAL_UNKNOWN_VM,    /* ENOENT */
	METRICS_REFUSAL_OUT_OF_FDS,    /* EMFILE, ENFILE: the daemon's own fds */
	METRICS_REFUSAL_OTHER,
	_METRICS_REFUSAL_MAX,
	_METRICS_REFUSAL_INVALID = -1,
};

const char *metrics_refusal_to_string(enum metrics_refusal refusal);

/* A connection closed before it was authenticated or served (admission.h). */
enum metrics_shed {
	METRICS_SHED_PER_SOURCE = 0, /* its source address held its share of the slots */
	METRICS_SHED_EVICTED,	     /* the oldest waiting, closed to make room */
	METRICS_SHED_DEADLINE,	     /* did not finish within its deadline */
	METRICS_SHED_FULL,	     /* every slot taken, none to evict */
	_METRICS_SHED_MAX,
	_METRICS_SHED_INVALID = -1,
};

const char *metrics_shed_to_string(enum metrics_shed shed);
struct metrics;
void metrics_shed(struct metrics *m, enum metrics_socket socket, enum metrics_shed shed);
enum metrics_refusal metrics_refusal_from_errno(int error); /* either sign */

/* How a migration ended, as vcounterd_migrations_total counts it. */
enum metrics_outcome {
	METRICS_OUTCOME_DONE = 0,
	METRICS_OUTCOME_ABORTED,
	METRICS_OUTCOME_FAILED,
	_METRICS_OUTCOME_MAX,
	_METRICS_OUTCOME_INVALID = -1,
};

const char *metrics_outcome_to_string(enum metrics_outcome outcome);

/* Counters since start-up. All zero is the empty state. */
struct metrics {
	uint64_t migrations[_VM_ROLE_MAX][_METRICS_OUTCOME_MAX]; /* [VM_ROLE_NONE] unused */
	/* Per bucket (not cumulative): [i] counts latencies in (le[i-1], le[i]],
	 * the last one those above every bound. */
	uint64_t apply_latency_buckets[METRICS_APPLY_LATENCY_BUCKETS + 1];
	uint64_t apply_latency_count;
	uint64_t apply_latency_sum_ns;
	bool has_last;		      /* a migration applied since start-up */
	uint64_t last_error_bound_ns; /* UINT64_MAX: unbounded (a clock unsynchronised) */
	int64_t last_elapsed_ns;
	uint64_t last_clamped_ns;
	/* Migrations done whose target clock read behind the source's anchor:
	 * the guest's counter held (counter_plan.clamped_ns). */
	uint64_t counter_held;
	/* counter_math_kvmclock_check() of the last migration done here as
	 * target, and the count of each verdict (index enum kvmclock_verdict). */
	bool has_last_kvmclock;
	int64_t last_kvmclock_error_ns;
	uint64_t kvmclock_checks[_KVMCLOCK_VERDICT_MAX];
	uint64_t peer_link_failures;
	uint64_t tls_handshake_failures[_METRICS_LISTENER_MAX];
	uint64_t journal_write_failures;
	/* accept() on a listening socket failed for want of fds or memory. */
	uint64_t accept_failures[_METRICS_SOCKET_MAX];
	/* Error replies on the VMM socket, and connections it refused. */
	uint64_t vmm_refusals[_METRICS_REFUSAL_MAX];
	uint64_t connections_shed[_METRICS_SOCKET_MAX][_METRICS_SHED_MAX];
};

/* The daemon's own counters, process-wide like the log level: grpc.c knows
 * nothing of struct vcd, and there is one daemon per process. */
extern struct metrics vcd_metrics;

/* What the daemon holds when scraped. */
struct metrics_snapshot {
	const char *version;
	uint64_t start_time_ns; /* CLOCK_REALTIME since the epoch */
	/* VMs whose registration finished (probed), by role and backend. */
	uint64_t vms[_VM_ROLE_MAX][_BACKEND_KIND_MAX];
	uint64_t migrations_running;
	uint64_t peer_links_established;
	uint64_t peer_links_connecting; /* connect or TLS handshake running */
	uint64_t control_watchers;
	/* This host's clock-error estimate now, from its sync source
	 * (sync_source.h); UINT64_MAX: unsynchronised or no answer. */
	enum sync_source_kind sync_source;
	uint64_t clock_error_ns;
};

/* A migration moved (metrics_on_migration, an observer of every change).
 * Counts its outcome the first time it has one and
 * sets *counted (false when the migration starts), so a session seen again
 * in a terminal step is not counted twice:
 *  - target: APPLIED is "done" (the counter was written, acked by the source
 *    or not), and its report feeds the apply latency histogram;
 *  - source: DONE (the target's report arrived) is "done";
 *  - either: ABORTED, FAILED.
 * A "done" with a report also sets the last error bound and elapsed time. */
void metrics_migration_changed(struct metrics *m, const struct session *s, bool *counted);
/* The migrations' observer (a struct metrics): metrics_migration_changed
 * with the migration's own outcome flag. */
void metrics_on_migration(void *metrics, const struct migration_event *ev);
void metrics_tls_handshake_failed(struct metrics *m, enum metrics_listener listener);
/* A peer link closed: error < 0 (connect refused, handshake failed, link
 * lost) is a failure, 0 an orderly close. */
void metrics_peer_link_closed(struct metrics *m, int error);
/* A session journal write failed (disk full, I/O error): the step it was
 * for did not take effect. */
void metrics_journal_write_failed(struct metrics *m);

/* The exposition text, NUL-terminated: its length, or -ENOBUFS when size is
 * too small (buf then holds nothing useful). Families each have HELP and TYPE
 * once; label values are escaped (\ " newline); +Inf where a bound is
 * unbounded; the last error bound and elapsed time have no sample before a
 * migration applied. */
int metrics_render(const struct metrics *m, const struct metrics_snapshot *snap, char *buf,
		   size_t size);
