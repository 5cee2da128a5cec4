/* kvm_x86.c - the upstream x86 backend: per-vCPU KVM_VCPU_TSC_OFFSET plus
 * KVM_GET/SET_CLOCK with KVM_CLOCK_REALTIME (Linux 5.16+). */
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "backend.h"
#include "clockns.h"
#include "kvm_scratch.h"
#include "kvm_x86.h"
#include "hostclock.h"
#include "macro.h"

/* What the probe adds to the scratch vCPU's offset: 2^24 cycles (~7 ms at
 * 2.4 GHz), far from any value a kernel might round or clamp an offset to. */
#define PROBE_DELTA_CYCLES UINT64_C(0x1000000)

/* KVM's default tsc_tolerance_ppm (arch/x86/kvm/x86.c): KVM_SET_TSC_KHZ
 * within this many ppm of the host rate does not turn on scaling. */
#define KVM_TSC_TOLERANCE_PPM_DEFAULT 250
#define KVM_TSC_TOLERANCE_PPM_PATH    "/sys/module/kvm/parameters/tsc_tolerance_ppm"

/* kvm_caps.tsc_scaling_ratio_frac_bits: 48 in vmx_hardware_setup(), 32 in
 * svm_hardware_setup(). */
#define TSC_SCALING_FRAC_BITS_VMX 48
#define TSC_SCALING_FRAC_BITS_SVM 32

/* The kernel's TAI offset (adjtimex) and a clock reading are separate reads;
 * a leap second between them would skew the anchor by 1 s, so retry. */
#define ANCHOR_TRIES 3

__extension__ typedef unsigned __int128 kvm_x86_u128;

/* The host TSC rate does not change while a process runs (the backend needs
 * constant_tsc anyway), and measuring it takes ~20 ms (hostclock.h), which
 * must not land inside a blackout: measured once, then cached. */
static _Atomic uint32_t cached_host_tsc_khz;

void kvm_x86_detail(char *detail, size_t detail_size, const char *fmt, ...)
{
	va_list ap;

	if (!detail || detail_size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(detail, detail_size, fmt, ap);
	va_end(ap);
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC: constant but for slewing (at most
 * 500 ppm) unless the host clock is stepped. */
static int realtime_mark(int64_t *ret_ns)
{
	struct timespec real, mono;

	if (clock_gettime(CLOCK_MONOTONIC, &mono) < 0 || clock_gettime(CLOCK_REALTIME, &real) < 0)
		return -errno;
	*ret_ns = (int64_t)(timespec_ns(&real) - timespec_ns(&mono));
	return 0;
}

int kvm_x86_vm_fds_check(const struct kvm_vm_fds *vm)
{
	if (!vm || vm->vm_fd < 0 || !vm->vcpu_fds)
		return -EINVAL;
	if (vm->n_vcpus == 0 || vm->n_vcpus > VC_MAX_VCPUS)
		return -EINVAL;
	for (uint32_t i = 0; i < vm->n_vcpus; i++)
		if (vm->vcpu_fds[i] < 0)
			return -EINVAL;
	return 0;
}

int kvm_x86_get_tsc_offset(int vcpu_fd, uint64_t *ret_offset)
{
	uint64_t offset = 0;
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uint64_t)(uintptr_t)&offset,
	};

	if (ioctl(vcpu_fd, KVM_GET_DEVICE_ATTR, &attr) < 0)
		return -errno;
	*ret_offset = offset;
	return 0;
}

int kvm_x86_set_tsc_offset(int vcpu_fd, uint64_t offset)
{
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uint64_t)(uintptr_t)&offset,
	};

	if (ioctl(vcpu_fd, KVM_SET_DEVICE_ATTR, &attr) < 0)
		return -errno;
	return 0;
}

static int attr_get(int vcpu_fd, struct tsc_vcpu_state *ret)
{
	*ret = (struct tsc_vcpu_state){ 0 };
	return kvm_x86_get_tsc_offset(vcpu_fd, &ret->offset);
}

