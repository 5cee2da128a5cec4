/* test_counter_math.c - unit tests of the by-offset handoff arithmetic, checked
 * against Python big-integer vectors and a second, 32-bit-limb implementation. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "counter_math.h"
#include "macro.h"

#if HAVE_KVM_CLOCK_REALTIME
#include <linux/kvm.h>
#endif

#define KVM_CLOCK_REALTIME_BIT (UINT32_C(1) << 2) /* include/uapi/linux/kvm.h */

#define TAI_2024_NS UINT64_C(1717171754000000000)

#define check_u64(what, got, want)                                                            \
	do {                                                                                  \
		uint64_t got_ = (got), want_ = (want);                                        \
		if (got_ != want_) {                                                          \
			print_error("%s: %s = %" PRIu64 ", want %" PRIu64 "\n", (what), #got, \
				    got_, want_);                                             \
			fail();                                                               \
		}                                                                             \
	} while (0)

#define check_s64(what, got, want)                                                            \
	do {                                                                                  \
		int64_t got_ = (got), want_ = (want);                                         \
		if (got_ != want_) {                                                          \
			print_error("%s: %s = %" PRId64 ", want %" PRId64 "\n", (what), #got, \
				    got_, want_);                                             \
			fail();                                                               \
		}                                                                             \
	} while (0)

/* ---- Second implementation: 32-bit limbs, no __int128 ------------------- */

/* a * b as four little-endian 32-bit limbs, schoolbook. */
static void ref_mul_64x64(uint64_t a, uint64_t b, uint32_t ret_limbs[4])
{
	const uint32_t x[2] = { (uint32_t)a, (uint32_t)(a >> 32) };
	const uint32_t y[2] = { (uint32_t)b, (uint32_t)(b >> 32) };

	memset(ret_limbs, 0, 4 * sizeof(uint32_t));
	for (int i = 0; i < 2; i++) {
		uint64_t carry = 0;

		for (int j = 0; j < 2; j++) {
			uint64_t t = (uint64_t)x[i] * y[j] + ret_limbs[i + j] + carry;

			ret_limbs[i + j] = (uint32_t)t;
			carry = t >> 32;
		}
		ret_limbs[i + 2] = (uint32_t)carry;
	}
}

/* Bit by bit: bit k of the result is bit k + frac_bits of the product. */
static uint64_t ref_scale_tsc(uint64_t tsc, uint64_t ratio, uint32_t frac_bits)
{
	uint32_t p[4];
	uint64_t r = 0;

	if (ratio == 0)
		return tsc;
	ref_mul_64x64(tsc, ratio, p);
	for (uint32_t k = 0; k < 64; k++) {
		uint64_t b = (uint64_t)k + frac_bits;

		if (b < 128 && ((p[b / 32] >> (b % 32)) & 1))
			r |= UINT64_C(1) << k;
	}
	return r;
}

/* |ns| * khz in three limbs, long division by 10^6 one limb at a time, then
 * round half away from zero by comparing twice the remainder. */
static int ref_ns_to_cycles(int64_t ns, uint32_t khz, int64_t *ret_cycles)
{
	uint64_t mag = ns < 0 ? UINT64_C(0) - (uint64_t)ns : (uint64_t)ns;
	const uint32_t m[2] = { (uint32_t)mag, (uint32_t)(mag >> 32) };
	uint32_t p[3], q[3];
	uint64_t carry = 0, rem = 0, value;

	for (int i = 0; i < 2; i++) {
		uint64_t t = (uint64_t)m[i] * khz + carry;

		p[i] = (uint32_t)t;
		carry = t >> 32;
	}
	p[2] = (uint32_t)carry;
	for (int i = 2; i >= 0; i--) {
		uint64_t cur = (rem << 32) | p[i];

		q[i] = (uint32_t)(cur / 1000000);
		rem = cur % 1000000;
	}
	if (q[2] != 0)
		return -ERANGE;
	value = ((uint64_t)q[1] << 32) | q[0];
	if (2 * rem >= 1000000) {
		if (value == UINT64_MAX)
			return -ERANGE;
		value++;
	}
	if (ns >= 0) {
		if (value > (uint64_t)INT64_MAX)
			return -ERANGE;
		*ret_cycles = (int64_t)value;
	} else {
		if (value > (uint64_t)INT64_MAX + 1)
			return -ERANGE;
		*ret_cycles = value == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)value;
	}
	return 0;
}

/* ---- Seeded generator (splitmix64), as chrony's tests use a fixed seed --- */

static uint64_t rng_state;

static void rng_seed(void)
{
	const char *s = getenv("VC_TEST_SEED");

	rng_state = s ? strtoull(s, NULL, 0) : UINT64_C(0x7c0ffee5eed);
	print_message("seed %#" PRIx64 " (set VC_TEST_SEED to change)\n", rng_state);
}

static uint64_t rng_u64(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t n)
{
	return rng_u64() % n;
}

/* A value of a random bit length, so that small and huge values both occur. */
static uint64_t rng_bits(void)
{
	unsigned bits = (unsigned)rng_below(65);

	return bits == 0 ? 0 : rng_u64() >> (64 - bits);
}

static int64_t rng_s64_bits(void)
{
	uint64_t v = rng_bits();

	if (rng_below(2))
		v = UINT64_C(0) - v;
	return (int64_t)v; /* two's complement on every compiler we build with */
}

static const uint32_t realistic_khz[] = { 2445406, 3000000, 3999999, 1000000, 2100000 };

static uint32_t rng_khz(void)
{
	switch (rng_below(3)) {
	case 0:
		return realistic_khz[rng_below(ELEMENTSOF(realistic_khz))];
	case 1:
		return 1 + (uint32_t)rng_below(UINT32_MAX);
	default:
		return 1000000 + (uint32_t)rng_below(4000000);
	}
}

/* A TSC scaling ratio as KVM would hold it (around 1.0 in frac_bits fixed
 * point), or 0, or anything. */
static uint64_t rng_ratio(uint32_t frac_bits)
{
	uint64_t one = UINT64_C(1) << frac_bits;

	switch (rng_below(4)) {
	case 0:
		return 0;
	case 1:
		return one;
	case 2: /* 0.25x .. 4.25x, where 4x fits */
		return frac_bits <= 61 ? one / 4 + rng_below(4 * one) : rng_u64();
	default:
		return rng_u64();
	}
}

static uint32_t rng_frac_bits(void)
{
	return rng_below(2) ? 48 : 32;
}

/* Host TSC after up to ~10 years at 4 GHz (< 2^61), or anywhere. */
static uint64_t rng_host_tsc(void)
{
	return rng_below(8) ? rng_u64() >> 3 : rng_u64();
}

/* ---- Fixtures ------------------------------------------------------------ */

/* make_pair's error bound: both maxerrors (1 ms, 2 ms) and anchor widths. */
#define MAKE_PAIR_BOUND_NS (UINT64_C(1000000) + 2000000 + 40 + 900)

static void make_pair(struct counter_state *src, struct counter_target *dst, uint32_t n_vcpus)
{
	memset(src, 0, sizeof(*src));
	memset(dst, 0, sizeof(*dst));

	src->backend = BACKEND_KVM_X86;
	src->arch = dst->arch = COUNTER_ARCH_X86_TSC;
	src->guest_tsc_khz = 3000000;
	src->n_vcpus = n_vcpus;
	src->anchor = (struct host_anchor){
		.tai_ns = TAI_2024_NS,
		.host_tsc = UINT64_C(283824000000000000), /* 3 years at 3 GHz */
		.width_ns = 40,
		.source = ANCHOR_KVM_CLOCK,
		.host_tsc_khz = 3000000,
	};
	src->sync = (struct sync_error){ .maxerror_ns = 1000000, .esterror_ns = 50000 };
	src->kvmclock = (struct kvmclock_state){
		.clock_ns = UINT64_C(86400000000000),
		.flags = 0x7, /* TSC_STABLE | REALTIME | HOST_TSC, as KVM_GET_CLOCK gives */
		.realtime_ns = TAI_2024_NS, /* the anchor's instant; TAI offsets 0 */
		.host_tsc = UINT64_C(283824000000000000),
	};

	dst->guest_tsc_khz = 3000000;
	dst->n_vcpus = n_vcpus;
	dst->anchor = (struct host_anchor){
		.tai_ns = TAI_2024_NS + UINT64_C(150000000),
		.host_tsc = UINT64_C(25920000000000000), /* 100 days at 3 GHz */
		.width_ns = 900,
		.source = ANCHOR_BRACKET,
		.host_tsc_khz = 3000000,
	};
	dst->sync = (struct sync_error){ .maxerror_ns = 2000000, .esterror_ns = 70000 };
}

/* Fails the test unless plan() returns rc and leaves *ret_plan untouched. */
static void expect_plan_refused(const struct counter_state *src, const struct counter_target *dst,
				const struct counter_policy *policy, int rc)
{
	static struct counter_plan plan, sentinel;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	memcpy(&plan, &sentinel, sizeof(plan));
	assert_int_equal(counter_math_plan(src, dst, policy, &plan), rc);
	assert_memory_equal(&plan, &sentinel, sizeof(plan));
}

/* ---- Vectors from gen_counter_math_vectors.py (Python big integers) ------ */

struct scale_vector {
	const char *name;
	uint64_t tsc, ratio;
	uint32_t frac_bits;
	uint64_t expected;
};

struct cycles_vector {
	const char *name;
	int64_t ns;
	uint32_t khz;
	int rc;
	int64_t expected;
};

struct plan_vector {
	const char *name;
	uint64_t src_tai, src_tsc, src_ratio;
	uint32_t src_frac;
	uint64_t dst_tai, dst_tsc, dst_ratio;
	uint32_t dst_frac;
	uint32_t khz;
	uint64_t ofs_src;
	int rc;
	int64_t elapsed_ns;
	uint64_t clamped_ns;
	uint64_t ofs_dst;
	int64_t delta_cycles;
};

