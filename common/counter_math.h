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
	enum counter_timescale timescale; /* what elapsed_ns was counted in */
	int64_t delta_cycles;		  /* added (mod 2^64) to every source offset */
	uint64_t error_bound_ns;	  /* UINT64_MAX when a side is unsynchronised */
	/* KVM_SET_CLOCK input: the source kvmclock at the source's reading
	 * expressed in the target's CLOCK_REALTIME (flags =
	 * KVM_CLOCK_REALTIME), so that the target kernel adds what elapsed in
	 * the plan's time scale, not REALTIME's: kvmclock and the TSC advance
	 * alike across different TAI offsets and leap seconds.
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

/* The time between two anchors, and the time scale it is counted in. */
struct counter_elapsed {
	enum counter_timescale timescale;
	int64_t elapsed_ns;	 /* negative: the target's clock is behind */
	uint64_t uncertainty_ns; /* a leap second that may or may not fall in it */
	/* Add to a source CLOCK_REALTIME reading to have it in the target's
	 * REALTIME, so that the target's REALTIME minus it counts elapsed_ns:
	 * the TAI offsets' difference, or the leap second counted in UTC. */
	int64_t realtime_shift_ns;
};

/* Elapsed time from the source's anchor to the target's, whatever each
 * host's time daemon did with the kernel's TAI offset (adjtimex(2) tai):
 * - both offsets set: TAI (TIMESCALE_TAI), exact across leap seconds. The
 *   offsets must agree, or straddle a leap second: one apart, the host
 *   whose REALTIME is past the leap's UTC midnight holding the new offset,
 *   the other the old one and still announcing the leap (STA_INS/STA_DEL)
 *   - skewed hosts apply a leap at different instants; else -EDOM: a host has a wrong leap table
 *   (chrony's leapsectz, tzdata) and whichever it is, the TAI difference
 *   is wrong by whole seconds.
 * - either unset (0, so that host's CLOCK_TAI is its REALTIME): UTC
 *   (TIMESCALE_UTC), both anchors less their offsets. A leap second either
 *   host announced (STA_INS/STA_DEL) at the UTC midnight after the source's
 *   reading is added or removed when the target read after it; when a
 *   reading falls in an inserted leap's repeated second, or the hosts
 *   announce opposite leaps, it may or may not have happened: uncertainty_ns
 *   is 1 s. So it is when neither host announced one and the readings
 *   straddle a midnight that ends a month, where leaps fall (ITU-R TF.460):
 *   a daemon that never announces (systemd-timesyncd) or one that cleared
 *   the announcement already.
 * -ERANGE when a time does not fit int64_t ns. Pure: no clocks read. */
int counter_math_elapsed(const struct counter_state *src, const struct counter_target *dst,
			 struct counter_elapsed *ret);

/* Compute destination offsets from the final source state.
 *   g_src  = scale(src.anchor.host_tsc, src ratio) + ofs_src[i]   (guest TSC at src anchor)
 *   ofs_dst[i] = g_src + elapsed_ns * khz / 1e6 - scale(dst.anchor.host_tsc, dst ratio)
 * i.e. ofs_dst[i] = ofs_src[i] + delta, the same delta for every vCPU, so
 * inter-vCPU relative offsets are copied exactly.
 * elapsed_ns is counter_math_elapsed() (its uncertainty is added to the
 * error bound, its time scale is the plan's), or 0 when that is negative (the target's clock behind the source's by more
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
 * policy, or elapsed or its cycles not representable in int64_t), -EDOM
 * (both hosts keep TAI offsets, and they disagree: counter_math_elapsed).
 * ret_plan is written only on success. */
int counter_math_plan(const struct counter_state *src, const struct counter_target *dst,
		      const struct counter_policy *policy, struct counter_plan *ret_plan);

/* What counter_math_kvmclock_check() will find, from a kvmclock reading
 * taken after KVM_SET_CLOCK of plan->kvmclock, the target's TSC read
 * through the plan's offset: kvmclock's advance since the source's reading
 * minus the guest TSC's. KVM_SET_CLOCK counts from a snapshot of the host
 * clock it takes before it reads CLOCK_REALTIME, and the plan counts from
 * anchors taken beside the kvmclock readings: the first set of a VM (the
 * one that turns master-clock mode on) came back 2-3 us ahead on the idle
 * nested rig, 16-27 us loaded, 165 us in CI. The backend sets again,
 * corrected by this, while the VM is paused. -ENODATA when the reading is
 * not KVM's pair of kvmclock and host TSC (KVM_CLOCK_HOST_TSC: master-clock
 * mode only), the source's has no host TSC, or a rate or ratio is
 * unusable. Pure. */
int counter_math_kvmclock_set_error(const struct counter_state *src,
				    const struct counter_target *dst,
				    const struct counter_plan *plan,
				    const struct kvmclock_state *reading, int64_t *ret_error_ns);

/* kvmclock must advance with the guest's TSC: both by the handoff's
 * elapsed time, plus whatever ran since. Anchor widths, the widths of the
 * readings' rdtsc brackets (kvmclock_state.host_tsc_width), plus this much
 * (ioctl round trips of the readings, rate differences over the
 * milliseconds between target anchor and read-back) is agreement; a time
 * scale mismatch (REALTIME vs TAI), a leap second counted by one and not
 * the other, or kvmclock not advanced at all is far beyond it. */
#define COUNTER_MATH_KVMCLOCK_SLACK_NS UINT64_C(100000)

/* Whether KVM_GET_CLOCK flags say master-clock mode (KVM_CLOCK_TSC_STABLE). */
bool counter_math_kvmclock_master(uint32_t flags);

struct kvmclock_check {
	enum kvmclock_verdict verdict;
	uint32_t flags_source; /* KVM_GET_CLOCK flags at the source's final read */
	uint32_t flags_before; /* on the target before the apply */
	uint32_t flags_after;  /* on the target after it */
	/* kvmclock's advance from the source's final reading to the target's
	 * read-back, minus the guest TSC's (vCPU 0) over the same readings. */
	int64_t error_ns;
	uint64_t tolerance_ns;
};

/* Check what the guest will see after an apply: after is the state read
 * back (offsets, kvmclock with a host TSC), before the target's kvmclock
 * read before the apply. KVMCLOCK_MASTER_CLOCK_LOST when the source's
 * reading had KVM_CLOCK_TSC_STABLE and the read-back has not (the guest's
 * kvmclock loses PVCLOCK_TSC_STABLE_BIT: its vDSO falls back to system
 * calls); KVMCLOCK_DIVERGED when |error_ns| > tolerance_ns;
 * KVMCLOCK_UNCHECKED when there is no kvmclock (arm64) or a reading lacks
 * its host TSC. Pure. */
void counter_math_kvmclock_check(const struct counter_state *src,
				 const struct kvmclock_state *before,
				 const struct counter_state *after, struct kvmclock_check *ret);