static int attr_set(int vcpu_fd, const struct tsc_vcpu_state *st)
{
	return kvm_x86_set_tsc_offset(vcpu_fd, st->offset);
}

/* The upstream interface has no ratio: it is derived from the rates. */
static const struct kvm_x86_tsc_access attr_access = {
	.kind = BACKEND_KVM_X86,
	.name = "KVM_VCPU_TSC_OFFSET",
	.reports_ratio = false,
	.get = attr_get,
	.set = attr_set,
};

/* KVM_GET_CLOCK. Outside master-clock mode KVM gives no host TSC with the
 * clock; the midpoint of rdtsc around the ioctl stands in (flags still say
 * KVM did not give it), the narrowest of VM_CLOCK_TRIES brackets, its width
 * kept, so that kvmclock can be compared with the guest's TSC
 * (counter_math_kvmclock_check): a preempted ioctl is one wide bracket. */
#define VM_CLOCK_TRIES 4

static int vm_get_clock(int vm_fd, struct kvmclock_state *ret_clock)
{
	struct kvmclock_state best = { 0 };

	for (int try = 0; try < VM_CLOCK_TRIES; try++) {
		struct kvm_clock_data data = { 0 };
		uint64_t tsc_before, tsc_after;

		tsc_before = hostclock_rdtsc();
		if (ioctl(vm_fd, KVM_GET_CLOCK, &data) < 0)
			return -errno;
		tsc_after = hostclock_rdtsc();
		if (data.flags & KVM_CLOCK_HOST_TSC) {
			best = (struct kvmclock_state){
				.clock_ns = data.clock,
				.flags = data.flags,
				.realtime_ns = data.realtime,
				.host_tsc = data.host_tsc,
			};
			break;
		}
		if (tsc_after < tsc_before) /* no TSC to pair with: keep KVM's reading */
			tsc_after = tsc_before = 0;
		if (try > 0 && best.host_tsc && tsc_after - tsc_before >= best.host_tsc_width)
			continue;
		best = (struct kvmclock_state){
			.clock_ns = data.clock,
			.flags = data.flags,
			.realtime_ns = data.realtime,
			.host_tsc = tsc_before + (tsc_after - tsc_before) / 2,
			.host_tsc_width = tsc_after - tsc_before,
		};
	}
	*ret_clock = best;
	return 0;
}

/* KVM_GET_TSC_KHZ returns the rate as the ioctl's value (api.rst 4.56). */
static int vm_guest_tsc_khz(const struct kvm_vm_fds *vm, uint32_t *ret_khz)
{
	uint32_t khz0 = 0;

	for (uint32_t i = 0; i < vm->n_vcpus; i++) {
		int khz = ioctl(vm->vcpu_fds[i], KVM_GET_TSC_KHZ, 0);

		if (khz < 0)
			return -errno;
		/* 0: KVM does not know the rate (no stable host TSC). */
		if (khz == 0)
			return -EINVAL;
		if (i == 0)
			khz0 = (uint32_t)khz;
		else if ((uint32_t)khz != khz0)
			return -EINVAL; /* one guest TSC rate per VM, or no one offset math */
	}
	*ret_khz = khz0;
	return 0;
}

static int host_tsc_khz(uint32_t *ret_khz)
{
	uint32_t khz = atomic_load(&cached_host_tsc_khz);
	int r;

	if (khz == 0) {
		r = hostclock_tsc_khz(&khz);
		if (r < 0)
			return r;
		atomic_store(&cached_host_tsc_khz, khz);
	}
	*ret_khz = khz;
	return 0;
}

/* KVM's frac bits depend on whether kvm_intel or kvm_amd runs, i.e. on the
 * CPU vendor (Hygon is SVM too). */
