/* arm64 rig payload for the kernel-patch/ kernel (build-and-test-arm64): checks
 * KVM_CAP_SYSTEM_COUNTER_STATE and the KVM_{GET,SET}_SYSTEM_COUNTER_STATE vCPU ioctls against
 * KVM_ARM_SET_COUNTER_OFFSET, the KVM_REG_ARM_{,P}TIMER_CNT registers and what a guest reads from
 * CNTVCT_EL0/CNTPCT_EL0. Build static with aarch64-linux-gnu-gcc -pthread; runs as root on the
 * patched kernel (its /dev/kvm). Prints key=value lines and a final PASS/FAIL verdict line. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "uapi/kvm_syscounter.h"

/* The cross toolchain's headers (Linux 6.1) predate 6.4's counter offset API: 6.12's
 * definitions. */
#ifndef KVM_CAP_COUNTER_OFFSET
#define KVM_CAP_COUNTER_OFFSET 227
struct kvm_arm_counter_offset {
	uint64_t counter_offset;
	uint64_t reserved;
};
#define KVM_ARM_SET_COUNTER_OFFSET _IOW(KVMIO, 0xb5, struct kvm_arm_counter_offset)
#endif

/* Guest code, run at EL1 with the MMU off from GUEST_CODE: reads the virtual and the physical
 * counter and hands each to userspace as an 8-byte MMIO write (KVM_EXIT_MMIO), forever.
 * guest_spin is a tight loop for a vCPU that must stay in KVM_RUN. */
extern const uint32_t guest_code_start[], guest_spin[], guest_code_end[];
__asm__(".pushsection .rodata\n"
	".balign 4\n"
	".global guest_code_start\n"
	"guest_code_start:\n"
	"	movz x2, #0x10, lsl #16\n" /* GUEST_MMIO */
	"1:	isb\n"
	"	mrs x0, cntvct_el0\n"
	"	str x0, [x2]\n"
	"	isb\n"
	"	mrs x1, cntpct_el0\n"
	"	str x1, [x2, #8]\n"
	"	b 1b\n"
	".global guest_spin\n"
	"guest_spin:\n"
	"	b guest_spin\n"
	".global guest_code_end\n"
	"guest_code_end:\n"
	".popsection\n");

#define GUEST_CODE     0x10000ULL
#define GUEST_MEM_SIZE 0x10000ULL
#define GUEST_MMIO     0x100000ULL

static int failures;

#define CHECK(cond, ...)                              \
	do {                                          \
		if (!(cond)) {                        \
			failures++;                   \
			printf("FAIL: " __VA_ARGS__); \
			printf("\n");                 \
		}                                     \
	} while (0)

struct vcpu {
	int fd;
	struct kvm_run *run;
};

static int kvm_fd, run_size;

static uint64_t host_counter(void)
{
	uint64_t v;

	/* At EL0 of a VHE host (E2H=TGE=1) the virtual offset is 0: this is KVM's host counter. */
	__asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(v) : : "memory");
	return v;
}

static int get_state(int vcpu, struct kvm_system_counter_state *st)
{
	memset(st, 0, sizeof(*st));
	return ioctl(vcpu, KVM_GET_SYSTEM_COUNTER_STATE, st) < 0 ? -errno : 0;
}

static int set_state(int vcpu, uint64_t cntvoff, uint64_t cntpoff)
{
	struct kvm_system_counter_state st = { .cntvoff = cntvoff, .cntpoff = cntpoff };

	return ioctl(vcpu, KVM_SET_SYSTEM_COUNTER_STATE, &st) < 0 ? -errno : 0;
}

static int one_reg(int vcpu, unsigned long req, uint64_t id, uint64_t *val)
{
	struct kvm_one_reg reg = { .id = id, .addr = (uint64_t)(uintptr_t)val };

	return ioctl(vcpu, req, &reg) < 0 ? -errno : 0;
}

static int set_vm_offset(int vm, uint64_t offset)
{
	struct kvm_arm_counter_offset o = { .counter_offset = offset };

	return ioctl(vm, KVM_ARM_SET_COUNTER_OFFSET, &o) < 0 ? -errno : 0;
}

static int create_vm(void)
{
	int vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);

	if (vm < 0) {
		printf("FAIL: KVM_CREATE_VM: %s\n", strerror(errno));
		return -1;
	}
	return vm;
}

