/* migration.c - migrations end to end (DESIGN.md section 3): the VMM's
 * requests, the peer link's messages, and the KVM ops they need, driven by
 * the pure state machine in session.c. The source never writes to its VM. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>

#include "cleanup.h"
#include "clockns.h"
#include "counter_math.h"
#include "failpoint.h"
#include "frame.h"
#include "hostclock.h"
#include "journal.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "migration.h"
#include "peer_link.h"
#include "sync_source.h"
#include "vcd.h"
#include "wire.h"

/* A source whose link broke after the final state was delivered replays it
 * on a new link (the target may have restarted and must see it again
 * before it applies): this many times, this far apart. */
#define REPLAY_MAX_ATTEMPTS 10
#define REPLAY_INTERVAL_MS  500

struct migration {
	struct migration *next;
	struct vcd *vcd;
	struct session s;
	uint64_t link_id;
	/* The VMM request this migration still owes an answer to. */
	uint64_t vmm_conn_id;
	uint64_t vmm_request_id;
	uint64_t peer_request_id; /* target: id of the message to answer */
	struct event *timer;	  /* peer reply deadline */
	uint64_t apply_started_ns;
	/* Target: the APPLY op handed to the VMM for the current final state. */
	uint64_t apply_op_id;
	uint64_t apply_op_conn_id;
	int64_t planned_delta_cycles;
	uint64_t planned_error_bound_ns;
	char peer_address[256]; /* source: where the target daemon listens */
	bool by_controller;
	bool metrics_counted; /* its outcome is in vcounterd_migrations_total */
	/* Session journal: what the file on disk says now. */
	uint64_t journal_seq;
	enum migration_step journaled_step;
	uint64_t journaled_generation;
	bool recovered;	      /* loaded from the journal at start-up */
	struct event *replay; /* source: replay the final state on a new link */
	unsigned replay_attempts;
};

struct migrations {
	struct peer_links links; /* the peer link's transport (peer_link.h) */
	struct migration *list;
	size_t n;
	struct {
		migration_observer_fn fn;
		void *userdata;
	} observers[MIGRATIONS_MAX_OBSERVERS];
	size_t n_observers;
};

static const struct peer_link_handlers link_handlers;

/* ---- helpers ---- */

/* NULL also once the migrations stopped: the VMM socket stops after them
 * (manager.c), and a KVM op it still held ends then, its callback asking
 * for a migration that is gone. */
static struct migration *migration_find(struct vcd *vcd, const char *migration_id)
{
	if (!migration_id || !vcd->migrations)
		return NULL;
	for (struct migration *m = vcd->migrations->list; m; m = m->next)
		if (strcmp(m->s.migration_id, migration_id) == 0)
			return m;
	return NULL;
}

static struct peer_link *link_find(struct vcd *vcd, uint64_t link_id)
{
	return vcd->migrations ? peer_link_find(&vcd->migrations->links, link_id) : NULL;
}

size_t migration_count(struct vcd *vcd)
{
	return vcd->migrations ? vcd->migrations->n : 0;
}

