/* test_kvm_scratch.c - the probe's scratch VM against the real /dev/kvm of
 * the machine running the tests: what it is, what it costs, and where its
 * /dev/kvm comes from when the path is gone (a sandboxed VMM). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "clockns.h"
#include "kvm_scratch.h"
#include "kvm_test_vm.h"
#include "kvm_x86.h"
#include "macro.h"

#define COST_RUNS 20

static void skip_without_dev_kvm(void)
{
	_cleanup_close_ int fd = open(KVM_SCRATCH_DEV_PATH, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		print_message("skipped: %s cannot be opened (%s)\n", KVM_SCRATCH_DEV_PATH,
			      strerror(errno));
		skip();
	}
}

static bool link_is(int fd, const char *expect)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strcmp(target, expect) == 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* A VM and its vCPU 0 on a /dev/kvm of our own, closed again; the cost is
 * printed (registration pays it once per VM). */
static void test_create_makes_a_vm_with_vcpu_0_and_says_what_it_cost(void **state)
{
	uint64_t ns[COST_RUNS], close_ns[COST_RUNS], offset, t0;
	char detail[256] = "";

	skip_without_dev_kvm();
	for (int i = 0; i < COST_RUNS; i++) {
		struct kvm_scratch_vm s = KVM_SCRATCH_VM_INIT;

		assert_int_equal(kvm_scratch_vm_create(&s, detail, sizeof(detail)), 0);
		assert_false(s.kvm_fd_held);
		assert_true(link_is(s.kvm_fd, KVM_SCRATCH_DEV_PATH));
		assert_true(link_is(s.vm_fd, "anon_inode:kvm-vm"));
		assert_true(link_is(s.vcpu_fd, "anon_inode:kvm-vcpu:0"));
		assert_true(s.create_ns > 0);
		/* The vCPU is usable by the probe's interface. */
		assert_int_equal(kvm_x86_get_tsc_offset(s.vcpu_fd, &offset), 0);
		ns[i] = s.create_ns;
		t0 = clock_ns(CLOCK_MONOTONIC);
		kvm_scratch_vm_close(&s);
		close_ns[i] = clock_ns(CLOCK_MONOTONIC) - t0;
		assert_int_equal(s.kvm_fd, -1);
		assert_int_equal(s.vm_fd, -1);
		assert_int_equal(s.vcpu_fd, -1);
	}
	qsort(ns, COST_RUNS, sizeof(ns[0]), cmp_u64);
	qsort(close_ns, COST_RUNS, sizeof(close_ns[0]), cmp_u64);
	print_message("scratch VM close (the VM destroyed with its last fd) over %d runs: "
		      "median %llu us, max %llu us\n",
		      COST_RUNS, (unsigned long long)(close_ns[COST_RUNS / 2] / 1000),
		      (unsigned long long)(close_ns[COST_RUNS - 1] / 1000));
	print_message("scratch VM creation (open, KVM_CREATE_VM, KVM_CREATE_VCPU) over %d runs: "
		      "min %llu us, median %llu us, max %llu us\n",
		      COST_RUNS, (unsigned long long)(ns[0] / 1000),
		      (unsigned long long)(ns[COST_RUNS / 2] / 1000),
		      (unsigned long long)(ns[COST_RUNS - 1] / 1000));
}

/* The child of the next test: /dev/kvm hidden under an empty /dev in a
 * mount namespace of its own, as a sandboxed VMM may see it. Exit 77: no
 * mount namespace here (not root). */
static int sandboxed(void)
{
	struct kvm_scratch_vm s = KVM_SCRATCH_VM_INIT;
	char detail[256] = "";
	uint64_t offset;
	int held, r;

	held = open(KVM_SCRATCH_DEV_PATH, O_RDWR | O_CLOEXEC);
	if (held < 0)
		return 10;
	if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", "/dev", "tmpfs", 0, "size=16k") < 0)
		return 77;
	if (access(KVM_SCRATCH_DEV_PATH, F_OK) == 0 || errno != ENOENT)
		return 11;

	/* The VMM's own /dev/kvm fd serves. */
	r = kvm_scratch_vm_create(&s, detail, sizeof(detail));
	if (r < 0) {
		printf("with a held fd: %s\n", detail);
		return 12;
	}
	if (!s.kvm_fd_held || s.kvm_fd == held || kvm_x86_get_tsc_offset(s.vcpu_fd, &offset) < 0)
		return 13;
	kvm_scratch_vm_close(&s);

	/* Without it, the error names /dev/kvm. */
	close(held);
	r = kvm_scratch_vm_create(&s, detail, sizeof(detail));
	printf("without: %d %s\n", r, detail);
	if (r != -ENOENT || s.vm_fd != -1)
		return 14;
	if (strcmp(detail, "cannot create the probe's scratch VM: /dev/kvm: No such file or "
			   "directory, and this process holds no /dev/kvm fd (the probe writes an "
			   "offset on a VM of its own, never on the registered one)") != 0)
		return 15;
	return 0;
}

static void test_create_without_dev_kvm_uses_a_held_fd_or_names_dev_kvm(void **state)
{
	skip_without_dev_kvm();
	kvm_test_in_child(sandboxed, "no mount namespace here (needs root)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_makes_a_vm_with_vcpu_0_and_says_what_it_cost),
		cmocka_unit_test(test_create_without_dev_kvm_uses_a_held_fd_or_names_dev_kvm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
