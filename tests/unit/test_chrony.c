/* test_chrony.c - chronyd's tracking request and reply (daemon/chrony.c): the
 * bytes of the request, every refusal of a reply, chrony's network float and
 * the clock-error bound. The real chronyd answers it in the two-host rig
 * (vm_two_host_chrony). */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chrony.h"

/* Network byte order through the C library, not chrony.c's own helpers. */
static void put_u16(uint8_t *p, uint16_t v)
{
	uint16_t n = htons(v);

	memcpy(p, &n, sizeof(n));
}

static void put_u32(uint8_t *p, uint32_t v)
{
	uint32_t n = htonl(v);

	memcpy(p, &n, sizeof(n));
}

/* chrony's float for v: coefficient * 2^(exponent - 25), the exponent chosen
 * so the 25-bit signed coefficient holds v's top bits (chrony util.c does the
 * same; written here from the format, to check the decoder against). */
static uint32_t float_encode(double v)
{
	int exp = 0;
	double c;

	if (v == 0)
		return 0;
	frexp(v, &exp); /* |v| = m * 2^exp, 0.5 <= m < 1 */
	c = ldexp(v, 24 - exp);
	exp += 1; /* coefficient 2^23 .. 2^24 - 1: value = c * 2^(exp - 25) */
	return (uint32_t)(exp & 0x7f) << 25 | ((uint32_t)(int32_t)llround(c) & 0x1ffffff);
}

/* A success reply to seq: leap 0, stratum 3, then the nine floats. */
static void make_reply(uint8_t buf[CHRONY_TRACKING_LEN], uint32_t seq, const double f[9])
{
	memset(buf, 0, CHRONY_TRACKING_LEN);
	buf[0] = 6;
	buf[1] = 2;
	put_u16(buf + 4, 33);
	put_u16(buf + 6, 5);
	put_u32(buf + 16, seq);
	put_u32(buf + 28, 0x0a000201); /* ref_id 10.0.2.1 */
	put_u16(buf + 28 + 24, 3);     /* stratum */
	put_u16(buf + 28 + 26, 0);     /* leap */
	for (int i = 0; i < 9; i++)
		put_u32(buf + 68 + 4 * i, float_encode(f[i]));
}

static const double sample[9] = {
	-0.000123, 0.0000042, 0.0000031, -12.5, 0.001, 0.05, 0.0016, 0.00025, 1.0,
};

static void test_request_is_a_padded_tracking_request(void **state)
{
	uint8_t buf[CHRONY_TRACKING_LEN], want[CHRONY_TRACKING_LEN] = { 0 };

	(void)state;
	memset(buf, 0xa5, sizeof(buf));
	chrony_tracking_request(0x01020304, buf);
	want[0] = 6;	       /* PROTO_VERSION_NUMBER */
	want[1] = 1;	       /* PKT_TYPE_CMD_REQUEST */
	put_u16(want + 4, 33); /* REQ_TRACKING */
	put_u32(want + 8, 0x01020304);
	/* Padded with zeros to the reply's length: chronyd drops other lengths. */
	assert_memory_equal(buf, want, sizeof(buf));
}

static void test_float_decodes_chronys_format(void **state)
{
	(void)state;
	assert_true(chrony_float_decode(0) == 0.0);
	assert_true(chrony_float_decode(0x02800000) == 0.5);		    /* 2^23 * 2^(1-25) */
	assert_true(chrony_float_decode(0x01000000) == -0.5);		    /* coefficient -2^24 */
	assert_true(chrony_float_decode(118u << 25 | 1u << 23) == 0x1p-12); /* exponent -10 */
	assert_true(chrony_float_decode(0x01ffffff) == -0x1p-25);	    /* coefficient -1 */
	for (int i = 0; i < 9; i++) {
		double got = chrony_float_decode(float_encode(sample[i]));

		/* 24 bits of mantissa. */
		assert_true(fabs(got - sample[i]) <= fabs(sample[i]) * 0x1p-23);
	}
}

