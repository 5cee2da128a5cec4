/* test_hostclock.c - host clock readings against direct adjtimex(2) and
 * clock_gettime(2) calls, and the pure kvmclock-to-anchor conversion. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/timex.h>
#include <time.h>

#include <cmocka.h>

#include "clockns.h"
#include "hostclock.h"
#include "macro.h"

#define KVM_CLOCK_REALTIME_FLAG (1u << 2) /* include/uapi/linux/kvm.h */
#define KVM_CLOCK_HOST_TSC_FLAG (1u << 3)

static bool timex_equal(const struct timex *a, int ra, const struct timex *b, int rb)
{
	return ra == rb && a->status == b->status && a->maxerror == b->maxerror &&
	       a->esterror == b->esterror && a->tai == b->tai;
}

/* maxerror grows once a second (kernel/time/ntp.c: second_overflow), so a
 * reading taken between two identical direct readings must equal them. */
static void test_sync_error_matches_direct_adjtimex(void **state)
{
	for (int attempt = 0; attempt < 100; attempt++) {
		struct timex before = { .modes = 0 }, after = { .modes = 0 };
		struct sync_error se;
		int rb, ra;

		rb = adjtimex(&before);
		assert_true(rb >= 0);
		assert_int_equal(hostclock_sync_error(&se), 0);
		ra = adjtimex(&after);
		assert_true(ra >= 0);
		if (!timex_equal(&before, rb, &after, ra))
			continue;

		assert_true(before.maxerror >= 0 && before.esterror >= 0);
		assert_int_equal(se.maxerror_ns, (uint64_t)before.maxerror * 1000);
		assert_int_equal(se.esterror_ns, (uint64_t)before.esterror * 1000);
		assert_int_equal(se.tai_offset_s, before.tai);
		assert_int_equal(se.unsynced, (before.status & STA_UNSYNC) || rb == TIME_ERROR);
		print_message(
			"adjtimex: state %d status %#x maxerror %ld us esterror %ld us tai %d\n",
			rb, before.status, before.maxerror, before.esterror, before.tai);
		return;
	}
	fail_msg("adjtimex readings changed in each of 100 attempts");
}

static void test_sync_error_rejects_null(void **state)
{
	assert_int_equal(hostclock_sync_error(NULL), -EINVAL);
}

#if defined(__x86_64__)
static uint32_t host_khz(void)
{
	uint32_t khz = 0;

	assert_int_equal(hostclock_tsc_khz(&khz), 0);
	return khz;
}

static void check_bracket(uint32_t tsc_khz)
{
	struct host_anchor a;
	uint64_t tai_before, tai_after, tsc_before, tsc_after;

	tai_before = clock_ns(CLOCK_TAI);
	tsc_before = hostclock_rdtsc();
	assert_int_equal(hostclock_bracket_anchor(tsc_khz, &a), 0);
	tsc_after = hostclock_rdtsc();
	tai_after = clock_ns(CLOCK_TAI);

	assert_int_equal(a.source, ANCHOR_BRACKET);
	assert_int_equal(a.host_tsc_khz, tsc_khz);
	assert_in_range(a.tai_ns, tai_before, tai_after);
	assert_in_range(a.host_tsc, tsc_before, tsc_after);
	/* A clock_gettime through the vDSO takes tens of ns; 1 ms leaves room
	 * for valgrind and a preempted try (the narrowest of 16 wins). */
	assert_true(a.width_ns > 0);
	assert_true(a.width_ns < NSEC_PER_MSEC);
}

static void test_bracket_anchor_lies_between_direct_readings(void **state)
{
	check_bracket(host_khz());
}

static void test_bracket_anchor_without_tsc_khz_uses_monotonic_width(void **state)
{
	check_bracket(0);
}

static void test_bracket_anchor_is_monotonic(void **state)
{
	uint32_t khz = host_khz();
	struct host_anchor a, b;

	assert_int_equal(hostclock_bracket_anchor(khz, &a), 0);
	assert_int_equal(hostclock_bracket_anchor(khz, &b), 0);
	assert_true(b.tai_ns >= a.tai_ns);
	assert_true(b.host_tsc > a.host_tsc);
}

static void test_rdtsc_advances(void **state)
{
	uint64_t t0 = hostclock_rdtsc();
	uint64_t t1 = hostclock_rdtsc();

	assert_true(t1 > t0);
}

/* 100 MHz .. 10 GHz, and agrees with a 200 ms measurement against
 * CLOCK_MONOTONIC_RAW to 0.1% (so the unit is kHz and the rate is the TSC's). */
