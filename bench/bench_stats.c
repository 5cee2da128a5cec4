/* bench_stats.c - the benchmarks' shared sample statistics and argument
 * parsing. */
#include <errno.h>
#include <stdlib.h>

#include "bench_stats.h"

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

void bench_sort(uint64_t *samples, size_t n)
{
	qsort(samples, n, sizeof(*samples), cmp_u64);
}

uint64_t bench_percentile(const uint64_t *sorted, size_t n, unsigned pct)
{
	size_t rank = (n * pct + 99) / 100;

	return n == 0 ? 0 : sorted[rank > 0 ? rank - 1 : 0];
}

int bench_parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret)
{
	unsigned long v;
	char *end;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -EINVAL;
	*ret = (unsigned)v;
	return 0;
}
