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

#include "hostclock.h"
#include "macro.h"
#include "minivm.h"
#include "vcounter/vcounter.h"

#define DEFAULT_VCPUS	2
#define DEFAULT_SECONDS 1.0
#define MAX_SECONDS	3600.0
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
		"                      [--vcpu-skew CYCLES] [--guest-uptime S]\n"
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
		"--guest-uptime: the guest's TSC starts as if it had run S seconds.\n",
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
	if (command == COMMAND_SOURCE && !o.by_value && (!o.peer || !o.peer_name)) {
		fprintf(stderr, "minivmm source: --peer and --peer-name are required (or --by-value)\n");
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
 * counter, and only then runs the vCPUs. The TSC never travels by value. */

#define XFER_MAGIC	0x314d564dU /* "MVM1" */
#define XFER_KIND_STATE 0
#define XFER_KIND_ABORT 1

/* Sent by the source minivmm, host byte order (both ends are this program
 * on the same architecture). */
struct xfer_header {
	uint32_t magic;
	uint32_t kind;
	char vm_id[64];
	char migration_id[VCOUNTER_MIGRATION_ID_SIZE];
	char reason[256];
	uint64_t generation;
	uint32_t n_vcpus;
	uint64_t pause_tai_ns; /* CLOCK_TAI just after the source paused */
	uint64_t blob_len;
};

static uint64_t tai_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_TAI, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

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

/* Give the vCPUs different offsets, as a VM restored by value often has:
 * the handoff must keep these differences exactly. */
static int skew_vcpus(struct minivm *vm, int64_t skew)
{
	const int *fds = minivm_vcpu_fds(vm);
	uint64_t base = 0, v;
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
	};

	attr.addr = (uint64_t)(uintptr_t)&base;
	if (ioctl(fds[0], KVM_GET_DEVICE_ATTR, &attr) < 0)
		return -errno;
	attr.addr = (uint64_t)(uintptr_t)&v;
	for (unsigned i = 1; i < minivm_n_vcpus(vm); i++) {
		v = base + (uint64_t)skew * i;
		if (ioctl(fds[i], KVM_SET_DEVICE_ATTR, &attr) < 0)
			return -errno;
	}
	return 0;
}

