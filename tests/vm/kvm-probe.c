/* kvm-probe: the nested-KVM rig's smoke payload. Checks that this kernel's KVM honours a TSC offset
 * written with KVM_VCPU_TSC_OFFSET, as a real-mode guest's rdtsc sees it; prints key=value lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define N_VCPUS		      2
#define GUEST_MEM_BYTES	      0x10000
#define GUEST_ENTRY	      0x1000
/* Default offset: 2^40 cycles (minutes at GHz rates), positive so guest TSC = host + offset never
 * wraps and a KVM that ignores the offset (guest TSC == host TSC) cannot pass by accident. */
#define DEFAULT_OFFSET_CYCLES (UINT64_C(1) << 40)

/* Real-mode guest code: rdtsc (edx:eax = guest TSC), then hlt, which exits to us with
 * KVM_EXIT_HLT and the value still in the registers. */
static const uint8_t guest_code[] = { 0x0f, 0x31, 0xf4 };

static uint64_t host_rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ __volatile__("lfence; rdtsc; lfence" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static int fail(const char *what)
{
	printf("error=%s: %s\n", what, strerror(errno));
	return 2;
}

/* KVM_VCPU_TSC_CTRL / KVM_VCPU_TSC_OFFSET: Documentation/virt/kvm/devices/vcpu.rst, section 4.1;
 * the attribute's addr points at a u64 offset. */
static int tsc_offset_attr(int vcpu_fd, unsigned long request, uint64_t *offset)
{
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uint64_t)(uintptr_t)offset,
	};

	return ioctl(vcpu_fd, request, &attr);
}

int main(int argc, char **argv)
{
	uint64_t offset = argc > 1 ? strtoull(argv[1], NULL, 0) : DEFAULT_OFFSET_CYCLES;
	int vcpu_fd[N_VCPUS];
	struct kvm_run *run[N_VCPUS];
	struct kvm_userspace_memory_region region;
	struct kvm_clock_data clock;
	uint8_t *mem;
	int kvm_fd, vm_fd, run_size;

	setvbuf(stdout, NULL, _IOLBF, 0);
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		return fail("open /dev/kvm");
	vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		return fail("KVM_CREATE_VM");
	/* Needed for real mode on Intel (VMX emulates it with a TSS); accepted and unused on AMD. */
	if (ioctl(vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
		return fail("KVM_SET_TSS_ADDR");

	mem = mmap(NULL, GUEST_MEM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
		   0);
	if (mem == MAP_FAILED)
		return fail("mmap guest memory");
	memcpy(mem + GUEST_ENTRY, guest_code, sizeof(guest_code));
	region = (struct kvm_userspace_memory_region){
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = GUEST_MEM_BYTES,
		.userspace_addr = (uint64_t)(uintptr_t)mem,
	};
	if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");
	run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		return fail("KVM_GET_VCPU_MMAP_SIZE");

	printf("offset_written=%" PRIu64 "\n", offset);
	for (int i = 0; i < N_VCPUS; i++) {
		struct kvm_sregs sregs;
		struct kvm_regs regs = { .rip = GUEST_ENTRY, .rflags = 0x2 };
		struct kvm_device_attr has = { .group = KVM_VCPU_TSC_CTRL,
					       .attr = KVM_VCPU_TSC_OFFSET };
		uint64_t readback = 0;

		vcpu_fd[i] = ioctl(vm_fd, KVM_CREATE_VCPU, i);
		if (vcpu_fd[i] < 0)
			return fail("KVM_CREATE_VCPU");
		run[i] = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			      vcpu_fd[i], 0);
		if (run[i] == MAP_FAILED)
			return fail("mmap kvm_run");
		if (ioctl(vcpu_fd[i], KVM_GET_SREGS, &sregs) < 0)
			return fail("KVM_GET_SREGS");
		sregs.cs.base = 0;
		sregs.cs.selector = 0;
		if (ioctl(vcpu_fd[i], KVM_SET_SREGS, &sregs) < 0)
			return fail("KVM_SET_SREGS");
		if (ioctl(vcpu_fd[i], KVM_SET_REGS, &regs) < 0)
			return fail("KVM_SET_REGS");

		if (ioctl(vcpu_fd[i], KVM_HAS_DEVICE_ATTR, &has) < 0)
			return fail("KVM_HAS_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)");
		if (tsc_offset_attr(vcpu_fd[i], KVM_SET_DEVICE_ATTR, &offset) < 0)
			return fail("KVM_SET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)");
		if (tsc_offset_attr(vcpu_fd[i], KVM_GET_DEVICE_ATTR, &readback) < 0)
			return fail("KVM_GET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)");
		printf("vcpu%d_offset_read=%" PRIu64 "\n", i, readback);
	}

	for (int i = 0; i < N_VCPUS; i++) {
		struct kvm_regs regs;
		struct timespec t0, t1;
		uint64_t host_before, host_after, guest_tsc, readback = 0;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		host_before = host_rdtsc();
		if (ioctl(vcpu_fd[i], KVM_RUN, 0) < 0)
			return fail("KVM_RUN");
		host_after = host_rdtsc();
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (run[i]->exit_reason != KVM_EXIT_HLT) {
			printf("error=vcpu%d exit_reason=%u, want KVM_EXIT_HLT (%u)\n", i,
			       run[i]->exit_reason, KVM_EXIT_HLT);
			return 2;
		}
		if (ioctl(vcpu_fd[i], KVM_GET_REGS, &regs) < 0)
			return fail("KVM_GET_REGS");
		guest_tsc = ((regs.rdx & 0xffffffffu) << 32) | (regs.rax & 0xffffffffu);
		/* Honoured offset: host_before + offset <= guest_tsc <= host_after + offset, i.e.
		 * 0 <= guest_tsc - offset - host_before <= window. Unsigned wrap makes a guest that
		 * ignores the offset show up as a huge value, never as 0. */
		printf("vcpu%d_host_tsc_before=%" PRIu64 "\n", i, host_before);
		printf("vcpu%d_guest_tsc=%" PRIu64 "\n", i, guest_tsc);
		printf("vcpu%d_host_tsc_after=%" PRIu64 "\n", i, host_after);
		printf("vcpu%d_guest_minus_host=%" PRIu64 "\n", i, guest_tsc - host_before);
		printf("vcpu%d_lag_cycles=%" PRIu64 "\n", i, guest_tsc - offset - host_before);
		printf("vcpu%d_window_cycles=%" PRIu64 "\n", i, host_after - host_before);
		printf("vcpu%d_first_run_us=%lld\n", i,
		       ((long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
			(t1.tv_nsec - t0.tv_nsec)) /
			       1000);
		if (tsc_offset_attr(vcpu_fd[i], KVM_GET_DEVICE_ATTR, &readback) < 0)
			return fail("KVM_GET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET) after KVM_RUN");
		printf("vcpu%d_offset_read_after_run=%" PRIu64 "\n", i, readback);
	}

	memset(&clock, 0, sizeof(clock));
	if (ioctl(vm_fd, KVM_GET_CLOCK, &clock) < 0)
		return fail("KVM_GET_CLOCK");
	printf("clock_flags=0x%x%s%s%s\n", clock.flags,
	       clock.flags & KVM_CLOCK_TSC_STABLE ? " TSC_STABLE" : "",
	       clock.flags & KVM_CLOCK_REALTIME ? " REALTIME" : "",
	       clock.flags & KVM_CLOCK_HOST_TSC ? " HOST_TSC" : "");
	printf("clock_ns=%llu\n", (unsigned long long)clock.clock);
	return 0;
}
