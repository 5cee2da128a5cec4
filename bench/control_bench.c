/* control_bench.c - the control API under a fleet controller's load: unary
 * call latency (GetHostStatus, ListVms) on one connection, then 100
 * watchers (vcounter_ctl_watch, one connection and thread each) while real
 * VM registrations make events, and the same calls with them attached.
 * Everything through libvcounter's controller calls (vcounter/control.h). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench_stats.h"
#include "clockns.h"
#include "daemon_harness.h"
#include "macro.h"
#include "vcounter/control.h"
#include "vcounter/vcounter.h"

#define DEFAULT_CALLS	       2000
#define DEFAULT_WARMUP	       50
#define DEFAULT_WATCHERS       100
#define DEFAULT_REGISTRATIONS  100
#define DEFAULT_WATCH_TIMEOUT  120 /* s: how long a watcher waits for all events */
#define MAX_CALLS	       1000000
#define MAX_WATCHERS	       250 /* daemon/grpc.h: GRPC_MAX_CONNECTIONS 256 */
#define MAX_REGISTRATIONS      100000
#define CALL_TIMEOUT_MS	       10000
#define WATCHERS_READY_TIMEOUT 30 /* s */

enum call_kind {
	CALL_HOST_STATUS,
	CALL_LIST_VMS,
	_CALL_KIND_MAX,
};

static const char *const call_name[_CALL_KIND_MAX] = {
	[CALL_HOST_STATUS] = "GetHostStatus",
	[CALL_LIST_VMS] = "ListVms",
};

struct bench_config {
	const char *control_socket; /* NULL: start our own vcounterd */
	const char *vmm_socket;	    /* its VMM socket, for registrations */
	unsigned calls;
	unsigned warmup;
	unsigned watchers;
	unsigned registrations;
	unsigned watch_timeout_s;
};

struct watcher {
	pthread_t thread;
	struct bench *b;
	uint64_t *latency_ns; /* expected entries */
	unsigned received;
	bool accepted; /* the daemon took the watch */
	int result;    /* vcounter_ctl_watch()'s, or connect's */
	int status;    /* gRPC status at the end */
	char error[256];
};

struct bench {
	const struct bench_config *config;
	char prefix[32];   /* our VMs' ids start with it: other events are not counted */
	unsigned expected; /* events each watcher must see */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned ready;	  /* watchers whose watch the daemon accepted (or failed) */
	unsigned failed;  /* ... of which failed to start */
	unsigned started; /* threads running (to join) */
	struct watcher *w;
};

struct stats {
	uint64_t p50, p99, max;
	size_t n;
};

/* Nearest-rank percentiles (bench_stats.h); sorts samples. */
static struct stats stats_of(uint64_t *samples, size_t n)
{
	struct stats s = { .n = n };

	if (n == 0)
		return s;
	bench_sort(samples, n);
	s.p50 = bench_percentile(samples, n, 50);
	s.p99 = bench_percentile(samples, n, 99);
	s.max = samples[n - 1];
	return s;
}

/* ---- unary calls ---- */

static int call_once(struct vcounter_ctl *ctl, enum call_kind kind)
{
	struct vcounter_ctl_host host;
	struct vcounter_ctl_vm *vms = NULL;
	size_t n_vms = 0;
	int r;

	if (kind == CALL_HOST_STATUS)
		return vcounter_ctl_host_status(ctl, &host);
	r = vcounter_ctl_list_vms(ctl, &vms, &n_vms);
	free(vms);
	return r;
}

/* config->calls sequential calls of each kind, interleaved, after config->warmup more. */
static int measure_calls(struct vcounter_ctl *ctl, const struct bench_config *config,
			 struct stats ret[_CALL_KIND_MAX])
{
	uint64_t *samples[_CALL_KIND_MAX] = { NULL };
	int r = -ENOMEM;

	for (int k = 0; k < _CALL_KIND_MAX; k++) {
		samples[k] = calloc(config->calls, sizeof(uint64_t));
		if (!samples[k])
			goto out;
	}
	for (unsigned i = 0; i < config->warmup + config->calls; i++) {
		for (int k = 0; k < _CALL_KIND_MAX; k++) {
			uint64_t t0 = clock_ns(CLOCK_MONOTONIC);

			r = call_once(ctl, (enum call_kind)k);
			if (r < 0) {
				fprintf(stderr, "control_bench: %s: %s\n", call_name[k],
					vcounter_ctl_last_error(ctl));
				goto out;
			}
			if (i >= config->warmup)
				samples[k][i - config->warmup] = clock_ns(CLOCK_MONOTONIC) - t0;
		}
	}
	for (int k = 0; k < _CALL_KIND_MAX; k++)
		ret[k] = stats_of(samples[k], config->calls);
	r = 0;
out:
	for (int k = 0; k < _CALL_KIND_MAX; k++)
		free(samples[k]);
	return r;
}

