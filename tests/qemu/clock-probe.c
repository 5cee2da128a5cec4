/* clock-probe - the nested (L2) guest's clock probe: answers requests on a virtio-serial port with
 * samples of CLOCK_REALTIME, CLOCK_MONOTONIC and the TSC, taken on one or on every vCPU, and with
 * the guest's clocksource and its kernel log lines about clock trouble.
 *
 * Usage: clock-probe DEVICE   (DEVICE: the port, e.g. /dev/vport0p1; runs until killed)
 *
 * Protocol, one text line each way (SEQ: the requester's number, echoed so that it can drop stale
 * answers, e.g. to requests queued before the port was opened):
 *   "p SEQ"  -> "p SEQ CPU RT_NS MONO_NS TSC"        sampled at once by the thread on vCPU 0
 *   "a SEQ"  -> "a SEQ N", N x "c CPU RT_NS MONO_NS TSC", "e SEQ"   one sample on every vCPU
 *   "s SEQ"  -> "s SEQ clocksource=NAME", "k LINE" per matching kernel log line, "e SEQ"
 * The port reads EOF while no host end is connected (virtio_console: !host_connected); the probe
 * then waits and reads again, so a requester may come and go, and across a live migration.
 * Static, baseline x86-64: the guest has no libraries and the nested CPU model lacks SSE4/AVX.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/klog.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "../../common/clockns.h"

#define MAX_CPUS     64
#define KLOG_PATTERN "TSC unstable|clocksource|watchdog|soft lockup"

struct sample {
	int cpu;
	int64_t realtime_ns;
	int64_t monotonic_ns;
	uint64_t tsc;
};

static int ncpus;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static unsigned long generation;
static int finished;
static struct sample samples[MAX_CPUS];

/* The TSC is read on both sides of CLOCK_MONOTONIC and the tightest of a few brackets is kept,
 * its midpoint reported: an exit to L1 between the reads (~10 us under nested TCG) would
 * otherwise show as a phase between vCPUs. */
static void take_sample(int cpu, struct sample *s)
{
	uint64_t best_width = UINT64_MAX;

	s->cpu = cpu;
	s->realtime_ns = (int64_t)clock_ns(CLOCK_REALTIME);
	for (int i = 0; i < 5; i++) {
		uint64_t tsc1 = __rdtsc();
		int64_t mono_ns = (int64_t)clock_ns(CLOCK_MONOTONIC);
		uint64_t tsc2 = __rdtsc();

		if (tsc2 - tsc1 < best_width) {
			best_width = tsc2 - tsc1;
			s->monotonic_ns = mono_ns;
			s->tsc = tsc1 + (tsc2 - tsc1) / 2;
		}
	}
}

static int pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

/* One thread per vCPU, pinned there, sampling once per generation. */
static void *cpu_thread(void *arg)
{
	int cpu = (int)(intptr_t)arg;
	unsigned long seen = 0;

	if (pin_to(cpu) < 0)
		fprintf(stderr, "clock-probe: cannot pin to cpu %d: %s\n", cpu, strerror(errno));
	pthread_mutex_lock(&lock);
	for (;;) {
		while (generation == seen)
			pthread_cond_wait(&go, &lock);
		seen = generation;
		pthread_mutex_unlock(&lock);
		take_sample(cpu, &samples[cpu]);
		pthread_mutex_lock(&lock);
		if (++finished == ncpus)
			pthread_cond_signal(&done);
	}
	return NULL;
}

static void sample_all(void)
{
	pthread_mutex_lock(&lock);
	finished = 0;
	generation++;
	pthread_cond_broadcast(&go);
	while (finished < ncpus)
		pthread_cond_wait(&done, &lock);
	pthread_mutex_unlock(&lock);
}

