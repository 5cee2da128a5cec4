/* control.c - service Control (proto/vcounter.proto): what a fleet
 * controller asks of this daemon over gRPC (daemon/grpc.c carries it), and
 * the event feed behind WatchEvents. Handlers answer from the daemon's own
 * state at once; a migration a controller starts runs on like any other,
 * and its steps reach the watchers as they happen. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "clockns.h"
#include "control.h"
#include "grpc.h"
#include "hostclock.h"
#include "log.h"
#include "macro.h"
#include "migration.h"
#include "sync_source.h"
#include "tls.h"
#include "vcd.h"
#include "uapi/kvm_syscounter.h"
#include "wire.h"

#include "config.h"

#define CONTROL_PATH(name) "/vcounter.v1.Control/" name

_Static_assert(VCD_MAX_CONTROL_IDENTITIES <= GRPC_MAX_IDENTITIES &&
		       VCD_CONTROL_IDENTITY_MAX <= GRPC_IDENTITY_MAX,
	       "every control identity the configuration holds fits the gRPC server");

/* session.h's steps are the wire's MigrationStep, number for number. */
_Static_assert((int)STEP_PREPARING == VCOUNTER__V1__MIGRATION_STEP__MIGRATION_STEP_PREPARING &&
		       (int)STEP_DONE == VCOUNTER__V1__MIGRATION_STEP__MIGRATION_STEP_DONE &&
		       (int)STEP_ABORTED == VCOUNTER__V1__MIGRATION_STEP__MIGRATION_STEP_ABORTED &&
		       (int)STEP_FAILED == VCOUNTER__V1__MIGRATION_STEP__MIGRATION_STEP_FAILED,
	       "enum migration_step and MigrationStep differ");

struct watcher {
	struct watcher *next;
	struct control *ctl;
	struct grpc_call *call;
	char vm_id[VC_VM_ID_MAX + 1];		    /* "" : any */
	char migration_id[VC_MIGRATION_ID_LEN + 1]; /* "" : any */
	char who[GRPC_IDENTITY_MAX + 1];
};

struct backend_support {
	enum backend_kind kind;
	bool from_device; /* /dev/kvm answered; else the VMMs' probes tell */
	bool kernel_support;
	char detail[160];
};

struct control {
	struct vcd *vcd;
	struct grpc_server *server;
	struct watcher *watchers;
	size_t n_watchers;
	uint64_t seq;
	struct backend_support support[_BACKEND_KIND_MAX];
	size_t n_support;
};

static Vcounter__V1__Role role_to_pb(enum vm_role role)
{
	return role == VM_ROLE_SOURCE	? VCOUNTER__V1__ROLE__ROLE_SOURCE
	       : role == VM_ROLE_TARGET ? VCOUNTER__V1__ROLE__ROLE_TARGET
					: VCOUNTER__V1__ROLE__ROLE_UNSPECIFIED;
}

/* ---- daemon state -> messages (storage is the caller's) ---- */

static void vm_to_pb(const struct vm_entry *vm, Vcounter__V1__Vm *ret)
{
	vcounter__v1__vm__init(ret);
	ret->vm_id = (char *)vm->vm_id;
	ret->role = role_to_pb(vm->role);
	ret->vcpu_count = vm->n_vcpus;
	ret->backend = wire_backend_to_pb(vm->backend);
	ret->offset_control = vm->offset_control;
	ret->probe_detail = (char *)vm->probe_detail;
	ret->guest_tsc_khz = vm->guest_tsc_khz;
	ret->registered_by_pid = (int32_t)vm->pid;
	ret->registered_by_uid = (uint32_t)vm->uid;
	ret->registration_complete = vm->probed;
	ret->arch = wire_counter_arch_to_pb(vm->arch);
}

struct migration_pb {
	Vcounter__V1__Migration m;
	struct wire_report_pb report;
};

