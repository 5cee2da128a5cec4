/* load_bench.c - two real vcounterd under load: N small KVM VMs registered
 * on each, M migrations at a time started through the control API while
 * controllers poll and watch; every migration checked to end done exactly
 * once, with the target's offsets read back and the source's untouched. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench_stats.h"
#include "clockns.h"
#include "daemon_harness.h"
#include "flood.h"
#include "kvm_x86.h"
#include "macro.h"
#include "vcounter/control.h"
#include "vcounter/vcounter.h"

#define EXIT_SKIP 77

#define DEFAULT_VMS		 1000
#define DEFAULT_LANES		 100
#define DEFAULT_POLLERS		 4
#define DEFAULT_WATCHERS	 4
#define DEFAULT_TIMEOUT_S	 600
/* A daemon keeps VCD_MAX_MIGRATIONS (1024, daemon/vcd.h) migrations, running
 * and finished, and evicts the oldest finished one beyond that: the control
 * API check after the run needs every one of them. */
#define MAX_VMS			 1024
#define MAX_LANES		 200 /* each lane holds a control connection to host-a */
#define MAX_CONTROLLERS		 32
#define CALL_TIMEOUT_MS		 60000
#define MAX_POLL_SAMPLES	 (1u << 20)
#define PROC_STATUS_VMRSS	 "VmRSS:"
#define SENTINEL_VM_ID		 "load-sentinel"
#define VM_ID_PREFIX		 "load-vm-"
#define TARGET_NAME		 "host-b.test"
#define FDS_PER_VM_PER_SIDE	 2 /* VM fd + 1 vCPU fd */
#define DEFAULT_POLL_INTERVAL_MS 10
#define MAX_PRINTED_FAILURES	 20

struct load_config {
	unsigned n_vms;
	unsigned n_lanes;
	unsigned n_pollers;
	unsigned n_watchers;
	unsigned timeout_s;
	unsigned poll_interval_ms;
	bool warm_link;
	bool flood;
	bool check_host;
};

/* One VM on each host with the same id: the migration names one id. */
struct load_vm {
	char id[64];
	int src_vm_fd, src_vcpu_fd;
	int dst_vm_fd, dst_vcpu_fd;
	uint64_t src_offset; /* read after registration (the probe restores it) */
	uint64_t dst_offset; /* read after registration */
};

/* What one migration (one per VM) did, as the VMMs saw it. */
struct load_migration {
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	bool started;
	bool src_prepared;
	bool applied;			      /* vcounter_apply() returned 0 */
	unsigned notices_applied[3];	      /* by role (1 source, 2 target) */
	unsigned notices_done[3];	      /* by role */
	unsigned notices_failed[3];	      /* aborted or failed, by role */
	char failure[320];		      /* first failure seen */
	uint64_t apply_ns;		      /* vcounter_apply(): request -> reply */
	uint64_t daemon_apply_ns;	      /* the report's apply_latency_ns */
	uint64_t offset_before, offset_after; /* the report, vCPU 0 */
	uint64_t start_ns, done_ns;	      /* start_migration call -> both done */
	bool flooded;			      /* started with --flood's strangers at it */
};

struct load;

/* A lane is one thread that is the VMM of every n_lanes-th VM on both hosts
 * (one VMM connection to each daemon) and the operator that starts their
 * migrations (one control connection to host-a), one migration at a time:
 * n_lanes lanes = n_lanes migrations in flight. */
struct lane {
	struct load *load;
	unsigned index;
	pthread_t thread;
	struct vcounter *vc_a, *vc_b;
	struct vcounter_ctl *ctl_a;
	int result; /* 0 or -errno */
	char error[512];
	unsigned unknown_notices;
	unsigned first_vm; /* lane index, or + n_lanes after --warm-link's migration */
};

struct poller {
	struct load *load;
	pthread_t thread;
	const struct daemon_proc *daemon;
	char name[16];
	uint64_t *samples; /* ns, GetHostStatus and ListMigrations alternating */
	size_t n_samples;
	unsigned errors;
	char error[256];
};

struct watch_record {
	char migration_id[VCOUNTER_MIGRATION_ID_SIZE];
	char step[16];
	enum vcounter_ctl_event_kind kind;
};

struct watcher {
	struct load *load;
	pthread_t thread;
	const struct daemon_proc *daemon;
	char name[16];
	bool started;
	int result;
	char error[256];
	unsigned vm_registered, vm_unregistered;
	struct watch_record *records;
	size_t n_records, cap_records;
	uint64_t n_events;
};

