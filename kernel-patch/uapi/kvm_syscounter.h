/* kvm_syscounter.h - the uAPI of this project's kernel series
 * (0001-KVM-Add-KVM_-GET-SET-_SYSTEM_COUNTER_STATE-uAPI.patch, the arm64 layout
 * from 0005), for headers that predate it: the one place libvcounter, the
 * daemon, the tests and the series' own probes take it from. A <linux/kvm.h>
 * that has the series wins. The capability is far above upstream's
 * sequential numbers; an unrelated kernel answering for it would still have
 * to pass the probe's write-then-read-back. */
#pragma once

#include <linux/kvm.h>
#include <stdint.h>
#include <sys/ioctl.h>

#ifndef KVM_CAP_SYSTEM_COUNTER_STATE
#define KVM_CAP_SYSTEM_COUNTER_STATE	     1024
#define KVM_SYSTEM_COUNTER_STATE_CHECK_RATIO (1U << 0)

/* uint64_t, not __u64, so that PRIu64 fits; the layout is the kernel's. */
#if defined(__aarch64__)
struct kvm_system_counter_state {
	uint32_t flags;
	uint32_t pad;
	uint64_t cntvoff;
	uint64_t cntpoff;
	uint64_t reserved[6];
};
#else
struct kvm_system_counter_state {
	uint32_t flags;
	uint32_t tsc_frac_bits;
	uint64_t tsc_offset;
	uint64_t tsc_scaling_ratio;
	uint64_t reserved[6];
};
#endif

#define KVM_GET_SYSTEM_COUNTER_STATE _IOWR(KVMIO, 0xf0, struct kvm_system_counter_state)
#define KVM_SET_SYSTEM_COUNTER_STATE _IOW(KVMIO, 0xf1, struct kvm_system_counter_state)
#endif

_Static_assert(sizeof(struct kvm_system_counter_state) == 72,
	       "struct kvm_system_counter_state is 72 bytes on every architecture");
