/* kvm_syscounter.c - the backend for the vCPU ioctls this project's kernel
 * series adds (kernel-patch/): KVM_GET/SET_SYSTEM_COUNTER_STATE, advertised
 * per VM by KVM_CAP_SYSTEM_COUNTER_STATE. On x86 the state is the L1 TSC
 * offset plus KVM's own scaling ratio, so unlike the upstream attribute
 * nothing has to be derived from the CPU vendor and the two rates, and a
 * ratio changed behind our back refuses the write (CHECK_RATIO) instead of
 * landing an offset computed for another rate. Everything around the
 * offsets is the x86 machinery in kvm_x86.c: the state is arch x86-tsc and
 * applies on an unpatched target, and the other way round. */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/kvm.h>

#include "backend.h"
#include "kvm_x86.h"
#include "uapi/kvm_syscounter.h"

static int syscounter_get(int vcpu_fd, struct tsc_vcpu_state *ret)
{
	struct kvm_system_counter_state st;

	memset(&st, 0, sizeof(st));
	if (ioctl(vcpu_fd, KVM_GET_SYSTEM_COUNTER_STATE, &st) < 0)
		return -errno;
	*ret = (struct tsc_vcpu_state){
		.offset = st.tsc_offset,
		.ratio = st.tsc_scaling_ratio,
		.frac_bits = st.tsc_frac_bits,
	};
	return 0;
}

static int syscounter_set(int vcpu_fd, const struct tsc_vcpu_state *want)
{
	struct kvm_system_counter_state st;

	memset(&st, 0, sizeof(st));
	st.flags = KVM_SYSTEM_COUNTER_STATE_CHECK_RATIO;
	st.tsc_frac_bits = want->frac_bits;
	st.tsc_offset = want->offset;
	st.tsc_scaling_ratio = want->ratio;
	if (ioctl(vcpu_fd, KVM_SET_SYSTEM_COUNTER_STATE, &st) < 0)
		return -errno;
	return 0;
}

/* Run by the probe on its scratch vCPU once the written state read back:
 * where the upstream attribute exists it must show the very offset the
 * ioctl wrote, or the two do not address the same state and nothing
 * computed from one may be written with the other. */
static int syscounter_verify(int scratch_vcpu_fd, const struct tsc_vcpu_state *written,
			     char *detail, size_t detail_size)
{
	uint64_t attr_offset;

	if (kvm_x86_get_tsc_offset(scratch_vcpu_fd, &attr_offset) < 0 ||
	    attr_offset == written->offset)
		return 1;
	kvm_x86_detail(detail, detail_size,
		       "offset control unavailable: KVM_SET_SYSTEM_COUNTER_STATE wrote offset "
		       "%#llx on a scratch VM but KVM_VCPU_TSC_OFFSET reads %#llx",
		       (unsigned long long)written->offset, (unsigned long long)attr_offset);
	return 0;
}

static const struct kvm_x86_tsc_access syscounter_access = {
	.kind = BACKEND_KVM_SYSCOUNTER,
	.name = "KVM_SYSTEM_COUNTER_STATE",
	.reports_ratio = true,
	.get = syscounter_get,
	.set = syscounter_set,
	.verify = syscounter_verify,
};

static int syscounter_detect(const struct kvm_vm_fds *vm, char *detail, size_t detail_size)
{
	int r;

	r = kvm_x86_vm_fds_check(vm);
	if (r < 0) {
		kvm_x86_detail(detail, detail_size, "invalid VM/vCPU fds");
		return r;
	}
	/* On the VM fd: the answer may depend on the VM (api.rst 4.4,
	 * KVM_CAP_CHECK_EXTENSION_VM). */
	r = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYSTEM_COUNTER_STATE);
	if (r > 0)
		return 0;
	if (r == 0) {
		kvm_x86_detail(detail, detail_size,
			       "KVM_CAP_SYSTEM_COUNTER_STATE not offered (a kernel without "
			       "vcounterd's kernel-patch/)");
		return -EOPNOTSUPP;
	}
	r = -errno;
	if (r == -ENOTTY || r == -EINVAL) {
		kvm_x86_detail(detail, detail_size, "KVM_CHECK_EXTENSION on the VM fd: %s",
			       strerror(-r));
		return -EOPNOTSUPP;
	}
	kvm_x86_detail(detail, detail_size, "KVM_CHECK_EXTENSION on the VM fd: %s", strerror(-r));
	return r;
}

/* The generic probe on a scratch VM (kvm_x86_tsc_probe()), with the
 * cross-check of syscounter_verify(): the registered VM is only read. */
static int syscounter_probe(const struct kvm_vm_fds *vm, bool *ret_offset_control, char *detail,
			    size_t detail_size)
{
	return kvm_x86_tsc_probe(&syscounter_access, vm, ret_offset_control, detail, detail_size);
}

static int syscounter_read_state(const struct kvm_vm_fds *vm, struct counter_state *ret_state)
{
	return kvm_x86_tsc_read_state(&syscounter_access, vm, ret_state);
}

static int syscounter_apply(const struct kvm_vm_fds *vm, const struct counter_state *src,
			    const struct counter_policy *policy, struct backend_apply_result *ret)
{
	return kvm_x86_tsc_apply(&syscounter_access, vm, src, policy, ret);
}

const struct backend_ops backend_kvm_syscounter = {
	.kind = BACKEND_KVM_SYSCOUNTER,
	.detect = syscounter_detect,
	.probe = syscounter_probe,
	.read_state = syscounter_read_state,
	.apply = syscounter_apply,
};
