/* minivmm.c - the reference VMM's command line: runs the minivm guest, drives a
 * by-offset counter handoff between two of them through libvcounter, or the
 * by-value restore VMMs do today, and measures either from what the guest saw. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include <linux/kvm.h>
#include <netdb.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clockns.h"
#include "hostclock.h"
#include "kvm_write_guard.h"
#include "kvm_x86.h"
#include "macro.h"
#include "minivm.h"
#include "vcounter/vcounter.h"

#define DEFAULT_VCPUS	 2
#define DEFAULT_SECONDS	 1.0
#define MAX_SECONDS	 3600.0
/* Ten years: far beyond any uptime, well inside 2^63 cycles at any rate. */
#define MAX_GUEST_UPTIME (10.0 * 365 * 86400)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: minivmm run [--vcpus N] [--seconds S]\n"
		"       minivmm target --listen HOST:PORT [--port-file F] [--vm-id ID]\n"
		"                      [--vcounterd SOCKET] [--vcpus N] [--by-value]\n"
		"       minivmm source --to HOST:PORT --peer HOST:PORT --peer-name NAME\n"
		"                      [--vm-id ID] [--vcounterd SOCKET] [--vcpus N] [--seconds "
		"S]\n"
		"                      [--vcpu-skew CYCLES] [--guest-uptime S] [--register-late]\n"
		"       minivmm source --controlled --to HOST:PORT [--vm-id ID] ...\n"
		"       minivmm source --by-value --to HOST:PORT [--vcpus N] [--seconds S] ...\n"
		"\n"
		"run: create a KVM VM whose N vCPUs (default %d) loop storing their\n"
		"rdtsc, run it S seconds (default %.0f), pause it, print what each\n"
		"vCPU's guest last saw.\n"
		"source, target: move such a VM from one minivmm to the other, the TSC\n"
		"by offset through vcounterd, or with --by-value (on both) the way VMMs\n"
		"do today: IA32_TSC read after the pause, written back per vCPU with\n"
		"KVM_SET_MSRS, no daemon. The target prints the continuity and phase\n"
		"errors the guest's own samples show, and a 'result ...' line.\n"
		"--vcpu-skew: vCPU i's offset starts i * CYCLES from vCPU 0's.\n"
		"--guest-uptime: the guest's TSC starts as if it had run S seconds.\n"
		"--controlled: after S seconds, wait for a fleet controller to start the\n"
		"migration on the daemon (vcounterctl migrate); the daemon's notice names\n"
		"it and the target.\n"
		"--register-late: register a VM that already runs, as a VMM started before\n"
		"vcounterd must: run the guest S seconds, pause its vCPUs, register, resume,\n"
		"run S seconds more. A seccomp guard refuses and counts any counter write\n"
		"to the VM from then on (the source is never written); the 'late ...' lines\n"
		"say what registration did to the offsets and what the guest saw.\n",
		DEFAULT_VCPUS, DEFAULT_SECONDS);
}

struct options {
	unsigned n_vcpus;
	double seconds;
	const char *vm_id;
	const char *vcounterd;
	const char *to;	       /* source: target minivmm host:port */
	const char *peer;      /* source: target daemon host:port */
	const char *peer_name; /* source: target daemon identity */
	const char *listen;    /* target: host:port to accept the source on */
	const char *port_file; /* target: write the bound port here */
	int64_t vcpu_skew;     /* source: vCPU i's offset starts i * skew apart */
	double guest_uptime;   /* source: seconds the guest's TSC starts ahead */
	bool by_value;	       /* restore IA32_TSC by value, without vcounterd */
	bool controlled;       /* source: a controller starts the migration */
	bool register_late;    /* source: register after the guest has run */
};

enum command {
	COMMAND_RUN,
	COMMAND_SOURCE,
	COMMAND_TARGET,
};

static int parse_options(int argc, char **argv, enum command command, struct options *ret)
{
	static const struct option long_options[] = {
		{ "vcpus", required_argument, NULL, 'n' },
		{ "seconds", required_argument, NULL, 's' },
		{ "vm-id", required_argument, NULL, 'i' },
		{ "vcounterd", required_argument, NULL, 'v' },
		{ "to", required_argument, NULL, 't' },
		{ "peer", required_argument, NULL, 'p' },
		{ "peer-name", required_argument, NULL, 'N' },
		{ "listen", required_argument, NULL, 'l' },
		{ "port-file", required_argument, NULL, 'f' },
		{ "vcpu-skew", required_argument, NULL, 'k' },
		{ "guest-uptime", required_argument, NULL, 'u' },
		{ "by-value", no_argument, NULL, 'b' },
		{ "controlled", no_argument, NULL, 'c' },
		{ "register-late", no_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct options o = {
		.n_vcpus = DEFAULT_VCPUS,
		.seconds = DEFAULT_SECONDS,
		.vm_id = "minivm",
	};
	unsigned long n;
	char *end;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
		switch (c) {
		case 'n':
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || n == 0 || n > MINIVM_MAX_VCPUS) {
				fprintf(stderr, "minivmm: --vcpus must be 1..%d\n",
					MINIVM_MAX_VCPUS);
				return -EINVAL;
			}
			o.n_vcpus = (unsigned)n;
			break;
		case 's':
			errno = 0;
			o.seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o.seconds > 0) ||
			    o.seconds > MAX_SECONDS) {
				fprintf(stderr, "minivmm: --seconds must be in (0, %.0f]\n",
					MAX_SECONDS);
				return -EINVAL;
			}
			break;
		case 'i':
			o.vm_id = optarg;
			break;
		case 'v':
			o.vcounterd = optarg;
			break;
		case 't':
			o.to = optarg;
			break;
		case 'p':
			o.peer = optarg;
			break;
		case 'N':
			o.peer_name = optarg;
			break;
		case 'l':
			o.listen = optarg;
			break;
		case 'f':
			o.port_file = optarg;
			break;
		case 'k':
			errno = 0;
			o.vcpu_skew = strtoll(optarg, &end, 10);
			if (errno || end == optarg || *end) {
				fprintf(stderr, "minivmm: --vcpu-skew wants cycles\n");
				return -EINVAL;
			}
			break;
		case 'u':
			errno = 0;
			o.guest_uptime = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o.guest_uptime >= 0) ||
			    o.guest_uptime > MAX_GUEST_UPTIME) {
				fprintf(stderr, "minivmm: --guest-uptime must be in [0, %.0f]\n",
					MAX_GUEST_UPTIME);
				return -EINVAL;
			}
			break;
		case 'b':
			o.by_value = true;
			break;
		case 'c':
			o.controlled = true;
			break;
		case 'L':
			o.register_late = true;
			break;
		case 'h':
			usage(stdout);
			exit(EXIT_SUCCESS);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "minivmm: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (command == COMMAND_SOURCE && !o.to) {
		fprintf(stderr, "minivmm source: --to is required\n");
		return -EINVAL;
	}
	if (command == COMMAND_SOURCE && !o.by_value && !o.controlled &&
	    (!o.peer || !o.peer_name)) {
		fprintf(stderr, "minivmm source: --peer and --peer-name are required (or "
				"--controlled, or --by-value)\n");
		return -EINVAL;
	}
	if (o.controlled && (command != COMMAND_SOURCE || o.by_value || o.peer)) {
		fprintf(stderr,
			"minivmm: --controlled is for a source by offset, without --peer\n");
		return -EINVAL;
	}
	if (o.register_late && (command != COMMAND_SOURCE || o.by_value)) {
		fprintf(stderr, "minivmm: --register-late is for a source by offset\n");
		return -EINVAL;
	}
	if (command == COMMAND_TARGET && !o.listen) {
		fprintf(stderr, "minivmm target: --listen is required\n");
		return -EINVAL;
	}
	*ret = o;
	return 0;
}

