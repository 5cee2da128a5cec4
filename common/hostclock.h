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

/* rdtsc, fenced with lfence on both sides so it orders against the code
 * around it. x86-64 only: elsewhere it returns 0 and
 * hostclock_bracket_anchor() returns -EOPNOTSUPP. */
uint64_t hostclock_rdtsc(void);

/* Narrowest of HOSTCLOCK_BRACKET_TRIES (rdtsc; clock_gettime(CLOCK_TAI);
 * rdtsc) brackets: host_tsc = midpoint, width_ns = whole bracket width
 * converted with tsc_khz, rounded up (0: unknown, then width from a
 * CLOCK_MONOTONIC bracket around the same reads). source = ANCHOR_BRACKET.
 * CLOCK_TAI equals CLOCK_REALTIME while the kernel's TAI offset is 0 (no
 * NTP daemon set it, e.g. unsynced hosts): see sync_error.tai_offset_s.
 * -EIO if the TSC went backwards in every try. */
int hostclock_bracket_anchor(uint32_t tsc_khz, struct host_anchor *ret);

/* Anchor from a struct kvm_clock_data that has KVM_CLOCK_HOST_TSC and
 * KVM_CLOCK_REALTIME: realtime converted to TAI with tai_offset_s, width 0
 * (the kernel takes both readings atomically). -EINVAL if a flag is missing,
 * -ERANGE if the TAI time falls outside 0..UINT64_MAX ns. */
int hostclock_anchor_from_kvmclock(const struct kvmclock_state *clock, int32_t tai_offset_s,
				   uint32_t tsc_khz, struct host_anchor *ret);

/* Host TSC frequency in kHz, from /sys/devices/system/cpu/cpu0/tsc_freq_khz
 * where the kernel has it (not mainline) or else measured over ~20 ms
 * against CLOCK_MONOTONIC_RAW, which runs at the kernel's calibrated TSC rate
 * when the TSC is its clocksource; the measurement is good to a few ppm and
 * may differ from the kernel's tsc_khz by that much. -EOPNOTSUPP off x86-64,
 * else -errno on failure. */
int hostclock_tsc_khz(uint32_t *ret_khz);
