/* bench_apply.c - apply latency (VMM request -> applied reply) through two
 * real vcounterd, beside the raw KVM ioctl floor and one VMM-socket round
 * trip, measured interleaved in the same run. One process is both VMMs. */
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timex.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "bench_stats.h"
#include "clockns.h"
#include "daemon_harness.h"
#include "frame.h"
#include "hostclock.h"
#include "kvm_x86.h"
#include "macro.h"
#include "unix_fd.h"
#include "vcounter/vcounter.h"
#include "wire.h"

#define EXIT_SKIP 77

#define DEFAULT_ITERATIONS 200
#define DEFAULT_WARMUP	   10
#define DEFAULT_SETTLE_MS  10
#define MAX_SETTLE_MS	   10000
#define MAX_ITERATIONS	   1000000
#define MAX_SIZES	   16

/* The daemons' defaults (daemon/main.c --help). */
#define POLICY_MAX_ABS_ELAPSED_NS UINT64_C(3600000000000)

/* The backend's own constants (client/kvm_x86.c), so the raw loop reads the
 * same file the backend reads when the guest and host rates differ. */
#define KVM_TSC_TOLERANCE_PPM_PATH "/sys/module/kvm/parameters/tsc_tolerance_ppm"

/* How long to wait for the previous migration to finish on the source
 * (its Applied/Ack exchange runs after the target's reply). */
#define PREVIOUS_MIGRATION_WAIT_NS (10 * NSEC_PER_SEC)

enum sample_kind {
	SAMPLE_APPLY,  /* vcounter_apply(): VMM request -> applied reply */
	SAMPLE_RAW,    /* the backend's syscalls in a bare loop */
	SAMPLE_RTT,    /* StatusRequest -> StatusReply on the target's socket */
	SAMPLE_INPROC, /* backend_kvm_x86.apply() called directly, no daemon */
	SAMPLE_DAEMON, /* the target daemon's own apply_latency_ns (report) */
	_SAMPLE_KIND_MAX,
};

/* The loops that run interleaved in each round (SAMPLE_DAEMON comes with
 * SAMPLE_APPLY). */
static const enum sample_kind round_kinds[] = { SAMPLE_APPLY, SAMPLE_RAW, SAMPLE_RTT,
						SAMPLE_INPROC };
/* --floor-only: what a host whose KVM ignores offsets can still measure. */
static const enum sample_kind floor_kinds[] = { SAMPLE_RAW, SAMPLE_RTT, SAMPLE_INPROC };

struct bench_config {
	unsigned sizes[MAX_SIZES];
	size_t n_sizes;
	unsigned iterations;
	unsigned warmup;
	int pin_cpu; /* -1: no pinning */
	unsigned settle_ms;
	bool floor_only;
};

struct bench_vm {
	char id[VC_VM_ID_MAX + 1];
	int vm_fd;
	unsigned n_vcpus;
	int *vcpu_fds;
};

struct bench_result {
	unsigned n_vcpus;
	uint64_t p50[_SAMPLE_KIND_MAX];
	uint64_t p99[_SAMPLE_KIND_MAX];
	uint32_t clock_flags;
};

struct bench {
	const struct bench_config *config;
	struct daemon_proc a, b;
	char peer_address[64];
	struct vcounter *vc_a, *vc_b;
	int rtt_fd;
	uint64_t rtt_next_id;
	uint8_t *rtt_buf;
	uint32_t host_tsc_khz;
	struct bench_vm src, dst;
	uint64_t *dst_offsets;		 /* what dst's vCPUs hold now */
	struct counter_state *src_state; /* for the in-process backend loop */
	struct backend_apply_result *inproc_result;
	uint64_t *samples[_SAMPLE_KIND_MAX];
	unsigned n_migrations;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / NSEC_PER_SEC), (long)(ns % NSEC_PER_SEC) };

	nanosleep(&ts, NULL);
}

static void bench_vm_destroy(struct bench_vm *vm)
{
	if (vm->vcpu_fds) {
		for (unsigned i = 0; i < vm->n_vcpus; i++)
			close_nointr(vm->vcpu_fds[i]);
		free(vm->vcpu_fds);
		vm->vcpu_fds = NULL;
	}
	close_nointr(vm->vm_fd);
	vm->vm_fd = -1;
}

/* A VM with n vCPUs that never run: the apply path only needs the fds. */
static int bench_vm_create(int kvm_fd, const char *id, unsigned n_vcpus, struct bench_vm *ret)
{
	struct bench_vm vm = { .vm_fd = -1, .n_vcpus = 0 };
	int r;

	snprintf(vm.id, sizeof(vm.id), "%s", id);
	vm.vcpu_fds = calloc(n_vcpus, sizeof(int));
	if (!vm.vcpu_fds)
		return -ENOMEM;
	vm.vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (vm.vm_fd < 0) {
		r = -errno;
		bench_vm_destroy(&vm);
		return r;
	}
	for (unsigned i = 0; i < n_vcpus; i++) {
		vm.vcpu_fds[i] = ioctl(vm.vm_fd, KVM_CREATE_VCPU, i);
		if (vm.vcpu_fds[i] < 0) {
			r = -errno;
			bench_vm_destroy(&vm);
			return r;
		}
		vm.n_vcpus = i + 1;
	}
	*ret = vm;
	return 0;
}