static void migration_to_pb(const struct migration_view *v, uint64_t now, struct migration_pb *ret)
{
	const struct session *s = v->s;

	vcounter__v1__migration__init(&ret->m);
	ret->m.migration_id = (char *)s->migration_id;
	ret->m.vm_id = (char *)s->vm_id;
	ret->m.role = role_to_pb(s->role);
	ret->m.step = (Vcounter__V1__MigrationStep)s->step;
	ret->m.peer_identity = (char *)s->peer_identity;
	ret->m.peer_address = (char *)v->peer_address;
	ret->m.generation = s->generation;
	ret->m.started_by_controller = v->by_controller;
	ret->m.age_ns = now > s->started_ns ? now - s->started_ns : 0;
	ret->m.step_age_ns = now > s->updated_ns ? now - s->updated_ns : 0;
	ret->m.planned_delta_cycles = v->planned_delta_cycles;
	ret->m.planned_error_bound_ns = v->planned_error_bound_ns;
	ret->m.recovered = v->recovered;
	ret->m.awaiting_source = v->awaiting_source;
	ret->m.failure_reason = (char *)s->reason;
	if (s->has_report) {
		wire_report_to_pb(&s->report, &ret->report);
		ret->m.report = &ret->report.report;
	}
}

static enum grpc_status status_from_errno(int r)
{
	switch (-r) {
	case EINVAL:
		return GRPC_STATUS_INVALID_ARGUMENT;
	case ENOENT:
		return GRPC_STATUS_NOT_FOUND;
	case EPERM:
	case EACCES:
		return GRPC_STATUS_PERMISSION_DENIED;
	case ENOSPC:
	case ENOMEM:
		return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ETIMEDOUT:
	case ECONNRESET:
	case ENOTCONN: /* a recovered VM whose VMM has not reattached */
		return GRPC_STATUS_UNAVAILABLE;
	case EADDRNOTAVAIL:
	case EAGAIN:
	case EOPNOTSUPP:
	case EBUSY:
	case ENOKEY:
	case EALREADY:
	case ECANCELED:
		return GRPC_STATUS_FAILED_PRECONDITION;
	default:
		return GRPC_STATUS_INTERNAL;
	}
}

static void send_one(struct grpc_call *call, const ProtobufCMessage *msg)
{
	int r = grpc_call_send(call, msg);

	if (r == -ENOBUFS)
		return; /* the client does not read: the transport reset the call */
	if (r == -EMSGSIZE)
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				 "the reply is over %u bytes; narrow the request",
				 GRPC_MAX_MESSAGE_BYTES);
	else if (r < 0)
		grpc_call_finish(call, GRPC_STATUS_INTERNAL, "cannot send the reply: %s",
				 strerror(-r));
	else
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* An optional id in a request: "" is none; else it must be well formed. */
static bool id_arg_ok(const char *id, bool (*valid)(const char *))
{
	return !id || !*id || valid(id);
}

/* ---- unary calls ---- */

static void list_vms(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	struct vcd *vcd = userdata;
	Vcounter__V1__ListVmsReply reply = VCOUNTER__V1__LIST_VMS_REPLY__INIT;
	size_t n_vms = vm_registry_count(&vcd->vms);
	_cleanup_free_ Vcounter__V1__Vm *vms = calloc(n_vms ? n_vms : 1, sizeof(*vms));
	_cleanup_free_ Vcounter__V1__Vm **ptrs = calloc(n_vms ? n_vms : 1, sizeof(*ptrs));
	size_t n = 0;

	if (!vms || !ptrs) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	for (const struct vm_entry *vm = vm_registry_first(&vcd->vms); vm && n < n_vms;
	     vm = vm->next) {
		vm_to_pb(vm, &vms[n]);
		ptrs[n] = &vms[n];
		n++;
	}
	reply.n_vms = n;
	reply.vms = ptrs;
	send_one(call, &reply.base);
}