/* Pasted verbatim from the generator, so left as it prints it. */
/* clang-format off */
/* BEGIN generated by tests/unit/gen_counter_math_vectors.py */
static const struct scale_vector scale_vectors[] = {
	{ "ratio 0 is identity",
	  UINT64_C(283824000000000000), UINT64_C(0), 48,
	  UINT64_C(283824000000000000) },
	{ "Intel ratio 1.0",
	  UINT64_C(283824000000000000), UINT64_C(281474976710656), 48,
	  UINT64_C(283824000000000000) },
	{ "Intel ratio 2.0",
	  UINT64_C(283824000000000000), UINT64_C(562949953421312), 48,
	  UINT64_C(567648000000000000) },
	{ "Intel ratio 3/4",
	  UINT64_C(34560000000000000), UINT64_C(211106232532992), 48,
	  UINT64_C(25920000000000000) },
	{ "Intel 2445406/3000000 truncates",
	  UINT64_C(299792458123456789), UINT64_C(229440198966032), 48,
	  UINT64_C(244371425283282455) },
	{ "AMD ratio 1.0",
	  UINT64_C(34560000000000000), UINT64_C(4294967296), 32,
	  UINT64_C(34560000000000000) },
	{ "AMD ratio 2.0",
	  UINT64_C(34560000000000000), UINT64_C(8589934592), 32,
	  UINT64_C(69120000000000000) },
	{ "AMD ratio 0.5 odd tsc",
	  UINT64_C(69120000000000001), UINT64_C(2147483648), 32,
	  UINT64_C(34560000000000000) },
	{ "product above 2^64 keeps low bits",
	  UINT64_C(18446744073709551615), UINT64_C(281474976710657), 48,
	  UINT64_C(65534) },
	{ "AMD 2x of max wraps",
	  UINT64_C(18446744073709551615), UINT64_C(8589934592), 32,
	  UINT64_C(18446744073709551614) },
	{ "frac 0 multiplies",
	  UINT64_C(81985529216486895), UINT64_C(3), 0,
	  UINT64_C(245956587649460685) },
	{ "frac 63",
	  UINT64_C(18446744073709551615), UINT64_C(18446744073709551615), 63,
	  UINT64_C(18446744073709551612) },
};

static const struct cycles_vector cycles_vectors[] = {
	{ "zero",
	  INT64_C(0), 3000000, 0, INT64_C(0) },
	{ "1 us at 3 GHz",
	  INT64_C(1000), 3000000, 0, INT64_C(3000) },
	{ "1 us at 2445406 kHz",
	  INT64_C(1000), 2445406, 0, INT64_C(2445) },
	{ "-1 us at 2445406 kHz",
	  INT64_C(-1000), 2445406, 0, INT64_C(-2445) },
	{ "1 ns at 3999999 kHz",
	  INT64_C(1), 3999999, 0, INT64_C(4) },
	{ "0.5 rounds to 1",
	  INT64_C(1000), 500, 0, INT64_C(1) },
	{ "-0.5 rounds to -1",
	  INT64_C(-1000), 500, 0, INT64_C(-1) },
	{ "1.5 rounds to 2",
	  INT64_C(3000), 500, 0, INT64_C(2) },
	{ "-1.5 rounds to -2",
	  INT64_C(-3000), 500, 0, INT64_C(-2) },
	{ "0.499 rounds to 0",
	  INT64_C(1000), 499, 0, INT64_C(0) },
	{ "-0.499 rounds to 0",
	  INT64_C(-1000), 499, 0, INT64_C(0) },
	{ "0.501 rounds to 1",
	  INT64_C(1000), 501, 0, INT64_C(1) },
	{ "2.4999995 rounds to 2",
	  INT64_C(1), 2499999, 0, INT64_C(2) },
	{ "half at 2445406 kHz",
	  INT64_C(250000), 2445406, 0, INT64_C(611352) },
	{ "negative half at 2445406 kHz",
	  INT64_C(-250000), 2445406, 0, INT64_C(-611352) },
	{ "half at 3999999 kHz",
	  INT64_C(500000), 3999999, 0, INT64_C(2000000) },
	{ "150 ms at 2445406 kHz",
	  INT64_C(150000000), 2445406, 0, INT64_C(366810900) },
	{ "3 days at 3999999 kHz",
	  INT64_C(259200000000000), 3999999, 0, INT64_C(1036799740800000) },
	{ "-3 days at 3999999 kHz",
	  INT64_C(-259200000000000), 3999999, 0, INT64_C(-1036799740800000) },
	{ "50 years at 4 GHz",
	  INT64_C(1576800000000000000), 4000000, 0, INT64_C(6307200000000000000) },
	{ "INT64_MAX at 1 GHz",
	  INT64_C(9223372036854775807), 1000000, 0, INT64_C(9223372036854775807) },
	{ "INT64_MIN at 1 GHz",
	  INT64_MIN, 1000000, 0, INT64_MIN },
	{ "INT64_MAX at 1000001 kHz overflows",
	  INT64_C(9223372036854775807), 1000001, -ERANGE, INT64_C(0) },
	{ "INT64_MIN at 1000001 kHz overflows",
	  INT64_MIN, 1000001, -ERANGE, INT64_C(0) },
	{ "INT64_MAX at 3 GHz overflows",
	  INT64_C(9223372036854775807), 3000000, -ERANGE, INT64_C(0) },
	{ "-100 years at 3999999 kHz overflows",
	  INT64_C(-3153600000000000000), 3999999, -ERANGE, INT64_C(0) },
	{ "max kHz, 1 s",
	  INT64_C(1000000000), 4294967295, 0, INT64_C(4294967295000) },
	{ "max kHz, INT64_MIN",
	  INT64_MIN, 4294967295, -ERANGE, INT64_C(0) },
	{ "largest ns at 3999999 kHz",
	  INT64_C(2305843585674590370), 3999999, 0, INT64_C(9223372036854775805) },
	{ "one ns more at 3999999 kHz overflows",
	  INT64_C(2305843585674590371), 3999999, -ERANGE, INT64_C(0) },
	{ "most negative ns at 3999999 kHz",
	  INT64_C(-2305843585674590370), 3999999, 0, INT64_C(-9223372036854775805) },
	{ "one ns less at 3999999 kHz overflows",
	  INT64_C(-2305843585674590371), 3999999, -ERANGE, INT64_C(0) },
};

static const struct plan_vector plan_vectors[] = {
	{ "3 GHz, 150 ms blackout, offset 0",
	  UINT64_C(1717171754000000000), UINT64_C(283824000000000000),
	  UINT64_C(0), 48,
	  UINT64_C(1717171754150000000), UINT64_C(25920000000000000),
	  UINT64_C(0), 48,
	  3000000, UINT64_C(0),
	  0, INT64_C(150000000), UINT64_C(0),
	  UINT64_C(257904000450000000), INT64_C(257904000450000000) },
	{ "guest booted after host: negative offset",
	  UINT64_C(1717171754000000000), UINT64_C(283824000000000000),
	  UINT64_C(0), 48,
	  UINT64_C(1717171754150000000), UINT64_C(25920000000000000),
	  UINT64_C(0), 48,
	  3000000, UINT64_C(18446484873709551616),
	  0, INT64_C(150000000), UINT64_C(0),
	  UINT64_C(257644800450000000), INT64_C(257904000450000000) },
	{ "target clock 2 ms behind: held, 2 ms clamped",
	  UINT64_C(1717171754000000000), UINT64_C(6338492352000000),
	  UINT64_C(0), 48,
	  UINT64_C(1717171753998000000), UINT64_C(6549775430400000),
	  UINT64_C(0), 48,
	  2445406, UINT64_C(12345),
	  0, INT64_C(0), UINT64_C(2000000),
	  UINT64_C(18446532790631163961), INT64_C(-211283078400000) },
	{ "offset near 0 wraps below 0",
	  UINT64_C(1717171754000000000), UINT64_C(1000),
	  UINT64_C(0), 48,
	  UINT64_C(1717171754000001000), UINT64_C(283824000000000000),
	  UINT64_C(0), 48,
	  3000000, UINT64_C(5),
	  0, INT64_C(1000), UINT64_C(0),
	  UINT64_C(18162920073709555621), INT64_C(-283823999999996000) },
	{ "offset near 2^64 wraps above",
	  UINT64_C(1717171754000000000), UINT64_C(283824000000000000),
	  UINT64_C(0), 48,
	  UINT64_C(1717430954000000000), UINT64_C(1000),
	  UINT64_C(0), 48,
	  3000000, UINT64_C(18446744073709551609),
	  0, INT64_C(259200000000000), UINT64_C(0),
	  UINT64_C(284601599999998993), INT64_C(284601599999999000) },
	{ "1 us elapsed at 3999999 kHz",
	  UINT64_C(1717171754000000000), UINT64_C(34560000000000000),
	  UINT64_C(0), 48,
	  UINT64_C(1717171754000001000), UINT64_C(34560001000000000),
	  UINT64_C(0), 48,
	  3999999, UINT64_C(42),
	  0, INT64_C(1000), UINT64_C(0),
	  UINT64_C(18446744072709555658), INT64_C(-999996000) },
	{ "Intel: 3 GHz host to 4 GHz host scaled 3/4",
	  UINT64_C(1717171754000000000), UINT64_C(283824000000000000),
	  UINT64_C(0), 48,
	  UINT64_C(1717171756000000000), UINT64_C(34560000000000000),
	  UINT64_C(211106232532992), 48,
	  3000000, UINT64_C(18446743073709551616),
	  0, INT64_C(2000000000), UINT64_C(0),
	  UINT64_C(257903006000000000), INT64_C(257904006000000000) },
	{ "AMD: 2x on both sides",
	  UINT64_C(1717171754000000000), UINT64_C(17280000000000000),
	  UINT64_C(8589934592), 32,
	  UINT64_C(1717258154000000000), UINT64_C(141912000000000000),
	  UINT64_C(8589934592), 32,
	  3999999, UINT64_C(999),
	  0, INT64_C(86400000000000), UINT64_C(0),
	  UINT64_C(18197825673623152615), INT64_C(-248918400086400000) },
	{ "Intel 2x source to AMD 1x target",
	  UINT64_C(1717171754000000000), UINT64_C(141912000000000000),
	  UINT64_C(562949953421312), 48,
	  UINT64_C(1717171754333333333), UINT64_C(283824000000000007),
	  UINT64_C(4294967296), 32,
	  3000000, UINT64_C(9223372036854775808),
	  0, INT64_C(333333333), UINT64_C(0),
	  UINT64_C(9223372037854775800), INT64_C(999999992) },
	{ "elapsed beyond int64",
	  UINT64_C(0), UINT64_C(1),
	  UINT64_C(0), 48,
	  UINT64_C(9223372036854775808), UINT64_C(1),
	  UINT64_C(0), 48,
	  3000000, UINT64_C(0),
	  -ERANGE, INT64_C(0), UINT64_C(0),
	  UINT64_C(0), INT64_C(0) },
	{ "elapsed cycles beyond int64",
	  UINT64_C(1717171754000000000), UINT64_C(1),
	  UINT64_C(0), 48,
	  UINT64_C(4717171754000000000), UINT64_C(1),
	  UINT64_C(0), 48,
	  3999999, UINT64_C(0),
	  -ERANGE, INT64_C(0), UINT64_C(0),
	  UINT64_C(0), INT64_C(0) },
	{ "most negative elapsed: held",
	  UINT64_C(9223372036854775808), UINT64_C(1),
	  UINT64_C(0), 48,
	  UINT64_C(0), UINT64_C(1),
	  UINT64_C(0), 48,
	  1000000, UINT64_C(0),
	  0, INT64_C(0), UINT64_C(9223372036854775808),
	  UINT64_C(0), INT64_C(0) },
};
/* END generated */
/* clang-format on */

