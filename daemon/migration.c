/* migration.c - migrations end to end (DESIGN.md section 3), their entry
 * points: the VMM's requests and the peer link's messages dispatched to
 * the source and target sides, the controller's calls, the registry's
 * news of VMs, timeouts, start and stop. The flow is in migration_source.c,
 * migration_target.c and migration_recovery.c over migration_core.c, driven
 * by the pure state machine in session.c. The source never writes to its
 * VM. */
#include "migration.h"
#include "migration_internal.h"

static const struct peer_link_handlers link_handlers;

int migration_abort(struct vcd *vcd, const char *migration_id, const char *reason,
		    struct migration_view *ret)
{
	struct migration *m = migration_find(vcd, migration_id);
	int r;

	if (!m)
		return -ENOENT;
	r = session_abort_by_controller(&m->s, reason, clock_ns(CLOCK_MONOTONIC));
	migration_view_of(m, ret);
	if (r != 0)
		return r; /* 1: already aborted; -EALREADY applied; -ECANCELED failed;
			   * -EINPROGRESS: the target decides */
	evtimer_del(m->timer);
	migration_withdraw_apply_op(vcd, m);
	log_info("vm=%s migration=%s role=%s step=aborted: by a controller: %s", m->s.vm_id,
		 m->s.migration_id, vm_role_to_string(m->s.role), reason);
	migration_send_abort(vcd, m, reason);
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
	migration_view_of(m, ret);
	return 0;
}

void migrations_foreach(struct vcd *vcd,
			void (*cb)(const struct migration_view *view, void *userdata),
			void *userdata)
{
	struct migration_view view;

	for (struct migration *m = vcd->migrations ? vcd->migrations->list : NULL; m; m = m->next) {
		migration_view_of(m, &view);
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
	migration_withdraw_apply_op(vcd, m);
	log_info("vm=%s migration=%s step=aborted: by peer %s: %s", m->s.vm_id, m->s.migration_id,
		 link->identity, reason);
	migration_reply_vmm_error(vcd, m, -ECANCELED, "migration aborted by the peer");
	migration_record_after(vcd, m);
	migration_changed(vcd, m);
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
		migration_withdraw_apply_op(vcd, m);
		log_warning("vm=%s migration=%s step=aborted: the VM left this daemon", vm_id,
			    m->s.migration_id);
		migration_send_abort(vcd, m, "VM unregistered");
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

static void link_request_cb(struct peer_link *link, const Vcounter__V1__PeerMessage *msg,
			    void *userdata)
{
	struct vcd *vcd = userdata;

	switch (msg->body_case) {
	case VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE:
		target_handle_prepare(vcd, link, msg);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE:
		target_handle_final(vcd, link, msg);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED:
		source_handle_applied(vcd, link, msg);
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
		source_handle_prepare_ack(vcd, link, msg, migration_id);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_ACK:
		source_handle_final_ack(vcd, link, msg, migration_id);
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR:
		source_handle_error_reply(vcd, link, msg, migration_id);
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
			source_schedule_replay(vcd, m);
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

int migrations_start(struct vcd *vcd)
{
	vcd->migrations = calloc(1, sizeof(*vcd->migrations));
	if (!vcd->migrations)
		return -ENOMEM;
	vcd->migrations->on_timeout = migration_timeout_cb;
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
