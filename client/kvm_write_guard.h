/* kvm_write_guard.h - a seccomp filter that refuses, and counts, every ioctl
 * that could write a VM's counter state through that VM's fds: how the
 * reference VMM (minivmm source --register-late) and the tests hold
 * libvcounter to "registration, and anything on a source, never writes the
 * registered VM". The kernel enforces it, so a write through any path (the
 * backends, a raw syscall) is seen. x86-64 only, like minivm. */
#pragma once

#include <stdint.h>

/* Refuse, for the rest of the calling thread's life and in every thread it
 * creates afterwards (install it while no other thread runs: seccomp
 * filters are per thread, inherited by clone()), ioctl(2) on vm_fd or any
 * vCPU fd with
 * KVM_SET_DEVICE_ATTR (KVM_VCPU_TSC_OFFSET), KVM_SET_SYSTEM_COUNTER_STATE
 * (kernel-patch/), KVM_SET_MSRS (IA32_TSC, IA32_TSC_ADJUST), KVM_SET_TSC_KHZ
 * or KVM_SET_CLOCK: such a call fails with EPERM and is counted. Sets
 * PR_SET_NO_NEW_PRIVS. Once only per process (-EALREADY after). -errno. */
int kvm_write_guard_install(int vm_fd, const int *vcpu_fds, unsigned n_vcpus);

/* How many calls the guard refused so far, and the last one's fd and
 * request (0 and 0 if none). */
uint64_t kvm_write_guard_refused(int *ret_last_fd, unsigned long *ret_last_request);