/* Write-then-read-back on vCPU 0, as the backend's probe does, restoring
 * the original. 1: honoured, 0: ignored (kvm_pvm), -errno. */
/* 1 if this host's KVM honours TSC offsets, 0 if not (detail says why), or
 * -errno: the backend's own write-then-read-back probe on a scratch VM. */
static int offsets_honoured(int kvm_fd, char *detail, size_t detail_size)
{
	struct bench_vm vm;
	struct kvm_vm_fds fds;
	bool control = false;
	int r;

	r = bench_vm_create(kvm_fd, "probe", 1, &vm);
	if (r < 0) {
		snprintf(detail, detail_size, "cannot create a KVM VM: %s", strerror(-r));
		return r;
	}
	fds = (struct kvm_vm_fds){ .vm_fd = vm.vm_fd, .n_vcpus = 1, .vcpu_fds = vm.vcpu_fds };
	r = backend_kvm_x86.probe(&fds, &control, detail, detail_size);
	bench_vm_destroy(&vm);
	return r < 0 ? r : control;
}

/* kvm_x86.c's kvm_tsc_tolerance_ppm(), whose file read is part of every
 * apply when guest and host rates differ by a few kHz. */
static int tolerance_read(uint32_t *ret_ppm)
{
	_cleanup_close_ int fd = -1;
	char buf[16];
	ssize_t n;

	fd = open(KVM_TSC_TOLERANCE_PPM_PATH, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return n < 0 ? -errno : -EIO;
	buf[n] = '\0';
	*ret_ppm = (uint32_t)strtoul(buf, NULL, 10);
	return 0;
}

/* The floor: every system call client/kvm_x86.c's kvm_x86_apply() makes,
 * in its order, with nothing between them. It writes back what the VM
 * holds, so the VM's state does not move:
 *   read_rates:  KVM_GET_TSC_KHZ per vCPU, cpuid(0) (frac bits), the
 *                tolerance file when guest and host rates differ;
 *   take_anchor: adjtimex, KVM_GET_CLOCK, and without HOST_TSC|REALTIME a
 *                CLOCK_REALTIME read and the rdtsc bracket, adjtimex;
 *   write:       KVM_SET_CLOCK(KVM_CLOCK_REALTIME), KVM_SET_DEVICE_ATTR
 *                (offset) per vCPU;
 *   read back:   KVM_GET_DEVICE_ATTR(offset) per vCPU, KVM_GET_CLOCK.
 * Not included: counter_math_plan() (arithmetic, no syscall) and
 * libvcounter's backend_select() (one KVM_HAS_DEVICE_ATTR per op). */
static int raw_apply_once(struct bench *b, uint64_t *ret_ns)
{
	const uint32_t need = KVM_CLOCK_HOST_TSC | KVM_CLOCK_REALTIME;
	const struct bench_vm *vm = &b->dst;
	struct kvm_clock_data clock = { 0 }, set = { 0 }, after = { 0 };
	struct sync_error sync;
	struct host_anchor anchor;
	struct timespec realtime;
	unsigned int eax, ebx, ecx, edx;
	uint32_t guest_khz = 0, ppm;
	uint64_t t0, t1, offset = 0;
	int r;

	t0 = clock_ns(CLOCK_MONOTONIC);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		int khz = ioctl(vm->vcpu_fds[i], KVM_GET_TSC_KHZ, 0);

		if (khz <= 0)
			return khz < 0 ? -errno : -EINVAL;
		guest_khz = (uint32_t)khz;
	}
	__get_cpuid(0, &eax, &ebx, &ecx, &edx);
	if (guest_khz != b->host_tsc_khz)
		(void)tolerance_read(&ppm);

	r = hostclock_sync_error(&sync);
	if (r < 0)
		return r;
	if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) < 0)
		return -errno;
	if ((clock.flags & need) != need) {
		if (clock_gettime(CLOCK_REALTIME, &realtime) < 0)
			return -errno;
		clock.realtime =
			(uint64_t)realtime.tv_sec * NSEC_PER_SEC + (uint64_t)realtime.tv_nsec;
		r = hostclock_bracket_anchor(b->host_tsc_khz, &anchor);
		if (r < 0)
			return r;
	}
	r = hostclock_sync_error(&sync);
	if (r < 0)
		return r;

	set.clock = clock.clock;
	set.flags = KVM_CLOCK_REALTIME;
	set.realtime = clock.realtime;
	if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &set) < 0)
		return -errno;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		r = kvm_x86_set_tsc_offset(vm->vcpu_fds[i], b->dst_offsets[i]);
		if (r < 0)
			return r;
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		r = kvm_x86_get_tsc_offset(vm->vcpu_fds[i], &offset);
		if (r < 0)
			return r;
		if (offset != b->dst_offsets[i])
			return -EIO;
	}
	if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &after) < 0)
		return -errno;
	t1 = clock_ns(CLOCK_MONOTONIC);

	*ret_ns = t1 - t0;
	return 0;
}

/* One unix-socket round trip as libvcounter makes it (pack, send, poll,
 * receive, parse, unpack), on a request the daemon answers at once. */