static int tsc_scaling_frac_bits(uint32_t *ret_frac_bits)
{
	unsigned int eax, ebx, ecx, edx;
	char vendor[13];

	if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx))
		return -EOPNOTSUPP;
	memcpy(vendor, &ebx, 4);
	memcpy(vendor + 4, &edx, 4);
	memcpy(vendor + 8, &ecx, 4);
	vendor[12] = '\0';
	if (strcmp(vendor, "GenuineIntel") == 0)
		*ret_frac_bits = TSC_SCALING_FRAC_BITS_VMX;
	else if (strcmp(vendor, "AuthenticAMD") == 0 || strcmp(vendor, "HygonGenuine") == 0)
		*ret_frac_bits = TSC_SCALING_FRAC_BITS_SVM;
	else
		return -EOPNOTSUPP;
	return 0;
}

static uint32_t kvm_tsc_tolerance_ppm(void)
{
	_cleanup_close_ int fd = -1;
	char buf[16];
	unsigned long ppm;
	ssize_t n;
	char *end;

	fd = open(KVM_TSC_TOLERANCE_PPM_PATH, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return KVM_TSC_TOLERANCE_PPM_DEFAULT;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return KVM_TSC_TOLERANCE_PPM_DEFAULT;
	buf[n] = '\0';
	errno = 0;
	ppm = strtoul(buf, &end, 10);
	if (errno != 0 || end == buf || ppm > 1000000)
		return KVM_TSC_TOLERANCE_PPM_DEFAULT;
	return (uint32_t)ppm;
}

/* The ratio KVM programs for a guest rate, as kvm_set_tsc_khz() and
 * set_tsc_khz() in arch/x86/kvm/x86.c do: no scaling when the guest rate is
 * within tsc_tolerance_ppm of the host rate (adjust_tsc_khz() bounds), else
 * mul_u64_u32_div(1 << frac_bits, guest_khz, host_khz), truncated.
 * host_khz is hostclock's reading, which may be a few ppm off the kernel's
 * tsc_khz; the tolerance window absorbs that for unscaled guests. */
static int tsc_scaling(uint32_t guest_khz, uint32_t host_khz, uint64_t *ret_ratio,
		       uint32_t *ret_frac_bits)
{
	uint32_t frac_bits = 0, ppm;
	uint64_t lo, hi;
	kvm_x86_u128 ratio;
	int r;

	r = tsc_scaling_frac_bits(&frac_bits);
	if (guest_khz == host_khz) {
		*ret_ratio = 0;
		*ret_frac_bits = r < 0 ? 0 : frac_bits;
		return 0;
	}
	ppm = kvm_tsc_tolerance_ppm();
	lo = (uint64_t)host_khz * (1000000 - ppm) / 1000000;
	hi = (uint64_t)host_khz * (1000000 + ppm) / 1000000;
	if (guest_khz >= lo && guest_khz <= hi) {
		*ret_ratio = 0;
		*ret_frac_bits = r < 0 ? 0 : frac_bits;
		return 0;
	}
	if (r < 0)
		return r;
	ratio = ((kvm_x86_u128)guest_khz << frac_bits) / host_khz;
	if (ratio == 0 || ratio > UINT64_MAX)
		return -ERANGE;
	*ret_ratio = (uint64_t)ratio;
	*ret_frac_bits = frac_bits;
	return 0;
}

/* A host anchor for this VM (DESIGN.md section 7): KVM_GET_CLOCK's own
 * (realtime, host_tsc) pair when it has both flags, else a bracket. The
 * kvmclock reading always leaves with a realtime: without KVM's, the
 * CLOCK_REALTIME read right after the ioctl stands in, and
 * KVM_CLOCK_REALTIME is set to say realtime_ns is valid, so that the target's
 * KVM_SET_CLOCK can advance the clock by what elapsed. */
static int take_anchor(const struct kvm_vm_fds *vm, uint32_t host_khz,
		       struct kvmclock_state *ret_clock, uint32_t *ret_kvm_flags,
		       struct host_anchor *ret_anchor, struct sync_error *ret_sync)
{
	const uint32_t need = KVM_CLOCK_HOST_TSC | KVM_CLOCK_REALTIME;

	for (int try = 0; try < ANCHOR_TRIES; try++) {
		struct kvmclock_state clock;
		struct host_anchor anchor;
		struct sync_error sync, sync_after;
		uint32_t kvm_flags;
		struct timespec now;
		int r;

		r = hostclock_sync_error(&sync);
		if (r < 0)
			return r;
		r = vm_get_clock(vm->vm_fd, &clock);
		if (r < 0)
			return r;
		kvm_flags = clock.flags;
		if ((clock.flags & need) == need) {
			r = hostclock_anchor_from_kvmclock(&clock, sync.tai_offset_s, host_khz,
							   &anchor);
			if (r < 0)
				return r;
		} else {
			if (clock_gettime(CLOCK_REALTIME, &now) < 0)
				return -errno;
			clock.realtime_ns = timespec_ns(&now);
			clock.flags |= KVM_CLOCK_REALTIME;
			r = hostclock_bracket_anchor(host_khz, &anchor);
			if (r < 0)
				return r;
		}
		r = hostclock_sync_error(&sync_after);
		if (r < 0)
			return r;
		if (sync_after.tai_offset_s != sync.tai_offset_s)
			continue;

		*ret_clock = clock;
		if (ret_kvm_flags)
			*ret_kvm_flags = kvm_flags;
		*ret_anchor = anchor;
		*ret_sync = sync_after;
		return 0;
	}
	return -EAGAIN;
}

static int kvm_x86_detect(const struct kvm_vm_fds *vm, char *detail, size_t detail_size)
{
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
	};
	int r;

	r = kvm_x86_vm_fds_check(vm);
	if (r < 0) {
		kvm_x86_detail(detail, detail_size, "invalid VM/vCPU fds");
		return r;
	}
	if (ioctl(vm->vcpu_fds[0], KVM_HAS_DEVICE_ATTR, &attr) == 0)
		return 0;
	r = -errno;
	/* EINVAL: x86 KVM before 5.16 has no vCPU device attributes
	 * (kvm_arch_vcpu_ioctl()'s default case); ENXIO: group or attribute
	 * unknown (kvm_arch_tsc_has_attr()); ENOTTY: not a KVM vCPU fd at all.
	 * Anything else (EIO: another process's VM) is a real failure. */
	if (r == -ENXIO || r == -EINVAL || r == -ENOTTY) {
		kvm_x86_detail(detail, detail_size,
			       "KVM_VCPU_TSC_OFFSET not supported (Linux >= 5.16 needed)");
		return -EOPNOTSUPP;
	}
	kvm_x86_detail(detail, detail_size,
		       "KVM_HAS_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET) on vCPU 0: %s", strerror(-r));
	return r;
}

