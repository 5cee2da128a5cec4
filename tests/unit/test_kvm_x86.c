/* test_kvm_x86.c - the upstream x86 backend against the real /dev/kvm of the
 * machine running the tests, asserting what that KVM really does. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "backend.h"
#include "clockns.h"
#include "hostclock.h"
#include "kvm_test_vm.h"
#include "kvm_write_guard.h"
#include "kvm_x86.h"
#include "macro.h"

#define TEST_VCPUS 2
/* A value no KVM starts a vCPU with, to make "read back what was written"
 * mean something (kvm_pvm reads every offset back as 0). */
#define TEST_DELTA UINT64_C(0x123456789)

static int vm_setup(void **state)
{
	return kvm_test_vm_setup(state, TEST_VCPUS);
}

static bool has_offset_attr(int vcpu_fd)
{
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
	};

	return ioctl(vcpu_fd, KVM_HAS_DEVICE_ATTR, &attr) == 0;
}

/* The truth, found without the backend: does this KVM keep a written offset? */
static bool kvm_honours_offsets(int vcpu_fd)
{
	uint64_t original = kvm_test_offset_get(vcpu_fd);
	uint64_t readback;

	kvm_test_offset_set(vcpu_fd, original + TEST_DELTA);
	readback = kvm_test_offset_get(vcpu_fd);
	kvm_test_offset_set(vcpu_fd, original);
	return readback == original + TEST_DELTA;
}

static uint64_t abs_diff(uint64_t a, uint64_t b)
{
	return a > b ? a - b : b - a;
}

static void test_detect_accepts_kvm_with_tsc_offset_attr(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	char detail[BACKEND_DETAIL_MAX] = "";
	int r = backend_kvm_x86.detect(&t->fds, detail, sizeof(detail));

	if (has_offset_attr(t->vcpu_fds[0])) {
		assert_int_equal(r, 0);
	} else {
		assert_int_equal(r, -EOPNOTSUPP);
		assert_string_equal(detail,
				    "KVM_VCPU_TSC_OFFSET not supported (Linux >= 5.16 needed)");
	}
}

static void test_detect_refuses_fd_that_is_not_a_vcpu(void **state)
{
	_cleanup_close_ int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	int fds[1] = { null_fd };
	struct kvm_vm_fds vm = { .vm_fd = null_fd, .n_vcpus = 1, .vcpu_fds = fds };
	char detail[BACKEND_DETAIL_MAX] = "";

	assert_true(null_fd >= 0);
	assert_int_equal(backend_kvm_x86.detect(&vm, detail, sizeof(detail)), -EOPNOTSUPP);
	assert_string_equal(detail, "KVM_VCPU_TSC_OFFSET not supported (Linux >= 5.16 needed)");
}

static void test_detect_rejects_empty_vm(void **state)
{
	int fds[1] = { 0 };
	struct kvm_vm_fds vm = { .vm_fd = 0, .n_vcpus = 0, .vcpu_fds = fds };

	assert_int_equal(backend_kvm_x86.detect(&vm, NULL, 0), -EINVAL);
	vm.n_vcpus = VC_MAX_VCPUS + 1;
	assert_int_equal(backend_kvm_x86.detect(&vm, NULL, 0), -EINVAL);
}

static void test_probe_reports_whether_kvm_honours_offsets(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	char detail[BACKEND_DETAIL_MAX] = "";
	bool honours = kvm_honours_offsets(t->vcpu_fds[0]);
	bool offset_control = !honours;

	assert_int_equal(backend_kvm_x86.probe(&t->fds, &offset_control, detail, sizeof(detail)),
			 0);
	print_message("this host: %s\n", detail);
	assert_int_equal(offset_control, honours);
	if (honours) {
		assert_non_null(strstr(detail, "offset control available: KVM_VCPU_TSC_OFFSET=0x"));
		assert_non_null(strstr(detail, " read back exactly on a scratch VM (created in "));
		assert_non_null(strstr(detail, "this VM's vCPU 0 was read, not written"));
	} else {
		/* The probe writes the scratch vCPU's own offset + 2^24; what
		 * comes back is the KVM's business (0 on kvm_pvm). */
		assert_non_null(strstr(
			detail, "offset control unavailable: KVM accepted KVM_VCPU_TSC_OFFSET="
				"0x"));
		assert_non_null(strstr(detail, " on a scratch VM but reads back "));
		assert_non_null(
			strstr(detail, "(this host's KVM ignores TSC offsets, e.g. kvm_pvm)"));
	}
}

