/* test_kvm_syscounter.c - the kvm-syscounter backend (kernel-patch/'s
 * KVM_{GET,SET}_SYSTEM_COUNTER_STATE) against the real /dev/kvm of the
 * machine running the tests. On a kernel without the series (this project's
 * hosts, the Debian rig) it checks the refusal and backend selection and
 * skips the rest, saying why; tests/kernel runs it in the rig booted with the
 * patched kernel, where every test runs. Cross-checked with the upstream
 * KVM_VCPU_TSC_OFFSET attribute, read here without either backend. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "backend.h"
#include "kvm_test_vm.h"
#include "kvm_write_guard.h"
#include "kvm_x86.h"
#include "macro.h"
#include "uapi/kvm_syscounter.h"

#define TEST_VCPUS 3
/* Far from 0 (what kvm_pvm reads back) and from the probe's own delta. */
#define TEST_DELTA UINT64_C(0x123456789)

static int vm_setup(void **state)
{
	return kvm_test_vm_setup(state, TEST_VCPUS);
}

static bool has_cap(const struct kvm_test_vm *t)
{
	return ioctl(t->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYSTEM_COUNTER_STATE) > 0;
}

/* The patched kernel's VM, or a skip naming what is missing. */
static struct kvm_test_vm *patched_vm_or_skip(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);

	if (!has_cap(t)) {
		print_message("skipped: this kernel does not offer KVM_CAP_SYSTEM_COUNTER_STATE "
			      "(tests/kernel runs this test on the kernel-patch/ kernel)\n");
		skip();
	}
	return t;
}

/* ---- everywhere ---- */

static void test_detect_names_the_missing_capability(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	char detail[BACKEND_DETAIL_MAX] = "";
	int r = backend_kvm_syscounter.detect(&t->fds, detail, sizeof(detail));

	if (has_cap(t)) {
		assert_int_equal(r, 0);
		return;
	}
	assert_int_equal(r, -EOPNOTSUPP);
	assert_string_equal(detail, "KVM_CAP_SYSTEM_COUNTER_STATE not offered (a kernel without "
				    "vcounterd's kernel-patch/)");
}

static void test_detect_refuses_fd_that_is_not_a_vm(void **state)
{
	_cleanup_close_ int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	int fds[1] = { null_fd };
	struct kvm_vm_fds vm = { .vm_fd = null_fd, .n_vcpus = 1, .vcpu_fds = fds };
	char detail[BACKEND_DETAIL_MAX] = "";

	assert_true(null_fd >= 0);
	assert_int_equal(backend_kvm_syscounter.detect(&vm, detail, sizeof(detail)), -EOPNOTSUPP);
	assert_string_equal(detail, "KVM_CHECK_EXTENSION on the VM fd: Inappropriate ioctl for "
				    "device");
}

/* DESIGN.md order: the patch's backend when the kernel has it, else the
 * upstream one; an operator's list is followed in its own order. */
static void test_select_prefers_syscounter_and_follows_the_allowed_order(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	const enum backend_kind x86_first[] = { BACKEND_KVM_X86, BACKEND_KVM_SYSCOUNTER };
	const enum backend_kind only_syscounter[] = { BACKEND_KVM_SYSCOUNTER };
	const enum backend_kind arm64[] = { BACKEND_KVM_ARM64 };
	char detail[BACKEND_DETAIL_MAX] = "";
	const struct backend_ops *ops;

	ops = backend_select(&t->fds, detail, sizeof(detail));
	assert_ptr_equal(ops, has_cap(t) ? &backend_kvm_syscounter : &backend_kvm_x86);

	ops = backend_select_from(&t->fds, x86_first, ELEMENTSOF(x86_first), detail,
				  sizeof(detail));
	assert_ptr_equal(ops, &backend_kvm_x86);

	ops = backend_select_from(&t->fds, only_syscounter, ELEMENTSOF(only_syscounter), detail,
				  sizeof(detail));
	if (has_cap(t)) {
		assert_ptr_equal(ops, &backend_kvm_syscounter);
	} else {
		assert_null(ops);
		assert_string_equal(detail,
				    "no counter backend for this VM: kvm-syscounter: "
				    "KVM_CAP_SYSTEM_COUNTER_STATE not offered (a kernel without "
				    "vcounterd's kernel-patch/)");
	}

	assert_null(backend_select_from(&t->fds, arm64, ELEMENTSOF(arm64), detail, sizeof(detail)));
	assert_string_equal(detail, "no counter backend for this VM: kvm-arm64: not built into "
				    "this libvcounter");
	assert_ptr_equal(backend_by_kind(BACKEND_KVM_SYSCOUNTER), &backend_kvm_syscounter);
	assert_null(backend_by_kind(BACKEND_KVM_ARM64));
}