static void test_reply_is_parsed(void **state)
{
	uint8_t buf[CHRONY_TRACKING_LEN];
	struct chrony_tracking t;

	(void)state;
	make_reply(buf, 77, sample);
	assert_int_equal(chrony_tracking_parse(buf, sizeof(buf), 77, &t), 0);
	assert_int_equal(t.ref_id, 0x0a000201);
	assert_int_equal(t.stratum, 3);
	assert_int_equal(t.leap_status, CHRONY_LEAP_NORMAL);
	assert_true(fabs(t.current_correction - sample[0]) < 1e-10);
	assert_true(fabs(t.freq_ppm - sample[3]) < 1e-5);
	assert_true(fabs(t.skew_ppm - sample[5]) < 1e-8);
	assert_true(fabs(t.root_delay - sample[6]) < 1e-10);
	assert_true(fabs(t.root_dispersion - sample[7]) < 1e-10);
	assert_true(fabs(t.last_update_interval - 1.0) < 1e-7);
}

static void test_reply_refusals(void **state)
{
	static const struct {
		const char *name;
		size_t at;
		uint8_t value;
		size_t len;
		int rc;
	} cases[] = {
		{ "truncated header", 0, 6, 27, -EBADMSG },
		{ "truncated data", 0, 6, CHRONY_TRACKING_LEN - 1, -EBADMSG },
		{ "protocol 5", 0, 5, CHRONY_TRACKING_LEN, -EBADMSG },
		{ "a request", 1, 1, CHRONY_TRACKING_LEN, -EBADMSG },
		{ "another command", 5, 34, CHRONY_TRACKING_LEN, -EBADMSG },
		{ "another reply format", 7, 6, CHRONY_TRACKING_LEN, -EBADMSG },
		{ "another sequence", 19, 78, CHRONY_TRACKING_LEN, -ESRCH },
		{ "unauthorised", 9, 2, CHRONY_TRACKING_LEN, -EACCES },
		{ "failed", 9, 1, CHRONY_TRACKING_LEN, -EPROTO },
	};
	uint8_t buf[CHRONY_TRACKING_LEN];
	struct chrony_tracking t, untouched;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("case: %s\n", cases[i].name);
		make_reply(buf, 77, sample);
		buf[cases[i].at] = cases[i].value;
		memset(&t, 0x5a, sizeof(t));
		untouched = t;
		assert_int_equal(chrony_tracking_parse(buf, cases[i].len, 77, &t), cases[i].rc);
		assert_memory_equal(&t, &untouched, sizeof(t));
	}
	/* A failure status comes without data: known by its header alone. */
	make_reply(buf, 77, sample);
	put_u16(buf + 8, 2);
	assert_int_equal(chrony_tracking_parse(buf, 28, 77, &t), -EACCES);
}

/* chronyc(1): clock_error <= |system_time_offset| + root_dispersion + root_delay / 2. */
static void test_bound_is_chronys_own(void **state)
{
	struct chrony_tracking t = {
		.current_correction = -0.000123,
		.root_delay = 0.0016,
		.root_dispersion = 0.00025,
	};
	bool unsynced = true;

	(void)state;
	/* 123 us + 250 us + 800 us, rounded up to whole ns */
	assert_true(chrony_tracking_bound_ns(&t, &unsynced) == 1173000 ||
		    chrony_tracking_bound_ns(&t, &unsynced) == 1173001);
	assert_false(unsynced);
	t.leap_status = CHRONY_LEAP_UNSYNCHRONISED;
	assert_true(chrony_tracking_bound_ns(&t, &unsynced) == UINT64_MAX);
	assert_true(unsynced);
	t.leap_status = CHRONY_LEAP_INSERT;
	t.root_dispersion = -1;
	assert_true(chrony_tracking_bound_ns(&t, &unsynced) == UINT64_MAX && unsynced);
	t.root_dispersion = NAN;
	assert_true(chrony_tracking_bound_ns(&t, &unsynced) == UINT64_MAX && unsynced);
	t.root_dispersion = 1e12; /* 31,000 years */
	assert_true(chrony_tracking_bound_ns(&t, &unsynced) == UINT64_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_is_a_padded_tracking_request),
		cmocka_unit_test(test_float_decodes_chronys_format),
		cmocka_unit_test(test_reply_is_parsed),
		cmocka_unit_test(test_reply_refusals),
		cmocka_unit_test(test_bound_is_chronys_own),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
