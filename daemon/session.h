/* session.h - the migration state machine, one per migration and side.
 * Pure: no I/O, no clocks (time is passed in). It decides which step may
 * follow which, which final state is current, and what a replay is; the
 * glue (daemon/migration.c) performs the I/O the answer calls for. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "counter_state.h"

#define SESSION_PEER_NAME_MAX 255
#define SESSION_REASON_MAX    255

struct session {
	char migration_id[VC_MIGRATION_ID_LEN + 1];
	char vm_id[VC_VM_ID_MAX + 1];
	enum vm_role role;
	/* The peer this migration names: source side, the target's expected
	 * identity; target side, the identity that sent Prepare. Every later
	 * message must come from it. */
	char peer_identity[SESSION_PEER_NAME_MAX + 1];
	enum migration_step step;
	uint64_t generation; /* last final-state generation sent / accepted */
	bool has_final;
	struct counter_state prepared; /* source state at prepare */
	struct counter_state final;    /* current final state */
	bool has_report;
	struct migration_report report;
	char reason[SESSION_REASON_MAX + 1]; /* why ABORTED/FAILED */
	uint64_t started_ns;		     /* monotonic, passed in */
	uint64_t updated_ns;
	/* Target at FINAL, recovered after a restart (session_target_
	 * recovered): the apply is refused until the source replays this
	 * generation or sends a newer one. */
	bool awaiting_source;
};

/* All transitions return 0 on success, or:
 *   -EPROTO  not allowed from the current step (message out of order), or a
 *            function of the other role (a source_* call on a target session)
 *   -EPERM   from a peer other than the one the session names (exact strcmp)
 *   -ESTALE  a final state whose generation is older than the current one
 *   -EEXIST  same generation but different content (conflicting replay)
 *   -ECANCELED session already aborted/failed
 *   -EINVAL  NULL arguments, a report naming another migration/VM, a final
 *            state with generation 0 (generations start at 1)
 * A refused transition, and a replay answered with 1, leave the session
 * unchanged (byte for byte).
 * Checks run in this order: peer identity, then aborted/failed, then role,
 * then step, then generation/content. Identity goes first so that a foreign
 * peer learns nothing about the session, not even that it was aborted. */

/* -EINVAL for an invalid id, a role other than source/target, or an empty or
 * over-long (> SESSION_PEER_NAME_MAX) peer identity; s is untouched then. */
int session_init(struct session *s, enum vm_role role, const char *migration_id, const char *vm_id,
		 const char *peer_identity, uint64_t now_ns);

/* Source side. */
int session_source_prepare_sent(struct session *s, const struct counter_state *state,
				uint64_t now_ns); /* NONE -> PREPARING */
int session_source_prepare_acked(struct session *s, const char *from, uint64_t now_ns);
/* PREPARED or FINAL -> FINALIZING with generation + 1 (a VMM that paused,
 * resumed and paused again sends a newer final state). -EOVERFLOW if the
 * generation would wrap. */
int session_source_begin_final(struct session *s, const struct counter_state *final,
			       uint64_t now_ns, uint64_t *ret_generation);
int session_source_final_acked(struct session *s, const char *from, uint64_t generation,
			       uint64_t now_ns); /* FINALIZING -> FINAL */
/* FINAL -> DONE: the target reports what it applied (the source then acks).
 * The report's generation must be the current one (older: -ESTALE, newer:
 * -EPROTO). In DONE the same report again returns 1 (ack it again); a
 * different one for that generation -EEXIST. */
int session_source_applied(struct session *s, const char *from,
			   const struct migration_report *report, uint64_t now_ns);

/* Target side. */
int session_target_prepare(struct session *s, const char *from, const struct counter_state *state,
			   uint64_t now_ns); /* NONE -> PREPARED */
/* PREPARED/FINAL -> FINAL. Returns 1 (and changes nothing) for an exact
 * replay of the current final state: a no-op, answered as before; 2 for one
 * that confirms a recovered state (awaiting_source cleared: it may now be
 * applied). In FINAL a newer generation replaces the current one (and
 * confirms itself). From APPLYING on, any other generation is refused with
 * -EPROTO; an exact replay still returns 1. */
int session_target_final(struct session *s, const char *from, uint64_t generation,
			 const struct counter_state *state, uint64_t now_ns);
/* FINAL -> APPLYING; returns 1 if already applied (APPLIED/DONE): a no-op,
 * answer with s->report. -EPROTO without a final state or while APPLYING;
 * -ESTALE while awaiting_source (the session unchanged). */
int session_target_begin_apply(struct session *s, uint64_t now_ns);
/* APPLYING -> APPLIED; the report must name this migration, VM and the
 * current generation (-EINVAL otherwise). */
int session_target_applied(struct session *s, const struct migration_report *report,
			   uint64_t now_ns);
