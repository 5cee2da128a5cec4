/* kvm_test_vm.h - a real KVM VM for the backend tests (test_kvm_x86,
 * test_kvm_syscounter, test_kvm_scratch): cmocka setup/teardown, a skip naming why when there
 * is no /dev/kvm, and the upstream KVM_VCPU_TSC_OFFSET attribute read and
 * written directly, without any backend, as the tests' ground truth. */
#pragma once

#include <stdint.h>

#include "backend.h"

#define KVM_TEST_VM_MAX_VCPUS 4

struct kvm_test_vm {
	int kvm_fd;
	int open_errno;
	int vm_fd;
	unsigned n_vcpus;
	int vcpu_fds[KVM_TEST_VM_MAX_VCPUS];
	struct kvm_vm_fds fds;
};

/* A VM with n_vcpus vCPUs in *state. Without /dev/kvm it records why and
 * returns 0: kvm_test_vm_or_skip() then skips the test. */
int kvm_test_vm_setup(void **state, unsigned n_vcpus);
int kvm_test_vm_teardown(void **state);
struct kvm_test_vm *kvm_test_vm_or_skip(void **state);

/* Run child() in a forked process and assert it exits 0; exit 77 skips the
 * test with why_skipped. For what must not touch the test process: a
 * seccomp filter, a mount namespace, a VM only the child's mm may use. */
void kvm_test_in_child(int (*child)(void), const char *why_skipped);

/* KVM_{GET,SET}_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET); the test fails if KVM refuses. */
uint64_t kvm_test_offset_get(int vcpu_fd);
void kvm_test_offset_set(int vcpu_fd, uint64_t offset);