static void scratch_vm_closep(struct kvm_scratch_vm *s)
{
	kvm_scratch_vm_close(s);
}

/* Write-then-read-back, on a scratch VM of this process, never on the
 * registered one. The registered VM may have run (a QEMU started before
 * vcounterd, a daemon restarted without its fd store): writing its vCPU 0
 * and restoring it would move the guest's TSC forward and back, and race
 * with KVM_RUN wherever the vCPUs were not paused. The scratch VM answers
 * for it: same host, same KVM module, and KVM's TSC state (the offsets, and
 * the matching of kvm_synchronize_tsc() in struct kvm_arch) is per VM, so
 * nothing done to the scratch VM reaches another. The registered VM's vCPU
 * 0 is read, which also proves the interface works on its fds. The write
 * stays: a KVM may accept an offset and ignore it (kvm_pvm, DESIGN.md
 * section 4). */
int kvm_x86_tsc_probe(const struct kvm_x86_tsc_access *acc, const struct kvm_vm_fds *vm,
		      bool *ret_offset_control, char *detail, size_t detail_size)
{
	_cleanup_(scratch_vm_closep) struct kvm_scratch_vm scratch = KVM_SCRATCH_VM_INIT;
	struct tsc_vcpu_state registered, original, written, readback;
	unsigned long long create_us;
	uint32_t host_khz;
	int r;

	r = kvm_x86_vm_fds_check(vm);
	if (r < 0 || !ret_offset_control) {
		kvm_x86_detail(detail, detail_size, "invalid VM/vCPU fds");
		return -EINVAL;
	}

	r = acc->get(vm->vcpu_fds[0], &registered);
	if (r < 0) {
		kvm_x86_detail(detail, detail_size, "reading %s of vCPU 0: %s", acc->name,
			       strerror(-r));
		return r;
	}

	r = kvm_scratch_vm_create(&scratch, detail, detail_size);
	if (r < 0)
		return r;
	create_us = (unsigned long long)(scratch.create_ns / NSEC_PER_USEC);
	r = acc->get(scratch.vcpu_fd, &original);
	if (r < 0) {
		kvm_x86_detail(detail, detail_size, "reading %s of the scratch VM's vCPU 0: %s",
			       acc->name, strerror(-r));
		return r;
	}
	/* Never write 0: kvm_pvm reads every offset back as 0, and would then
	 * look like a KVM that honoured the write. The ratio goes back as read:
	 * an interface that checks it must accept its own. */
	written = original;
	written.offset = original.offset + PROBE_DELTA_CYCLES;
	if (written.offset == 0)
		written.offset += PROBE_DELTA_CYCLES;

	r = acc->set(scratch.vcpu_fd, &written);
	if (r < 0) {
		kvm_x86_detail(detail, detail_size, "writing %s of the scratch VM's vCPU 0: %s",
			       acc->name, strerror(-r));
		return r;
	}
	r = acc->get(scratch.vcpu_fd, &readback);
	if (r < 0) {
		kvm_x86_detail(detail, detail_size,
			       "reading %s of the scratch VM's vCPU 0 after a write: %s", acc->name,
			       strerror(-r));
		return r;
	}
	if (readback.offset != written.offset) {
		kvm_x86_detail(detail, detail_size,
			       "offset control unavailable: KVM accepted %s=%#llx on a scratch VM "
			       "but reads back %#llx (this host's KVM ignores TSC offsets, e.g. "
			       "kvm_pvm)",
			       acc->name, (unsigned long long)written.offset,
			       (unsigned long long)readback.offset);
		*ret_offset_control = false;
		return 0;
	}
	if (acc->verify) {
		r = acc->verify(scratch.vcpu_fd, &written, detail, detail_size);
		if (r < 0)
			return r;
		if (r == 0) {
			*ret_offset_control = false;
			return 0;
		}
	}

	/* Registration is the time to pay for measuring the host TSC rate
	 * (~20 ms), not the apply inside a blackout. */
	r = host_tsc_khz(&host_khz);
	if (r < 0) {
		kvm_x86_detail(detail, detail_size, "host TSC frequency unknown: %s", strerror(-r));
		return r;
	}

	kvm_x86_detail(detail, detail_size,
		       "offset control available: %s=%#llx read back exactly on a scratch VM "
		       "(created in %llu us%s); this VM's vCPU 0 was read, not written",
		       acc->name, (unsigned long long)written.offset, create_us,
		       scratch.kvm_fd_held ? ", from this process's own " KVM_SCRATCH_DEV_PATH " fd"
					   : "");
	*ret_offset_control = true;
	return 0;
}