static void sleep_seconds(double seconds)
{
	struct timespec left = {
		.tv_sec = (time_t)seconds,
		.tv_nsec = (long)((seconds - (double)(time_t)seconds) * (double)NSEC_PER_SEC),
	};

	while (nanosleep(&left, &left) < 0 && errno == EINTR)
		;
}

/* run: prove the VM works on this host and show what its guests see. */
static int cmd_run(int argc, char **argv)
{
	_cleanup_(minivm_freep) struct minivm *vm = NULL;
	_cleanup_free_ struct minivm_observation *first = NULL, *last = NULL;
	char error[MINIVM_ERROR_MAX] = "";
	uint64_t host_tsc, min_tsc = UINT64_MAX, max_tsc = 0;
	bool tsc_runs = true;
	struct options o;
	int r;

	if (parse_options(argc, argv, COMMAND_RUN, &o) < 0)
		return EXIT_FAILURE;
	first = calloc(o.n_vcpus, sizeof(*first));
	last = calloc(o.n_vcpus, sizeof(*last));
	if (!first || !last) {
		fprintf(stderr, "minivmm: out of memory\n");
		return EXIT_FAILURE;
	}

	r = minivm_create(o.n_vcpus, &vm, error);
	if (r < 0) {
		fprintf(stderr, "minivmm: creating the VM: %s\n", error[0] ? error : strerror(-r));
		return EXIT_FAILURE;
	}
	r = minivm_start(vm);
	if (r < 0) {
		fprintf(stderr, "minivmm: %s\n", minivm_last_error(vm));
		return EXIT_FAILURE;
	}
	(void)minivm_read_observations(vm, first, o.n_vcpus);
	sleep_seconds(o.seconds);
	r = minivm_pause(vm);
	host_tsc = __rdtsc();
	if (r < 0) {
		fprintf(stderr, "minivmm: the guest stopped by itself: %s\n",
			minivm_last_error(vm));
		return EXIT_FAILURE;
	}
	(void)minivm_read_observations(vm, last, o.n_vcpus);

	printf("vcpus=%u seconds=%g host_tsc_after_pause=%" PRIu64 "\n", o.n_vcpus, o.seconds,
	       host_tsc);
	for (unsigned i = 0; i < o.n_vcpus; i++) {
		/* Guest TSC minus host TSC, read just after the pause: the vCPU's
		 * offset plus the (small) time since its last sample. */
		int64_t guest_minus_host = (int64_t)(last[i].tsc - host_tsc);

		printf("vcpu=%u tsc=%" PRIu64 " seq=%" PRIu64 " samples=%" PRIu64
		       " tsc_advance=%" PRIu64 " guest_minus_host=%" PRId64 "\n",
		       i, last[i].tsc, last[i].seq, last[i].seq - first[i].seq,
		       last[i].tsc - first[i].tsc, guest_minus_host);
		if (last[i].tsc < min_tsc)
			min_tsc = last[i].tsc;
		if (last[i].tsc > max_tsc)
			max_tsc = last[i].tsc;
		if (last[i].seq != first[i].seq && last[i].tsc == first[i].tsc)
			tsc_runs = false;
	}
	/* The vCPUs are kicked one after the other, so this includes the few
	 * microseconds between their last samples, not only offset differences. */
	printf("spread_cycles=%" PRIu64 "\n", max_tsc - min_tsc);
	printf("guest_tsc_running=%s\n", tsc_runs ? "yes" : "no");
	if (!tsc_runs)
		fprintf(stderr,
			"minivmm: the guest ran (its sample counters advanced) but rdtsc returned "
			"the same value throughout: this host's KVM does not give the guest a "
			"running TSC\n");
	return EXIT_SUCCESS;
}

/* ---- the handoff: source and target minivmm ----
 *
 * The two minivmms move the VM the way a VMM does: the source pauses, its
 * daemon sends the final counter state to the target's daemon, then the
 * source sends guest memory and registers to the target minivmm over its
 * own TCP connection; the target loads them, asks its daemon to apply the
 * counter, and only then runs the vCPUs. The TSC never travels by value.
 *
 * --by-value is the baseline the handoff is measured against: the source
 * reads each vCPU's IA32_TSC after the pause and sends the values along, the
 * target writes them back with KVM_SET_MSRS before it runs the vCPUs, and
 * neither talks to vcounterd. Both modes send what the measurement needs
 * (see measure_handoff()). */

#define XFER_MAGIC	0x324d564dU /* "MVM2" */
#define XFER_KIND_STATE 0
#define XFER_KIND_ABORT 1

/* IA32_TIME_STAMP_COUNTER (Intel SDM vol. 4, table 2-2). */
#define MSR_IA32_TSC 0x10

/* KVM's default tsc_tolerance_ppm (arch/x86/kvm/x86.c): a guest rate this
 * close to the host's runs unscaled, so guest TSC = host TSC + offset. */
#define UNSCALED_TOLERANCE_PPM 250

/* Sent by the source minivmm, host byte order (both ends are this program
 * on the same architecture). For XFER_KIND_STATE it is followed by n_vcpus
 * struct minivm_observation (each vCPU's last sample before the pause),
 * n_vcpus struct xfer_vcpu and blob_len bytes of minivm_save() state. */
struct xfer_header {
	uint32_t magic;
	uint32_t kind;
	char vm_id[64];
	char migration_id[VCOUNTER_MIGRATION_ID_SIZE];
	char reason[256];
	uint64_t generation;
	uint32_t n_vcpus;
	uint32_t by_value;	   /* restore xfer_vcpu.msr_tsc, not by offset */
	uint64_t pause_tai_ns;	   /* CLOCK_TAI just after the source paused */
	uint32_t guest_tsc_khz;	   /* KVM_GET_TSC_KHZ of the source's vCPU 0 */
	struct host_anchor anchor; /* source host clock and TSC after the pause */
	int32_t tai_offset_s;	   /* the source kernel's TAI offset at the anchor */
	uint64_t blob_len;
};

/* What the source read from each paused vCPU. */
struct xfer_vcpu {
	uint64_t tsc_offset; /* KVM_VCPU_TSC_OFFSET: guest TSC - host TSC */
	uint64_t msr_tsc;    /* IA32_TSC, by value only: what VMMs save today */
};

/* "host:port" or "[v6]:port" -> getaddrinfo. */
static int resolve(const char *host_port, bool passive, struct addrinfo **ret)
{
	char host[256];
	const char *colon = strrchr(host_port, ':');
	const char *h = host;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	size_t len;

	if (!colon || colon == host_port)
		return -EINVAL;
	len = (size_t)(colon - host_port);
	if (host_port[0] == '[' && len >= 2 && host_port[len - 1] == ']') {
		host_port++;
		len -= 2;
	}
	if (len >= sizeof(host))
		return -ENAMETOOLONG;
	memcpy(host, host_port, len);
	host[len] = '\0';
	if (passive)
		hints.ai_flags = AI_PASSIVE;
	return getaddrinfo(h, colon + 1, &hints, ret) == 0 ? 0 : -EHOSTUNREACH;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int connect_to(const char *host_port)
{
	struct addrinfo *ai;
	int fd, r;

	r = resolve(host_port, false, &ai);
	if (r < 0)
		return r;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
	} else if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		r = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd >= 0 ? fd : r;
}