static int rtt_once(struct bench *b, uint64_t *ret_ns)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply = NULL;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;
	struct pollfd pfd = { .fd = b->rtt_fd, .events = POLLIN };
	_cleanup_free_ uint8_t *frame = NULL;
	const uint8_t *payload;
	int fds[UNIX_FD_MAX_FDS];
	size_t frame_len, payload_len, n_fds = 0;
	uint64_t t0, t1;
	ssize_t n;
	int r;

	req.id = ++b->rtt_next_id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;

	t0 = clock_ns(CLOCK_MONOTONIC);
	r = wire_vmm_pack_frame(&req, &frame, &frame_len);
	if (r < 0)
		return r;
	r = unix_fd_send(b->rtt_fd, frame, frame_len, NULL, 0);
	if (r < 0)
		return r;
	do {
		r = poll(&pfd, 1, 10000);
	} while (r < 0 && errno == EINTR);
	if (r <= 0)
		return r < 0 ? -errno : -ETIMEDOUT;
	n = unix_fd_recv(b->rtt_fd, b->rtt_buf, FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES, fds,
			 &n_fds);
	unix_fd_close_all(fds, n_fds);
	if (n <= 0)
		return n < 0 ? (int)n : -ECONNRESET;
	r = frame_parse_datagram(b->rtt_buf, (size_t)n, VC_MAX_FRAME_BYTES, &payload, &payload_len);
	if (r < 0)
		return r;
	r = wire_vmm_unpack(payload, payload_len, &reply, NULL);
	if (r < 0)
		return r;
	t1 = clock_ns(CLOCK_MONOTONIC);

	r = 0;
	if (reply->id != req.id || reply->body_case != VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY)
		r = -EPROTO;
	wire_vmm_free(reply);
	if (r < 0)
		return r;
	*ret_ns = t1 - t0;
	return 0;
}

/* The backend's apply in this process, no daemon and no socket: what the
 * library computes on top of the raw syscalls. */
static int inproc_apply_once(struct bench *b, uint64_t *ret_ns)
{
	const struct counter_policy policy = { .max_abs_elapsed_ns = POLICY_MAX_ABS_ELAPSED_NS };
	const struct kvm_vm_fds fds = {
		.vm_fd = b->dst.vm_fd,
		.n_vcpus = b->dst.n_vcpus,
		.vcpu_fds = b->dst.vcpu_fds,
	};
	uint64_t t0, t1;
	int r;

	t0 = clock_ns(CLOCK_MONOTONIC);
	r = backend_kvm_x86.apply(&fds, b->src_state, &policy, b->inproc_result);
	t1 = clock_ns(CLOCK_MONOTONIC);
	/* --floor-only runs where KVM may ignore offsets: the read-back then
	 * differs (-EIO) after the very same work, which is what is timed. */
	if (r == -EIO && b->config->floor_only)
		r = 0;
	if (r < 0)
		return r;
	for (unsigned i = 0; i < b->dst.n_vcpus; i++)
		b->dst_offsets[i] = b->inproc_result->readback.offset_cycles[i];
	*ret_ns = t1 - t0;
	return 0;
}

/* A fresh migration of src to dst, up to the point where the target VMM
 * would apply: migrate_out, then report_paused. Not timed. */
static int migration_prepare(struct bench *b, char ret_id[VCOUNTER_MIGRATION_ID_SIZE])
{
	uint64_t deadline = clock_ns(CLOCK_MONOTONIC) + PREVIOUS_MIGRATION_WAIT_NS, generation;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	int r;

	for (;;) {
		r = vcounter_migrate_out(b->vc_a, b->src.id, b->peer_address, "host-b.test", id);
		/* The source finishes the previous migration when the target's
		 * Applied arrives, which the target sends after its reply. */
		if (r != -EBUSY || clock_ns(CLOCK_MONOTONIC) > deadline || interrupted)
			break;
		sleep_ns(50 * NSEC_PER_USEC);
	}
	if (r < 0)
		return r;
	r = vcounter_report_paused(b->vc_a, b->src.id, id, &generation);
	if (r < 0)
		return r;
	memcpy(ret_id, id, sizeof(id));
	b->n_migrations++;
	return 0;
}

/* The report says the phase was kept (every vCPU moved by the same delta)
 * and the target's vCPUs hold what the report says. Not timed. */
static int apply_check(struct bench *b, const struct vcounter_report *rep, char *err,
		       size_t err_size)
{
	uint64_t delta, held = 0;
	int r;

	if (rep->n_vcpus != b->dst.n_vcpus) {
		snprintf(err, err_size, "report has %u vCPUs, VM %u", rep->n_vcpus, b->dst.n_vcpus);
		return -EPROTO;
	}
	delta = rep->offsets_after[0] - rep->offsets_before[0];
	for (unsigned i = 0; i < rep->n_vcpus; i++) {
		if (rep->offsets_after[i] - rep->offsets_before[i] != delta) {
			snprintf(err, err_size, "vCPU %u moved by %" PRId64 ", vCPU 0 by %" PRId64,
				 i, (int64_t)(rep->offsets_after[i] - rep->offsets_before[i]),
				 (int64_t)delta);
			return -EIO;
		}
		r = kvm_x86_get_tsc_offset(b->dst.vcpu_fds[i], &held);
		if (r < 0) {
			snprintf(err, err_size, "reading vCPU %u's offset: %s", i, strerror(-r));
			return r;
		}
		if (held != rep->offsets_after[i]) {
			snprintf(err, err_size, "vCPU %u holds %#" PRIx64 ", report says %#" PRIx64,
				 i, held, rep->offsets_after[i]);
			return -EIO;
		}
		b->dst_offsets[i] = held;
	}
	return 0;
}