struct load {
	struct load_config config;
	struct daemon_proc a, b;
	char peer_address[64];
	struct load_vm *vms;
	struct load_migration *migrations;
	struct lane *lanes;
	struct poller pollers[MAX_CONTROLLERS];
	struct watcher watchers[MAX_CONTROLLERS];
	atomic_uint watches_accepted;
	atomic_bool stop_pollers;
	bool pollers_joined;
	/* The lanes migrate VMs [phase_begin, phase_end): with --flood the
	 * first half, then the second with strangers flooding host-b's
	 * peer, control and metrics ports. */
	unsigned phase_begin, phase_end;
	int control_port, metrics_port;
	struct flood flood;
	atomic_bool flooding;
	uint64_t poll_start_ns, poll_end_ns;
	uint64_t deadline_ns;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static unsigned n_failures;

/* The first MAX_PRINTED_FAILURES failures, then only counted: one cause
 * (a lost frame, a timeout) fails hundreds of checks alike. */
static void failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failure(const char *fmt, ...)
{
	va_list ap;

	if (n_failures++ >= MAX_PRINTED_FAILURES)
		return;
	va_start(ap, fmt);
	printf("FAILED: ");
	vprintf(fmt, ap);
	va_end(ap);
}

/* Kilobytes of a "Key:   123 kB" line of /proc/PID/status or /proc/meminfo;
 * -errno when absent. */
static long proc_kb(const char *path, const char *key)
{
	char line[256];
	long kb = -ENOENT;
	FILE *f = fopen(path, "re");

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, strlen(key)) == 0) {
			kb = strtol(line + strlen(key), NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

static long pid_rss_kb(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	return proc_kb(path, PROC_STATUS_VMRSS);
}

static int fd_count_self(void)
{
	struct daemon_proc self = { .pid = getpid() };

	return harness_fd_count(&self);
}

/* ---- KVM VMs ---- */

/* The smallest VM the daemon takes: a VM fd and one vCPU that never runs,
 * no memory slot. */
static int vm_create(int kvm_fd, int *ret_vm_fd, int *ret_vcpu_fd)
{
	_cleanup_close_ int vm_fd = -1;
	int vcpu_fd;

	vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		return -errno;
	vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
	if (vcpu_fd < 0)
		return -errno;
	*ret_vm_fd = TAKE_FD(vm_fd);
	*ret_vcpu_fd = vcpu_fd;
	return 0;
}

static void load_vm_close(struct load_vm *vm)
{
	close_nointr(vm->src_vcpu_fd);
	close_nointr(vm->src_vm_fd);
	close_nointr(vm->dst_vcpu_fd);
	close_nointr(vm->dst_vm_fd);
	vm->src_vcpu_fd = vm->src_vm_fd = vm->dst_vcpu_fd = vm->dst_vm_fd = -1;
}

/* ---- lanes: the VMMs and the operator ---- */

static struct load_migration *lane_find(struct lane *l, const char *migration_id)
{
	struct load *ld = l->load;

	for (unsigned i = l->index; i < ld->config.n_vms; i += ld->config.n_lanes)
		if (ld->migrations[i].started && strcmp(ld->migrations[i].id, migration_id) == 0)
			return &ld->migrations[i];
	return NULL;
}

static void lane_count_notice(struct lane *l, const struct vcounter_notice *n)
{
	struct load_migration *m = lane_find(l, n->migration_id);
	unsigned role = n->role == VCOUNTER_ROLE_SOURCE	  ? 1
			: n->role == VCOUNTER_ROLE_TARGET ? 2
							  : 0;

	if (!m || role == 0) {
		l->unknown_notices++;
		return;
	}
	if (role == 1 && strcmp(n->step, "prepared") == 0)
		m->src_prepared = true;
	else if (strcmp(n->step, "applied") == 0)
		m->notices_applied[role]++;
	else if (strcmp(n->step, "done") == 0)
		m->notices_done[role]++;
	else if (n->terminal) {
		m->notices_failed[role]++;
		if (!m->failure[0])
			snprintf(m->failure, sizeof(m->failure), "%s %s: %s",
				 role == 1 ? "source" : "target", n->step, n->reason);
	}
}

/* Everything both daemons have sent this lane's VMM connections, the KVM ops
 * they ask for run meanwhile; wait at most until the lane's deadline for
 * until(m) to hold. Notices that arrived during other calls are queued in
 * the library, so drain those before polling the sockets. */
static int lane_pump(struct lane *l, struct load_migration *m,
		     bool (*until)(const struct load_migration *m))
{
	struct vcounter *vcs[2] = { l->vc_a, l->vc_b };

	for (;;) {
		struct pollfd pfd[2];
		uint64_t now;
		int r;

		for (size_t i = 0; i < 2; i++) {
			struct vcounter_notice n;

			while ((r = vcounter_next_notice(vcs[i], 0, &n)) == 1)
				lane_count_notice(l, &n);
			if (r < 0) {
				snprintf(l->error, sizeof(l->error), "host-%c VMM connection: %s",
					 i == 0 ? 'a' : 'b', vcounter_last_error(vcs[i]));
				return r;
			}
		}
		if (until(m))
			return 0;
		if (m->failure[0])
			return -ECANCELED;
		now = clock_ns(CLOCK_MONOTONIC);
		if (now >= l->load->deadline_ns || interrupted) {
			snprintf(l->error, sizeof(l->error), "migration %s: %s", m->id,
				 interrupted ? "interrupted" : "deadline passed");
			return -ETIMEDOUT;
		}
		for (size_t i = 0; i < 2; i++)
			pfd[i] = (struct pollfd){ .fd = vcounter_fd(vcs[i]), .events = POLLIN };
		r = poll(pfd, 2, 1000); /* the deadline is checked above */
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

static bool src_prepared(const struct load_migration *m)
{
	return m->src_prepared;
}

static bool both_done(const struct load_migration *m)
{
	return m->notices_done[1] > 0 && m->notices_done[2] > 0;
}

/* One migration, as a controller and two VMMs make it: StartMigration on
 * host-a; the source VMM waits for "prepared", pauses (its vCPU never ran)
 * and reports; the target VMM, having "received the VM state", applies and
 * checks its vCPU holds what the report says; both wait for done. */
static int lane_migrate(struct lane *l, unsigned vm_index)
{
	struct load *ld = l->load;
	struct load_vm *vm = &ld->vms[vm_index];
	struct load_migration *m = &ld->migrations[vm_index];
	struct vcounter_ctl_migration started;
	struct vcounter_report *rep = NULL;
	uint64_t generation, t0, t1, held = 0;
	int r;

	m->flooded = atomic_load(&ld->flooding);
	m->start_ns = clock_ns(CLOCK_MONOTONIC);
	r = vcounter_ctl_start_migration(l->ctl_a, vm->id, ld->peer_address, TARGET_NAME, &started);
	if (r < 0) {
		snprintf(l->error, sizeof(l->error), "vm=%s StartMigration: %s", vm->id,
			 vcounter_ctl_last_error(l->ctl_a));
		return r;
	}
	memcpy(m->id, started.migration_id, sizeof(m->id));
	m->started = true;
	vcounter_ctl_migration_clear(&started);

	r = lane_pump(l, m, src_prepared);
	if (r < 0)
		goto fail;
	r = vcounter_report_paused(l->vc_a, vm->id, m->id, &generation);
	if (r < 0) {
		snprintf(l->error, sizeof(l->error), "vm=%s migration=%s ReportPaused: %s", vm->id,
			 m->id, vcounter_last_error(l->vc_a));
		return r;
	}

	t0 = clock_ns(CLOCK_MONOTONIC);
	r = vcounter_apply(l->vc_b, vm->id, m->id, &rep);
	t1 = clock_ns(CLOCK_MONOTONIC);
	if (r < 0) {
		snprintf(l->error, sizeof(l->error), "vm=%s migration=%s apply refused: %s", vm->id,
			 m->id, vcounter_last_error(l->vc_b));
		return r;
	}
	m->applied = true;
	m->apply_ns = t1 - t0;
	m->daemon_apply_ns = rep->apply_latency_ns;
	r = -EPROTO;
	if (rep->n_vcpus != 1 || strcmp(rep->migration_id, m->id) != 0)
		snprintf(l->error, sizeof(l->error), "vm=%s report names %s with %u vCPUs", vm->id,
			 rep->migration_id, rep->n_vcpus);
	else if ((r = kvm_x86_get_tsc_offset(vm->dst_vcpu_fd, &held)) < 0)
		snprintf(l->error, sizeof(l->error), "vm=%s reading the target offset: %s", vm->id,
			 strerror(-r));
	else if (held != rep->offsets_after[0] || rep->offsets_before[0] != vm->src_offset) {
		snprintf(l->error, sizeof(l->error),
			 "vm=%s target holds %#" PRIx64 ", report says %#" PRIx64
			 " (source offset %#" PRIx64 ", report's before %#" PRIx64 ")",
			 vm->id, held, rep->offsets_after[0], vm->src_offset,
			 rep->offsets_before[0]);
		r = -EIO;
	} else {
		m->offset_before = rep->offsets_before[0];
		m->offset_after = rep->offsets_after[0];
		r = 0;
	}
	vcounter_report_free(rep);
	if (r < 0)
		return r;

	r = lane_pump(l, m, both_done);
	if (r < 0)
		goto fail;
	m->done_ns = clock_ns(CLOCK_MONOTONIC);
	return 0;
fail:
	if (r == -ECANCELED)
		snprintf(l->error, sizeof(l->error), "vm=%s migration=%s: %s", vm->id, m->id,
			 m->failure);
	return r;
}

static void *lane_main(void *arg)
{
	struct lane *l = arg;
	struct load *ld = l->load;

	/* A lane that failed in the first phase stays failed (and idle). */
	for (unsigned i = l->first_vm; i < ld->phase_end && !interrupted && l->result >= 0;
	     i += ld->config.n_lanes) {
		if (i < ld->phase_begin)
			continue;
		l->result = lane_migrate(l, i);
		if (l->result < 0)
			break;
	}
	return NULL;
}

/* ---- controllers: pollers and watchers ---- */

static int ctl_connect(const struct daemon_proc *d, unsigned timeout_ms, struct vcounter_ctl **ret)
{
	struct vcounter_ctl_options opts = { .socket_path = d->control_socket,
					     .timeout_ms = timeout_ms };

	return vcounter_ctl_connect(&opts, ret);
}

/* GetHostStatus and ListMigrations (running only), alternating, until told
 * to stop: what a fleet dashboard does, as fast as it can. */
static void *poller_main(void *arg)
{
	struct poller *p = arg;
	struct vcounter_ctl *ctl = NULL;
	int r;

	p->samples = calloc(MAX_POLL_SAMPLES, sizeof(uint64_t));
	if (!p->samples)
		return NULL;
	r = ctl_connect(p->daemon, CALL_TIMEOUT_MS, &ctl);
	if (r < 0) {
		snprintf(p->error, sizeof(p->error), "connect: %s", vcounter_ctl_last_error(NULL));
		p->errors++;
		return NULL;
	}
	while (!atomic_load(&p->load->stop_pollers) && !interrupted &&
	       p->n_samples < MAX_POLL_SAMPLES) {
		struct vcounter_ctl_migration *list = NULL;
		struct vcounter_ctl_host host;
		size_t n = 0;
		uint64_t t0 = clock_ns(CLOCK_MONOTONIC);

		if (p->n_samples % 2 == 0)
			r = vcounter_ctl_host_status(ctl, &host);
		else
			r = vcounter_ctl_list_migrations(ctl, NULL, true, &list, &n);
		p->samples[p->n_samples++] = clock_ns(CLOCK_MONOTONIC) - t0;
		vcounter_ctl_migrations_free(list, n);
		if (r < 0) {
			p->errors++;
			snprintf(p->error, sizeof(p->error), "%s", vcounter_ctl_last_error(ctl));
			if (vcounter_ctl_status(ctl) == VCOUNTER_CTL_STATUS_LOCAL)
				break;
		}
		if (p->load->config.poll_interval_ms)
			harness_sleep_ms(p->load->config.poll_interval_ms);
	}
	vcounter_ctl_close(ctl);
	return NULL;
}

static int watch_cb(const struct vcounter_ctl_event *ev, void *userdata)
{
	struct watcher *w = userdata;

	if (!ev) {
		w->started = true;
		atomic_fetch_add(&w->load->watches_accepted, 1);
		return 0;
	}
	w->n_events++;
	switch (ev->kind) {
	case VCOUNTER_CTL_EVENT_VM_REGISTERED:
		if (strncmp(ev->vm.vm_id, VM_ID_PREFIX, strlen(VM_ID_PREFIX)) == 0)
			w->vm_registered++;
		break;
	case VCOUNTER_CTL_EVENT_VM_UNREGISTERED:
		if (strcmp(ev->vm.vm_id, SENTINEL_VM_ID) == 0)
			return 1; /* the bench's last event on this daemon */
		if (strncmp(ev->vm.vm_id, VM_ID_PREFIX, strlen(VM_ID_PREFIX)) == 0)
			w->vm_unregistered++;
		break;
	case VCOUNTER_CTL_EVENT_MIGRATION_STEP:
	case VCOUNTER_CTL_EVENT_MIGRATION_OUTCOME:
		if (w->n_records == w->cap_records) {
			size_t cap = w->cap_records ? 2 * w->cap_records : 4096;
			struct watch_record *rec = realloc(w->records, cap * sizeof(*rec));

			if (!rec)
				return -ENOMEM;
			w->records = rec;
			w->cap_records = cap;
		}
		memcpy(w->records[w->n_records].migration_id, ev->migration.migration_id,
		       VCOUNTER_MIGRATION_ID_SIZE);
		snprintf(w->records[w->n_records].step, sizeof(w->records[0].step), "%s",
			 ev->migration.step);
		w->records[w->n_records].kind = ev->kind;
		w->n_records++;
		break;
	}
	return 0;
}

static void *watcher_main(void *arg)
{
	struct watcher *w = arg;
	struct vcounter_ctl *ctl = NULL;
	int r;

	r = ctl_connect(w->daemon, w->load->config.timeout_s * 1000u, &ctl);
	if (r < 0) {
		w->result = r;
		snprintf(w->error, sizeof(w->error), "connect: %s", vcounter_ctl_last_error(NULL));
		atomic_fetch_add(&w->load->watches_accepted, 1); /* do not wait for it */
		return NULL;
	}
	r = vcounter_ctl_watch(ctl, NULL, NULL, watch_cb, w);
	w->result = r == 1 ? 0 : r;
	if (r != 1)
		snprintf(w->error, sizeof(w->error), "watch ended: %s (%s)",
			 vcounter_ctl_last_error(ctl), strerror(r < 0 ? -r : EPROTO));
	if (!w->started)
		atomic_fetch_add(&w->load->watches_accepted, 1);
	vcounter_ctl_close(ctl);
	return NULL;
}

static void pollers_stop(struct load *ld)
{
	if (ld->pollers_joined)
		return;
	atomic_store(&ld->stop_pollers, true);
	for (unsigned k = 0; k < ld->config.n_pollers; k++)
		pthread_join(ld->pollers[k].thread, NULL);
	ld->poll_end_ns = clock_ns(CLOCK_MONOTONIC);
	ld->pollers_joined = true;
}

/* ---- setup ---- */

/* Every VM costs FDS_PER_VM_PER_SIDE fds per side in this process and as
 * many in each daemon (it keeps the fds it received); connections on top. */
static int raise_nofile(const struct load_config *c, rlim_t *ret_limit)
{
	rlim_t need = (rlim_t)c->n_vms * 2 * FDS_PER_VM_PER_SIDE + 4 * c->n_lanes +
		      2 * (c->n_pollers + c->n_watchers) + 256 + (c->flood ? FLOOD_FDS(3) : 0);
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur < need) {
		rl.rlim_cur = need;
		if (rl.rlim_max < need)
			rl.rlim_max = need; /* root only */
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			return -errno;
	}
	*ret_limit = rl.rlim_cur;
	return 0;
}

static int daemons_start(struct load *ld, const char *certs)
{
	char ca[600], cert_a[600], key_a[600], cert_b[600], key_b[600];
	const char *args_a[] = {
		"--host-name", "host-a.test", "--ca",	      ca,	   "--cert",	  cert_a,
		"--key",       key_a,	      "--allow-peer", TARGET_NAME, "--log-level", "info",
		NULL
	};
	char control_port_file[600], metrics_port_file[600];
	const char *args_b[32] = { "--host-name", TARGET_NAME,	  "--listen",
				   "127.0.0.1:0", "--ca",	  ca,
				   "--cert",	  cert_b,	  "--key",
				   key_b,	  "--allow-peer", "host-a.test",
				   "--log-level", "info",	  NULL };
	/* --flood: the ports strangers can reach, served as in production. */
	const char *flood_args[] = { "--control-listen",
				     "127.0.0.1:0",
				     "--control-port-file",
				     control_port_file,
				     "--control-reader",
				     "ctl-reader.test",
				     "--metrics-listen",
				     "127.0.0.1:0",
				     "--metrics-port-file",
				     metrics_port_file,
				     NULL };
	size_t n_b = 14;
	int r;

	snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
	snprintf(cert_a, sizeof(cert_a), "%s/host-a.pem", certs);
	snprintf(key_a, sizeof(key_a), "%s/host-a.key", certs);
	snprintf(cert_b, sizeof(cert_b), "%s/host-b.pem", certs);
	snprintf(key_b, sizeof(key_b), "%s/host-b.key", certs);
	snprintf(control_port_file, sizeof(control_port_file), "%s/control-port", certs);
	snprintf(metrics_port_file, sizeof(metrics_port_file), "%s/metrics-port", certs);
	for (size_t i = 0; ld->config.flood && flood_args[i]; i++)
		args_b[n_b++] = flood_args[i];
	args_b[n_b] = NULL;
	r = harness_start(&ld->a, args_a);
	if (r < 0) {
		fprintf(stderr, "load_bench: starting vcounterd host-a (%s/daemon/vcounterd): %s\n",
			harness_build_root(), strerror(-r));
		return r;
	}
	r = harness_start(&ld->b, args_b);
	if (r < 0) {
		fprintf(stderr, "load_bench: starting vcounterd host-b: %s\n", strerror(-r));
		return r;
	}
	snprintf(ld->peer_address, sizeof(ld->peer_address), "127.0.0.1:%d", ld->b.peer_port);
	if (ld->config.flood) {
		ld->control_port = harness_wait_port(control_port_file, 10000);
		ld->metrics_port = harness_wait_port(metrics_port_file, 10000);
		if (ld->control_port < 0 || ld->metrics_port < 0) {
			fprintf(stderr, "load_bench: host-b wrote no control or metrics port\n");
			return -EIO;
		}
		ld->flood = (struct flood){
			.ports = { ld->b.peer_port, ld->control_port, ld->metrics_port },
			.names = { "peer", "control (TCP)", "metrics" },
			.n_ports = 3,
		};
	}
	return 0;
}

/* ---- the checks ---- */

/* Every migration, from each daemon's control API: done, one id on both,
 * and on the target the report that the VMM got. */
static unsigned check_control_api(struct load *ld)
{
	const struct daemon_proc *daemons[2] = { &ld->a, &ld->b };
	unsigned bad = 0;

	for (size_t d = 0; d < 2; d++) {
		struct vcounter_ctl *ctl = NULL;

		if (ctl_connect(daemons[d], CALL_TIMEOUT_MS, &ctl) < 0) {
			failure("control API of host-%c: %s\n", d == 0 ? 'a' : 'b',
				vcounter_ctl_last_error(NULL));
			return ld->config.n_vms;
		}
		for (unsigned i = 0; i < ld->config.n_vms; i++) {
			const struct load_migration *m = &ld->migrations[i];
			struct vcounter_ctl_migration got;
			const char *why = NULL;

			if (!m->started)
				continue; /* check_vmms() counts it */
			if (vcounter_ctl_get_migration(ctl, m->id, &got) < 0) {
				failure("host-%c GetMigration %s: %s\n", d == 0 ? 'a' : 'b', m->id,
					vcounter_ctl_last_error(ctl));
				bad++;
				continue;
			}
			if (strcmp(got.step, "done") != 0)
				why = "not done";
			else if (strcmp(got.vm_id, ld->vms[i].id) != 0)
				why = "names another VM";
			else if (d == 0 && !got.started_by_controller)
				why = "not started by a controller";
			/* The source keeps the target's report from Applied on. */
			else if (!got.has_report || got.report.n_vcpus != 1 ||
				 got.report.offsets_after[0] != m->offset_after ||
				 got.report.offsets_before[0] != m->offset_before)
				why = "its report differs from the VMM's";
			if (why) {
				failure("host-%c migration %s (vm=%s, step %s): %s\n",
					d == 0 ? 'a' : 'b', m->id, got.vm_id, got.step, why);
				bad++;
			}
			vcounter_ctl_migration_clear(&got);
		}
		vcounter_ctl_close(ctl);
	}
	return bad;
}

/* Per migration and watcher: one "done" outcome and nothing else terminal;
 * on the target one "applied" step (the source goes from final to done when
 * the target's Applied arrives: daemon/session.c), and every VM
 * (un)registration seen. */
static unsigned check_watchers(struct load *ld, bool migrated, uint64_t *ret_events)
{
	unsigned bad = 0;
	uint64_t events = 0;

	for (unsigned k = 0; k < ld->config.n_watchers; k++) {
		struct watcher *w = &ld->watchers[k];

		events += w->n_events;
		if (w->result < 0) {
			failure("watcher %s: %s\n", w->name, w->error);
			bad++;
		}
		if (w->vm_registered != ld->config.n_vms ||
		    w->vm_unregistered != ld->config.n_vms) {
			failure("watcher %s saw %u registrations and %u "
				"unregistrations of %u VMs\n",
				w->name, w->vm_registered, w->vm_unregistered, ld->config.n_vms);
			bad++;
		}
		if (!migrated)
			continue;
		for (unsigned i = 0; i < ld->config.n_vms; i++) {
			const struct load_migration *m = &ld->migrations[i];
			unsigned applied = 0, done = 0, other = 0;

			if (!m->started)
				continue;
			for (size_t j = 0; j < w->n_records; j++) {
				const struct watch_record *rec = &w->records[j];

				if (strcmp(rec->migration_id, m->id) != 0)
					continue;
				if (rec->kind == VCOUNTER_CTL_EVENT_MIGRATION_STEP &&
				    strcmp(rec->step, "applied") == 0)
					applied++;
				else if (rec->kind == VCOUNTER_CTL_EVENT_MIGRATION_OUTCOME) {
					if (strcmp(rec->step, "done") == 0)
						done++;
					else
						other++;
				}
			}
			if (applied != (w->daemon == &ld->b ? 1u : 0u) || done != 1 || other != 0) {
				failure("watcher %s, migration %s: %u applied, %u "
					"done, %u other outcomes\n",
					w->name, m->id, applied, done, other);
				bad++;
			}
		}
	}
	*ret_events = events;
	return bad;
}

/* The VMMs' side: applied once, done once on both; target offsets hold what
 * was reported; source offsets never written. */
static unsigned check_vmms(struct load *ld, bool migrated)
{
	unsigned bad = 0;

	for (unsigned i = 0; i < ld->config.n_vms; i++) {
		const struct load_vm *vm = &ld->vms[i];
		const struct load_migration *m = &ld->migrations[i];
		uint64_t src = 0, dst = 0;

		if (kvm_x86_get_tsc_offset(vm->src_vcpu_fd, &src) < 0 ||
		    kvm_x86_get_tsc_offset(vm->dst_vcpu_fd, &dst) < 0) {
			failure("vm=%s: cannot read the offsets\n", vm->id);
			bad++;
			continue;
		}
		if (src != vm->src_offset) {
			failure("vm=%s: the source offset moved from %#" PRIx64 " to %#" PRIx64
				"\n",
				vm->id, vm->src_offset, src);
			bad++;
		}
		if (!migrated) {
			if (dst != vm->dst_offset) {
				failure("vm=%s: target offset written without a "
					"migration\n",
					vm->id);
				bad++;
			}
			continue;
		}
		if (!m->started) {
			failure("vm=%s: never migrated (its lane stopped)\n", vm->id);
			bad++;
			continue;
		}
		if (!m->applied || dst != m->offset_after || m->notices_applied[1] != 0 ||
		    m->notices_applied[2] != 1 || m->notices_done[1] != 1 ||
		    m->notices_done[2] != 1 || m->notices_failed[1] || m->notices_failed[2]) {
			failure("vm=%s migration=%s: applied %d, target holds "
				"%#" PRIx64 " (report %#" PRIx64
				"), notices applied %u/%u done %u/%u failed "
				"%u/%u (source/target)\n",
				vm->id, m->id, m->applied, dst, m->offset_after,
				m->notices_applied[1], m->notices_applied[2], m->notices_done[1],
				m->notices_done[2], m->notices_failed[1], m->notices_failed[2]);
			bad++;
		}
	}
	return bad;
}

/* ---- output ---- */

static void print_latency(const char *what, uint64_t *samples, size_t n)
{
	bench_sort(samples, n);
	printf("%-44s | %9.3f | %9.3f | %9.3f | %8zu\n", what,
	       bench_ms(bench_percentile(samples, n, 50)),
	       bench_ms(bench_percentile(samples, n, 99)), bench_ms(n ? samples[n - 1] : 0), n);
}

static void print_host(void)
{
	static const char *const modules[] = { "kvm_pvm", "kvm_intel", "kvm_amd" };
	const char *module = "unknown";
	struct utsname u;

	for (size_t i = 0; i < ELEMENTSOF(modules); i++) {
		char path[64];

		snprintf(path, sizeof(path), "/sys/module/%s", modules[i]);
		if (access(path, F_OK) == 0) {
			module = modules[i];
			break;
		}
	}
	if (uname(&u) == 0)
		printf("host: %s %s, %ld CPUs online, KVM module %s, MemTotal %ld MiB\n", u.sysname,
		       u.release, sysconf(_SC_NPROCESSORS_ONLN), module,
		       proc_kb("/proc/meminfo", "MemTotal:") / 1024);
}

/* A failed run's daemon logs hold thousands of lines: the errors and
 * dropped messages are what tell. */
static void log_excerpt(const char *path)
{
	char line[1024];
	unsigned shown = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return;
	printf("---- %s: errors and drops (first %d) ----\n", path, MAX_PRINTED_FAILURES);
	while (fgets(line, sizeof(line), f) && shown < MAX_PRINTED_FAILURES)
		if (strstr(line, " error: ") || strstr(line, "dropped")) {
			fputs(line, stdout);
			shown++;
		}
	fclose(f);
}

/* ---- arguments ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: load_bench [OPTIONS]\n"
		"Two real vcounterd (host-a source, host-b target, mutual TLS on loopback)\n"
		"under load: N KVM VMs (1 vCPU each) registered on each, every one migrated\n"
		"once, M at a time, started by StartMigration, while controllers poll and\n"
		"watch; everything checked (done exactly once, offsets read back).\n\n"
		"  --vms N          VMs per host (default %u, max %u)\n"
		"  --concurrency M  migrations in flight, one lane thread each (default %u,\n"
		"                   max %u: a control connection per lane)\n"
		"  --pollers K      controller threads polling GetHostStatus/ListMigrations,\n"
		"                   alternating between the daemons (default %u, max %u)\n"
		"  --watchers W     WatchEvents streams, alternating (default %u, max %u)\n"
		"  --timeout S      give up after S seconds of migrating (default %u)\n"
		"  --poll-interval-ms MS  pause of each poller between calls (default %u;\n"
		"                   0: back to back)\n"
		"  --warm-link      migrate one VM alone first, so that host-a's peer link\n"
		"                   to host-b is up before the M lanes start (without it\n"
		"                   the first wave's Prepares queue behind the handshake)\n"
		"  --flood          migrate the first half of the VMs, then the second half\n"
		"                   while strangers flood host-b's peer, control and\n"
		"                   metrics ports with connections that never handshake;\n"
		"                   the two halves are reported apart\n"
		"  --check-host     only say whether KVM honours TSC offsets (0) or not (77)\n"
		"  --help           this text\n\n"
		"Where KVM ignores TSC offsets (kvm_pvm) it says so and measures only\n"
		"registration, memory, fds and the controllers. Exit: 0 ran and every\n"
		"check passed, 77 no /dev/kvm, 1 a check or step failed.\n",
		DEFAULT_VMS, MAX_VMS, DEFAULT_LANES, MAX_LANES, DEFAULT_POLLERS, MAX_CONTROLLERS,
		DEFAULT_WATCHERS, MAX_CONTROLLERS, DEFAULT_TIMEOUT_S, DEFAULT_POLL_INTERVAL_MS);
}

static int parse_args(int argc, char **argv, struct load_config *c)
{
	enum {
		ARG_VMS = 0x100,
		ARG_LANES,
		ARG_POLLERS,
		ARG_WATCHERS,
		ARG_TIMEOUT,
		ARG_POLL_INTERVAL,
		ARG_WARM_LINK,
		ARG_FLOOD,
		ARG_CHECK,
		ARG_HELP
	};
	static const struct option options[] = {
		{ "vms", required_argument, NULL, ARG_VMS },
		{ "concurrency", required_argument, NULL, ARG_LANES },
		{ "pollers", required_argument, NULL, ARG_POLLERS },
		{ "watchers", required_argument, NULL, ARG_WATCHERS },
		{ "timeout", required_argument, NULL, ARG_TIMEOUT },
		{ "poll-interval-ms", required_argument, NULL, ARG_POLL_INTERVAL },
		{ "warm-link", no_argument, NULL, ARG_WARM_LINK },
		{ "flood", no_argument, NULL, ARG_FLOOD },
		{ "check-host", no_argument, NULL, ARG_CHECK },
		{ "help", no_argument, NULL, ARG_HELP },
		{ 0 },
	};
	int opt, r = 0;

	*c = (struct load_config){ .n_vms = DEFAULT_VMS,
				   .n_lanes = DEFAULT_LANES,
				   .n_pollers = DEFAULT_POLLERS,
				   .n_watchers = DEFAULT_WATCHERS,
				   .timeout_s = DEFAULT_TIMEOUT_S,
				   .poll_interval_ms = DEFAULT_POLL_INTERVAL_MS };
	while ((opt = getopt_long(argc, argv, "", options, NULL)) >= 0) {
		switch (opt) {
		case ARG_VMS:
			r = bench_parse_uint(optarg, 1, MAX_VMS, &c->n_vms);
			break;
		case ARG_LANES:
			r = bench_parse_uint(optarg, 1, MAX_LANES, &c->n_lanes);
			break;
		case ARG_POLLERS:
			r = bench_parse_uint(optarg, 0, MAX_CONTROLLERS, &c->n_pollers);
			break;
		case ARG_WATCHERS:
			r = bench_parse_uint(optarg, 0, MAX_CONTROLLERS, &c->n_watchers);
			break;
		case ARG_TIMEOUT:
			r = bench_parse_uint(optarg, 1, 86400, &c->timeout_s);
			break;
		case ARG_POLL_INTERVAL:
			r = bench_parse_uint(optarg, 0, 60000, &c->poll_interval_ms);
			break;
		case ARG_WARM_LINK:
			c->warm_link = true;
			break;
		case ARG_FLOOD:
			c->flood = true;
			break;
		case ARG_CHECK:
			c->check_host = true;
			break;
		case ARG_HELP:
			usage(stdout);
			exit(EXIT_SUCCESS);
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (r < 0) {
			fprintf(stderr, "load_bench: bad value '%s'\n", optarg);
			return r;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "load_bench: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (c->n_lanes > c->n_vms)
		c->n_lanes = c->n_vms;
	return 0;
}

/* ---- main ---- */

struct snapshot {
	long rss_kb[2];
	int fds[2];
	long self_rss_kb;
	int self_fds;
	long mem_available_kb;
};

static void snapshot_take(const struct load *ld, struct snapshot *s)
{
	s->rss_kb[0] = pid_rss_kb(ld->a.pid);
	s->rss_kb[1] = pid_rss_kb(ld->b.pid);
	s->fds[0] = harness_fd_count(&ld->a);
	s->fds[1] = harness_fd_count(&ld->b);
	s->self_rss_kb = pid_rss_kb(getpid());
	s->self_fds = fd_count_self();
	s->mem_available_kb = proc_kb("/proc/meminfo", "MemAvailable:");
}

/* The sentinel VM's unregistration ends every watch on that daemon: the
 * last event the bench causes, so no earlier event can be missed by
 * stopping. */
static int sentinel_cycle(struct vcounter *vc, enum vcounter_role role, int kvm_fd)
{
	_cleanup_close_ int vm_fd = -1, vcpu_fd = -1;
	struct vcounter_vm_info info;
	int r;

	r = vm_create(kvm_fd, &vm_fd, &vcpu_fd);
	if (r == 0)
		r = vcounter_register_vm(vc, SENTINEL_VM_ID, role, vm_fd, &vcpu_fd, 1, &info);
	if (r == 0)
		r = vcounter_unregister_vm(vc, SENTINEL_VM_ID);
	return r;
}

/* What main's phases share. */
struct run {
	struct load ld;
	int kvm_fd;
	char certs[512], offset_detail[256];
	bool own_certs, offsets_honoured, migrated, threads;
	unsigned lanes_connected, n_vms_created, n_registered, bad;
	uint64_t t_reg0, t_reg1, t_mig0, t_mig1, events;
	struct snapshot s0, s1, s2, s3;
	rlim_t nofile;
};

/* Can this host run it: KVM, a VM, TSC offsets honoured (--check-host asks
 * only that). -1 to go on, or the exit status. */
static int check_host(struct run *r)
{
	struct load_config *c = &r->ld.config;
	int rc;

	r->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (r->kvm_fd < 0) {
		printf("load_bench: SKIP: /dev/kvm: %s\n", strerror(errno));
		return EXIT_SKIP;
	}
	{
		_cleanup_close_ int vm_fd = -1, vcpu_fd = -1;

		rc = vm_create(r->kvm_fd, &vm_fd, &vcpu_fd);
		if (rc < 0) {
			printf("load_bench: SKIP: cannot create a KVM VM: %s\n", strerror(-rc));
			return EXIT_SKIP;
		}
		r->offsets_honoured = harness_kvm_honours_offsets(vcpu_fd);
	}
	if (c->check_host) {
		printf("load_bench: KVM %s TSC offsets here\n",
		       r->offsets_honoured ? "honours" : "ignores");
		return r->offsets_honoured ? EXIT_SUCCESS : EXIT_SKIP;
	}

	return -1;
}

/* The daemons with their certificates, the watchers, the lanes' VMM and
 * control connections, the pollers. 0, -1 (failed), or EXIT_SKIP. */
static int start_all(struct run *r)
{
	struct load *ld = &r->ld;
	struct load_config *c = &ld->config;
	struct sigaction sa = { .sa_handler = on_signal };
	int rc;

	setenv("VC_BUILD_ROOT", BENCH_BUILD_ROOT, 0);
	setenv("VC_TEST_CERTS", BENCH_GEN_CERTS, 0);
	/* For sanitizer builds, as tools/test: the daemons' undefined behaviour
	 * ends them, and their exit status fails the run (the rig's payload
	 * passes no environment). No effect on other builds. */
	setenv("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1", 0);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	print_host();

	/* Before the daemons start: they inherit it (under systemd the unit's
	 * LimitNOFILE does this). */
	rc = raise_nofile(c, &r->nofile);
	if (rc < 0) {
		fprintf(stderr,
			"load_bench: RLIMIT_NOFILE cannot be raised to what %u VMs need: %s\n",
			c->n_vms, strerror(-rc));
		return EXIT_FAILURE;
	}
	printf("config: %u VMs per host (1 vCPU, no memory), %u migrations in flight, %u "
	       "pollers, %u watchers; RLIMIT_NOFILE %llu (this process and both daemons)\n",
	       c->n_vms, c->n_lanes, c->n_pollers, c->n_watchers, (unsigned long long)r->nofile);

	ld->vms = calloc(c->n_vms, sizeof(*ld->vms));
	ld->migrations = calloc(c->n_vms, sizeof(*ld->migrations));
	ld->lanes = calloc(c->n_lanes, sizeof(*ld->lanes));
	if (!ld->vms || !ld->migrations || !ld->lanes) {
		fprintf(stderr, "load_bench: out of memory\n");
		return -1;
	}
	for (unsigned i = 0; i < c->n_vms; i++)
		ld->vms[i].src_vm_fd = ld->vms[i].src_vcpu_fd = ld->vms[i].dst_vm_fd =
			ld->vms[i].dst_vcpu_fd = -1;

	r->own_certs = !getenv("VC_TEST_CERT_DIR");
	rc = harness_certs(r->certs, sizeof(r->certs));
	if (rc < 0) {
		printf("load_bench: SKIP: cannot make test certificates (openssl missing?): %s\n",
		       strerror(-rc));
		return EXIT_SKIP;
	}
	rc = daemons_start(ld, r->certs);
	if (rc < 0)
		return -1;

	/* Controllers first, so that they see every registration. */
	for (unsigned k = 0; k < c->n_watchers; k++) {
		struct watcher *w = &ld->watchers[k];

		w->load = ld;
		w->daemon = k % 2 == 0 ? &ld->a : &ld->b;
		snprintf(w->name, sizeof(w->name), "%c%u", k % 2 == 0 ? 'a' : 'b', k / 2);
		if (pthread_create(&w->thread, NULL, watcher_main, w) != 0) {
			fprintf(stderr, "load_bench: cannot start watcher threads\n");
			c->n_watchers = k; /* the started ones end with the daemons */
			r->threads = true;
			return -1;
		}
	}
	r->threads = true;
	while (atomic_load(&ld->watches_accepted) < c->n_watchers && !interrupted)
		harness_sleep_ms(10);
	for (unsigned k = 0; k < c->n_watchers; k++)
		if (ld->watchers[k].result < 0) {
			fprintf(stderr, "load_bench: watcher %s: %s\n", ld->watchers[k].name,
				ld->watchers[k].error);
			return -1;
		}

	for (unsigned i = 0; i < c->n_lanes; i++, r->lanes_connected++) {
		struct lane *l = &ld->lanes[i];

		l->load = ld;
		l->index = i;
		l->first_vm = i;
		rc = vcounter_connect(ld->a.vmm_socket, &l->vc_a);
		if (rc == 0)
			rc = vcounter_connect(ld->b.vmm_socket, &l->vc_b);
		if (rc == 0)
			rc = ctl_connect(&ld->a, CALL_TIMEOUT_MS, &l->ctl_a);
		if (rc < 0) {
			fprintf(stderr, "load_bench: lane %u: connecting to the daemons: %s\n", i,
				strerror(-rc));
			r->lanes_connected++;
			return -1;
		}
	}
	ld->poll_start_ns = clock_ns(CLOCK_MONOTONIC);
	for (unsigned k = 0; k < c->n_pollers; k++) {
		struct poller *p = &ld->pollers[k];

		p->load = ld;
		p->daemon = k % 2 == 0 ? &ld->a : &ld->b;
		snprintf(p->name, sizeof(p->name), "%c%u", k % 2 == 0 ? 'a' : 'b', k / 2);
		if (pthread_create(&p->thread, NULL, poller_main, p) != 0) {
			fprintf(stderr, "load_bench: cannot start poller threads\n");
			atomic_store(&ld->stop_pollers, true);
			c->n_pollers = k;
			return -1;
		}
	}

	return 0;
}

/* Registration: KVM VM pairs created, then registered on both daemons. */
static int register_all(struct run *r)
{
	struct load *ld = &r->ld;
	struct load_config *c = &ld->config;
	int rc;

	/* Registration: the daemons probe each VM (write and restore vCPU 0's
	 * offset through this process), so it is sequential per connection;
	 * it is measured, not the point. */
	snapshot_take(ld, &r->s0);
	r->t_reg0 = clock_ns(CLOCK_MONOTONIC);
	for (unsigned i = 0; i < c->n_vms && !interrupted; i++, r->n_vms_created++) {
		struct load_vm *vm = &ld->vms[i];

		snprintf(vm->id, sizeof(vm->id), VM_ID_PREFIX "%04u", i);
		rc = vm_create(r->kvm_fd, &vm->src_vm_fd, &vm->src_vcpu_fd);
		if (rc == 0)
			rc = vm_create(r->kvm_fd, &vm->dst_vm_fd, &vm->dst_vcpu_fd);
		if (rc < 0) {
			printf("load_bench: LIMIT: KVM VM %u of %u (pair %s) cannot be created: "
			       "%s; "
			       "MemAvailable %ld kB, this process holds %d fds\n",
			       2 * i + 1, 2 * c->n_vms, vm->id, strerror(-rc),
			       proc_kb("/proc/meminfo", "MemAvailable:"), fd_count_self());
			return -1;
		}
	}
	r->t_reg1 = clock_ns(CLOCK_MONOTONIC);
	snapshot_take(ld, &r->s1);
	for (unsigned i = 0; i < c->n_vms && !interrupted; i++, r->n_registered++) {
		struct load_vm *vm = &ld->vms[i];
		struct lane *l = &ld->lanes[i % c->n_lanes];
		struct vcounter_vm_info info_a, info_b;

		rc = vcounter_register_vm(l->vc_a, vm->id, VCOUNTER_ROLE_SOURCE, vm->src_vm_fd,
					  &vm->src_vcpu_fd, 1, &info_a);
		if (rc < 0) {
			printf("load_bench: LIMIT: host-a refuses VM %u (%s): %s\n", i, vm->id,
			       vcounter_last_error(l->vc_a));
			return -1;
		}
		rc = vcounter_register_vm(l->vc_b, vm->id, VCOUNTER_ROLE_TARGET, vm->dst_vm_fd,
					  &vm->dst_vcpu_fd, 1, &info_b);
		if (rc < 0) {
			printf("load_bench: LIMIT: host-b refuses VM %u (%s): %s\n", i, vm->id,
			       vcounter_last_error(l->vc_b));
			r->n_registered++; /* unregister the source side too */
			return -1;
		}
		if (i == 0)
			snprintf(r->offset_detail, sizeof(r->offset_detail), "%s",
				 info_b.probe_detail);
		if (!info_b.offset_control)
			r->offsets_honoured = false;
		if (kvm_x86_get_tsc_offset(vm->src_vcpu_fd, &vm->src_offset) < 0 ||
		    kvm_x86_get_tsc_offset(vm->dst_vcpu_fd, &vm->dst_offset) < 0) {
			fprintf(stderr, "load_bench: %s: cannot read the offsets\n", vm->id);
			r->n_registered++;
			return -1;
		}
	}
	snapshot_take(ld, &r->s2);
	printf("registered %u VMs on each host in %.0f ms (%.0f registrations/s over both "
	       "daemons; KVM VMs created in %.0f ms)\n",
	       c->n_vms, bench_ms(clock_ns(CLOCK_MONOTONIC) - r->t_reg1),
	       2.0 * c->n_vms / ((double)(clock_ns(CLOCK_MONOTONIC) - r->t_reg1) / 1e9),
	       bench_ms(r->t_reg1 - r->t_reg0));

	return 0;
}

/* The migrations, lane by lane, or (KVM ignoring offsets) a pause with the
 * controllers on; then what the daemons and the VMMs say of them. */
/* Every lane migrates its VMs of [phase_begin, phase_end); 0 once all are
 * joined, -1 if a lane could not start (the started ones stopped). */
static int lanes_run(struct load *ld)
{
	for (unsigned i = 0; i < ld->config.n_lanes; i++)
		if (pthread_create(&ld->lanes[i].thread, NULL, lane_main, &ld->lanes[i]) != 0) {
			fprintf(stderr, "load_bench: cannot start lane %u\n", i);
			interrupted = SIGTERM;
			for (unsigned j = 0; j < i; j++)
				pthread_join(ld->lanes[j].thread, NULL);
			return -1;
		}
	for (unsigned i = 0; i < ld->config.n_lanes; i++)
		pthread_join(ld->lanes[i].thread, NULL);
	return 0;
}

static int migrate_all(struct run *r)
{
	struct load *ld = &r->ld;
	struct load_config *c = &ld->config;
	int rc;

	if (!r->offsets_honoured) {
		printf("load_bench: no migrations here: this host's KVM ignores TSC offsets, so "
		       "the target refuses to apply (host-b's probe: %s). Run it in the nested-KVM "
		       "rig: bench/run-load-bench\n",
		       r->offset_detail);
		/* What the controllers cost while the VMs sit registered. */
		harness_sleep_ms(2000);
	} else {
		ld->deadline_ns = clock_ns(CLOCK_MONOTONIC) + (uint64_t)c->timeout_s * NSEC_PER_SEC;
		if (c->warm_link) {
			/* One migration alone: host-a opens its link to host-b. */
			rc = lane_migrate(&ld->lanes[0], 0);
			if (rc < 0) {
				failure("warm-up migration: %s\n", ld->lanes[0].error);
				r->bad++;
			}
			ld->lanes[0].first_vm += c->n_lanes;
		}
		r->t_mig0 = clock_ns(CLOCK_MONOTONIC);
		ld->phase_begin = 0;
		ld->phase_end = c->flood ? c->n_vms / 2 : c->n_vms;
		rc = lanes_run(ld);
		if (rc == 0 && c->flood) {
			rc = flood_start(&ld->flood, 120000);
			if (rc < 0)
				fprintf(stderr, "load_bench: the flood did not start: %s\n",
					strerror(-rc));
			atomic_store(&ld->flooding, true);
			ld->phase_begin = ld->phase_end;
			ld->phase_end = c->n_vms;
			if (rc == 0)
				rc = lanes_run(ld);
			flood_stop(&ld->flood);
			atomic_store(&ld->flooding, false);
		}
		if (rc < 0)
			return -1;
		r->t_mig1 = clock_ns(CLOCK_MONOTONIC);
		r->migrated = true;
		for (unsigned i = 0; i < c->n_lanes; i++)
			if (ld->lanes[i].result < 0) {
				failure("lane %u: %s\n", i, ld->lanes[i].error);
				r->bad++;
			}
	}
	snapshot_take(ld, &r->s3);
	pollers_stop(ld);

	if (r->migrated) {
		r->bad += check_control_api(ld);
		r->bad += check_vmms(ld, true);
	} else {
		r->bad += check_vmms(ld, false);
	}

	return 0;
}

/* Unregister (the watchers count it), the sentinels end the watches, the
 * VMs closed. ret: the run so far; returns it, or a failure. */
static int stop_all(struct run *r, int ret)
{
	struct load *ld = &r->ld;
	struct load_config *c = &ld->config;

	/* Unregister (the watchers count it), then the sentinels end the
	 * watches. */
	for (unsigned i = 0; i < r->n_registered; i++) {
		struct lane *l = &ld->lanes[i % c->n_lanes];

		if (vcounter_unregister_vm(l->vc_a, ld->vms[i].id) < 0 ||
		    vcounter_unregister_vm(l->vc_b, ld->vms[i].id) < 0) {
			fprintf(stderr, "load_bench: unregistering %s failed\n", ld->vms[i].id);
			ret = EXIT_FAILURE;
		}
	}
	if (r->threads) {
		pollers_stop(ld);
		if (r->lanes_connected == 0 || ret != 0 ||
		    sentinel_cycle(ld->lanes[0].vc_a, VCOUNTER_ROLE_SOURCE, r->kvm_fd) < 0 ||
		    sentinel_cycle(ld->lanes[0].vc_b, VCOUNTER_ROLE_TARGET, r->kvm_fd) < 0) {
			/* No clean end: stopping the daemons ends the watches. */
			ret = EXIT_FAILURE;
			log_excerpt(ld->a.log_path);
			log_excerpt(ld->b.log_path);
			harness_stop(&ld->a);
			harness_stop(&ld->b);
		}
		for (unsigned k = 0; k < c->n_watchers; k++)
			pthread_join(ld->watchers[k].thread, NULL);
	}
	for (unsigned i = 0; i < r->n_vms_created; i++)
		load_vm_close(&ld->vms[i]);

	return ret;
}

/* The tables and ratios, and the checks' verdict: ret, or a failure. */
/* --flood: the first half of the migrations, and the second, made while
 * strangers flooded host-b; and what the strangers got. */
static void report_flood(const struct load *ld)
{
	const struct load_config *c = &ld->config;
	uint64_t *t[2] = { calloc(c->n_vms + 1, sizeof(uint64_t)),
			   calloc(c->n_vms + 1, sizeof(uint64_t)) };
	size_t n[2] = { 0, 0 }, started[2] = { 0, 0 };

	if (!t[0] || !t[1]) {
		free(t[0]);
		free(t[1]);
		return;
	}
	for (unsigned i = 0; i < c->n_vms; i++) {
		const struct load_migration *m = &ld->migrations[i];

		if (!m->started)
			continue;
		started[m->flooded]++;
		if (m->done_ns)
			t[m->flooded][n[m->flooded]++] = m->done_ns - m->start_ns;
	}
	print_latency("migration, before the flood", t[0], n[0]);
	print_latency("migration, during the flood", t[1], n[1]);
	printf("flood: migrations done %zu of %zu before it, %zu of %zu during it; "
	       "p99 during / before %.2f, p50 %.2f\n",
	       n[0], started[0], n[1], started[1],
	       n[0] && n[1] ? (double)bench_percentile(t[1], n[1], 99) /
				      (double)bench_percentile(t[0], n[0], 99)
			    : 0.0,
	       n[0] && n[1] ? (double)bench_percentile(t[1], n[1], 50) /
				      (double)bench_percentile(t[0], n[0], 50)
			    : 0.0);
	for (unsigned p = 0; p < ld->flood.n_ports; p++)
		printf("flood on host-b's %s port: %" PRIu64 " connections opened, %" PRIu64
		       " closed or answered by the daemon, %" PRIu64 " connects failed\n",
		       ld->flood.names[p], ld->flood.opened[p], ld->flood.closed_by_daemon[p],
		       ld->flood.connect_failed[p]);
	free(t[0]);
	free(t[1]);
}

static int report(struct run *r, int ret)
{
	struct load *ld = &r->ld;
	struct load_config *c = &ld->config;

	if (ret == 0) {
		struct snapshot s4;
		size_t n_apply = 0, n_whole = 0, n_poll = 0;
		unsigned n_timed = 0;
		uint64_t *apply = calloc(c->n_vms + 1, sizeof(uint64_t));
		uint64_t *daemon_apply = calloc(c->n_vms + 1, sizeof(uint64_t));
		uint64_t *whole = calloc(c->n_vms + 1, sizeof(uint64_t));
		uint64_t *polls;
		unsigned poll_errors = 0;

		snapshot_take(ld, &s4);
		r->bad += check_watchers(ld, r->migrated, &r->events);
		for (unsigned k = 0; k < c->n_pollers; k++)
			n_poll += ld->pollers[k].n_samples;
		polls = calloc(n_poll + 1, sizeof(uint64_t));
		if (!apply || !daemon_apply || !whole || !polls) {
			fprintf(stderr, "load_bench: out of memory\n");
			ret = EXIT_FAILURE;
			goto free_results;
		}
		n_poll = 0;
		for (unsigned k = 0; k < c->n_pollers; k++) {
			const struct poller *p = &ld->pollers[k];

			memcpy(polls + n_poll, p->samples, p->n_samples * sizeof(uint64_t));
			n_poll += p->n_samples;
			poll_errors += p->errors;
			if (p->errors)
				printf("poller %s: %u errors, last: %s\n", p->name, p->errors,
				       p->error);
		}
		for (unsigned i = 0; r->migrated && i < c->n_vms; i++) {
			const struct load_migration *m = &ld->migrations[i];

			if (m->applied) {
				apply[n_apply] = m->apply_ns;
				daemon_apply[n_apply++] = m->daemon_apply_ns;
			}
			if (m->done_ns) {
				whole[n_whole++] = m->done_ns - m->start_ns;
				if (m->start_ns >= r->t_mig0)
					n_timed++;
			}
		}

		printf("\n%-44s | %9s | %9s | %9s | %8s\n", "latency (ms)", "p50", "p99", "max",
		       "n");
		if (r->migrated) {
			print_latency("apply: vcounter_apply() request -> reply", apply, n_apply);
			print_latency("apply: host-b's own apply_latency_ns", daemon_apply,
				      n_apply);
			print_latency("migration: StartMigration -> both done", whole, n_whole);
			if (c->flood)
				report_flood(ld);
		}
		print_latency("controller: GetHostStatus/ListMigrations", polls, n_poll);

		printf("\n%-36s | %12s | %12s\n", "daemon", "host-a", "host-b");
		printf("%-36s | %12ld | %12ld\n", "VmRSS idle, controllers on (kB)",
		       r->s0.rss_kb[0], r->s0.rss_kb[1]);
		printf("%-36s | %12ld | %12ld\n", "VmRSS with the VMs registered (kB)",
		       r->s2.rss_kb[0], r->s2.rss_kb[1]);
		if (r->migrated)
			printf("%-36s | %12ld | %12ld\n", "VmRSS after the migrations (kB)",
			       r->s3.rss_kb[0], r->s3.rss_kb[1]);
		printf("%-36s | %12.2f | %12.2f\n", "RSS per registered VM (kB)",
		       (double)(r->s2.rss_kb[0] - r->s0.rss_kb[0]) / c->n_vms,
		       (double)(r->s2.rss_kb[1] - r->s0.rss_kb[1]) / c->n_vms);
		if (r->migrated)
			printf("%-36s | %12.2f | %12.2f\n", "RSS per VM after migrating (kB)",
			       (double)(r->s3.rss_kb[0] - r->s0.rss_kb[0]) / c->n_vms,
			       (double)(r->s3.rss_kb[1] - r->s0.rss_kb[1]) / c->n_vms);
		printf("%-36s | %12d | %12d\n", "fds idle, controllers on", r->s0.fds[0],
		       r->s0.fds[1]);
		printf("%-36s | %12d | %12d\n", "fds with the VMs registered", r->s2.fds[0],
		       r->s2.fds[1]);
		printf("%-36s | %12.2f | %12.2f\n", "fds per registered VM",
		       (double)(r->s2.fds[0] - r->s0.fds[0]) / c->n_vms,
		       (double)(r->s2.fds[1] - r->s0.fds[1]) / c->n_vms);
		if (r->migrated)
			printf("%-36s | %12d | %12d\n", "fds after the migrations", r->s3.fds[0],
			       r->s3.fds[1]);
		printf("%-36s | %12d | %12d\n", "fds after unregistering", s4.fds[0], s4.fds[1]);

		printf("\nthis process (both VMMs and all controllers): fds %d idle -> %d with "
		       "%u VM pairs (%.2f per pair), VmRSS %ld -> %ld kB; MemAvailable %ld -> %ld "
		       "kB creating %u KVM VMs (%.1f kB each, kernel included)\n",
		       r->s0.self_fds, r->s1.self_fds, c->n_vms,
		       (double)(r->s1.self_fds - r->s0.self_fds) / c->n_vms, r->s0.self_rss_kb,
		       r->s1.self_rss_kb, r->s0.mem_available_kb, r->s1.mem_available_kb,
		       2 * c->n_vms,
		       (double)(r->s0.mem_available_kb - r->s1.mem_available_kb) /
			       (2.0 * c->n_vms));
		if (r->migrated) {
			double secs = (double)(r->t_mig1 - r->t_mig0) / 1e9;

			printf("throughput: %u migrations done in %.2f s = %.1f migrations/s with "
			       "%u "
			       "in flight%s\n",
			       n_timed, secs, n_timed / secs, c->n_lanes,
			       c->warm_link ? " (after the --warm-link migration)" : "");
			printf("ratios: apply p99/p50 %.2f; whole migration p50 / apply p50 %.1f; "
			       "vcounter_apply p50 / host-b apply_latency p50 %.2f\n",
			       (double)bench_percentile(apply, n_apply, 99) /
				       (double)bench_percentile(apply, n_apply, 50),
			       (double)bench_percentile(whole, n_whole, 50) /
				       (double)bench_percentile(apply, n_apply, 50),
			       (double)bench_percentile(apply, n_apply, 50) /
				       (double)bench_percentile(daemon_apply, n_apply, 50));
		}
		printf("controllers: %zu calls (%u failed) by %u pollers, %.0f calls/s; %" PRIu64
		       " events to %u watchers\n",
		       n_poll, poll_errors, c->n_pollers,
		       (double)n_poll / ((double)(ld->poll_end_ns - ld->poll_start_ns) / 1e9),
		       r->events, c->n_watchers);
		printf("checks: %s%s\n",
		       r->migrated
			       ? "every migration done exactly once on both daemons (control API, "
				 "VMM notices, every watcher), applied once, target offsets read "
				 "back as reported, source offsets unchanged"
			       : "no migrations; every (un)registration seen by every watcher, no "
				 "offset written",
		       r->bad ? "" : ": all passed");
		for (size_t d = 0; d < 2; d++) {
			const struct daemon_proc *dp = d == 0 ? &ld->a : &ld->b;

			printf("host-%c log: %d errors, %d messages dropped\n", d == 0 ? 'a' : 'b',
			       harness_file_count(dp->log_path, " error: "),
			       harness_file_count(dp->log_path, "message dropped"));
		}
		if (r->bad) {
			printf("checks: %u FAILED%s\n", r->bad,
			       n_failures > MAX_PRINTED_FAILURES ? " (the first ones shown above)"
								 : "");
			ret = EXIT_FAILURE;
		}
		if (poll_errors)
			ret = EXIT_FAILURE;
	free_results:
		free(apply);
		free(daemon_apply);
		free(whole);
		free(polls);
	}
	return ret;
}

/* The connections closed, the daemons stopped (an exit status other than
 * 0 fails the run), the certificates and memory released. */
static int finish(struct run *r, int ret)
{
	struct load *ld = &r->ld;
	struct load_config *c = &ld->config;

	if (ret != 0) {
		if (ld->a.pid > 0)
			log_excerpt(ld->a.log_path);
		if (ld->b.pid > 0)
			log_excerpt(ld->b.log_path);
	}
	for (unsigned i = 0; i < r->lanes_connected; i++) {
		vcounter_close(ld->lanes[i].vc_a);
		vcounter_close(ld->lanes[i].vc_b);
		vcounter_ctl_close(ld->lanes[i].ctl_a);
	}
	/* A daemon that exits other than 0 on SIGTERM crashed, or (under
	 * VC_DAEMON_WRAPPER or a sanitizer build) its tool found errors: the
	 * log says which (VC_KEEP_TEST_DIRS=1 keeps it). */
	for (size_t d = 0; d < 2; d++) {
		struct daemon_proc *dp = d == 0 ? &ld->a : &ld->b;
		int status;

		if (dp->pid <= 0)
			continue;
		status = harness_stop(dp);
		if (status != 0) {
			printf("FAILED: host-%c exited with status %d (log: %s)\n",
			       d == 0 ? 'a' : 'b', status, dp->log_path);
			ret = EXIT_FAILURE;
		}
	}
	if (r->own_certs && r->certs[0])
		harness_remove_tree(r->certs);
	for (unsigned k = 0; k < c->n_pollers; k++)
		free(ld->pollers[k].samples);
	for (unsigned k = 0; k < c->n_watchers; k++)
		free(ld->watchers[k].records);
	free(ld->vms);
	free(ld->migrations);
	free(ld->lanes);
	return ret;
}

int main(int argc, char **argv)
{
	static struct run run = { .kvm_fd = -1 };
	struct run *r = &run;
	int rc, ret = EXIT_FAILURE;

	if (parse_args(argc, argv, &r->ld.config) < 0)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = check_host(r);
	if (rc >= 0) {
		if (r->kvm_fd >= 0)
			close(r->kvm_fd);
		return rc;
	}
	rc = start_all(r);
	if (rc == 0)
		rc = register_all(r);
	if (rc == 0)
		rc = migrate_all(r);
	if (rc == 0)
		ret = 0;
	else if (rc == EXIT_SKIP)
		ret = EXIT_SKIP;
	ret = stop_all(r, ret);
	if (ret == 0)
		ret = report(r, ret);
	ret = finish(r, ret);
	close(r->kvm_fd);
	return ret;
}