/* ---- scale ---------------------------------------------------------------- */

static void test_scale_tsc_matches_python_vectors(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(scale_vectors); i++) {
		const struct scale_vector *v = &scale_vectors[i];

		check_u64(v->name, counter_math_scale_tsc(v->tsc, v->ratio, v->frac_bits),
			  v->expected);
		check_u64(v->name, ref_scale_tsc(v->tsc, v->ratio, v->frac_bits), v->expected);
	}
}

static void test_scale_tsc_ratio_one_and_zero_are_identity(void **state)
{
	const uint64_t tscs[] = { 0, 1, UINT64_C(283824000000000000), UINT64_MAX };

	for (size_t i = 0; i < ELEMENTSOF(tscs); i++) {
		assert_int_equal(counter_math_scale_tsc(tscs[i], 0, 48), tscs[i]);
		assert_int_equal(counter_math_scale_tsc(tscs[i], UINT64_C(1) << 48, 48), tscs[i]);
		assert_int_equal(counter_math_scale_tsc(tscs[i], UINT64_C(1) << 32, 32), tscs[i]);
	}
}

static void test_scale_tsc_shift_beyond_product_gives_zero(void **state)
{
	assert_int_equal(counter_math_scale_tsc(UINT64_MAX, UINT64_MAX, 127), 1);
	assert_int_equal(counter_math_scale_tsc(UINT64_MAX, UINT64_MAX, 128), 0);
	assert_int_equal(counter_math_scale_tsc(UINT64_MAX, UINT64_MAX, UINT32_MAX), 0);
}

static void test_scale_tsc_random_matches_limb_reference(void **state)
{
	rng_seed();
	for (int i = 0; i < 20000; i++) {
		uint32_t frac = rng_below(4) ? rng_frac_bits() : (uint32_t)rng_below(140);
		uint64_t tsc = rng_host_tsc(), ratio = rng_ratio(frac < 64 ? frac : 63);
		char what[96];

		snprintf(what, sizeof(what), "case %d tsc %#" PRIx64 " ratio %#" PRIx64 " frac %u",
			 i, tsc, ratio, frac);
		check_u64(what, counter_math_scale_tsc(tsc, ratio, frac),
			  ref_scale_tsc(tsc, ratio, frac));
	}
}

/* ---- ns to cycles ------------------------------------------------------- */

static void test_ns_to_cycles_matches_python_vectors(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(cycles_vectors); i++) {
		const struct cycles_vector *v = &cycles_vectors[i];
		int64_t got = INT64_C(0x5a5a5a5a), ref = INT64_C(0x5a5a5a5a);

		check_s64(v->name, counter_math_ns_to_cycles(v->ns, v->khz, &got), v->rc);
		check_s64(v->name, ref_ns_to_cycles(v->ns, v->khz, &ref), v->rc);
		if (v->rc == 0) {
			check_s64(v->name, got, v->expected);
			check_s64(v->name, ref, v->expected);
		} else {
			check_s64(v->name, got, INT64_C(0x5a5a5a5a)); /* untouched */
		}
	}
}

static void test_ns_to_cycles_rounds_half_away_from_zero(void **state)
{
	int64_t c;

	/* 1000 ns at 500 kHz is exactly half a cycle; 2500 ns is 1.25. */
	assert_int_equal(counter_math_ns_to_cycles(1000, 500, &c), 0);
	assert_int_equal(c, 1);
	assert_int_equal(counter_math_ns_to_cycles(-1000, 500, &c), 0);
	assert_int_equal(c, -1);
	assert_int_equal(counter_math_ns_to_cycles(2500, 500, &c), 0);
	assert_int_equal(c, 1);
	assert_int_equal(counter_math_ns_to_cycles(-2500, 500, &c), 0);
	assert_int_equal(c, -1);
	assert_int_equal(counter_math_ns_to_cycles(999, 500, &c), 0);
	assert_int_equal(c, 0);
}

static void test_ns_to_cycles_refuses_overflow_with_erange(void **state)
{
	int64_t c = 77;

	/* ~97 years at 3 GHz no longer fits int64 cycles. */
	assert_int_equal(counter_math_ns_to_cycles(INT64_MAX, 3000000, &c), -ERANGE);
	assert_int_equal(counter_math_ns_to_cycles(INT64_MIN, 3000000, &c), -ERANGE);
	assert_int_equal(counter_math_ns_to_cycles(INT64_MIN, UINT32_MAX, &c), -ERANGE);
	assert_int_equal(c, 77);
	/* At 1 GHz one cycle per ns, so both extremes fit exactly. */
	assert_int_equal(counter_math_ns_to_cycles(INT64_MIN, 1000000, &c), 0);
	assert_true(c == INT64_MIN);
	assert_int_equal(counter_math_ns_to_cycles(INT64_MAX, 1000000, &c), 0);
	assert_true(c == INT64_MAX);
}

/* Rates within ppm of the first are the same frequency; the bound is
 * inclusive, 0 ppm demands equality, and no product overflows. */
static void test_khz_same_is_a_ppm_window_around_the_first(void **state)
{
	(void)state;
	assert_true(counter_math_khz_same(2596126, 2596126, 0));
	assert_false(counter_math_khz_same(2596126, 2596127, 0));
	/* 2596126 * 250 ppm = 649.03 kHz */
	assert_true(counter_math_khz_same(2596126, 2596126 + 649, 250));
	assert_true(counter_math_khz_same(2596126, 2596126 - 649, 250));
	assert_false(counter_math_khz_same(2596126, 2596126 + 650, 250));
	assert_false(counter_math_khz_same(2596126, 2596126 - 650, 250));
	/* exactly on the bound: 1000000 kHz * 250 ppm = 250 kHz */
	assert_true(counter_math_khz_same(1000000, 1000250, 250));
	assert_false(counter_math_khz_same(1000000, 1000251, 250));
	assert_true(counter_math_khz_same(UINT32_MAX, UINT32_MAX, 10000));
	assert_false(counter_math_khz_same(UINT32_MAX, 0, 10000));
	assert_false(counter_math_khz_same(0, 1, 10000));
}

static void test_ns_to_cycles_random_matches_limb_reference(void **state)
{
	int n_ok = 0, n_range = 0;

	rng_seed();
	for (int i = 0; i < 50000; i++) {
		int64_t ns = rng_s64_bits(), got = 0, ref = 0;
		uint32_t khz = rng_khz();
		int rc, ref_rc;
		char what[96];

		snprintf(what, sizeof(what), "case %d ns %" PRId64 " khz %u", i, ns, khz);
		rc = counter_math_ns_to_cycles(ns, khz, &got);
		ref_rc = ref_ns_to_cycles(ns, khz, &ref);
		check_s64(what, rc, ref_rc);
		if (rc == 0) {
			check_s64(what, got, ref);
			n_ok++;
		} else {
			n_range++;
		}
	}
	/* Both paths must have been exercised, or the loop proves little. */
	assert_true(n_ok > 10000);
	assert_true(n_range > 1000);
}

/* ---- error bound ------------------------------------------------------- */

static void test_error_bound_sums_maxerrors_and_widths(void **state)
{
	struct sync_error s = { .maxerror_ns = 1000, .esterror_ns = 999999 };
	struct sync_error d = { .maxerror_ns = 2000, .esterror_ns = 888888 };
	struct host_anchor sa = { .width_ns = 30, .source = ANCHOR_KVM_CLOCK };
	struct host_anchor da = { .width_ns = 40, .source = ANCHOR_BRACKET };

	/* esterror is a statistical estimate, not a bound: not summed. */
	assert_int_equal(counter_math_error_bound_ns(&s, &sa, &d, &da), 3070);
}

static void test_error_bound_saturates_at_uint64_max(void **state)
{
	struct sync_error s = { .maxerror_ns = UINT64_MAX - 10 };
	struct sync_error d = { .maxerror_ns = 5 };
	struct host_anchor sa = { .width_ns = 5 };
	struct host_anchor da = { .width_ns = 0 };

	/* Exactly UINT64_MAX without wrapping ... */
	assert_true(counter_math_error_bound_ns(&s, &sa, &d, &da) == UINT64_MAX);
	sa.width_ns = 4;
	assert_true(counter_math_error_bound_ns(&s, &sa, &d, &da) == UINT64_MAX - 1);
	/* ... and each term alone can overflow the running sum. */
	da.width_ns = UINT64_MAX;
	assert_true(counter_math_error_bound_ns(&s, &sa, &d, &da) == UINT64_MAX);
	d.maxerror_ns = UINT64_MAX;
	da.width_ns = 0;
	assert_true(counter_math_error_bound_ns(&s, &sa, &d, &da) == UINT64_MAX);
}

