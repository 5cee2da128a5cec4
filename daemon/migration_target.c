/* migration_target.c - a migration on the target side: Prepare admitted,
 * the final state taken, the apply handed to the VMM and checked, Applied
 * sent (migration_internal.h). */
#include "migration_internal.h"

static void send_applied(struct vcd *vcd, struct migration *m, struct peer_link *link,
			 const struct migration_report *rep);
static void push_apply_op(struct vcd *vcd, struct migration *m);

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

void target_handle_prepare(struct vcd *vcd, struct peer_link *link,
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

void target_handle_final(struct vcd *vcd, struct peer_link *link,
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
	migration_sync_or_unknown(vcd, m, "target", &dst.sync);
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
	migration_log_outcome(rep, "target");
	reply_apply(vcd, m->vmm_conn_id, m->vmm_request_id, rep);
	m->vmm_request_id = 0;
	migration_changed(vcd, m);
	/* The source's Ack may never come (lost with the link): done anyway
	 * after the peer timeout (migration_timeout_cb). */
	migration_arm_timer(vcd, m);

	link = migration_link_find(vcd, m->link_id);
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
	ctx = migration_op_ctx_new(m);
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
void target_arrived(struct vcd *vcd, struct migration *m)
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

void migration_handle_apply(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
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
