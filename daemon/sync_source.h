/* sync_source.h - where this host's clock-error estimate comes from, which
 * the operator picks (--sync-source): the kernel's adjtimex maxerror, chronyd
 * asked over its command port, or a fixed bound. The kernel's maxerror is
 * only as honest as the daemon writing it: linuxptp writes 0 on every
 * update, and a dead daemon's keeps growing at the kernel's 500 ppm only.
 * One owner (struct vcd); chronyd is polled on the daemon's loop, never
 * waited for. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "counter_state.h"
#include "sync_source_spec.h"

struct event_base;

/* A chrony reading older than this is no answer: chronyd is polled once a
 * second, so it has not answered 30 polls. */
#define SYNC_SOURCE_MAX_AGE_NS (UINT64_C(30) * 1000000000)
#define SYNC_SOURCE_POLL_MS    1000

/* chronyd's clock error grows between its readings by its skew and residual
 * frequency plus this (chrony.conf maxclockerror, default 1 ppm). */
#define SYNC_SOURCE_CHRONY_MAXCLOCKERROR_PPM 1.0

/* Between ptp4l's Syncs a servo-locked clock drifts at most this (its
 * residual frequency error, well under 1 ppm once locked, with margin for
 * temperature): the bound grows by it with the age of the last Sync. */
#define SYNC_SOURCE_PTP_DRIFT_PPM 10.0

/* What a chrony tracking reply read age_ns ago says of this host's clock
 * error now: its bound grown at chrony's own rate. Pure. */
struct chrony_tracking;
uint64_t sync_source_chrony_maxerror_ns(const struct chrony_tracking *t, uint64_t age_ns,
					bool *ret_unsynced);

struct sync_source;

/* Starts polling (chrony: a connected UDP socket, a request each
 * SYNC_SOURCE_POLL_MS, the first now). -errno with a sentence in err. */
int sync_source_new(struct event_base *base, const struct sync_source_spec *spec,
		    struct sync_source **ret, char *err, size_t err_size);
/* sync_source_spec_parse() then sync_source_new(). */
int sync_source_open(struct event_base *base, const char *text, struct sync_source **ret, char *err,
		     size_t err_size);
struct sync_source *sync_source_free(struct sync_source *ss); /* NULL-safe; NULL */
const struct sync_source_spec *sync_source_spec(const struct sync_source *ss);

/* sync holds the kernel's adjtimex view (hostclock_sync_error); replace its
 * error estimate (maxerror_ns, esterror_ns, unsynced, source) with this
 * source's at now_ns (CLOCK_MONOTONIC). adjtimex leaves it as it is. -ENODATA
 * with the reason in err when chronyd or ptp4l has not answered within
 * SYNC_SOURCE_MAX_AGE_NS, ptp4l has had no Sync for as long, ptp4l is its
 * own grandmaster, or it timestamps in hardware (then it disciplines a NIC's
 * clock, not this one, and cannot tell this clock's error); sync is then
 * unchanged but for source. */
int sync_source_apply(const struct sync_source *ss, uint64_t now_ns, struct sync_error *sync,
		      char *err, size_t err_size);

/* This host's sync_error now: the kernel's view (hostclock_sync_error) with
 * this source's estimate applied. -errno with "adjtimex: ..." in err when the
 * kernel cannot be asked (*ret untouched); -ENODATA as sync_source_apply
 * (*ret then holds the kernel's view, source set). */
int sync_source_read(const struct sync_source *ss, struct sync_error *ret, char *err,
		     size_t err_size);