static void backend_support_probe(struct control *ctl)
{
	const struct vcd_config *cfg = &ctl->vcd->config;
	enum backend_kind order[] = { BACKEND_KVM_SYSCOUNTER, BACKEND_KVM_X86 };
	_cleanup_close_ int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int open_errno = errno;

	for (size_t i = 0; i < ELEMENTSOF(order); i++) {
		struct backend_support *b = &ctl->support[ctl->n_support++];
		int cap, r;

		b->kind = order[i];
		if (kvm < 0) {
			/* The service's sandbox hides /dev/kvm (PrivateDevices=):
			 * the daemon never needs it, VMMs probe for it. */
			snprintf(b->detail, sizeof(b->detail), "no /dev/kvm here (%s)",
				 strerror(open_errno));
			continue;
		}
		b->from_device = true;
#ifdef KVM_CAP_VCPU_ATTRIBUTES
		cap = b->kind == BACKEND_KVM_SYSCOUNTER ? KVM_CAP_SYSTEM_COUNTER_STATE
							: KVM_CAP_VCPU_ATTRIBUTES;
#else
		cap = b->kind == BACKEND_KVM_SYSCOUNTER ? KVM_CAP_SYSTEM_COUNTER_STATE : -1;
#endif
		r = cap < 0 ? 0 : ioctl(kvm, KVM_CHECK_EXTENSION, cap);
		b->kernel_support = r > 0;
		snprintf(b->detail, sizeof(b->detail), "%s %s offered by this KVM%s",
			 b->kind == BACKEND_KVM_SYSCOUNTER ? "KVM_CAP_SYSTEM_COUNTER_STATE"
							   : "KVM_CAP_VCPU_ATTRIBUTES",
			 r > 0 ? "is" : "is not",
			 r > 0 ? "; whether writes are honoured is probed per VM" : "");
	}
	/* Preference order: --backends first, as the daemon offers them. */
	if (cfg->n_backends) {
		struct backend_support sorted[_BACKEND_KIND_MAX];
		size_t n = 0;

		for (size_t i = 0; i < cfg->n_backends; i++)
			for (size_t j = 0; j < ctl->n_support; j++)
				if (ctl->support[j].kind == cfg->backends[i])
					sorted[n++] = ctl->support[j];
		for (size_t j = 0; j < ctl->n_support; j++) {
			bool listed = false;

			for (size_t i = 0; i < cfg->n_backends; i++)
				listed |= ctl->support[j].kind == cfg->backends[i];
			if (!listed)
				sorted[n++] = ctl->support[j];
		}
		memcpy(ctl->support, sorted, n * sizeof(sorted[0]));
	}
}

static bool backend_allowed(const struct vcd_config *cfg, enum backend_kind kind)
{
	if (!cfg->n_backends)
		return true;
	for (size_t i = 0; i < cfg->n_backends; i++)
		if (cfg->backends[i] == kind)
			return true;
	return false;
}

