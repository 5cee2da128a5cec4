/* test_ratelimit.c - daemon/ratelimit.c: bursts, intervals, and the count
 * of what was held back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "macro.h"
#include "ratelimit.h"

#define SEC NSEC_PER_SEC

static void test_burst_passes_then_holds_back_and_counts(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(5 * SEC, 3);
	uint64_t suppressed = 99;

	for (int i = 0; i < 3; i++) {
		assert_true(ratelimit_pass(&rl, 100 * SEC + (uint64_t)i, &suppressed));
		assert_int_equal(suppressed, 0);
	}
	for (int i = 0; i < 1000; i++) {
		assert_false(ratelimit_pass(&rl, 101 * SEC, &suppressed));
		assert_int_equal(suppressed, 0);
	}
	/* Still inside the interval at its last nanosecond. */
	assert_false(ratelimit_pass(&rl, 105 * SEC - 1, &suppressed));
	/* The next interval's first event says how many were held back. */
	assert_true(ratelimit_pass(&rl, 105 * SEC, &suppressed));
	assert_int_equal(suppressed, 1001);
	assert_true(ratelimit_pass(&rl, 105 * SEC + 1, &suppressed));
	assert_int_equal(suppressed, 0);
}

static void test_quiet_spell_starts_a_fresh_interval(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(SEC, 1);
	uint64_t suppressed;

	assert_true(ratelimit_pass(&rl, 10 * SEC, &suppressed));
	assert_false(ratelimit_pass(&rl, 10 * SEC + 5, &suppressed));
	assert_true(ratelimit_pass(&rl, 60 * SEC, &suppressed));
	assert_int_equal(suppressed, 1);
	assert_false(ratelimit_pass(&rl, 60 * SEC + 1, NULL));
}

static void test_clock_going_back_starts_an_interval(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(SEC, 1);
	uint64_t suppressed;

	assert_true(ratelimit_pass(&rl, 10 * SEC, &suppressed));
	assert_false(ratelimit_pass(&rl, 10 * SEC, &suppressed));
	assert_true(ratelimit_pass(&rl, 5 * SEC, &suppressed));
	assert_int_equal(suppressed, 1);
}

static void test_time_zero_is_an_instant_like_any(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(SEC, 2);

	assert_true(ratelimit_pass(&rl, 0, NULL));
	assert_true(ratelimit_pass(&rl, 0, NULL));
	assert_false(ratelimit_pass(&rl, 0, NULL));
}

static void test_zero_interval_or_burst_lets_all_through(void **state)
{
	struct ratelimit none = RATELIMIT_INIT(0, 3), no_burst = RATELIMIT_INIT(SEC, 0);

	for (int i = 0; i < 100; i++) {
		assert_true(ratelimit_pass(&none, SEC, NULL));
		assert_true(ratelimit_pass(&no_burst, SEC, NULL));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_passes_then_holds_back_and_counts),
		cmocka_unit_test(test_quiet_spell_starts_a_fresh_interval),
		cmocka_unit_test(test_clock_going_back_starts_an_interval),
		cmocka_unit_test(test_time_zero_is_an_instant_like_any),
		cmocka_unit_test(test_zero_interval_or_burst_lets_all_through),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
