/* ratelimit.h - at most `burst` events per `interval`, and a count of those
 * held back, as systemd's RateLimit and the kernel's printk_ratelimit do:
 * what a peer, a VMM or a stranger can make the daemon log is bounded, and
 * the first line let through after a quiet spell says how many were not.
 * Pure: the caller passes the time. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct ratelimit {
	uint64_t interval_ns;
	unsigned burst;
	/* State: zero is a fresh limit. */
	bool started;
	uint64_t begin_ns;
	unsigned n;
	uint64_t suppressed;
};

#define RATELIMIT_INIT(interval, burst_) \
	((struct ratelimit){ .interval_ns = (interval), .burst = (burst_) })

/* One more event at now_ns: true when it may be logged. *ret_suppressed
 * (if not NULL) is then the number of events held back since the last one
 * let through, to be said with it, and is reset; else it is 0. An interval
 * of 0 or a burst of 0 lets everything through. */
bool ratelimit_pass(struct ratelimit *rl, uint64_t now_ns, uint64_t *ret_suppressed);