static int new_migration_id(char ret[VC_MIGRATION_ID_LEN + 1])
{
	uint8_t raw[VC_MIGRATION_ID_LEN / 2];
	ssize_t n = getrandom(raw, sizeof(raw), 0);

	if (n != (ssize_t)sizeof(raw))
		return n < 0 ? -errno : -EIO;
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(ret + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

static void format_offsets(char *buf, size_t size, const uint64_t *offsets, uint32_t n)
{
	size_t used = 0;

	buf[0] = '\0';
	for (uint32_t i = 0; i < n && i < 8 && used < size; i++)
		used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64, i ? "," : "",
					 (int64_t)offsets[i]);
	if (n > 8 && used < size)
		snprintf(buf + used, size - used, ",...(%u vCPUs)", n);
}

static void migration_free(struct vcd *vcd, struct migration *m)
{
	for (struct migration **p = &vcd->migrations->list; *p; p = &(*p)->next) {
		if (*p == m) {
			*p = m->next;
			vcd->migrations->n--;
			break;
		}
	}
	m->timer = event_unref(m->timer);
	m->replay = event_unref(m->replay);
	free(m);
}

static void migration_timeout_cb(evutil_socket_t fd, short what, void *arg);

/* Room for one more: evict the oldest finished migration when full. */
static int migration_new(struct vcd *vcd, struct migration **ret)
{
	struct migrations *ms = vcd->migrations;
	struct migration *m, *oldest = NULL;

	if (ms->n >= vcd->config.max_migrations) {
		for (m = ms->list; m; m = m->next)
			if (migration_step_is_terminal(m->s.step) &&
			    (!oldest || m->s.updated_ns < oldest->s.updated_ns))
				oldest = m;
		if (!oldest)
			return -ENOSPC;
		if (vcd->journal)
			(void)journal_remove(vcd->journal, oldest->s.migration_id);
		migration_free(vcd, oldest);
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->vcd = vcd;
	m->timer = evtimer_new(vcd->base, migration_timeout_cb, m);
	if (!m->timer) {
		free(m);
		return -ENOMEM;
	}
	m->next = ms->list;
	ms->list = m;
	ms->n++;
	*ret = m;
	return 0;
}

static void migration_arm_timer(struct vcd *vcd, struct migration *m)
{
	struct timeval tv = {
		.tv_sec = vcd->config.peer_timeout_ms / 1000,
		.tv_usec = (vcd->config.peer_timeout_ms % 1000) * 1000,
	};

	evtimer_add(m->timer, &tv);
}

/* Answer the VMM request this migration owes, with an error. */
static void migration_reply_vmm_error(struct vcd *vcd, struct migration *m, int error,
				      const char *text)
{
	if (!m->vmm_request_id)
		return;
	vmm_reply_error(vcd, m->vmm_conn_id, m->vmm_request_id, error, "%s", text);
	m->vmm_request_id = 0;
}

static void send_abort(struct vcd *vcd, struct migration *m, const char *reason);

/* A target migration that ends without applying voids the op it sent ahead. */
static void withdraw_apply_op(struct vcd *vcd, struct migration *m)
{
	uint64_t op_id = m->apply_op_id;

	if (!op_id)
		return;
	m->apply_op_id = 0;
	vmm_kvm_op_cancel(vcd, m->apply_op_conn_id, op_id);
}

static void view_of(const struct migration *m, struct migration_view *ret)
{
	*ret = (struct migration_view){
		.s = &m->s,
		.peer_address = m->peer_address,
		.by_controller = m->by_controller,
		.planned_delta_cycles = m->planned_delta_cycles,
		.planned_error_bound_ns = m->planned_error_bound_ns,
		.recovered = m->recovered,
		.awaiting_source = m->s.awaiting_source,
	};
}

/* Write m's current step to the session journal, before that step takes
 * effect (a message sent, a reply given, an apply started): 0, or -errno
 * (logged) when it could not be made durable. The fail point
 * crash/<role>/<step> fires right after a successful write. */
static int migration_record(struct vcd *vcd, struct migration *m)
{
	_cleanup_free_ struct journal_entry *e = NULL;
	char tag[64];
	int r;

	if (!vcd->journal)
		return 0;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->sequence = m->journal_seq + 1;
	e->s = m->s;
	snprintf(e->peer_address, sizeof(e->peer_address), "%s", m->peer_address);
	e->by_controller = m->by_controller;
	e->planned_delta_cycles = m->planned_delta_cycles;
	e->planned_error_bound_ns = m->planned_error_bound_ns;
	e->realtime_ns = clock_ns(CLOCK_REALTIME);
	e->awaiting_source = m->s.awaiting_source;
	snprintf(tag, sizeof(tag), "%s/%s", vm_role_to_string(m->s.role),
		 migration_step_to_string(m->s.step));
	r = journal_write(vcd->journal, e, tag);
	if (r < 0) {
		log_error_errno(r,
				"vm=%s migration=%s role=%s: cannot record step %s in the session "
				"journal %s",
				m->s.vm_id, m->s.migration_id, vm_role_to_string(m->s.role),
				migration_step_to_string(m->s.step), journal_dir(vcd->journal));
		metrics_journal_write_failed(&vcd_metrics);
		return r;
	}
	m->journal_seq = e->sequence;
	m->journaled_step = m->s.step;
	m->journaled_generation = m->s.generation;
	failpoint_crash(tag);
	return 0;
}

/* Every step a migration takes is told to the control API's watchers and to
 * the VMM that registered the VM here (MigrationNotice): a migration a
 * controller started or aborted is how that VMM learns to do its part. */
/* Steps whose effect cannot wait are recorded (migration_record) before it
 * takes effect; the rest (an abort, a failure, an ack) are recorded after,
 * here, best effort: nothing waits on them. A target's applying is not
 * recorded (migration_handle_apply). A no-op when the step is recorded. */
static void migration_record_after(struct vcd *vcd, struct migration *m)
{
	if ((m->journaled_step != m->s.step || m->journaled_generation != m->s.generation) &&
	    !(m->s.role == VM_ROLE_TARGET && m->s.step == STEP_APPLYING))
		(void)migration_record(vcd, m);
}

/* Tell the observers (control's watchers, the metrics, the VMM) of m's
 * change. */
static void migration_changed(struct vcd *vcd, struct migration *m)
{
	struct migrations *ms = vcd->migrations;
	struct migration_event ev = { .outcome_counted = &m->metrics_counted };

	view_of(m, &ev.view);
	for (size_t i = 0; i < ms->n_observers; i++)
		ms->observers[i].fn(ms->observers[i].userdata, &ev);
}

static void migration_fail(struct vcd *vcd, struct migration *m, int error, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void migration_fail(struct vcd *vcd, struct migration *m, int error, const char *fmt, ...)
{
	char reason[SESSION_REASON_MAX + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	evtimer_del(m->timer);
	withdraw_apply_op(vcd, m);
	if (!migration_step_is_terminal(m->s.step)) {
		session_fail(&m->s, reason, clock_ns(CLOCK_MONOTONIC));
		errno = error < 0 ? -error : error;
		log_error("vm=%s migration=%s role=%s step=failed: %s", m->s.vm_id,
			  m->s.migration_id, vm_role_to_string(m->s.role), reason);
		migration_record_after(vcd, m);
		migration_changed(vcd, m);
	}
	migration_reply_vmm_error(vcd, m, error, reason);
}

/* The journal could not record m's step (migration_record said why): the
 * step must not take effect. The peer is told, so it does not wait. */
static void journal_failed(struct vcd *vcd, struct migration *m, int error)
{
	char step[32];

	snprintf(step, sizeof(step), "%s", migration_step_to_string(m->s.step));
	send_abort(vcd, m, "the peer's session journal failed");
	migration_fail(vcd, m, error, "cannot record step %s in the session journal: %s", step,
		       strerror(error < 0 ? -error : error));
}

/* ---- source side ---- */

struct op_ctx {
	char migration_id[VC_MIGRATION_ID_LEN + 1];
	uint64_t op_id;
};

static struct op_ctx *op_ctx_new(const struct migration *m)
{
	struct op_ctx *ctx = calloc(1, sizeof(*ctx));

	if (ctx)
		memcpy(ctx->migration_id, m->s.migration_id, sizeof(ctx->migration_id));
	return ctx;
}

static void send_prepare(struct vcd *vcd, struct migration *m, struct peer_link *link)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Prepare prep = VCOUNTER__V1__PREPARE__INIT;
	struct wire_counter_state_pb state_pb;
	int r;

	wire_counter_state_to_pb(&m->s.prepared, &state_pb);
	prep.migration_id = m->s.migration_id;
	prep.vm_id = m->s.vm_id;
	prep.state = &state_pb.state;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE;
	msg.prepare = &prep;
	r = peer_link_request(link, m->s.migration_id, &msg);
	if (r < 0) {
		migration_fail(vcd, m, r, "cannot send Prepare to %s: %s", link->address,
			       strerror(-r));
		return;
	}
	migration_arm_timer(vcd, m);
}

/* Prepare needs no KVM op: the guest is running and its vCPUs' mutexes are
 * held by KVM_RUN. The offsets read at registration and a fresh anchor let
 * the target validate and pre-compute; the final state, read after the
 * pause, is what is applied. */
static int source_prepare_state(struct vcd *vcd, const struct vm_entry *vm,
				struct counter_state *ret, char *err, size_t err_size)
{
	int r;

	snprintf(err, err_size, "cannot take the source anchor");
	if (!vm->registered_state)
		return -ENODATA;
	*ret = *vm->registered_state;
	r = sync_source_read(vcd->sync, &ret->sync, err, err_size);
	if (r < 0)
		return r;
	return hostclock_bracket_anchor(vm->registered_state->anchor.host_tsc_khz, &ret->anchor);
}

/* After the pause a migration is not failed for its error estimate: a sync
 * source that stopped answering since prepare leaves the bound unknown. */
static void sync_or_unknown(struct vcd *vcd, const struct migration *m, const char *role,
			    struct sync_error *sync)
{
	char err[256];

	if (sync_source_apply(vcd->sync, clock_ns(CLOCK_MONOTONIC), sync, err, sizeof(err)) == 0)
		return;
	sync->unsynced = true;
	log_warning("vm=%s migration=%s role=%s: %s; the error bound is unknown", m->s.vm_id,
		    m->s.migration_id, role, err);
}

/* Start a source migration of vm to the daemon at peer_address: the
 * checks, the session, Prepare. The VMM request (conn_id, request_id; 0 for
 * a controller) is answered when PrepareAck arrives. -errno with a
 * sentence in err when nothing was started; after *ret is set, failures
 * are the migration's own (migration_fail). */
static int source_start(struct vcd *vcd, struct vm_entry *vm, const char *peer_address,
			const char *peer_name, uint64_t conn_id, uint64_t request_id,
			struct migration **ret, char *err, size_t err_size)
{
	struct peer_link *link = NULL;
	struct migration *m;
	_cleanup_free_ struct counter_state *state = NULL;
	char id[VC_MIGRATION_ID_LEN + 1], why[256];
	struct sync_error sync = { 0 };
	int r;

	if (vm->role != VM_ROLE_SOURCE && !vm->arrived) {
		snprintf(err, err_size, "VM %s was registered as a migration target", vm->vm_id);
		return -EADDRNOTAVAIL;
	}
	if (!vm->probed) {
		snprintf(err, err_size, "VM %s: registration is not finished", vm->vm_id);
		return -EAGAIN;
	}
	/* Recovered from the fd store: KVM ops run in the VMM (vcd.h). */
	if (vm->conn_id == 0) {
		snprintf(err, err_size,
			 "VM %s: its VMM has not reattached since vcounterd restarted", vm->vm_id);
		return -ENOTCONN;
	}
	/* Nothing to read the counter with (e.g. --backends excludes what
	 * this KVM has): say so now, not as a failed read later. */
	if (vm->backend == BACKEND_NONE) {
		snprintf(err, err_size, "source VM %s: %s", vm->vm_id, vm->probe_detail);
		return -EOPNOTSUPP;
	}
	if (!peer_address || !*peer_address || !peer_name || !*peer_name ||
	    strlen(peer_name) > TLS_PEER_NAME_MAX ||
	    strlen(peer_address) >= sizeof(m->peer_address)) {
		snprintf(err, err_size, "peer_address and peer_name are required");
		return -EINVAL;
	}
	/* A sync source that cannot answer refuses before anything starts. */
	r = sync_source_apply(vcd->sync, clock_ns(CLOCK_MONOTONIC), &sync, err, err_size);
	if (r < 0)
		return r;
	for (m = vcd->migrations->list; m; m = m->next)
		if (m->s.role == VM_ROLE_SOURCE && strcmp(m->s.vm_id, vm->vm_id) == 0 &&
		    !migration_step_is_terminal(m->s.step)) {
			snprintf(err, err_size, "VM %s already has migration %s running", vm->vm_id,
				 m->s.migration_id);
			return -EBUSY;
		}

	r = new_migration_id(id);
	if (r < 0) {
		snprintf(err, err_size, "cannot draw a migration id");
		return r;
	}
	r = peer_link_get_outgoing(&vcd->migrations->links, peer_address, peer_name, &link);
	if (r == -ENOKEY) {
		snprintf(err, err_size, "no TLS client certificate configured (--cert/--key/--ca)");
		return r;
	}
	if (r < 0) {
		snprintf(err, err_size, "cannot connect to %s: %s", peer_address, strerror(-r));
		return r;
	}
	r = migration_new(vcd, &m);
	if (r < 0) {
		snprintf(err, err_size, "too many migrations running (limit %d)",
			 (int)vcd->config.max_migrations);
		return r;
	}
	r = session_init(&m->s, VM_ROLE_SOURCE, id, vm->vm_id, peer_name,
			 clock_ns(CLOCK_MONOTONIC));
	if (r < 0) {
		migration_free(vcd, m);
		snprintf(err, err_size, "invalid migration parameters");
		return r;
	}
	snprintf(m->peer_address, sizeof(m->peer_address), "%s", peer_address);
	m->link_id = link->id;
	m->vmm_conn_id = conn_id;
	m->vmm_request_id = request_id;
	m->by_controller = request_id == 0;
	*ret = m;
	state = calloc(1, sizeof(*state));
	if (!state) {
		migration_fail(vcd, m, -ENOMEM, "out of memory");
		return 0;
	}
	r = source_prepare_state(vcd, vm, state, why, sizeof(why));
	if (r < 0) {
		migration_fail(vcd, m, r, "%s", why);
		return 0;
	}
	r = session_source_prepare_sent(&m->s, state, clock_ns(CLOCK_MONOTONIC));
	if (r < 0) {
		migration_fail(vcd, m, r, "state machine refused prepare");
		return 0;
	}
	r = migration_record(vcd, m);
	if (r < 0) {
		journal_failed(vcd, m, r);
		return 0;
	}
	log_info("vm=%s migration=%s role=source step=prepare: peer=%s backend=%s "
		 "guest_tsc_khz=%u anchor=%s by=%s",
		 m->s.vm_id, m->s.migration_id, m->s.peer_identity,
		 backend_kind_to_string(state->backend), state->guest_tsc_khz,
		 anchor_source_to_string(state->anchor.source),
		 m->by_controller ? "controller" : "vmm");
	migration_changed(vcd, m);
	send_prepare(vcd, m, link);
	return 0;
}

static void migration_handle_migrate_out(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
					 const char *vm_id, const char *peer_address,
					 const char *peer_name)
{
	struct vm_entry *vm = vm_id ? vm_registry_find(&vcd->vms, vm_id) : NULL;
	struct migration *m;
	char err[512];
	int r;

	if (!vm) {
		vmm_reply_error(vcd, conn_id, request_id, -ENOENT, "no such VM registered");
		return;
	}
	if (vm->conn_id != conn_id) {
		vmm_reply_error(vcd, conn_id, request_id, -EPERM,
				"VM was registered by another connection");
		return;
	}
	r = source_start(vcd, vm, peer_address, peer_name, conn_id, request_id, &m, err,
			 sizeof(err));
	if (r < 0)
		vmm_reply_error(vcd, conn_id, request_id, r == -EADDRNOTAVAIL ? -EINVAL : r, "%s",
				err);
}

int migration_start(struct vcd *vcd, const char *vm_id, const char *peer_address,
		    const char *peer_name, struct migration_view *ret, char *err, size_t err_size)
{
	struct vm_entry *vm;
	struct migration *m;
	int r;

	if (!vm_id || !vm_id_is_valid(vm_id)) {
		snprintf(err, err_size, "vm_id must be 1..%d of [A-Za-z0-9._:-]", VC_VM_ID_MAX);
		return -EINVAL;
	}
	vm = vm_registry_find(&vcd->vms, vm_id);
	if (!vm) {
		snprintf(err, err_size, "no VM %s registered on %s", vm_id, vcd->config.host_name);
		return -ENOENT;
	}
	r = source_start(vcd, vm, peer_address, peer_name, 0, 0, &m, err, err_size);
	if (r < 0)
		return r;
	view_of(m, ret);
	return 0;
}

int migration_abort(struct vcd *vcd, const char *migration_id, const char *reason,
		    struct migration_view *ret)
{
	struct migration *m = migration_find(vcd, migration_id);
	int r;

	if (!m)
		return -ENOENT;
	r = session_abort_by_controller(&m->s, reason, clock_ns(CLOCK_MONOTONIC));
	view_of(m, ret);
	if (r != 0)
		return r; /* 1: already aborted; -EALREADY applied; -ECANCELED failed;
			   * -EINPROGRESS: the target decides */
	evtimer_del(m->timer);
	withdraw_apply_op(vcd, m);
	log_info("vm=%s migration=%s role=%s step=aborted: by a controller: %s", m->s.vm_id,
		 m->s.migration_id, vm_role_to_string(m->s.role), reason);
	send_abort(vcd, m, reason);
	migration_reply_vmm_error(vcd, m, -ECANCELED, "migration aborted by a controller");
	migration_record_after(vcd, m);
	migration_changed(vcd, m);
	return 0;
}

int migration_get_view(struct vcd *vcd, const char *migration_id, struct migration_view *ret)
{
	struct migration *m = migration_find(vcd, migration_id);

	if (!m)
		return -ENOENT;
	view_of(m, ret);
	return 0;
}

void migrations_foreach(struct vcd *vcd,
			void (*cb)(const struct migration_view *view, void *userdata),
			void *userdata)
{
	struct migration_view view;

	for (struct migration *m = vcd->migrations ? vcd->migrations->list : NULL; m; m = m->next) {
		view_of(m, &view);
		cb(&view, userdata);
	}
}

size_t migrations_running(struct vcd *vcd)
{
	size_t n = 0;

	for (struct migration *m = vcd->migrations ? vcd->migrations->list : NULL; m; m = m->next)
		n += !migration_step_is_terminal(m->s.step);
	return n;
}

void migrations_link_counts(struct vcd *vcd, size_t *ret_established, size_t *ret_connecting)
{
	*ret_established = *ret_connecting = 0;
	if (vcd->migrations)
		peer_links_count(&vcd->migrations->links, ret_established, ret_connecting);
}

static int send_final(struct migration *m, struct peer_link *link)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__FinalState fin = VCOUNTER__V1__FINAL_STATE__INIT;
	struct wire_counter_state_pb state_pb;

	wire_counter_state_to_pb(&m->s.final, &state_pb);
	fin.migration_id = m->s.migration_id;
	fin.generation = m->s.generation;
	fin.state = &state_pb.state;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE;
	msg.final_state = &fin;
	return peer_link_request(link, m->s.migration_id, &msg);
}

static void source_final_read(struct vcd *vcd, int error, const char *text,
			      const struct kvm_op_outcome *out, void *userdata)
{
	_cleanup_free_ struct op_ctx *ctx = userdata;
	_cleanup_free_ struct counter_state *final = NULL;
	struct migration *m = migration_find(vcd, ctx->migration_id);
	struct peer_link *link;
	uint64_t generation;
	int r;

	if (!m || migration_step_is_terminal(m->s.step))
		return;
	if (error < 0) {
		migration_fail(vcd, m, error, "reading the final counter state: %s", text);
		return;
	}
	if (!out->has_state) {
		migration_fail(vcd, m, -EPROTO, "the VMM returned no counter state");
		return;
	}
	link = link_find(vcd, m->link_id);
	if (!link) {
		migration_fail(vcd, m, -ECONNRESET, "peer link lost before the final state");
		return;
	}
	final = malloc(sizeof(*final));
	if (!final) {
		migration_fail(vcd, m, -ENOMEM, "out of memory");
		return;
	}
	*final = out->state;
	sync_or_unknown(vcd, m, "source", &final->sync);
	r = session_source_begin_final(&m->s, final, clock_ns(CLOCK_MONOTONIC), &generation);
	if (r < 0) {
		migration_fail(vcd, m, r, "state machine refused the final state");
		return;
	}
	r = migration_record(vcd, m);
	if (r < 0) {
		journal_failed(vcd, m, r);
		return;
	}

	r = send_final(m, link);
	if (r < 0) {
		migration_fail(vcd, m, r, "cannot send the final state");
		return;
	}
	log_debug("vm=%s migration=%s role=source step=final: generation=%" PRIu64, m->s.vm_id,
		  m->s.migration_id, generation);
	migration_changed(vcd, m);
	migration_arm_timer(vcd, m);
}

static void migration_handle_report_paused(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
					   const char *vm_id, const char *migration_id)
{
	struct migration *m = migration_find(vcd, migration_id);
	struct vm_entry *vm = vm_id ? vm_registry_find(&vcd->vms, vm_id) : NULL;
	struct op_ctx *ctx;
	int r;

	if (!m || m->s.role != VM_ROLE_SOURCE || !vm_id || strcmp(m->s.vm_id, vm_id) != 0) {
		vmm_reply_error(vcd, conn_id, request_id, -ENOENT,
				"no outgoing migration with that id for that VM");
		return;
	}
	if (!vm || vm->conn_id != conn_id) {
		vmm_reply_error(vcd, conn_id, request_id, -EPERM,
				"VM is not registered on this connection");
		return;
	}
	if (session_source_may_finalize(&m->s) < 0) {
		vmm_reply_error(vcd, conn_id, request_id, -EPROTO,
				"migration is at step %s, not ready for the final state",
				migration_step_to_string(m->s.step));
		return;
	}
	if (m->vmm_request_id) {
		vmm_reply_error(vcd, conn_id, request_id, -EBUSY,
				"a request for this migration is already running");
		return;
	}
	m->vmm_conn_id = conn_id;
	m->vmm_request_id = request_id;
	ctx = op_ctx_new(m);
	if (!ctx) {
		migration_fail(vcd, m, -ENOMEM, "out of memory");
		return;
	}
	r = vmm_kvm_op(
		vcd, vm,
		&(struct kvm_op_request){ .kind = VCOUNTER__V1__KVM_OP_KIND__KVM_OP_READ_STATE },
		source_final_read, ctx, NULL);
	if (r < 0) {
		free(ctx);
		migration_fail(vcd, m, r, "cannot ask the VMM for its final counter state");
	}
}

static void log_outcome(const struct migration_report *rep, const char *role)
{
	char before[256], after[256];

	format_offsets(before, sizeof(before), rep->offsets_before, rep->n_vcpus);
	format_offsets(after, sizeof(after), rep->offsets_after, rep->n_vcpus);
	log_info("vm=%s migration=%s role=%s step=done: backend=%s generation=%" PRIu64
		 " offsets_before=[%s] offsets_after=[%s] elapsed_ns=%" PRId64
		 " timescale=%s delta_cycles=%" PRId64 " error_bound_ns=%" PRIu64
		 "%s apply_latency_ns=%" PRIu64 " kvmclock=%s kvmclock_error_ns=%" PRId64
		 " sync=%s/%s",
		 rep->vm_id, rep->migration_id, role, backend_kind_to_string(rep->backend),
		 rep->generation, before, after, rep->elapsed_ns,
		 counter_timescale_to_string(rep->timescale), rep->delta_cycles,
		 rep->error_bound_ns, rep->error_bound_exceeded ? " (over the limit)" : "",
		 rep->apply_latency_ns, kvmclock_verdict_to_string(rep->kvmclock_verdict),
		 rep->kvmclock_error_ns, sync_source_kind_to_string(rep->source_sync),
		 sync_source_kind_to_string(rep->target_sync));
	if (rep->kvmclock_verdict == KVMCLOCK_MASTER_CLOCK_LOST)
		log_error("vm=%s migration=%s role=%s: kvmclock check failed: the source's "
			  "kvmclock was in master-clock mode (flags %#x), the target's is not "
			  "after the apply (flags %#x, %#x before it): the guest's kvmclock lost "
			  "PVCLOCK_TSC_STABLE_BIT%s",
			  rep->vm_id, rep->migration_id, role, rep->kvmclock_flags_source,
			  rep->kvmclock_flags_after, rep->kvmclock_flags_before,
			  counter_math_kvmclock_master(rep->kvmclock_flags_before)
				  ? ""
				  : "; this host had none before the apply (is its clocksource "
				    "the TSC?)");
	else if (rep->kvmclock_verdict == KVMCLOCK_DIVERGED)
		log_error("vm=%s migration=%s role=%s: kvmclock check failed: kvmclock advanced "
			  "%" PRId64 " ns more than the guest's TSC across the handoff",
			  rep->vm_id, rep->migration_id, role, rep->kvmclock_error_ns);
	if (rep->clamped_ns)
		log_warning("vm=%s migration=%s role=%s: the target host's clock read %" PRIu64
			    " ns earlier than the source's anchor: the guest's counter was held, "
			    "not moved back, and the error bound includes it; check both hosts' "
			    "time sync",
			    rep->vm_id, rep->migration_id, role, rep->clamped_ns);
}

static void handle_applied(struct vcd *vcd, struct peer_link *link,
			   const Vcounter__V1__PeerMessage *msg)
{
	_cleanup_free_ struct migration_report *rep = calloc(1, sizeof(*rep));
	Vcounter__V1__PeerMessage ack = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Ack ack_body = VCOUNTER__V1__ACK__INIT;
	struct migration *m;
	char err[256];
	int r;

	if (!rep)
		return;
	r = wire_report_from_pb(msg->applied->report, rep, err, sizeof(err));
	if (r < 0) {
		peer_link_send_error(link, msg->id, r, "invalid Applied: %s", err);
		return;
	}
	m = migration_find(vcd, rep->migration_id);
	if (!m || m->s.role != VM_ROLE_SOURCE) {
		peer_link_send_error(link, msg->id, -ENOENT, "unknown migration id %s",
				     rep->migration_id);
		return;
	}
	r = session_source_applied(&m->s, link->identity, rep, clock_ns(CLOCK_MONOTONIC));
	if (r < 0) {
		peer_link_send_error(link, msg->id, r, "Applied refused at step %s",
				     migration_step_to_string(m->s.step));
		return;
	}
	log_outcome(rep, "source");
	if (r == 0) {
		migration_record_after(vcd, m);
		migration_changed(vcd, m);
	}
	ack_body.migration_id = m->s.migration_id;
	ack.id = msg->id;
	ack.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ACK;
	ack.ack = &ack_body;
	peer_link_send(link, &ack);
}

/* ---- target side ---- */

/* The plan against a target anchor taken now; *ret_sync is this host's
 * adjtimex view it used, also when planning fails on it. */
static int target_plan(struct vcd *vcd, const struct vm_entry *vm, const struct counter_state *src,
		       struct counter_plan *ret_plan, struct sync_error *ret_sync, char *err,
		       size_t err_size)
{
	struct counter_policy policy = {
		.max_abs_elapsed_ns = vcd->config.max_abs_elapsed_ns,
		.tsc_khz_tolerance_ppm = vcd->config.tsc_tolerance_ppm,
	};
	struct counter_target dst = {
		.arch = vm->arch,
		.guest_tsc_khz = vm->guest_tsc_khz,
		.tsc_scaling_ratio = vm->tsc_scaling_ratio,
		.tsc_scaling_frac_bits = vm->tsc_scaling_frac_bits,
		.n_vcpus = vm->n_vcpus,
	};
	int r;

	r = sync_source_read(vcd->sync, &dst.sync, err, err_size);
	*ret_sync = dst.sync;
	if (r < 0)
		return r;
	/* This host's rate, not the source's: they differ when the hosts do. */
	r = hostclock_bracket_anchor(vcd->host_tsc_khz, &dst.anchor);
	if (r < 0)
		return r;
	return counter_math_plan(src, &dst, &policy, ret_plan);
}

static const char *arch_name(enum counter_arch arch)
{
	const char *name = counter_arch_to_string(arch);

	return name ? name : "?";
}

static const char *plan_error(int r)
{
	switch (r) {
	case -ENOEXEC:
		return "the source's counter is of another architecture than this VM's "
		       "(x86 TSC vs arm64 generic timer): nothing converts one into the other";
	case -EXDEV:
		return "guest TSC frequencies differ beyond the tolerance and this path does not "
		       "scale; the target VMM must set the source's frequency (KVM_SET_TSC_KHZ) "
		       "first";
	case -ERANGE:
		return "elapsed time between the anchors is out of range (clocks not "
		       "synchronised, or over the configured limit)";
	case -EINVAL:
		return "source and target states are inconsistent (vCPU count, frequency, anchor)";
	case -EDOM:
		return "the hosts' kernels keep different TAI offsets (adjtimex tai): a leap "
		       "table is wrong; fix the host that is off (chrony leapsectz, tzdata), or "
		       "unset one (0) to count in UTC";
	default:
		return "cannot compute destination offsets";
	}
}

static void handle_prepare(struct vcd *vcd, struct peer_link *link,
			   const Vcounter__V1__PeerMessage *msg)
{
	const Vcounter__V1__Prepare *prep = msg->prepare;
	Vcounter__V1__PeerMessage reply = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__PrepareAck ack = VCOUNTER__V1__PREPARE_ACK__INIT;
	_cleanup_free_ struct counter_state *state = calloc(1, sizeof(*state));
	_cleanup_free_ struct counter_plan *plan = calloc(1, sizeof(*plan));
	struct sync_error sync = { 0 };
	struct session_target_vm facts;
	struct migration *m, *busy = NULL;
	struct vm_entry *vm;
	char err[256];
	int r;

	if (!state || !plan) {
		peer_link_send_error(link, msg->id, -ENOMEM, "out of memory");
		return;
	}
	if (!migration_id_is_valid(prep->migration_id) || !vm_id_is_valid(prep->vm_id)) {
		peer_link_send_error(link, msg->id, -EINVAL, "invalid migration or VM id");
		return;
	}
	r = wire_counter_state_from_pb(prep->state, state, err, sizeof(err));
	if (r < 0) {
		peer_link_send_error(link, msg->id, r, "invalid counter state: %s", err);
		return;
	}
	if (migration_find(vcd, prep->migration_id)) {
		peer_link_send_error(link, msg->id, -EEXIST, "migration %s already exists",
				     prep->migration_id);
		return;
	}
	vm = vm_registry_find(&vcd->vms, prep->vm_id);
	facts = (struct session_target_vm){
		.registered = vm && vm->role == VM_ROLE_TARGET && vm->probed,
	};
	if (facts.registered) {
		facts.arch = vm->arch;
		facts.offset_control = vm->offset_control;
		facts.n_vcpus = vm->n_vcpus;
		for (busy = vcd->migrations->list; busy; busy = busy->next)
			if (busy->s.role == VM_ROLE_TARGET &&
			    strcmp(busy->s.vm_id, vm->vm_id) == 0 &&
			    !migration_step_is_terminal(busy->s.step))
				break;
		facts.busy = busy;
	}
	r = session_target_admit(&facts, state);
	switch (r) {
	case 0:
		break;
	case -ENOENT:
		peer_link_send_error(link, msg->id, r, "no target VM %s registered on %s",
				     prep->vm_id, vcd->config.host_name);
		return;
	case -EBUSY:
		peer_link_send_error(link, msg->id, r,
				     "target VM %s already has migration %s running", vm->vm_id,
				     busy->s.migration_id);
		return;
	case -ENOEXEC:
		peer_link_send_error(link, msg->id, r, "source counter %s, target VM %s: %s",
				     arch_name(state->arch), arch_name(vm->arch), plan_error(r));
		return;
	case -EOPNOTSUPP:
		peer_link_send_error(link, msg->id, r, "target host %s: %s", vcd->config.host_name,
				     vm->probe_detail);
		return;
	default:
		peer_link_send_error(link, msg->id, r, "source VM has %u vCPUs, target VM %u",
				     state->n_vcpus, vm->n_vcpus);
		return;
	}
	r = target_plan(vcd, vm, state, plan, &sync, err, sizeof(err));
	if (r == -ENODATA) {
		peer_link_send_error(link, msg->id, r, "target host %s: %s", vcd->config.host_name,
				     err);
		return;
	}
	if (r < 0) {
		peer_link_send_error(link, msg->id, r,
				     "%s (source %u kHz, TAI offset %" PRId32
				     " s; target %u kHz, TAI "
				     "offset %" PRId32 " s)",
				     plan_error(r), state->guest_tsc_khz, state->sync.tai_offset_s,
				     vm->guest_tsc_khz, sync.tai_offset_s);
		return;
	}
	/* Prepare's anchor is older than this reading by the message's trip:
	 * a clock behind here already is behind by at least this much. */
	if (plan->clamped_ns)
		log_warning(
			"vm=%s migration=%s: this host's clock reads %" PRIu64
			" ns earlier than the source's at prepare; unless that changes, the "
			"guest's counter will be held at the apply and the error bound grow by it",
			vm->vm_id, prep->migration_id, plan->clamped_ns);
	switch (session_error_bound_verdict(plan->error_bound_ns, vcd->config.error_bound_limit_ns,
					    vcd->config.error_bound_refuse)) {
	case SESSION_BOUND_REFUSE:
		peer_link_send_error(link, msg->id, -ERANGE,
				     "error bound %" PRIu64 " ns over the limit %" PRIu64
				     " ns (policy refuse)",
				     plan->error_bound_ns, vcd->config.error_bound_limit_ns);
		return;
	case SESSION_BOUND_WARN:
		log_warning("vm=%s migration=%s: error bound %" PRIu64 " ns over the limit %" PRIu64
			    " ns (policy warn)",
			    vm->vm_id, prep->migration_id, plan->error_bound_ns,
			    vcd->config.error_bound_limit_ns);
		break;
	case SESSION_BOUND_WITHIN:
		break;
	}
	r = migration_new(vcd, &m);
	if (r < 0) {
		peer_link_send_error(link, msg->id, r, "too many migrations");
		return;
	}
	r = session_init(&m->s, VM_ROLE_TARGET, prep->migration_id, prep->vm_id, link->identity,
			 clock_ns(CLOCK_MONOTONIC));
	if (r == 0)
		r = session_target_prepare(&m->s, link->identity, state, clock_ns(CLOCK_MONOTONIC));
	if (r < 0) {
		migration_free(vcd, m);
		peer_link_send_error(link, msg->id, r, "cannot start the migration");
		return;
	}
	m->link_id = link->id;
	m->planned_delta_cycles = plan->delta_cycles;
	m->planned_error_bound_ns = plan->error_bound_ns;
	r = migration_record(vcd, m);
	if (r < 0) {
		peer_link_send_error(link, msg->id, r, "target cannot record the migration: %s",
				     strerror(-r));
		migration_fail(vcd, m, r, "cannot record step prepared in the session journal: %s",
			       strerror(-r));
		return;
	}
	log_info("vm=%s migration=%s role=target step=prepared: peer=%s "
		 "planned_delta_cycles=%" PRId64 " planned_error_bound_ns=%" PRIu64,
		 m->s.vm_id, m->s.migration_id, link->identity, plan->delta_cycles,
		 plan->error_bound_ns);
	migration_changed(vcd, m);

	ack.migration_id = m->s.migration_id;
	ack.planned_delta_cycles = plan->delta_cycles;
	ack.planned_error_bound_ns = plan->error_bound_ns;
	reply.id = msg->id;
	reply.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE_ACK;
	reply.prepare_ack = &ack;
	peer_link_send(link, &reply);
}

static void push_apply_op(struct vcd *vcd, struct migration *m);
static void send_applied(struct vcd *vcd, struct migration *m, struct peer_link *link,
			 const struct migration_report *rep);

static void handle_final(struct vcd *vcd, struct peer_link *link,
			 const Vcounter__V1__PeerMessage *msg)
{
	const Vcounter__V1__FinalState *fin = msg->final_state;
	Vcounter__V1__PeerMessage reply = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__FinalAck ack = VCOUNTER__V1__FINAL_ACK__INIT;
	_cleanup_free_ struct counter_state *state = calloc(1, sizeof(*state));
	struct migration *m = migration_find(vcd, fin->migration_id);
	char err[256];
	int r;

	if (!state) {
		peer_link_send_error(link, msg->id, -ENOMEM, "out of memory");
		return;
	}
	if (!m || m->s.role != VM_ROLE_TARGET) {
		peer_link_send_error(link, msg->id, -ENOENT, "unknown migration id %s",
				     fin->migration_id ? fin->migration_id : "");
		return;
	}
	/* A foreign peer learns nothing about the session (session.h). */
	if (strcmp(m->s.peer_identity, link->identity) != 0) {
		peer_link_send_error(link, msg->id, -EPERM, "migration %s belongs to another peer",
				     m->s.migration_id);
		return;
	}
	r = wire_counter_state_from_pb(fin->state, state, err, sizeof(err));
	if (r < 0) {
		peer_link_send_error(link, msg->id, r, "invalid final state: %s", err);
		return;
	}
	/* The rate within the tolerance: a VM that arrived on the source was
	 * prepared with the rate of its registration there, and its VMM then
	 * restored its own source's rate (QEMU's KVM_SET_TSC_KHZ), which KVM
	 * keeps unscaled within its tolerance. */
	if (state->n_vcpus != m->s.prepared.n_vcpus ||
	    !counter_math_khz_same(m->s.prepared.guest_tsc_khz, state->guest_tsc_khz,
				   vcd->config.tsc_tolerance_ppm) ||
	    state->arch != m->s.prepared.arch) {
		peer_link_send_error(link, msg->id, -EINVAL,
				     "final state changes the vCPU count, frequency or counter");
		return;
	}
	r = session_target_final(&m->s, link->identity, fin->generation, state,
				 clock_ns(CLOCK_MONOTONIC));
	switch (r) {
	case 0:
		log_debug("vm=%s migration=%s role=target step=final: generation=%" PRIu64,
			  m->s.vm_id, m->s.migration_id, fin->generation);
		/* A newer generation from the source proves itself current. */
		m->link_id = link->id;
		r = migration_record(vcd, m);
		if (r < 0) {
			peer_link_send_error(link, msg->id, r,
					     "target cannot record the final state: %s",
					     strerror(-r));
			migration_fail(vcd, m, r,
				       "cannot record step final in the session journal: %s",
				       strerror(-r));
			return;
		}
		migration_changed(vcd, m);
		push_apply_op(vcd, m);
		break;
	case 1:
		log_debug("vm=%s migration=%s: final state generation %" PRIu64 " replayed, no-op",
			  m->s.vm_id, m->s.migration_id, fin->generation);
		/* The source may have reconnected: answer on the link it uses now. */
		m->link_id = link->id;
		break;
	case 2:
		log_info("vm=%s migration=%s role=target: the source confirmed generation "
			 "%" PRIu64 " after the restart; it may be applied",
			 m->s.vm_id, m->s.migration_id, m->s.generation);
		m->link_id = link->id;
		evtimer_del(m->timer);
		migration_record_after(vcd, m);
		migration_changed(vcd, m);
		push_apply_op(vcd, m);
		break;
	case -ESTALE:
		peer_link_send_error(link, msg->id, r,
				     "stale final state: generation %" PRIu64 " < current %" PRIu64,
				     fin->generation, m->s.generation);
		return;
	case -EPERM:
		peer_link_send_error(link, msg->id, r, "migration %s belongs to another peer",
				     m->s.migration_id);
		return;
	case -EEXIST:
		peer_link_send_error(link, msg->id, r,
				     "generation %" PRIu64 " already received with other content",
				     fin->generation);
		return;
	default:
		peer_link_send_error(link, msg->id, r, "final state refused at step %s",
				     migration_step_to_string(m->s.step));
		return;
	}
	ack.migration_id = m->s.migration_id;
	ack.generation = fin->generation;
	reply.id = msg->id;
	reply.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_ACK;
	reply.final_ack = &ack;
	peer_link_send(link, &reply);
	/* A replay after it applied: the source lost the Applied (a restart,
	 * a broken link); it gets it again. */
	if (r == 1 && m->s.has_report && (m->s.step == STEP_APPLIED || m->s.step == STEP_DONE))
		send_applied(vcd, m, link, &m->s.report);
}

static void reply_apply(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
			const struct migration_report *rep)
{
	Vcounter__V1__VmmMessage reply = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__ApplyReply ar = VCOUNTER__V1__APPLY_REPLY__INIT;
	struct wire_report_pb rep_pb;

	wire_report_to_pb(rep, &rep_pb);
	ar.report = &rep_pb.report;
	reply.id = request_id;
	reply.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY_REPLY;
	reply.apply_reply = &ar;
	vmm_reply(vcd, conn_id, &reply);
}

/* The VMM computed and wrote; check its arithmetic against ours with the
 * anchor it used, and what it read back against what it was to write. */
static int verify_apply(struct vcd *vcd, const struct migration *m,
			const struct kvm_op_outcome *out, struct counter_plan *ret_plan,
			struct sync_error *ret_sync, char *err, size_t err_size)
{
	struct counter_policy policy = {
		.max_abs_elapsed_ns = vcd->config.max_abs_elapsed_ns,
		.tsc_khz_tolerance_ppm = vcd->config.tsc_tolerance_ppm,
	};
	struct counter_target dst = {
		.arch = out->state.arch,
		.guest_tsc_khz = out->state.guest_tsc_khz,
		.tsc_scaling_ratio = out->state.tsc_scaling_ratio,
		.tsc_scaling_frac_bits = out->state.tsc_scaling_frac_bits,
		.n_vcpus = out->state.n_vcpus,
		.anchor = out->apply_anchor,
		.sync = out->state.sync,
	};
	int r;

	if (!out->has_state || !out->has_apply_anchor) {
		snprintf(err, err_size, "the VMM's apply result lacks its state or anchor");
		return -EPROTO;
	}
	/* The VMM read the kernel's view; the error estimate is this host's
	 * sync source's. The offsets do not depend on it, only the bound. */
	sync_or_unknown(vcd, m, "target", &dst.sync);
	*ret_sync = dst.sync;
	r = counter_math_plan(&m->s.final, &dst, &policy, ret_plan);
	if (r < 0) {
		snprintf(err, err_size, "%s", plan_error(r));
		return r;
	}
	for (uint32_t i = 0; i < ret_plan->n_vcpus; i++) {
		if (ret_plan->offset_cycles[i] != out->state.offset_cycles[i]) {
			snprintf(err, err_size,
				 "vCPU %u reads back offset %" PRId64 ", expected %" PRId64, i,
				 (int64_t)out->state.offset_cycles[i],
				 (int64_t)ret_plan->offset_cycles[i]);
			return -EIO;
		}
	}
	return 0;
}

static void target_applied(struct vcd *vcd, int error, const char *text,
			   const struct kvm_op_outcome *out, void *userdata)
{
	_cleanup_free_ struct op_ctx *ctx = userdata;
	_cleanup_free_ struct counter_plan *plan = calloc(1, sizeof(*plan));
	_cleanup_free_ struct migration_report *rep = calloc(1, sizeof(*rep));
	struct migration *m = migration_find(vcd, ctx->migration_id);
	struct kvmclock_check kc;
	struct sync_error dst_sync = { 0 };
	struct peer_link *link;
	char err[256];
	int r;

	if (!m || ctx->op_id != m->apply_op_id)
		return; /* superseded by a newer final state, or from a gone VMM */
	m->apply_op_id = 0;
	if (m->s.step != STEP_APPLYING) {
		/* libvcounter only runs an APPLY inside vcounter_apply(); a result
		 * without the request is not ours to record. */
		if (error >= 0)
			log_warning("vm=%s migration=%s: apply result without an apply request "
				    "ignored",
				    m->s.vm_id, m->s.migration_id);
		return;
	}
	if (!plan || !rep) {
		error = -ENOMEM;
		text = "out of memory";
	}
	if (error >= 0) {
		r = verify_apply(vcd, m, out, plan, &dst_sync, err, sizeof(err));
		if (r < 0) {
			error = r;
			text = err;
		}
	}
	if (error < 0) {
		session_target_apply_failed(&m->s, text, clock_ns(CLOCK_MONOTONIC));
		log_error("vm=%s migration=%s role=target step=apply: failed: %s", m->s.vm_id,
			  m->s.migration_id, text);
		migration_reply_vmm_error(vcd, m, error, text);
		migration_record_after(vcd, m);
		migration_changed(vcd, m);
		return;
	}

	memcpy(rep->migration_id, m->s.migration_id, sizeof(rep->migration_id));
	memcpy(rep->vm_id, m->s.vm_id, sizeof(rep->vm_id));
	rep->backend = out->state.backend;
	rep->generation = m->s.generation;
	rep->n_vcpus = m->s.final.n_vcpus;
	memcpy(rep->offsets_before, m->s.final.offset_cycles, rep->n_vcpus * sizeof(uint64_t));
	memcpy(rep->offsets_after, out->state.offset_cycles, rep->n_vcpus * sizeof(uint64_t));
	rep->elapsed_ns = plan->elapsed_ns;
	rep->clamped_ns = plan->clamped_ns;
	rep->delta_cycles = plan->delta_cycles;
	rep->error_bound_ns = plan->error_bound_ns;
	rep->apply_latency_ns = clock_ns(CLOCK_MONOTONIC) - m->apply_started_ns;
	rep->guest_tsc_khz = m->s.final.guest_tsc_khz;
	rep->error_bound_exceeded =
		session_error_bound_verdict(plan->error_bound_ns, vcd->config.error_bound_limit_ns,
					    vcd->config.error_bound_refuse) != SESSION_BOUND_WITHIN;
	rep->timescale = plan->timescale;
	/* The offsets are written whatever kvmclock shows: the report says
	 * what the guest will see, the VM runs on. */
	counter_math_kvmclock_check(&m->s.final,
				    out->has_clock_before ? &out->clock_before
							  : &(struct kvmclock_state){ 0 },
				    &out->state, &kc);
	rep->kvmclock_verdict = kc.verdict;
	rep->kvmclock_flags_source = kc.flags_source;
	rep->kvmclock_flags_before = kc.flags_before;
	rep->kvmclock_flags_after = kc.flags_after;
	rep->kvmclock_error_ns = kc.error_ns;
	rep->source_sync = m->s.final.sync.source;
	rep->source_maxerror_ns =
		m->s.final.sync.unsynced ? UINT64_MAX : m->s.final.sync.maxerror_ns;
	rep->target_sync = dst_sync.source;
	rep->target_maxerror_ns = dst_sync.unsynced ? UINT64_MAX : dst_sync.maxerror_ns;
	r = session_target_applied(&m->s, rep, clock_ns(CLOCK_MONOTONIC));
	if (r < 0) {
		log_error("vm=%s migration=%s: state machine refused applied (%d)", m->s.vm_id,
			  m->s.migration_id, r);
		migration_reply_vmm_error(vcd, m, r, "internal state error");
		return;
	}
	/* The VMM runs its vCPUs only on this reply: not before the journal
	 * knows the offsets are written. */
	r = migration_record(vcd, m);
	if (r < 0) {
		migration_fail(vcd, m, r, "cannot record step applied in the session journal: %s",
			       strerror(-r));
		return;
	}
	log_outcome(rep, "target");
	reply_apply(vcd, m->vmm_conn_id, m->vmm_request_id, rep);
	m->vmm_request_id = 0;
	migration_changed(vcd, m);
	/* The source's Ack may never come (lost with the link): done anyway
	 * after the peer timeout (migration_timeout_cb). */
	migration_arm_timer(vcd, m);

	link = link_find(vcd, m->link_id);
	if (!link) {
		log_warning("vm=%s migration=%s: peer link gone, source not told of the apply",
			    m->s.vm_id, m->s.migration_id);
		return;
	}
	send_applied(vcd, m, link, rep);
}

static void send_applied(struct vcd *vcd, struct migration *m, struct peer_link *link,
			 const struct migration_report *rep)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Applied applied = VCOUNTER__V1__APPLIED__INIT;
	struct wire_report_pb rep_pb;

	(void)vcd;
	wire_report_to_pb(rep, &rep_pb);
	applied.report = &rep_pb.report;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED;
	msg.applied = &applied;
	if (peer_link_request(link, m->s.migration_id, &msg) < 0)
		log_warning("vm=%s migration=%s: cannot tell the source of the apply", m->s.vm_id,
			    m->s.migration_id);
}

/* Hand the VMM the APPLY op for the current final state now, so that its
 * vcounter_apply() costs one round trip: the op waits in the VMM's socket. */
static int send_apply_op(struct vcd *vcd, struct migration *m, const struct vm_entry *vm,
			 bool deferred)
{
	struct kvm_op_request req = {
		.kind = VCOUNTER__V1__KVM_OP_KIND__KVM_OP_APPLY,
		.plan_source = &m->s.final,
		.migration_id = m->s.migration_id,
		.generation = m->s.generation,
		.deferred = deferred,
	};
	struct op_ctx *ctx;
	int r;

	if (m->apply_op_id)
		vmm_kvm_op_cancel(vcd, m->apply_op_conn_id, m->apply_op_id);
	ctx = op_ctx_new(m);
	if (!ctx)
		return -ENOMEM;
	r = vmm_kvm_op(vcd, vm, &req, target_applied, ctx, &ctx->op_id);
	if (r < 0) {
		free(ctx);
		return r;
	}
	m->apply_op_id = ctx->op_id;
	m->apply_op_conn_id = vm->conn_id;
	return 0;
}

/* The target's migration is done (the source acknowledged Applied): the VM
 * lives here now and its next migration may start here, by its VMM or by a
 * controller, without registering again. It stays a target (another
 * incoming migration into the same registration is still taken) and may
 * also leave as a source: its registered state becomes the offsets the
 * apply wrote (prepare re-reads the anchor and sync; the final state is
 * read after the pause). A target whose source never acknowledged cannot
 * leave until its VMM registers it as a source. Kept across a restart in
 * the fd store's record; without one, libvcounter registers the VM again as
 * the source it became (it saw the done notice). */
static void target_arrived(struct vcd *vcd, struct migration *m)
{
	struct vm_entry *vm = vm_registry_find(&vcd->vms, m->s.vm_id);

	if (!vm || vm->role != VM_ROLE_TARGET || m->s.step != STEP_DONE || !m->s.has_report ||
	    m->s.report.n_vcpus != vm->n_vcpus)
		return;
	vm->arrived = true;
	if (vm->registered_state)
		memcpy(vm->registered_state->offset_cycles, m->s.report.offsets_after,
		       vm->n_vcpus * sizeof(vm->registered_state->offset_cycles[0]));
	vm_registry_changed(&vcd->vms, vm);
	log_info("vm=%s migration=%s: arrived; it may leave again as a source", vm->vm_id,
		 m->s.migration_id);
}

static void push_apply_op(struct vcd *vcd, struct migration *m)
{
	struct vm_entry *vm = vm_registry_find(&vcd->vms, m->s.vm_id);
	int r;

	if (!vm || vm->role != VM_ROLE_TARGET)
		return;
	r = send_apply_op(vcd, m, vm, true);
	if (r < 0)
		log_debug("vm=%s migration=%s: apply op not sent ahead (%s); sent on request",
			  m->s.vm_id, m->s.migration_id, strerror(-r));
}

static void migration_handle_apply(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
				   const char *vm_id, const char *migration_id)
{
	struct migration *m = migration_find(vcd, migration_id);
	struct vm_entry *vm = vm_id ? vm_registry_find(&vcd->vms, vm_id) : NULL;
	int r;

	if (!m || m->s.role != VM_ROLE_TARGET || !vm_id || strcmp(m->s.vm_id, vm_id) != 0) {
		vmm_reply_error(vcd, conn_id, request_id, -ENOENT,
				"no incoming migration with that id for that VM");
		return;
	}
	if (!vm || vm->conn_id != conn_id) {
		vmm_reply_error(vcd, conn_id, request_id, -EPERM,
				"VM is not registered on this connection");
		return;
	}
	r = session_target_begin_apply(&m->s, clock_ns(CLOCK_MONOTONIC));
	if (r == -ESTALE) {
		vmm_reply_error(vcd, conn_id, request_id, r,
				"migration %s was recovered from the session journal at generation "
				"%" PRIu64 "; the source has not yet confirmed that generation is "
				"its newest (it replays it when its link is back)",
				m->s.migration_id, m->s.generation);
		return;
	}
	if (r == 1) {
		log_debug("vm=%s migration=%s: apply repeated, no-op", m->s.vm_id,
			  m->s.migration_id);
		reply_apply(vcd, conn_id, request_id, &m->s.report);
		return;
	}
	if (r < 0) {
		vmm_reply_error(vcd, conn_id, request_id, r, "cannot apply at step %s%s%s",
				migration_step_to_string(m->s.step), m->s.reason[0] ? ": " : "",
				m->s.reason);
		return;
	}
	m->vmm_conn_id = conn_id;
	m->vmm_request_id = request_id;
	m->apply_started_ns = clock_ns(CLOCK_MONOTONIC);
	/* Not journaled (migration_record_after skips it too): after a crash,
	 * applying means what final means, since the VMM is answered, and its
	 * vCPUs run, only once applied is on disk. That keeps one fsync pair
	 * off the blackout (bench/bench_journal). The fail point is kept. */
	failpoint_crash("target/applying");
	migration_changed(vcd, m);
	/* The op sent ahead runs now; its deadline starts. Without one (the VMM
	 * reconnected since), send it now. */
	if (m->apply_op_id && m->apply_op_conn_id == conn_id &&
	    vmm_kvm_op_arm(vcd, conn_id, m->apply_op_id) == 0)
		return;
	m->apply_op_id = 0;
	r = send_apply_op(vcd, m, vm, false);
	if (r < 0) {
		session_target_apply_failed(&m->s, "cannot reach the VMM",
					    clock_ns(CLOCK_MONOTONIC));
		migration_reply_vmm_error(vcd, m, r, "cannot ask the VMM to apply");
		migration_record_after(vcd, m);
		migration_changed(vcd, m);
	}
}

/* ---- replies on the peer link (source side) ---- */

static void handle_prepare_ack(struct vcd *vcd, struct peer_link *link,
			       const Vcounter__V1__PeerMessage *msg, const char *migration_id)
{
	Vcounter__V1__VmmMessage reply = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__MigrateOutReply mor = VCOUNTER__V1__MIGRATE_OUT_REPLY__INIT;
	struct migration *m = migration_find(vcd, migration_id);
	int r;

	if (!m || m->link_id != link->id)
		return;
	r = session_source_prepare_acked(&m->s, link->identity, clock_ns(CLOCK_MONOTONIC));
	if (r < 0) {
		migration_fail(vcd, m, r, "PrepareAck out of order");
		return;
	}
	evtimer_del(m->timer);
	m->planned_delta_cycles = msg->prepare_ack->planned_delta_cycles;
	m->planned_error_bound_ns = msg->prepare_ack->planned_error_bound_ns;
	r = migration_record(vcd, m);
	if (r < 0) {
		journal_failed(vcd, m, r);
		return;
	}
	log_debug("vm=%s migration=%s role=source step=prepared: peer=%s "
		  "planned_delta_cycles=%" PRId64 " planned_error_bound_ns=%" PRIu64,
		  m->s.vm_id, m->s.migration_id, link->identity,
		  msg->prepare_ack->planned_delta_cycles, msg->prepare_ack->planned_error_bound_ns);
	if (m->vmm_request_id) {
		mor.migration_id = m->s.migration_id;
		reply.id = m->vmm_request_id;
		reply.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY;
		reply.migrate_out_reply = &mor;
		vmm_reply(vcd, m->vmm_conn_id, &reply);
		m->vmm_request_id = 0;
	}
	migration_changed(vcd, m);
}

static void handle_final_ack(struct vcd *vcd, struct peer_link *link,
			     const Vcounter__V1__PeerMessage *msg, const char *migration_id)
{
	Vcounter__V1__VmmMessage reply = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__ReportPausedReply rpr = VCOUNTER__V1__REPORT_PAUSED_REPLY__INIT;
	struct migration *m = migration_find(vcd, migration_id);
	int r;

	if (!m || m->link_id != link->id)
		return;
	/* The answer to a replay (migration_replay_cb): the target holds
	 * this generation; its Applied follows if it applied. */
	if (session_final_ack_is_replay(&m->s, link->identity, msg->final_ack->generation)) {
		log_info("vm=%s migration=%s role=source: target %s holds generation %" PRIu64
			 " after the replay",
			 m->s.vm_id, m->s.migration_id, link->identity, m->s.generation);
		m->replay_attempts = 0;
		return;
	}
	r = session_source_final_acked(&m->s, link->identity, msg->final_ack->generation,
				       clock_ns(CLOCK_MONOTONIC));
	if (r < 0) {
		migration_fail(vcd, m, r, "FinalAck out of order or for another generation");
		return;
	}
	evtimer_del(m->timer);
	r = migration_record(vcd, m);
	if (r < 0) {
		journal_failed(vcd, m, r);
		return;
	}
	rpr.generation = m->s.generation;
	reply.id = m->vmm_request_id;
	reply.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED_REPLY;
	reply.report_paused_reply = &rpr;
	vmm_reply(vcd, m->vmm_conn_id, &reply);
	m->vmm_request_id = 0;
	migration_changed(vcd, m);
}

static void handle_abort(struct vcd *vcd, struct peer_link *link,
			 const Vcounter__V1__PeerMessage *msg)
{
	struct migration *m = migration_find(vcd, msg->abort->migration_id);
	const char *reason = msg->abort->reason ? msg->abort->reason : "";
	int r;

	if (!m)
		return;
	if (strcmp(m->s.peer_identity, link->identity) != 0) {
		log_warning("peer=%s: Abort for migration %s of another peer ignored",
			    link->identity, m->s.migration_id);
		return;
	}
	r = session_abort(&m->s, reason, clock_ns(CLOCK_MONOTONIC));
	if (r < 0) {
		log_warning("vm=%s migration=%s: peer asked to abort at step %s: refused",
			    m->s.vm_id, m->s.migration_id, migration_step_to_string(m->s.step));
		return;
	}
	evtimer_del(m->timer);
	withdraw_apply_op(vcd, m);
	log_info("vm=%s migration=%s step=aborted: by peer %s: %s", m->s.vm_id, m->s.migration_id,
		 link->identity, reason);
	migration_reply_vmm_error(vcd, m, -ECANCELED, "migration aborted by the peer");
	migration_record_after(vcd, m);
	migration_changed(vcd, m);
}

static void send_abort(struct vcd *vcd, struct migration *m, const char *reason)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Abort ab = VCOUNTER__V1__ABORT__INIT;
	struct peer_link *link = link_find(vcd, m->link_id);

	if (!link)
		return;
	ab.migration_id = m->s.migration_id;
	ab.reason = (char *)reason;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ABORT;
	msg.abort = &ab;
	peer_link_send(link, &msg);
}

