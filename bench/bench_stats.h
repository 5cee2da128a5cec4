/* bench_stats.h - what every benchmark here does with its samples and its
 * arguments: sort, nearest-rank percentiles, ns as us or ms, and a bounded
 * unsigned argument. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Ascending, in place. */
void bench_sort(uint64_t *samples, size_t n);
/* The nearest-rank pct-th percentile of n sorted samples; 0 when n is 0. */
uint64_t bench_percentile(const uint64_t *sorted, size_t n, unsigned pct);

static inline double bench_us(uint64_t ns)
{
	return (double)ns / 1e3;
}

static inline double bench_ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* A decimal in [min, max] into *ret: 0, or -EINVAL (nothing written). */
int bench_parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret);