static void get_host_status(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	struct vcd *vcd = userdata;
	struct control *ctl = vcd->control;
	Vcounter__V1__HostStatus hs = VCOUNTER__V1__HOST_STATUS__INIT;
	Vcounter__V1__SyncError sync_pb = VCOUNTER__V1__SYNC_ERROR__INIT;
	char sync_problem[256] = "";
	Vcounter__V1__BackendSupport bs[_BACKEND_KIND_MAX], *bsp[_BACKEND_KIND_MAX];
	char details[_BACKEND_KIND_MAX][sizeof(ctl->support[0].detail) + 64];
	char listen[300] = "";
	struct sync_error sync = { 0 };
	struct host_anchor anchor = { 0 };
	int r;

	for (size_t i = 0; i < ctl->n_support; i++) {
		const struct backend_support *b = &ctl->support[i];

		vcounter__v1__backend_support__init(&bs[i]);
		bs[i].backend = wire_backend_to_pb(b->kind);
		bs[i].allowed = backend_allowed(&vcd->config, b->kind);
		bs[i].kernel_support = b->kernel_support;
		bs[i].detail = (char *)b->detail;
		for (const struct vm_entry *vm = vm_registry_first(&vcd->vms); vm; vm = vm->next)
			bs[i].vm_count += vm->probed && vm->backend == b->kind;
		if (!b->from_device) {
			/* What the VMMs' probes found is this kernel's answer: a
			 * VM on kvm-syscounter also proves KVM_VCPU_TSC_OFFSET
			 * (its probe cross-checks it). */
			unsigned seen = 0;

			for (const struct vm_entry *vm = vm_registry_first(&vcd->vms); vm;
			     vm = vm->next)
				seen += vm->probed && (vm->backend == b->kind ||
						       (b->kind == BACKEND_KVM_X86 &&
							vm->backend == BACKEND_KVM_SYSCOUNTER));
			bs[i].kernel_support = seen > 0;
			snprintf(details[i], sizeof(details[i]), "%s; %s", b->detail,
				 seen ? "offered: VMs registered with it"
				      : "not seen in any registered VM's probe yet");
			bs[i].detail = details[i];
		}
		bsp[i] = &bs[i];
	}
	hs.n_backends = ctl->n_support;
	hs.backends = bsp;

	r = sync_source_read(vcd->sync, &sync, sync_problem, sizeof(sync_problem));
	if (r < 0 && r != -ENODATA) {
		grpc_call_finish(call, GRPC_STATUS_INTERNAL, "%s", sync_problem);
		return;
	}
	/* A sync source that does not answer: unbounded, and why. */
	if (r == -ENODATA) {
		sync.unsynced = true;
		hs.sync_problem = sync_problem;
	}
	wire_sync_error_to_pb(&sync, &sync_pb);
	hs.sync = &sync_pb;
	/* This host's share of a handoff's bound (counter_math.h): its
	 * maxerror and the width of an anchor taken now. */
	r = hostclock_bracket_anchor(ctl->vcd->host_tsc_khz, &anchor);
	if (sync.unsynced || r < 0 || sync.maxerror_ns > UINT64_MAX - anchor.width_ns)
		hs.error_bound_ns = UINT64_MAX;
	else
		hs.error_bound_ns = sync.maxerror_ns + anchor.width_ns;

	hs.version = (char *)VCOUNTER_VERSION;
	hs.host_name = (char *)vcd->config.host_name;
	hs.vm_count = (uint32_t)vm_registry_count(&vcd->vms);
	hs.migrations_running = (uint32_t)migrations_running(vcd);
	hs.migrations_kept = (uint32_t)migration_count(vcd);
	if (vcd->config.listen_addr)
		snprintf(listen, sizeof(listen), "%s (port %d)", vcd->config.listen_addr,
			 migrations_listen_port(vcd));
	hs.peer_listen_address = listen;
	hs.uptime_ns = clock_ns(CLOCK_MONOTONIC) - vcd->started_ns;
	hs.host_tsc_khz = ctl->vcd->host_tsc_khz;
	hs.watchers = (uint32_t)ctl->n_watchers;
	send_one(call, &hs.base);
}

static void reply_migration(struct grpc_call *call, const struct migration_view *v)
{
	_cleanup_free_ struct migration_pb *pb = calloc(1, sizeof(*pb));

	if (!pb) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	migration_to_pb(v, clock_ns(CLOCK_MONOTONIC), pb);
	send_one(call, &pb->m.base);
}