/* ---- on the patched kernel ---- */

/* The body of the next test, in a child (its own VM: KVM refuses ioctls
 * from another mm; no cmocka asserts). The registered VM's fds are guarded
 * (kvm_write_guard.h): a write there fails with EPERM and is counted. */
static int probe_under_guard(void)
{
	void *st = NULL;
	struct kvm_test_vm *t;
	uint64_t before[TEST_VCPUS], original, after;
	char detail[BACKEND_DETAIL_MAX] = "";
	bool control = false;
	int r;

	if (kvm_test_vm_setup(&st, TEST_VCPUS) < 0)
		return 10;
	t = st;
	if (kvm_x86_get_tsc_offset(t->vcpu_fds[0], &original) < 0 ||
	    kvm_x86_set_tsc_offset(t->vcpu_fds[0], original + TEST_DELTA) < 0)
		return 11;
	for (int i = 0; i < TEST_VCPUS; i++)
		if (kvm_x86_get_tsc_offset(t->vcpu_fds[i], &before[i]) < 0)
			return 11;
	r = kvm_write_guard_install(t->vm_fd, t->vcpu_fds, TEST_VCPUS);
	if (r == -EINVAL)
		return 77; /* no CONFIG_SECCOMP_FILTER: prctl(PR_SET_SECCOMP) */
	if (r < 0)
		return 12;
	r = backend_kvm_syscounter.probe(&t->fds, &control, detail, sizeof(detail));
	printf("probe under the guard: %d, %s; %llu write(s) refused\n", r, detail,
	       (unsigned long long)kvm_write_guard_refused(NULL, NULL));
	if (r != 0 || kvm_write_guard_refused(NULL, NULL) != 0)
		return 13;
	if (!control || !strstr(detail, "offset control available: KVM_SYSTEM_COUNTER_STATE=") ||
	    !strstr(detail, " on a scratch VM "))
		return 14;
	for (int i = 0; i < TEST_VCPUS; i++)
		if (kvm_x86_get_tsc_offset(t->vcpu_fds[i], &after) < 0 || after != before[i])
			return 15;
	kvm_test_vm_teardown(&st);
	return 0;
}

/* Offset control is probed on a scratch VM; this one is read, never
 * written (not even to restore), and keeps every offset. */
static void test_probe_reads_back_on_a_scratch_vm_and_never_writes_this_one(void **state)
{
	patched_vm_or_skip(state);
	kvm_test_in_child(probe_under_guard,
			  "this kernel has no seccomp filters "
			  "(CONFIG_SECCOMP_FILTER), which the write guard needs");
}

/* What the ioctl reads is what KVM_VCPU_TSC_OFFSET reads, vCPU by vCPU. */
static void test_read_state_matches_the_upstream_attribute(void **state)
{
	struct kvm_test_vm *t = patched_vm_or_skip(state);
	_cleanup_free_ struct counter_state *s = calloc(1, sizeof(*s));
	_cleanup_free_ struct counter_state *up = calloc(1, sizeof(*up));

	assert_non_null(s);
	assert_non_null(up);
	for (int i = 0; i < TEST_VCPUS; i++)
		kvm_test_offset_set(t->vcpu_fds[i], kvm_test_offset_get(t->vcpu_fds[i]) +
							    (uint64_t)(i + 1) * TEST_DELTA);
	assert_int_equal(backend_kvm_syscounter.read_state(&t->fds, s), 0);
	assert_int_equal(backend_kvm_x86.read_state(&t->fds, up), 0);

	assert_int_equal(s->backend, BACKEND_KVM_SYSCOUNTER);
	assert_int_equal(s->arch, COUNTER_ARCH_X86_TSC);
	assert_int_equal(up->arch, COUNTER_ARCH_X86_TSC);
	assert_int_equal(s->n_vcpus, TEST_VCPUS);
	for (int i = 0; i < TEST_VCPUS; i++) {
		assert_int_equal(s->offset_cycles[i], kvm_test_offset_get(t->vcpu_fds[i]));
		assert_int_equal(s->offset_cycles[i], up->offset_cycles[i]);
	}
	assert_int_equal(s->guest_tsc_khz, up->guest_tsc_khz);
	/* A VM never given a rate is unscaled; KVM's default ratio (1 << frac
	 * bits with scaling hardware) reads as 0, as the derived one does. */
	assert_int_equal(s->tsc_scaling_ratio, 0);
	assert_int_equal(up->tsc_scaling_ratio, 0);
}