static void test_error_bound_is_unbounded_when_either_side_unsynced(void **state)
{
	struct sync_error s = { 0 }, d = { 0 };
	struct host_anchor sa = { 0 }, da = { 0 };

	assert_int_equal(counter_math_error_bound_ns(&s, &sa, &d, &da), 0);
	s.unsynced = true;
	assert_true(counter_math_error_bound_ns(&s, &sa, &d, &da) == UINT64_MAX);
	s.unsynced = false;
	d.unsynced = true;
	assert_true(counter_math_error_bound_ns(&s, &sa, &d, &da) == UINT64_MAX);
}

/* ---- plan ---------------------------------------------------------------- */

static void test_plan_matches_python_vectors(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;
	const uint32_t n = 3;

	for (size_t i = 0; i < ELEMENTSOF(plan_vectors); i++) {
		const struct plan_vector *v = &plan_vectors[i];
		int rc;

		make_pair(&src, &dst, n);
		src.anchor.tai_ns = v->src_tai;
		src.kvmclock.realtime_ns = v->src_tai; /* read with the anchor */
		src.anchor.host_tsc = v->src_tsc;
		src.tsc_scaling_ratio = v->src_ratio;
		src.tsc_scaling_frac_bits = v->src_frac;
		dst.anchor.tai_ns = v->dst_tai;
		dst.anchor.host_tsc = v->dst_tsc;
		dst.tsc_scaling_ratio = v->dst_ratio;
		dst.tsc_scaling_frac_bits = v->dst_frac;
		src.guest_tsc_khz = dst.guest_tsc_khz = v->khz;
		for (uint32_t j = 0; j < n; j++)
			src.offset_cycles[j] = v->ofs_src + j; /* phase 0, 1, 2 cycles */

		rc = counter_math_plan(&src, &dst, NULL, &plan);
		check_s64(v->name, rc, v->rc);
		if (rc != 0)
			continue;
		check_s64(v->name, plan.elapsed_ns, v->elapsed_ns);
		check_u64(v->name, plan.clamped_ns, v->clamped_ns);
		check_s64(v->name, plan.delta_cycles, v->delta_cycles);
		check_u64(v->name, plan.n_vcpus, n);
		for (uint32_t j = 0; j < n; j++)
			check_u64(v->name, plan.offset_cycles[j], v->ofs_dst + j);
	}
}

/* The target's clock 2 ms behind the source's anchor (same host TSC, a
 * local move): moved by the clocks the guest's TSC would go back 2 ms,
 * below values it read. It is held instead, and the 2 ms are error. */
static void test_plan_holds_the_guest_counter_when_target_clock_is_behind(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;

	make_pair(&src, &dst, 1);
	dst.anchor.host_tsc = src.anchor.host_tsc;
	dst.anchor.tai_ns = src.anchor.tai_ns - 2 * NSEC_PER_MSEC;
	src.offset_cycles[0] = 1000;

	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_true(plan.elapsed_ns == 0);
	assert_true(plan.clamped_ns == 2000000);
	assert_true(plan.delta_cycles == 0);
	assert_true(plan.offset_cycles[0] == 1000);
	assert_int_equal(plan.error_bound_ns, MAKE_PAIR_BOUND_NS + 2000000);
	/* kvmclock held with it: KVM adds nothing at the target anchor (whose
	 * REALTIME, offsets 0, is its tai_ns), then counts from there. */
	assert_true(plan.kvmclock.realtime_ns == dst.anchor.tai_ns);
	/* One ns forward is not clamped. */
	dst.anchor.tai_ns = src.anchor.tai_ns + 1;
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_true(plan.elapsed_ns == 1 && plan.clamped_ns == 0);
	assert_int_equal(plan.error_bound_ns, MAKE_PAIR_BOUND_NS);
	/* The policy's limit is on what the clocks said, before the hold. */
	dst.anchor.tai_ns = src.anchor.tai_ns - 2 * NSEC_PER_SEC;
	assert_int_equal(
		counter_math_plan(&src, &dst,
				  &(struct counter_policy){ .max_abs_elapsed_ns = NSEC_PER_SEC },
				  &plan),
		-ERANGE);
}

static void test_plan_keeps_vcpu_phase_exactly(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;

	rng_seed();
	make_pair(&src, &dst, VC_MAX_VCPUS);
	for (uint32_t i = 0; i < VC_MAX_VCPUS; i++)
		src.offset_cycles[i] = rng_u64();
	dst.anchor.tai_ns = src.anchor.tai_ns + 3 * 86400 * NSEC_PER_SEC + 1;
	dst.anchor.host_tsc = rng_u64();

	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_int_equal(plan.n_vcpus, VC_MAX_VCPUS);
	for (uint32_t i = 0; i < VC_MAX_VCPUS; i++) {
		uint32_t j = (uint32_t)rng_below(VC_MAX_VCPUS);

		assert_true(plan.offset_cycles[i] - plan.offset_cycles[j] ==
			    src.offset_cycles[i] - src.offset_cycles[j]);
		assert_true(plan.offset_cycles[i] - src.offset_cycles[i] ==
			    (uint64_t)plan.delta_cycles);
	}
}

static void test_plan_random_matches_reference_and_never_moves_the_guest_back(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;
	int n_ok = 0, n_range = 0, n_held = 0;

	rng_seed();
	for (int c = 0; c < 5000; c++) {
		uint32_t n = 1 + (uint32_t)(rng_below(4) ? rng_below(8) : rng_below(VC_MAX_VCPUS));
		int64_t elapsed, used, cycles = 0;
		uint64_t g_src0, g_dst0;
		char what[64];
		int rc, ref_rc;

		make_pair(&src, &dst, n);
		/* Both hosts keep TAI: a blackout of days counts TAI whatever
		 * months end in it (the UTC cases are the model's below). */
		src.sync.tai_offset_s = dst.sync.tai_offset_s = 37;
		src.guest_tsc_khz = dst.guest_tsc_khz = rng_khz();
		src.tsc_scaling_frac_bits = rng_frac_bits();
		dst.tsc_scaling_frac_bits = rng_frac_bits();
		src.tsc_scaling_ratio = rng_ratio(src.tsc_scaling_frac_bits);
		dst.tsc_scaling_ratio = rng_ratio(dst.tsc_scaling_frac_bits);
		src.anchor.host_tsc = rng_host_tsc();
		dst.anchor.host_tsc = rng_host_tsc();
		/* From 1 us to days, either sign; sometimes any 63-bit value. */
		switch (rng_below(3)) {
		case 0:
			elapsed = 1000 + (int64_t)rng_below(10 * 86400 * NSEC_PER_SEC);
			break;
		case 1:
			elapsed = -(int64_t)rng_below(NSEC_PER_SEC);
			break;
		default:
			elapsed = rng_s64_bits() / 2;
			break;
		}
		/* Far-future source clock when needed, so that the target's
		 * TAI does not wrap below 0 (|elapsed| < 2^62 here). */
		src.anchor.tai_ns = TAI_2024_NS;
		if (elapsed < -(int64_t)TAI_2024_NS)
			src.anchor.tai_ns = UINT64_C(1) << 63;
		src.anchor.tai_ns += rng_below(NSEC_PER_SEC);
		dst.anchor.tai_ns = src.anchor.tai_ns + (uint64_t)elapsed;
		src.kvmclock.realtime_ns = src.anchor.tai_ns - 37 * NSEC_PER_SEC;
		for (uint32_t i = 0; i < n; i++)
			src.offset_cycles[i] = rng_below(2) ? rng_u64() : rng_below(1000000);

		/* The model: a target clock behind holds the guest's counter. */
		used = elapsed < 0 ? 0 : elapsed;
		snprintf(what, sizeof(what), "case %d", c);
		rc = counter_math_plan(&src, &dst, NULL, &plan);
		ref_rc = ref_ns_to_cycles(used, src.guest_tsc_khz, &cycles);
		check_s64(what, rc, ref_rc);
		if (rc != 0) {
			n_range++;
			continue;
		}
		n_ok++;
		n_held += elapsed < 0;
		check_s64(what, plan.elapsed_ns, used);
		check_u64(what, plan.clamped_ns, (uint64_t)(used - elapsed));
		check_u64(what, plan.error_bound_ns,
			  MAKE_PAIR_BOUND_NS + (uint64_t)(used - elapsed));
		check_u64(what, plan.n_vcpus, n);
		for (uint32_t i = 0; i < n; i++) {
			/* Guest TSC at the source anchor, plus the guest cycles that
			 * elapsed, is what the guest must read at the target anchor. */
			uint64_t g_src = ref_scale_tsc(src.anchor.host_tsc, src.tsc_scaling_ratio,
						       src.tsc_scaling_frac_bits) +
					 src.offset_cycles[i];
			uint64_t g_dst = ref_scale_tsc(dst.anchor.host_tsc, dst.tsc_scaling_ratio,
						       dst.tsc_scaling_frac_bits) +
					 plan.offset_cycles[i];

			check_u64(what, g_dst - g_src, (uint64_t)cycles);
			/* Never back: the guest reads no less than it last did. */
			if ((int64_t)(g_dst - g_src) < 0)
				fail_msg("%s: vCPU %u moved back %" PRId64 " cycles", what, i,
					 (int64_t)(g_dst - g_src));
			check_u64(what, plan.offset_cycles[i] - src.offset_cycles[i],
				  (uint64_t)plan.delta_cycles);
		}
		/* Phase between the first and last vCPU. */
		g_src0 = src.offset_cycles[n - 1] - src.offset_cycles[0];
		g_dst0 = plan.offset_cycles[n - 1] - plan.offset_cycles[0];
		check_u64(what, g_dst0, g_src0);
	}
	assert_true(n_ok >= 1000);
	assert_true(n_range > 0);
	assert_true(n_held >= 1000);
}

