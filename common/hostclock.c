/* hostclock.c - host clock readings: (CLOCK_TAI, TSC) anchors, the kernel's
 * clock-sync error from adjtimex(2), and the host TSC frequency. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "config.h"
#include "hostclock.h"
#include "macro.h"

/* include/uapi/linux/kvm.h; config.h says whether the installed header has
 * them, the values are ABI and cannot change. */
#if !HAVE_KVM_CLOCK_REALTIME
#define KVM_CLOCK_REALTIME (1 << 2)
#endif
#if !HAVE_KVM_CLOCK_HOST_TSC
#define KVM_CLOCK_HOST_TSC (1 << 3)
#endif

#define TSC_FREQ_SYSFS "/sys/devices/system/cpu/cpu0/tsc_freq_khz"
#define TSC_MEASURE_NS (20 * NSEC_PER_MSEC)

__extension__ typedef unsigned __int128 hostclock_u128;

/* struct timex carries maxerror/esterror as long microseconds (adjtimex(2)).
 * The kernel clamps them to [0, NTP_PHASE_LIMIT] (16 s); a negative value
 * could only be garbage, so it reads as 0 and the caller is told the clock
 * is unsynced. */
static uint64_t timex_us_to_ns(long us, bool *unsynced)
{
	if (us < 0) {
		*unsynced = true;
		return 0;
	}
	if ((unsigned long)us > UINT64_MAX / NSEC_PER_USEC)
		return UINT64_MAX;
	return (uint64_t)us * NSEC_PER_USEC;
}

int hostclock_sync_error(struct sync_error *ret)
{
	struct timex tx = { .modes = 0 };
	struct sync_error se = { 0 };
	int state;

	if (!ret)
		return -EINVAL;

	state = adjtimex(&tx);
	if (state < 0)
		return -errno;

	/* TIME_ERROR is returned while STA_UNSYNC is set, and also for the PPS
	 * error states (kernel/time/ntp.c: ntp_get_next_leap/__do_adjtimex);
	 * either way the numbers are not backed by a synchronised source. */
	se.unsynced = (tx.status & STA_UNSYNC) || state == TIME_ERROR;
	se.maxerror_ns = timex_us_to_ns(tx.maxerror, &se.unsynced);
	se.esterror_ns = timex_us_to_ns(tx.esterror, &se.unsynced);
	se.tai_offset_s = tx.tai;
	/* Both set is not a state ntp.c produces; insert wins as the kernel's
	 * second_overflow() tests it first. */
	if (tx.status & STA_INS)
		se.leap = SYNC_LEAP_INSERT;
	else if (tx.status & STA_DEL)
		se.leap = SYNC_LEAP_DELETE;

	*ret = se;
	return 0;
}

#if defined(__x86_64__)
/* lfence before rdtsc keeps it from executing ahead of earlier instructions,
 * lfence after keeps later ones (the clock read) from starting before it:
 * Intel SDM vol. 2B, RDTSC, and the kernel's rdtsc_ordered(). Without the
 * fences a bracket could be narrower than the clock read it brackets. */
static inline uint64_t rdtsc_fenced(void)
{
	uint32_t lo, hi;

	__asm__ __volatile__("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi) : : "memory");
	return ((uint64_t)hi << 32) | lo;
}

uint64_t hostclock_rdtsc(void)
{
	return rdtsc_fenced();
}
#else
uint64_t hostclock_rdtsc(void)
{
	return 0;
}
#endif

static uint64_t timespec_to_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * NSEC_PER_SEC + (uint64_t)ts->tv_nsec;
}

/* ceil(cycles / khz in ns); saturates rather than wraps. */
static uint64_t cycles_to_ns_ceil(uint64_t cycles, uint32_t khz)
{
	hostclock_u128 ns = ((hostclock_u128)cycles * NSEC_PER_MSEC + khz - 1) / khz;

	return ns > UINT64_MAX ? UINT64_MAX : (uint64_t)ns;
}