static int cmd_source(int argc, char **argv)
{
	_cleanup_(minivm_freep) struct minivm *vm = NULL;
	_cleanup_free_ struct minivm_observation *obs = NULL;
	_cleanup_free_ void *blob = NULL;
	_cleanup_close_ int fd = -1;
	struct options o;
	struct vcounter_vm_info info;
	struct vcounter *vc = NULL;
	struct xfer_header h = { .magic = XFER_MAGIC, .kind = XFER_KIND_STATE };
	char error[MINIVM_ERROR_MAX] = "", migration_id[VCOUNTER_MIGRATION_ID_SIZE];
	uint64_t generation;
	char done;
	int r, ret = EXIT_FAILURE;

	if (parse_options(argc, argv, COMMAND_SOURCE, &o) < 0)
		return EXIT_FAILURE;
	obs = calloc(o.n_vcpus, sizeof(*obs));
	if (!obs)
		return EXIT_FAILURE;
	r = minivm_create(o.n_vcpus, &vm, error);
	if (r < 0) {
		fprintf(stderr, "minivmm: creating the VM: %s\n", error[0] ? error : strerror(-r));
		send_abort(&o, "source could not create its VM");
		return EXIT_FAILURE;
	}
	if (o.vcpu_skew && skew_vcpus(vm, o.vcpu_skew) < 0)
		fprintf(stderr, "minivmm: cannot skew the vCPUs' offsets\n");
	r = vcounter_connect(o.vcounterd, &vc);
	if (r < 0) {
		fprintf(stderr, "minivmm: cannot reach vcounterd at %s: %s\n",
			o.vcounterd ? o.vcounterd : VCOUNTER_DEFAULT_SOCKET, strerror(-r));
		send_abort(&o, "source cannot reach its vcounterd");
		return EXIT_FAILURE;
	}
	/* Registered before the vCPUs first run: the daemon's probe writes. */
	if (register_vm(vc, vm, o.vm_id, VCOUNTER_ROLE_SOURCE, &info) < 0) {
		send_abort(&o, "source registration failed");
		goto out;
	}
	r = minivm_start(vm);
	if (r < 0) {
		fprintf(stderr, "minivmm: %s\n", minivm_last_error(vm));
		send_abort(&o, minivm_last_error(vm));
		goto out;
	}
	sleep_seconds(o.seconds);

	r = vcounter_migrate_out(vc, o.vm_id, o.peer, o.peer_name, migration_id);
	if (r < 0) {
		fprintf(stderr, "minivmm: migration refused: %s\n", vcounter_last_error(vc));
		printf("source: migration refused: %s\n", vcounter_last_error(vc));
		send_abort(&o, vcounter_last_error(vc));
		goto out;
	}
	printf("source: migration=%s prepared with %s\n", migration_id, o.peer_name);

	/* Blackout starts. */
	r = minivm_pause(vm);
	h.pause_tai_ns = tai_now_ns();
	if (r < 0) {
		fprintf(stderr, "minivmm: the guest stopped by itself: %s\n",
			minivm_last_error(vm));
		send_abort(&o, "source guest stopped");
		goto out;
	}
	(void)minivm_read_observations(vm, obs, o.n_vcpus);
	r = vcounter_report_paused(vc, o.vm_id, migration_id, &generation);
	if (r < 0) {
		fprintf(stderr, "minivmm: final state refused: %s\n", vcounter_last_error(vc));
		send_abort(&o, vcounter_last_error(vc));
		goto out;
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
		r = write_all(fd, blob, h.blob_len);
	if (r < 0) {
		fprintf(stderr, "minivmm: sending the VM to the target: %s\n", strerror(-r));
		goto out;
	}
	for (unsigned i = 0; i < o.n_vcpus; i++)
		printf("source: vcpu=%u last_guest_tsc=%" PRIu64 "\n", i, obs[i].tsc);
	/* The target answers one byte once its guest runs: the VM has moved. */
	if (read_all(fd, &done, 1) < 0 || done != 0) {
		fprintf(stderr, "minivmm: the target did not take the VM\n");
		goto out;
	}
	printf("source: handed off, generation=%" PRIu64 "\n", generation);
	vcounter_unregister_vm(vc, o.vm_id);
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

static void print_report(const struct vcounter_report *rep, const struct minivm_observation *before,
			 const struct minivm_observation *after, uint64_t pause_tai_ns,
			 uint64_t resume_tai_ns)
{
	double khz = rep->guest_tsc_khz;
	int64_t host_ns = (int64_t)(resume_tai_ns - pause_tai_ns);
	bool phase_kept = true;

	printf("\n");
	printf("handoff vm=%s migration=%s backend=%s generation=%" PRIu64 "\n", rep->vm_id,
	       rep->migration_id, rep->backend, rep->generation);
	printf("%-5s %22s %22s %22s %22s\n", "vCPU", "offset before", "offset after",
	       "guest TSC at pause", "guest TSC at resume");
	for (uint32_t i = 0; i < rep->n_vcpus; i++) {
		printf("%-5u %22" PRId64 " %22" PRId64 " %22" PRIu64 " %22" PRIu64 "\n", i,
		       (int64_t)rep->offsets_before[i], (int64_t)rep->offsets_after[i],
		       before[i].tsc, after[i].tsc);
		if (rep->offsets_after[i] - rep->offsets_after[0] !=
		    rep->offsets_before[i] - rep->offsets_before[0])
			phase_kept = false;
	}
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
	printf("phase between vCPUs      %s\n",
	       phase_kept ? "kept exactly (offset differences identical)" : "CHANGED");
	/* The guest samples in a loop, so its last sample before the pause and
	 * its first after the resume lie outside the blackout by up to one
	 * sampling interval each: the advance is at least the blackout. */
	printf("guest saw (vCPU 0)       TSC advanced %.3f ms between its last sample before the "
	       "pause and its first after the resume; the blackout lasted %.3f ms\n",
	       (double)(int64_t)(after[0].tsc - before[0].tsc) / khz, (double)host_ns / 1e6);
}

static int cmd_target(int argc, char **argv)
{
	_cleanup_(minivm_freep) struct minivm *vm = NULL;
	_cleanup_free_ struct minivm_observation *before = NULL, *after = NULL;
	_cleanup_free_ void *blob = NULL;
	_cleanup_close_ int lfd = -1, fd = -1;
	struct vcounter_report *rep = NULL;
	struct options o;
	struct vcounter_vm_info info;
	struct vcounter *vc = NULL;
	struct xfer_header h;
	char error[MINIVM_ERROR_MAX] = "";
	uint64_t resume_tai_ns;
	const char done = 0;
	int r, ret = EXIT_FAILURE;

	if (parse_options(argc, argv, COMMAND_TARGET, &o) < 0)
		return EXIT_FAILURE;
	before = calloc(o.n_vcpus, sizeof(*before));
	after = calloc(o.n_vcpus, sizeof(*after));
	if (!before || !after)
		return EXIT_FAILURE;
	r = minivm_create(o.n_vcpus, &vm, error);
	if (r < 0) {
		fprintf(stderr, "minivmm: creating the VM: %s\n", error[0] ? error : strerror(-r));
		return EXIT_FAILURE;
	}
	lfd = listen_on(&o);
	if (lfd < 0) {
		fprintf(stderr, "minivmm: cannot listen on %s: %s\n", o.listen, strerror(-lfd));
		return EXIT_FAILURE;
	}
	r = vcounter_connect(o.vcounterd, &vc);
	if (r < 0) {
		fprintf(stderr, "minivmm: cannot reach vcounterd: %s\n", strerror(-r));
		return EXIT_FAILURE;
	}
	if (register_vm(vc, vm, o.vm_id, VCOUNTER_ROLE_TARGET, &info) < 0)
		goto out;
	fflush(stdout);

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0 || read_all(fd, &h, sizeof(h)) < 0 || h.magic != XFER_MAGIC) {
		fprintf(stderr, "minivmm: no valid VM state from the source\n");
		goto out;
	}
	h.reason[sizeof(h.reason) - 1] = '\0';
	h.migration_id[sizeof(h.migration_id) - 1] = '\0';
	if (h.kind == XFER_KIND_ABORT) {
		printf("target: the source called the migration off: %s\n", h.reason);
		goto out;
	}
	if (h.n_vcpus != o.n_vcpus || h.blob_len != minivm_state_size(vm)) {
		fprintf(stderr, "minivmm: source VM has %u vCPUs, this one %u\n", h.n_vcpus,
			o.n_vcpus);
		goto out;
	}
	blob = malloc(h.blob_len);
	if (!blob || read_all(fd, before, o.n_vcpus * sizeof(*before)) < 0 ||
	    read_all(fd, blob, h.blob_len) < 0 || minivm_load(vm, blob, h.blob_len) < 0) {
		fprintf(stderr, "minivmm: cannot load the source VM's state\n");
		goto out;
	}
	r = vcounter_apply(vc, o.vm_id, h.migration_id, &rep);
	if (r < 0) {
		fprintf(stderr, "minivmm: apply refused: %s\n", vcounter_last_error(vc));
		printf("target: apply refused: %s\n", vcounter_last_error(vc));
		goto out;
	}
	/* Only now may the vCPUs run (DESIGN.md section 3, switchover). */
	resume_tai_ns = tai_now_ns();
	r = minivm_start(vm);
	if (r < 0) {
		fprintf(stderr, "minivmm: %s\n", minivm_last_error(vm));
		goto out;
	}
	(void)minivm_read_observations(vm, after, o.n_vcpus);
	(void)write_all(fd, &done, 1);
	print_report(rep, before, after, h.pause_tai_ns, resume_tai_ns);
	minivm_pause(vm);
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