void migration_on_vm(void *userdata, enum vm_event event, struct vm_entry *vm)
{
	struct vcd *vcd = userdata;
	const char *vm_id = vm->vm_id;

	/* At shutdown the migrations go first (manager.c), then the VMs. */
	if (event != VM_EVENT_UNREGISTERED || !vcd->migrations)
		return;
	for (struct migration *m = vcd->migrations->list; m; m = m->next) {
		if (strcmp(m->s.vm_id, vm_id) != 0 || migration_step_is_terminal(m->s.step))
			continue;
		if (session_abort(&m->s, "VM unregistered", clock_ns(CLOCK_MONOTONIC)) < 0)
			continue; /* already applied on the target: nothing to undo */
		evtimer_del(m->timer);
		withdraw_apply_op(vcd, m);
		log_warning("vm=%s migration=%s step=aborted: the VM left this daemon", vm_id,
			    m->s.migration_id);
		send_abort(vcd, m, "VM unregistered");
		migration_reply_vmm_error(vcd, m, -ECANCELED, "VM unregistered");
		migration_record_after(vcd, m);
		migration_changed(vcd, m);
	}
}

static void migration_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct migration *m = arg;

	if (m->s.role == VM_ROLE_TARGET && m->s.step == STEP_APPLIED &&
	    session_target_ack_lost(&m->s, clock_ns(CLOCK_MONOTONIC)) == 0) {
		log_warning("vm=%s migration=%s role=target step=done: applied, and the source's "
			    "acknowledgement did not come within %u ms; a replay still gets the "
			    "report",
			    m->s.vm_id, m->s.migration_id, m->vcd->config.peer_timeout_ms);
		migration_record_after(m->vcd, m);
		migration_changed(m->vcd, m);
		target_arrived(m->vcd, m);
		return;
	}

	if (m->s.awaiting_source) {
		migration_fail(m->vcd, m, -ETIMEDOUT,
			       "recovered after a restart at generation %" PRIu64 ", and the "
			       "source did not confirm it within %u ms: not applied",
			       m->s.generation, m->vcd->config.peer_timeout_ms);
		return;
	}
	migration_fail(m->vcd, m, -ETIMEDOUT, "peer did not answer within %u ms at step %s",
		       m->vcd->config.peer_timeout_ms, migration_step_to_string(m->s.step));
}