static void start_migration(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	const Vcounter__V1__StartMigrationRequest *req =
		(const Vcounter__V1__StartMigrationRequest *)request;
	struct vcd *vcd = userdata;
	struct migration_view view;
	char err[512];
	int r;

	r = migration_start(vcd, req->vm_id, req->peer_address, req->peer_name, &view, err,
			    sizeof(err));
	if (r < 0) {
		log_info("control %s: StartMigration vm=%s refused: %s",
			 grpc_call_caller(call)->identity, req->vm_id, err);
		grpc_call_finish(call, status_from_errno(r), "%s", err);
		return;
	}
	log_info("vm=%s migration=%s: started by controller %s", view.s->vm_id,
		 view.s->migration_id, grpc_call_caller(call)->identity);
	reply_migration(call, &view);
}

static void get_migration(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	const Vcounter__V1__GetMigrationRequest *req =
		(const Vcounter__V1__GetMigrationRequest *)request;
	struct migration_view view;

	if (!migration_id_is_valid(req->migration_id)) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
				 "migration_id must be %d lower-case hex digits",
				 VC_MIGRATION_ID_LEN);
		return;
	}
	if (migration_get_view(userdata, req->migration_id, &view) < 0) {
		grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "no migration %s on this daemon",
				 req->migration_id);
		return;
	}
	reply_migration(call, &view);
}

struct list_ctx {
	const Vcounter__V1__ListMigrationsRequest *req;
	struct migration_pb *pbs;
	Vcounter__V1__Migration **ptrs;
	size_t n, size;
	uint64_t now;
};

static void list_one(const struct migration_view *v, void *userdata)
{
	struct list_ctx *c = userdata;

	if (c->n >= c->size)
		return;
	if (c->req->vm_id && *c->req->vm_id && strcmp(c->req->vm_id, v->s->vm_id) != 0)
		return;
	if (c->req->running_only && migration_step_is_terminal(v->s->step))
		return;
	migration_to_pb(v, c->now, &c->pbs[c->n]);
	c->ptrs[c->n] = &c->pbs[c->n].m;
	c->n++;
}

static void list_migrations(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	struct vcd *vcd = userdata;
	struct list_ctx c = {
		.req = (const Vcounter__V1__ListMigrationsRequest *)request,
		.size = migration_count(vcd),
		.now = clock_ns(CLOCK_MONOTONIC),
	};
	Vcounter__V1__ListMigrationsReply reply = VCOUNTER__V1__LIST_MIGRATIONS_REPLY__INIT;

	if (!id_arg_ok(c.req->vm_id, vm_id_is_valid)) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "invalid vm_id");
		return;
	}
	c.pbs = calloc(c.size ? c.size : 1, sizeof(*c.pbs));
	c.ptrs = calloc(c.size ? c.size : 1, sizeof(*c.ptrs));
	if (!c.pbs || !c.ptrs) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	} else {
		migrations_foreach(vcd, list_one, &c);
		reply.n_migrations = c.n;
		reply.migrations = c.ptrs;
		send_one(call, &reply.base);
	}
	free(c.pbs);
	free(c.ptrs);
}

static void abort_migration(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	const Vcounter__V1__AbortMigrationRequest *req =
		(const Vcounter__V1__AbortMigrationRequest *)request;
	const struct grpc_caller *who = grpc_call_caller(call);
	struct migration_view view;
	/* session_abort() keeps the first SESSION_REASON_MAX bytes. */
	char reason[GRPC_IDENTITY_MAX + SESSION_REASON_MAX + 16];
	int r;

	if (!migration_id_is_valid(req->migration_id)) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
				 "migration_id must be %d lower-case hex digits",
				 VC_MIGRATION_ID_LEN);
		return;
	}
	snprintf(reason, sizeof(reason), "aborted by %s%s%s", who->identity,
		 req->reason && *req->reason ? ": " : "", req->reason ? req->reason : "");
	r = migration_abort(userdata, req->migration_id, reason, &view);
	switch (r) {
	case 0:
	case 1:
		reply_migration(call, &view);
		return;
	case -ENOENT:
		grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "no migration %s on this daemon",
				 req->migration_id);
		return;
	case -EALREADY:
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
				 "migration %s is %s: the target applied, the counter it wrote "
				 "stays written",
				 req->migration_id, migration_step_to_string(view.s->step));
		return;
	case -ECANCELED:
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
				 "migration %s already failed: %s", req->migration_id,
				 view.s->reason);
		return;
	case -EINPROGRESS:
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
				 "migration %s: this host sent its final state, and whether the "
				 "target applied it is for the target to say: abort it on %s, "
				 "which aborts it here too if it had not applied",
				 req->migration_id, view.s->peer_identity);
		return;
	default:
		grpc_call_finish(call, status_from_errno(r), "cannot abort: %s", strerror(-r));
		return;
	}
}