/* The body of test_probe_never_writes_the_registered_vm, in a child: its
 * own VM (KVM refuses ioctls from another mm: a VM made before fork() is
 * the parent's), no cmocka asserts (a failure must end the child, not
 * unwind into a copy of the runner). Returns the child's exit code. */
static int probe_under_guard(void)
{
	void *st = NULL;
	struct kvm_test_vm *t;
	uint64_t before[TEST_VCPUS], original, readback, refused, after;
	char detail[BACKEND_DETAIL_MAX] = "";
	unsigned long request;
	bool honours, offset_control;
	int r, fd;

	if (kvm_test_vm_setup(&st, TEST_VCPUS) < 0)
		return 10;
	t = st;
	/* The truth, found without the backend, and a non-default offset
	 * where the KVM keeps one, so that any change would show. */
	if (kvm_x86_get_tsc_offset(t->vcpu_fds[0], &original) < 0 ||
	    kvm_x86_set_tsc_offset(t->vcpu_fds[0], original - TEST_DELTA) < 0 ||
	    kvm_x86_get_tsc_offset(t->vcpu_fds[0], &readback) < 0)
		return 11;
	honours = readback == original - TEST_DELTA;
	offset_control = !honours;
	for (int i = 0; i < TEST_VCPUS; i++)
		if (kvm_x86_get_tsc_offset(t->vcpu_fds[i], &before[i]) < 0)
			return 11;

	r = kvm_write_guard_install(t->vm_fd, t->vcpu_fds, TEST_VCPUS);
	if (r == -EINVAL)
		return 77; /* no CONFIG_SECCOMP_FILTER: prctl(PR_SET_SECCOMP) */
	if (r < 0) {
		printf("guard: %s\n", strerror(-r));
		return 12;
	}
	/* The guard works: a direct write is refused, and counted. */
	if (kvm_x86_set_tsc_offset(t->vcpu_fds[1], before[1]) != -EPERM ||
	    kvm_write_guard_refused(NULL, NULL) != 1)
		return 13;

	r = backend_kvm_x86.probe(&t->fds, &offset_control, detail, sizeof(detail));
	refused = kvm_write_guard_refused(&fd, &request) - 1;
	printf("probe under the guard: %d, %s\n", r, detail);
	if (refused)
		printf("the probe wrote the registered VM: %llu call(s) refused, the last "
		       "request %#lx on fd %d\n",
		       (unsigned long long)refused, request, fd);
	if (r != 0)
		return 14;
	if (refused)
		return 15;
	if (offset_control != honours)
		return 16;
	for (int i = 0; i < TEST_VCPUS; i++)
		if (kvm_x86_get_tsc_offset(t->vcpu_fds[i], &after) < 0 || after != before[i])
			return 17;
	kvm_test_vm_teardown(&st);
	return 0;
}

/* The registered VM may be running a guest: the probe must not write it,
 * not even to restore. Its fds are guarded by seccomp (kvm_write_guard.h),
 * where any write ioctl on them fails with EPERM and is counted; the probe
 * must still give its verdict, write nothing there, and leave every offset
 * as it was. A probe that writes and restores vCPU 0's offset fails here
 * with "writing KVM_VCPU_TSC_OFFSET of vCPU 0: Operation not permitted" and
 * one refused call (exit 14). */
static void test_probe_never_writes_the_registered_vm(void **state)
{
	kvm_test_vm_or_skip(state);
	kvm_test_in_child(probe_under_guard,
			  "this kernel has no seccomp filters "
			  "(CONFIG_SECCOMP_FILTER), which the write guard needs");
}

