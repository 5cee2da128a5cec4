/* session.c - the migration state machine (session.h): which step may follow
 * which, which final state is current, what counts as a replay. No I/O. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "session.h"

static bool step_is_cancelled(enum migration_step step)
{
	return step == STEP_ABORTED || step == STEP_FAILED;
}

/* Same content, field by field: struct padding is not content, and only the
 * first n_vcpus offsets are. */
static bool counter_state_equal(const struct counter_state *a, const struct counter_state *b)
{
	return a->backend == b->backend && a->arch == b->arch &&
	       a->guest_tsc_khz == b->guest_tsc_khz &&
	       a->tsc_scaling_ratio == b->tsc_scaling_ratio &&
	       a->tsc_scaling_frac_bits == b->tsc_scaling_frac_bits && a->n_vcpus == b->n_vcpus &&
	       a->n_vcpus <= VC_MAX_VCPUS &&
	       memcmp(a->offset_cycles, b->offset_cycles, a->n_vcpus * sizeof(uint64_t)) == 0 &&
	       a->kvmclock.clock_ns == b->kvmclock.clock_ns &&
	       a->kvmclock.flags == b->kvmclock.flags &&
	       a->kvmclock.realtime_ns == b->kvmclock.realtime_ns &&
	       a->kvmclock.host_tsc == b->kvmclock.host_tsc &&
	       a->kvmclock.host_tsc_width == b->kvmclock.host_tsc_width &&
	       a->anchor.tai_ns == b->anchor.tai_ns && a->anchor.host_tsc == b->anchor.host_tsc &&
	       a->anchor.width_ns == b->anchor.width_ns && a->anchor.source == b->anchor.source &&
	       a->anchor.host_tsc_khz == b->anchor.host_tsc_khz &&
	       a->sync.maxerror_ns == b->sync.maxerror_ns &&
	       a->sync.esterror_ns == b->sync.esterror_ns && a->sync.unsynced == b->sync.unsynced &&
	       a->sync.tai_offset_s == b->sync.tai_offset_s && a->sync.leap == b->sync.leap;
}

static bool report_equal(const struct migration_report *a, const struct migration_report *b)
{
	return strcmp(a->migration_id, b->migration_id) == 0 && strcmp(a->vm_id, b->vm_id) == 0 &&
	       a->backend == b->backend && a->generation == b->generation &&
	       a->n_vcpus == b->n_vcpus && a->n_vcpus <= VC_MAX_VCPUS &&
	       memcmp(a->offsets_before, b->offsets_before, a->n_vcpus * sizeof(uint64_t)) == 0 &&
	       memcmp(a->offsets_after, b->offsets_after, a->n_vcpus * sizeof(uint64_t)) == 0 &&
	       a->elapsed_ns == b->elapsed_ns && a->delta_cycles == b->delta_cycles &&
	       a->error_bound_ns == b->error_bound_ns &&
	       a->apply_latency_ns == b->apply_latency_ns && a->guest_tsc_khz == b->guest_tsc_khz &&
	       a->error_bound_exceeded == b->error_bound_exceeded && a->clamped_ns == b->clamped_ns;
}

/* A report must describe this migration; anything else is a caller bug or a
 * peer mixing up migrations on a shared link. */
static bool report_names_session(const struct session *s, const struct migration_report *report)
{
	return strcmp(report->migration_id, s->migration_id) == 0 &&
	       strcmp(report->vm_id, s->vm_id) == 0 && report->n_vcpus <= VC_MAX_VCPUS;
}

static void set_reason(struct session *s, const char *reason)
{
	/* snprintf truncates at SESSION_REASON_MAX and always terminates. */
	snprintf(s->reason, sizeof(s->reason), "%s", reason ? reason : "");
}

/* Checks shared by every transition driven by a message from the peer, in
 * this order:
 *   1. identity (-EPERM) first, so a foreign peer learns nothing about the
 *      session - not even whether it was aborted;
 *   2. cancelled (-ECANCELED): nothing moves an aborted or failed session;
 *   3. role (-EPROTO): a source-side message reaching a target session is as
 *      out of order as a message for the wrong step. */
static int check_from(const struct session *s, const char *from)
{
	if (!from || strcmp(from, s->peer_identity) != 0)
		return -EPERM;
	return 0;
}

static int check_live(const struct session *s, enum vm_role role)
{
	if (step_is_cancelled(s->step))
		return -ECANCELED;
	if (s->role != role)
		return -EPROTO;
	return 0;
}

