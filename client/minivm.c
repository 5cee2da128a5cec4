/* minivm.c - the reference VMM's VM core: KVM VM, real-mode guest that
 * samples its TSC, vCPU threads, pause by immediate_exit, save and load. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "clockns.h"
#include "macro.h"
#include "minivm.h"

/* Guest physical layout: code at 0x1000, one 64-byte slot per vCPU from
 * 0x2000 (a cache line each, so vCPUs do not share lines), all in the first
 * 64 KiB so that real-mode 16-bit addressing with DS = 0 reaches it. */
#define GUEST_MEM_SIZE	0x10000
#define GUEST_CODE_GPA	0x1000
#define GUEST_SLOTS_GPA 0x2000
#define GUEST_SLOT_SIZE 64
#define GUEST_SLOT_TSC	0 /* u64, one cmpxchg8b store */
#define GUEST_SLOT_SEQ	8 /* u64, add + adc */

/* Where KVM may put the real-mode TSS (three pages) on Intel without
 * unrestricted guest; QEMU's choice, just below the BIOS (KVM_SET_TSS_ADDR,
 * api.rst 4.41). Not guest RAM here. */
#define GUEST_TSS_GPA 0xfffbd000

/* minivm_start() gives up on a vCPU that stored no sample in this long. The
 * first KVM_RUN of a nested vCPU takes ~10 ms (DESIGN.md section 5). */
#define START_TIMEOUT_NS (5 * NSEC_PER_SEC)

#define STATE_MAGIC   "MINIVM01"
#define STATE_VERSION 1

/* The guest, 16-bit real mode, CS = DS = 0, entered at GUEST_CODE_GPA with
 * SI = vCPU index (assembled with `as --32`, .code16):
 *
 *   start:  shl  $6, %si              c1 e6 06        si = index * 64
 *           add  $0x2000, %si         81 c6 00 20     si = &slot[index]
 *   loop:   rdtsc                     0f 31           edx:eax = guest TSC
 *           mov  %eax, %ebx           66 89 c3
 *           mov  %edx, %ecx           66 89 d1        ecx:ebx = new sample
 *           mov  (%si), %eax          66 8b 04
 *           mov  4(%si), %edx         66 8b 54 04     edx:eax = slot.tsc now
 *   retry:  lock cmpxchg8b (%si)      f0 0f c7 0c     slot.tsc = ecx:ebx ...
 *           jnz  retry                75 fa           ... (edx:eax reloaded)
 *           addl $1, 8(%si)           66 83 44 08 01  slot.seq += 1 ...
 *           adcl $0, 12(%si)          66 83 54 0c 00  ... with carry
 *           jmp  loop                 eb df
 *
 * cmpxchg8b makes the TSC store one atomic 8-byte write (Intel SDM vol. 2A,
 * CMPXCHG8B), so the host never sees half of one sample and half of
 * another, even when a vCPU is paused between two instructions. Only this
 * vCPU writes its slot, so the retry runs at most once (after a torn read
 * of the expected value). MMX (movq) would be simpler, but on this
 * project's kvm_pvm hosts KVM_RUN stops at the first movd with
 * KVM_EXIT_INTERNAL_ERROR/KVM_INTERNAL_ERROR_EMULATION (real mode goes
 * through KVM's instruction emulator there, as on Intel without
 * unrestricted guest). No interrupts, no I/O: the guest only leaves KVM_RUN
 * when the host kicks it. */
