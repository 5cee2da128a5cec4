/* Rig payload for the kernel-patch/ kernel: checks KVM_CAP_SYSTEM_COUNTER_STATE and the
 * KVM_{GET,SET}_SYSTEM_COUNTER_STATE vCPU ioctls against KVM_VCPU_TSC_OFFSET. Build static. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "uapi/kvm_syscounter.h"

static int failures;

#define CHECK(cond, ...)                              \
	do {                                          \
		if (!(cond)) {                        \
			failures++;                   \
			printf("FAIL: " __VA_ARGS__); \
			printf("\n");                 \
		}                                     \
	} while (0)

static int attr_offset(int vcpu, unsigned long req, uint64_t *val)
{
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uint64_t)(uintptr_t)val,
	};

	return ioctl(vcpu, req, &attr) < 0 ? -errno : 0;
}

static int get_state(int vcpu, struct kvm_system_counter_state *st)
{
	memset(st, 0, sizeof(*st));
	return ioctl(vcpu, KVM_GET_SYSTEM_COUNTER_STATE, st) < 0 ? -errno : 0;
}

static int set_state(int vcpu, const struct kvm_system_counter_state *st)
{
	return ioctl(vcpu, KVM_SET_SYSTEM_COUNTER_STATE, st) < 0 ? -errno : 0;
}

/* A SET that must be refused with -EINVAL and leave the offset as it was. */
static void expect_einval(int vcpu, const char *what, const struct kvm_system_counter_state *st,
			  uint64_t offset_now)
{
	struct kvm_system_counter_state back;
	int r = set_state(vcpu, st);

	printf("set_%s=%d\n", what, r);
	CHECK(r == -EINVAL, "SET with %s returned %d, want %d", what, r, -EINVAL);
	CHECK(get_state(vcpu, &back) == 0 && back.tsc_offset == offset_now,
	      "SET with %s changed the offset to %" PRIu64, what, back.tsc_offset);
}

int main(void)
{
	struct kvm_system_counter_state st, base, bad;
	uint64_t attr_val, want;
	int kvm, vm, vcpu, r;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		printf("FAIL: open /dev/kvm: %s\n", strerror(errno));
		return 1;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		printf("FAIL: KVM_CREATE_VM: %s\n", strerror(errno));
		return 1;
	}
	r = ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_SYSTEM_COUNTER_STATE);
	printf("cap_system_counter_state=%d\n", r);
	if (r != 1) {
		printf("FAIL: KVM_CAP_SYSTEM_COUNTER_STATE not reported on the VM fd\n");
		return 1;
	}
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0) {
		printf("FAIL: KVM_CREATE_VCPU: %s\n", strerror(errno));
		return 1;
	}

	r = get_state(vcpu, &base);
	printf("get=%d flags=%u tsc_offset=%" PRIu64 " tsc_scaling_ratio=%" PRIu64
	       " tsc_frac_bits=%u\n",
	       r, base.flags, base.tsc_offset, base.tsc_scaling_ratio, base.tsc_frac_bits);
	CHECK(r == 0, "GET returned %d", r);
	CHECK(base.tsc_scaling_ratio == 1ULL << base.tsc_frac_bits,
	      "new vCPU's ratio %" PRIu64 " is not 1.0 with %u fractional bits",
	      base.tsc_scaling_ratio, base.tsc_frac_bits);
	CHECK(attr_offset(vcpu, KVM_GET_DEVICE_ATTR, &attr_val) == 0 && attr_val == base.tsc_offset,
	      "GET offset %" PRIu64 " differs from KVM_VCPU_TSC_OFFSET %" PRIu64, base.tsc_offset,
	      attr_val);

	/* Plain SET of an offset, read back both ways. */
	want = 1ULL << 40;
	memset(&st, 0, sizeof(st));
	st.tsc_offset = want;
	r = set_state(vcpu, &st);
	printf("set_offset=%" PRIu64 " rc=%d\n", want, r);
	CHECK(r == 0, "SET returned %d", r);
	r = get_state(vcpu, &st);
	attr_val = 0;
	attr_offset(vcpu, KVM_GET_DEVICE_ATTR, &attr_val);
	printf("get_offset=%" PRIu64 " attr_offset=%" PRIu64 "\n", st.tsc_offset, attr_val);
	CHECK(r == 0 && st.tsc_offset == want, "GET after SET read %" PRIu64, st.tsc_offset);
	CHECK(attr_val == want, "KVM_VCPU_TSC_OFFSET after SET read %" PRIu64, attr_val);

	/* The other direction: the attribute's write is what GET reports. */
	want = (uint64_t)-123456789;
	r = attr_offset(vcpu, KVM_SET_DEVICE_ATTR, &want);
	CHECK(r == 0, "KVM_SET_DEVICE_ATTR returned %d", r);
	r = get_state(vcpu, &st);
	printf("attr_set=%" PRIu64 " get_offset=%" PRIu64 "\n", want, st.tsc_offset);
	CHECK(r == 0 && st.tsc_offset == want, "GET after attribute write read %" PRIu64,
	      st.tsc_offset);

	/* SET with the ratio check and the ratio GET reported. */
	want = 3ULL << 40;
	st = base;
	st.flags = KVM_SYSTEM_COUNTER_STATE_CHECK_RATIO;
	st.tsc_offset = want;
	r = set_state(vcpu, &st);
	printf("set_check_ratio=%d\n", r);
	CHECK(r == 0, "SET with CHECK_RATIO and the current ratio returned %d", r);
	CHECK(get_state(vcpu, &st) == 0 && st.tsc_offset == want,
	      "GET after CHECK_RATIO SET read %" PRIu64, st.tsc_offset);

	/* Refusals: each must be -EINVAL and leave the offset alone. */
	memset(&bad, 0, sizeof(bad));
	bad.flags = 1U << 1;
	bad.tsc_offset = 7;
	expect_einval(vcpu, "unknown_flag", &bad, want);
	bad.flags = 1U << 31;
	expect_einval(vcpu, "flag31", &bad, want);
	memset(&bad, 0, sizeof(bad));
	bad.reserved[5] = 1;
	expect_einval(vcpu, "reserved5", &bad, want);
	memset(&bad, 0, sizeof(bad));
	bad.tsc_scaling_ratio = base.tsc_scaling_ratio;
	expect_einval(vcpu, "ratio_without_flag", &bad, want);
	bad = base;
	bad.flags = KVM_SYSTEM_COUNTER_STATE_CHECK_RATIO;
	bad.tsc_scaling_ratio = base.tsc_scaling_ratio + 1;
	expect_einval(vcpu, "wrong_ratio", &bad, want);
	bad = base;
	bad.flags = KVM_SYSTEM_COUNTER_STATE_CHECK_RATIO;
	bad.tsc_frac_bits = base.tsc_frac_bits + 1;
	expect_einval(vcpu, "wrong_frac_bits", &bad, want);

	memset(&st, 0, sizeof(st));
	st.flags = 1;
	r = ioctl(vcpu, KVM_GET_SYSTEM_COUNTER_STATE, &st) < 0 ? -errno : 0;
	printf("get_with_flags=%d\n", r);
	CHECK(r == -EINVAL, "GET with input flags returned %d, want %d", r, -EINVAL);

	printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
