/* migration_source.c - a migration on the source side: started by a VMM or
 * a controller, Prepare, the final state read from the paused guest and
 * sent (and replayed on a new link), the target's answers
 * (migration_internal.h). The source never writes its VM. */
#include "migration.h"
#include "migration_internal.h"

/* A source whose link broke after the final state was delivered replays it
 * on a new link (the target may have restarted and must see it again
 * before it applies): this many times, this far apart. */
#define REPLAY_MAX_ATTEMPTS 10
#define REPLAY_INTERVAL_MS  500

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

	r = migration_new_id(id);
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
		migration_journal_failed(vcd, m, r);
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

void migration_handle_migrate_out(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
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
	migration_view_of(m, ret);
	return 0;
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
	link = migration_link_find(vcd, m->link_id);
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
	migration_sync_or_unknown(vcd, m, "source", &final->sync);
	r = session_source_begin_final(&m->s, final, clock_ns(CLOCK_MONOTONIC), &generation);
	if (r < 0) {
		migration_fail(vcd, m, r, "state machine refused the final state");
		return;
	}
	r = migration_record(vcd, m);
	if (r < 0) {
		migration_journal_failed(vcd, m, r);
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

void migration_handle_report_paused(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
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
	ctx = migration_op_ctx_new(m);
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

void source_handle_applied(struct vcd *vcd, struct peer_link *link,
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
	migration_log_outcome(rep, "source");
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

void source_handle_prepare_ack(struct vcd *vcd, struct peer_link *link,
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
		migration_journal_failed(vcd, m, r);
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

void source_handle_final_ack(struct vcd *vcd, struct peer_link *link,
			     const Vcounter__V1__PeerMessage *msg, const char *migration_id)
{
	Vcounter__V1__VmmMessage reply = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__ReportPausedReply rpr = VCOUNTER__V1__REPORT_PAUSED_REPLY__INIT;
	struct migration *m = migration_find(vcd, migration_id);
	int r;

	if (!m || m->link_id != link->id)
		return;
	/* The answer to a replay (source_replay_cb): the target holds
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
		migration_journal_failed(vcd, m, r);
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

void source_handle_error_reply(struct vcd *vcd, struct peer_link *link,
			       const Vcounter__V1__PeerMessage *msg, const char *migration_id)
{
	struct migration *m = migration_find(vcd, migration_id);
	const char *text = msg->error->message ? msg->error->message : "";

	if (!m)
		return;
	migration_fail(vcd, m, wire_errno_from_error(msg->error), "peer %s refused: %s",
		       link->identity, text);
}

void source_replay_cb(evutil_socket_t fd, short what, void *arg)
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
		source_schedule_replay(vcd, m);
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
void source_schedule_replay(struct vcd *vcd, struct migration *m)
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
		m->replay = evtimer_new(vcd->base, source_replay_cb, m);
	if (!m->replay)
		return;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(m->replay, &tv);
}
