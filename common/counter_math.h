/* counter_math.h - pure arithmetic of a by-offset counter handoff: no I/O,
 * no clocks. Generalises Documentation/virt/kvm/devices/vcpu.rst section 4
 * ("ofs_dst[i] = ofs_src[i] - (guest_src - guest_dst) * freq +
 * (tsc_src - tsc_dst)") from kvmclock readings to host anchors, and to TSC
 * scaling. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "counter_state.h"

/* The destination side's parameters, known before the blackout. */
struct counter_target {
	enum counter_arch arch;	    /* must be the source's */
	uint32_t guest_tsc_khz;	    /* KVM_GET_TSC_KHZ of the target vCPUs */
	uint64_t tsc_scaling_ratio; /* 0: ratio 1 */
	uint32_t tsc_scaling_frac_bits;
	uint32_t n_vcpus;
	struct host_anchor anchor; /* target anchor (fresh at apply) */
	struct sync_error sync;	   /* target host's adjtimex view */
};

/* Passing a NULL policy to counter_math_plan() means no limit. */
/* KVM's own tsc_tolerance_ppm default (arch/x86/kvm/x86.c): a requested TSC
 * rate within this of the host's runs unscaled, i.e. KVM treats the two as
 * the same frequency. Two hosts' calibrations of one nominal rate differ by
 * a few ppm (measured in the two-host rig: 2445406 vs 2445408 kHz). */
#define COUNTER_MATH_DEFAULT_TSC_TOLERANCE_PPM 250

struct counter_policy {
	uint64_t max_abs_elapsed_ns; /* refuse larger |elapsed| (0: no limit) */
	/* Guest TSC rates closer than this are the same frequency (0: exact);
	 * the difference over the elapsed time is added to the error bound. */
	uint32_t tsc_khz_tolerance_ppm;
};

struct counter_plan {
	uint32_t n_vcpus;
	uint64_t offset_cycles[VC_MAX_VCPUS]; /* what to write on the target */
	int64_t elapsed_ns;		      /* time accounted: anchors' TAI difference, >= 0 */
	/* The target's clock read earlier than the source's anchor by this
	 * much: the guest's counter is held (elapsed_ns 0) rather than moved
	 * back below values the guest already read, and the shortfall is in
	 * error_bound_ns. 0 when the clocks ran forward. */
	uint64_t clamped_ns;
	int64_t delta_cycles;	 /* added (mod 2^64) to every source offset */
	uint64_t error_bound_ns; /* UINT64_MAX when a side is unsynchronised */
	/* KVM_SET_CLOCK input: the source kvmclock at source realtime, so
	 * the target kernel adds what elapsed (flags = KVM_CLOCK_REALTIME).
	 * flags is 0 (no advance) when the source reading had no realtime
	 * (KVM_GET_CLOCK outside master-clock mode leaves it 0): advancing
	 * from realtime 0 would add the whole epoch. host_tsc is 0. */
	struct kvmclock_state kvmclock;
};

/* Guest TSC seen at host TSC value host_tsc: (host_tsc * ratio) >> frac
 * (kvm_scale_tsc), exact, 128-bit intermediate, low 64 bits kept as
 * mul_u64_u64_shr does; ratio 0 means identity; frac >= 128 gives 0. */
uint64_t counter_math_scale_tsc(uint64_t host_tsc, uint64_t ratio, uint32_t frac_bits);

/* ns * khz / 10^6, rounded to nearest (half away from zero), for signed
 * ns; -ERANGE if the result does not fit in int64_t. */
int counter_math_ns_to_cycles(int64_t ns, uint32_t khz, int64_t *ret_cycles);

/* Whether guest TSC rate b is the same frequency as a: within ppm of a
 * (KVM's tolerance, struct counter_policy). 0 ppm demands equal rates. */
bool counter_math_khz_same(uint32_t a, uint32_t b, uint32_t ppm);

/* Error bound of a handoff: both hosts' maxerror plus both anchors'
 * widths; UINT64_MAX if either host is unsynchronised; saturating. */
uint64_t counter_math_error_bound_ns(const struct sync_error *src_sync,
				     const struct host_anchor *src_anchor,
				     const struct sync_error *dst_sync,
				     const struct host_anchor *dst_anchor);

/* Compute destination offsets from the final source state.
 *   g_src  = scale(src.anchor.host_tsc, src ratio) + ofs_src[i]   (guest TSC at src anchor)
 *   ofs_dst[i] = g_src + elapsed_ns * khz / 1e6 - scale(dst.anchor.host_tsc, dst ratio)
 * i.e. ofs_dst[i] = ofs_src[i] + delta, the same delta for every vCPU, so
 * inter-vCPU relative offsets are copied exactly.
 * elapsed_ns is the exact difference of the two anchors' tai_ns, or 0
 * when that is negative (the target's clock behind the source's by more
 * than the blackout): a guest's counter never goes back. The shortfall is
 * clamped_ns, added to the error bound; the policy's max_abs_elapsed_ns
 * applies to the difference before the clamp.
 * Errors: -EINVAL (NULL src/dst/ret_plan, vCPU count mismatch/0/above
 * VC_MAX_VCPUS, zero kHz, missing or unknown anchor source, frac_bits >= 64
 * with a nonzero ratio),
 * -ENOEXEC (source and target counters are of different architectures,
 * e.g. x86 TSC state offered to an arm64 VM: nothing converts one into the
 * other), -EXDEV (guest TSC frequencies differ by more than the policy's
 * tolerance: scaling is the VMM's job, via KVM_SET_TSC_KHZ on the target,
 * before apply), -ERANGE (|elapsed| beyond
 * policy, or elapsed or its cycles not representable in int64_t).
 * ret_plan is written only on success. */
int counter_math_plan(const struct counter_state *src, const struct counter_target *dst,
		      const struct counter_policy *policy, struct counter_plan *ret_plan);