/* Tell the target minivmm the handoff is off, so it does not wait. */
static void send_abort(const struct options *o, const char *reason)
{
	struct xfer_header h = { .magic = XFER_MAGIC, .kind = XFER_KIND_ABORT };
	int fd = connect_to(o->to);

	if (fd < 0)
		return;
	snprintf(h.vm_id, sizeof(h.vm_id), "%s", o->vm_id);
	snprintf(h.reason, sizeof(h.reason), "%s", reason);
	(void)write_all(fd, &h, sizeof(h));
	close(fd);
}

static int register_vm(struct vcounter *vc, struct minivm *vm, const char *vm_id,
		       enum vcounter_role role, struct vcounter_vm_info *info)
{
	int r = vcounter_register_vm(vc, vm_id, role, minivm_vm_fd(vm), minivm_vcpu_fds(vm),
				     minivm_n_vcpus(vm), info);

	if (r < 0) {
		fprintf(stderr, "minivmm: registering %s with vcounterd: %s\n", vm_id,
			vcounter_last_error(vc));
		return r;
	}
	printf("%s: registered vm=%s backend=%s guest_tsc_khz=%u offset_control=%s%s%s\n",
	       role == VCOUNTER_ROLE_SOURCE ? "source" : "target", vm_id, info->backend,
	       info->guest_tsc_khz, info->offset_control ? "yes" : "NO",
	       info->offset_control ? "" : ": ", info->offset_control ? "" : info->probe_detail);
	return 0;
}

/* Every vCPU's offset into ret_offsets[minivm_n_vcpus(vm)] (partly written
 * on failure). */
static int read_tsc_offsets(const struct minivm *vm, uint64_t *ret_offsets)
{
	const int *fds = minivm_vcpu_fds(vm);

	for (unsigned i = 0; i < minivm_n_vcpus(vm); i++) {
		int r = kvm_x86_get_tsc_offset(fds[i], &ret_offsets[i]);

		if (r < 0)
			return r;
	}
	return 0;
}

/* KVM_GET_MSRS or KVM_SET_MSRS (request) of IA32_TSC alone; both return
 * the number of MSRs processed (api.rst 4.18, 4.19). A get returns the
 * guest's TSC at the moment of the ioctl. */
static int vcpu_msr_tsc(int vcpu_fd, unsigned long request, uint64_t value, uint64_t *ret_value)
{
	_cleanup_free_ struct kvm_msrs *msrs = NULL;
	int n;

	msrs = calloc(1, sizeof(*msrs) + sizeof(struct kvm_msr_entry));
	if (!msrs)
		return -ENOMEM;
	msrs->nmsrs = 1;
	msrs->entries[0].index = MSR_IA32_TSC;
	msrs->entries[0].data = value;
	n = ioctl(vcpu_fd, request, msrs);
	if (n < 0)
		return -errno;
	if (n != 1)
		return -EIO;
	if (ret_value)
		*ret_value = msrs->entries[0].data;
	return 0;
}

/* KVM_GET_TSC_KHZ returns the rate as the ioctl's value (api.rst 4.56); 0
 * means KVM does not know it. */
static int guest_tsc_khz(const struct minivm *vm, uint32_t *ret_khz)
{
	int khz = ioctl(minivm_vcpu_fds(vm)[0], KVM_GET_TSC_KHZ, 0);

	if (khz < 0)
		return -errno;
	if (khz == 0)
		return -EINVAL;
	*ret_khz = (uint32_t)khz;
	return 0;
}

/* Start the vCPUs' offsets where a VM restored by value often has them:
 * vCPU i's i * skew cycles after vCPU 0's (the handoff must keep these
 * differences exactly), and all of them uptime_cycles ahead, as if the guest
 * had run that long. A fresh VM's TSC is close to what KVM expects of any new
 * VM, which changes how KVM treats a by-value write (restore_by_value()). */
static int set_start_offsets(struct minivm *vm, int64_t skew, uint64_t uptime_cycles)
{
	const int *fds = minivm_vcpu_fds(vm);
	uint64_t base = 0;
	int r;

	r = kvm_x86_get_tsc_offset(fds[0], &base);
	if (r < 0)
		return r;
	for (unsigned i = uptime_cycles ? 0 : 1; i < minivm_n_vcpus(vm); i++) {
		r = kvm_x86_set_tsc_offset(fds[i], base + uptime_cycles + (uint64_t)skew * i);
		if (r < 0)
			return r;
	}
	return 0;
}

/* What one by-value write did. kvm_synchronize_tsc() (arch/x86/kvm/x86.c,
 * Linux 6.1) treats a host-initiated IA32_TSC write whose value lies within
 * one second of guest cycles of the previous write's value plus the time
 * since (or is 0) as an attempt to synchronise the vCPUs, and gives the vCPU
 * the offset of the write that opened the current "generation" instead of
 * value - host TSC. A vCPU's creation counts as a write of 0. */
struct tsc_write {
	uint64_t offset_before;	  /* the vCPU's offset before the restore */
	uint64_t host_tsc_before; /* host TSC just before KVM_SET_MSRS */
	uint64_t host_tsc_after;  /* and just after */
};

enum tsc_write_outcome {
	TSC_WRITE_GIVEN,   /* offset = value - host TSC during the write */
	TSC_WRITE_MATCHED, /* an offset KVM already held: an earlier write's, or creation's */
	TSC_WRITE_OTHER,
};

/* The restore VMMs do today (QEMU's kvm_put_msrs() on the incoming side):
 * IA32_TSC = the value saved after the pause, one vCPU after the other. The
 * blackout is not accounted, and each vCPU's offset comes from the host TSC
 * at its own write, or from KVM's matching (struct tsc_write). The offsets
 * before are read first, so that nothing else runs between the writes. */
static int restore_by_value(struct minivm *vm, const struct xfer_vcpu *saved,
			    struct tsc_write *ret_writes)
{
	const int *fds = minivm_vcpu_fds(vm);
	int r;

	for (unsigned i = 0; i < minivm_n_vcpus(vm); i++) {
		r = kvm_x86_get_tsc_offset(fds[i], &ret_writes[i].offset_before);
		if (r < 0)
			return r;
	}
	for (unsigned i = 0; i < minivm_n_vcpus(vm); i++) {
		uint64_t before = hostclock_rdtsc();

		r = vcpu_msr_tsc(fds[i], KVM_SET_MSRS, saved[i].msr_tsc, NULL);
		if (r < 0)
			return r;
		ret_writes[i].host_tsc_before = before;
		ret_writes[i].host_tsc_after = hostclock_rdtsc();
	}
	return 0;
}

/* vCPU i's write of saved[i].msr_tsc, given the offsets read back after all writes.
 * Matching is told by equality to the cycle: an offset computed from a fresh
 * host TSC equals one KVM held before only by chance. The bracket alone is
 * ambiguous: vCPU 0's offset can fall in vCPU i's bracket when their values
 * lie as far apart as their writes (seen once in 80 writes). */