/* ---- watchers ---- */

static void watcher_ready(struct bench *b, bool failed)
{
	pthread_mutex_lock(&b->lock);
	b->ready++;
	b->failed += failed;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

static int watcher_event(const struct vcounter_ctl_event *event, void *userdata)
{
	struct watcher *w = userdata;
	struct bench *b = w->b;
	uint64_t now = clock_ns(CLOCK_REALTIME);

	if (!event) { /* the daemon took the watch: every later event comes */
		w->accepted = true;
		watcher_ready(b, false);
		return 0;
	}
	if (event->kind != VCOUNTER_CTL_EVENT_VM_REGISTERED &&
	    event->kind != VCOUNTER_CTL_EVENT_VM_UNREGISTERED)
		return 0;
	if (strncmp(event->vm.vm_id, b->prefix, strlen(b->prefix)) != 0)
		return 0;
	if (w->received < b->expected)
		w->latency_ns[w->received] =
			now > event->realtime_ns ? now - event->realtime_ns : 0;
	w->received++;
	return b->expected && w->received >= b->expected;
}

static void *watcher_main(void *userdata)
{
	struct watcher *w = userdata;
	const struct bench_config *config = w->b->config;
	struct vcounter_ctl_options opts = {
		.socket_path = config->control_socket,
		.timeout_ms = config->watch_timeout_s * 1000,
	};
	struct vcounter_ctl *ctl = NULL;

	w->result = vcounter_ctl_connect(&opts, &ctl);
	if (w->result < 0) {
		snprintf(w->error, sizeof(w->error), "connect: %s", vcounter_ctl_last_error(NULL));
		watcher_ready(w->b, true);
		return NULL;
	}
	w->result = vcounter_ctl_watch(ctl, NULL, NULL, watcher_event, w);
	w->status = vcounter_ctl_status(ctl);
	snprintf(w->error, sizeof(w->error), "%s", vcounter_ctl_last_error(ctl));
	/* Ended before the daemon took it: count it, or main waits on. */
	if (!w->accepted)
		watcher_ready(w->b, true);
	vcounter_ctl_close(ctl);
	return NULL;
}

/* Start every watcher and wait until the daemon has taken each watch.
 * Returns how many run, or -errno. */
static int watchers_start(struct bench *b)
{
	const unsigned n = b->config->watchers;
	uint64_t deadline = clock_ns(CLOCK_REALTIME) + WATCHERS_READY_TIMEOUT * NSEC_PER_SEC;
	struct timespec until = { (time_t)(deadline / NSEC_PER_SEC),
				  (long)(deadline % NSEC_PER_SEC) };
	int r = 0;

	for (; b->started < n; b->started++) {
		struct watcher *w = &b->w[b->started];

		w->b = b;
		w->latency_ns = calloc(b->expected ? b->expected : 1, sizeof(uint64_t));
		if (!w->latency_ns)
			return -ENOMEM;
		r = -pthread_create(&w->thread, NULL, watcher_main, w);
		if (r < 0)
			return r;
	}
	pthread_mutex_lock(&b->lock);
	while (b->ready < n && r == 0)
		r = -pthread_cond_timedwait(&b->cond, &b->lock, &until);
	pthread_mutex_unlock(&b->lock);
	if (r < 0) {
		fprintf(stderr, "control_bench: only %u of %u watches accepted in %d s\n", b->ready,
			n, WATCHERS_READY_TIMEOUT);
		return -ETIMEDOUT;
	}
	if (b->failed) {
		for (unsigned i = 0; i < n; i++)
			if (b->w[i].result < 0)
				fprintf(stderr, "control_bench: watcher %u: %s\n", i,
					b->w[i].error);
		return -EIO;
	}
	return (int)n;
}

/* ---- events: real VMs registered and unregistered ---- */

struct kvm_vm {
	int vm_fd;
	int vcpu_fd;
};

static void kvm_vm_close(struct kvm_vm *vm)
{
	vm->vcpu_fd = close_nointr(vm->vcpu_fd);
	vm->vm_fd = close_nointr(vm->vm_fd);
}

/* One VM with one vCPU that never runs: registration needs only the fds
 * (and runs the backend's probe on them in this process). */
static int kvm_vm_create(struct kvm_vm *ret, char *why, size_t why_size)
{
	_cleanup_close_ int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	struct kvm_vm vm = { -1, -1 };

	if (kvm < 0) {
		snprintf(why, why_size, "/dev/kvm: %s", strerror(errno));
		return -errno;
	}
	vm.vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm.vm_fd >= 0)
		vm.vcpu_fd = ioctl(vm.vm_fd, KVM_CREATE_VCPU, 0);
	if (vm.vm_fd < 0 || vm.vcpu_fd < 0) {
		int r = -errno;

		snprintf(why, why_size, "creating a KVM VM: %s", strerror(errno));
		kvm_vm_close(&vm);
		return r;
	}
	*ret = vm;
	return 0;
}