static void handle_error_reply(struct vcd *vcd, struct peer_link *link,
			       const Vcounter__V1__PeerMessage *msg, const char *migration_id)
{
	struct migration *m = migration_find(vcd, migration_id);
	const char *text = msg->error->message ? msg->error->message : "";

	if (!m)
		return;
	migration_fail(vcd, m, wire_errno_from_error(msg->error), "peer %s refused: %s",
		       link->identity, text);
}

/* ---- what the peer link brings (peer_link.h) ---- */

static void link_request_cb(struct peer_link *link, const Vcounter__V1__PeerMessage *msg,
			    void *userdata)
{
	struct vcd *vcd = userdata;

	switch (msg->body_case) {
	case VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE:
		handle_prepare(vcd, link, msg);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE:
		handle_final(vcd, link, msg);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED:
		handle_applied(vcd, link, msg);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_ABORT:
		handle_abort(vcd, link, msg);
		break;
	default: /* peer_link.c passes requests only */
		break;
	}
}

static void link_reply_cb(struct peer_link *link, const Vcounter__V1__PeerMessage *msg,
			  const char *migration_id, void *userdata)
{
	struct vcd *vcd = userdata;
	struct migration *m;

	switch (msg->body_case) {
	case VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE_ACK:
		handle_prepare_ack(vcd, link, msg, migration_id);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_ACK:
		handle_final_ack(vcd, link, msg, migration_id);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR:
		handle_error_reply(vcd, link, msg, migration_id);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_ACK:
		m = migration_find(vcd, migration_id);
		if (m && m->s.role == VM_ROLE_TARGET &&
		    session_target_acked(&m->s, link->identity, clock_ns(CLOCK_MONOTONIC)) == 0) {
			evtimer_del(m->timer);
			migration_record_after(vcd, m);
			migration_changed(vcd, m);
			target_arrived(vcd, m);
		}
		break;
	default: /* peer_link.c passes replies only */
		break;
	}
}

