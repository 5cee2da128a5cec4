/* counter_math.c - pure arithmetic of a by-offset counter handoff: guest TSC
 * scaling, ns to cycles, destination offsets and the handoff's error bound. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "counter_math.h"

__extension__ typedef unsigned __int128 u128;

/* KVM_CLOCK_REALTIME from include/uapi/linux/kvm.h (Linux 5.16+): with it,
 * KVM_SET_CLOCK adds (CLOCK_REALTIME now - kvm_clock_data.realtime) to the
 * clock (Documentation/virt/kvm/api.rst, 4.30 KVM_SET_CLOCK). Kept local so
 * that this pure module needs no kernel headers; the unit test checks it
 * against <linux/kvm.h>. */
#define COUNTER_MATH_KVM_CLOCK_REALTIME (UINT32_C(1) << 2)

#define CYCLES_PER_KHZ_NS UINT64_C(1000000) /* ns * kHz / 10^6 = cycles */

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

/* dst_tai_ns - src_tai_ns exactly, or -ERANGE if it does not fit int64_t. */
static int anchor_elapsed_ns(uint64_t src_tai_ns, uint64_t dst_tai_ns, int64_t *ret_elapsed_ns)
{
	uint64_t magnitude;

	if (dst_tai_ns >= src_tai_ns) {
		magnitude = dst_tai_ns - src_tai_ns;
		if (magnitude > INT64_MAX)
			return -ERANGE;
		*ret_elapsed_ns = (int64_t)magnitude;
	} else {
		magnitude = src_tai_ns - dst_tai_ns;
		if (magnitude > (uint64_t)INT64_MAX + 1)
			return -ERANGE;
		*ret_elapsed_ns = u64_as_s64(-magnitude);
	}
	return 0;
}

bool counter_math_khz_same(uint32_t a, uint32_t b, uint32_t ppm)
{
	uint32_t diff = a > b ? a - b : b - a;

	return (uint64_t)diff * 1000000 <= (uint64_t)a * ppm;
}

int counter_math_plan(const struct counter_state *src, const struct counter_target *dst,
		      const struct counter_policy *policy, struct counter_plan *ret_plan)
{
	uint64_t abs_elapsed_ns, delta, rate_error_ns, clamped_ns = 0;
	int64_t elapsed_ns, elapsed_cycles;
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

	/* TAI, not REALTIME, so a leap second between the two readings cannot
	 * add or remove a second (DESIGN.md section 7). Negative when the
	 * target's clock is behind the source's by more than the blackout. */
	r = anchor_elapsed_ns(src->anchor.tai_ns, dst->anchor.tai_ns, &elapsed_ns);
	if (r < 0)
		return r;
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

	/* The target kernel advances kvmclock by the realtime that elapsed since
	 * the source read it. Only ask for that when the source reading carries
	 * a realtime: KVM_GET_CLOCK leaves it 0 outside master-clock mode, and
	 * advancing from 0 would add the whole epoch to the guest's clock. */
	ret_plan->kvmclock.clock_ns = src->kvmclock.clock_ns;
	ret_plan->kvmclock.realtime_ns = src->kvmclock.realtime_ns;
	ret_plan->kvmclock.host_tsc = 0; /* ignored by KVM_SET_CLOCK */
	ret_plan->kvmclock.flags = src->kvmclock.flags & COUNTER_MATH_KVM_CLOCK_REALTIME;
	return 0;
}