/* registrations times: register a VM, unregister it (two events), then
 * one GetHostStatus while the watchers take them, timed into status_ns. */
static int make_events(struct bench *b, struct vcounter_ctl *ctl, const struct kvm_vm *vm,
		       uint64_t *status_ns, uint64_t *ret_elapsed_ns)
{
	struct vcounter *vc = NULL;
	uint64_t t_start;
	int r;

	r = vcounter_connect(b->config->vmm_socket, &vc);
	if (r < 0) {
		fprintf(stderr, "control_bench: VMM socket %s: %s\n", b->config->vmm_socket,
			strerror(-r));
		return r;
	}
	t_start = clock_ns(CLOCK_MONOTONIC);
	for (unsigned i = 0; i < b->config->registrations; i++) {
		struct vcounter_vm_info info;
		char id[64];
		uint64_t t0;

		snprintf(id, sizeof(id), "%s%u", b->prefix, i);
		r = vcounter_register_vm(vc, id, VCOUNTER_ROLE_SOURCE, vm->vm_fd, &vm->vcpu_fd, 1,
					 &info);
		if (r == 0)
			r = vcounter_unregister_vm(vc, id);
		if (r < 0) {
			fprintf(stderr, "control_bench: registering %s: %s\n", id,
				vcounter_last_error(vc));
			goto out;
		}
		t0 = clock_ns(CLOCK_MONOTONIC);
		r = call_once(ctl, CALL_HOST_STATUS);
		if (r < 0) {
			fprintf(stderr, "control_bench: GetHostStatus: %s\n",
				vcounter_ctl_last_error(ctl));
			goto out;
		}
		status_ns[i] = clock_ns(CLOCK_MONOTONIC) - t0;
	}
	*ret_elapsed_ns = clock_ns(CLOCK_MONOTONIC) - t_start;
	r = 0;
out:
	vcounter_close(vc);
	return r;
}

/* ---- output ---- */

static void print_row(const char *call, const char *watchers, const struct stats *s)
{
	printf("%-14s %-26s | %9.1f | %9.1f | %9.1f | %7zu\n", call, watchers, bench_us(s->p50),
	       bench_us(s->p99), bench_us(s->max), s->n);
}

static void print_host(const struct vcounter_ctl_host *h)
{
	struct utsname u;

	if (uname(&u) == 0)
		printf("host: %s %s, %ld CPUs online\n", u.sysname, u.release,
		       sysconf(_SC_NPROCESSORS_ONLN));
	printf("daemon: vcounterd %s, host_name %s, %u VMs registered before the run\n", h->version,
	       h->host_name, h->vm_count);
}