/* One round: a migration prepared, then each measured loop once, in an
 * order that rotates so no loop always runs right after another. */
static int run_round(struct bench *b, unsigned round, bool record)
{
	const bool floor_only = b->config->floor_only;
	const enum sample_kind *kinds = floor_only ? floor_kinds : round_kinds;
	const size_t n_kinds = floor_only ? ELEMENTSOF(floor_kinds) : ELEMENTSOF(round_kinds);
	char id[VCOUNTER_MIGRATION_ID_SIZE], err[256];
	int r;

	r = floor_only ? 0 : migration_prepare(b, id);
	/* Let the daemons go idle (the source is another host in real life;
	 * what the target does after its reply does not delay a VMM that has
	 * a CPU of its own), so that every loop starts from the same state. */
	if (r == 0 && !floor_only)
		sleep_ns(b->config->settle_ms * NSEC_PER_MSEC);
	if (r == -EOPNOTSUPP) {
		printf("bench_apply: SKIP: the target refuses to apply on this host: %s\n",
		       vcounter_last_error(b->vc_a));
		return r;
	}
	if (r < 0) {
		fprintf(stderr, "bench_apply: %u vCPUs: preparing migration %u: %s (%s)\n",
			b->dst.n_vcpus, round, vcounter_last_error(b->vc_a), strerror(-r));
		return r;
	}
	for (size_t k = 0; k < n_kinds; k++) {
		enum sample_kind kind = kinds[(round + k) % n_kinds];
		struct vcounter_report *rep = NULL;
		uint64_t t0, t1, ns = 0;

		switch (kind) {
		case SAMPLE_APPLY:
			t0 = clock_ns(CLOCK_MONOTONIC);
			r = vcounter_apply(b->vc_b, b->dst.id, id, &rep);
			t1 = clock_ns(CLOCK_MONOTONIC);
			if (r < 0) {
				fprintf(stderr, "bench_apply: %u vCPUs: apply refused: %s (%s)\n",
					b->dst.n_vcpus, vcounter_last_error(b->vc_b), strerror(-r));
				return r;
			}
			r = apply_check(b, rep, err, sizeof(err));
			if (r < 0) {
				fprintf(stderr, "bench_apply: %u vCPUs: applied state wrong: %s\n",
					b->dst.n_vcpus, err);
				vcounter_report_free(rep);
				return r;
			}
			ns = t1 - t0;
			if (record)
				b->samples[SAMPLE_DAEMON][round] = rep->apply_latency_ns;
			vcounter_report_free(rep);
			/* The target's Applied and the source's Ack run now. */
			sleep_ns(b->config->settle_ms * NSEC_PER_MSEC);
			break;
		case SAMPLE_RAW:
			r = raw_apply_once(b, &ns);
			if (r < 0) {
				fprintf(stderr, "bench_apply: %u vCPUs: raw ioctl loop: %s\n",
					b->dst.n_vcpus, strerror(-r));
				return r;
			}
			break;
		case SAMPLE_RTT:
			r = rtt_once(b, &ns);
			if (r < 0) {
				fprintf(stderr, "bench_apply: status round trip: %s\n",
					strerror(-r));
				return r;
			}
			break;
		case SAMPLE_INPROC:
			r = inproc_apply_once(b, &ns);
			if (r < 0) {
				fprintf(stderr,
					"bench_apply: %u vCPUs: in-process backend apply: %s%s%s\n",
					b->dst.n_vcpus, strerror(-r),
					b->inproc_result->detail[0] ? ": " : "",
					b->inproc_result->detail);
				return r;
			}
			break;
		default:
			return -EINVAL;
		}
		if (record)
			b->samples[kind][round] = ns;
	}
	return 0;
}

static void bench_size_teardown(struct bench *b)
{
	if (b->src.vcpu_fds && b->vc_a)
		(void)vcounter_unregister_vm(b->vc_a, b->src.id);
	if (b->dst.vcpu_fds && b->vc_b)
		(void)vcounter_unregister_vm(b->vc_b, b->dst.id);
	bench_vm_destroy(&b->src);
	bench_vm_destroy(&b->dst);
	free(b->dst_offsets);
	b->dst_offsets = NULL;
	for (size_t k = 0; k < _SAMPLE_KIND_MAX; k++) {
		free(b->samples[k]);
		b->samples[k] = NULL;
	}
}

/* The VMs for one size: source registered on host-a, target on host-b
 * (with --floor-only, only the target VM, registered nowhere). A target
 * without offset control registers fine; its refusal comes at prepare. */