static const uint8_t guest_code[] = {
	0xc1, 0xe6, 0x06,	      /* shl $6, %si */
	0x81, 0xc6, 0x00, 0x20,	      /* add $0x2000, %si */
	0x0f, 0x31,		      /* loop: rdtsc */
	0x66, 0x89, 0xc3,	      /* mov %eax, %ebx */
	0x66, 0x89, 0xd1,	      /* mov %edx, %ecx */
	0x66, 0x8b, 0x04,	      /* mov (%si), %eax */
	0x66, 0x8b, 0x54, 0x04,	      /* mov 4(%si), %edx */
	0xf0, 0x0f, 0xc7, 0x0c,	      /* retry: lock cmpxchg8b (%si) */
	0x75, 0xfa,		      /* jnz retry */
	0x66, 0x83, 0x44, 0x08, 0x01, /* addl $1, 8(%si) */
	0x66, 0x83, 0x54, 0x0c, 0x00, /* adcl $0, 12(%si) */
	0xeb, 0xdf,		      /* jmp loop */
};

struct minivm_vcpu {
	struct minivm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool joinable;
	/* Written by the vCPU thread before it sets exited; read after. */
	_Atomic bool exited;
	bool failed;
	int run_errno;
	uint32_t exit_reason;
	uint64_t exit_detail;
};

struct minivm {
	int kvm_fd;
	int vm_fd;
	unsigned n_vcpus;
	uint8_t *mem;
	size_t run_size;
	struct minivm_vcpu *vcpus;
	int *vcpu_fds;
	_Atomic bool stop;
	bool running;
	char error[MINIVM_ERROR_MAX];
};

struct state_header {
	char magic[8];
	uint32_t version;
	uint32_t n_vcpus;
	uint64_t mem_size;
};

struct vcpu_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
};

static void set_error(char *error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(char *error, const char *fmt, ...)
{
	va_list ap;

	if (!error)
		return;
	va_start(ap, fmt);
	vsnprintf(error, MINIVM_ERROR_MAX, fmt, ap);
	va_end(ap);
}

static void sigusr1_noop(int sig)
{
	(void)sig;
}

static uint64_t *slot_field(const struct minivm *vm, unsigned index, unsigned field)
{
	return (uint64_t *)(void *)(vm->mem + GUEST_SLOTS_GPA + (size_t)index * GUEST_SLOT_SIZE +
				    field);
}

static const char *exit_reason_name(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_UNKNOWN:
		return "KVM_EXIT_UNKNOWN";
	case KVM_EXIT_EXCEPTION:
		return "KVM_EXIT_EXCEPTION";
	case KVM_EXIT_IO:
		return "KVM_EXIT_IO";
	case KVM_EXIT_HLT:
		return "KVM_EXIT_HLT";
	case KVM_EXIT_MMIO:
		return "KVM_EXIT_MMIO";
	case KVM_EXIT_SHUTDOWN:
		return "KVM_EXIT_SHUTDOWN (triple fault)";
	case KVM_EXIT_FAIL_ENTRY:
		return "KVM_EXIT_FAIL_ENTRY";
	case KVM_EXIT_INTR:
		return "KVM_EXIT_INTR";
	case KVM_EXIT_INTERNAL_ERROR:
		return "KVM_EXIT_INTERNAL_ERROR";
	case KVM_EXIT_SYSTEM_EVENT:
		return "KVM_EXIT_SYSTEM_EVENT";
	default:
		return "unexpected exit";
	}
}

/* The vCPU thread: KVM_RUN until told to stop. The guest never exits by
 * itself, so any exit but a kick (-EINTR, KVM_EXIT_INTR) is a failure. */
static void *vcpu_thread(void *arg)
{
	struct minivm_vcpu *vcpu = arg;

	while (!atomic_load(&vcpu->vm->stop)) {
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			vcpu->failed = true;
			vcpu->run_errno = errno;
			break;
		}
		if (vcpu->run->exit_reason == KVM_EXIT_INTR)
			continue;
		vcpu->failed = true;
		vcpu->exit_reason = vcpu->run->exit_reason;
		if (vcpu->exit_reason == KVM_EXIT_FAIL_ENTRY)
			vcpu->exit_detail = vcpu->run->fail_entry.hardware_entry_failure_reason;
		else if (vcpu->exit_reason == KVM_EXIT_INTERNAL_ERROR)
			vcpu->exit_detail = vcpu->run->internal.suberror;
		else if (vcpu->exit_reason == KVM_EXIT_IO)
			vcpu->exit_detail = vcpu->run->io.port;
		break;
	}
	atomic_store(&vcpu->exited, true);
	return NULL;
}