static void test_probe_returns_errno_of_failed_ioctl(void **state)
{
	_cleanup_close_ int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	int fds[1] = { null_fd };
	struct kvm_vm_fds vm = { .vm_fd = null_fd, .n_vcpus = 1, .vcpu_fds = fds };
	char detail[BACKEND_DETAIL_MAX] = "";
	bool offset_control = true;

	assert_true(null_fd >= 0);
	assert_int_equal(backend_kvm_x86.probe(&vm, &offset_control, detail, sizeof(detail)),
			 -ENOTTY);
	assert_true(offset_control); /* untouched on failure */
	assert_non_null(strstr(detail, "reading KVM_VCPU_TSC_OFFSET of vCPU 0: "));
}

static void test_read_state_reports_every_vcpu_rate_and_anchor(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	_cleanup_free_ struct counter_state *s = calloc(1, sizeof(*s));
	struct kvm_clock_data clock = { 0 };
	struct sync_error sync;
	uint64_t tai_before, tai_after, realtime_before, realtime_after, tsc_before, tsc_after;
	int khz;

	assert_non_null(s);
	/* Distinct offsets where the KVM keeps them: each vCPU must be read. */
	for (int i = 0; i < TEST_VCPUS; i++)
		kvm_test_offset_set(t->vcpu_fds[i],
				    kvm_test_offset_get(t->vcpu_fds[i]) + (uint64_t)i * TEST_DELTA);
	khz = ioctl(t->vcpu_fds[0], KVM_GET_TSC_KHZ, 0);
	assert_true(khz > 0);
	assert_int_equal(ioctl(t->vm_fd, KVM_GET_CLOCK, &clock), 0);
	assert_int_equal(hostclock_sync_error(&sync), 0);

	tai_before = clock_ns(CLOCK_TAI);
	realtime_before = clock_ns(CLOCK_REALTIME);
	tsc_before = hostclock_rdtsc();
	assert_int_equal(backend_kvm_x86.read_state(&t->fds, s), 0);
	tsc_after = hostclock_rdtsc();
	realtime_after = clock_ns(CLOCK_REALTIME);
	tai_after = clock_ns(CLOCK_TAI);

	assert_int_equal(s->backend, BACKEND_KVM_X86);
	assert_int_equal(s->n_vcpus, TEST_VCPUS);
	for (int i = 0; i < TEST_VCPUS; i++)
		assert_int_equal(s->offset_cycles[i], kvm_test_offset_get(t->vcpu_fds[i]));
	assert_int_equal(s->guest_tsc_khz, (uint32_t)khz);
	/* vCPUs never given a rate run at the host's: no scaling. */
	assert_int_equal(s->tsc_scaling_ratio, 0);

	/* KVM's own (realtime, host TSC) pair when it offers one, else a
	 * bracket taken inside read_state. */
	if ((clock.flags & (KVM_CLOCK_HOST_TSC | KVM_CLOCK_REALTIME)) ==
	    (KVM_CLOCK_HOST_TSC | KVM_CLOCK_REALTIME)) {
		assert_int_equal(s->anchor.source, ANCHOR_KVM_CLOCK);
	} else {
		assert_int_equal(s->anchor.source, ANCHOR_BRACKET);
		assert_true(s->anchor.tai_ns >= tai_before && s->anchor.tai_ns <= tai_after);
		assert_true(s->anchor.host_tsc >= tsc_before && s->anchor.host_tsc <= tsc_after);
	}
	assert_true(s->anchor.host_tsc_khz > 0);
	assert_true(abs_diff(s->anchor.tai_ns, tai_before) < NSEC_PER_SEC);
	/* kvmclock always leaves with a realtime, for KVM_SET_CLOCK. */
	assert_true(s->kvmclock.flags & KVM_CLOCK_REALTIME);
	assert_true(s->kvmclock.realtime_ns >= realtime_before - NSEC_PER_SEC &&
		    s->kvmclock.realtime_ns <= realtime_after);
	assert_int_equal(s->sync.unsynced, sync.unsynced);
	assert_int_equal(s->sync.tai_offset_s, sync.tai_offset_s);
}