/* KVM keeps "no scaling" as the default ratio, 1 << frac_bits with TSC
 * scaling hardware, 0 without; counter_state says 0 for both. */
static uint64_t ratio_normalised(uint64_t ratio, uint32_t frac_bits)
{
	if (frac_bits < 64 && ratio == UINT64_C(1) << frac_bits)
		return 0;
	return ratio;
}

/* Guest rate, scaling ratio and the host rate: what read_state and the
 * target side of apply both need. *ret_raw is vCPU 0's state as the access
 * read it (the ratio as KVM holds it, for interfaces that check it). */
static int read_rates(const struct kvm_x86_tsc_access *acc, const struct kvm_vm_fds *vm,
		      uint32_t *ret_guest_khz, uint64_t *ret_ratio, uint32_t *ret_frac_bits,
		      uint32_t *ret_host_khz, struct tsc_vcpu_state *ret_raw)
{
	struct tsc_vcpu_state raw = { 0 };
	uint32_t guest_khz = 0, host_khz = 0, frac_bits = 0;
	uint64_t ratio = 0;
	int r;

	r = vm_guest_tsc_khz(vm, &guest_khz);
	if (r < 0)
		return r;
	r = host_tsc_khz(&host_khz);
	if (r < 0)
		return r;
	if (acc->reports_ratio) {
		r = acc->get(vm->vcpu_fds[0], &raw);
		if (r < 0)
			return r;
		ratio = ratio_normalised(raw.ratio, raw.frac_bits);
		frac_bits = raw.frac_bits;
	} else {
		r = tsc_scaling(guest_khz, host_khz, &ratio, &frac_bits);
		if (r < 0)
			return r;
	}
	*ret_guest_khz = guest_khz;
	*ret_ratio = ratio;
	*ret_frac_bits = frac_bits;
	*ret_host_khz = host_khz;
	*ret_raw = raw;
	return 0;
}