#if defined(__x86_64__)
int hostclock_bracket_anchor(uint32_t tsc_khz, struct host_anchor *ret)
{
	uint64_t best_cycles = UINT64_MAX, best_tsc = 0, best_tai_ns = 0, best_mono_ns = 0;

	if (!ret)
		return -EINVAL;

	for (int i = 0; i < HOSTCLOCK_BRACKET_TRIES; i++) {
		struct timespec tai, mono_before = { 0 }, mono_after = { 0 };
		uint64_t tsc_before, tsc_after;

		/* Without a TSC frequency the width comes from CLOCK_MONOTONIC
		 * read outside the TSC bracket, so it can only be wider. */
		if (tsc_khz == 0 && clock_gettime(CLOCK_MONOTONIC, &mono_before) < 0)
			return -errno;
		tsc_before = rdtsc_fenced();
		/* On a host whose kernel TAI offset is 0 (no NTP daemon told it
		 * the leap-second count, e.g. an unsynced host), CLOCK_TAI reads
		 * the same as CLOCK_REALTIME; both sides of a handoff then need
		 * the same convention, which hostclock_sync_error() reports. */
		if (clock_gettime(CLOCK_TAI, &tai) < 0)
			return -errno;
		tsc_after = rdtsc_fenced();
		if (tsc_khz == 0 && clock_gettime(CLOCK_MONOTONIC, &mono_after) < 0)
			return -errno;

		/* A TSC that stepped back (unsynchronised TSCs and a CPU
		 * migration in between) says nothing; try again. */
		if (tsc_after < tsc_before)
			continue;
		if (tsc_after - tsc_before >= best_cycles)
			continue;
		best_cycles = tsc_after - tsc_before;
		best_tsc = tsc_before + best_cycles / 2;
		best_tai_ns = timespec_to_ns(&tai);
		best_mono_ns = timespec_to_ns(&mono_after) - timespec_to_ns(&mono_before);
	}
	if (best_cycles == UINT64_MAX)
		return -EIO;

	/* The clock was read at some TSC value inside the bracket, so the
	 * midpoint is off by at most half the width; width_ns is the whole
	 * width, a bound with margin. */
	*ret = (struct host_anchor){
		.tai_ns = best_tai_ns,
		.host_tsc = best_tsc,
		.width_ns = tsc_khz ? cycles_to_ns_ceil(best_cycles, tsc_khz) : best_mono_ns,
		.source = ANCHOR_BRACKET,
		.host_tsc_khz = tsc_khz,
	};
	return 0;
}
#else
int hostclock_bracket_anchor(uint32_t tsc_khz, struct host_anchor *ret)
{
	return -EOPNOTSUPP;
}
#endif

int hostclock_anchor_from_kvmclock(const struct kvmclock_state *clock, int32_t tai_offset_s,
				   uint32_t tsc_khz, struct host_anchor *ret)
{
	const uint32_t need = KVM_CLOCK_HOST_TSC | KVM_CLOCK_REALTIME;
	uint64_t offset_ns, tai_ns;

	if (!clock || !ret)
		return -EINVAL;
	/* Without both flags the kernel left realtime/host_tsc unset (it sets
	 * them only while KVM's master clock is in use, arch/x86/kvm/x86.c:
	 * __get_kvmclock). */
	if ((clock->flags & need) != need)
		return -EINVAL;

	/* TAI = REALTIME + TAI offset (adjtimex(2), the "tai" field). The
	 * offset is a separate reading: a leap second between it and
	 * KVM_GET_CLOCK would skew this by 1 s, so callers read the offset
	 * before and after and retry if it changed. */
	if (tai_offset_s >= 0) {
		offset_ns = (uint64_t)tai_offset_s * NSEC_PER_SEC;
		if (clock->realtime_ns > UINT64_MAX - offset_ns)
			return -ERANGE;
		tai_ns = clock->realtime_ns + offset_ns;
	} else {
		/* -(int64_t) of INT32_MIN is fine in 64 bits. */
		offset_ns = (uint64_t)(-(int64_t)tai_offset_s) * NSEC_PER_SEC;
		if (clock->realtime_ns < offset_ns)
			return -ERANGE;
		tai_ns = clock->realtime_ns - offset_ns;
	}

	*ret = (struct host_anchor){
		.tai_ns = tai_ns,
		.host_tsc = clock->host_tsc,
		.width_ns = 0,
		.source = ANCHOR_KVM_CLOCK,
		.host_tsc_khz = tsc_khz,
	};
	return 0;
}