static void test_read_state_refuses_vcpus_at_different_rates(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	_cleanup_free_ struct counter_state *s = calloc(1, sizeof(*s));
	int khz = ioctl(t->vcpu_fds[0], KVM_GET_TSC_KHZ, 0);

	assert_non_null(s);
	assert_true(khz > 1);
	/* 1 kHz below the host rate is inside KVM's tolerance, so any KVM with
	 * KVM_SET_TSC_KHZ takes it without scaling. */
	if (ioctl(t->vcpu_fds[1], KVM_SET_TSC_KHZ, (unsigned long)(khz - 1)) < 0 ||
	    ioctl(t->vcpu_fds[1], KVM_GET_TSC_KHZ, 0) != khz - 1) {
		print_message("skipped: this KVM does not take KVM_SET_TSC_KHZ=%d\n", khz - 1);
		skip();
	}
	assert_int_equal(backend_kvm_x86.read_state(&t->fds, s), -EINVAL);
}

static void test_apply_writes_plan_or_reports_readback_mismatch(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	_cleanup_free_ struct counter_state *src = calloc(1, sizeof(*src));
	_cleanup_free_ struct backend_apply_result *res = calloc(1, sizeof(*res));
	bool honours = kvm_honours_offsets(t->vcpu_fds[0]);
	int64_t slack_cycles;
	char expect[BACKEND_DETAIL_MAX];
	int r;

	assert_non_null(src);
	assert_non_null(res);
	assert_int_equal(backend_kvm_x86.read_state(&t->fds, src), 0);
	/* The source is this VM moved 2^30 cycles into the future, with
	 * distinct vCPU offsets: the plan's offsets are then never 0 (what
	 * kvm_pvm reads back) and the phase between vCPUs is visible. */
	for (uint32_t i = 0; i < src->n_vcpus; i++)
		src->offset_cycles[i] += (UINT64_C(1) << 30) + i * TEST_DELTA;

	r = backend_kvm_x86.apply(&t->fds, src, NULL, res);

	/* Same host, both anchors from the same clocks: the TAI elapsed
	 * between them and the TSC elapsed cancel up to the anchor widths and
	 * rounding; 10 ms of cycles is a generous bound. */
	slack_cycles = (int64_t)src->guest_tsc_khz * 10;
	assert_true(res->plan.delta_cycles > -slack_cycles &&
		    res->plan.delta_cycles < slack_cycles);
	assert_true(res->plan.elapsed_ns >= 0);
	for (uint32_t i = 0; i < src->n_vcpus; i++) {
		assert_int_equal(res->plan.offset_cycles[i] - res->plan.offset_cycles[0],
				 src->offset_cycles[i] - src->offset_cycles[0]);
	}
	assert_int_equal(res->readback.n_vcpus, TEST_VCPUS);
	assert_int_equal(res->anchor.source, src->anchor.source);
	assert_true(res->apply_ns > 0);
	assert_true(res->kvmclock_sets >= 1);

	if (honours) {
		assert_int_equal(r, 0);
		for (uint32_t i = 0; i < src->n_vcpus; i++) {
			assert_int_equal(res->readback.offset_cycles[i],
					 res->plan.offset_cycles[i]);
			assert_int_equal(kvm_test_offset_get(t->vcpu_fds[i]),
					 res->plan.offset_cycles[i]);
		}
	} else {
		print_message("this host ignores offsets: apply says \"%s\"\n", res->detail);
		assert_int_equal(r, -EIO);
		snprintf(expect, sizeof(expect),
			 "vCPU 0: wrote KVM_VCPU_TSC_OFFSET=%#llx, reads back %#llx",
			 (unsigned long long)res->plan.offset_cycles[0],
			 (unsigned long long)res->readback.offset_cycles[0]);
		assert_string_equal(res->detail, expect);
	}
}

