/* migration_core.c - the migrations' registry, the journal steps of a
 * migration and its observers, and the helpers both sides use
 * (migration_internal.h). */
#include "migration.h"
#include "migration_internal.h"

/* NULL also once the migrations stopped: the VMM socket stops after them
 * (manager.c), and a KVM op it still held ends then, its callback asking
 * for a migration that is gone. */
struct migration *migration_find(struct vcd *vcd, const char *migration_id)
{
	if (!migration_id || !vcd->migrations)
		return NULL;
	for (struct migration *m = vcd->migrations->list; m; m = m->next)
		if (strcmp(m->s.migration_id, migration_id) == 0)
			return m;
	return NULL;
}

struct peer_link *migration_link_find(struct vcd *vcd, uint64_t link_id)
{
	return vcd->migrations ? peer_link_find(&vcd->migrations->links, link_id) : NULL;
}

size_t migration_count(struct vcd *vcd)
{
	return vcd->migrations ? vcd->migrations->n : 0;
}

int migration_new_id(char ret[VC_MIGRATION_ID_LEN + 1])
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

void migration_free(struct vcd *vcd, struct migration *m)
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

/* Room for one more: evict the oldest finished migration when full. */
int migration_new(struct vcd *vcd, struct migration **ret)
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
	m->timer = evtimer_new(vcd->base, ms->on_timeout, m);
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

void migration_arm_timer(struct vcd *vcd, struct migration *m)
{
	struct timeval tv = {
		.tv_sec = vcd->config.peer_timeout_ms / 1000,
		.tv_usec = (vcd->config.peer_timeout_ms % 1000) * 1000,
	};

	evtimer_add(m->timer, &tv);
}

/* Answer the VMM request this migration owes, with an error. */
void migration_reply_vmm_error(struct vcd *vcd, struct migration *m, int error, const char *text)
{
	if (!m->vmm_request_id)
		return;
	vmm_reply_error(vcd, m->vmm_conn_id, m->vmm_request_id, error, "%s", text);
	m->vmm_request_id = 0;
}

/* A target migration that ends without applying voids the op it sent ahead. */
void migration_withdraw_apply_op(struct vcd *vcd, struct migration *m)
{
	uint64_t op_id = m->apply_op_id;

	if (!op_id)
		return;
	m->apply_op_id = 0;
	vmm_kvm_op_cancel(vcd, m->apply_op_conn_id, op_id);
}

void migration_view_of(const struct migration *m, struct migration_view *ret)
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
int migration_record(struct vcd *vcd, struct migration *m)
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
void migration_record_after(struct vcd *vcd, struct migration *m)
{
	if ((m->journaled_step != m->s.step || m->journaled_generation != m->s.generation) &&
	    !(m->s.role == VM_ROLE_TARGET && m->s.step == STEP_APPLYING))
		(void)migration_record(vcd, m);
}

/* Tell the observers (control's watchers, the metrics, the VMM) of m's
 * change. */
void migration_changed(struct vcd *vcd, struct migration *m)
{
	struct migrations *ms = vcd->migrations;
	struct migration_event ev = { .outcome_counted = &m->metrics_counted };

	migration_view_of(m, &ev.view);
	for (size_t i = 0; i < ms->n_observers; i++)
		ms->observers[i].fn(ms->observers[i].userdata, &ev);
}

void migration_fail(struct vcd *vcd, struct migration *m, int error, const char *fmt, ...)
{
	char reason[SESSION_REASON_MAX + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	evtimer_del(m->timer);
	migration_withdraw_apply_op(vcd, m);
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
void migration_journal_failed(struct vcd *vcd, struct migration *m, int error)
{
	char step[32];

	snprintf(step, sizeof(step), "%s", migration_step_to_string(m->s.step));
	migration_send_abort(vcd, m, "the peer's session journal failed");
	migration_fail(vcd, m, error, "cannot record step %s in the session journal: %s", step,
		       strerror(error < 0 ? -error : error));
}

struct op_ctx *migration_op_ctx_new(const struct migration *m)
{
	struct op_ctx *ctx = calloc(1, sizeof(*ctx));

	if (ctx)
		memcpy(ctx->migration_id, m->s.migration_id, sizeof(ctx->migration_id));
	return ctx;
}

/* After the pause a migration is not failed for its error estimate: a sync
 * source that stopped answering since prepare leaves the bound unknown. */
void migration_sync_or_unknown(struct vcd *vcd, const struct migration *m, const char *role,
			       struct sync_error *sync)
{
	char err[256];

	if (sync_source_apply(vcd->sync, clock_ns(CLOCK_MONOTONIC), sync, err, sizeof(err)) == 0)
		return;
	sync->unsynced = true;
	log_warning("vm=%s migration=%s role=%s: %s; the error bound is unknown", m->s.vm_id,
		    m->s.migration_id, role, err);
}

void migration_log_outcome(const struct migration_report *rep, const char *role)
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

void migration_send_abort(struct vcd *vcd, struct migration *m, const char *reason)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Abort ab = VCOUNTER__V1__ABORT__INIT;
	struct peer_link *link = migration_link_find(vcd, m->link_id);

	if (!link)
		return;
	ab.migration_id = m->s.migration_id;
	ab.reason = (char *)reason;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ABORT;
	msg.abort = &ab;
	peer_link_send(link, &msg);
}