/* Some kernels (not mainline as of 6.x) export the kernel's tsc_khz here. */
static int tsc_khz_from_sysfs(uint32_t *ret_khz)
{
	_cleanup_close_ int fd = -1;
	char buf[32];
	unsigned long long khz;
	ssize_t n;
	char *end;

	fd = open(TSC_FREQ_SYSFS, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	buf[n] = '\0';

	errno = 0;
	khz = strtoull(buf, &end, 10);
	if (errno != 0 || end == buf || (*end != '\0' && *end != '\n'))
		return -EINVAL;
	if (khz == 0 || khz > UINT32_MAX)
		return -ERANGE;
	*ret_khz = (uint32_t)khz;
	return 0;
}

#if defined(__x86_64__)
/* Narrowest of a few (rdtsc; CLOCK_MONOTONIC_RAW; rdtsc): the pairing
 * jitter at each end is what limits a short measurement's precision. */
static int tsc_raw_pair(uint64_t *ret_tsc, uint64_t *ret_raw_ns)
{
	uint64_t best_cycles = UINT64_MAX;

	for (int i = 0; i < HOSTCLOCK_BRACKET_TRIES; i++) {
		struct timespec raw;
		uint64_t before, after;

		before = rdtsc_fenced();
		if (clock_gettime(CLOCK_MONOTONIC_RAW, &raw) < 0)
			return -errno;
		after = rdtsc_fenced();
		if (after < before || after - before >= best_cycles)
			continue;
		best_cycles = after - before;
		*ret_tsc = before + best_cycles / 2;
		*ret_raw_ns = timespec_to_ns(&raw);
	}
	return best_cycles == UINT64_MAX ? -EIO : 0;
}

/* CLOCK_MONOTONIC_RAW runs at the kernel's calibrated rate of its
 * clocksource without NTP slewing; when that clocksource is the TSC it is the
 * kernel's own tsc_khz ("tsc: Refined TSC clocksource calibration"). Over
 * 20 ms with bracket jitter of some tens of ns the result is within a few
 * ppm of it. */
static int tsc_khz_measure(uint32_t *ret_khz)
{
	const struct timespec pause = { .tv_nsec = (long)TSC_MEASURE_NS };
	uint64_t tsc0 = 0, tsc1 = 0, raw0 = 0, raw1 = 0;
	hostclock_u128 khz;
	int r;

	r = tsc_raw_pair(&tsc0, &raw0);
	if (r < 0)
		return r;
	/* A signal cutting the sleep short only shortens the interval. */
	(void)nanosleep(&pause, NULL);
	r = tsc_raw_pair(&tsc1, &raw1);
	if (r < 0)
		return r;
	if (raw1 <= raw0 || tsc1 <= tsc0)
		return -EIO;

	/* kHz = cycles / ms, rounded to nearest. */
	khz = ((hostclock_u128)(tsc1 - tsc0) * NSEC_PER_MSEC + (raw1 - raw0) / 2) / (raw1 - raw0);
	if (khz == 0 || khz > UINT32_MAX)
		return -ERANGE;
	*ret_khz = (uint32_t)khz;
	return 0;
}
#else
static int tsc_khz_measure(uint32_t *ret_khz)
{
	return -EOPNOTSUPP;
}
#endif

int hostclock_tsc_khz(uint32_t *ret_khz)
{
	uint32_t khz = 0;

	if (!ret_khz)
		return -EINVAL;
	if (tsc_khz_from_sysfs(&khz) < 0) {
		int r = tsc_khz_measure(&khz);

		if (r < 0)
			return r;
	}
	*ret_khz = khz;
	return 0;
}