/* Every vCPU's offset; with a reporting access, every vCPU must run at
 * vCPU 0's ratio (one guest TSC rate per VM, or no one delta). */
static int read_offsets(const struct kvm_x86_tsc_access *acc, const struct kvm_vm_fds *vm,
			const struct tsc_vcpu_state *raw0, uint64_t *ret_offsets)
{
	for (uint32_t i = 0; i < vm->n_vcpus; i++) {
		struct tsc_vcpu_state st;
		int r = acc->get(vm->vcpu_fds[i], &st);

		if (r < 0)
			return r;
		if (acc->reports_ratio &&
		    (st.ratio != raw0->ratio || st.frac_bits != raw0->frac_bits))
			return -EINVAL;
		ret_offsets[i] = st.offset;
	}
	return 0;
}

int kvm_x86_tsc_read_state(const struct kvm_x86_tsc_access *acc, const struct kvm_vm_fds *vm,
			   struct counter_state *ret_state)
{
	_cleanup_free_ struct counter_state *state = NULL;
	struct tsc_vcpu_state raw0;
	uint32_t host_khz;
	int r;

	r = kvm_x86_vm_fds_check(vm);
	if (r < 0 || !ret_state)
		return -EINVAL;
	state = calloc(1, sizeof(*state));
	if (!state)
		return -ENOMEM;

	state->backend = acc->kind;
	state->arch = COUNTER_ARCH_X86_TSC;
	state->n_vcpus = vm->n_vcpus;
	r = read_rates(acc, vm, &state->guest_tsc_khz, &state->tsc_scaling_ratio,
		       &state->tsc_scaling_frac_bits, &host_khz, &raw0);
	if (r < 0)
		return r;
	/* vcpu.rst section 4 step order: the clock (and our anchor), then the
	 * offsets. Offsets do not change unless someone writes them, so the
	 * order only matters for a guest writing its TSC, which is paused on
	 * the source's final read. */
	r = take_anchor(vm, host_khz, &state->kvmclock, NULL, &state->anchor, &state->sync);
	if (r < 0)
		return r;
	r = read_offsets(acc, vm, &raw0, state->offset_cycles);
	if (r < 0)
		return r;

	memcpy(ret_state, state, sizeof(*state));
	return 0;
}

/* KVM_SET_CLOCK, then again corrected by what kvmclock reads back
 * (counter_math_kvmclock_set_error: KVM's first set of a VM runs ahead of
 * the plan, tens of us on a loaded host), at most this many times in all,
 * until within this much: the VM is paused, a set changes nothing else. */