static enum tsc_write_outcome tsc_write_outcome(unsigned i, const struct tsc_write *writes,
						const struct xfer_vcpu *saved,
						const uint64_t *offsets, unsigned n_vcpus)
{
	uint64_t host_tsc = saved[i].msr_tsc - offsets[i];

	for (unsigned j = 0; j < n_vcpus; j++)
		if (offsets[i] == writes[j].offset_before || (j < i && offsets[i] == offsets[j]))
			return TSC_WRITE_MATCHED;
	if ((int64_t)(host_tsc - writes[i].host_tsc_before) >= 0 &&
	    (int64_t)(writes[i].host_tsc_after - host_tsc) >= 0)
		return TSC_WRITE_GIVEN;
	return TSC_WRITE_OTHER;
}

/* ---- measuring a handoff from the guest's own samples ----
 *
 * Per vCPU, two of its samples: G1, its last before the pause (source), and
 * G2, one after the resume (target), with the vCPU's offsets O1 and O2 read
 * while it was out of KVM_RUN. The guest runs unscaled here (checked), so a
 * sample's host TSC is h = G - O, and its host time comes from an anchor
 * (CLOCK_TAI, host TSC) taken near it on the same host, A on the source, B
 * on the target: t = anchor.tai + (h - anchor.tsc) / host kHz. Then
 *
 *   continuity error = (G2 - G1) / guest kHz - (t2 - t1)
 *
 * is what the guest's counter advanced minus the host time that really
 * passed between the two samples (positive: the guest's TSC ran ahead), and
 *
 *   phase error = (O2[i] - O2[0]) - (O1[i] - O1[0])
 *
 * is exactly how much the guest-visible difference between vCPU i's and
 * vCPU 0's counters changed. (Differences of samples cannot show it: each
 * vCPU samples at its own times.) On one host both anchors read the same
 * clock and TSC, so the continuity error is the handoff's own error; between
 * hosts it would also hold the two clocks' disagreement, which the daemons'
 * error bound covers. The anchors' widths bound the measurement's own error. */
struct vcpu_measure {
	double guest_ns;      /* (G2 - G1) / guest kHz */
	double host_ns;	      /* t2 - t1 */
	double error_ns;      /* guest_ns - host_ns */
	int64_t phase_cycles; /* change of the offset difference to vCPU 0 */
};

/* ns from anchor a to host TSC reading h, h near a's (ms, not days). */
static double ns_after_anchor(const struct host_anchor *a, uint64_t host_tsc)
{
	return (double)(int64_t)(host_tsc - a->host_tsc) * 1e6 / a->host_tsc_khz;
}

static void measure_handoff(uint32_t n_vcpus, uint32_t guest_khz,
			    const struct minivm_observation *g1, const uint64_t *o1,
			    const struct host_anchor *a, const struct minivm_observation *g2,
			    const uint64_t *o2, const struct host_anchor *b,
			    struct vcpu_measure *ret)
{
	/* Integer first: TAI ns since 1970 do not fit a double's mantissa. */
	double anchors_ns = (double)(int64_t)(b->tai_ns - a->tai_ns);

	for (uint32_t i = 0; i < n_vcpus; i++) {
		uint64_t h1 = g1[i].tsc - o1[i], h2 = g2[i].tsc - o2[i];
		struct vcpu_measure *m = &ret[i];

		m->guest_ns = (double)(int64_t)(g2[i].tsc - g1[i].tsc) * 1e6 / guest_khz;
		m->host_ns = anchors_ns + ns_after_anchor(b, h2) - ns_after_anchor(a, h1);
		m->error_ns = m->guest_ns - m->host_ns;
		m->phase_cycles = (int64_t)((o2[i] - o2[0]) - (o1[i] - o1[0]));
	}
}

static bool khz_unscaled(uint32_t guest_khz, uint32_t host_khz)
{
	uint64_t diff = guest_khz > host_khz ? guest_khz - host_khz : host_khz - guest_khz;

	return diff * 1000000 <= (uint64_t)host_khz * UNSCALED_TOLERANCE_PPM;
}

/* --controlled: the guest runs until a fleet controller starts its
 * migration on the daemon (vcounterctl migrate, or service Control's
 * StartMigration); the daemon's notice says when the target is prepared. */
#define CONTROLLED_WAIT_MS 300000

static int await_controller(struct vcounter *vc, const struct options *o,
			    char migration_id[VCOUNTER_MIGRATION_ID_SIZE])
{
	struct vcounter_notice n;
	int r;

	printf("source: vm=%s waiting for a controller to start its migration\n", o->vm_id);
	fflush(stdout);
	for (;;) {
		r = vcounter_next_notice(vc, CONTROLLED_WAIT_MS, &n);
		if (r == 0) {
			fprintf(stderr, "minivmm: no controller started a migration in %d s\n",
				CONTROLLED_WAIT_MS / 1000);
			send_abort(o, "no controller started the migration");
			return -ETIMEDOUT;
		}
		if (r < 0) {
			fprintf(stderr, "minivmm: waiting for vcounterd: %s\n",
				vcounter_last_error(vc));
			send_abort(o, "source lost its vcounterd");
			return r;
		}
		if (strcmp(n.vm_id, o->vm_id) != 0 || n.role != VCOUNTER_ROLE_SOURCE)
			continue;
		printf("source: notice migration=%s step=%s\n", n.migration_id, n.step);
		if (n.terminal) {
			/* Called off before the pause: the guest runs on here. */
			printf("source: migration=%s %s before the pause: %s\n", n.migration_id,
			       n.step, n.reason);
			send_abort(o, n.reason);
			return -ECANCELED;
		}
		if (strcmp(n.step, "prepared") == 0) {
			memcpy(migration_id, n.migration_id, VCOUNTER_MIGRATION_ID_SIZE);
			printf("source: migration=%s started by a controller, prepared with %s "
			       "at %s\n",
			       migration_id, n.peer_identity, n.peer_address);
			fflush(stdout);
			return 0;
		}
	}
}

/* --register-late: register a VM whose guest has run, the way a VMM
 * started before vcounterd (or one whose daemon restarted without its fd
 * store) must. vCPU ioctls wait for the vCPU mutex KVM_RUN holds, so the
 * vCPUs are paused around the call (QEMU: pause_all_vcpus()); the probe
 * writes only a scratch VM of its own. The guard (kvm_write_guard.h) makes
 * any counter write to this VM fail, and counts it, from here to the end:
 * registration must not write the VM, and a source is never written.
 *
 * What is printed lets a test check what the guest saw, per vCPU: G0 a
 * sample read while it ran, G1 its last before the pause, G2 its first
 * after the resume, O1/O2 its offset before/after registration. Unscaled,
 * a sample's host TSC is G - O, so with unchanged offsets
 *   hr0 - hp1 <= G2 - G1 <= hr1 - (G0 - O1)
 * (hp1 host TSC after the pause, hr0 before the resume, hr1 after G2 was
 * read): the guest's counter went on with the host's, no step forward or
 * back; host_min and host_max are those bounds. */
static int register_running(struct vcounter *vc, struct minivm *vm, const struct options *o,
			    struct vcounter_vm_info *info)
{
	unsigned n = minivm_n_vcpus(vm);
	_cleanup_free_ struct minivm_observation *g0 = calloc(n, sizeof(*g0));
	_cleanup_free_ struct minivm_observation *g1 = calloc(n, sizeof(*g1));
	_cleanup_free_ struct minivm_observation *g2 = calloc(n, sizeof(*g2));
	_cleanup_free_ uint64_t *o1 = calloc(n, sizeof(*o1));
	_cleanup_free_ uint64_t *o2 = calloc(n, sizeof(*o2));
	uint64_t hp1, hr0, hr1, t0, t1, t2, t3, refused;
	unsigned long request = 0;
	int r, fd = -1;