static int check_peer_event(const struct session *s, const char *from, enum vm_role role)
{
	int r;

	r = check_from(s, from);
	if (r < 0)
		return r;
	return check_live(s, role);
}

static void move_to(struct session *s, enum migration_step step, uint64_t now_ns)
{
	s->step = step;
	s->updated_ns = now_ns;
	/* Only a recovered FINAL waits; any step it moves to has moved on. */
	s->awaiting_source = false;
}

int session_init(struct session *s, enum vm_role role, const char *migration_id, const char *vm_id,
		 const char *peer_identity, uint64_t now_ns)
{
	size_t peer_len;

	if (!s)
		return -EINVAL;
	if (role != VM_ROLE_SOURCE && role != VM_ROLE_TARGET)
		return -EINVAL;
	if (!migration_id_is_valid(migration_id) || !vm_id_is_valid(vm_id))
		return -EINVAL;
	if (!peer_identity)
		return -EINVAL;
	/* An empty identity would match a peer whose certificate names nobody. */
	peer_len = strnlen(peer_identity, SESSION_PEER_NAME_MAX + 1);
	if (peer_len == 0 || peer_len > SESSION_PEER_NAME_MAX)
		return -EINVAL;

	memset(s, 0, sizeof(*s));
	memcpy(s->migration_id, migration_id, VC_MIGRATION_ID_LEN + 1);
	memcpy(s->vm_id, vm_id, strlen(vm_id) + 1);
	memcpy(s->peer_identity, peer_identity, peer_len + 1);
	s->role = role;
	s->step = STEP_NONE;
	s->started_ns = now_ns;
	s->updated_ns = now_ns;
	return 0;
}

/* ---- source side ---- */

int session_source_prepare_sent(struct session *s, const struct counter_state *state,
				uint64_t now_ns)
{
	int r;

	if (!s || !state)
		return -EINVAL;
	r = check_live(s, VM_ROLE_SOURCE);
	if (r < 0)
		return r;
	if (s->step != STEP_NONE)
		return -EPROTO;
	s->prepared = *state;
	move_to(s, STEP_PREPARING, now_ns);
	return 0;
}

int session_source_prepare_acked(struct session *s, const char *from, uint64_t now_ns)
{
	int r;

	if (!s)
		return -EINVAL;
	r = check_peer_event(s, from, VM_ROLE_SOURCE);
	if (r < 0)
		return r;
	if (s->step != STEP_PREPARING)
		return -EPROTO;
	move_to(s, STEP_PREPARED, now_ns);
	return 0;
}

int session_source_begin_final(struct session *s, const struct counter_state *final,
			       uint64_t now_ns, uint64_t *ret_generation)
{
	int r;

	if (!s || !final)
		return -EINVAL;
	r = check_live(s, VM_ROLE_SOURCE);
	if (r < 0)
		return r;
	if (s->step != STEP_PREPARED && s->step != STEP_FINAL)
		return -EPROTO;
	if (s->generation == UINT64_MAX)
		return -EOVERFLOW;
	s->generation++;
	s->final = *final;
	s->has_final = true;
	move_to(s, STEP_FINALIZING, now_ns);
	if (ret_generation)
		*ret_generation = s->generation;
	return 0;
}

int session_source_final_acked(struct session *s, const char *from, uint64_t generation,
			       uint64_t now_ns)
{
	int r;

	if (!s)
		return -EINVAL;
	r = check_peer_event(s, from, VM_ROLE_SOURCE);
	if (r < 0)
		return r;
	if (s->step != STEP_FINALIZING)
		return -EPROTO;
	/* A late ack of a final state we have since replaced. */
	if (generation < s->generation)
		return -ESTALE;
	/* An ack of a generation we never sent. */
	if (generation > s->generation)
		return -EPROTO;
	move_to(s, STEP_FINAL, now_ns);
	return 0;
}

int session_source_applied(struct session *s, const char *from,
			   const struct migration_report *report, uint64_t now_ns)
{
	int r;

	if (!s || !report)
		return -EINVAL;
	r = check_peer_event(s, from, VM_ROLE_SOURCE);
	if (r < 0)
		return r;
	if (!report_names_session(s, report))
		return -EINVAL;
	/* The target may resend Applied (e.g. after a reconnect): the same report
	 * again is answered as before, with an Ack. */
	if (s->step == STEP_DONE && s->has_report) {
		if (report->generation != s->report.generation)
			return -EPROTO;
		return report_equal(report, &s->report) ? 1 : -EEXIST;
	}
	if (s->step != STEP_FINAL)
		return -EPROTO;
	if (report->generation < s->generation)
		return -ESTALE;
	if (report->generation > s->generation)
		return -EPROTO;
	s->report = *report;
	s->has_report = true;
	move_to(s, STEP_DONE, now_ns);
	return 0;
}

