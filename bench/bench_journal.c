/* bench_journal - what the session journal costs a migration step: one
 * journal_write() (encode, write a temporary file, fsync, rename, fsync
 * the directory) against the encoding alone, for a 2-vCPU and a 64-vCPU
 * VM, in a directory on the disk the daemon would use. Prints p50/p99 and
 * the ratios measured in this one run; asserts nothing (CONVENTIONS.md).
 *
 *   bench_journal [DIR] [N]     DIR default /var/tmp, N writes (default 200) */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_stats.h"
#include "clockns.h"
#include "fixture.h"
#include "journal.h"

struct result {
	uint64_t p50, p99;
	size_t bytes;
};

static int run(struct journal *j, uint32_t n_vcpus, size_t n, bool write, struct result *ret)
{
	struct journal_entry *e = malloc(sizeof(*e));
	uint64_t *t = calloc(n, sizeof(*t));
	int r = 0;

	if (!e || !t) {
		free(e);
		free(t);
		return -ENOMEM;
	}
	fixture_applied_entry(e, n_vcpus);
	for (size_t i = 0; i < n && r == 0; i++) {
		uint64_t t0 = clock_ns(CLOCK_MONOTONIC);

		e->sequence = i + 1;
		if (write) {
			r = journal_write(j, e, "target/applied");
		} else {
			uint8_t *buf;

			r = journal_encode(e, &buf, &ret->bytes);
			free(buf);
		}
		t[i] = clock_ns(CLOCK_MONOTONIC) - t0;
	}
	bench_sort(t, n);
	ret->p50 = t[n / 2];
	ret->p99 = t[(n * 99) / 100];
	free(t);
	free(e);
	return r;
}

int main(int argc, char **argv)
{
	const char *base = argc > 1 ? argv[1] : "/var/tmp";
	size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 200;
	static const uint32_t sizes[] = { 2, 64 };
	char dir[4096];
	struct journal *j;
	int r;

	if (n < 10) {
		fprintf(stderr, "bench_journal: N must be at least 10\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s/vc-bench-journal.XXXXXX", base);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "bench_journal: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	r = journal_open(dir, &j);
	if (r < 0) {
		fprintf(stderr, "bench_journal: %s: %s\n", dir, strerror(-r));
		return 1;
	}
	printf("journal in %s, %zu writes each (record: target applied, with states and report)\n",
	       dir, n);
	printf("%-6s %8s %14s %14s %16s %16s %8s\n", "vCPUs", "bytes", "encode p50 us",
	       "encode p99 us", "journal p50 us", "journal p99 us", "ratio");
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		struct result enc = { 0 }, wr = { 0 };

		if (run(j, sizes[k], n, false, &enc) < 0 ||
		    (r = run(j, sizes[k], n, true, &wr)) < 0) {
			fprintf(stderr, "bench_journal: write failed: %s\n", strerror(-r));
			return 1;
		}
		printf("%-6u %8zu %14.1f %14.1f %16.1f %16.1f %7.0fx\n", sizes[k], enc.bytes,
		       enc.p50 / 1e3, enc.p99 / 1e3, wr.p50 / 1e3, wr.p99 / 1e3,
		       (double)wr.p50 / (double)(enc.p50 ? enc.p50 : 1));
	}
	journal_remove(j, "0123456789abcdef0123456789abcdef");
	journal_close(j);
	if (rmdir(dir) < 0)
		fprintf(stderr, "bench_journal: cannot remove %s: %s\n", dir, strerror(errno));
	return 0;
}