/* The host's clocksource is the TSC: KVM can run a VM in master-clock
 * mode, where KVM_GET_CLOCK pairs kvmclock with its host TSC. */
static bool host_clocksource_is_tsc(void)
{
	char name[32] = "";
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");

	if (!f)
		return false;
	if (!fgets(name, sizeof(name), f))
		name[0] = '\0';
	fclose(f);
	return strcmp(name, "tsc\n") == 0;
}

static void test_apply_sets_kvmclock_where_the_tsc_says(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	_cleanup_free_ struct counter_state *src = calloc(1, sizeof(*src));
	_cleanup_free_ struct backend_apply_result *res = calloc(1, sizeof(*res));
	struct kvmclock_check c;
	int r;

	assert_non_null(src);
	assert_non_null(res);
	assert_int_equal(backend_kvm_x86.read_state(&t->fds, src), 0);
	/* Every vCPU moved alike: KVM keeps them matched, and with a TSC
	 * clocksource the VM enters master-clock mode at KVM_SET_CLOCK. */
	for (uint32_t i = 0; i < src->n_vcpus; i++)
		src->offset_cycles[i] += UINT64_C(1) << 30;
	r = backend_kvm_x86.apply(&t->fds, src, NULL, res);
	/* skip() jumps past the cleanup handlers: free first. */
	if (r == -EIO) {
		print_message("skipped: this host ignores offsets (%s)\n", res->detail);
		free(TAKE_PTR(src));
		free(TAKE_PTR(res));
		skip();
	}
	assert_int_equal(r, 0);
	assert_true(res->kvmclock_sets >= 1 && res->kvmclock_sets <= 4);
	if (!res->has_kvmclock_set_error) {
		/* Outside master-clock mode there is nothing to correct by. */
		assert_int_equal(res->kvmclock_sets, 1);
		print_message("skipped: KVM_GET_CLOCK pairs no host TSC here (clocksource %s)\n",
			      host_clocksource_is_tsc() ? "tsc" : "not tsc");
		free(TAKE_PTR(src));
		free(TAKE_PTR(res));
		skip();
	}
	print_message("kvmclock: first set off by %" PRId64 " ns, %u set(s), last %" PRId64 " ns\n",
		      res->kvmclock_first_set_error_ns, res->kvmclock_sets,
		      res->kvmclock_set_error_ns);
	/* Corrected until within 1 us, or the last try. */
	assert_true(llabs(res->kvmclock_set_error_ns) <= 1000 || res->kvmclock_sets == 4);
	assert_true(res->kvmclock_sets > 1 || llabs(res->kvmclock_first_set_error_ns) <= 1000);
	/* What the target's check finds after the offsets are written: the
	 * guest's kvmclock moved with its TSC from the source's reading to
	 * within what the last set left and a microsecond of reading. */
	counter_math_kvmclock_check(src, &res->clock_before, &res->readback, &c);
	print_message("kvmclock: check %s, %" PRId64 " ns\n", kvmclock_verdict_to_string(c.verdict),
		      c.error_ns);
	assert_int_equal(c.verdict, KVMCLOCK_OK);
	assert_true(llabs(c.error_ns - res->kvmclock_set_error_ns) <= 1000);
}

static void test_apply_refuses_vcpu_count_mismatch_before_writing(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	_cleanup_free_ struct counter_state *src = calloc(1, sizeof(*src));
	_cleanup_free_ struct backend_apply_result *res = calloc(1, sizeof(*res));
	uint64_t before[TEST_VCPUS];

	assert_non_null(src);
	assert_non_null(res);
	assert_int_equal(backend_kvm_x86.read_state(&t->fds, src), 0);
	for (int i = 0; i < TEST_VCPUS; i++)
		before[i] = kvm_test_offset_get(t->vcpu_fds[i]);
	src->n_vcpus = TEST_VCPUS - 1;
	src->offset_cycles[0] += TEST_DELTA;
	res->apply_ns = 42;

	assert_int_equal(backend_kvm_x86.apply(&t->fds, src, NULL, res), -EINVAL);
	assert_int_equal(res->apply_ns, 42); /* result untouched */
	for (int i = 0; i < TEST_VCPUS; i++)
		assert_int_equal(kvm_test_offset_get(t->vcpu_fds[i]), before[i]);
}