static int bench_size_setup(struct bench *b, int kvm_fd, unsigned n_vcpus)
{
	struct vcounter_vm_info info;
	struct kvm_vm_fds fds = { 0 };
	char id[VC_VM_ID_MAX + 1];
	int r;

	/* A migration names one VM id on both hosts. */
	snprintf(id, sizeof(id), "bench-vm-%u", n_vcpus);
	r = bench_vm_create(kvm_fd, id, n_vcpus, &b->dst);
	if (r == 0 && !b->config->floor_only)
		r = bench_vm_create(kvm_fd, id, n_vcpus, &b->src);
	if (r < 0) {
		fprintf(stderr, "bench_apply: creating a VM with %u vCPUs: %s\n", n_vcpus,
			strerror(-r));
		return r;
	}
	b->dst_offsets = calloc(n_vcpus, sizeof(uint64_t));
	for (size_t k = 0; k < _SAMPLE_KIND_MAX; k++) {
		b->samples[k] = calloc(b->config->iterations, sizeof(uint64_t));
		if (!b->samples[k])
			return -ENOMEM;
	}
	if (!b->dst_offsets)
		return -ENOMEM;
	for (unsigned i = 0; i < n_vcpus; i++) {
		r = kvm_x86_get_tsc_offset(b->dst.vcpu_fds[i], &b->dst_offsets[i]);
		if (r < 0)
			return r;
	}
	if (b->config->floor_only) {
		/* The in-process loop plans from the VM's own state. */
		fds.vm_fd = b->dst.vm_fd;
		fds.n_vcpus = n_vcpus;
		fds.vcpu_fds = b->dst.vcpu_fds;
		r = backend_kvm_x86.read_state(&fds, b->src_state);
		if (r < 0)
			fprintf(stderr, "bench_apply: reading the VM's state in-process: %s\n",
				strerror(-r));
		return r;
	}

	r = vcounter_register_vm(b->vc_a, b->src.id, VCOUNTER_ROLE_SOURCE, b->src.vm_fd,
				 b->src.vcpu_fds, n_vcpus, &info);
	if (r < 0) {
		fprintf(stderr, "bench_apply: registering %s on host-a: %s (%s)\n", b->src.id,
			vcounter_last_error(b->vc_a), strerror(-r));
		return r;
	}
	r = vcounter_register_vm(b->vc_b, b->dst.id, VCOUNTER_ROLE_TARGET, b->dst.vm_fd,
				 b->dst.vcpu_fds, n_vcpus, &info);
	if (r < 0) {
		fprintf(stderr, "bench_apply: registering %s on host-b: %s (%s)\n", b->dst.id,
			vcounter_last_error(b->vc_b), strerror(-r));
		return r;
	}
	/* Without offset control the target refuses at prepare; the first
	 * round shows that refusal (run_round). */
	if (!info.offset_control)
		fprintf(stderr, "bench_apply: host-b probe: %s\n", info.probe_detail);

	fds.vm_fd = b->src.vm_fd;
	fds.n_vcpus = n_vcpus;
	fds.vcpu_fds = b->src.vcpu_fds;
	r = backend_kvm_x86.read_state(&fds, b->src_state);
	if (r < 0) {
		fprintf(stderr, "bench_apply: reading the source state in-process: %s\n",
			strerror(-r));
		return r;
	}
	return 0;
}

static int bench_size(struct bench *b, int kvm_fd, unsigned n_vcpus, struct bench_result *ret)
{
	struct bench_result res = { .n_vcpus = n_vcpus };
	struct kvm_clock_data clock = { 0 };
	const unsigned k = b->config->iterations;
	int r;

	r = bench_size_setup(b, kvm_fd, n_vcpus);
	if (r < 0)
		goto out;
	if (ioctl(b->dst.vm_fd, KVM_GET_CLOCK, &clock) == 0)
		res.clock_flags = clock.flags;

	for (unsigned i = 0; i < b->config->warmup && !interrupted; i++) {
		r = run_round(b, i, false);
		if (r < 0)
			goto out;
	}
	for (unsigned i = 0; i < k && !interrupted; i++) {
		r = run_round(b, i, true);
		if (r < 0)
			goto out;
	}
	if (interrupted) {
		r = -EINTR;
		goto out;
	}
	for (size_t kind = 0; kind < _SAMPLE_KIND_MAX; kind++) {
		bench_sort(b->samples[kind], k);
		res.p50[kind] = bench_percentile(b->samples[kind], k, 50);
		res.p99[kind] = bench_percentile(b->samples[kind], k, 99);
	}
	*ret = res;
	r = 0;
out:
	bench_size_teardown(b);
	return r;
}

/* Without applies: the floor, the backend in-process, the round trip, and
 * the least an apply with two round trips (request -> KVM op -> result ->
 * reply) could cost: the daemon's own work comes on top. */
static void print_floor_table(const struct bench *b, const struct bench_result *res, size_t n)
{
	const uint32_t need = KVM_CLOCK_HOST_TSC | KVM_CLOCK_REALTIME;

	printf("\nfloor only (no applies), %u iterations per size (after %u warm-up), "
	       "microseconds\n",
	       b->config->iterations, b->config->warmup);
	printf("%5s | %9s | %9s | %11s | %9s | %9s | %18s | %16s | %s\n", "vcpus", "raw p50",
	       "raw p99", "in-proc p50", "rtt p50", "rtt p99", "budget 1.25raw+rtt",
	       "in-proc + 2 rtt", "anchor");
	for (size_t i = 0; i < n; i++) {
		const struct bench_result *r = &res[i];
		double raw = bench_us(r->p50[SAMPLE_RAW]), rtt = bench_us(r->p50[SAMPLE_RTT]);

		double inproc = bench_us(r->p50[SAMPLE_INPROC]);

		printf("%5u | %9.1f | %9.1f | %11.1f | %9.1f | %9.1f | %18.1f | %16.1f | %s\n",
		       r->n_vcpus, raw, bench_us(r->p99[SAMPLE_RAW]), inproc, rtt,
		       bench_us(r->p99[SAMPLE_RTT]), 1.25 * raw + rtt, inproc + 2 * rtt,
		       (r->clock_flags & need) == need ? "kvm-clock" : "bracket");
	}
}

