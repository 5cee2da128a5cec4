/* backend.h - how counter state is read and written for one VM, behind one
 * small interface (after linuxptp's struct transport). Backends run inside
 * the VMM's process (libvcounter): KVM refuses ioctls on VM and vCPU fds
 * from any mm but the one that created the VM (kvm_vm_ioctl/kvm_vcpu_ioctl
 * return -EIO when kvm->mm != current->mm), so the daemon decides and the
 * VMM's libvcounter executes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "counter_math.h"
#include "counter_state.h"

#define BACKEND_DETAIL_MAX 256

struct kvm_vm_fds {
	int vm_fd;
	uint32_t n_vcpus;
	const int *vcpu_fds; /* index = vCPU id */
};

struct backend_apply_result {
	struct counter_plan plan;	    /* what was computed and written */
	struct host_anchor anchor;	    /* target anchor the plan used */
	struct sync_error sync;		    /* target sync error the plan used */
	struct counter_state readback;	    /* offsets/clock read back after the write */
	struct kvmclock_state clock_before; /* the VM's kvmclock before the write */
	uint64_t apply_ns;		    /* CLOCK_MONOTONIC time inside the ioctls */
	/* KVM_SET_CLOCKs written (more than one: corrected), and kvmclock's
	 * error after the first and the last (counter_math_kvmclock_set_error;
	 * has_kvmclock_set_error false where it cannot be measured). */
	uint32_t kvmclock_sets;
	bool has_kvmclock_set_error;
	int64_t kvmclock_first_set_error_ns;
	int64_t kvmclock_set_error_ns;
	char detail[BACKEND_DETAIL_MAX]; /* on -EIO: which vCPU read back what */
};

struct backend_ops {
	enum backend_kind kind;
	/* Does this VM's KVM offer the interface? 0, or -EOPNOTSUPP with the
	 * missing piece in detail ("KVM_VCPU_TSC_OFFSET not supported"). Asked
	 * of vm's own fds, not the probe's scratch VM: these queries only read
	 * (KVM_HAS_DEVICE_ATTR, KVM_CHECK_EXTENSION), run before every KVM op,
	 * and what a VM offers may depend on the VM (api.rst,
	 * KVM_CAP_CHECK_EXTENSION_VM). */
	int (*detect)(const struct kvm_vm_fds *vm, char *detail, size_t detail_size);
	/* Does this host's KVM honour offset writes? Write-then-read-back on
	 * vCPU 0 of a scratch VM the probe creates in this process and closes
	 * (kvm_scratch.h); vm's vCPU 0 is only read, so a VM that has run, or
	 * runs, is never written. Sets *ret_offset_control false with the
	 * reason when KVM accepts but ignores the write ("offset control
	 * unavailable: KVM accepted X on a scratch VM but reads back Y"). */
	int (*probe)(const struct kvm_vm_fds *vm, bool *ret_offset_control, char *detail,
		     size_t detail_size);
	/* Offsets of every vCPU, guest TSC kHz, kvmclock and a host anchor
	 * (from KVM_GET_CLOCK when it carries HOST_TSC|REALTIME, else a bracket)
	 * and the host's sync error. */
	int (*read_state)(const struct kvm_vm_fds *vm, struct counter_state *ret_state);
	/* Take a fresh target anchor, counter_math_plan() against src, write
	 * every vCPU offset and KVM_SET_CLOCK(KVM_CLOCK_REALTIME), read back;
	 * -EIO if a read-back differs from what was written. *ret is written
	 * on success and on that -EIO (the VM was written: ret says with what,
	 * and ret->detail names the vCPU), on no other error. */
	int (*apply)(const struct kvm_vm_fds *vm, const struct counter_state *src,
		     const struct counter_policy *policy, struct backend_apply_result *ret);
};

extern const struct backend_ops backend_kvm_syscounter; /* kernel-patch/ */
extern const struct backend_ops backend_kvm_x86;

/* The best backend this VM's KVM offers (DESIGN.md section 4 order:
 * kvm-syscounter, then kvm-x86), or NULL with the reason in detail. */
const struct backend_ops *backend_select(const struct kvm_vm_fds *vm, char *detail,
					 size_t detail_size);
/* The same among allowed[0..n_allowed), in that order (the operator's
 * preference); n_allowed 0: all, in DESIGN.md order. A kind that is not
 * built here is named in detail as such. */
const struct backend_ops *backend_select_from(const struct kvm_vm_fds *vm,
					      const enum backend_kind *allowed, size_t n_allowed,
					      char *detail, size_t detail_size);
/* The built backend of that kind, or NULL. */
const struct backend_ops *backend_by_kind(enum backend_kind kind);