	if (!g0 || !g1 || !g2 || !o1 || !o2)
		return -ENOMEM;
	(void)minivm_read_observations(vm, g0, n);
	t0 = clock_ns(CLOCK_TAI);
	r = minivm_pause(vm);
	hp1 = hostclock_rdtsc();
	if (r < 0) {
		fprintf(stderr, "minivmm: the guest stopped by itself: %s\n",
			minivm_last_error(vm));
		return r;
	}
	(void)minivm_read_observations(vm, g1, n);
	r = read_tsc_offsets(vm, o1);
	if (r < 0) {
		fprintf(stderr, "minivmm: reading the offsets: %s\n", strerror(-r));
		return r;
	}
	r = kvm_write_guard_install(minivm_vm_fd(vm), minivm_vcpu_fds(vm), n);
	if (r < 0) {
		fprintf(stderr, "minivmm: installing the counter-write guard: %s\n", strerror(-r));
		return r;
	}
	t1 = clock_ns(CLOCK_TAI);
	r = register_vm(vc, vm, o->vm_id, VCOUNTER_ROLE_SOURCE, info);
	t2 = clock_ns(CLOCK_TAI);
	refused = kvm_write_guard_refused(&fd, &request);
	if (refused)
		printf("source: late registration WROTE the registered VM: %" PRIu64
		       " counter write(s) refused, the last request %#lx on fd %d\n",
		       refused, request, fd);
	if (r < 0)
		return r;
	r = read_tsc_offsets(vm, o2);
	if (r < 0) {
		fprintf(stderr, "minivmm: reading the offsets: %s\n", strerror(-r));
		return r;
	}
	hr0 = hostclock_rdtsc();
	r = minivm_start(vm);
	if (r < 0) {
		fprintf(stderr, "minivmm: %s\n", minivm_last_error(vm));
		return r;
	}
	t3 = clock_ns(CLOCK_TAI);
	(void)minivm_read_observations(vm, g2, n);
	hr1 = hostclock_rdtsc();

	for (unsigned i = 0; i < n; i++)
		printf("source: late vcpu=%u offset_before=%" PRIu64 " offset_after=%" PRIu64
		       " guest_tsc_before=%" PRIu64 " guest_tsc_after=%" PRIu64
		       " guest_advance=%" PRId64 " host_min=%" PRId64 " host_max=%" PRId64 "\n",
		       i, o1[i], o2[i], g1[i].tsc, g2[i].tsc, (int64_t)(g2[i].tsc - g1[i].tsc),
		       (int64_t)(hr0 - hp1), (int64_t)(hr1 - (g0[i].tsc - o1[i])));
	printf("source: late registration vm=%s registered_ms=%.3f paused_ms=%.3f "
	       "refused_writes=%" PRIu64 "\n",
	       o->vm_id, (double)(t2 - t1) / 1e6, (double)(t3 - t0) / 1e6, refused);
	fflush(stdout);
	return 0;
}