static void test_plan_carries_each_sides_scaling_ratio(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;
	uint64_t later;

	/* 3 GHz guest moves from an unscaled 3 GHz host to a 4 GHz Intel host
	 * that scales by 3/4. One second after the target anchor the guest
	 * must have advanced 3e9 cycles past where it was at the source, plus
	 * the 150 ms blackout. */
	make_pair(&src, &dst, 2);
	src.offset_cycles[0] = UINT64_C(0) - UINT64_C(1000000000000);
	src.offset_cycles[1] = src.offset_cycles[0] + 5;
	dst.tsc_scaling_ratio = (UINT64_C(3) << 48) / 4;
	dst.tsc_scaling_frac_bits = 48;
	dst.anchor.host_tsc = UINT64_C(34560000000000000); /* 100 days at 4 GHz */

	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	later = counter_math_scale_tsc(dst.anchor.host_tsc + UINT64_C(4000000000),
				       dst.tsc_scaling_ratio, 48) +
		plan.offset_cycles[1];
	assert_true(later - (src.anchor.host_tsc + src.offset_cycles[1]) ==
		    UINT64_C(3000000000) + UINT64_C(450000000));
}

/* Two hosts' calibrations of one nominal rate differ by a few ppm (2445406
 * vs 2445408 kHz in the two-host rig); KVM runs rates within its
 * tsc_tolerance_ppm unscaled, and so does the plan. */
static void test_plan_accepts_rates_within_tolerance_and_widens_the_bound(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan exact, close;
	struct counter_policy policy = { .tsc_khz_tolerance_ppm = 250 };

	make_pair(&src, &dst, 2);
	assert_int_equal(counter_math_plan(&src, &dst, &policy, &exact), 0);
	/* 3000000 kHz +- 250 ppm = +- 750 kHz: 749 is in, 751 is out. */
	dst.guest_tsc_khz = 3000000 - 749;
	assert_int_equal(counter_math_plan(&src, &dst, &policy, &close), 0);
	/* Same offsets (cycles count at the source's rate, the guest's own)... */
	assert_true(close.offset_cycles[0] == exact.offset_cycles[0]);
	assert_true(close.offset_cycles[1] == exact.offset_cycles[1]);
	/* ...and the bound grows by ceil(150 ms * 749 / 3000000) = 37450 ns. */
	assert_true(close.error_bound_ns == exact.error_bound_ns + 37450);
	dst.guest_tsc_khz = 3000000 + 751;
	expect_plan_refused(&src, &dst, &policy, -EXDEV);
	dst.guest_tsc_khz = 3000000 - 751;
	expect_plan_refused(&src, &dst, &policy, -EXDEV);
	/* Tolerance 0 (or no policy) demands equal rates. */
	dst.guest_tsc_khz = 3000000 - 1;
	policy.tsc_khz_tolerance_ppm = 0;
	expect_plan_refused(&src, &dst, &policy, -EXDEV);
	expect_plan_refused(&src, &dst, NULL, -EXDEV);
}

static void test_plan_refuses_frequency_mismatch(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;

	make_pair(&src, &dst, 4);
	dst.guest_tsc_khz = 2999999;
	expect_plan_refused(&src, &dst, NULL, -EXDEV);
	/* Even when the target's scaling ratio would produce the source's
	 * rate, the frequencies KVM reports must match: KVM_SET_TSC_KHZ first. */
	dst.tsc_scaling_ratio = (UINT64_C(3000000) << 48) / 2999999;
	dst.tsc_scaling_frac_bits = 48;
	expect_plan_refused(&src, &dst, NULL, -EXDEV);
}

/* An x86 TSC state must never be turned into arm64 generic-timer offsets or
 * the reverse, and a state that does not say which it is, is not used; the
 * backend that read it does not matter (patched and unpatched x86 mix). */
static void test_plan_refuses_foreign_or_unnamed_counter(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;

	make_pair(&src, &dst, 2);
	dst.arch = COUNTER_ARCH_ARM64_CNTVCT;
	expect_plan_refused(&src, &dst, NULL, -ENOEXEC);
	src.arch = COUNTER_ARCH_ARM64_CNTVCT;
	dst.arch = COUNTER_ARCH_X86_TSC;
	expect_plan_refused(&src, &dst, NULL, -ENOEXEC);
	src.arch = COUNTER_ARCH_NONE;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
	src.arch = COUNTER_ARCH_X86_TSC;
	dst.arch = COUNTER_ARCH_NONE;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);

	make_pair(&src, &dst, 2);
	src.backend = BACKEND_KVM_SYSCOUNTER;
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
}

static void test_plan_refuses_vcpu_count_mismatch(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;

	make_pair(&src, &dst, 4);
	dst.n_vcpus = 5;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
	src.n_vcpus = dst.n_vcpus = 0;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
	src.n_vcpus = dst.n_vcpus = VC_MAX_VCPUS + 1;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
}

static void test_plan_refuses_zero_khz(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;

	make_pair(&src, &dst, 1);
	src.guest_tsc_khz = dst.guest_tsc_khz = 0;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
	dst.guest_tsc_khz = 3000000;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
	src.guest_tsc_khz = 3000000;
	dst.guest_tsc_khz = 0;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
}

static void test_plan_refuses_missing_or_unknown_anchor(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;

	make_pair(&src, &dst, 1);
	src.anchor.source = ANCHOR_NONE;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
	make_pair(&src, &dst, 1);
	dst.anchor.source = ANCHOR_NONE;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
	dst.anchor.source = _ANCHOR_SOURCE_MAX;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
}

static void test_plan_refuses_frac_bits_beyond_63(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;

	make_pair(&src, &dst, 1);
	dst.tsc_scaling_ratio = UINT64_C(1) << 63;
	dst.tsc_scaling_frac_bits = 64;
	expect_plan_refused(&src, &dst, NULL, -EINVAL);
	/* Ratio 0 means no scaling, whatever frac_bits says. */
	dst.tsc_scaling_ratio = 0;
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
}

static void test_plan_refuses_null_arguments(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;

	make_pair(&src, &dst, 1);
	assert_int_equal(counter_math_plan(NULL, &dst, NULL, &plan), -EINVAL);
	assert_int_equal(counter_math_plan(&src, NULL, NULL, &plan), -EINVAL);
	assert_int_equal(counter_math_plan(&src, &dst, NULL, NULL), -EINVAL);
}

static void test_plan_refuses_elapsed_beyond_policy(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;
	struct counter_policy policy = { .max_abs_elapsed_ns = 5 * NSEC_PER_SEC };

	make_pair(&src, &dst, 2);
	dst.anchor.tai_ns = src.anchor.tai_ns + 5 * NSEC_PER_SEC;
	assert_int_equal(counter_math_plan(&src, &dst, &policy, &plan), 0);
	dst.anchor.tai_ns++;
	expect_plan_refused(&src, &dst, &policy, -ERANGE);
	dst.anchor.tai_ns = src.anchor.tai_ns - 5 * NSEC_PER_SEC;
	assert_int_equal(counter_math_plan(&src, &dst, &policy, &plan), 0);
	dst.anchor.tai_ns--;
	expect_plan_refused(&src, &dst, &policy, -ERANGE);
	/* 0 means no limit: 30 days is fine. */
	policy.max_abs_elapsed_ns = 0;
	dst.anchor.tai_ns = src.anchor.tai_ns + 30 * 86400 * NSEC_PER_SEC;
	assert_int_equal(counter_math_plan(&src, &dst, &policy, &plan), 0);
}

static void test_plan_refuses_unrepresentable_elapsed(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;

	/* 2^63 ns apart does not fit int64; a wrapping subtraction would
	 * call it -2^63. */
	make_pair(&src, &dst, 1);
	src.anchor.tai_ns = 0;
	dst.anchor.tai_ns = UINT64_C(1) << 63;
	expect_plan_refused(&src, &dst, NULL, -ERANGE);
	src.anchor.tai_ns = UINT64_MAX;
	dst.anchor.tai_ns = 0;
	expect_plan_refused(&src, &dst, NULL, -ERANGE);
	/* 30 years at 3999999 kHz: elapsed fits, its cycles do not. */
	src.anchor.tai_ns = TAI_2024_NS;
	dst.anchor.tai_ns = TAI_2024_NS + UINT64_C(3000000000000000000);
	src.guest_tsc_khz = dst.guest_tsc_khz = 3999999;
	expect_plan_refused(&src, &dst, NULL, -ERANGE);
}

static void test_plan_reports_error_bound(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;

	make_pair(&src, &dst, 1);
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_int_equal(plan.error_bound_ns, MAKE_PAIR_BOUND_NS);
	/* An unsynchronised target still gets a plan; the caller's policy
	 * decides what an unbounded error means. */
	dst.sync.unsynced = true;
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_true(plan.error_bound_ns == UINT64_MAX);
}

static void test_plan_requests_kvmclock_realtime_advance(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;

#if HAVE_KVM_CLOCK_REALTIME
	assert_int_equal(KVM_CLOCK_REALTIME_BIT, KVM_CLOCK_REALTIME);
#endif
	make_pair(&src, &dst, 1);
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_int_equal(plan.kvmclock.flags, KVM_CLOCK_REALTIME_BIT);
	assert_true(plan.kvmclock.clock_ns == src.kvmclock.clock_ns);
	assert_true(plan.kvmclock.realtime_ns == src.kvmclock.realtime_ns);
	assert_true(plan.kvmclock.host_tsc == 0);
}

static void test_plan_does_not_advance_kvmclock_without_source_realtime(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;

	/* KVM_GET_CLOCK outside master-clock mode: flags 0, realtime 0. Asking
	 * KVM_SET_CLOCK to advance from realtime 0 would add ~54 years. */
	make_pair(&src, &dst, 1);
	src.kvmclock.flags = 0;
	src.kvmclock.realtime_ns = 0;
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_int_equal(plan.kvmclock.flags, 0);
	assert_true(plan.kvmclock.clock_ns == src.kvmclock.clock_ns);
}

/* ---- time scales: TAI offsets and leap seconds ----------------------------- */