static void print_table(const struct bench *b, const struct bench_result *res, size_t n)
{
	if (b->config->floor_only) {
		print_floor_table(b, res, n);
		return;
	}
	printf("\napply latency, %u iterations per size (after %u warm-up, %u ms settle), "
	       "microseconds\n",
	       b->config->iterations, b->config->warmup, b->config->settle_ms);
	printf("%5s | %9s | %9s | %9s | %9s | %9s | %9s | %16s | %s\n", "vcpus", "apply p50",
	       "apply p99", "raw p50", "raw p99", "rtt p50", "apply/raw", "(apply-rtt)/raw",
	       "target met (<= 1.25x raw + 1 rtt)");
	for (size_t i = 0; i < n; i++) {
		const struct bench_result *r = &res[i];
		double apply = bench_us(r->p50[SAMPLE_APPLY]), raw = bench_us(r->p50[SAMPLE_RAW]);
		double rtt = bench_us(r->p50[SAMPLE_RTT]);
		bool met = apply <= 1.25 * raw + rtt;

		printf("%5u | %9.1f | %9.1f | %9.1f | %9.1f | %9.1f | %8.2fx | %15.2fx | %s "
		       "(%.1f <= %.1f)\n",
		       r->n_vcpus, apply, bench_us(r->p99[SAMPLE_APPLY]), raw,
		       bench_us(r->p99[SAMPLE_RAW]), rtt, apply / raw, (apply - rtt) / raw,
		       met ? "yes" : "no", apply, 1.25 * raw + rtt);
	}

	printf("\nwhere the apply time goes (p50, microseconds)\n");
	printf("%5s | %9s | %14s | %13s | %9s | %9s | %s\n", "vcpus", "apply", "daemon-side",
	       "in-proc lib", "raw", "rtt p99", "anchor");
	for (size_t i = 0; i < n; i++) {
		const struct bench_result *r = &res[i];
		const uint32_t need = KVM_CLOCK_HOST_TSC | KVM_CLOCK_REALTIME;

		printf("%5u | %9.1f | %14.1f | %13.1f | %9.1f | %9.1f | %s (KVM_GET_CLOCK flags "
		       "%#x)\n",
		       r->n_vcpus, bench_us(r->p50[SAMPLE_APPLY]), bench_us(r->p50[SAMPLE_DAEMON]),
		       bench_us(r->p50[SAMPLE_INPROC]), bench_us(r->p50[SAMPLE_RAW]),
		       bench_us(r->p99[SAMPLE_RTT]),
		       (r->clock_flags & need) == need ? "kvm-clock" : "bracket", r->clock_flags);
	}
}

static void print_host(void)
{
	struct utsname u;
	const char *module = "unknown";
	static const char *const modules[] = { "kvm_pvm", "kvm_intel", "kvm_amd" };

	for (size_t i = 0; i < ELEMENTSOF(modules); i++) {
		char path[64];

		snprintf(path, sizeof(path), "/sys/module/%s", modules[i]);
		if (access(path, F_OK) == 0) {
			module = modules[i];
			break;
		}
	}
	if (uname(&u) == 0)
		printf("host: %s %s, %ld CPUs online, KVM module %s\n", u.sysname, u.release,
		       sysconf(_SC_NPROCESSORS_ONLN), module);
}

static int parse_sizes(const char *list, struct bench_config *config)
{
	_cleanup_free_ char *copy = strdup(list);
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	config->n_sizes = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned n;

		if (config->n_sizes == MAX_SIZES)
			return -E2BIG;
		/* The VM fd and every vCPU fd travel in one SCM_RIGHTS message. */
		if (bench_parse_uint(tok, 1, UNIX_FD_MAX_FDS - 1, &n) < 0)
			return -EINVAL;
		config->sizes[config->n_sizes++] = n;
	}
	return config->n_sizes > 0 ? 0 : -EINVAL;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: bench_apply [OPTIONS]\n"
		"Apply latency (VMM request -> applied reply) through two real vcounterd,\n"
		"beside the raw KVM ioctl floor and one VMM-socket round trip.\n\n"
		"  --vcpus LIST        vCPU counts, comma-separated (default 1,8,64; max %u)\n"
		"  --iterations K      measured rounds per vCPU count (default %u)\n"
		"  --warmup W          unrecorded rounds first (default %u)\n"
		"  --settle-ms MS      pause after preparing each migration and after each\n"
		"                      apply, so the daemons' peer traffic is over before\n"
		"                      the next timed call (default %u)\n"
		"  --pin-cpu CPU       run this process and host-b (the target) on CPU, and\n"
		"                      host-a (the source: another host in real life) on\n"
		"                      the other CPUs: no cross-CPU wake-ups on the\n"
		"                      target's socket hops, no source work on its CPU\n"
		"  --floor-only        only the raw floor, the in-process backend and the\n"
		"                      round trip (no migrations, no TLS): runs where KVM\n"
		"                      ignores offsets\n"
		"  --check-host        only say whether this host's KVM honours TSC offsets\n"
		"                      (exit 0) or not (exit 77)\n"
		"  --help              this text\n\n"
		"Environment: VC_BUILD_ROOT (where daemon/vcounterd is), VC_TEST_CERTS\n"
		"(tests/gen-certs.sh) or VC_TEST_CERT_DIR (certificates made beforehand).\n"
		"Exit: 0 ran, 77 skipped (no KVM, or KVM ignores offsets), 1 failed.\n",
		UNIX_FD_MAX_FDS - 1, DEFAULT_ITERATIONS, DEFAULT_WARMUP, DEFAULT_SETTLE_MS);
}