/* ---- WatchEvents ---- */

static void watcher_remove(struct watcher *w)
{
	struct control *ctl = w->ctl;

	for (struct watcher **p = &ctl->watchers; *p; p = &(*p)->next) {
		if (*p == w) {
			*p = w->next;
			ctl->n_watchers--;
			break;
		}
	}
	free(w);
}

static void watcher_cancelled(struct grpc_call *call, void *userdata)
{
	struct watcher *w = userdata;

	log_debug("control %s: watch ended by the client, its deadline or the transport", w->who);
	watcher_remove(w);
}

static void watch_events(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	const Vcounter__V1__WatchEventsRequest *req =
		(const Vcounter__V1__WatchEventsRequest *)request;
	struct vcd *vcd = userdata;
	struct control *ctl = vcd->control;
	struct watcher *w;

	if (!id_arg_ok(req->vm_id, vm_id_is_valid) ||
	    !id_arg_ok(req->migration_id, migration_id_is_valid)) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
				 "invalid vm_id or migration_id filter");
		return;
	}
	if (ctl->n_watchers >= vcd->config.max_watchers) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				 "too many watchers (limit %" PRIu32 ", max-watchers)",
				 vcd->config.max_watchers);
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	w->ctl = ctl;
	w->call = call;
	snprintf(w->vm_id, sizeof(w->vm_id), "%s", req->vm_id ? req->vm_id : "");
	snprintf(w->migration_id, sizeof(w->migration_id), "%s",
		 req->migration_id ? req->migration_id : "");
	snprintf(w->who, sizeof(w->who), "%s", grpc_call_caller(call)->identity);
	w->next = ctl->watchers;
	ctl->watchers = w;
	ctl->n_watchers++;
	grpc_call_on_cancel(call, watcher_cancelled, w);
	log_debug("control %s: watching vm=%s migration=%s", w->who, *w->vm_id ? w->vm_id : "*",
		  *w->migration_id ? w->migration_id : "*");
}

static void publish(struct control *ctl, Vcounter__V1__Event *ev, const char *vm_id,
		    const char *migration_id)
{
	struct watcher *w, *next;

	ev->seq = ++ctl->seq;
	ev->realtime_ns = clock_ns(CLOCK_REALTIME);
	for (w = ctl->watchers; w; w = next) {
		char who[sizeof(w->who)];
		int r;

		next = w->next;
		if (*w->vm_id && strcmp(w->vm_id, vm_id) != 0)
			continue;
		if (*w->migration_id && (!migration_id || strcmp(w->migration_id, migration_id)))
			continue;
		/* -ENOBUFS: it stopped reading; the transport reset its
		 * stream and watcher_cancelled() freed w. */
		memcpy(who, w->who, sizeof(who));
		r = grpc_call_send(w->call, &ev->base);
		if (r == -ENOBUFS)
			log_warning("control: watcher %s dropped at event %" PRIu64
				    ": it does not read its events",
				    who, ev->seq);
		else if (r < 0)
			log_warning("control: event %" PRIu64 " not sent to %s: %s", ev->seq, who,
				    strerror(-r));
	}
}