static void describe_failure(struct minivm *vm, const struct minivm_vcpu *vcpu)
{
	if (vcpu->run_errno)
		set_error(vm->error, "this host's KVM cannot run the guest: vCPU %u: KVM_RUN: %s",
			  vcpu->index, strerror(vcpu->run_errno));
	else
		set_error(vm->error,
			  "this host's KVM cannot run the guest: vCPU %u: %s (%u, detail %#llx)",
			  vcpu->index, exit_reason_name(vcpu->exit_reason), vcpu->exit_reason,
			  (unsigned long long)vcpu->exit_detail);
}

/* Stop and join every started vCPU thread. immediate_exit makes KVM_RUN
 * return -EINTR at once even when the signal lands before the thread
 * enters it (api.rst, struct kvm_run, immediate_exit; KVM_CAP_IMMEDIATE_EXIT),
 * and the signal kicks a thread already inside it. */
static void stop_threads(struct minivm *vm)
{
	atomic_store(&vm->stop, true);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct minivm_vcpu *vcpu = &vm->vcpus[i];

		if (!vcpu->joinable)
			continue;
		__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		pthread_kill(vcpu->thread, SIGUSR1);
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct minivm_vcpu *vcpu = &vm->vcpus[i];

		if (!vcpu->joinable)
			continue;
		pthread_join(vcpu->thread, NULL);
		vcpu->joinable = false;
		vcpu->run->immediate_exit = 0;
	}
	vm->running = false;
}

int minivm_pause(struct minivm *vm)
{
	if (!vm)
		return -EINVAL;
	if (!vm->running)
		return 0;
	stop_threads(vm);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		if (vm->vcpus[i].failed) {
			describe_failure(vm, &vm->vcpus[i]);
			return -EIO;
		}
	}
	return 0;
}

bool minivm_is_running(const struct minivm *vm)
{
	return vm && vm->running;
}

int minivm_start(struct minivm *vm)
{
	_cleanup_free_ uint64_t *seq0 = NULL;
	uint64_t deadline;
	int r;

	if (!vm)
		return -EINVAL;
	if (vm->running)
		return -EBUSY;
	seq0 = calloc(vm->n_vcpus, sizeof(*seq0));
	if (!seq0)
		return -ENOMEM;

	atomic_store(&vm->stop, false);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct minivm_vcpu *vcpu = &vm->vcpus[i];

		seq0[i] = __atomic_load_n(slot_field(vm, i, GUEST_SLOT_SEQ), __ATOMIC_ACQUIRE);
		atomic_store(&vcpu->exited, false);
		vcpu->failed = false;
		vcpu->run_errno = 0;
		vcpu->exit_reason = 0;
		vcpu->exit_detail = 0;
		vcpu->run->immediate_exit = 0;
	}
	vm->running = true;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct minivm_vcpu *vcpu = &vm->vcpus[i];

		r = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
		if (r != 0) {
			stop_threads(vm);
			set_error(vm->error, "vCPU %u: pthread_create: %s", i, strerror(r));
			return -r;
		}
		vcpu->joinable = true;
	}

	/* Wait until each guest has stored a sample taken after this start:
	 * proof the guest runs, and a clear refusal on a KVM that cannot run
	 * it. Two counts of seq, not one: a vCPU stopped between its TSC store
	 * and its seq increment counts the sample it took before the stop
	 * first (the handoff tests compare that one with the last before). */
	deadline = clock_ns(CLOCK_MONOTONIC) + START_TIMEOUT_NS;
	for (;;) {
		const struct timespec tick = { .tv_nsec = (long)NSEC_PER_MSEC };
		bool all = true;

		for (unsigned i = 0; i < vm->n_vcpus; i++) {
			struct minivm_vcpu *vcpu = &vm->vcpus[i];

			if (atomic_load(&vcpu->exited)) {
				stop_threads(vm);
				describe_failure(vm, vcpu);
				return -EIO;
			}
			if (__atomic_load_n(slot_field(vm, i, GUEST_SLOT_SEQ), __ATOMIC_ACQUIRE) <
			    seq0[i] + 2)
				all = false;
		}
		if (all)
			return 0;
		if (clock_ns(CLOCK_MONOTONIC) > deadline)
			break;
		nanosleep(&tick, NULL);
	}
	stop_threads(vm);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		if (__atomic_load_n(slot_field(vm, i, GUEST_SLOT_SEQ), __ATOMIC_ACQUIRE) <
		    seq0[i] + 2) {
			set_error(vm->error,
				  "this host's KVM cannot run the guest: vCPU %u stored no sample "
				  "in %llu s of KVM_RUN",
				  i, (unsigned long long)(START_TIMEOUT_NS / NSEC_PER_SEC));
			break;
		}
	}
	return -EIO;
}