#define KVMCLOCK_SET_TRIES    4
#define KVMCLOCK_SET_SLACK_NS 1000

static int set_clock(const struct kvm_vm_fds *vm, const struct counter_state *src,
		     const struct counter_target *target, struct kvm_clock_data *set,
		     struct backend_apply_result *res)
{
	res->kvmclock_sets = 0;
	res->has_kvmclock_set_error = false;
	for (;;) {
		struct kvmclock_state now;
		int64_t error;
		int r;

		if (ioctl(vm->vm_fd, KVM_SET_CLOCK, set) < 0)
			return -errno;
		res->kvmclock_sets++;
		r = vm_get_clock(vm->vm_fd, &now);
		if (r < 0)
			return r;
		/* Outside master-clock mode KVM pairs no host TSC: unmeasured. */
		if (counter_math_kvmclock_set_error(src, target, &res->plan, &now, &error) < 0)
			return 0;
		if (!res->has_kvmclock_set_error)
			res->kvmclock_first_set_error_ns = error;
		res->has_kvmclock_set_error = true;
		res->kvmclock_set_error_ns = error;
		if (llabs(error) <= KVMCLOCK_SET_SLACK_NS ||
		    res->kvmclock_sets == KVMCLOCK_SET_TRIES ||
		    (error > 0 && (uint64_t)error > set->clock))
			return 0;
		set->clock -= (uint64_t)error;
	}
}

/* A host clock step during an apply (realtime_mark moved by more than
 * this) has it done again, up to APPLY_TRIES times in all. */
#define APPLY_CLOCK_STEP_NS 100000
#define APPLY_TRIES	    3

int kvm_x86_tsc_apply(const struct kvm_x86_tsc_access *acc, const struct kvm_vm_fds *vm,
		      const struct counter_state *src, const struct counter_policy *policy,
		      struct backend_apply_result *ret)
{
	_cleanup_free_ struct backend_apply_result *res = NULL;
	struct counter_target target = { .arch = COUNTER_ARCH_X86_TSC };
	struct kvmclock_state clock_now;
	struct kvm_clock_data set = { 0 };
	uint32_t kvm_flags_now = 0;
	struct tsc_vcpu_state raw0;
	uint64_t t0 = 0, t1 = 0;
	uint32_t host_khz;
	int r;

	r = kvm_x86_vm_fds_check(vm);
	if (r < 0 || !src || !ret)
		return -EINVAL;
	res = calloc(1, sizeof(*res));
	if (!res)
		return -ENOMEM;

	target.n_vcpus = vm->n_vcpus;
	r = read_rates(acc, vm, &target.guest_tsc_khz, &target.tsc_scaling_ratio,
		       &target.tsc_scaling_frac_bits, &host_khz, &raw0);
	if (r < 0)
		return r;
	/* The anchor, the plan and KVM_SET_CLOCK must see one host clock: a
	 * step in between (a time daemon's, ptp4l's servo jumping) would have
	 * kvmclock count it and the TSC not. Seen, the apply is done again
	 * (the VM has not run: writing twice is harmless). */
	for (int try = 0;; try++) {
		int64_t mark0, mark1;

		r = realtime_mark(&mark0);
		if (r < 0)
			return r;
		r = take_anchor(vm, host_khz, &clock_now, &kvm_flags_now, &target.anchor,
				&target.sync);
		if (r < 0)
			return r;
		r = counter_math_plan(src, &target, policy, &res->plan);
		if (r < 0)
			return r;

		/* Source realtime present: KVM adds (its CLOCK_REALTIME now -
		 * realtime) to clock when that is positive (api.rst 4.30
		 * KVM_SET_CLOCK), holding it as the plan holds the TSC. Absent:
		 * account the anchors' elapsed time ourselves (never negative:
		 * the plan holds a clock behind). */
		set = (struct kvm_clock_data){ .clock = res->plan.kvmclock.clock_ns };
		if (res->plan.kvmclock.flags & KVM_CLOCK_REALTIME) {
			set.flags = KVM_CLOCK_REALTIME;
			set.realtime = res->plan.kvmclock.realtime_ns;
		} else {
			set.clock += (uint64_t)res->plan.elapsed_ns;
		}

		/* vcpu.rst section 4 order: KVM_SET_CLOCK (step 4), then every
		 * vCPU's offset (step 7). An access that checks the ratio is
		 * handed the one the plan was computed for: a ratio changed
		 * since is refused, not written over. */
		t0 = clock_ns(CLOCK_MONOTONIC);
		r = set_clock(vm, src, &target, &set, res);
		if (r < 0)
			return r;
		r = realtime_mark(&mark1);
		if (r < 0)
			return r;
		for (uint32_t i = 0; i < vm->n_vcpus; i++) {
			struct tsc_vcpu_state st = raw0;

			st.offset = res->plan.offset_cycles[i];
			r = acc->set(vm->vcpu_fds[i], &st);
			if (r < 0)
				return r;
		}
		if (llabs(mark1 - mark0) <= APPLY_CLOCK_STEP_NS || try + 1 == APPLY_TRIES)
			break;
	}
	t1 = clock_ns(CLOCK_MONOTONIC);