static void test_tsc_khz_is_plausible_and_matches_slow_measurement(void **state)
{
	uint32_t khz = host_khz();
	struct timespec pause = { .tv_nsec = 200 * 1000 * 1000 };
	uint64_t raw0, raw1, tsc0, tsc1, slow_khz;

	assert_in_range(khz, 100 * 1000, 10 * 1000 * 1000);

	raw0 = clock_ns(CLOCK_MONOTONIC_RAW);
	tsc0 = hostclock_rdtsc();
	while (nanosleep(&pause, &pause) < 0 && errno == EINTR)
		;
	raw1 = clock_ns(CLOCK_MONOTONIC_RAW);
	tsc1 = hostclock_rdtsc();
	slow_khz = (tsc1 - tsc0) * NSEC_PER_MSEC / (raw1 - raw0);
	print_message("tsc_khz %u, 200 ms measurement %lu\n", khz, (unsigned long)slow_khz);
	assert_in_range(slow_khz, khz - khz / 1000, khz + khz / 1000);
}
#else
static void test_bracket_anchor_lies_between_direct_readings(void **state)
{
	struct host_anchor a;

	assert_int_equal(hostclock_bracket_anchor(0, &a), -EOPNOTSUPP);
}
#endif

static const struct kvmclock_state good_clock = {
	.clock_ns = 5000,
	.flags = KVM_CLOCK_REALTIME_FLAG | KVM_CLOCK_HOST_TSC_FLAG | 2 /* TSC_STABLE */,
	.realtime_ns = UINT64_C(1700000000123456789),
	.host_tsc = UINT64_C(987654321012),
};

static void test_anchor_from_kvmclock_adds_tai_offset(void **state)
{
	struct host_anchor a;

	assert_int_equal(hostclock_anchor_from_kvmclock(&good_clock, 37, 2500000, &a), 0);
	assert_int_equal(a.tai_ns, UINT64_C(1700000037123456789));
	assert_int_equal(a.host_tsc, UINT64_C(987654321012));
	assert_int_equal(a.width_ns, 0);
	assert_int_equal(a.source, ANCHOR_KVM_CLOCK);
	assert_int_equal(a.host_tsc_khz, 2500000);

	assert_int_equal(hostclock_anchor_from_kvmclock(&good_clock, 0, 0, &a), 0);
	assert_int_equal(a.tai_ns, good_clock.realtime_ns);
}

static void test_anchor_from_kvmclock_handles_negative_tai_offset(void **state)
{
	struct kvmclock_state c = good_clock;
	struct host_anchor a;

	assert_int_equal(hostclock_anchor_from_kvmclock(&c, -3, 1, &a), 0);
	assert_int_equal(a.tai_ns, UINT64_C(1699999997123456789));

	/* INT32_MIN cannot be negated in 32 bits. */
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, INT32_MIN, 1, &a), -ERANGE);
	c.realtime_ns = UINT64_C(3000000000) * NSEC_PER_SEC;
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, INT32_MIN, 1, &a), 0);
	assert_int_equal(a.tai_ns, UINT64_C(852516352) * NSEC_PER_SEC);

	/* Before 0 ns TAI: not representable, and a is left untouched. */
	c.realtime_ns = 2 * NSEC_PER_SEC;
	a.tai_ns = 42;
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, -3, 1, &a), -ERANGE);
	assert_int_equal(a.tai_ns, 42);
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, -2, 1, &a), 0);
	assert_int_equal(a.tai_ns, 0);
}

static void test_anchor_from_kvmclock_rejects_overflow(void **state)
{
	struct kvmclock_state c = good_clock;
	struct host_anchor a;

	c.realtime_ns = UINT64_MAX - NSEC_PER_SEC + 1;
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, 1, 1, &a), -ERANGE);
	c.realtime_ns = UINT64_MAX - NSEC_PER_SEC;
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, 1, 1, &a), 0);
	assert_int_equal(a.tai_ns, UINT64_MAX);
}

static void test_anchor_from_kvmclock_requires_both_flags(void **state)
{
	struct kvmclock_state c = good_clock;
	struct host_anchor a = { .tai_ns = 42 };

	c.flags = KVM_CLOCK_REALTIME_FLAG;
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, 0, 1, &a), -EINVAL);
	c.flags = KVM_CLOCK_HOST_TSC_FLAG;
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, 0, 1, &a), -EINVAL);
	c.flags = 0;
	assert_int_equal(hostclock_anchor_from_kvmclock(&c, 0, 1, &a), -EINVAL);
	assert_int_equal(a.tai_ns, 42);
	assert_int_equal(hostclock_anchor_from_kvmclock(NULL, 0, 1, &a), -EINVAL);
	assert_int_equal(hostclock_anchor_from_kvmclock(&good_clock, 0, 1, NULL), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sync_error_matches_direct_adjtimex),
		cmocka_unit_test(test_sync_error_rejects_null),
		cmocka_unit_test(test_bracket_anchor_lies_between_direct_readings),
#if defined(__x86_64__)
		cmocka_unit_test(test_bracket_anchor_without_tsc_khz_uses_monotonic_width),
		cmocka_unit_test(test_bracket_anchor_is_monotonic),
		cmocka_unit_test(test_rdtsc_advances),
		cmocka_unit_test(test_tsc_khz_is_plausible_and_matches_slow_measurement),
#endif
		cmocka_unit_test(test_anchor_from_kvmclock_adds_tai_offset),
		cmocka_unit_test(test_anchor_from_kvmclock_handles_negative_tai_offset),
		cmocka_unit_test(test_anchor_from_kvmclock_rejects_overflow),
		cmocka_unit_test(test_anchor_from_kvmclock_requires_both_flags),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