void control_on_vm(void *userdata, enum vm_event event, struct vm_entry *vm)
{
	struct vcd *vcd = userdata;
	Vcounter__V1__Event ev = VCOUNTER__V1__EVENT__INIT;
	bool registered = event == VM_EVENT_REGISTERED;
	Vcounter__V1__Vm vm_pb;

	if (!vcd->control || (event != VM_EVENT_REGISTERED && event != VM_EVENT_UNREGISTERED))
		return;
	vm_to_pb(vm, &vm_pb);
	ev.kind = registered ? VCOUNTER__V1__EVENT_KIND__EVENT_KIND_VM_REGISTERED
			     : VCOUNTER__V1__EVENT_KIND__EVENT_KIND_VM_UNREGISTERED;
	ev.vm = &vm_pb;
	publish(vcd->control, &ev, vm->vm_id, NULL);
}

void control_on_migration(void *userdata, const struct migration_event *mev)
{
	struct vcd *vcd = userdata;
	const struct migration_view *view = &mev->view;
	Vcounter__V1__Event ev = VCOUNTER__V1__EVENT__INIT;
	_cleanup_free_ struct migration_pb *pb = NULL;

	if (!vcd->control || !vcd->control->watchers)
		return;
	pb = calloc(1, sizeof(*pb));
	if (!pb) {
		log_warning("control: out of memory, migration event not sent");
		return;
	}
	migration_to_pb(view, clock_ns(CLOCK_MONOTONIC), pb);
	ev.kind = migration_step_is_terminal(view->s->step)
			  ? VCOUNTER__V1__EVENT_KIND__EVENT_KIND_MIGRATION_OUTCOME
			  : VCOUNTER__V1__EVENT_KIND__EVENT_KIND_MIGRATION_STEP;
	ev.migration = &pb->m;
	publish(vcd->control, &ev, view->s->vm_id, view->s->migration_id);
}

/* ---- the service ---- */

static const struct grpc_method methods[] = {
	{ CONTROL_PATH("ListVms"), &vcounter__v1__list_vms_request__descriptor, false,
	  GRPC_ROLE_READER, list_vms },
	{ CONTROL_PATH("GetHostStatus"), &vcounter__v1__get_host_status_request__descriptor, false,
	  GRPC_ROLE_READER, get_host_status },
	{ CONTROL_PATH("StartMigration"), &vcounter__v1__start_migration_request__descriptor, false,
	  GRPC_ROLE_OPERATOR, start_migration },
	{ CONTROL_PATH("GetMigration"), &vcounter__v1__get_migration_request__descriptor, false,
	  GRPC_ROLE_READER, get_migration },
	{ CONTROL_PATH("ListMigrations"), &vcounter__v1__list_migrations_request__descriptor, false,
	  GRPC_ROLE_READER, list_migrations },
	{ CONTROL_PATH("AbortMigration"), &vcounter__v1__abort_migration_request__descriptor, false,
	  GRPC_ROLE_OPERATOR, abort_migration },
	{ CONTROL_PATH("WatchEvents"), &vcounter__v1__watch_events_request__descriptor, true,
	  GRPC_ROLE_READER, watch_events },
};

int control_tls_new(const struct vcd_config *cfg, SSL_CTX **ret, char *err, size_t err_size)
{
	/* The fleet CA and this host's certificate, but the controllers'
	 * names on the allow-list: the handshake refuses anyone else. */
	const char *names[2 * GRPC_MAX_IDENTITIES];
	struct tls_config t = cfg->tls;
	size_t n = 0;

	if (cfg->n_control_operators > GRPC_MAX_IDENTITIES ||
	    cfg->n_control_readers > GRPC_MAX_IDENTITIES) {
		snprintf(err, err_size, "more than %d control operators or readers",
			 GRPC_MAX_IDENTITIES);
		return -E2BIG;
	}
	for (size_t i = 0; i < cfg->n_control_operators; i++)
		names[n++] = cfg->control_operators[i];
	for (size_t i = 0; i < cfg->n_control_readers; i++)
		names[n++] = cfg->control_readers[i];
	t.allowed_peers = names;
	t.n_allowed_peers = n;
	return tls_ctx_new(&t, true, ret, err, err_size);
}