int minivm_read_observations(const struct minivm *vm, struct minivm_observation *ret_obs, size_t n)
{
	if (!vm || !ret_obs || n != vm->n_vcpus)
		return -EINVAL;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		/* seq first: it is stored after tsc, so the tsc read next is at
		 * least as new as the sample seq counts. */
		ret_obs[i].seq =
			__atomic_load_n(slot_field(vm, i, GUEST_SLOT_SEQ), __ATOMIC_ACQUIRE);
		ret_obs[i].tsc =
			__atomic_load_n(slot_field(vm, i, GUEST_SLOT_TSC), __ATOMIC_ACQUIRE);
	}
	return 0;
}

/* Real mode at the guest's entry: flat segments at 0 (reset has CS base
 * 0xffff0000), IP = GUEST_CODE_GPA, SI = vCPU index, RFLAGS bit 1 (always
 * set, SDM vol. 1, 3.4.3). */
static int vcpu_set_entry(struct minivm *vm, struct minivm_vcpu *vcpu)
{
	struct kvm_sregs sregs = { 0 };
	struct kvm_segment *segs[] = { &sregs.cs, &sregs.ds, &sregs.es,
				       &sregs.fs, &sregs.gs, &sregs.ss };
	struct kvm_regs regs = {
		.rip = GUEST_CODE_GPA,
		.rsi = vcpu->index,
		.rflags = 0x2,
	};

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0) {
		set_error(vm->error, "vCPU %u: KVM_GET_SREGS: %s", vcpu->index, strerror(errno));
		return -errno;
	}
	/* KVM's reset state, changed only where set here. */
	sregs.cr0 = 0x60000010; /* reset value: CD, NW, ET; PE = 0, EM = TS = 0 */
	sregs.cr4 = 0;
	sregs.efer = 0;
	for (size_t i = 0; i < ELEMENTSOF(segs); i++) {
		struct kvm_segment *s = segs[i];

		*s = (struct kvm_segment){
			.base = 0,
			.limit = 0xffff,
			.selector = 0,
			.type = s == &sregs.cs ? 0xb : 0x3, /* code / data, accessed */
			.present = 1,
			.s = 1,
		};
	}
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0) {
		set_error(vm->error, "vCPU %u: KVM_SET_SREGS: %s", vcpu->index, strerror(errno));
		return -errno;
	}
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0) {
		set_error(vm->error, "vCPU %u: KVM_SET_REGS: %s", vcpu->index, strerror(errno));
		return -errno;
	}
	return 0;
}