/* The patched and unpatched backends exchange state: each applies what the
 * other read, and the vCPU phase survives exactly either way. */
static void apply_across(struct kvm_test_vm *t, const struct backend_ops *reader,
			 const struct backend_ops *writer)
{
	_cleanup_free_ struct counter_state *src = calloc(1, sizeof(*src));
	_cleanup_free_ struct backend_apply_result *res = calloc(1, sizeof(*res));

	assert_non_null(src);
	assert_non_null(res);
	assert_int_equal(reader->read_state(&t->fds, src), 0);
	for (uint32_t i = 0; i < src->n_vcpus; i++)
		src->offset_cycles[i] += (UINT64_C(1) << 31) + i * TEST_DELTA;

	assert_int_equal(writer->apply(&t->fds, src, NULL, res), 0);
	assert_int_equal(res->readback.backend, writer->kind);
	for (uint32_t i = 0; i < src->n_vcpus; i++) {
		assert_int_equal(res->plan.offset_cycles[i] - res->plan.offset_cycles[0],
				 src->offset_cycles[i] - src->offset_cycles[0]);
		assert_int_equal(res->readback.offset_cycles[i], res->plan.offset_cycles[i]);
		assert_int_equal(kvm_test_offset_get(t->vcpu_fds[i]), res->plan.offset_cycles[i]);
	}
}

static void test_apply_takes_state_read_by_the_upstream_backend(void **state)
{
	apply_across(patched_vm_or_skip(state), &backend_kvm_x86, &backend_kvm_syscounter);
}

static void test_upstream_backend_applies_state_read_by_syscounter(void **state)
{
	apply_across(patched_vm_or_skip(state), &backend_kvm_syscounter, &backend_kvm_x86);
}

/* arm64 state is never written into an x86 VM, and nothing is touched. */
static void test_apply_refuses_foreign_counter_before_writing(void **state)
{
	struct kvm_test_vm *t = patched_vm_or_skip(state);
	_cleanup_free_ struct counter_state *src = calloc(1, sizeof(*src));
	_cleanup_free_ struct backend_apply_result *res = calloc(1, sizeof(*res));
	uint64_t before[TEST_VCPUS];

	assert_non_null(src);
	assert_non_null(res);
	assert_int_equal(backend_kvm_syscounter.read_state(&t->fds, src), 0);
	for (int i = 0; i < TEST_VCPUS; i++) {
		before[i] = kvm_test_offset_get(t->vcpu_fds[i]);
		src->offset_cycles[i] += TEST_DELTA;
	}
	src->arch = COUNTER_ARCH_ARM64_CNTVCT;
	assert_int_equal(backend_kvm_syscounter.apply(&t->fds, src, NULL, res), -ENOEXEC);
	for (int i = 0; i < TEST_VCPUS; i++)
		assert_int_equal(kvm_test_offset_get(t->vcpu_fds[i]), before[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_detect_names_the_missing_capability, vm_setup,
						kvm_test_vm_teardown),
		cmocka_unit_test(test_detect_refuses_fd_that_is_not_a_vm),
		cmocka_unit_test_setup_teardown(
			test_select_prefers_syscounter_and_follows_the_allowed_order, vm_setup,
			kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(
			test_probe_reads_back_on_a_scratch_vm_and_never_writes_this_one, vm_setup,
			kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_read_state_matches_the_upstream_attribute,
						vm_setup, kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_apply_takes_state_read_by_the_upstream_backend,
						vm_setup, kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(
			test_upstream_backend_applies_state_read_by_syscounter, vm_setup,
			kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_apply_refuses_foreign_counter_before_writing,
						vm_setup, kvm_test_vm_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