/* ---- arguments ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: control_bench [--socket CONTROL_SOCKET [--vmm-socket VMM_SOCKET]]\n"
		"                     [--calls N] [--warmup N] [--watchers W] [--registrations R]\n"
		"                     [--watch-timeout S]\n"
		"\n"
		"Without --socket it starts its own vcounterd (build tree, or $VC_BUILD_ROOT).\n"
		"Measures GetHostStatus and ListVms latency over N sequential calls on one\n"
		"connection (default %d, after %d warm-up), then starts W watchers (default\n"
		"%d, one connection and thread each), registers and unregisters a real 1-vCPU\n"
		"KVM VM R times (default %d: 2R events) and reports each watcher's delivery\n"
		"latency (event realtime_ns to receipt) and count, and the calls' latency\n"
		"with the watchers attached. Without /dev/kvm (or --vmm-socket with --socket)\n"
		"there are no events: latency only. Exit 0 when it ran, 1 on an error or an\n"
		"event that did not reach every watcher.\n",
		DEFAULT_CALLS, DEFAULT_WARMUP, DEFAULT_WATCHERS, DEFAULT_REGISTRATIONS);
}

static int parse_args(int argc, char **argv, struct bench_config *config)
{
	enum {
		ARG_SOCKET = 0x100,
		ARG_VMM_SOCKET,
		ARG_CALLS,
		ARG_WARMUP,
		ARG_WATCHERS,
		ARG_REGISTRATIONS,
		ARG_WATCH_TIMEOUT,
		ARG_HELP,
	};
	static const struct option options[] = {
		{ "socket", required_argument, NULL, ARG_SOCKET },
		{ "vmm-socket", required_argument, NULL, ARG_VMM_SOCKET },
		{ "calls", required_argument, NULL, ARG_CALLS },
		{ "warmup", required_argument, NULL, ARG_WARMUP },
		{ "watchers", required_argument, NULL, ARG_WATCHERS },
		{ "registrations", required_argument, NULL, ARG_REGISTRATIONS },
		{ "watch-timeout", required_argument, NULL, ARG_WATCH_TIMEOUT },
		{ "help", no_argument, NULL, ARG_HELP },
		{ 0 },
	};
	int c;

	*config = (struct bench_config){
		.calls = DEFAULT_CALLS,
		.warmup = DEFAULT_WARMUP,
		.watchers = DEFAULT_WATCHERS,
		.registrations = DEFAULT_REGISTRATIONS,
		.watch_timeout_s = DEFAULT_WATCH_TIMEOUT,
	};
	while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
		unsigned *field = NULL, min = 0, max = 0;

		switch (c) {
		case ARG_SOCKET:
			config->control_socket = optarg;
			continue;
		case ARG_VMM_SOCKET:
			config->vmm_socket = optarg;
			continue;
		case ARG_CALLS:
			field = &config->calls, min = 1, max = MAX_CALLS;
			break;
		case ARG_WARMUP:
			field = &config->warmup, min = 0, max = MAX_CALLS;
			break;
		case ARG_WATCHERS:
			field = &config->watchers, min = 1, max = MAX_WATCHERS;
			break;
		case ARG_REGISTRATIONS:
			field = &config->registrations, min = 1, max = MAX_REGISTRATIONS;
			break;
		case ARG_WATCH_TIMEOUT:
			field = &config->watch_timeout_s, min = 1, max = 3600;
			break;
		case ARG_HELP:
			usage(stdout);
			exit(EXIT_SUCCESS);
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (bench_parse_uint(optarg, min, max, field) < 0) {
			fprintf(stderr, "control_bench: --%s must be %u..%u\n",
				options[c - ARG_SOCKET].name, min, max);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return -EINVAL;
	}
	if (config->vmm_socket && !config->control_socket) {
		fprintf(stderr, "control_bench: --vmm-socket goes with --socket\n");
		return -EINVAL;
	}
	return 0;
}

/* The control socket appears just after the VMM socket harness_start()
 * waited for: retry the connection a little. */
static int connect_status(const char *path, struct vcounter_ctl **ret)
{
	struct vcounter_ctl_options opts = { .socket_path = path, .timeout_ms = CALL_TIMEOUT_MS };
	int r = -ENOENT;

	for (int i = 0; i < 200; i++) {
		r = vcounter_ctl_connect(&opts, ret);
		if (r == 0 || (r != -ENOENT && r != -ECONNREFUSED))
			break;
		usleep(10000);
	}
	if (r < 0)
		fprintf(stderr, "control_bench: %s\n", vcounter_ctl_last_error(NULL));
	return r;
}

struct results {
	struct stats alone[_CALL_KIND_MAX];    /* no watcher */
	struct stats attached[_CALL_KIND_MAX]; /* the watchers attached, idle */
	struct stats during;		       /* GetHostStatus after each register+unregister */
	uint64_t events_elapsed_ns;
};