/* 2027-01-01T00:00:00Z, a UTC midnight, in CLOCK_REALTIME ns. */
#define MIDNIGHT_NS UINT64_C(1798761600000000000)

static void set_realtimes(struct counter_state *src, struct counter_target *dst, uint64_t src_real,
			  int32_t src_tai, uint64_t dst_real, int32_t dst_tai)
{
	src->sync.tai_offset_s = src_tai;
	dst->sync.tai_offset_s = dst_tai;
	src->anchor.tai_ns = src_real + (uint64_t)((int64_t)src_tai * NSEC_PER_SEC);
	dst->anchor.tai_ns = dst_real + (uint64_t)((int64_t)dst_tai * NSEC_PER_SEC);
	src->kvmclock.realtime_ns = src_real;
}

/* chrony with leapsectz sets the kernel's TAI offset (37 s), timesyncd leaves
 * it 0: counted in CLOCK_TAI the two hosts would be 37 s apart. */
static void test_elapsed_counts_utc_when_a_host_has_no_tai_offset(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;
	struct counter_elapsed e;

	make_pair(&src, &dst, 1);
	set_realtimes(&src, &dst, MIDNIGHT_NS - 5 * NSEC_PER_SEC, 37,
		      MIDNIGHT_NS - 5 * NSEC_PER_SEC + 150000000, 0);
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_int_equal(e.timescale, TIMESCALE_UTC);
	assert_true(e.elapsed_ns == 150000000);
	assert_true(e.uncertainty_ns == 0 && e.realtime_shift_ns == 0);
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_true(plan.elapsed_ns == 150000000 && plan.clamped_ns == 0);
	assert_int_equal(plan.timescale, TIMESCALE_UTC);
	/* KVM counts REALTIME, which here is the plan's scale: unchanged. */
	assert_true(plan.kvmclock.realtime_ns == src.kvmclock.realtime_ns);
	/* The other way round too. */
	set_realtimes(&src, &dst, MIDNIGHT_NS, 0, MIDNIGHT_NS + 7, 37);
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_true(e.elapsed_ns == 7 && e.timescale == TIMESCALE_UTC);
}

/* Both hosts keep TAI: the handoff counts TAI, and kvmclock's realtime is
 * moved into the target's REALTIME by the offsets' difference. */
static void test_elapsed_counts_tai_when_both_hosts_keep_it(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;
	struct counter_elapsed e;

	make_pair(&src, &dst, 1);
	set_realtimes(&src, &dst, MIDNIGHT_NS - 3 * NSEC_PER_SEC, 37,
		      MIDNIGHT_NS - 3 * NSEC_PER_SEC + 2000, 37);
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_int_equal(e.timescale, TIMESCALE_TAI);
	assert_true(e.elapsed_ns == 2000 && e.realtime_shift_ns == 0);
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_int_equal(plan.timescale, TIMESCALE_TAI);
	assert_true(plan.kvmclock.realtime_ns == src.kvmclock.realtime_ns);

	/* An inserted leap second between the readings: REALTIME ran 1 s
	 * less than TAI. Both the TSC and kvmclock must count the TAI 3 s. */
	src.sync.leap = SYNC_LEAP_INSERT;
	set_realtimes(&src, &dst, MIDNIGHT_NS - 2 * NSEC_PER_SEC, 37, MIDNIGHT_NS, 38);
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_true(plan.elapsed_ns == 3 * NSEC_PER_SEC);
	assert_int_equal(plan.timescale, TIMESCALE_TAI);
	/* KVM adds target REALTIME now (MIDNIGHT_NS at the anchor) minus this. */
	assert_true(MIDNIGHT_NS - plan.kvmclock.realtime_ns == 3 * NSEC_PER_SEC);

	/* A source clock ahead applied the leap first: its offset is the new
	 * one, the target still announces it. Each applies it at the same TAI
	 * on its own clock, so the target's TAI is behind: held, not refused. */
	src.sync.leap = SYNC_LEAP_NONE;
	dst.sync.leap = SYNC_LEAP_INSERT;
	set_realtimes(&src, &dst, MIDNIGHT_NS + 200 * NSEC_PER_MSEC, 38,
		      MIDNIGHT_NS - 300 * NSEC_PER_MSEC, 37);
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_true(e.timescale == TIMESCALE_TAI);
	assert_true(e.elapsed_ns == -1500 * (int64_t)NSEC_PER_MSEC);
}

/* Offsets that disagree other than by an announced leap the target read past
 * mean a host's leap table is wrong: refused, before any offset is planned. */
static void test_plan_refuses_tai_offsets_that_disagree(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;

	make_pair(&src, &dst, 1);
	set_realtimes(&src, &dst, MIDNIGHT_NS - 60 * NSEC_PER_SEC, 36,
		      MIDNIGHT_NS - 59 * NSEC_PER_SEC, 37);
	expect_plan_refused(&src, &dst, NULL, -EDOM);
	/* A leap announced but its midnight not reached: still a wrong table. */
	src.sync.leap = SYNC_LEAP_INSERT;
	expect_plan_refused(&src, &dst, NULL, -EDOM);
	/* The announced leap the wrong way. */
	set_realtimes(&src, &dst, MIDNIGHT_NS - 2 * NSEC_PER_SEC, 37, MIDNIGHT_NS + 1, 36);
	expect_plan_refused(&src, &dst, NULL, -EDOM);
	/* Past the leap but the lower offset: the new one is the higher. */
	set_realtimes(&src, &dst, MIDNIGHT_NS + NSEC_PER_SEC, 37, MIDNIGHT_NS - 2 * NSEC_PER_SEC,
		      38);
	expect_plan_refused(&src, &dst, NULL, -EDOM);
	/* Two seconds apart is never a leap. */
	set_realtimes(&src, &dst, MIDNIGHT_NS - NSEC_PER_SEC, 37, MIDNIGHT_NS + 1, 39);
	expect_plan_refused(&src, &dst, NULL, -EDOM);
}

/* In UTC, the kernel inserts a leap by reading [midnight - 1 s, midnight)
 * twice: a target reading past midnight counts one second more than its
 * REALTIME says, one inside the repeated second may be either pass. */
static void test_elapsed_counts_an_announced_leap_in_utc(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;
	struct counter_elapsed e;

	make_pair(&src, &dst, 1);
	src.sync.leap = SYNC_LEAP_INSERT;
	set_realtimes(&src, &dst, MIDNIGHT_NS - 2500 * NSEC_PER_MSEC, 0,
		      MIDNIGHT_NS + 500 * NSEC_PER_MSEC, 0);
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_true(e.elapsed_ns == 4 * NSEC_PER_SEC && e.uncertainty_ns == 0);
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_true(plan.elapsed_ns == 4 * NSEC_PER_SEC);
	assert_int_equal(plan.error_bound_ns, MAKE_PAIR_BOUND_NS);
	/* kvmclock gets the same second: KVM adds REALTIME's 3 s plus it. */
	assert_true(MIDNIGHT_NS + 500 * NSEC_PER_MSEC - plan.kvmclock.realtime_ns ==
		    4 * NSEC_PER_SEC);

	/* Announced by the target only (its daemon set STA_INS later). */
	src.sync.leap = SYNC_LEAP_NONE;
	dst.sync.leap = SYNC_LEAP_INSERT;
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_true(e.elapsed_ns == 4 * NSEC_PER_SEC);

	/* Inside the repeated second: not known; the bound carries it. */
	set_realtimes(&src, &dst, MIDNIGHT_NS - 2500 * NSEC_PER_MSEC, 0,
		      MIDNIGHT_NS - 500 * NSEC_PER_MSEC, 0);
	assert_int_equal(counter_math_plan(&src, &dst, NULL, &plan), 0);
	assert_true(plan.elapsed_ns == 2 * NSEC_PER_SEC);
	assert_int_equal(plan.error_bound_ns, MAKE_PAIR_BOUND_NS + NSEC_PER_SEC);

	/* Before the repeated second: exact, nothing added. */
	set_realtimes(&src, &dst, MIDNIGHT_NS - 2500 * NSEC_PER_MSEC, 0,
		      MIDNIGHT_NS - 1500 * NSEC_PER_MSEC, 0);
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_true(e.elapsed_ns == NSEC_PER_SEC && e.uncertainty_ns == 0);

	/* A deleted leap skips [midnight - 1 s, midnight): one second less. */
	dst.sync.leap = SYNC_LEAP_DELETE;
	set_realtimes(&src, &dst, MIDNIGHT_NS - 2500 * NSEC_PER_MSEC, 0,
		      MIDNIGHT_NS + 500 * NSEC_PER_MSEC, 0);
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_true(e.elapsed_ns == 2 * NSEC_PER_SEC && e.uncertainty_ns == 0);
	assert_true(e.realtime_shift_ns == NSEC_PER_SEC);

	/* Hosts announcing opposite leaps: one is wrong, the bound says so. */
	src.sync.leap = SYNC_LEAP_INSERT;
	assert_int_equal(counter_math_elapsed(&src, &dst, &e), 0);
	assert_true(e.elapsed_ns == 3 * NSEC_PER_SEC && e.uncertainty_ns == NSEC_PER_SEC);
}

/* ---- a model of hosts' clocks, for seeded random handoffs ---- */

/* How a host's time daemon leaves the kernel (adjtimex(2)). */
enum model_daemon {
	MODEL_CHRONY_LEAPSECTZ, /* TAI offset kept, leaps announced and applied */
	MODEL_NTPD,		/* no TAI offset, leaps announced and applied */
	MODEL_TIMESYNCD,	/* no TAI offset, no leap: the clock is off after one */
	MODEL_STALE_TZDATA,	/* TAI offset kept one short, leaps announced */
	_MODEL_DAEMON_MAX,
};

/* One reading of a host whose clock is skew_ns off true time, at true TAI t,
 * in a world with a leap (kind leap) whose first post-leap UTC midnight is
 * MIDNIGHT_NS: 37 s TAI-UTC before it, 38 after an insert, 36 after a
 * delete. Returns the host's honest maxerror: its skew, plus the second a
 * host that does not apply leaps is off by after one. */