int minivm_create(unsigned n_vcpus, struct minivm **ret_vm, char *ret_error)
{
	static const struct sigaction kick = { .sa_handler = sigusr1_noop };
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = GUEST_MEM_SIZE,
	};
	struct minivm *vm;
	int r, n;

	if (!ret_vm || n_vcpus == 0 || n_vcpus > MINIVM_MAX_VCPUS) {
		set_error(ret_error, "vCPU count must be 1..%d", MINIVM_MAX_VCPUS);
		return -EINVAL;
	}
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->kvm_fd = vm->vm_fd = -1;
	vm->mem = MAP_FAILED;
	vm->n_vcpus = n_vcpus;
	vm->vcpus = calloc(n_vcpus, sizeof(*vm->vcpus));
	vm->vcpu_fds = calloc(n_vcpus, sizeof(*vm->vcpu_fds));
	if (!vm->vcpus || !vm->vcpu_fds) {
		r = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < n_vcpus; i++) {
		vm->vcpus[i] =
			(struct minivm_vcpu){ .vm = vm, .index = i, .fd = -1, .run = MAP_FAILED };
		vm->vcpu_fds[i] = -1;
	}

	if (sigaction(SIGUSR1, &kick, NULL) < 0) {
		r = -errno;
		set_error(vm->error, "sigaction(SIGUSR1): %s", strerror(errno));
		goto fail;
	}

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		r = -errno;
		set_error(vm->error, "/dev/kvm: %s", strerror(errno));
		goto fail;
	}
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) <= 0) {
		r = -EOPNOTSUPP;
		set_error(vm->error, "KVM lacks KVM_CAP_IMMEDIATE_EXIT (Linux >= 4.11 needed)");
		goto fail;
	}
	n = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (n < (int)sizeof(struct kvm_run)) {
		r = n < 0 ? -errno : -EIO;
		set_error(vm->error, "KVM_GET_VCPU_MMAP_SIZE: %s",
			  n < 0 ? strerror(errno) : "too small");
		goto fail;
	}
	vm->run_size = (size_t)n;

	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		r = -errno;
		set_error(vm->error, "KVM_CREATE_VM: %s", strerror(errno));
		goto fail;
	}
	/* Needed for real mode on Intel without unrestricted guest; harmless
	 * elsewhere. */
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)GUEST_TSS_GPA) < 0) {
		r = -errno;
		set_error(vm->error, "KVM_SET_TSS_ADDR: %s", strerror(errno));
		goto fail;
	}

	vm->mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (vm->mem == MAP_FAILED) {
		r = -errno;
		set_error(vm->error, "guest memory: %s", strerror(errno));
		goto fail;
	}
	memcpy(vm->mem + GUEST_CODE_GPA, guest_code, sizeof(guest_code));
	region.userspace_addr = (uint64_t)(uintptr_t)vm->mem;
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
		r = -errno;
		set_error(vm->error, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
		goto fail;
	}

	for (unsigned i = 0; i < n_vcpus; i++) {
		struct minivm_vcpu *vcpu = &vm->vcpus[i];

		vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
		if (vcpu->fd < 0) {
			r = -errno;
			set_error(vm->error, "KVM_CREATE_VCPU %u: %s", i, strerror(errno));
			goto fail;
		}
		vm->vcpu_fds[i] = vcpu->fd;
		vcpu->run =
			mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
		if (vcpu->run == MAP_FAILED) {
			r = -errno;
			set_error(vm->error, "vCPU %u: mmap(kvm_run): %s", i, strerror(errno));
			goto fail;
		}
		r = vcpu_set_entry(vm, vcpu);
		if (r < 0)
			goto fail;
	}

	*ret_vm = vm;
	return 0;

fail:
	set_error(ret_error, "%s", vm->error);
	minivm_free(vm);
	return r;
}

struct minivm *minivm_free(struct minivm *vm)
{
	if (!vm)
		return NULL;
	if (vm->running)
		stop_threads(vm);
	for (unsigned i = 0; vm->vcpus && i < vm->n_vcpus; i++) {
		if (vm->vcpus[i].run != MAP_FAILED)
			munmap(vm->vcpus[i].run, vm->run_size);
		close_nointr(vm->vcpus[i].fd);
	}
	if (vm->mem != MAP_FAILED)
		munmap(vm->mem, GUEST_MEM_SIZE);
	close_nointr(vm->vm_fd);
	close_nointr(vm->kvm_fd);
	free(vm->vcpus);
	free(vm->vcpu_fds);
	free(vm);
	return NULL;
}