static int cmd_source(int argc, char **argv)
{
	_cleanup_(minivm_freep) struct minivm *vm = NULL;
	_cleanup_free_ struct minivm_observation *obs = NULL;
	_cleanup_free_ struct xfer_vcpu *xv = NULL;
	_cleanup_free_ uint64_t *offsets = NULL;
	_cleanup_free_ void *blob = NULL;
	_cleanup_close_ int fd = -1;
	struct options o;
	struct vcounter_vm_info info;
	struct vcounter *vc = NULL;
	struct xfer_header h = { .magic = XFER_MAGIC, .kind = XFER_KIND_STATE };
	struct sync_error sync = { 0 };
	char error[MINIVM_ERROR_MAX] = "", migration_id[VCOUNTER_MIGRATION_ID_SIZE] = "";
	uint32_t host_khz;
	uint64_t generation = 0;
	char done;
	int r, ret = EXIT_FAILURE;

	if (parse_options(argc, argv, COMMAND_SOURCE, &o) < 0)
		return EXIT_FAILURE;
	obs = calloc(o.n_vcpus, sizeof(*obs));
	xv = calloc(o.n_vcpus, sizeof(*xv));
	offsets = calloc(o.n_vcpus, sizeof(*offsets));
	if (!obs || !xv || !offsets)
		return EXIT_FAILURE;
	r = minivm_create(o.n_vcpus, &vm, error);
	if (r < 0) {
		fprintf(stderr, "minivmm: creating the VM: %s\n", error[0] ? error : strerror(-r));
		send_abort(&o, "source could not create its VM");
		return EXIT_FAILURE;
	}
	/* Both rates before the guest runs: measuring the host's takes ~20 ms
	 * (hostclock.h), which must not fall into the blackout. */
	r = guest_tsc_khz(vm, &h.guest_tsc_khz);
	if (r == 0)
		r = hostclock_tsc_khz(&host_khz);
	if (r < 0) {
		fprintf(stderr, "minivmm: cannot tell the TSC rates: %s\n", strerror(-r));
		send_abort(&o, "source cannot tell its TSC rates");
		return EXIT_FAILURE;
	}
	if ((o.vcpu_skew || o.guest_uptime > 0) &&
	    set_start_offsets(vm, o.vcpu_skew,
			      (uint64_t)(o.guest_uptime * 1000.0 * h.guest_tsc_khz)) < 0)
		fprintf(stderr, "minivmm: cannot set the vCPUs' start offsets\n");
	if (!o.by_value) {
		r = vcounter_connect(o.vcounterd, &vc);
		if (r < 0) {
			fprintf(stderr, "minivmm: cannot reach vcounterd at %s: %s\n",
				o.vcounterd ? o.vcounterd : VCOUNTER_DEFAULT_SOCKET, strerror(-r));
			send_abort(&o, "source cannot reach its vcounterd");
			return EXIT_FAILURE;
		}
	}
	/* Registered before the vCPUs first run (the usual way: no pause
	 * needed), or, --register-late, after. */
	if (!o.by_value && !o.register_late &&
	    register_vm(vc, vm, o.vm_id, VCOUNTER_ROLE_SOURCE, &info) < 0) {
		send_abort(&o, "source registration failed");
		goto out;
	}
	if (o.by_value) {
		printf("source: vm=%s by value (IA32_TSC, no vcounterd) guest_tsc_khz=%u\n",
		       o.vm_id, h.guest_tsc_khz);
	}
	r = minivm_start(vm);
	if (r < 0) {
		fprintf(stderr, "minivmm: %s\n", minivm_last_error(vm));
		send_abort(&o, minivm_last_error(vm));
		goto out;
	}
	sleep_seconds(o.seconds);
	if (o.register_late) {
		if (register_running(vc, vm, &o, &info) < 0) {
			send_abort(&o, "source registration failed");
			goto out;
		}
		sleep_seconds(o.seconds);
	}

	if (o.controlled) {
		r = await_controller(vc, &o, migration_id);
		if (r < 0)
			goto out;
	} else if (!o.by_value) {
		r = vcounter_migrate_out(vc, o.vm_id, o.peer, o.peer_name, migration_id);
		if (r < 0) {
			fprintf(stderr, "minivmm: migration refused: %s\n",
				vcounter_last_error(vc));
			printf("source: migration refused: %s\n", vcounter_last_error(vc));
			send_abort(&o, vcounter_last_error(vc));
			goto out;
		}
		printf("source: migration=%s prepared with %s\n", migration_id, o.peer_name);
	}

	/* Blackout starts. */
	r = minivm_pause(vm);
	h.pause_tai_ns = clock_ns(CLOCK_TAI);
	if (r < 0) {
		fprintf(stderr, "minivmm: the guest stopped by itself: %s\n",
			minivm_last_error(vm));
		send_abort(&o, "source guest stopped");
		goto out;
	}
	(void)minivm_read_observations(vm, obs, o.n_vcpus);
	/* By value, IA32_TSC first, as a VMM saves it when the VM stops
	 * (QEMU: kvm_get_tsc() from the vm state change handler). */
	for (unsigned i = 0; o.by_value && i < o.n_vcpus; i++) {
		r = vcpu_msr_tsc(minivm_vcpu_fds(vm)[i], KVM_GET_MSRS, 0, &xv[i].msr_tsc);
		if (r < 0) {
			fprintf(stderr, "minivmm: KVM_GET_MSRS IA32_TSC: %s\n", strerror(-r));
			send_abort(&o, "source cannot read IA32_TSC");
			goto out;
		}
	}
	/* For the measurement only: the offsets the guest's samples were taken
	 * with, and the host clock they map to. */
	r = read_tsc_offsets(vm, offsets);
	if (r == 0)
		r = hostclock_bracket_anchor(host_khz, &h.anchor);
	if (r == 0)
		r = hostclock_sync_error(&sync);
	h.tai_offset_s = sync.tai_offset_s;
	if (r < 0) {
		fprintf(stderr, "minivmm: reading the offsets or the host clock: %s\n",
			strerror(-r));
		send_abort(&o, "source cannot measure");
		goto out;
	}
	for (unsigned i = 0; i < o.n_vcpus; i++)
		xv[i].tsc_offset = offsets[i];
	if (!o.by_value) {
		r = vcounter_report_paused(vc, o.vm_id, migration_id, &generation);
		if (r < 0) {
			fprintf(stderr, "minivmm: final state refused: %s\n",
				vcounter_last_error(vc));
			send_abort(&o, vcounter_last_error(vc));
			goto out;
		}
	}

	h.blob_len = minivm_state_size(vm);
	blob = malloc(h.blob_len);
	if (!blob || minivm_save(vm, blob, h.blob_len) < 0) {
		send_abort(&o, "source could not save its VM");
		goto out;
	}
	snprintf(h.vm_id, sizeof(h.vm_id), "%s", o.vm_id);
	snprintf(h.migration_id, sizeof(h.migration_id), "%s", migration_id);
	h.generation = generation;
	h.n_vcpus = o.n_vcpus;
	h.by_value = o.by_value;
	fd = connect_to(o.to);
	if (fd < 0) {
		fprintf(stderr, "minivmm: cannot reach the target minivmm at %s: %s\n", o.to,
			strerror(-fd));
		goto out;
	}
	r = write_all(fd, &h, sizeof(h));
	if (r == 0)
		r = write_all(fd, obs, o.n_vcpus * sizeof(*obs));
	if (r == 0)
		r = write_all(fd, xv, o.n_vcpus * sizeof(*xv));
	if (r == 0)
		r = write_all(fd, blob, h.blob_len);
	if (r < 0) {
		fprintf(stderr, "minivmm: sending the VM to the target: %s\n", strerror(-r));
		goto out;
	}
	for (unsigned i = 0; i < o.n_vcpus; i++) {
		printf("source: vcpu=%u last_guest_tsc=%" PRIu64, i, obs[i].tsc);
		if (o.by_value)
			printf(" ia32_tsc=%" PRIu64, xv[i].msr_tsc);
		printf("\n");
	}
	/* The target answers one byte once its guest runs: the VM has moved. */
	if (read_all(fd, &done, 1) < 0 || done != 0) {
		fprintf(stderr, "minivmm: the target did not take the VM\n");
		goto out;
	}
	if (o.by_value) {
		printf("source: handed off by value\n");
	} else {
		printf("source: handed off, generation=%" PRIu64 "\n", generation);
		vcounter_unregister_vm(vc, o.vm_id);
	}
	ret = EXIT_SUCCESS;
out:
	vcounter_close(vc);
	return ret;
}

static int listen_on(const struct options *o)
{
	struct addrinfo *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, one = 1, r, port;

	r = resolve(o->listen, true, &ai);
	if (r < 0)
		return r;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		r = -errno;
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		return r;
	}
	freeaddrinfo(ai);
	port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);
	if (o->port_file) {
		char tmp[4096];
		FILE *f;

		snprintf(tmp, sizeof(tmp), "%s.tmp", o->port_file);
		f = fopen(tmp, "we");
		if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 ||
		    rename(tmp, o->port_file) < 0) {
			close(fd);
			return -EIO;
		}
	}
	return fd;
}

/* What the target prints: offsets are what KVM held (read back on each
 * side), so both modes show the same columns. */
struct handoff_view {
	const char *mode; /* "offset" or "by-value" */
	uint32_t n_vcpus;
	uint32_t guest_khz;
	const uint64_t *o1, *o2;
	const struct minivm_observation *g1, *g2;
	const struct vcpu_measure *m; /* NULL: not measured (scaled guest TSC) */
	const struct host_anchor *a, *b;
	uint64_t pause_tai_ns, resume_tai_ns;
	char error_bound[32];		/* the daemons' bound in ns, "unbounded" or "none" */
	const char *tsc_writes_matched; /* by value: how many; "na" by offset */
};

static void print_table(const struct handoff_view *v)
{
	printf("%-5s %22s %22s %22s %22s %16s %13s\n", "vCPU", "offset before", "offset after",
	       "guest TSC at pause", "guest TSC at resume", "continuity ns", "phase cycles");
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		printf("%-5u %22" PRId64 " %22" PRId64 " %22" PRIu64 " %22" PRIu64, i,
		       (int64_t)v->o1[i], (int64_t)v->o2[i], v->g1[i].tsc, v->g2[i].tsc);
		if (v->m)
			printf(" %16.0f %13" PRId64 "\n", v->m[i].error_ns, v->m[i].phase_cycles);
		else
			printf(" %16s %13s\n", "-", "-");
	}
}

static double abs_double(double x)
{
	return x < 0 ? -x : x;
}

