/* kvm_test_vm.c - see kvm_test_vm.h. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "kvm_test_vm.h"
#include "macro.h"

int kvm_test_vm_setup(void **state, unsigned n_vcpus)
{
	struct kvm_test_vm *t = calloc(1, sizeof(*t));

	if (!t || n_vcpus == 0 || n_vcpus > KVM_TEST_VM_MAX_VCPUS) {
		free(t);
		return -1;
	}
	t->kvm_fd = t->vm_fd = -1;
	t->n_vcpus = n_vcpus;
	for (unsigned i = 0; i < KVM_TEST_VM_MAX_VCPUS; i++)
		t->vcpu_fds[i] = -1;
	*state = t;

	t->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (t->kvm_fd < 0) {
		t->open_errno = errno;
		return 0; /* the test skips */
	}
	t->vm_fd = ioctl(t->kvm_fd, KVM_CREATE_VM, 0);
	if (t->vm_fd < 0)
		return -1;
	for (unsigned i = 0; i < n_vcpus; i++) {
		t->vcpu_fds[i] = ioctl(t->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
		if (t->vcpu_fds[i] < 0)
			return -1;
	}
	t->fds = (struct kvm_vm_fds){
		.vm_fd = t->vm_fd,
		.n_vcpus = n_vcpus,
		.vcpu_fds = t->vcpu_fds,
	};
	return 0;
}

int kvm_test_vm_teardown(void **state)
{
	struct kvm_test_vm *t = *state;

	if (!t)
		return 0;
	for (unsigned i = 0; i < KVM_TEST_VM_MAX_VCPUS; i++)
		close_nointr(t->vcpu_fds[i]);
	close_nointr(t->vm_fd);
	close_nointr(t->kvm_fd);
	free(t);
	return 0;
}

struct kvm_test_vm *kvm_test_vm_or_skip(void **state)
{
	struct kvm_test_vm *t = *state;

	if (t->kvm_fd < 0) {
		print_message("skipped: /dev/kvm cannot be opened (%s)\n", strerror(t->open_errno));
		skip();
	}
	return t;
}

uint64_t kvm_test_offset_get(int vcpu_fd)
{
	uint64_t offset = 0;
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uint64_t)(uintptr_t)&offset,
	};

	assert_int_equal(ioctl(vcpu_fd, KVM_GET_DEVICE_ATTR, &attr), 0);
	return offset;
}

void kvm_test_offset_set(int vcpu_fd, uint64_t offset)
{
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uint64_t)(uintptr_t)&offset,
	};

	assert_int_equal(ioctl(vcpu_fd, KVM_SET_DEVICE_ATTR, &attr), 0);
}

void kvm_test_in_child(int (*child)(void), const char *why_skipped)
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int code = child();

		fflush(stdout);
		_exit(code);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77) {
		print_message("skipped: %s\n", why_skipped);
		skip();
	}
	assert_int_equal(WEXITSTATUS(status), 0);
}