static void print_calls(const struct bench *b, const struct results *res, bool events)
{
	const unsigned n = b->config->watchers;
	char label[64];

	printf("\n%-14s %-26s | %9s | %9s | %9s | %7s\n", "call", "watchers", "p50", "p99", "max",
	       "n");
	for (int k = 0; k < _CALL_KIND_MAX; k++)
		print_row(call_name[k], "0", &res->alone[k]);
	snprintf(label, sizeof(label), "%u, idle", n);
	for (int k = 0; k < _CALL_KIND_MAX; k++)
		print_row(call_name[k], label, &res->attached[k]);
	if (events) {
		snprintf(label, sizeof(label), "%u, events fanning out", n);
		print_row(call_name[CALL_HOST_STATUS], label, &res->during);
	}
	printf("ratio with %u watchers / without, p50 (p99): ", n);
	for (int k = 0; k < _CALL_KIND_MAX; k++)
		printf("%s %.2fx (%.2fx)%s", call_name[k],
		       (double)res->attached[k].p50 / (double)res->alone[k].p50,
		       (double)res->attached[k].p99 / (double)res->alone[k].p99,
		       k + 1 < _CALL_KIND_MAX ? ", " : "\n");
	if (events)
		printf("GetHostStatus while events fan out / without watchers, p50 (p99): %.2fx "
		       "(%.2fx)\n",
		       (double)res->during.p50 / (double)res->alone[CALL_HOST_STATUS].p50,
		       (double)res->during.p99 / (double)res->alone[CALL_HOST_STATUS].p99);
}

/* Per watcher: how many of the events it got, and how soon. false when one
 * missed an event. */
static bool print_delivery(struct bench *b, const struct results *res)
{
	const unsigned n = b->config->watchers;
	_cleanup_free_ uint64_t *all = calloc((size_t)n * b->expected, sizeof(uint64_t));
	uint64_t p50_min = UINT64_MAX, p50_max = 0, p99_min = UINT64_MAX, p99_max = 0;
	unsigned short_watchers = 0, min_received = UINT32_MAX, max_received = 0;
	size_t n_all = 0;
	struct stats pooled;

	if (!all) {
		fprintf(stderr, "control_bench: out of memory\n");
		return false;
	}
	for (unsigned i = 0; i < n; i++) {
		struct watcher *w = &b->w[i];
		unsigned kept = w->received < b->expected ? w->received : b->expected;
		struct stats s;

		min_received = w->received < min_received ? w->received : min_received;
		max_received = w->received > max_received ? w->received : max_received;
		if (w->received != b->expected) {
			short_watchers++;
			fprintf(stderr,
				"control_bench: watcher %u got %u of %u events (watch ended %d, "
				"status %s: %s)\n",
				i, w->received, b->expected, w->result,
				vcounter_ctl_status_name(w->status), w->error);
		}
		if (kept == 0)
			continue;
		memcpy(all + n_all, w->latency_ns, kept * sizeof(uint64_t));
		n_all += kept;
		s = stats_of(w->latency_ns, kept);
		p50_min = s.p50 < p50_min ? s.p50 : p50_min;
		p50_max = s.p50 > p50_max ? s.p50 : p50_max;
		p99_min = s.p99 < p99_min ? s.p99 : p99_min;
		p99_max = s.p99 > p99_max ? s.p99 : p99_max;
	}
	pooled = stats_of(all, n_all);
	printf("\nevents: %u published (%u registrations and unregistrations of a 1-vCPU KVM VM, "
	       "%.0f us per pair with its GetHostStatus), %u watchers\n",
	       b->expected, b->config->registrations,
	       bench_us(res->events_elapsed_ns) / b->config->registrations, n);
	printf("received per watcher: min %u, max %u of %u published: %s\n", min_received,
	       max_received, b->expected, short_watchers ? "NOT ALL DELIVERED" : "all delivered");
	if (n_all)
		printf("delivery latency (event realtime_ns -> receipt), us: all %zu deliveries "
		       "p50 %.1f p99 %.1f max %.1f; per watcher p50 %.1f..%.1f, p99 %.1f..%.1f\n",
		       pooled.n, bench_us(pooled.p50), bench_us(pooled.p99), bench_us(pooled.max),
		       bench_us(p50_min), bench_us(p50_max), bench_us(p99_min), bench_us(p99_max));
	return short_watchers == 0;
}

/* Everything measured, in order; the watchers are running (b->started)
 * when it returns, whatever it returns. */
static int measure(struct bench *b, struct vcounter_ctl *ctl, const struct kvm_vm *vm, bool events,
		   struct results *res)
{
	const struct bench_config *config = b->config;
	_cleanup_free_ uint64_t *during_ns = calloc(config->registrations, sizeof(uint64_t));
	struct vcounter_ctl_host host;
	int r;

