/* adjtimex-print: prints this host's kernel clock-sync state (adjtimex(2), read-only) and its TSC
 * frequency as key=value lines, for the two-host rig (tests/vm/run-two-vms, two-host-smoke).
 * adjtimex-print --set-tai S first sets the kernel's TAI offset to S (two-host-handoff-test). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

static const struct {
	int bit;
	const char *name;
} status_names[] = {
	{ STA_PLL, "PLL" },
	{ STA_PPSFREQ, "PPSFREQ" },
	{ STA_PPSTIME, "PPSTIME" },
	{ STA_FLL, "FLL" },
	{ STA_INS, "INS" },
	{ STA_DEL, "DEL" },
	{ STA_UNSYNC, "UNSYNC" },
	{ STA_FREQHOLD, "FREQHOLD" },
	{ STA_PPSSIGNAL, "PPSSIGNAL" },
	{ STA_PPSJITTER, "PPSJITTER" },
	{ STA_PPSWANDER, "PPSWANDER" },
	{ STA_PPSERROR, "PPSERROR" },
	{ STA_CLOCKERR, "CLOCKERR" },
	{ STA_NANO, "NANO" },
	{ STA_MODE, "MODE" },
	{ STA_CLK, "CLK" },
};

static const char *const state_names[] = { "TIME_OK",  "TIME_INS",  "TIME_DEL",
					   "TIME_OOP", "TIME_WAIT", "TIME_ERROR" };

static uint64_t rdtsc_fenced(void)
{
	uint32_t lo, hi;

	/* lfence on both sides orders rdtsc against the clock reads around it (Intel SDM vol. 2B). */
	__asm__ __volatile__("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi) : : "memory");
	return ((uint64_t)hi << 32) | lo;
}

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* TSC rate against CLOCK_MONOTONIC_RAW over ~200 ms; both ends are (rdtsc; clock; rdtsc)
 * brackets, so the result is good to (bracket widths / 200 ms). */
static int tsc_khz_measured(uint64_t *ret_khz)
{
	struct timespec t0, t1;
	uint64_t a0, b0, a1, b1;

	a0 = rdtsc_fenced();
	if (clock_gettime(CLOCK_MONOTONIC_RAW, &t0) < 0)
		return -errno;
	b0 = rdtsc_fenced();
	usleep(200000);
	a1 = rdtsc_fenced();
	if (clock_gettime(CLOCK_MONOTONIC_RAW, &t1) < 0)
		return -errno;
	b1 = rdtsc_fenced();
	if (ts_ns(&t1) <= ts_ns(&t0) || b1 <= a0)
		return -EIO;
	*ret_khz = ((a1 + b1) / 2 - (a0 + b0) / 2) * 1000000 / (uint64_t)(ts_ns(&t1) - ts_ns(&t0));
	return 0;
}

int main(int argc, char **argv)
{
	struct timex tx = { .modes = 0 };
	uint64_t khz = 0;
	unsigned int i;
	int state, r;

	/* --set-tai S: set the kernel's TAI offset first, as chrony's leapsectz does (root only). */
	if (argc == 3 && strcmp(argv[1], "--set-tai") == 0) {
		struct timex set = { .modes = ADJ_TAI, .constant = atol(argv[2]) };

		if (adjtimex(&set) < 0) {
			fprintf(stderr, "adjtimex-print: adjtimex(ADJ_TAI): %s\n", strerror(errno));
			return 1;
		}
	} else if (argc != 1) {
		fprintf(stderr, "usage: adjtimex-print [--set-tai SECONDS]\n");
		return 2;
	}
	state = adjtimex(&tx);
	if (state < 0) {
		fprintf(stderr, "adjtimex-print: adjtimex: %s\n", strerror(errno));
		return 1;
	}
	printf("adjtimex_state=%d %s\n", state,
	       state < (int)(sizeof(state_names) / sizeof(state_names[0])) ? state_names[state]
									   : "?");
	printf("status=0x%x", (unsigned int)tx.status);
	for (i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
		if (tx.status & status_names[i].bit)
			printf(" %s", status_names[i].name);
	printf("\n");
	/* As vcounterd's hostclock_sync_error(): TIME_ERROR is returned while STA_UNSYNC is set. */
	printf("synchronised=%d\n", !(tx.status & STA_UNSYNC) && state != TIME_ERROR);
	printf("maxerror_us=%ld\n", tx.maxerror);
	printf("esterror_us=%ld\n", tx.esterror);
	/* offset is in ns with STA_NANO, else in us (adjtimex(2)). */
	printf("offset_ns=%ld\n", (tx.status & STA_NANO) ? tx.offset : tx.offset * 1000);
	/* freq is ppm with a 16-bit fraction. */
	printf("freq_ppm=%.3f\n", tx.freq / 65536.0);
	printf("tick_us=%ld\n", tx.tick);
	printf("tai_s=%d\n", tx.tai);
	r = tsc_khz_measured(&khz);
	if (r < 0)
		printf("tsc_khz=? (%s)\n", strerror(-r));
	else
		printf("tsc_khz=%llu\n", (unsigned long long)khz);
	return 0;
}
