/* kvm_scratch.h - a throwaway KVM VM with one vCPU, created in the calling
 * (the VMM's) process, on which the backends' probe writes a TSC offset to
 * see whether this host's KVM honours it: the VM being registered may have
 * run, or run still, and is never written by a probe. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVM_SCRATCH_DEV_PATH "/dev/kvm"

struct kvm_scratch_vm {
	int kvm_fd;	    /* ours: opened, or duplicated from one the process held */
	int vm_fd;	    /* KVM_CREATE_VM, type 0 */
	int vcpu_fd;	    /* KVM_CREATE_VCPU 0 */
	bool kvm_fd_held;   /* opening failed: the VMM's own /dev/kvm fd, duplicated */
	uint64_t create_ns; /* CLOCK_MONOTONIC time of the whole creation */
};

#define KVM_SCRATCH_VM_INIT                              \
	{                                                \
		.kvm_fd = -1, .vm_fd = -1, .vcpu_fd = -1 \
	}

/* Open /dev/kvm (or, when that fails, duplicate a /dev/kvm fd this process
 * already holds), create a VM and its vCPU 0. -errno with the reason in
 * detail, naming /dev/kvm when it is what is missing; nothing is left open
 * then. */
int kvm_scratch_vm_create(struct kvm_scratch_vm *ret, char *detail, size_t detail_size);
/* Close what s holds (the VM is destroyed with its last fd); s may be
 * KVM_SCRATCH_VM_INIT. */
void kvm_scratch_vm_close(struct kvm_scratch_vm *s);
