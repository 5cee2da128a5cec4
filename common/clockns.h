/* clockns.h - a clock read in nanoseconds: the one helper through which the
 * daemon, libvcounter, minivmm, the tests and the benchmarks read their
 * clocks. clock_gettime() fails only for a clock id the kernel does not
 * know; such a clock reads 0. */
#pragma once

#include <stdint.h>
#include <time.h>

static inline uint64_t timespec_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * UINT64_C(1000000000) + (uint64_t)ts->tv_nsec;
}

static inline uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) < 0)
		return 0;
	return timespec_ns(&ts);
}