/* Appends to a growing reply buffer; replies are sent with one write. */
struct buf {
	char data[65536];
	size_t len;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->len >= sizeof(b->data))
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, sizeof(b->data) - b->len, fmt, ap);
	va_end(ap);
	if (n > 0) /* a truncated reply ends at the buffer's end (vsnprintf keeps the NUL) */
		b->len = b->len + (size_t)n < sizeof(b->data) ? b->len + (size_t)n
							      : sizeof(b->data) - 1;
}

static void put_status(struct buf *b, unsigned long seq)
{
	static char log[1 << 20];
	char cs[64] = "unknown";
	regex_t re;
	FILE *f;
	int n;

	f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
	if (f) {
		if (fgets(cs, sizeof(cs), f))
			cs[strcspn(cs, "\n")] = 0;
		fclose(f);
	}
	put(b, "s %lu clocksource=%s\n", seq, cs);
	/* The whole kernel log buffer (SYSLOG_ACTION_READ_ALL = 3), non-destructively. */
	n = klogctl(3, log, sizeof(log) - 1);
	if (n > 0 && regcomp(&re, KLOG_PATTERN, REG_EXTENDED | REG_NOSUB) == 0) {
		log[n] = 0;
		for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n"))
			if (regexec(&re, line, 0, NULL, 0) == 0)
				put(b, "k %s\n", line);
		regfree(&re);
	}
	put(b, "e %lu\n", seq);
}

static void answer(int fd, const char *req)
{
	static struct buf b;
	unsigned long seq;
	struct sample s;
	char kind;

	if (sscanf(req, "%c %lu", &kind, &seq) != 2)
		return;
	b.len = 0;
	switch (kind) {
	case 'p':
		take_sample(0, &s);
		put(&b, "p %lu %d %" PRId64 " %" PRId64 " %" PRIu64 "\n", seq, s.cpu, s.realtime_ns,
		    s.monotonic_ns, s.tsc);
		break;
	case 'a':
		sample_all();
		put(&b, "a %lu %d\n", seq, ncpus);
		for (int i = 0; i < ncpus; i++)
			put(&b, "c %d %" PRId64 " %" PRId64 " %" PRIu64 "\n", samples[i].cpu,
			    samples[i].realtime_ns, samples[i].monotonic_ns, samples[i].tsc);
		put(&b, "e %lu\n", seq);
		break;
	case 's':
		put_status(&b, seq);
		break;
	default:
		return;
	}
	for (size_t off = 0; off < b.len;) {
		ssize_t w = write(fd, b.data + off, b.len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			/* The host end went away mid-answer: it will ask again. */
			return;
		}
		off += (size_t)w;
	}
}

int main(int argc, char **argv)
{
	char line[256];
	size_t len = 0;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: clock-probe DEVICE\n");
		return 2;
	}
	ncpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpus < 1 || ncpus > MAX_CPUS) {
		fprintf(stderr, "clock-probe: %d CPUs unsupported\n", ncpus);
		return 1;
	}
	for (int i = 0; i < ncpus; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, cpu_thread, (void *)(intptr_t)i)) {
			fprintf(stderr, "clock-probe: pthread_create failed\n");
			return 1;
		}
	}
	/* The 'p' answers come from vCPU 0, as do the host side's debugfs offset references. */
	if (pin_to(0) < 0)
		fprintf(stderr, "clock-probe: cannot pin to cpu 0: %s\n", strerror(errno));
	fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "clock-probe: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	fprintf(stderr, "clock-probe: serving %s on %d cpus\n", argv[1], ncpus);
	for (;;) {
		char c;
		ssize_t r = read(fd, &c, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			/* No host end connected (EOF) or a transient error: wait for one. */
			struct pollfd p = { .fd = fd, .events = POLLIN };
			poll(&p, 1, 20);
			if (r == 0 || !(p.revents & POLLIN))
				usleep(10000);
			continue;
		}
		if (c == '\n') {
			line[len] = 0;
			answer(fd, line);
			len = 0;
		} else if (len < sizeof(line) - 1) {
			line[len++] = c;
		}
	}
}