static int parse_args(int argc, char **argv, struct bench_config *config, bool *ret_check)
{
	enum {
		ARG_VCPUS = 0x100,
		ARG_ITERATIONS,
		ARG_WARMUP,
		ARG_SETTLE_MS,
		ARG_PIN_CPU,
		ARG_FLOOR_ONLY,
		ARG_CHECK_HOST,
		ARG_HELP
	};
	static const struct option options[] = {
		{ "vcpus", required_argument, NULL, ARG_VCPUS },
		{ "iterations", required_argument, NULL, ARG_ITERATIONS },
		{ "warmup", required_argument, NULL, ARG_WARMUP },
		{ "settle-ms", required_argument, NULL, ARG_SETTLE_MS },
		{ "pin-cpu", required_argument, NULL, ARG_PIN_CPU },
		{ "floor-only", no_argument, NULL, ARG_FLOOR_ONLY },
		{ "check-host", no_argument, NULL, ARG_CHECK_HOST },
		{ "help", no_argument, NULL, ARG_HELP },
		{ 0 },
	};
	int c;

	*config = (struct bench_config){
		.sizes = { 1, 8, 64 },
		.n_sizes = 3,
		.iterations = DEFAULT_ITERATIONS,
		.warmup = DEFAULT_WARMUP,
		.pin_cpu = -1,
		.settle_ms = DEFAULT_SETTLE_MS,
	};
	*ret_check = false;
	while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
		switch (c) {
		case ARG_VCPUS:
			if (parse_sizes(optarg, config) < 0) {
				fprintf(stderr, "bench_apply: bad --vcpus '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case ARG_ITERATIONS:
			if (bench_parse_uint(optarg, 1, MAX_ITERATIONS, &config->iterations) < 0) {
				fprintf(stderr, "bench_apply: bad --iterations '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case ARG_WARMUP:
			if (bench_parse_uint(optarg, 0, MAX_ITERATIONS, &config->warmup) < 0) {
				fprintf(stderr, "bench_apply: bad --warmup '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case ARG_SETTLE_MS:
			if (bench_parse_uint(optarg, 0, MAX_SETTLE_MS, &config->settle_ms) < 0) {
				fprintf(stderr, "bench_apply: bad --settle-ms '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case ARG_PIN_CPU: {
			unsigned cpu;

			if (bench_parse_uint(optarg, 0, CPU_SETSIZE - 1, &cpu) < 0) {
				fprintf(stderr, "bench_apply: bad --pin-cpu '%s'\n", optarg);
				return -EINVAL;
			}
			config->pin_cpu = (int)cpu;
			break;
		}
		case ARG_FLOOR_ONLY:
			config->floor_only = true;
			break;
		case ARG_CHECK_HOST:
			*ret_check = true;
			break;
		case ARG_HELP:
			usage(stdout);
			exit(EXIT_SUCCESS);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "bench_apply: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* With --pin-cpu: this process (and what it starts next) on that CPU, or
 * on every other online CPU (if there are others). Children inherit it. */
static int pin(int cpu, bool elsewhere)
{
	long n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t set;

	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	if (elsewhere && n_cpus > 1) {
		for (long i = 0; i < n_cpus && i < CPU_SETSIZE; i++)
			if (i != cpu)
				CPU_SET((int)i, &set);
	} else {
		CPU_SET(cpu, &set);
	}
	if (sched_setaffinity(0, sizeof(set), &set) < 0) {
		fprintf(stderr, "bench_apply: pinning to CPU %s%d: %s\n", elsewhere ? "not " : "",
			cpu, strerror(errno));
		return -errno;
	}
	return 0;
}

/* Start host-a (source) and host-b (target, listening on loopback), with
 * mutual TLS as tools/handoff.sh does. */
static int daemons_start(struct bench *b, const char *certs)
{
	char ca[300], cert_a[300], key_a[300], cert_b[300], key_b[300];
	const char *args_a[] = { "--host-name",
				 "host-a.test",
				 "--ca",
				 ca,
				 "--cert",
				 cert_a,
				 "--key",
				 key_a,
				 "--allow-peer",
				 "host-b.test",
				 "--log-level",
				 "info",
				 NULL };
	const char *args_b[] = { "--host-name", "host-b.test",	"--listen",
				 "127.0.0.1:0", "--ca",		ca,
				 "--cert",	cert_b,		"--key",
				 key_b,		"--allow-peer", "host-a.test",
				 "--log-level", "info",		NULL };
	int r;

	snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
	snprintf(cert_a, sizeof(cert_a), "%s/host-a.pem", certs);
	snprintf(key_a, sizeof(key_a), "%s/host-a.key", certs);
	snprintf(cert_b, sizeof(cert_b), "%s/host-b.pem", certs);
	snprintf(key_b, sizeof(key_b), "%s/host-b.key", certs);

	r = pin(b->config->pin_cpu, true);
	if (r < 0)
		return r;
	r = harness_start(&b->a, args_a);
	if (r < 0) {
		fprintf(stderr,
			"bench_apply: starting vcounterd host-a (%s/daemon/vcounterd): %s\n",
			harness_build_root(), strerror(-r));
		return r;
	}
	r = pin(b->config->pin_cpu, false);
	if (r < 0)
		return r;
	r = harness_start(&b->b, args_b);
	if (r < 0) {
		fprintf(stderr, "bench_apply: starting vcounterd host-b: %s\n", strerror(-r));
		return r;
	}
	snprintf(b->peer_address, sizeof(b->peer_address), "127.0.0.1:%d", b->b.peer_port);
	return 0;
}

int main(int argc, char **argv)
{
	struct bench_config config;
	struct bench b = { .rtt_fd = -1, .src = { .vm_fd = -1 }, .dst = { .vm_fd = -1 } };
	struct bench_result results[MAX_SIZES];
	struct sigaction sa = { .sa_handler = on_signal };
	_cleanup_close_ int kvm_fd = -1;
	char certs[512] = "", detail[256];
	bool check_only, own_certs = false;
	size_t n_results = 0;
	int r, ret = EXIT_FAILURE;

	if (parse_args(argc, argv, &config, &check_only) < 0)
		return 2;
	b.config = &config;
	setvbuf(stdout, NULL, _IOLBF, 0);

	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0) {
		printf("bench_apply: SKIP: /dev/kvm: %s\n", strerror(errno));
		return EXIT_SKIP;
	}
	r = offsets_honoured(kvm_fd, detail, sizeof(detail));
	if (r < 0) {
		fprintf(stderr, "bench_apply: %s\n", detail);
		return EXIT_FAILURE;
	}
	if (check_only) {
		printf("bench_apply: %s\n", detail);
		return r ? EXIT_SUCCESS : EXIT_SKIP;
	}

	/* Run from the build tree unless told otherwise. */
	setenv("VC_BUILD_ROOT", BENCH_BUILD_ROOT, 0);
	setenv("VC_TEST_CERTS", BENCH_GEN_CERTS, 0);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	print_host();
	if (config.pin_cpu >= 0)
		printf("pinned: this process and host-b on CPU %d, host-a on the other CPUs\n",
		       config.pin_cpu);
	else
		printf("not pinned: the scheduler places this process and both vcounterd\n");

	if (config.floor_only) {
		const char *args[] = { "--log-level", "info", NULL };

		r = pin(config.pin_cpu, false);
		if (r == 0)
			r = harness_start(&b.b, args);
		if (r == 0)
			r = b.rtt_fd = unix_fd_connect(b.b.vmm_socket, SOCK_SEQPACKET);
		if (r < 0) {
			fprintf(stderr, "bench_apply: starting vcounterd: %s\n", strerror(-r));
			goto out;
		}
		goto measure;
	}

	own_certs = !getenv("VC_TEST_CERT_DIR");
	r = harness_certs(certs, sizeof(certs));
	if (r < 0) {
		printf("bench_apply: SKIP: cannot make test certificates (openssl missing?): %s\n",
		       strerror(-r));
		ret = EXIT_SKIP;
		goto out;
	}
	r = daemons_start(&b, certs);
	if (r < 0)
		goto out;

	r = vcounter_connect(b.a.vmm_socket, &b.vc_a);
	if (r == 0)
		r = vcounter_connect(b.b.vmm_socket, &b.vc_b);
	if (r == 0)
		r = b.rtt_fd = unix_fd_connect(b.b.vmm_socket, SOCK_SEQPACKET);
	if (r < 0) {
		fprintf(stderr, "bench_apply: connecting to the daemons: %s\n", strerror(-r));
		goto out;
	}
measure:
	b.rtt_buf = malloc(FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES);
	b.src_state = calloc(1, sizeof(*b.src_state));
	b.inproc_result = calloc(1, sizeof(*b.inproc_result));
	if (!b.rtt_buf || !b.src_state || !b.inproc_result) {
		fprintf(stderr, "bench_apply: out of memory\n");
		goto out;
	}
	/* The rate the backend compares the guest's with (measured ~20 ms). */
	r = hostclock_tsc_khz(&b.host_tsc_khz);
	if (r < 0) {
		fprintf(stderr, "bench_apply: host TSC rate: %s\n", strerror(-r));
		goto out;
	}

	for (size_t i = 0; i < config.n_sizes; i++) {
		r = bench_size(&b, kvm_fd, config.sizes[i], &results[n_results]);
		if (r == -EOPNOTSUPP) {
			ret = EXIT_SKIP;
			goto out;
		}
		if (r == -EINTR) {
			fprintf(stderr, "bench_apply: interrupted\n");
			ret = 128 + (int)interrupted;
			goto out;
		}
		if (r < 0)
			goto out;
		n_results++;
		fprintf(stderr, "bench_apply: %u vCPUs done (%u migrations so far)\n",
			config.sizes[i], b.n_migrations);
	}
	print_table(&b, results, n_results);
	ret = EXIT_SUCCESS;
out:
	if (ret == EXIT_FAILURE) {
		if (b.a.pid > 0)
			harness_dump_log(&b.a);
		if (b.b.pid > 0)
			harness_dump_log(&b.b);
	}
	vcounter_close(b.vc_a);
	vcounter_close(b.vc_b);
	close_nointr(b.rtt_fd);
	if (b.a.pid > 0)
		harness_stop(&b.a);
	if (b.b.pid > 0)
		harness_stop(&b.b);
	if (own_certs && certs[0])
		harness_remove_tree(certs);
	free(b.rtt_buf);
	free(b.src_state);
	free(b.inproc_result);
	return ret;
}