/* ---- target side ---- */

int session_target_prepare(struct session *s, const char *from, const struct counter_state *state,
			   uint64_t now_ns)
{
	int r;

	if (!s || !state)
		return -EINVAL;
	r = check_peer_event(s, from, VM_ROLE_TARGET);
	if (r < 0)
		return r;
	if (s->step != STEP_NONE)
		return -EPROTO;
	s->prepared = *state;
	move_to(s, STEP_PREPARED, now_ns);
	return 0;
}

/* The replay rule:
 *   PREPARED                  any generation >= 1 becomes the final state
 *   FINAL                     newer: replaces; same and same content: 1;
 *                             same, other content: -EEXIST; older: -ESTALE
 *   APPLYING, APPLIED, DONE   same and same content: 1; same, other content:
 *                             -EEXIST; any other generation: -EPROTO (what is
 *                             being or was applied cannot be replaced)
 * Generation 0 is never sent (the source's first final state is 1). */
int session_target_final(struct session *s, const char *from, uint64_t generation,
			 const struct counter_state *state, uint64_t now_ns)
{
	int r;

	if (!s || !state)
		return -EINVAL;
	r = check_peer_event(s, from, VM_ROLE_TARGET);
	if (r < 0)
		return r;

	switch (s->step) {
	case STEP_PREPARED:
		if (generation == 0)
			return -EINVAL;
		break;
	case STEP_FINAL:
		if (generation < s->generation)
			return -ESTALE;
		if (generation != s->generation)
			break;
		if (!counter_state_equal(state, &s->final))
			return -EEXIST;
		if (!s->awaiting_source)
			return 1;
		s->awaiting_source = false;
		s->updated_ns = now_ns;
		return 2;
	case STEP_APPLYING:
	case STEP_APPLIED:
	case STEP_DONE:
		if (generation != s->generation)
			return -EPROTO;
		return counter_state_equal(state, &s->final) ? 1 : -EEXIST;
	default:
		return -EPROTO;
	}

	s->generation = generation;
	s->final = *state;
	s->has_final = true;
	move_to(s, STEP_FINAL, now_ns);
	return 0;
}

int session_target_begin_apply(struct session *s, uint64_t now_ns)
{
	int r;

	if (!s)
		return -EINVAL;
	r = check_live(s, VM_ROLE_TARGET);
	if (r < 0)
		return r;
	if (s->step == STEP_APPLIED || s->step == STEP_DONE)
		return 1;
	if (s->step != STEP_FINAL || !s->has_final)
		return -EPROTO;
	if (s->awaiting_source)
		return -ESTALE;
	move_to(s, STEP_APPLYING, now_ns);
	return 0;
}

int session_target_recovered(struct session *s, uint64_t now_ns)
{
	if (!s)
		return -EINVAL;
	if (s->role != VM_ROLE_TARGET || (s->step != STEP_FINAL && s->step != STEP_APPLYING))
		return -EPROTO;
	if (s->step == STEP_APPLYING)
		session_target_apply_failed(
			s,
			"vcounterd restarted while the apply was running; the VMM must apply again",
			now_ns);
	s->awaiting_source = true;
	return 0;
}

int session_target_applied(struct session *s, const struct migration_report *report,
			   uint64_t now_ns)
{
	int r;

	if (!s || !report)
		return -EINVAL;
	r = check_live(s, VM_ROLE_TARGET);
	if (r < 0)
		return r;
	if (s->step != STEP_APPLYING)
		return -EPROTO;
	/* The glue builds the report from this session's final state; a report
	 * for another migration or generation is a bug there. */
	if (!report_names_session(s, report) || report->generation != s->generation)
		return -EINVAL;
	s->report = *report;
	s->has_report = true;
	move_to(s, STEP_APPLIED, now_ns);
	return 0;
}