/* The role lists of cfg, as grpc_server_config carries them. */
static void roles_of(const struct vcd_config *cfg, struct grpc_server_config *gc)
{
	gc->operator_uids = cfg->control_operator_uids;
	gc->n_operator_uids = cfg->n_control_operator_uids;
	gc->reader_uids = cfg->control_reader_uids;
	gc->n_reader_uids = cfg->n_control_reader_uids;
	gc->operator_gids = cfg->control_operator_gids;
	gc->n_operator_gids = cfg->n_control_operator_gids;
	gc->reader_gids = cfg->control_reader_gids;
	gc->n_reader_gids = cfg->n_control_reader_gids;
	gc->operator_names = cfg->control_operators;
	gc->n_operator_names = cfg->n_control_operators;
	gc->reader_names = cfg->control_readers;
	gc->n_reader_names = cfg->n_control_readers;
}

int control_reconfigure(struct vcd *vcd, const struct vcd_config *cfg, SSL_CTX *tls, char *err,
			size_t err_size)
{
	struct grpc_server_config gc = { .listen_unix_fd = -1 };
	int r;

	if (!vcd->control || !vcd->control->server)
		return 0;
	roles_of(cfg, &gc);
	r = grpc_server_set_roles(vcd->control->server, &gc, err, err_size);
	if (r < 0)
		return r;
	grpc_server_set_tls(vcd->control->server, tls);
	return 0;
}

int control_start(struct vcd *vcd, int listen_unix_fd)
{
	const struct vcd_config *cfg = &vcd->config;
	struct grpc_server_config gc = {
		.listen_unix_fd = listen_unix_fd,
		.unix_path = cfg->control_socket,
		.tcp_addr = cfg->control_listen,
	};
	struct control *ctl;
	SSL_CTX *tls = NULL;
	char err[512];
	int r;

	if (listen_unix_fd < 0 && !cfg->control_socket && !cfg->control_listen)
		return 0;
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->vcd = vcd;
	backend_support_probe(ctl);
	vcd->control = ctl;
	roles_of(cfg, &gc);

	if (cfg->control_listen) {
		r = control_tls_new(cfg, &tls, err, sizeof(err));
		if (r < 0) {
			log_error_errno(r, "control API TLS context: %s", err);
			control_stop(vcd);
			return r;
		}
		gc.tls = tls;
	}
	r = grpc_server_new(vcd->base, &gc, methods, ELEMENTSOF(methods), vcd, &ctl->server, err,
			    sizeof(err));
	tls = ssl_ctx_unref(tls); /* the server holds its own reference */
	if (r < 0) {
		log_error_errno(r, "control API: %s", err);
		control_stop(vcd);
		return r;
	}
	log_info("control API: unix socket %s, TCP %s",
		 cfg->control_socket   ? cfg->control_socket
		 : listen_unix_fd >= 0 ? "(socket activation)"
				       : "off",
		 cfg->control_listen ? cfg->control_listen : "off");
	return 0;
}

int control_tcp_port(struct vcd *vcd)
{
	return vcd->control && vcd->control->server ? grpc_server_tcp_port(vcd->control->server)
						    : -ENOTCONN;
}

size_t control_watcher_count(struct vcd *vcd)
{
	return vcd->control ? vcd->control->n_watchers : 0;
}

void control_stop(struct vcd *vcd)
{
	struct control *ctl = vcd->control;

	if (!ctl)
		return;
	/* Ends every watch: their cancel callbacks free the watchers. */
	ctl->server = grpc_server_free(ctl->server);
	while (ctl->watchers)
		watcher_remove(ctl->watchers);
	free(ctl);
	vcd->control = NULL;
}