static void schedule_replay(struct vcd *vcd, struct migration *m);

/* A target that holds the final state may still apply when its VMM asks;
 * everything still waiting on the link fails now. */
static void link_closed_cb(struct peer_link *link, int error, const char *reason, void *userdata)
{
	struct vcd *vcd = userdata;

	for (struct migration *m = vcd->migrations->list; m; m = m->next) {
		if (m->link_id != link->id || migration_step_is_terminal(m->s.step))
			continue;
		if (m->s.role == VM_ROLE_TARGET && m->s.step >= STEP_FINAL)
			continue;
		if (m->s.role == VM_ROLE_SOURCE && m->s.step == STEP_FINAL) {
			log_warning("vm=%s migration=%s: link lost after the final state was "
				    "delivered; replaying it on a new link",
				    m->s.vm_id, m->s.migration_id);
			schedule_replay(vcd, m);
			continue;
		}
		/* Never up: an outgoing link whose connect or handshake failed (a target with a
		 * certificate we refuse, or no TLS 1.3). Its own error tells the VMM what happened;
		 * ECONNRESET would read as "vcounterd restarted" to libvcounter's callers. */
		if (!link->established)
			migration_fail(vcd, m, error < 0 ? error : -ECONNRESET,
				       "cannot establish the peer link: %s", reason);
		else
			migration_fail(vcd, m, -ECONNRESET, "peer link lost: %s", reason);
	}
}