int session_target_apply_failed(struct session *s, const char *reason, uint64_t now_ns)
{
	int r;

	if (!s)
		return -EINVAL;
	r = check_live(s, VM_ROLE_TARGET);
	if (r < 0)
		return r;
	if (s->step != STEP_APPLYING)
		return -EPROTO;
	/* Kept for status output; a later success or abort overwrites it. */
	set_reason(s, reason);
	move_to(s, STEP_FINAL, now_ns);
	return 0;
}

int session_target_acked(struct session *s, const char *from, uint64_t now_ns)
{
	int r;

	if (!s)
		return -EINVAL;
	r = check_peer_event(s, from, VM_ROLE_TARGET);
	if (r < 0)
		return r;
	if (s->step != STEP_APPLIED)
		return -EPROTO;
	move_to(s, STEP_DONE, now_ns);
	return 0;
}

int session_target_ack_lost(struct session *s, uint64_t now_ns)
{
	int r;

	if (!s)
		return -EINVAL;
	r = check_live(s, VM_ROLE_TARGET);
	if (r < 0)
		return r;
	if (s->step != STEP_APPLIED)
		return -EPROTO;
	move_to(s, STEP_DONE, now_ns);
	return 0;
}

/* ---- either side ---- */

int session_abort(struct session *s, const char *reason, uint64_t now_ns)
{
	if (!s)
		return -EINVAL;
	switch (s->step) {
	case STEP_ABORTED:
		return 1;
	case STEP_FAILED:
		return -ECANCELED;
	/* The target's offsets are written (and the source has heard so): the
	 * guest's counter already continues there, so there is nothing to roll
	 * back to. */
	case STEP_APPLIED:
	case STEP_DONE:
		return -EALREADY;
	default:
		break;
	}
	set_reason(s, reason);
	move_to(s, STEP_ABORTED, now_ns);
	return 0;
}

int session_abort_by_controller(struct session *s, const char *reason, uint64_t now_ns)
{
	if (s && s->role == VM_ROLE_SOURCE && s->step == STEP_FINAL)
		return -EINPROGRESS;
	return session_abort(s, reason, now_ns);
}

int session_fail(struct session *s, const char *reason, uint64_t now_ns)
{
	if (!s)
		return -EINVAL;
	switch (s->step) {
	case STEP_FAILED:
		return 1;
	case STEP_ABORTED:
		return -ECANCELED;
	case STEP_DONE:
		return -EALREADY;
	default:
		break;
	}
	set_reason(s, reason);
	move_to(s, STEP_FAILED, now_ns);
	return 0;
}

int session_source_may_finalize(const struct session *s)
{
	int r;

	if (!s)
		return -EINVAL;
	r = check_live(s, VM_ROLE_SOURCE);
	if (r < 0)
		return r;
	return s->step == STEP_PREPARED || s->step == STEP_FINAL ? 0 : -EPROTO;
}

bool session_final_ack_is_replay(const struct session *s, const char *from, uint64_t generation)
{
	return s && from && s->role == VM_ROLE_SOURCE && s->step == STEP_FINAL &&
	       generation == s->generation && strcmp(from, s->peer_identity) == 0;
}

enum session_recovery session_recovery_of(const struct session *s)
{
	if (migration_step_is_terminal(s->step))
		return SESSION_RECOVERY_KEEP;
	if (s->role == VM_ROLE_SOURCE)
		return s->step == STEP_FINAL ? SESSION_RECOVERY_REPLAY_FINAL
					     : SESSION_RECOVERY_ABORT;
	switch (s->step) {
	case STEP_PREPARED:
		return SESSION_RECOVERY_ABORT;
	case STEP_FINAL:
	case STEP_APPLYING:
		return SESSION_RECOVERY_AWAIT_SOURCE;
	default:
		return SESSION_RECOVERY_KEEP;
	}
}

int session_target_admit(const struct session_target_vm *vm, const struct counter_state *state)
{
	if (!vm->registered)
		return -ENOENT;
	if (vm->busy)
		return -EBUSY;
	if (state->arch != vm->arch)
		return -ENOEXEC;
	if (!vm->offset_control)
		return -EOPNOTSUPP;
	if (state->n_vcpus != vm->n_vcpus)
		return -EINVAL;
	return 0;
}

enum session_bound_verdict session_error_bound_verdict(uint64_t bound_ns, uint64_t limit_ns,
						       bool refuse)
{
	if (limit_ns == 0 || bound_ns <= limit_ns)
		return SESSION_BOUND_WITHIN;
	return refuse ? SESSION_BOUND_REFUSE : SESSION_BOUND_WARN;
}