size_t minivm_state_size(const struct minivm *vm)
{
	if (!vm)
		return 0;
	return sizeof(struct state_header) + (size_t)vm->n_vcpus * sizeof(struct vcpu_state) +
	       GUEST_MEM_SIZE;
}

static int vcpu_get(struct minivm *vm, unsigned index, unsigned long request, const char *name,
		    void *ret_buf)
{
	if (ioctl(vm->vcpus[index].fd, request, ret_buf) < 0) {
		set_error(vm->error, "vCPU %u: %s: %s", index, name, strerror(errno));
		return -errno;
	}
	return 0;
}

int minivm_save(struct minivm *vm, void *buf, size_t size)
{
	struct state_header header = {
		.magic = STATE_MAGIC,
		.version = STATE_VERSION,
	};
	uint8_t *p = buf;
	int r;

	if (!vm || !buf)
		return -EINVAL;
	if (vm->running)
		return -EBUSY;
	if (size < minivm_state_size(vm))
		return -ENOBUFS;

	header.n_vcpus = vm->n_vcpus;
	header.mem_size = GUEST_MEM_SIZE;
	memcpy(p, &header, sizeof(header));
	p += sizeof(header);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct vcpu_state vs;

		r = vcpu_get(vm, i, KVM_GET_REGS, "KVM_GET_REGS", &vs.regs);
		if (r < 0)
			return r;
		r = vcpu_get(vm, i, KVM_GET_SREGS, "KVM_GET_SREGS", &vs.sregs);
		if (r < 0)
			return r;
		memcpy(p, &vs, sizeof(vs));
		p += sizeof(vs);
	}
	memcpy(p, vm->mem, GUEST_MEM_SIZE);
	return 0;
}

int minivm_load(struct minivm *vm, const void *buf, size_t size)
{
	struct state_header header;
	const uint8_t *p = buf;

	if (!vm || !buf)
		return -EINVAL;
	if (vm->running)
		return -EBUSY;
	if (size != minivm_state_size(vm)) {
		set_error(vm->error, "saved state is %zu bytes, this VM's is %zu", size,
			  minivm_state_size(vm));
		return -EINVAL;
	}
	memcpy(&header, p, sizeof(header));
	p += sizeof(header);
	if (memcmp(header.magic, STATE_MAGIC, sizeof(header.magic)) != 0 ||
	    header.version != STATE_VERSION || header.n_vcpus != vm->n_vcpus ||
	    header.mem_size != GUEST_MEM_SIZE) {
		set_error(vm->error, "saved state does not match this VM (magic, version, "
				     "vCPU count or memory size)");
		return -EINVAL;
	}

	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		int fd = vm->vcpus[i].fd;
		struct vcpu_state vs;

		memcpy(&vs, p, sizeof(vs));
		p += sizeof(vs);
		if (ioctl(fd, KVM_SET_SREGS, &vs.sregs) < 0 ||
		    ioctl(fd, KVM_SET_REGS, &vs.regs) < 0) {
			set_error(vm->error, "vCPU %u: loading registers: %s", i, strerror(errno));
			return -errno;
		}
	}
	memcpy(vm->mem, p, GUEST_MEM_SIZE);
	return 0;
}

int minivm_vm_fd(const struct minivm *vm)
{
	return vm ? vm->vm_fd : -EINVAL;
}

const int *minivm_vcpu_fds(const struct minivm *vm)
{
	return vm ? vm->vcpu_fds : NULL;
}

unsigned minivm_n_vcpus(const struct minivm *vm)
{
	return vm ? vm->n_vcpus : 0;
}

const char *minivm_last_error(const struct minivm *vm)
{
	return vm ? vm->error : "";
}
