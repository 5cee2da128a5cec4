/* hostclock.h - host clock readings: anchors (host clock ns, host TSC),
 * the kernel's clock-sync error (adjtimex), and CLOCK_TAI conversion. */
#pragma once

#include <stdint.h>

#include "counter_state.h"

/* Number of rdtsc; clock_gettime; rdtsc brackets tried; the narrowest wins. */
#define HOSTCLOCK_BRACKET_TRIES 16

/* adjtimex(2) read-only (modes = 0): maxerror/esterror converted to ns,
 * unsynced when STA_UNSYNC is set or the call returns TIME_ERROR, and the
 * kernel's TAI offset. -errno on failure. */
int hostclock_sync_error(struct sync_error *ret);

/* rdtsc (x86; on other architectures -EOPNOTSUPP). */
uint64_t hostclock_rdtsc(void);

/* Narrowest of HOSTCLOCK_BRACKET_TRIES (rdtsc; clock_gettime(CLOCK_TAI);
 * rdtsc) brackets: host_tsc = midpoint, width_ns = bracket width converted
 * with tsc_khz (0: unknown, then width from a CLOCK_MONOTONIC bracket).
 * source = ANCHOR_BRACKET. */
int hostclock_bracket_anchor(uint32_t tsc_khz, struct host_anchor *ret);

/* Anchor from a struct kvm_clock_data that has KVM_CLOCK_HOST_TSC and
 * KVM_CLOCK_REALTIME: realtime converted to TAI with tai_offset_s, width 0
 * (the kernel takes both readings atomically). -EINVAL if a flag is missing. */
int hostclock_anchor_from_kvmclock(const struct kvmclock_state *clock, int32_t tai_offset_s,
				   uint32_t tsc_khz, struct host_anchor *ret);

/* Host TSC frequency in kHz as the kernel knows it, from
 * /sys/devices/system/cpu/cpu0/tsc_freq_khz or, failing that, the
 * "tsc: Refined TSC clocksource calibration" rate via a short measurement
 * against CLOCK_MONOTONIC_RAW. -errno on failure. */
int hostclock_tsc_khz(uint32_t *ret_khz);