static void print_measurement(const struct handoff_view *v)
{
	double khz = v->guest_khz, worst_ns = 0;
	int64_t phase = 0;
	uint32_t worst = 0;
	bool phase_kept = true;

	for (uint32_t i = 0; i < v->n_vcpus; i++)
		if (v->o2[i] - v->o2[0] != v->o1[i] - v->o1[0])
			phase_kept = false;
	printf("phase between vCPUs      %s\n",
	       phase_kept ? "kept exactly (offset differences identical)" : "CHANGED");
	/* The guest samples in a loop, so its last sample before the pause and
	 * its first after the resume lie outside the blackout by up to one
	 * sampling interval each: the advance is at least the blackout. */
	printf("guest saw (vCPU 0)       TSC advanced %.3f ms between its last sample before the "
	       "pause and its first after the resume; the blackout lasted %.3f ms\n",
	       (double)(int64_t)(v->g2[0].tsc - v->g1[0].tsc) / khz,
	       (double)(int64_t)(v->resume_tai_ns - v->pause_tai_ns) / 1e6);
	if (!v->m) {
		printf("continuity error         not measured: the guest TSC is scaled "
		       "(guest G - offset is not the host TSC)\n");
		return;
	}
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		int64_t p = v->m[i].phase_cycles < 0 ? -v->m[i].phase_cycles : v->m[i].phase_cycles;

		if (p > phase)
			phase = p;
		if (abs_double(v->m[i].error_ns) > abs_double(worst_ns)) {
			worst_ns = v->m[i].error_ns;
			worst = i;
		}
	}
	printf("continuity error         %+.0f ns (%+.0f cycles) at vCPU %u, the largest: its TSC "
	       "advanced %.0f ns while the host clock advanced %.0f ns between its samples "
	       "(measured to +-%" PRIu64 " ns, the anchors' widths)\n",
	       worst_ns, worst_ns * khz / 1e6, worst, v->m[worst].guest_ns, v->m[worst].host_ns,
	       v->a->width_ns + v->b->width_ns);
	printf("phase error              %" PRId64 " cycles (largest change of a vCPU's offset "
	       "difference to vCPU 0)\n",
	       phase);
	printf("result mode=%s vcpus=%u guest_tsc_khz=%u continuity_ns_max=%.0f "
	       "continuity_cycles_max=%.0f phase_cycles=%" PRId64 " error_bound_ns=%s "
	       "anchor_width_ns=%" PRIu64 " blackout_ns=%" PRId64 " tsc_writes_matched=%s\n",
	       v->mode, v->n_vcpus, v->guest_khz, worst_ns, worst_ns * khz / 1e6, phase,
	       v->error_bound, v->a->width_ns + v->b->width_ns,
	       (int64_t)(v->resume_tai_ns - v->pause_tai_ns), v->tsc_writes_matched);
}

static void print_report(const struct vcounter_report *rep, const struct handoff_view *v)
{
	printf("\n");
	printf("handoff vm=%s migration=%s backend=%s generation=%" PRIu64 "\n", rep->vm_id,
	       rep->migration_id, rep->backend, rep->generation);
	print_table(v);
	printf("elapsed time accounted   %" PRId64 " ns (%" PRId64
	       " cycles added to every offset)\n",
	       rep->elapsed_ns, rep->delta_cycles);
	if (rep->error_bound_ns == UINT64_MAX)
		printf("error bound              unbounded: a host clock is not synchronised "
		       "(adjtimex STA_UNSYNC)\n");
	else
		printf("error bound              %" PRIu64 " ns%s\n", rep->error_bound_ns,
		       rep->error_bound_exceeded ? " (over the configured limit)" : "");
	printf("apply latency            %.1f us (VMM request to applied reply)\n",
	       (double)rep->apply_latency_ns / 1e3);
	/* The table shows what KVM held; the daemon's report must say the same. */
	for (uint32_t i = 0; i < rep->n_vcpus && i < v->n_vcpus; i++)
		if (rep->offsets_before[i] != v->o1[i] || rep->offsets_after[i] != v->o2[i]) {
			printf("offsets                  vCPU %u: KVM held %" PRId64 " -> %" PRId64
			       ", the report says %" PRId64 " -> %" PRId64 "\n",
			       i, (int64_t)v->o1[i], (int64_t)v->o2[i],
			       (int64_t)rep->offsets_before[i], (int64_t)rep->offsets_after[i]);
		}
	print_measurement(v);
}

static void print_by_value(const struct xfer_header *h, const struct xfer_vcpu *saved,
			   const struct tsc_write *writes, const struct handoff_view *v)
{
	printf("\n");
	printf("handoff vm=%s by value: IA32_TSC saved after the pause, KVM_SET_MSRS per vCPU, "
	       "no daemon\n",
	       h->vm_id);
	print_table(v);
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		static const char *const outcome[] = {
			[TSC_WRITE_GIVEN] = "taken as given (value - host TSC at the write)",
			[TSC_WRITE_MATCHED] = "MATCHED: KVM kept an offset it held before "
					      "(kvm_synchronize_tsc), or ignored the write",
			[TSC_WRITE_OTHER] = "neither value - host TSC at the write nor an offset "
					    "KVM held before",
		};

		printf("by-value write vCPU %-4u IA32_TSC=%" PRIu64 " -> offset %" PRId64 ": %s\n",
		       i, saved[i].msr_tsc, (int64_t)v->o2[i],
		       outcome[tsc_write_outcome(i, writes, saved, v->o2, v->n_vcpus)]);
	}
	printf("KVM TSC matching         %s of %u writes matched\n", v->tsc_writes_matched,
	       v->n_vcpus);
	print_measurement(v);
}

