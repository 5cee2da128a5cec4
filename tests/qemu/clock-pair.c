/* clock-pair - the L1 side of tests/qemu's clock measurement: talks to the L2 guest's clock-probe
 * through QEMU's chardev (a unix socket) and prints the guest-minus-host clock offsets with their
 * bounds, as key=value lines.
 *
 * Usage: clock-pair [--wait S] [--exchanges N] [--all] [--status] [--prefix P] SOCKET
 *   --wait S       retry the connection and the first answer for up to S seconds (default 0: one try)
 *   --exchanges N  NTP-style exchanges (default 16; 0: none). Each: host t1 (REALTIME, MONOTONIC,
 *                  TSC), request, guest sample, host t2 (TSC, MONOTONIC, REALTIME). The exchange
 *                  with the shortest round trip wins: offset = guest - (t1 + t2) / 2, bound = half
 *                  its round trip (the guest sampled somewhere inside [t1, t2]).
 *   --all          one sample on every guest vCPU (cpuI_{rt,mono}_ns, cpuI_tsc), the third of three
 *   --status       the guest's clocksource and its kernel log lines about clock trouble
 *   --prefix P     prepended to every key
 * Output keys: rt_off_ns rt_bound_ns mono_off_ns mono_bound_ns tsc_off_cycles tsc_bound_cycles
 * rtt_min_ns rtt_median_ns exchanges; guest_clocksource bad_klog (count) and klog=LINE lines.
 * Exit: 0, 1 when the guest did not answer (in time), 2 on usage errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "../../common/clockns.h"
#include "../../common/unix_fd.h"

#define ANSWER_TIMEOUT_MS 3000
#define MAX_EXCHANGES	  4096

static const char *prefix = "";
static unsigned long seq;
static char rbuf[1 << 16];
static size_t rlen;

/* Reads one line (without '\n') into line; 0, or -ETIMEDOUT / -EPIPE / -errno. */
static int read_line(int fd, char *line, size_t size, int timeout_ms)
{
	int64_t deadline = (int64_t)clock_ns(CLOCK_MONOTONIC) + (int64_t)timeout_ms * 1000000;

	for (;;) {
		char *nl = memchr(rbuf, '\n', rlen);
		if (nl) {
			size_t n = (size_t)(nl - rbuf);
			size_t copy = n < size - 1 ? n : size - 1;
			memcpy(line, rbuf, copy);
			line[copy] = 0;
			memmove(rbuf, nl + 1, rlen - n - 1);
			rlen -= n + 1;
			return 0;
		}
		if (rlen == sizeof(rbuf))
			rlen = 0; /* a line longer than the buffer: drop it */
		int64_t left_ms = (deadline - (int64_t)clock_ns(CLOCK_MONOTONIC)) / 1000000;
		if (left_ms <= 0)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, (int)left_ms);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		ssize_t got = read(fd, rbuf + rlen, sizeof(rbuf) - rlen);
		if (got == 0)
			return -EPIPE;
		if (got < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		rlen += (size_t)got;
	}
}

static int send_request(int fd, char kind)
{
	char req[32];
	int n = snprintf(req, sizeof(req), "%c %lu\n", kind, ++seq);

	return write(fd, req, (size_t)n) == n ? 0 : -errno;
}

/* Reads lines until the answer to request seq of this kind starts (stale answers are dropped). */
static int await_answer(int fd, char kind, char *line, size_t size, int timeout_ms)
{
	for (;;) {
		char k;
		unsigned long s;
		int r = read_line(fd, line, size, timeout_ms);
		if (r < 0)
			return r;
		if (sscanf(line, "%c %lu", &k, &s) == 2 && k == kind && s == seq)
			return 0;
	}
}

struct exchange {
	int64_t rt1, rt2, mono1, mono2;
	uint64_t tsc1, tsc2;
	int64_t g_rt, g_mono;
	uint64_t g_tsc;
};

