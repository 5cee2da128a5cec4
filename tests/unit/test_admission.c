/* test_admission.c - daemon/admission.c: the slots of connections not yet
 * authenticated, per source, with eviction and a deadline that shrinks. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "admission.h"

static const struct admission_limits lim = {
	.max_total = 64, .max_per_source = 8, .normal_ms = 10000, .pressed_ms = 1000
};

static void test_per_source_limit_comes_before_the_total(void **state)
{
	assert_int_equal(admission_judge(&lim, 0, 0), ADMISSION_ADMIT);
	assert_int_equal(admission_judge(&lim, 63, 7), ADMISSION_ADMIT);
	assert_int_equal(admission_judge(&lim, 10, 8), ADMISSION_REFUSE_SOURCE);
	/* Full: a source under its share makes room by evicting the oldest;
	 * one at its share is refused, and evicts nobody. */
	assert_int_equal(admission_judge(&lim, 64, 0), ADMISSION_EVICT_OLDEST);
	assert_int_equal(admission_judge(&lim, 64, 8), ADMISSION_REFUSE_SOURCE);
	assert_int_equal(admission_judge(&lim, 1000, 3), ADMISSION_EVICT_OLDEST);
}

static void test_deadline_shrinks_from_half_full_to_full(void **state)
{
	assert_int_equal(admission_deadline_ms(&lim, 0), 10000);
	assert_int_equal(admission_deadline_ms(&lim, 32), 10000);
	assert_int_equal(admission_deadline_ms(&lim, 48), 5500);
	assert_int_equal(admission_deadline_ms(&lim, 64), 1000);
	assert_int_equal(admission_deadline_ms(&lim, 500), 1000);
	for (unsigned n = 33; n < 64; n++) {
		assert_true(admission_deadline_ms(&lim, n) < admission_deadline_ms(&lim, n - 1));
		assert_true(admission_deadline_ms(&lim, n) > 1000);
	}
}

static void test_deadline_without_pressure_setting_stays_normal(void **state)
{
	const struct admission_limits flat = {
		.max_total = 1, .max_per_source = 1, .normal_ms = 5000, .pressed_ms = 5000
	};

	assert_int_equal(admission_deadline_ms(&flat, 0), 5000);
	assert_int_equal(admission_deadline_ms(&flat, 1), 5000);
}

static void test_source_is_the_address_without_port(void **state)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(7420) };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(1) };
	char s[ADMISSION_SOURCE_MAX];

	inet_pton(AF_INET, "192.0.2.7", &in.sin_addr);
	admission_source((struct sockaddr *)&in, sizeof(in), s);
	assert_string_equal(s, "192.0.2.7");
	/* The same host over an IPv6 socket is the same source. */
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6.sin6_addr);
	admission_source((struct sockaddr *)&in6, sizeof(in6), s);
	assert_string_equal(s, "192.0.2.7");
	inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
	admission_source((struct sockaddr *)&in6, sizeof(in6), s);
	assert_string_equal(s, "2001:db8::1");
	/* Short or foreign addresses are "?". */
	admission_source((struct sockaddr *)&in, 4, s);
	assert_string_equal(s, "?");
	admission_source(NULL, 0, s);
	assert_string_equal(s, "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_per_source_limit_comes_before_the_total),
		cmocka_unit_test(test_deadline_shrinks_from_half_full_to_full),
		cmocka_unit_test(test_deadline_without_pressure_setting_stays_normal),
		cmocka_unit_test(test_source_is_the_address_without_port),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