static const struct peer_link_handlers link_handlers = {
	.request = link_request_cb,
	.reply = link_reply_cb,
	.closed = link_closed_cb,
};

/* ---- replaying a delivered final state, and recovery ---- */

static void migration_replay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct migration *m = arg;
	struct vcd *vcd = m->vcd;
	struct peer_link *link;
	int r;

	(void)fd;
	(void)what;
	if (m->s.role != VM_ROLE_SOURCE || m->s.step != STEP_FINAL)
		return;
	r = peer_link_get_outgoing(&vcd->migrations->links, m->peer_address, m->s.peer_identity,
				   &link);
	if (r < 0) {
		log_warning("vm=%s migration=%s: cannot reach %s to replay the final state: %s",
			    m->s.vm_id, m->s.migration_id, m->peer_address, strerror(-r));
		schedule_replay(vcd, m);
		return;
	}
	m->link_id = link->id;
	r = send_final(m, link);
	if (r < 0)
		log_warning("vm=%s migration=%s: cannot replay the final state: %s", m->s.vm_id,
			    m->s.migration_id, strerror(-r));
	/* A link that does not come up closes, and schedules the next try. */
}

/* Replay the delivered final state on a new link after a backoff (0.5 s,
 * doubling, at most 30 s apart), REPLAY_MAX_ATTEMPTS times. */
