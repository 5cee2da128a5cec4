/* counter_math.c - pure arithmetic of a by-offset counter handoff: guest TSC
 * scaling, ns to cycles, destination offsets and the handoff's error bound. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "counter_math.h"

__extension__ typedef unsigned __int128 u128;
__extension__ typedef __int128 s128;

/* KVM_CLOCK_REALTIME from include/uapi/linux/kvm.h (Linux 5.16+): with it,
 * KVM_SET_CLOCK adds (CLOCK_REALTIME now - kvm_clock_data.realtime) to the
 * clock (Documentation/virt/kvm/api.rst, 4.30 KVM_SET_CLOCK). Kept local so
 * that this pure module needs no kernel headers; the unit test checks it
 * against <linux/kvm.h>. */
#define COUNTER_MATH_KVM_CLOCK_REALTIME (UINT32_C(1) << 2)

/* KVM_CLOCK_TSC_STABLE: KVM_GET_CLOCK ran in master-clock mode, so the
 * guest's kvmclock pages carry PVCLOCK_TSC_STABLE_BIT. */
#define COUNTER_MATH_KVM_CLOCK_TSC_STABLE (UINT32_C(1) << 1)

/* KVM_CLOCK_HOST_TSC: KVM paired the reading with its host TSC. */
#define COUNTER_MATH_KVM_CLOCK_HOST_TSC (UINT32_C(1) << 3)

#define CYCLES_PER_KHZ_NS UINT64_C(1000000) /* ns * kHz / 10^6 = cycles */
#define NS_PER_S	  INT64_C(1000000000)
#define NS_PER_DAY	  (INT64_C(86400) * NS_PER_S)

uint64_t counter_math_scale_tsc(uint64_t host_tsc, uint64_t ratio, uint32_t frac_bits)
{
	/* kvm_scale_tsc(): mul_u64_u64_shr(tsc, ratio, frac_bits), which keeps
	 * the low 64 bits of the shifted 128-bit product. */
	if (ratio == 0)
		return host_tsc;
	if (frac_bits >= 128)
		return 0;
	return (uint64_t)(((u128)host_tsc * ratio) >> frac_bits);
}

int counter_math_ns_to_cycles(int64_t ns, uint32_t khz, int64_t *ret_cycles)
{
	/* |ns| <= 2^63 and khz < 2^32, so the product fits in 96 bits. */
	uint64_t abs_ns = ns < 0 ? -(uint64_t)ns : (uint64_t)ns;
	u128 q = ((u128)abs_ns * khz + CYCLES_PER_KHZ_NS / 2) / CYCLES_PER_KHZ_NS;

	if (ns < 0) {
		if (q > (u128)INT64_MAX + 1)
			return -ERANGE;
		/* -(q - 1) - 1 reaches INT64_MIN without overflowing. */
		*ret_cycles = q == 0 ? 0 : -(int64_t)(q - 1) - 1;
	} else {
		if (q > (u128)INT64_MAX)
			return -ERANGE;
		*ret_cycles = (int64_t)q;
	}
	return 0;
}