static uint64_t model_read(enum model_daemon daemon, int64_t skew_ns, enum sync_leap leap,
			   uint64_t t, struct host_anchor *ret_anchor, struct sync_error *ret_sync)
{
	/* The true TAI instant of the leap: UTC reaches midnight (insert: for
	 * the first time; delete: 23:59:59 is skipped, reached a second early). */
	uint64_t leap_tai =
		MIDNIGHT_NS + 37 * NSEC_PER_SEC - (leap == SYNC_LEAP_DELETE ? 1 : 0) * NSEC_PER_SEC;
	uint64_t host_t = t + (uint64_t)skew_ns; /* the host's idea of TAI */
	bool after = leap != SYNC_LEAP_NONE && host_t >= leap_tai;
	int32_t utc_offset = 37;
	uint64_t real, maxerror = (uint64_t)(skew_ns < 0 ? -skew_ns : skew_ns);

	if (after && daemon != MODEL_TIMESYNCD)
		utc_offset = leap == SYNC_LEAP_INSERT ? 38 : 36;
	if (after && daemon == MODEL_TIMESYNCD)
		maxerror += NSEC_PER_SEC;
	real = host_t - (uint64_t)utc_offset * NSEC_PER_SEC;

	memset(ret_sync, 0, sizeof(*ret_sync));
	ret_sync->maxerror_ns = maxerror;
	switch (daemon) {
	case MODEL_CHRONY_LEAPSECTZ:
		ret_sync->tai_offset_s = utc_offset;
		break;
	case MODEL_STALE_TZDATA:
		ret_sync->tai_offset_s = utc_offset - 1;
		break;
	default:
		break;
	}
	/* Announced through the day before, cleared soon after. */
	if (daemon != MODEL_TIMESYNCD && host_t + 86400 * NSEC_PER_SEC > leap_tai &&
	    host_t < leap_tai + 2 * NSEC_PER_SEC)
		ret_sync->leap = leap;
	ret_anchor->tai_ns = real + (uint64_t)((int64_t)ret_sync->tai_offset_s * NSEC_PER_SEC);
	ret_anchor->width_ns = 0;
	return maxerror;
}

static void test_elapsed_random_hosts_against_the_model(void **state)
{
	static struct counter_state src;
	static struct counter_target dst;
	static struct counter_plan plan;
	int n_exact = 0, n_refused = 0, n_leap = 0, n_tai = 0, n_utc = 0;

	rng_seed();
	for (int c = 0; c < 20000; c++) {
		enum model_daemon sd = (enum model_daemon)rng_below(_MODEL_DAEMON_MAX);
		enum model_daemon dd = (enum model_daemon)rng_below(_MODEL_DAEMON_MAX);
		enum sync_leap leap = (enum sync_leap)rng_below(_SYNC_LEAP_MAX);
		int64_t src_skew =
			rng_below(3) ? 0 : (int64_t)rng_below(4 * NSEC_PER_SEC) - 2 * NSEC_PER_SEC;
		int64_t dst_skew =
			rng_below(3) ? 0 : (int64_t)rng_below(4 * NSEC_PER_SEC) - 2 * NSEC_PER_SEC;
		/* Blackouts of up to 4 s around the leap. */
		uint64_t t_src = MIDNIGHT_NS + 37 * NSEC_PER_SEC - 5 * NSEC_PER_SEC +
				 rng_below(8 * NSEC_PER_SEC);
		uint64_t t_dst = t_src + rng_below(4 * NSEC_PER_SEC);
		int64_t truth = (int64_t)(t_dst - t_src), counted, err;
		bool stale = sd == MODEL_STALE_TZDATA || dd == MODEL_STALE_TZDATA;
		char what[128];
		int rc;

		make_pair(&src, &dst, 1);
		model_read(sd, src_skew, leap, t_src, &src.anchor, &src.sync);
		model_read(dd, dst_skew, leap, t_dst, &dst.anchor, &dst.sync);
		src.anchor.source = ANCHOR_KVM_CLOCK;
		dst.anchor.source = ANCHOR_BRACKET;
		src.kvmclock.realtime_ns =
			src.anchor.tai_ns -
			(uint64_t)((int64_t)src.sync.tai_offset_s * NSEC_PER_SEC);
		dst.anchor.host_tsc = src.anchor.host_tsc;
		snprintf(what, sizeof(what),
			 "case %d daemons %d/%d leap %d skews %" PRId64 "/%" PRId64, c, sd, dd,
			 leap, src_skew, dst_skew);

		rc = counter_math_plan(&src, &dst, NULL, &plan);
		if (rc == -EDOM) {
			/* Only a wrong leap table is refused. */
			if (!stale)
				fail_msg("%s: refused without a stale host", what);
			n_refused++;
			continue;
		}
		check_s64(what, rc, 0);
		n_tai += plan.timescale == TIMESCALE_TAI;
		n_utc += plan.timescale == TIMESCALE_UTC;
		counted = plan.elapsed_ns - (int64_t)plan.clamped_ns;
		err = counted - truth;
		/* What was counted is the truth within the bound, which holds
		 * each host's honest maxerror and any leap not known to have
		 * happened; a stale table may slip one more second past it. */
		if ((uint64_t)(err < 0 ? -err : err) >
		    plan.error_bound_ns + (stale ? NSEC_PER_SEC : 0))
			fail_msg("%s: counted %" PRId64 " ns, truth %" PRId64 ", bound %" PRIu64,
				 what, counted, truth, plan.error_bound_ns);
		if (plan.error_bound_ns == MAKE_PAIR_BOUND_NS - 1000000 - 2000000 - 40 - 900 &&
		    err == 0)
			n_exact++;
		/* kvmclock: the target's REALTIME at its anchor less the given
		 * realtime is what KVM adds, and must be what the TSC counted
		 * (nothing when held). */
		if (plan.kvmclock.flags) {
			uint64_t dst_real =
				dst.anchor.tai_ns -
				(uint64_t)((int64_t)dst.sync.tai_offset_s * NSEC_PER_SEC);

			check_s64(what, (int64_t)(dst_real - plan.kvmclock.realtime_ns),
				  plan.elapsed_ns);
		}
		n_leap += leap != SYNC_LEAP_NONE && t_src < MIDNIGHT_NS + 37 * NSEC_PER_SEC &&
			  t_dst >= MIDNIGHT_NS + 37 * NSEC_PER_SEC;
	}
	print_message("exact %d, refused %d, across a leap %d, tai %d, utc %d\n", n_exact,
		      n_refused, n_leap, n_tai, n_utc);
	assert_true(n_exact >= 1000);
	assert_true(n_refused >= 1000);
	assert_true(n_leap >= 1000);
	assert_true(n_tai >= 1000 && n_utc >= 1000);
}

/* ---- kvmclock after the apply ---------------------------------------------- */

#define KVM_CLOCK_TSC_STABLE_BIT (UINT32_C(1) << 1)

/* A source reading and a read-back 2 s of guest TSC later at 3 GHz, with
 * kvmclock advanced by the same 2 s. */
static void make_kvmclock_pair(struct counter_state *src, struct counter_state *after)
{
	memset(src, 0, sizeof(*src));
	memset(after, 0, sizeof(*after));
	src->arch = after->arch = COUNTER_ARCH_X86_TSC;
	src->guest_tsc_khz = after->guest_tsc_khz = 3000000;
	src->n_vcpus = after->n_vcpus = 1;
	src->offset_cycles[0] = UINT64_C(1000);
	src->kvmclock = (struct kvmclock_state){ .clock_ns = UINT64_C(5000000000),
						 .flags = 0xe,
						 .host_tsc = UINT64_C(900000000000) };
	src->anchor.width_ns = 0;
	/* Another host: its TSC is elsewhere, the offset makes up for it. */
	after->kvmclock = (struct kvmclock_state){ .clock_ns = UINT64_C(7000000000),
						   .flags = 0xe,
						   .host_tsc = UINT64_C(30000000) };
	after->offset_cycles[0] = UINT64_C(900000000000) + 1000 + 6000000000 - 30000000;
	after->anchor.width_ns = 500;
}

static void test_kvmclock_check_passes_when_it_advanced_with_the_tsc(void **state)
{
	struct counter_state src, after;
	struct kvmclock_state before = { .flags = 0xe };
	struct kvmclock_check c;

	make_kvmclock_pair(&src, &after);
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_OK);
	assert_true(c.error_ns == 0);
	assert_true(c.tolerance_ns == 500 + COUNTER_MATH_KVMCLOCK_SLACK_NS);
	assert_int_equal(c.flags_source, 0xe);
	assert_int_equal(c.flags_before, 0xe);
	assert_int_equal(c.flags_after, 0xe);
	/* Off by just the tolerance: still agreement. */
	after.kvmclock.clock_ns += c.tolerance_ns;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_OK);
}

static void test_kvmclock_check_fails_when_it_advanced_otherwise(void **state)
{
	struct counter_state src, after;
	struct kvmclock_state before = { .flags = 0xe };
	struct kvmclock_check c;

	/* KVM counted REALTIME while the TSC counted TAI 37 s apart. */
	make_kvmclock_pair(&src, &after);
	after.kvmclock.clock_ns += 37 * NSEC_PER_SEC;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_DIVERGED);
	assert_true(c.error_ns == 37 * NSEC_PER_SEC);
	/* kvmclock not advanced at all (KVM_SET_CLOCK without realtime). */
	make_kvmclock_pair(&src, &after);
	after.kvmclock.clock_ns = src.kvmclock.clock_ns;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_DIVERGED);
	assert_true(c.error_ns == -2 * (int64_t)NSEC_PER_SEC);
	/* A leap second counted by one and not the other. */
	make_kvmclock_pair(&src, &after);
	after.kvmclock.clock_ns -= NSEC_PER_SEC;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_DIVERGED);
	/* One ns past the tolerance. */
	make_kvmclock_pair(&src, &after);
	after.kvmclock.clock_ns -= 500 + COUNTER_MATH_KVMCLOCK_SLACK_NS + 1;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_DIVERGED);
	/* ... unless a reading's host TSC came from an rdtsc bracket that wide:
	 * 3000 cycles at 3 GHz (the guest's rate, the anchor naming none) are
	 * 1 us more tolerance. */
	after.kvmclock.host_tsc_width = 3000;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_true(c.tolerance_ns == 500 + COUNTER_MATH_KVMCLOCK_SLACK_NS + 1000);
	assert_int_equal(c.verdict, KVMCLOCK_OK);
}