/* APPLYING -> FINAL again: the write failed, the source may retry. The reason
 * is kept in s->reason. */
int session_target_apply_failed(struct session *s, const char *reason, uint64_t now_ns);
int session_target_acked(struct session *s, const char *from,
			 uint64_t now_ns); /* APPLIED -> DONE */
/* APPLIED -> DONE without the source's Ack (lost with a link, or the source
 * restarted after it was done): the apply stands, and a replay of the final
 * state is still answered with the report (session_target_final returns 1
 * in DONE). -EPROTO at any other step or on a source. */
int session_target_ack_lost(struct session *s, uint64_t now_ns);
/* A target loaded from the journal at FINAL or APPLYING (an interrupted
 * apply: back to FINAL, the VMM must apply again): awaiting_source set, so
 * that nothing is applied the source has not confirmed as its newest. 0, or
 * -EPROTO at another step or on a source. */
int session_target_recovered(struct session *s, uint64_t now_ns);

/* Any non-terminal step before APPLIED (APPLYING included) -> ABORTED. A
 * session that applied (APPLIED, or DONE on either side) cannot un-apply:
 * -EALREADY. Returns 1 if already aborted, -ECANCELED if failed. There is no
 * `from`: the caller checks that a peer's Abort comes from s->peer_identity.
 * reason is truncated to SESSION_REASON_MAX bytes. */
int session_abort(struct session *s, const char *reason, uint64_t now_ns);
/* A controller's abort: session_abort, except on a source at FINAL. Its
 * final state may be with the target already, and only the target knows
 * whether it applied it: -EINPROGRESS, the session unchanged; a controller
 * aborts on the target, which aborts (if it had not applied) and tells
 * this host, or applied. */
int session_abort_by_controller(struct session *s, const char *reason, uint64_t now_ns);
/* Any non-terminal step -> FAILED. Returns 1 if already failed, -ECANCELED if
 * aborted, -EALREADY if DONE. */
int session_fail(struct session *s, const char *reason, uint64_t now_ns);

/* Queries: decisions the glue asks for, the session unchanged. */

/* May the source's VMM report its guest paused now (its final state is then
 * read and sent)? 0 at PREPARED, or at FINAL (a newer generation: it paused
 * again); otherwise what session_source_begin_final would refuse with:
 * -ECANCELED, -EPROTO (another step or role), -EINVAL. */
int session_source_may_finalize(const struct session *s);

/* Is a FinalAck of generation from `from` the answer to a replay of the
 * final state (after a restart or a lost link): the source at FINAL, that
 * generation its current one, `from` its peer? Nothing to do then but
 * note it; the target's Applied follows if it applied. */
bool session_final_ack_is_replay(const struct session *s, const char *from, uint64_t generation);

/* What a target knows of the VM a Prepare names: its registry entry and
 * the migrations running on it. */
struct session_target_vm {
	bool registered; /* registered here as a target, and probed */
	bool busy;	 /* a target migration of it has not ended */
	enum counter_arch arch;
	bool offset_control; /* its KVM honours offset writes (the probe) */
	uint32_t n_vcpus;
};

/* May a Prepare carrying state start a target migration of vm? 0, or the
 * first refusal in this order: -ENOENT (no such target VM), -EBUSY (one is
 * running on it), -ENOEXEC (state of another counter: foreign whatever
 * this host's KVM can do), -EOPNOTSUPP (KVM here ignores offset writes),
 * -EINVAL (another vCPU count). */
int session_target_admit(const struct session_target_vm *vm, const struct counter_state *state);

/* A handoff's error bound against the operator's limit (0: none) and
 * policy (error-bound-policy refuse or warn). */
enum session_bound_verdict {
	SESSION_BOUND_WITHIN,
	SESSION_BOUND_WARN,   /* over the limit, policy warn: go on, say so */
	SESSION_BOUND_REFUSE, /* over the limit, policy refuse: refuse at prepare */
};
enum session_bound_verdict session_error_bound_verdict(uint64_t bound_ns, uint64_t limit_ns,
						       bool refuse);

/* What a session loaded from the journal after a restart does (DESIGN.md
 * section 3). The source never wrote its VM, so aborting it is always safe;
 * a target applies nothing it cannot prove current. */
enum session_recovery {
	SESSION_RECOVERY_KEEP,	       /* ended, or a target at APPLIED or DONE: as it was */
	SESSION_RECOVERY_REPLAY_FINAL, /* source at FINAL: send it again until Applied */
	SESSION_RECOVERY_ABORT,	       /* source before FINAL, target at PREPARED */
	/* target at FINAL or APPLYING (the apply interrupted: back to FINAL):
	 * the apply is refused until the source replays that generation. */
	SESSION_RECOVERY_AWAIT_SOURCE,
};
enum session_recovery session_recovery_of(const struct session *s);