	b->w = calloc(config->watchers, sizeof(*b->w));
	if (!b->w || !during_ns)
		return -ENOMEM;
	r = measure_calls(ctl, config, res->alone);
	if (r < 0)
		return r;
	r = watchers_start(b);
	if (r < 0)
		return r;
	r = vcounter_ctl_host_status(ctl, &host);
	if (r == 0 && host.watchers < config->watchers)
		fprintf(stderr, "control_bench: the daemon counts %u watchers, %u started\n",
			host.watchers, config->watchers);
	r = measure_calls(ctl, config, res->attached);
	if (r < 0 || !events)
		return r;
	r = make_events(b, ctl, vm, during_ns, &res->events_elapsed_ns);
	if (r < 0)
		return r;
	res->during = stats_of(during_ns, config->registrations);
	return 0;
}

int main(int argc, char **argv)
{
	struct bench_config config;
	struct bench b = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct daemon_proc daemon = { .pid = -1 };
	struct vcounter_ctl *ctl = NULL;
	struct vcounter_ctl_host host;
	struct kvm_vm vm = { -1, -1 };
	struct results res = { 0 };
	char why_no_events[256] = "";
	bool events, own_daemon = false;
	int r, ret = EXIT_FAILURE;

	if (parse_args(argc, argv, &config) < 0)
		return 2;
	b.config = &config;
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(b.prefix, sizeof(b.prefix), "bench-%d-", (int)getpid());

	if (!config.control_socket) {
		const char *args[] = { "--log-level", "info", NULL };

		setenv("VC_BUILD_ROOT", BENCH_BUILD_ROOT, 0);
		r = harness_start(&daemon, args);
		if (r < 0) {
			fprintf(stderr, "control_bench: starting %s/daemon/vcounterd: %s\n",
				harness_build_root(), strerror(-r));
			return EXIT_FAILURE;
		}
		own_daemon = true;
		config.control_socket = daemon.control_socket;
		config.vmm_socket = daemon.vmm_socket;
	}
	events = config.vmm_socket != NULL;
	if (!events)
		snprintf(why_no_events, sizeof(why_no_events),
			 "no --vmm-socket: nothing to register VMs on");
	else if (kvm_vm_create(&vm, why_no_events, sizeof(why_no_events)) < 0)
		events = false;
	b.expected = events ? 2 * config.registrations : 0;

	r = connect_status(config.control_socket, &ctl);
	if (r == 0) {
		r = vcounter_ctl_host_status(ctl, &host);
		if (r < 0)
			fprintf(stderr, "control_bench: GetHostStatus: %s\n",
				vcounter_ctl_last_error(ctl));
	}
	if (r == 0) {
		print_host(&host);
		printf("calls: %u of each kind, sequential on one connection, after %u warm-up; "
		       "microseconds\n",
		       config.calls, config.warmup);
		if (!events)
			printf("events: none (%s): latency only\n", why_no_events);
		r = measure(&b, ctl, &vm, events, &res);
	}

	/* With events the watchers end once they have them all (or at their
	 * deadline); without, only the end of their streams ends them: our
	 * daemon stops, a running one's deadline passes. */
	if (b.started && (r < 0 || !events)) {
		if (own_daemon) {
			if (r < 0)
				harness_dump_log(&daemon);
			if (harness_stop(&daemon) != 0 && r == 0)
				r = -EIO;
		} else {
			printf("watchers: ending at their %u s deadline\n", config.watch_timeout_s);
		}
	}
	for (unsigned i = 0; i < b.started; i++)
		pthread_join(b.w[i].thread, NULL);
	if (r == 0) {
		print_calls(&b, &res, events);
		ret = EXIT_SUCCESS;
		if (events && !print_delivery(&b, &res))
			ret = EXIT_FAILURE;
	}
	vcounter_ctl_close(ctl);
	kvm_vm_close(&vm);
	if (daemon.pid > 0 && harness_stop(&daemon) != 0) {
		fprintf(stderr, "control_bench: vcounterd did not exit cleanly on SIGTERM\n");
		ret = EXIT_FAILURE;
	}
	for (unsigned i = 0; b.w && i < config.watchers; i++)
		free(b.w[i].latency_ns);
	free(b.w);
	return ret;
}