static void schedule_replay(struct vcd *vcd, struct migration *m)
{
	uint64_t ms;
	struct timeval tv;

	if (m->replay_attempts >= REPLAY_MAX_ATTEMPTS) {
		log_warning("vm=%s migration=%s: gave up replaying the final state to %s after %u "
			    "attempts; the outcome on the target is unknown here",
			    m->s.vm_id, m->s.migration_id, m->peer_address, m->replay_attempts);
		return;
	}
	/* The first after REPLAY_INTERVAL_MS, or an eighth of the peer
	 * timeout when that is shorter: a replay is due well before the
	 * target's own timeout. */
	ms = vcd->config.peer_timeout_ms / 8 < REPLAY_INTERVAL_MS ? vcd->config.peer_timeout_ms / 8
								  : REPLAY_INTERVAL_MS;
	ms = (ms ? ms : 1) << (m->replay_attempts < 6 ? m->replay_attempts : 6);
	if (ms > 30000)
		ms = 30000;
	m->replay_attempts++;
	if (!m->replay)
		m->replay = evtimer_new(vcd->base, migration_replay_cb, m);
	if (!m->replay)
		return;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(m->replay, &tv);
}

struct recovery {
	struct vcd *vcd;
	size_t loaded, set_aside, dropped;
};

static void recover_one(const struct journal_entry *e, void *userdata)
{
	struct recovery *rc = userdata;
	struct vcd *vcd = rc->vcd;
	uint64_t now = clock_ns(CLOCK_MONOTONIC), real = clock_ns(CLOCK_REALTIME);
	uint64_t age = real > e->realtime_ns ? real - e->realtime_ns : 0;
	struct migration *m;
	int r;

	r = migration_new(vcd, &m);
	if (r < 0) {
		log_error("vm=%s migration=%s: session journal record not loaded: %s", e->s.vm_id,
			  e->s.migration_id, strerror(-r));
		rc->dropped++;
		return;
	}
	m->s = e->s;
	m->s.started_ns = m->s.updated_ns = now > age ? now - age : 0;
	snprintf(m->peer_address, sizeof(m->peer_address), "%s", e->peer_address);
	m->by_controller = e->by_controller;
	m->planned_delta_cycles = e->planned_delta_cycles;
	m->planned_error_bound_ns = e->planned_error_bound_ns;
	m->journal_seq = e->sequence;
	m->journaled_step = e->s.step;
	m->journaled_generation = e->s.generation;
	m->recovered = true;
	/* Its outcome was counted by the run that reached it. */
	m->metrics_counted = migration_step_is_terminal(e->s.step);
	rc->loaded++;
}

