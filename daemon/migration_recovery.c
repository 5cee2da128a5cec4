/* migration_recovery.c - migrations loaded from the session journal after a
 * restart, each resumed, replayed or aborted as session_recovery_of()
 * says (migration_internal.h). */
#include "migration.h"
#include "migration_internal.h"

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
		source_replay_cb(-1, 0, m);
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
			migration_send_abort(vcd, m, reason);
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