static uint64_t add_sat_u64(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

uint64_t counter_math_error_bound_ns(const struct sync_error *src_sync,
				     const struct host_anchor *src_anchor,
				     const struct sync_error *dst_sync,
				     const struct host_anchor *dst_anchor)
{
	uint64_t bound;

	/* An unsynchronised clock's maxerror says nothing (adjtimex(2),
	 * STA_UNSYNC), so neither does any sum of it. */
	if (src_sync->unsynced || dst_sync->unsynced)
		return UINT64_MAX;
	bound = add_sat_u64(src_sync->maxerror_ns, dst_sync->maxerror_ns);
	bound = add_sat_u64(bound, src_anchor->width_ns);
	return add_sat_u64(bound, dst_anchor->width_ns);
}

/* Two's complement reinterpretation of a u64, without relying on the
 * implementation-defined conversion of out-of-range values (C11 6.3.1.3). */
static int64_t u64_as_s64(uint64_t v)
{
	return v <= INT64_MAX ? (int64_t)v : -(int64_t)~v - 1;
}

static bool anchor_is_valid(const struct host_anchor *anchor)
{
	return anchor->source > ANCHOR_NONE && anchor->source < _ANCHOR_SOURCE_MAX;
}

/* mul_u64_u64_shr() is only defined for shifts below 64, and KVM uses 48
 * (VMX) or 32 (SVM) (kvm_caps.tsc_scaling_ratio_frac_bits). */
static bool scaling_is_valid(uint64_t ratio, uint32_t frac_bits)
{
	return ratio == 0 || frac_bits < 64;
}

bool counter_math_khz_same(uint32_t a, uint32_t b, uint32_t ppm)
{
	uint32_t diff = a > b ? a - b : b - a;

	return (uint64_t)diff * 1000000 <= (uint64_t)a * ppm;
}

/* dst_ns - src_ns exactly, or -ERANGE if it does not fit int64_t. */
static int time_diff_ns(uint64_t src_ns, uint64_t dst_ns, int64_t *ret_elapsed_ns)
{
	uint64_t magnitude;

	if (dst_ns >= src_ns) {
		magnitude = dst_ns - src_ns;
		if (magnitude > INT64_MAX)
			return -ERANGE;
		*ret_elapsed_ns = (int64_t)magnitude;
	} else {
		magnitude = src_ns - dst_ns;
		if (magnitude > (uint64_t)INT64_MAX + 1)
			return -ERANGE;
		*ret_elapsed_ns = u64_as_s64(-magnitude);
	}
	return 0;
}

/* A host's CLOCK_REALTIME at its anchor: CLOCK_TAI less its TAI offset
 * (mod 2^64, as every time here is a u64 ns count). */
static uint64_t anchor_realtime_ns(const struct host_anchor *anchor, const struct sync_error *sync)
{
	return anchor->tai_ns - (uint64_t)((int64_t)sync->tai_offset_s * NS_PER_S);
}

/* Whether UTC midnight (ns since the epoch, a multiple of a day) starts a
 * month: the civil date of its day (proleptic Gregorian, after
 * Howard Hinnant's days-to-civil) is the 1st. */
static bool month_ends_before(uint64_t midnight_ns)
{
	uint64_t z = midnight_ns / (uint64_t)NS_PER_DAY + 719468; /* days since 0000-03-01 */
	uint64_t era = z / 146097, doe = z - era * 146097;
	uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	uint64_t mp = (5 * doy + 2) / 153;

	return doy - (153 * mp + 2) / 5 == 0; /* day of month - 1 */
}

/* Two hosts' TAI offsets one apart around a leap second: the one that has
 * applied it (its CLOCK_REALTIME past the leap's UTC midnight, or in an
 * inserted leap's repeated second) keeps the new offset, the other the old
 * one and still announces the leap. Skewed clocks apply it at different
 * instants, so either host may be the one past it. */
static bool tai_offsets_straddle_leap(uint64_t a_real, const struct sync_error *a, uint64_t b_real,
				      const struct sync_error *b)
{
	uint64_t day = (uint64_t)NS_PER_DAY, second = (uint64_t)NS_PER_S, midnight;
	const struct sync_error *hi = a, *lo = b;
	uint64_t hi_real = a_real, lo_real = b_real;

	if (a->tai_offset_s == b->tai_offset_s || a_real > UINT64_MAX - day)
		return false;
	if (a->tai_offset_s < b->tai_offset_s) {
		hi = b, lo = a;
		hi_real = b_real, lo_real = a_real;
	}
	if ((int64_t)hi->tai_offset_s - lo->tai_offset_s != 1)
		return false;
	midnight = (a_real + day / 2) / day * day; /* the nearest one */
	/* Insert raises the offset: hi applied it, lo has not. */
	if (lo->leap == SYNC_LEAP_INSERT)
		return hi_real + second >= midnight && lo_real < midnight;
	/* Delete lowers it: lo applied it, hi has not (23:59:59 is skipped). */
	if (hi->leap == SYNC_LEAP_DELETE)
		return lo_real >= midnight && hi_real + second < midnight;
	return false;
}

int counter_math_elapsed(const struct counter_state *src, const struct counter_target *dst,
			 struct counter_elapsed *ret)
{
	struct counter_elapsed e = { 0 };
	int32_t src_tai = src->sync.tai_offset_s, dst_tai = dst->sync.tai_offset_s;
	uint64_t src_real = anchor_realtime_ns(&src->anchor, &src->sync);
	uint64_t dst_real = anchor_realtime_ns(&dst->anchor, &dst->sync);
	uint64_t midnight, second = (uint64_t)NS_PER_S;
	enum sync_leap leap;
	int r;

	if (src_tai != 0 && dst_tai != 0) {
		/* Both kernels count TAI: exact across a leap second, when the
		 * offsets agree, or straddle a leap (tai_offsets_straddle_leap).
		 * Anything else is a host with a wrong leap table: which one
		 * cannot be told. */
		if (dst_tai != src_tai &&
		    !tai_offsets_straddle_leap(src_real, &src->sync, dst_real, &dst->sync))
			return -EDOM;
		r = time_diff_ns(src->anchor.tai_ns, dst->anchor.tai_ns, &e.elapsed_ns);
		if (r < 0)
			return r;
		e.timescale = TIMESCALE_TAI;
		e.realtime_shift_ns = ((int64_t)src_tai - dst_tai) * NS_PER_S;
		*ret = e;
		return 0;
	}

	/* A host without a TAI offset (systemd-timesyncd, ntpd without a leap
	 * file): its CLOCK_TAI is its CLOCK_REALTIME, so count both in UTC.
	 * That is exact unless a leap second falls between the readings; the
	 * kernel applies an announced one at the next UTC midnight, inserting
	 * by reading [midnight - 1 s, midnight) twice, deleting by skipping it. */
	r = time_diff_ns(src_real, dst_real, &e.elapsed_ns);
	if (r < 0)
		return r;
	e.timescale = TIMESCALE_UTC;
	leap = src->sync.leap != SYNC_LEAP_NONE ? src->sync.leap : dst->sync.leap;
	if (src_real > UINT64_MAX - (uint64_t)NS_PER_DAY) {
		*ret = e;
		return 0;
	}
	midnight = (src_real / (uint64_t)NS_PER_DAY + 1) * (uint64_t)NS_PER_DAY;
	if (leap == SYNC_LEAP_NONE) {
		/* Neither host announced one when it read: a daemon that never
		 * does (systemd-timesyncd), or one that cleared it already.
		 * Leaps fall only where a month ends (ITU-R TF.460); a blackout
		 * across such a midnight may hold one. */
		if (dst_real + second >= midnight && month_ends_before(midnight))
			e.uncertainty_ns = second;
	} else if (dst->sync.leap != SYNC_LEAP_NONE && dst->sync.leap != leap) {
		/* The hosts announce opposite leaps: one of them is wrong. */
		if (dst_real >= midnight - second)
			e.uncertainty_ns = second;
	} else if (leap == SYNC_LEAP_INSERT) {
		/* A reading inside the repeated second may be either pass. */
		if (dst_real >= midnight && src_real < midnight - second) {
			if (e.elapsed_ns > INT64_MAX - NS_PER_S)
				return -ERANGE;
			e.elapsed_ns += NS_PER_S;
		} else if (dst_real >= midnight - second) {
			e.uncertainty_ns = second;
		}
	} else if (dst_real >= midnight) {
		e.elapsed_ns -= NS_PER_S; /* >= 1 s: dst read past the skipped second */
	}
	/* KVM counts the target's REALTIME minus the source's: that missed
	 * exactly the leap added here. */
	e.realtime_shift_ns = -(e.elapsed_ns - u64_as_s64(dst_real - src_real));
	*ret = e;
	return 0;
}

int counter_math_plan(const struct counter_state *src, const struct counter_target *dst,
		      const struct counter_policy *policy, struct counter_plan *ret_plan)
{
	uint64_t abs_elapsed_ns, delta, rate_error_ns, clamped_ns = 0;
	int64_t elapsed_ns, elapsed_cycles;
	struct counter_elapsed when;
	uint32_t n, khz_diff;
	int r;

	if (!src || !dst || !ret_plan)
		return -EINVAL;
	if (src->arch == COUNTER_ARCH_NONE || dst->arch == COUNTER_ARCH_NONE)
		return -EINVAL;
	if (src->arch != dst->arch)
		return -ENOEXEC;

	n = src->n_vcpus;
	if (n == 0 || n > VC_MAX_VCPUS || dst->n_vcpus != n)
		return -EINVAL;
	if (src->guest_tsc_khz == 0 || dst->guest_tsc_khz == 0)
		return -EINVAL;
	if (!anchor_is_valid(&src->anchor) || !anchor_is_valid(&dst->anchor))
		return -EINVAL;
	if (!scaling_is_valid(src->tsc_scaling_ratio, src->tsc_scaling_frac_bits) ||
	    !scaling_is_valid(dst->tsc_scaling_ratio, dst->tsc_scaling_frac_bits))
		return -EINVAL;
	/* Offsets cannot change a guest's TSC rate: the VMM must first give the
	 * target vCPUs the source's frequency (KVM_SET_TSC_KHZ). Rates within
	 * KVM's own tolerance count as the same (see the header). */
	if (!counter_math_khz_same(src->guest_tsc_khz, dst->guest_tsc_khz,
				   policy ? policy->tsc_khz_tolerance_ppm : 0))
		return -EXDEV;
	khz_diff = src->guest_tsc_khz > dst->guest_tsc_khz
			   ? src->guest_tsc_khz - dst->guest_tsc_khz
			   : dst->guest_tsc_khz - src->guest_tsc_khz;

	r = counter_math_elapsed(src, dst, &when);
	if (r < 0)
		return r;
	elapsed_ns = when.elapsed_ns;
	abs_elapsed_ns = elapsed_ns < 0 ? -(uint64_t)elapsed_ns : (uint64_t)elapsed_ns;
	if (policy && policy->max_abs_elapsed_ns != 0 &&
	    abs_elapsed_ns > policy->max_abs_elapsed_ns)
		return -ERANGE;
	/* Time does not run backwards for the guest: whatever the clocks say,
	 * its counter on the target starts no lower than at the source's final
	 * read, after which it read nothing. The clocks' disagreement is error. */
	if (elapsed_ns < 0) {
		clamped_ns = abs_elapsed_ns;
		elapsed_ns = 0;
	}
	r = counter_math_ns_to_cycles(elapsed_ns, src->guest_tsc_khz, &elapsed_cycles);
	if (r < 0)
		return r;

	/* Documentation/virt/kvm/devices/vcpu.rst section 4 with host anchors:
	 * the guest TSC at the target anchor must equal the guest TSC at the
	 * source anchor plus the guest cycles of the elapsed time, so
	 *   ofs_dst = scale_src(tsc_src) + ofs_src + cycles - scale_dst(tsc_dst).
	 * Offsets are u64 two's complement in KVM (vcpu->arch.l1_tsc_offset),
	 * so all of this is mod 2^64, and delta is the same for every vCPU. */
	delta = (uint64_t)elapsed_cycles +
		counter_math_scale_tsc(src->anchor.host_tsc, src->tsc_scaling_ratio,
				       src->tsc_scaling_frac_bits) -
		counter_math_scale_tsc(dst->anchor.host_tsc, dst->tsc_scaling_ratio,
				       dst->tsc_scaling_frac_bits);

	memset(ret_plan, 0, sizeof(*ret_plan));
	ret_plan->n_vcpus = n;
	for (uint32_t i = 0; i < n; i++)
		ret_plan->offset_cycles[i] = src->offset_cycles[i] + delta;
	ret_plan->elapsed_ns = elapsed_ns;
	ret_plan->clamped_ns = clamped_ns;
	ret_plan->delta_cycles = u64_as_s64(delta);
	ret_plan->error_bound_ns =
		counter_math_error_bound_ns(&src->sync, &src->anchor, &dst->sync, &dst->anchor);
	/* Cycles are counted at the source's rate; had the blackout run at the
	 * target's, they would differ by elapsed * diff / khz (rounded up). */
	rate_error_ns = khz_diff ? (uint64_t)(((u128)(uint64_t)elapsed_ns * khz_diff +
					       src->guest_tsc_khz - 1) /
					      src->guest_tsc_khz)
				 : 0;
	ret_plan->error_bound_ns = add_sat_u64(ret_plan->error_bound_ns, rate_error_ns);
	ret_plan->error_bound_ns = add_sat_u64(ret_plan->error_bound_ns, clamped_ns);
	ret_plan->error_bound_ns = add_sat_u64(ret_plan->error_bound_ns, when.uncertainty_ns);
	ret_plan->timescale = when.timescale;

	/* The target kernel advances kvmclock by its CLOCK_REALTIME now minus
	 * the realtime given (api.rst 4.30 KVM_SET_CLOCK). That would count
	 * REALTIME, not the time scale above: so hand it the source's reading
	 * moved into the target's REALTIME, such that at the target anchor it
	 * adds exactly elapsed_ns (0 when held). Only when the source reading
	 * carries a realtime: KVM_GET_CLOCK leaves it 0 outside master-clock
	 * mode, and advancing from 0 would add the whole epoch. */
	ret_plan->kvmclock.clock_ns = src->kvmclock.clock_ns;
	ret_plan->kvmclock.host_tsc = 0; /* ignored by KVM_SET_CLOCK */
	ret_plan->kvmclock.flags = src->kvmclock.flags & COUNTER_MATH_KVM_CLOCK_REALTIME;
	if (ret_plan->kvmclock.flags) {
		/* Held: KVM must add nothing at the target anchor, and from
		 * there count what runs, as the TSC does from it. */
		s128 realtime =
			(s128)src->kvmclock.realtime_ns + when.realtime_shift_ns - (s128)clamped_ns;

		if (realtime < 0 || realtime > UINT64_MAX)
			return -ERANGE;
		ret_plan->kvmclock.realtime_ns = (uint64_t)realtime;
	}
	return 0;
}

/* A kvmclock reading's rdtsc bracket in ns at its host's TSC rate (the
 * guest's when the anchor does not say), rounded up; 0 when KVM paired it. */
static uint64_t bracket_ns(const struct kvmclock_state *k, const struct counter_state *s)
{
	uint32_t khz = s->anchor.host_tsc_khz ? s->anchor.host_tsc_khz : s->guest_tsc_khz;

	if (k->host_tsc_width == 0)
		return 0;
	return (uint64_t)(((u128)k->host_tsc_width * CYCLES_PER_KHZ_NS + khz - 1) / khz);
}

bool counter_math_kvmclock_master(uint32_t flags)
{
	return flags & COUNTER_MATH_KVM_CLOCK_TSC_STABLE;
}

/* kvmclock's advance from the source's reading to a target reading, minus
 * the guest TSC's (vCPU 0) over the same readings, the target's TSC being
 * read through ratio, frac_bits and offset. -ENODATA when a reading has no
 * host TSC or a rate or ratio is unusable. */
static int kvmclock_error(const struct counter_state *src, const struct kvmclock_state *reading,
			  uint64_t ratio, uint32_t frac_bits, uint64_t offset,
			  int64_t *ret_error_ns)
{
	uint64_t g_src, g_after;
	int64_t tsc_cycles, tsc_ns, kvmclock_ns;

	if (src->n_vcpus == 0 || src->guest_tsc_khz == 0 || src->kvmclock.host_tsc == 0 ||
	    reading->host_tsc == 0 ||
	    !scaling_is_valid(src->tsc_scaling_ratio, src->tsc_scaling_frac_bits) ||
	    !scaling_is_valid(ratio, frac_bits))
		return -ENODATA;
	/* vCPU 0's TSC at each kvmclock reading: how far the guest's TSC
	 * moved from the source's reading to this one. Every vCPU moved by
	 * the same delta (counter_math_plan). */
	g_src = counter_math_scale_tsc(src->kvmclock.host_tsc, src->tsc_scaling_ratio,
				       src->tsc_scaling_frac_bits) +
		src->offset_cycles[0];
	g_after = counter_math_scale_tsc(reading->host_tsc, ratio, frac_bits) + offset;
	tsc_cycles = u64_as_s64(g_after - g_src);
	tsc_ns = (int64_t)((s128)tsc_cycles * (int64_t)CYCLES_PER_KHZ_NS / src->guest_tsc_khz);
	kvmclock_ns = u64_as_s64(reading->clock_ns - src->kvmclock.clock_ns);
	if (__builtin_sub_overflow(kvmclock_ns, tsc_ns, ret_error_ns))
		*ret_error_ns = kvmclock_ns < 0 ? INT64_MIN : INT64_MAX;
	return 0;
}

int counter_math_kvmclock_set_error(const struct counter_state *src,
				    const struct counter_target *dst,
				    const struct counter_plan *plan,
				    const struct kvmclock_state *reading, int64_t *ret_error_ns)
{
	if (src->arch != COUNTER_ARCH_X86_TSC || dst->arch != COUNTER_ARCH_X86_TSC ||
	    plan->n_vcpus == 0 || !(reading->flags & COUNTER_MATH_KVM_CLOCK_HOST_TSC))
		return -ENODATA;
	return kvmclock_error(src, reading, dst->tsc_scaling_ratio, dst->tsc_scaling_frac_bits,
			      plan->offset_cycles[0], ret_error_ns);
}

void counter_math_kvmclock_check(const struct counter_state *src,
				 const struct kvmclock_state *before,
				 const struct counter_state *after, struct kvmclock_check *ret)
{
	struct kvmclock_check c = {
		.verdict = KVMCLOCK_UNCHECKED,
		.flags_source = src->kvmclock.flags,
		.flags_before = before->flags,
		.flags_after = after->kvmclock.flags,
	};

	/* arm64 has no kvmclock; a reading without a host TSC to pair it
	 * with, or a VM without vCPUs, gives nothing to compare. */
	if (src->arch != COUNTER_ARCH_X86_TSC || after->arch != COUNTER_ARCH_X86_TSC ||
	    after->n_vcpus == 0 ||
	    kvmclock_error(src, &after->kvmclock, after->tsc_scaling_ratio,
			   after->tsc_scaling_frac_bits, after->offset_cycles[0],
			   &c.error_ns) < 0) {
		*ret = c;
		return;
	}
	c.tolerance_ns = add_sat_u64(add_sat_u64(src->anchor.width_ns, after->anchor.width_ns),
				     COUNTER_MATH_KVMCLOCK_SLACK_NS);
	c.tolerance_ns = add_sat_u64(c.tolerance_ns, bracket_ns(&src->kvmclock, src));
	c.tolerance_ns = add_sat_u64(c.tolerance_ns, bracket_ns(&after->kvmclock, after));

	if (counter_math_kvmclock_master(c.flags_source) &&
	    !counter_math_kvmclock_master(c.flags_after))
		c.verdict = KVMCLOCK_MASTER_CLOCK_LOST;
	else if ((c.error_ns < 0 ? -(uint64_t)c.error_ns : (uint64_t)c.error_ns) > c.tolerance_ns)
		c.verdict = KVMCLOCK_DIVERGED;
	else
		c.verdict = KVMCLOCK_OK;
	*ret = c;
}