static int exchange_once(int fd, struct exchange *x, int timeout_ms)
{
	char line[256];
	unsigned long s;
	int cpu, r;

	x->rt1 = (int64_t)clock_ns(CLOCK_REALTIME);
	x->mono1 = (int64_t)clock_ns(CLOCK_MONOTONIC);
	x->tsc1 = __rdtsc();
	r = send_request(fd, 'p');
	if (r < 0)
		return r;
	r = await_answer(fd, 'p', line, sizeof(line), timeout_ms);
	x->tsc2 = __rdtsc();
	x->mono2 = (int64_t)clock_ns(CLOCK_MONOTONIC);
	x->rt2 = (int64_t)clock_ns(CLOCK_REALTIME);
	if (r < 0)
		return r;
	if (sscanf(line, "p %lu %d %" SCNd64 " %" SCNd64 " %" SCNu64, &s, &cpu, &x->g_rt,
		   &x->g_mono, &x->g_tsc) != 5)
		return -EPROTO;
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static int do_exchanges(int fd, int n)
{
	static int64_t rtts[MAX_EXCHANGES];
	struct exchange best = { 0 }, x;
	int64_t best_rtt = INT64_MAX;

	for (int i = 0; i < n; i++) {
		int r = exchange_once(fd, &x, ANSWER_TIMEOUT_MS);
		if (r < 0) {
			fprintf(stderr, "clock-pair: exchange %d: %s\n", i, strerror(-r));
			return r;
		}
		rtts[i] = x.rt2 - x.rt1;
		if (rtts[i] < best_rtt) {
			best_rtt = rtts[i];
			best = x;
		}
	}
	qsort(rtts, (size_t)n, sizeof(rtts[0]), cmp_i64);
	/* Midpoints: (t1 + t2) / 2 without overflow. */
	printf("%srt_off_ns=%" PRId64 "\n", prefix,
	       best.g_rt - (best.rt1 + (best.rt2 - best.rt1) / 2));
	printf("%srt_bound_ns=%" PRId64 "\n", prefix, (best.rt2 - best.rt1 + 1) / 2);
	printf("%smono_off_ns=%" PRId64 "\n", prefix,
	       best.g_mono - (best.mono1 + (best.mono2 - best.mono1) / 2));
	printf("%smono_bound_ns=%" PRId64 "\n", prefix, (best.mono2 - best.mono1 + 1) / 2);
	printf("%stsc_off_cycles=%" PRId64 "\n", prefix,
	       (int64_t)(best.g_tsc - (best.tsc1 + (best.tsc2 - best.tsc1) / 2)));
	printf("%stsc_bound_cycles=%" PRIu64 "\n", prefix, (best.tsc2 - best.tsc1 + 1) / 2);
	printf("%shost_rt_ns=%" PRId64 "\n", prefix, best.rt1);
	printf("%srtt_min_ns=%" PRId64 "\n", prefix, rtts[0]);
	printf("%srtt_median_ns=%" PRId64 "\n", prefix, rtts[n / 2]);
	printf("%sexchanges=%d\n", prefix, n);
	return 0;
}

/* One sample on every vCPU; printed when print is set. */
static int do_all(int fd, int print)
{
	char line[256];
	int n, r;
	unsigned long s;

	r = send_request(fd, 'a');
	if (r < 0 || (r = await_answer(fd, 'a', line, sizeof(line), ANSWER_TIMEOUT_MS)) < 0)
		return r;
	if (sscanf(line, "a %lu %d", &s, &n) != 2)
		return -EPROTO;
	if (print)
		printf("%sguest_cpus=%d\n", prefix, n);
	for (;;) {
		int cpu;
		int64_t rt, mono;
		uint64_t tsc;
		r = read_line(fd, line, sizeof(line), ANSWER_TIMEOUT_MS);
		if (r < 0)
			return r;
		if (line[0] == 'e')
			return 0;
		if (sscanf(line, "c %d %" SCNd64 " %" SCNd64 " %" SCNu64, &cpu, &rt, &mono, &tsc) !=
		    4)
			return -EPROTO;
		if (print)
			printf("%scpu%d_rt_ns=%" PRId64 "\n%scpu%d_mono_ns=%" PRId64
			       "\n%scpu%d_tsc=%" PRIu64 "\n",
			       prefix, cpu, rt, prefix, cpu, mono, prefix, cpu, tsc);
	}
}

static int do_status(int fd)
{
	char line[1024];
	int bad = 0, r;

	r = send_request(fd, 's');
	if (r < 0 || (r = await_answer(fd, 's', line, sizeof(line), ANSWER_TIMEOUT_MS)) < 0)
		return r;
	char *cs = strstr(line, "clocksource=");
	printf("%sguest_clocksource=%s\n", prefix, cs ? cs + strlen("clocksource=") : "unknown");
	for (;;) {
		r = read_line(fd, line, sizeof(line), ANSWER_TIMEOUT_MS);
		if (r < 0)
			return r;
		if (line[0] == 'e')
			break;
		if (line[0] == 'k') {
			/* "clocksource: Switched to clocksource kvm-clock" is the normal boot line; the
			 * caller decides which lines are bad, this counts every match and prints it. */
			printf("%sklog=%s\n", prefix, line + 2);
			bad++;
		}
	}
	printf("%sklog_matches=%d\n", prefix, bad);
	return 0;
}

int main(int argc, char **argv)
{
	double wait_s = 0;
	int n = 16, all = 0, status = 0, fd = -1, r;
	const char *path;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--wait") && i + 1 < argc)
			wait_s = atof(argv[++i]);
		else if (!strcmp(argv[i], "--exchanges") && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--all"))
			all = 1;
		else if (!strcmp(argv[i], "--status"))
			status = 1;
		else if (!strcmp(argv[i], "--prefix") && i + 1 < argc)
			prefix = argv[++i];
		else if (argv[i][0] != '-' && i == argc - 1)
			break;
		else {
			fprintf(stderr,
				"usage: clock-pair [--wait S] [--exchanges N] [--all] [--status] "
				"[--prefix P] SOCKET\n");
			return 2;
		}
	}
	if (argc < 2 || argv[argc - 1][0] == '-' || n < 0 || n > MAX_EXCHANGES) {
		fprintf(stderr, "clock-pair: need SOCKET, 0 <= N <= %d\n", MAX_EXCHANGES);
		return 2;
	}
	path = argv[argc - 1];

	/* Connect, and wait for a first answer: the guest may still be booting (its requests then
	 * queue in the port; the sequence numbers drop the stale answers). */
	int64_t deadline = (int64_t)clock_ns(CLOCK_MONOTONIC) + (int64_t)(wait_s * 1e9);
	for (;;) {
		struct exchange x;
		if (fd < 0)
			fd = unix_fd_connect(path, SOCK_STREAM);
		if (fd >= 0) {
			r = exchange_once(fd, &x, 1000);
			if (r == 0)
				break;
			if (r == -EPIPE) {
				close(fd);
				fd = -1;
			}
		} else {
			r = fd;
		}
		if ((int64_t)clock_ns(CLOCK_MONOTONIC) >= deadline) {
			fprintf(stderr, "clock-pair: %s: no answer from the guest: %s\n", path,
				strerror(-r));
			return 1;
		}
		if (fd < 0)
			usleep(100000);
	}
	r = 0;
	if (n > 0)
		r = do_exchanges(fd, n);
	/* The first samples after a migration or a long idle pay for the vCPUs' first touches of
	 * their pages in L1 (exits between clock_gettime and rdtsc, ~10 us each under nested TCG):
	 * two rounds warm them, the third is printed. */
	for (int i = 0; r == 0 && all && i < 3; i++)
		r = do_all(fd, i == 2);
	if (r == 0 && status)
		r = do_status(fd);
	if (r < 0) {
		fprintf(stderr, "clock-pair: %s: %s\n", path, strerror(-r));
		return 1;
	}
	close(fd);
	return 0;
}