static int cmd_target(int argc, char **argv)
{
	_cleanup_(minivm_freep) struct minivm *vm = NULL;
	_cleanup_free_ struct minivm_observation *before = NULL, *after = NULL;
	_cleanup_free_ struct xfer_vcpu *xv = NULL;
	_cleanup_free_ struct tsc_write *writes = NULL;
	_cleanup_free_ uint64_t *o1 = NULL, *o2 = NULL, *o2_run = NULL;
	_cleanup_free_ struct vcpu_measure *m = NULL;
	_cleanup_free_ void *blob = NULL;
	_cleanup_close_ int lfd = -1, fd = -1;
	struct vcounter_report *rep = NULL;
	struct options o;
	struct vcounter_vm_info info;
	struct vcounter *vc = NULL;
	struct xfer_header h;
	struct host_anchor b;
	struct sync_error sync;
	struct handoff_view v;
	char error[MINIVM_ERROR_MAX] = "", matched[16] = "na";
	uint32_t host_khz, khz;
	uint64_t resume_tai_ns;
	const char done = 0;
	bool measured;
	int r, ret = EXIT_FAILURE;

	if (parse_options(argc, argv, COMMAND_TARGET, &o) < 0)
		return EXIT_FAILURE;
	before = calloc(o.n_vcpus, sizeof(*before));
	after = calloc(o.n_vcpus, sizeof(*after));
	xv = calloc(o.n_vcpus, sizeof(*xv));
	writes = calloc(o.n_vcpus, sizeof(*writes));
	o1 = calloc(o.n_vcpus, sizeof(*o1));
	o2 = calloc(o.n_vcpus, sizeof(*o2));
	o2_run = calloc(o.n_vcpus, sizeof(*o2_run));
	m = calloc(o.n_vcpus, sizeof(*m));
	if (!before || !after || !xv || !writes || !o1 || !o2 || !o2_run || !m)
		return EXIT_FAILURE;
	r = minivm_create(o.n_vcpus, &vm, error);
	if (r < 0) {
		fprintf(stderr, "minivmm: creating the VM: %s\n", error[0] ? error : strerror(-r));
		return EXIT_FAILURE;
	}
	r = guest_tsc_khz(vm, &khz);
	if (r == 0)
		r = hostclock_tsc_khz(&host_khz);
	if (r < 0) {
		fprintf(stderr, "minivmm: cannot tell the TSC rates: %s\n", strerror(-r));
		return EXIT_FAILURE;
	}
	lfd = listen_on(&o);
	if (lfd < 0) {
		fprintf(stderr, "minivmm: cannot listen on %s: %s\n", o.listen, strerror(-lfd));
		return EXIT_FAILURE;
	}
	if (!o.by_value) {
		r = vcounter_connect(o.vcounterd, &vc);
		if (r < 0) {
			fprintf(stderr, "minivmm: cannot reach vcounterd: %s\n", strerror(-r));
			return EXIT_FAILURE;
		}
		if (register_vm(vc, vm, o.vm_id, VCOUNTER_ROLE_TARGET, &info) < 0)
			goto out;
	} else {
		printf("target: vm=%s by value (IA32_TSC, no vcounterd) guest_tsc_khz=%u\n",
		       o.vm_id, khz);
	}
	fflush(stdout);

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0 || read_all(fd, &h, sizeof(h)) < 0 || h.magic != XFER_MAGIC) {
		fprintf(stderr, "minivmm: no valid VM state from the source\n");
		goto out;
	}
	h.vm_id[sizeof(h.vm_id) - 1] = '\0';
	h.reason[sizeof(h.reason) - 1] = '\0';
	h.migration_id[sizeof(h.migration_id) - 1] = '\0';
	if (h.kind == XFER_KIND_ABORT) {
		printf("target: the source called the migration off: %s\n", h.reason);
		goto out;
	}
	if (!h.by_value != !o.by_value) {
		fprintf(stderr, "minivmm: the source restores %s, this target %s\n",
			h.by_value ? "by value" : "by offset",
			o.by_value ? "by value" : "by offset");
		goto out;
	}
	if (h.n_vcpus != o.n_vcpus || h.blob_len != minivm_state_size(vm)) {
		fprintf(stderr, "minivmm: source VM has %u vCPUs, this one %u\n", h.n_vcpus,
			o.n_vcpus);
		goto out;
	}
	blob = malloc(h.blob_len);
	if (!blob || read_all(fd, before, o.n_vcpus * sizeof(*before)) < 0 ||
	    read_all(fd, xv, o.n_vcpus * sizeof(*xv)) < 0 || read_all(fd, blob, h.blob_len) < 0 ||
	    minivm_load(vm, blob, h.blob_len) < 0) {
		fprintf(stderr, "minivmm: cannot load the source VM's state\n");
		goto out;
	}
	if (o.by_value) {
		r = restore_by_value(vm, xv, writes);
		if (r < 0) {
			fprintf(stderr, "minivmm: KVM_SET_MSRS IA32_TSC: %s\n", strerror(-r));
			goto out;
		}
	} else {
		struct vcounter_notice n;

		r = vcounter_apply(vc, o.vm_id, h.migration_id, &rep);
		if (r < 0) {
			fprintf(stderr, "minivmm: apply refused: %s\n", vcounter_last_error(vc));
			printf("target: apply refused: %s\n", vcounter_last_error(vc));
			goto out;
		}
		/* What the daemon told this VMM of the migration meanwhile. */
		while (vcounter_next_notice(vc, 0, &n) == 1)
			printf("target: notice migration=%s step=%s\n", n.migration_id, n.step);
	}
	/* What the restore left in KVM, read while the vCPUs cannot run. */
	r = read_tsc_offsets(vm, o2);
	if (r < 0) {
		fprintf(stderr, "minivmm: reading the offsets back: %s\n", strerror(-r));
		goto out;
	}
	/* Only now may the vCPUs run (DESIGN.md section 3, switchover). */
	resume_tai_ns = clock_ns(CLOCK_TAI);
	r = minivm_start(vm);
	if (r < 0) {
		fprintf(stderr, "minivmm: %s\n", minivm_last_error(vm));
		goto out;
	}
	(void)minivm_read_observations(vm, after, o.n_vcpus);
	r = hostclock_bracket_anchor(host_khz, &b);
	if (r == 0)
		r = hostclock_sync_error(&sync);
	if (r < 0) {
		fprintf(stderr, "minivmm: reading the host clock: %s\n", strerror(-r));
		goto out;
	}
	/* Measured in UTC: the hosts are synchronised in CLOCK_REALTIME, and
	 * their CLOCK_TAI differ by their kernels' TAI offsets, which time
	 * daemons set differently (two-host-handoff-test --source-tai). An
	 * independent yardstick for vcounterd, which picks its own scale. */
	h.anchor.tai_ns -= (uint64_t)((int64_t)h.tai_offset_s * NSEC_PER_SEC);
	h.pause_tai_ns -= (uint64_t)((int64_t)h.tai_offset_s * NSEC_PER_SEC);
	b.tai_ns -= (uint64_t)((int64_t)sync.tai_offset_s * NSEC_PER_SEC);
	resume_tai_ns -= (uint64_t)((int64_t)sync.tai_offset_s * NSEC_PER_SEC);
	(void)write_all(fd, &done, 1);
	minivm_pause(vm);
	/* KVM may rewrite offsets when a vCPU loads (an unstable host TSC): the
	 * samples must have been taken with the offsets read above. */
	if (read_tsc_offsets(vm, o2_run) == 0 && memcmp(o2, o2_run, o.n_vcpus * sizeof(*o2)) != 0)
		printf("target: WARNING: KVM changed a vCPU's offset while it ran; the "
		       "measurement uses the offsets from before the resume\n");

	for (unsigned i = 0; i < o.n_vcpus; i++)
		o1[i] = xv[i].tsc_offset;
	if (h.guest_tsc_khz != khz)
		printf("target: WARNING: the source's guest TSC ran at %u kHz, this one at %u "
		       "kHz\n",
		       h.guest_tsc_khz, khz);
	measured =
		khz_unscaled(khz, host_khz) && khz_unscaled(h.guest_tsc_khz, h.anchor.host_tsc_khz);
	if (measured)
		measure_handoff(o.n_vcpus, khz, before, o1, &h.anchor, after, o2, &b, m);
	v = (struct handoff_view){
		.mode = o.by_value ? "by-value" : "offset",
		.n_vcpus = o.n_vcpus,
		.guest_khz = khz,
		.o1 = o1,
		.o2 = o2,
		.g1 = before,
		.g2 = after,
		.m = measured ? m : NULL,
		.a = &h.anchor,
		.b = &b,
		.pause_tai_ns = h.pause_tai_ns,
		.resume_tai_ns = resume_tai_ns,
		.tsc_writes_matched = matched,
	};
	if (o.by_value) {
		unsigned n_matched = 0;

		for (unsigned i = 0; i < o.n_vcpus; i++)
			if (tsc_write_outcome(i, writes, xv, o2, o.n_vcpus) == TSC_WRITE_MATCHED)
				n_matched++;
		snprintf(matched, sizeof(matched), "%u", n_matched);
		snprintf(v.error_bound, sizeof(v.error_bound), "none");
		print_by_value(&h, xv, writes, &v);
	} else {
		if (rep->error_bound_ns == UINT64_MAX)
			snprintf(v.error_bound, sizeof(v.error_bound), "unbounded");
		else
			snprintf(v.error_bound, sizeof(v.error_bound), "%" PRIu64,
				 rep->error_bound_ns);
		print_report(rep, &v);
	}
	ret = EXIT_SUCCESS;
out:
	vcounter_report_free(rep);
	vcounter_close(vc);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_FAILURE;
	}
	if (strcmp(argv[1], "run") == 0) {
		return cmd_run(argc - 1, argv + 1);
	}
	if (strcmp(argv[1], "source") == 0)
		return cmd_source(argc - 1, argv + 1);
	if (strcmp(argv[1], "target") == 0)
		return cmd_target(argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return EXIT_SUCCESS;
	}
	fprintf(stderr, "minivmm: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_FAILURE;
}