static void recover_bad(const char *file, const char *reason, bool renamed, void *userdata)
{
	struct recovery *rc = userdata;

	rc->set_aside++;
	log_error("session journal %s/%s: %s; %s, not trusted: its migration is not resumed",
		  journal_dir(rc->vcd->journal), file, reason,
		  renamed ? "set aside as " JOURNAL_CORRUPT : "could not even be set aside");
}

/* Resume or abort m, loaded from the journal (DESIGN.md section 3). The
 * source never wrote its VM, so aborting it is always safe; what it may
 * resume is a final state the target confirmed (FINAL: replay it until the
 * target's Applied arrives). A target applies nothing it cannot prove
 * current: a recovered final state waits for the source's replay. */
static void recover_resolve(struct vcd *vcd, struct migration *m)
{
	char reason[SESSION_REASON_MAX + 1];
	const char *step = migration_step_to_string(m->s.step);
	struct peer_link *link;

	switch (session_recovery_of(&m->s)) {
	case SESSION_RECOVERY_REPLAY_FINAL:
		log_warning("vm=%s migration=%s role=source: recovered at step final "
			    "(generation %" PRIu64 "): replaying it to %s at %s",
			    m->s.vm_id, m->s.migration_id, m->s.generation, m->s.peer_identity,
			    m->peer_address);
		m->replay_attempts = 0;
		migration_replay_cb(-1, 0, m);
		return;
	case SESSION_RECOVERY_ABORT:
		if (m->s.role == VM_ROLE_SOURCE)
			snprintf(reason, sizeof(reason),
				 "vcounterd restarted at step %s, before the target confirmed the "
				 "final state; the source VM was not written",
				 step);
		else
			snprintf(reason, sizeof(reason),
				 "vcounterd restarted before the final state arrived");
		if (session_abort(&m->s, reason, clock_ns(CLOCK_MONOTONIC)) != 0)
			return;
		log_warning("vm=%s migration=%s role=%s step=aborted: %s", m->s.vm_id,
			    m->s.migration_id, vm_role_to_string(m->s.role), reason);
		if (m->s.role == VM_ROLE_SOURCE && m->peer_address[0] &&
		    peer_link_get_outgoing(&vcd->migrations->links, m->peer_address,
					   m->s.peer_identity, &link) == 0) {
			m->link_id = link->id;
			send_abort(vcd, m, reason);
		}
		migration_record_after(vcd, m);
		migration_changed(vcd, m);
		return;
	case SESSION_RECOVERY_AWAIT_SOURCE:
		session_target_recovered(&m->s, clock_ns(CLOCK_MONOTONIC));
		migration_arm_timer(vcd, m);
		log_warning("vm=%s migration=%s role=target: recovered at step %s (generation "
			    "%" PRIu64 "): apply refused until the source replays it, for at most "
			    "%u ms",
			    m->s.vm_id, m->s.migration_id, step, m->s.generation,
			    vcd->config.peer_timeout_ms);
		migration_record_after(vcd, m);
		migration_changed(vcd, m);
		return;
	case SESSION_RECOVERY_KEEP:
		/* A target at APPLIED: the source's replay gets the Applied again;
		 * without one, it is done after the peer timeout. */
		if (!migration_step_is_terminal(m->s.step)) {
			log_info("vm=%s migration=%s role=target: recovered at step %s; the "
				 "source's replay gets the report again",
				 m->s.vm_id, m->s.migration_id, step);
			migration_arm_timer(vcd, m);
		}
		return;
	}
}

int migrations_recover(struct vcd *vcd)
{
	static char env_dir[4096];
	const char *dir = vcd->config.state_dir;
	struct recovery rc = { .vcd = vcd };
	char path[4200];
	int r;

	if (!dir) {
		const char *env = getenv("STATE_DIRECTORY"); /* systemd: a:b:c */

		if (env && *env) {
			snprintf(env_dir, sizeof(env_dir), "%.*s", (int)strcspn(env, ":"), env);
			dir = env_dir;
		}
	}
	if (!dir) {
		log_info("no state directory (--state-directory): migrations are not journaled, "
			 "and a restart fails those running");
		return 0;
	}
	snprintf(path, sizeof(path), "%s/journal", dir);
	/* systemd makes StateDirectory=; by hand, the directory may be new. */
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_error_errno(r, "cannot create the state directory %s", dir);
		return r;
	}
	r = journal_open(path, &vcd->journal);
	if (r < 0) {
		log_error_errno(r, "cannot open the session journal %s", path);
		return r;
	}
	r = journal_load(vcd->journal, recover_one, recover_bad, &rc);
	if (r < 0) {
		log_error_errno(r, "cannot read the session journal %s", path);
		return r;
	}
	for (struct migration *m = vcd->migrations->list; m; m = m->next)
		if (m->recovered)
			recover_resolve(vcd, m);
	log_info("session journal %s: %zu migrations loaded, %zu files set aside, %zu dropped",
		 path, rc.loaded, rc.set_aside, rc.dropped);
	return 0;
}

int migrations_start(struct vcd *vcd)
{
	vcd->migrations = calloc(1, sizeof(*vcd->migrations));
	if (!vcd->migrations)
		return -ENOMEM;
	return peer_links_start(&vcd->migrations->links, vcd, &link_handlers, vcd);
}

int migrations_observe(struct vcd *vcd, migration_observer_fn fn, void *userdata)
{
	struct migrations *ms = vcd->migrations;

	if (ms->n_observers >= MIGRATIONS_MAX_OBSERVERS)
		return -ENOSPC;
	ms->observers[ms->n_observers].fn = fn;
	ms->observers[ms->n_observers].userdata = userdata;
	ms->n_observers++;
	return 0;
}

void migrations_tls_changed(struct vcd *vcd)
{
	if (vcd->migrations)
		peer_links_tls_changed(&vcd->migrations->links);
}

int migrations_listen_port(struct vcd *vcd)
{
	return vcd->migrations ? peer_links_listen_port(&vcd->migrations->links) : -1;
}

void migrations_stop(struct vcd *vcd)
{
	struct migrations *ms = vcd->migrations;

	if (!ms)
		return;
	peer_links_stop(&ms->links);
	while (ms->list)
		migration_free(vcd, ms->list);
	vcd->journal = journal_close(vcd->journal);
	free(ms);
	vcd->migrations = NULL;
}

const struct vmm_migration_handlers migration_vmm_handlers = {
	.migrate_out = migration_handle_migrate_out,
	.report_paused = migration_handle_report_paused,
	.apply = migration_handle_apply,
	.count = migration_count,
};