static void test_apply_refuses_elapsed_beyond_policy(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	_cleanup_free_ struct counter_state *src = calloc(1, sizeof(*src));
	_cleanup_free_ struct backend_apply_result *res = calloc(1, sizeof(*res));
	struct counter_policy policy = { .max_abs_elapsed_ns = NSEC_PER_SEC };

	assert_non_null(src);
	assert_non_null(res);
	assert_int_equal(backend_kvm_x86.read_state(&t->fds, src), 0);
	src->anchor.tai_ns -= 60 * NSEC_PER_SEC; /* a source a minute old */
	assert_int_equal(backend_kvm_x86.apply(&t->fds, src, &policy, res), -ERANGE);
}

static void test_select_picks_kvm_x86_where_offered(void **state)
{
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	char detail[BACKEND_DETAIL_MAX] = "";
	const struct backend_ops *ops = backend_select(&t->fds, detail, sizeof(detail));

	/* The kernel-patch/ backend comes first where the kernel has it
	 * (test_kvm_syscounter); here, the upstream one. */
	if (ops == &backend_kvm_syscounter)
		return;
	if (has_offset_attr(t->vcpu_fds[0])) {
		assert_ptr_equal(ops, &backend_kvm_x86);
	} else {
		assert_null(ops);
		assert_non_null(strstr(detail, "kvm-x86: KVM_VCPU_TSC_OFFSET not supported"));
	}
}

static void test_select_refuses_naming_what_is_missing(void **state)
{
	_cleanup_close_ int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	int fds[1] = { null_fd };
	struct kvm_vm_fds vm = { .vm_fd = null_fd, .n_vcpus = 1, .vcpu_fds = fds };
	char detail[BACKEND_DETAIL_MAX] = "";

	assert_true(null_fd >= 0);
	assert_null(backend_select(&vm, detail, sizeof(detail)));
	assert_string_equal(detail, "no counter backend for this VM: kvm-syscounter: "
				    "KVM_CHECK_EXTENSION on the VM fd: Inappropriate ioctl for "
				    "device; kvm-x86: KVM_VCPU_TSC_OFFSET not supported (Linux >= "
				    "5.16 needed)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_detect_accepts_kvm_with_tsc_offset_attr,
						vm_setup, kvm_test_vm_teardown),
		cmocka_unit_test(test_detect_refuses_fd_that_is_not_a_vcpu),
		cmocka_unit_test(test_detect_rejects_empty_vm),
		cmocka_unit_test_setup_teardown(test_probe_reports_whether_kvm_honours_offsets,
						vm_setup, kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_probe_never_writes_the_registered_vm, vm_setup,
						kvm_test_vm_teardown),
		cmocka_unit_test(test_probe_returns_errno_of_failed_ioctl),
		cmocka_unit_test_setup_teardown(test_read_state_reports_every_vcpu_rate_and_anchor,
						vm_setup, kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_read_state_refuses_vcpus_at_different_rates,
						vm_setup, kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_apply_writes_plan_or_reports_readback_mismatch,
						vm_setup, kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(
			test_apply_refuses_vcpu_count_mismatch_before_writing, vm_setup,
			kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_apply_sets_kvmclock_where_the_tsc_says,
						vm_setup, kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_apply_refuses_elapsed_beyond_policy, vm_setup,
						kvm_test_vm_teardown),
		cmocka_unit_test_setup_teardown(test_select_picks_kvm_x86_where_offered, vm_setup,
						kvm_test_vm_teardown),
		cmocka_unit_test(test_select_refuses_naming_what_is_missing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