	res->readback.backend = acc->kind;
	res->readback.arch = COUNTER_ARCH_X86_TSC;
	res->readback.guest_tsc_khz = target.guest_tsc_khz;
	res->readback.tsc_scaling_ratio = target.tsc_scaling_ratio;
	res->readback.tsc_scaling_frac_bits = target.tsc_scaling_frac_bits;
	res->readback.n_vcpus = vm->n_vcpus;
	res->readback.anchor = target.anchor;
	res->readback.sync = target.sync;
	r = read_offsets(acc, vm, &raw0, res->readback.offset_cycles);
	if (r < 0)
		return r;
	r = vm_get_clock(vm->vm_fd, &res->readback.kvmclock);
	if (r < 0)
		return r;
	res->anchor = target.anchor;
	res->sync = target.sync;
	res->clock_before = clock_now;
	res->clock_before.flags = kvm_flags_now;
	res->apply_ns = t1 - t0;

	r = 0;
	for (uint32_t i = 0; i < vm->n_vcpus; i++) {
		if (res->readback.offset_cycles[i] == res->plan.offset_cycles[i])
			continue;
		snprintf(res->detail, sizeof(res->detail),
			 "vCPU %u: wrote %s=%#llx, reads back %#llx", i, acc->name,
			 (unsigned long long)res->plan.offset_cycles[i],
			 (unsigned long long)res->readback.offset_cycles[i]);
		r = -EIO;
		break;
	}
	/* On -EIO too: the offsets were written, the caller must see what the
	 * VM holds now. */
	memcpy(ret, res, sizeof(*res));
	return r;
}

static int kvm_x86_probe(const struct kvm_vm_fds *vm, bool *ret_offset_control, char *detail,
			 size_t detail_size)
{
	return kvm_x86_tsc_probe(&attr_access, vm, ret_offset_control, detail, detail_size);
}

static int kvm_x86_read_state(const struct kvm_vm_fds *vm, struct counter_state *ret_state)
{
	return kvm_x86_tsc_read_state(&attr_access, vm, ret_state);
}

static int kvm_x86_apply(const struct kvm_vm_fds *vm, const struct counter_state *src,
			 const struct counter_policy *policy, struct backend_apply_result *ret)
{
	return kvm_x86_tsc_apply(&attr_access, vm, src, policy, ret);
}

const struct backend_ops backend_kvm_x86 = {
	.kind = BACKEND_KVM_X86,
	.detect = kvm_x86_detect,
	.probe = kvm_x86_probe,
	.read_state = kvm_x86_read_state,
	.apply = kvm_x86_apply,
};