static void test_kvmclock_set_error_is_what_the_check_will_find(void **state)
{
	static struct counter_state src, after;
	static struct counter_plan plan;
	struct counter_target dst = { .arch = COUNTER_ARCH_X86_TSC };
	struct kvmclock_state before = { .flags = 0xe };
	struct kvmclock_check c;
	int64_t error;

	/* On the plan: the read-back of make_kvmclock_pair. */
	make_kvmclock_pair(&src, &after);
	plan.n_vcpus = 1;
	plan.offset_cycles[0] = after.offset_cycles[0];
	assert_int_equal(
		counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error), 0);
	assert_true(error == 0);
	/* KVM_SET_CLOCK left kvmclock 27 us ahead (a loaded host, its first
	 * set): that is the error, and the correction the backend makes. */
	after.kvmclock.clock_ns += 27000;
	assert_int_equal(
		counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error), 0);
	assert_true(error == 27000);
	/* The guest TSC is read through the plan's offset, not the VM's
	 * (not written yet when the set is checked). */
	plan.offset_cycles[0] -= 3000; /* 1 us at 3 GHz */
	assert_int_equal(
		counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error), 0);
	assert_true(error == 28000);

	/* Seeded: whatever the rates, ratios and readings, it is the check's
	 * error once the plan's offset is written. */
	rng_seed();
	for (int i = 0; i < 2000; i++) {
		make_kvmclock_pair(&src, &after);
		src.guest_tsc_khz = after.guest_tsc_khz = rng_khz();
		src.tsc_scaling_frac_bits = rng_frac_bits();
		dst.tsc_scaling_frac_bits = after.tsc_scaling_frac_bits = rng_frac_bits();
		src.tsc_scaling_ratio = rng_ratio(src.tsc_scaling_frac_bits);
		dst.tsc_scaling_ratio = after.tsc_scaling_ratio =
			rng_ratio(after.tsc_scaling_frac_bits);
		src.offset_cycles[0] = rng_u64();
		src.kvmclock.clock_ns = rng_bits();
		src.kvmclock.host_tsc = 1 + rng_host_tsc();
		after.kvmclock.clock_ns = rng_bits();
		after.kvmclock.host_tsc = 1 + rng_host_tsc();
		plan.offset_cycles[0] = after.offset_cycles[0] = rng_u64();
		assert_int_equal(
			counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error),
			0);
		counter_math_kvmclock_check(&src, &before, &after, &c);
		assert_int_not_equal(c.verdict, KVMCLOCK_UNCHECKED);
		assert_true(error == c.error_ns);
	}
}

static void test_kvmclock_set_error_needs_kvms_own_pairing(void **state)
{
	static struct counter_state src, after;
	static struct counter_plan plan;
	struct counter_target dst = { .arch = COUNTER_ARCH_X86_TSC };
	int64_t error = 42;

	make_kvmclock_pair(&src, &after);
	plan.n_vcpus = 1;
	plan.offset_cycles[0] = after.offset_cycles[0];
	/* Outside master-clock mode KVM_GET_CLOCK pairs no host TSC: the
	 * backend's rdtsc bracket is microseconds wide, too coarse to
	 * correct by. */
	after.kvmclock.flags = 0x6;
	after.kvmclock.host_tsc_width = 5000;
	assert_int_equal(
		counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error),
		-ENODATA);
	after.kvmclock.flags = 0xe;
	src.kvmclock.host_tsc = 0;
	assert_int_equal(
		counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error),
		-ENODATA);
	make_kvmclock_pair(&src, &after);
	dst.arch = COUNTER_ARCH_ARM64_CNTVCT;
	assert_int_equal(
		counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error),
		-ENODATA);
	dst.arch = COUNTER_ARCH_X86_TSC;
	dst.tsc_scaling_ratio = 1;
	dst.tsc_scaling_frac_bits = 200;
	assert_int_equal(
		counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error),
		-ENODATA);
	dst.tsc_scaling_ratio = 0;
	dst.tsc_scaling_frac_bits = 0;
	plan.n_vcpus = 0;
	assert_int_equal(
		counter_math_kvmclock_set_error(&src, &dst, &plan, &after.kvmclock, &error),
		-ENODATA);
	assert_true(error == 42);
}

static void test_kvmclock_check_fails_when_the_master_clock_is_lost(void **state)
{
	struct counter_state src, after;
	struct kvmclock_state before = { .flags = 0xe };
	struct kvmclock_check c;

	make_kvmclock_pair(&src, &after);
	after.kvmclock.flags &= ~KVM_CLOCK_TSC_STABLE_BIT;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_MASTER_CLOCK_LOST);
	assert_int_equal(c.flags_after, 0xe & ~KVM_CLOCK_TSC_STABLE_BIT);
	/* Also when this host had none before the apply: the guest lost it. */
	before.flags = 0;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_MASTER_CLOCK_LOST);
	assert_int_equal(c.flags_before, 0);
	/* A guest that had none at the source has nothing to lose. */
	src.kvmclock.flags &= ~KVM_CLOCK_TSC_STABLE_BIT;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_OK);
}

static void test_kvmclock_check_is_unchecked_without_a_pairing(void **state)
{
	struct counter_state src, after;
	struct kvmclock_state before = { 0 };
	struct kvmclock_check c;

	make_kvmclock_pair(&src, &after);
	after.kvmclock.host_tsc = 0;
	after.kvmclock.clock_ns += 37 * NSEC_PER_SEC;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_UNCHECKED);
	make_kvmclock_pair(&src, &after);
	src.arch = after.arch = COUNTER_ARCH_ARM64_CNTVCT;
	counter_math_kvmclock_check(&src, &before, &after, &c);
	assert_int_equal(c.verdict, KVMCLOCK_UNCHECKED);
#if HAVE_KVM_CLOCK_REALTIME
	assert_int_equal(KVM_CLOCK_TSC_STABLE_BIT, KVM_CLOCK_TSC_STABLE);
#endif
	assert_true(counter_math_kvmclock_master(KVM_CLOCK_TSC_STABLE_BIT));
	assert_false(counter_math_kvmclock_master(~KVM_CLOCK_TSC_STABLE_BIT));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scale_tsc_matches_python_vectors),
		cmocka_unit_test(test_scale_tsc_ratio_one_and_zero_are_identity),
		cmocka_unit_test(test_scale_tsc_shift_beyond_product_gives_zero),
		cmocka_unit_test(test_scale_tsc_random_matches_limb_reference),
		cmocka_unit_test(test_ns_to_cycles_matches_python_vectors),
		cmocka_unit_test(test_ns_to_cycles_rounds_half_away_from_zero),
		cmocka_unit_test(test_ns_to_cycles_refuses_overflow_with_erange),
		cmocka_unit_test(test_khz_same_is_a_ppm_window_around_the_first),
		cmocka_unit_test(test_ns_to_cycles_random_matches_limb_reference),
		cmocka_unit_test(test_error_bound_sums_maxerrors_and_widths),
		cmocka_unit_test(test_error_bound_saturates_at_uint64_max),
		cmocka_unit_test(test_error_bound_is_unbounded_when_either_side_unsynced),
		cmocka_unit_test(test_plan_matches_python_vectors),
		cmocka_unit_test(test_plan_holds_the_guest_counter_when_target_clock_is_behind),
		cmocka_unit_test(test_plan_keeps_vcpu_phase_exactly),
		cmocka_unit_test(test_plan_random_matches_reference_and_never_moves_the_guest_back),
		cmocka_unit_test(test_plan_carries_each_sides_scaling_ratio),
		cmocka_unit_test(test_plan_refuses_frequency_mismatch),
		cmocka_unit_test(test_plan_accepts_rates_within_tolerance_and_widens_the_bound),
		cmocka_unit_test(test_plan_refuses_foreign_or_unnamed_counter),
		cmocka_unit_test(test_plan_refuses_vcpu_count_mismatch),
		cmocka_unit_test(test_plan_refuses_zero_khz),
		cmocka_unit_test(test_plan_refuses_missing_or_unknown_anchor),
		cmocka_unit_test(test_plan_refuses_frac_bits_beyond_63),
		cmocka_unit_test(test_plan_refuses_null_arguments),
		cmocka_unit_test(test_plan_refuses_elapsed_beyond_policy),
		cmocka_unit_test(test_plan_refuses_unrepresentable_elapsed),
		cmocka_unit_test(test_plan_reports_error_bound),
		cmocka_unit_test(test_plan_requests_kvmclock_realtime_advance),
		cmocka_unit_test(test_plan_does_not_advance_kvmclock_without_source_realtime),
		cmocka_unit_test(test_elapsed_counts_utc_when_a_host_has_no_tai_offset),
		cmocka_unit_test(test_elapsed_counts_tai_when_both_hosts_keep_it),
		cmocka_unit_test(test_plan_refuses_tai_offsets_that_disagree),
		cmocka_unit_test(test_elapsed_counts_an_announced_leap_in_utc),
		cmocka_unit_test(test_elapsed_random_hosts_against_the_model),
		cmocka_unit_test(test_kvmclock_check_passes_when_it_advanced_with_the_tsc),
		cmocka_unit_test(test_kvmclock_check_fails_when_it_advanced_otherwise),
		cmocka_unit_test(test_kvmclock_set_error_is_what_the_check_will_find),
		cmocka_unit_test(test_kvmclock_set_error_needs_kvms_own_pairing),
		cmocka_unit_test(test_kvmclock_check_fails_when_the_master_clock_is_lost),
		cmocka_unit_test(test_kvmclock_check_is_unchecked_without_a_pairing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