/* A vCPU initialised with the preferred target and its PC at GUEST_CODE + pc_offset. */
static int create_vcpu(int vm, int id, uint64_t pc_offset, struct vcpu *v)
{
	struct kvm_vcpu_init init;
	uint64_t pc = GUEST_CODE + pc_offset;

	v->fd = ioctl(vm, KVM_CREATE_VCPU, id);
	if (v->fd < 0) {
		printf("FAIL: KVM_CREATE_VCPU %d: %s\n", id, strerror(errno));
		return -1;
	}
	if (ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) < 0 ||
	    ioctl(v->fd, KVM_ARM_VCPU_INIT, &init) < 0) {
		printf("FAIL: KVM_ARM_VCPU_INIT %d: %s\n", id, strerror(errno));
		return -1;
	}
	if (one_reg(v->fd, KVM_SET_ONE_REG,
		    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
			    KVM_REG_ARM_CORE_REG(regs.pc),
		    &pc)) {
		printf("FAIL: setting the PC of vCPU %d: %s\n", id, strerror(errno));
		return -1;
	}
	v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		printf("FAIL: mmap kvm_run: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

static int add_guest_memory(int vm)
{
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = GUEST_CODE,
		.memory_size = GUEST_MEM_SIZE,
	};
	void *mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);

	if (mem == MAP_FAILED)
		return -1;
	memcpy(mem, guest_code_start, (size_t)((char *)guest_code_end - (char *)guest_code_start));
	region.userspace_addr = (uint64_t)(uintptr_t)mem;
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
		printf("FAIL: KVM_SET_USER_MEMORY_REGION: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

/* Runs the vCPU to its next MMIO write at GUEST_MMIO + offset; returns the value written. */
static int run_to_mmio(struct vcpu *v, uint64_t offset, uint64_t *val)
{
	if (ioctl(v->fd, KVM_RUN, 0) < 0) {
		printf("FAIL: KVM_RUN: %s\n", strerror(errno));
		return -1;
	}
	if (v->run->exit_reason != KVM_EXIT_MMIO || !v->run->mmio.is_write ||
	    v->run->mmio.phys_addr != GUEST_MMIO + offset || v->run->mmio.len != 8) {
		printf("FAIL: guest exit %u (mmio %#llx len %u), want an 8-byte write to %#llx\n",
		       v->run->exit_reason, (unsigned long long)v->run->mmio.phys_addr,
		       v->run->mmio.len, (unsigned long long)(GUEST_MMIO + offset));
		return -1;
	}
	memcpy(val, v->run->mmio.data, 8);
	return 0;
}

/* Lets the guest read both counters once and checks them against the host counter read around
 * the run: host_before - off <= guest <= host_after - off, in modulo-2^64 arithmetic. */
static void check_guest_counters(struct vcpu *v, const char *what, uint64_t cntvoff,
				 uint64_t cntpoff)
{
	uint64_t h0, h1, gv = 0, gp = 0;
	int r;

	h0 = host_counter();
	r = run_to_mmio(v, 0, &gv);
	if (!r)
		r = run_to_mmio(v, 8, &gp);
	h1 = host_counter();
	printf("guest_%s: cntvct=%" PRIu64 " (host-cntvoff in [%" PRIu64 ",%" PRIu64 "])"
	       " cntpct=%" PRIu64 " (host-cntpoff in [%" PRIu64 ",%" PRIu64 "])\n",
	       what, gv, h0 - cntvoff, h1 - cntvoff, gp, h0 - cntpoff, h1 - cntpoff);
	CHECK(r == 0, "%s: the guest did not report its counters", what);
	CHECK(gv + cntvoff - h0 <= h1 - h0,
	      "%s: guest CNTVCT_EL0 %" PRIu64 " is not host CNTPCT_EL0 - %" PRIu64, what, gv,
	      cntvoff);
	CHECK(gp + cntpoff - h0 <= h1 - h0,
	      "%s: guest CNTPCT_EL0 %" PRIu64 " is not host CNTPCT_EL0 - %" PRIu64, what, gp,
	      cntpoff);
}

/* A SET that must fail with `want` and leave the offsets as they were. */
static void expect_refused(int vcpu, const char *what, const void *arg, int want,
			   const struct kvm_system_counter_state *now)
{
	struct kvm_system_counter_state back;
	int r = ioctl(vcpu, KVM_SET_SYSTEM_COUNTER_STATE, arg) < 0 ? -errno : 0;

	printf("set_%s=%d\n", what, r);
	CHECK(r == want, "SET with %s returned %d, want %d", what, r, want);
	CHECK(get_state(vcpu, &back) == 0 && back.cntvoff == now->cntvoff &&
		      back.cntpoff == now->cntpoff,
	      "SET with %s changed the offsets to %" PRIu64 "/%" PRIu64, what, back.cntvoff,
	      back.cntpoff);
}

static void on_sigusr1(int sig)
{
	(void)sig;
}

static volatile int spinner_started;

static void *spinner(void *arg)
{
	struct vcpu *v = arg;
	int r;

	spinner_started = 1;
	r = ioctl(v->fd, KVM_RUN, 0) < 0 ? -errno : 0;
	return (void *)(intptr_t)r;
}

/* Semantics on one VM with two vCPUs: VM-wide offsets, refusals, the interplay with
 * KVM_ARM_SET_COUNTER_OFFSET and the counter registers, and what the guest reads. */
static int test_main_vm(void)
{
	struct kvm_system_counter_state base, st, other, bad;
	struct vcpu v0, v1;
	uint64_t want_v, want_p, cnt, h0, h1;
	int vm, r;

	vm = create_vm();
	if (vm < 0 || add_guest_memory(vm) || create_vcpu(vm, 0, 0, &v0) ||
	    create_vcpu(vm, 1, (uint64_t)((char *)guest_spin - (char *)guest_code_start), &v1))
		return -1;

	r = get_state(v0.fd, &base);
	printf("get=%d flags=%u pad=%u cntvoff=%" PRIu64 " cntpoff=%" PRIu64 "\n", r, base.flags,
	       base.pad, base.cntvoff, base.cntpoff);
	CHECK(r == 0, "GET returned %d", r);
	CHECK(base.cntpoff == 0, "a new VM's physical offset is %" PRIu64 ", want 0", base.cntpoff);
	CHECK(base.cntvoff != 0 && base.cntvoff <= host_counter(),
	      "a new VM's virtual offset %" PRIu64 " is not the host counter at its creation",
	      base.cntvoff);
	r = get_state(v1.fd, &other);
	CHECK(r == 0 && other.cntvoff == base.cntvoff && other.cntpoff == base.cntpoff,
	      "GET on vCPU 1 read %" PRIu64 "/%" PRIu64 ", vCPU 0 %" PRIu64 "/%" PRIu64,
	      other.cntvoff, other.cntpoff, base.cntvoff, base.cntpoff);
	check_guest_counters(&v0, "initial", base.cntvoff, base.cntpoff);

	/* SET on vCPU 0: both vCPUs read it back, and so do the counter registers. */
	h0 = host_counter();
	want_v = h0 - (1ULL << 40); /* guest virtual counter ~2^40 */
	want_p = 12345;
	r = set_state(v0.fd, want_v, want_p);
	printf("set cntvoff=%" PRIu64 " cntpoff=%" PRIu64 " rc=%d\n", want_v, want_p, r);
	CHECK(r == 0, "SET returned %d", r);
	r = get_state(v0.fd, &st);
	printf("get vcpu0 cntvoff=%" PRIu64 " cntpoff=%" PRIu64 "\n", st.cntvoff, st.cntpoff);
	CHECK(r == 0 && st.cntvoff == want_v && st.cntpoff == want_p,
	      "GET on vCPU 0 after SET read %" PRIu64 "/%" PRIu64, st.cntvoff, st.cntpoff);
	r = get_state(v1.fd, &st);
	printf("get vcpu1 cntvoff=%" PRIu64 " cntpoff=%" PRIu64 "\n", st.cntvoff, st.cntpoff);
	CHECK(r == 0 && st.cntvoff == want_v && st.cntpoff == want_p,
	      "GET on vCPU 1 after SET on vCPU 0 read %" PRIu64 "/%" PRIu64, st.cntvoff,
	      st.cntpoff);
	{
		static const uint64_t zero[6];

		CHECK(st.flags == 0 && st.pad == 0 && !memcmp(st.reserved, zero, sizeof(zero)),
		      "GET returned non-zero flags, pad or reserved words");
	}
	h0 = host_counter();
	r = one_reg(v1.fd, KVM_GET_ONE_REG, KVM_REG_ARM_TIMER_CNT, &cnt);
	h1 = host_counter();
	printf("one_reg timer_cnt=%" PRIu64 "\n", cnt);
	CHECK(r == 0 && cnt + want_v - h0 <= h1 - h0,
	      "KVM_REG_ARM_TIMER_CNT %" PRIu64 " is not host - cntvoff", cnt);
	h0 = host_counter();
	r = one_reg(v1.fd, KVM_GET_ONE_REG, KVM_REG_ARM_PTIMER_CNT, &cnt);
	h1 = host_counter();
	printf("one_reg ptimer_cnt=%" PRIu64 "\n", cnt);
	CHECK(r == 0 && cnt + want_p - h0 <= h1 - h0,
	      "KVM_REG_ARM_PTIMER_CNT %" PRIu64 " is not host - cntpoff", cnt);
	check_guest_counters(&v0, "after_set", want_v, want_p);

	/* SET on vCPU 1 moves what vCPU 0's guest sees. */
	want_v = host_counter() - 1000;
	want_p = host_counter() - (1ULL << 41);
	r = set_state(v1.fd, want_v, want_p);
	printf("set_via_vcpu1 cntvoff=%" PRIu64 " cntpoff=%" PRIu64 " rc=%d\n", want_v, want_p, r);
	CHECK(r == 0, "SET on vCPU 1 returned %d", r);
	check_guest_counters(&v0, "after_set_via_vcpu1", want_v, want_p);

	/* KVM_ARM_SET_COUNTER_OFFSET writes both offsets; GET reads them. */
	r = set_vm_offset(vm, 777777);
	r = r ? r : get_state(v0.fd, &st);
	printf("arm_set_counter_offset=777777 get cntvoff=%" PRIu64 " cntpoff=%" PRIu64 " rc=%d\n",
	       st.cntvoff, st.cntpoff, r);
	CHECK(r == 0 && st.cntvoff == 777777 && st.cntpoff == 777777,
	      "GET after KVM_ARM_SET_COUNTER_OFFSET read %" PRIu64 "/%" PRIu64, st.cntvoff,
	      st.cntpoff);
	check_guest_counters(&v0, "after_arm_set_counter_offset", 777777, 777777);

	/* Refusals: -EINVAL (or -EFAULT) and the offsets left alone. */
	memset(&bad, 0, sizeof(bad));
	bad.flags = 1;
	expect_refused(v0.fd, "flag0", &bad, -EINVAL, &st);
	bad.flags = 1U << 31;
	expect_refused(v0.fd, "flag31", &bad, -EINVAL, &st);
	memset(&bad, 0, sizeof(bad));
	bad.pad = 1;
	expect_refused(v0.fd, "pad", &bad, -EINVAL, &st);
	memset(&bad, 0, sizeof(bad));
	bad.reserved[0] = 1;
	expect_refused(v0.fd, "reserved0", &bad, -EINVAL, &st);
	memset(&bad, 0, sizeof(bad));
	bad.reserved[5] = 1ULL << 63;
	expect_refused(v0.fd, "reserved5", &bad, -EINVAL, &st);
	expect_refused(v0.fd, "bad_pointer", (void *)8, -EFAULT, &st);

	memset(&bad, 0, sizeof(bad));
	bad.flags = 1;
	r = ioctl(v0.fd, KVM_GET_SYSTEM_COUNTER_STATE, &bad) < 0 ? -errno : 0;
	printf("get_with_flags=%d\n", r);
	CHECK(r == -EINVAL, "GET with input flags returned %d, want %d", r, -EINVAL);
	r = ioctl(v0.fd, KVM_GET_SYSTEM_COUNTER_STATE, (void *)8) < 0 ? -errno : 0;
	printf("get_bad_pointer=%d\n", r);
	CHECK(r == -EFAULT, "GET with a bad pointer returned %d, want %d", r, -EFAULT);
	{
		void *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		r = ioctl(v0.fd, KVM_GET_SYSTEM_COUNTER_STATE, ro) < 0 ? -errno : 0;
		printf("get_read_only=%d\n", r);
		CHECK(r == -EFAULT, "GET into a read-only page returned %d, want %d", r, -EFAULT);
	}

	/* While vCPU 1 is in KVM_RUN, SET on vCPU 0 is refused with EBUSY, then works. */
	{
		struct sigaction sa = { .sa_handler = on_sigusr1 }; /* no SA_RESTART */
		pthread_t t;
		void *ret;

		sigaction(SIGUSR1, &sa, NULL);
		if (pthread_create(&t, NULL, spinner, &v1)) {
			CHECK(0, "pthread_create");
		} else {
			while (!spinner_started)
				usleep(1000);
			usleep(300000); /* into KVM_RUN */
			r = set_state(v0.fd, 1, 2);
			printf("set_while_other_vcpu_runs=%d\n", r);
			CHECK(r == -EBUSY, "SET while vCPU 1 runs returned %d, want %d", r, -EBUSY);
			r = set_vm_offset(vm, 3);
			printf("arm_set_counter_offset_while_other_vcpu_runs=%d\n", r);
			CHECK(r == -EBUSY,
			      "KVM_ARM_SET_COUNTER_OFFSET while vCPU 1 runs returned %d", r);
			pthread_kill(t, SIGUSR1);
			pthread_join(t, &ret);
			printf("spinner_run=%d\n", (int)(intptr_t)ret);
			CHECK((intptr_t)ret == -EINTR, "vCPU 1's KVM_RUN returned %d, want %d",
			      (int)(intptr_t)ret, -EINTR);
			r = get_state(v0.fd, &bad);
			CHECK(r == 0 && bad.cntvoff == st.cntvoff && bad.cntpoff == st.cntpoff,
			      "a refused SET changed the offsets");
			r = set_state(v0.fd, 1, 2);
			printf("set_after_other_vcpu_stopped=%d\n", r);
			CHECK(r == 0, "SET after vCPU 1 stopped returned %d", r);
		}
	}
	close(v0.fd);
	close(v1.fd);
	close(vm);
	return 0;
}

/* On a VM whose offsets nobody set: a KVM_REG_ARM_TIMER_CNT write moves cntvoff until a SET,
 * and not after it (KVM_ARCH_FLAG_VM_COUNTER_OFFSET, as KVM_ARM_SET_COUNTER_OFFSET sets it). */
static int test_counter_reg_interplay(void)
{
	struct kvm_system_counter_state st;
	struct vcpu v;
	uint64_t cnt = 1000, h0, h1;
	int vm, r;

	vm = create_vm();
	if (vm < 0 || add_guest_memory(vm) || create_vcpu(vm, 0, 0, &v))
		return -1;
	h0 = host_counter();
	r = one_reg(v.fd, KVM_SET_ONE_REG, KVM_REG_ARM_TIMER_CNT, &cnt);
	h1 = host_counter();
	r = r ? r : get_state(v.fd, &st);
	printf("fresh_vm timer_cnt:=1000 get cntvoff=%" PRIu64 " rc=%d\n", st.cntvoff, r);
	CHECK(r == 0 && h0 - 1000 <= st.cntvoff && st.cntvoff <= h1 - 1000,
	      "a KVM_REG_ARM_TIMER_CNT write before any SET did not move cntvoff (%" PRIu64 ")",
	      st.cntvoff);

	r = set_state(v.fd, 5555, 6666);
	CHECK(r == 0, "SET returned %d", r);
	cnt = 1000;
	r = one_reg(v.fd, KVM_SET_ONE_REG, KVM_REG_ARM_TIMER_CNT, &cnt);
	r = r ? r : one_reg(v.fd, KVM_SET_ONE_REG, KVM_REG_ARM_PTIMER_CNT, &cnt);
	r = r ? r : get_state(v.fd, &st);
	printf("after_set timer_cnt:=1000 ptimer_cnt:=1000 get cntvoff=%" PRIu64 " cntpoff=%" PRIu64
	       " rc=%d\n",
	       st.cntvoff, st.cntpoff, r);
	CHECK(r == 0 && st.cntvoff == 5555 && st.cntpoff == 6666,
	      "counter register writes after SET moved the offsets to %" PRIu64 "/%" PRIu64,
	      st.cntvoff, st.cntpoff);

	/* A vCPU created after the SET keeps the VM's offsets (no reset to "now"). */
	{
		struct vcpu v1;

		if (create_vcpu(vm, 1, 0, &v1) == 0) {
			r = get_state(v1.fd, &st);
			printf("new_vcpu get cntvoff=%" PRIu64 " cntpoff=%" PRIu64 "\n", st.cntvoff,
			       st.cntpoff);
			CHECK(r == 0 && st.cntvoff == 5555 && st.cntpoff == 6666,
			      "creating a vCPU after SET moved the offsets");
			check_guest_counters(&v1, "new_vcpu", 5555, 6666);
			close(v1.fd);
		} else {
			failures++;
		}
	}
	close(v.fd);
	close(vm);
	return 0;
}

/* Writers racing on one VM: SET through two vCPUs and KVM_ARM_SET_COUNTER_OFFSET, while a third
 * vCPU reads. Each write is all or nothing, so every read is one writer's pair: cntpoff ==
 * cntvoff + 1 (the SETs) or cntpoff == cntvoff (KVM_ARM_SET_COUNTER_OFFSET); every call returns 0
 * or -EBUSY, and none deadlocks (the trylock scheme of 0005). */
#define RACE_ITERS 2000

struct racer {
	int fd; /* vCPU fd, or the VM fd for KVM_ARM_SET_COUNTER_OFFSET */
	int is_vm;
	int ok, busy, other, torn;
};

static void *race_writer(void *arg)
{
	struct racer *w = arg;

	for (uint64_t i = 0; i < RACE_ITERS; i++) {
		uint64_t v = ((uint64_t)w->fd << 32) + 2 * i;
		int r = w->is_vm ? set_vm_offset(w->fd, v) : set_state(w->fd, v, v + 1);

		if (r == 0)
			w->ok++;
		else if (r == -EBUSY)
			w->busy++;
		else
			w->other++;
	}
	return NULL;
}

static void *race_reader(void *arg)
{
	struct kvm_system_counter_state st;
	struct racer *w = arg;

	for (int i = 0; i < RACE_ITERS; i++) {
		int r = get_state(w->fd, &st);

		if (r == 0) {
			w->ok++;
			if (st.cntpoff != st.cntvoff + 1 && st.cntpoff != st.cntvoff)
				w->torn++;
		} else {
			w->other++;
		}
	}
	return NULL;
}

static int test_concurrent_writers(void)
{
	struct racer w[4] = { { 0 } };
	struct vcpu v[3];
	pthread_t t[4];
	int vm;

	vm = create_vm();
	if (vm < 0)
		return -1;
	for (int i = 0; i < 3; i++)
		if (create_vcpu(vm, i, 0, &v[i]))
			return -1;
	w[0].fd = v[0].fd;
	w[1].fd = v[1].fd;
	w[2].fd = vm;
	w[2].is_vm = 1;
	w[3].fd = v[2].fd;
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, i == 3 ? race_reader : race_writer, &w[i]);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	printf("race: set_vcpu0 ok=%d busy=%d other=%d; set_vcpu1 ok=%d busy=%d other=%d;"
	       " arm_set_counter_offset ok=%d busy=%d other=%d; get_vcpu2 ok=%d torn=%d other=%d\n",
	       w[0].ok, w[0].busy, w[0].other, w[1].ok, w[1].busy, w[1].other, w[2].ok, w[2].busy,
	       w[2].other, w[3].ok, w[3].torn, w[3].other);
	CHECK(!w[0].other && !w[1].other && !w[2].other,
	      "a racing write returned something other than 0 or -EBUSY");
	CHECK(w[0].ok + w[1].ok > 0, "no racing SET succeeded");
	CHECK(w[3].ok == RACE_ITERS && !w[3].torn,
	      "racing GETs failed (%d) or read torn pairs (%d)", w[3].other, w[3].torn);
	for (int i = 0; i < 3; i++)
		close(v[i].fd);
	close(vm);
	return 0;
}

int main(void)
{
	int vm, r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0) {
		printf("FAIL: open /dev/kvm: %s\n", strerror(errno));
		return 1;
	}
	run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	vm = create_vm();
	if (vm < 0)
		return 1;
	r = ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_SYSTEM_COUNTER_STATE);
	printf("cap_system_counter_state=%d\n", r);
	printf("cap_counter_offset=%d\n", ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_COUNTER_OFFSET));
	if (r != 1) {
		printf("FAIL: KVM_CAP_SYSTEM_COUNTER_STATE not reported on the VM fd\n");
		return 1;
	}
	close(vm);

	if (test_main_vm() || test_counter_reg_interplay() || test_concurrent_writers())
		failures++;

	printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
