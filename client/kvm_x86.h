/* kvm_x86.h - the x86 backends' shared machinery and the two vCPU ioctls
 * everything that handles TSC offsets needs: KVM_VCPU_TSC_CTRL/
 * KVM_VCPU_TSC_OFFSET, Documentation/virt/kvm/devices/vcpu.rst section 4.1.
 * vCPU ioctls wait for the vCPU mutex KVM_RUN holds: call them on vCPUs that
 * are not running. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

int kvm_x86_get_tsc_offset(int vcpu_fd, uint64_t *ret_offset);
int kvm_x86_set_tsc_offset(int vcpu_fd, uint64_t offset);

/* One vCPU's TSC state as an x86 interface reads and writes it. */
struct tsc_vcpu_state {
	uint64_t offset;    /* L1 TSC offset */
	uint64_t ratio;	    /* as KVM holds it (reports_ratio only): 1 << frac_bits or 0 = none */
	uint32_t frac_bits; /* 48 VMX, 32 SVM (reports_ratio only) */
};

/* How an x86 backend reaches a vCPU's TSC offset: the upstream device
 * attribute (kvm-x86) or the KVM_{GET,SET}_SYSTEM_COUNTER_STATE ioctls of
 * kernel-patch/ (kvm-syscounter). Everything else - the kvmclock, anchors,
 * rates, the plan and the read-back - is the same for both, so the state
 * one reads is the state the other applies (CounterState arch x86-tsc). */
struct kvm_x86_tsc_access {
	enum backend_kind kind;
	const char *name;   /* the interface, in details and errors */
	bool reports_ratio; /* get() returns KVM's ratio; else derived from the rates */
	int (*get)(int vcpu_fd, struct tsc_vcpu_state *ret);
	/* Writes st->offset. An interface that reports the ratio refuses
	 * (-EINVAL, nothing written) unless st->ratio/frac_bits are KVM's. */
	int (*set)(int vcpu_fd, const struct tsc_vcpu_state *st);
	/* Optional, run by the probe on the scratch vCPU after *written read
	 * back exactly: 1 if offset control holds, 0 if not (why in detail),
	 * -errno. */
	int (*verify)(int scratch_vcpu_fd, const struct tsc_vcpu_state *written, char *detail,
		      size_t detail_size);
};

int kvm_x86_vm_fds_check(const struct kvm_vm_fds *vm);
void kvm_x86_detail(char *detail, size_t detail_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* backend_ops probe/read_state/apply (backend.h) over an access. The
 * probe reads vCPU 0 of vm and writes only a scratch VM of its own
 * (kvm_scratch.h). */
int kvm_x86_tsc_probe(const struct kvm_x86_tsc_access *acc, const struct kvm_vm_fds *vm,
		      bool *ret_offset_control, char *detail, size_t detail_size);
int kvm_x86_tsc_read_state(const struct kvm_x86_tsc_access *acc, const struct kvm_vm_fds *vm,
			   struct counter_state *ret_state);
int kvm_x86_tsc_apply(const struct kvm_x86_tsc_access *acc, const struct kvm_vm_fds *vm,
		      const struct counter_state *src, const struct counter_policy *policy,
		      struct backend_apply_result *ret);
