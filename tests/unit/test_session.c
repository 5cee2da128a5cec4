/* test_session.c - the migration state machine: both happy paths, every
 * refusal (out of order, wrong peer, stale, conflicting), replays, abort and
 * failure, and a seeded random walk checking the invariants. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "macro.h"
#include "session.h"

#define MIG   "7f3c00aa11bb22cc33dd44ee55ff6677"
#define VM    "vm-42"
#define PEER  "target.example.net"
#define OTHER "mallory.example.net"

/* Sessions are ~34 KiB: keep them off the stack. */
static struct session sess, snap;

static void make_state(struct counter_state *st, unsigned variant)
{
	memset(st, 0, sizeof(*st));
	st->backend = BACKEND_KVM_X86;
	st->arch = COUNTER_ARCH_X86_TSC;
	st->guest_tsc_khz = 2500000;
	st->n_vcpus = 4;
	for (uint32_t i = 0; i < st->n_vcpus; i++)
		st->offset_cycles[i] = UINT64_C(0xffffff0000000000) + variant * 1000;
	st->kvmclock = (struct kvmclock_state){ .clock_ns = 5000 + variant, .flags = 0xe };
	st->anchor = (struct host_anchor){
		.tai_ns = UINT64_C(1700000000000000000) + variant,
		.host_tsc = 123456789,
		.width_ns = 30,
		.source = ANCHOR_KVM_CLOCK,
		.host_tsc_khz = 2500000,
	};
	st->sync = (struct sync_error){ .maxerror_ns = 1000, .esterror_ns = 10 };
}

static void make_report(struct migration_report *r, uint64_t generation, unsigned variant)
{
	struct counter_state st;

	make_state(&st, variant);
	memset(r, 0, sizeof(*r));
	strcpy(r->migration_id, MIG);
	strcpy(r->vm_id, VM);
	r->backend = BACKEND_KVM_X86;
	r->generation = generation;
	r->n_vcpus = st.n_vcpus;
	memcpy(r->offsets_before, st.offset_cycles, sizeof(r->offsets_before));
	for (uint32_t i = 0; i < r->n_vcpus; i++)
		r->offsets_after[i] = st.offset_cycles[i] + 777;
	r->delta_cycles = 777;
	r->elapsed_ns = 311;
	r->guest_tsc_khz = st.guest_tsc_khz;
	r->apply_latency_ns = 1000 + variant;
}

/* The call must be refused with err (or answered 1) and leave every byte of
 * the session as it was. */
#define assert_unchanged_after(s, call, expected)              \
	do {                                                   \
		memcpy(&snap, (s), sizeof(snap));              \
		assert_int_equal((call), (expected));          \
		assert_memory_equal(&snap, (s), sizeof(snap)); \
	} while (0)

/* ---- driving a session to a step ---- */

static void source_to(struct session *s, enum migration_step step)
{
	struct counter_state st;
	struct migration_report report;
	uint64_t gen = 0;

	assert_int_equal(session_init(s, VM_ROLE_SOURCE, MIG, VM, PEER, 100), 0);
	if (step == STEP_ABORTED) {
		assert_int_equal(session_abort(s, "test", 101), 0);
		return;
	}
	if (step == STEP_FAILED) {
		assert_int_equal(session_fail(s, "test", 101), 0);
		return;
	}
	if (step == STEP_NONE)
		return;
	make_state(&st, 0);
	assert_int_equal(session_source_prepare_sent(s, &st, 110), 0);
	if (step == STEP_PREPARING)
		return;
	assert_int_equal(session_source_prepare_acked(s, PEER, 120), 0);
	if (step == STEP_PREPARED)
		return;
	assert_int_equal(session_source_begin_final(s, &st, 130, &gen), 0);
	assert_int_equal(gen, 1);
	if (step == STEP_FINALIZING)
		return;
	assert_int_equal(session_source_final_acked(s, PEER, 1, 140), 0);
	if (step == STEP_FINAL)
		return;
	make_report(&report, 1, 0);
	assert_int_equal(session_source_applied(s, PEER, &report, 150), 0);
	assert_int_equal(s->step, STEP_DONE);
	assert_int_equal(step, STEP_DONE);
}

static void target_to(struct session *s, enum migration_step step)
{
	struct counter_state st;
	struct migration_report report;

	assert_int_equal(session_init(s, VM_ROLE_TARGET, MIG, VM, PEER, 100), 0);
	if (step == STEP_ABORTED) {
		assert_int_equal(session_abort(s, "test", 101), 0);
		return;
	}
	if (step == STEP_FAILED) {
		assert_int_equal(session_fail(s, "test", 101), 0);
		return;
	}
	if (step == STEP_NONE)
		return;
	make_state(&st, 0);
	assert_int_equal(session_target_prepare(s, PEER, &st, 110), 0);
	if (step == STEP_PREPARED)
		return;
	assert_int_equal(session_target_final(s, PEER, 1, &st, 120), 0);
	if (step == STEP_FINAL)
		return;
	assert_int_equal(session_target_begin_apply(s, 130), 0);
	if (step == STEP_APPLYING)
		return;
	make_report(&report, 1, 0);
	assert_int_equal(session_target_applied(s, &report, 140), 0);
	if (step == STEP_APPLIED)
		return;
	assert_int_equal(session_target_acked(s, PEER, 150), 0);
	assert_int_equal(step, STEP_DONE);
}

/* ---- happy paths ---- */

static void test_source_happy_path_reaches_done(void **unused)
{
	struct counter_state prepared, final1, final2;
	struct migration_report report;
	uint64_t gen = 0;

	make_state(&prepared, 0);
	make_state(&final1, 1);
	make_state(&final2, 2);
	assert_int_equal(session_init(&sess, VM_ROLE_SOURCE, MIG, VM, PEER, 1000), 0);
	assert_int_equal(sess.step, STEP_NONE);
	assert_string_equal(sess.migration_id, MIG);
	assert_string_equal(sess.vm_id, VM);
	assert_string_equal(sess.peer_identity, PEER);
	assert_int_equal(sess.role, VM_ROLE_SOURCE);
	assert_int_equal(sess.generation, 0);
	assert_false(sess.has_final);

	assert_int_equal(session_source_prepare_sent(&sess, &prepared, 1001), 0);
	assert_int_equal(sess.step, STEP_PREPARING);
	assert_memory_equal(&sess.prepared, &prepared, sizeof(prepared));
	assert_int_equal(session_source_prepare_acked(&sess, PEER, 1002), 0);
	assert_int_equal(sess.step, STEP_PREPARED);

	assert_int_equal(session_source_begin_final(&sess, &final1, 1003, &gen), 0);
	assert_int_equal(gen, 1);
	assert_int_equal(sess.step, STEP_FINALIZING);
	assert_true(sess.has_final);
	assert_int_equal(session_source_final_acked(&sess, PEER, 1, 1004), 0);
	assert_int_equal(sess.step, STEP_FINAL);

	/* The VMM resumed and paused again: a newer final state. */
	assert_int_equal(session_source_begin_final(&sess, &final2, 1005, &gen), 0);
	assert_int_equal(gen, 2);
	assert_int_equal(sess.generation, 2);
	assert_memory_equal(&sess.final, &final2, sizeof(final2));
	assert_int_equal(session_source_final_acked(&sess, PEER, 2, 1006), 0);

	make_report(&report, 2, 2);
	assert_int_equal(session_source_applied(&sess, PEER, &report, 1007), 0);
	assert_int_equal(sess.step, STEP_DONE);
	assert_true(sess.has_report);
	assert_memory_equal(&sess.report, &report, sizeof(report));
	assert_true(migration_step_is_terminal(sess.step));
	assert_int_equal(sess.started_ns, 1000);
	assert_int_equal(sess.updated_ns, 1007);
}

static void test_target_happy_path_reaches_done(void **unused)
{
	struct counter_state prepared, final1;
	struct migration_report report;

	make_state(&prepared, 0);
	make_state(&final1, 1);
	assert_int_equal(session_init(&sess, VM_ROLE_TARGET, MIG, VM, PEER, 2000), 0);
	assert_int_equal(session_target_prepare(&sess, PEER, &prepared, 2001), 0);
	assert_int_equal(sess.step, STEP_PREPARED);
	assert_memory_equal(&sess.prepared, &prepared, sizeof(prepared));
	assert_false(sess.has_final);

	assert_int_equal(session_target_final(&sess, PEER, 1, &final1, 2002), 0);
	assert_int_equal(sess.step, STEP_FINAL);
	assert_int_equal(sess.generation, 1);
	assert_true(sess.has_final);
	assert_memory_equal(&sess.final, &final1, sizeof(final1));

	assert_int_equal(session_target_begin_apply(&sess, 2003), 0);
	assert_int_equal(sess.step, STEP_APPLYING);
	make_report(&report, 1, 1);
	assert_int_equal(session_target_applied(&sess, &report, 2004), 0);
	assert_int_equal(sess.step, STEP_APPLIED);
	assert_true(sess.has_report);
	assert_memory_equal(&sess.report, &report, sizeof(report));

	assert_int_equal(session_target_acked(&sess, PEER, 2005), 0);
	assert_int_equal(sess.step, STEP_DONE);
	assert_int_equal(sess.started_ns, 2000);
	assert_int_equal(sess.updated_ns, 2005);
}

static void test_target_accepts_newer_final_while_final(void **unused)
{
	struct counter_state st1, st2;

	make_state(&st1, 1);
	make_state(&st2, 2);
	target_to(&sess, STEP_PREPARED);
	assert_int_equal(session_target_final(&sess, PEER, 1, &st1, 500), 0);
	/* A gap is fine: the target need not have seen every generation. */
	assert_int_equal(session_target_final(&sess, PEER, 3, &st2, 501), 0);
	assert_int_equal(sess.generation, 3);
	assert_int_equal(sess.step, STEP_FINAL);
	assert_memory_equal(&sess.final, &st2, sizeof(st2));
}

/* ---- init ---- */

static void test_init_refuses_invalid_arguments(void **unused)
{
	char long_peer[SESSION_PEER_NAME_MAX + 2];

	memset(long_peer, 'p', sizeof(long_peer) - 1);
	long_peer[sizeof(long_peer) - 1] = '\0';
	memset(&sess, 0x77, sizeof(sess));

	assert_unchanged_after(&sess, session_init(&sess, VM_ROLE_NONE, MIG, VM, PEER, 1), -EINVAL);
	assert_unchanged_after(&sess, session_init(&sess, (enum vm_role)7, MIG, VM, PEER, 1),
			       -EINVAL);
	assert_unchanged_after(&sess,
			       session_init(&sess, VM_ROLE_SOURCE,
					    "7F3C00AA11BB22CC33DD44EE55FF6677", VM, PEER, 1),
			       -EINVAL);
	assert_unchanged_after(&sess, session_init(&sess, VM_ROLE_SOURCE, "7f3c", VM, PEER, 1),
			       -EINVAL);
	assert_unchanged_after(&sess, session_init(&sess, VM_ROLE_SOURCE, NULL, VM, PEER, 1),
			       -EINVAL);
	assert_unchanged_after(&sess, session_init(&sess, VM_ROLE_SOURCE, MIG, "vm 42", PEER, 1),
			       -EINVAL);
	assert_unchanged_after(&sess, session_init(&sess, VM_ROLE_SOURCE, MIG, "", PEER, 1),
			       -EINVAL);
	assert_unchanged_after(&sess, session_init(&sess, VM_ROLE_SOURCE, MIG, VM, NULL, 1),
			       -EINVAL);
	assert_unchanged_after(&sess, session_init(&sess, VM_ROLE_SOURCE, MIG, VM, "", 1), -EINVAL);
	assert_unchanged_after(&sess, session_init(&sess, VM_ROLE_SOURCE, MIG, VM, long_peer, 1),
			       -EINVAL);
	assert_int_equal(session_init(NULL, VM_ROLE_SOURCE, MIG, VM, PEER, 1), -EINVAL);

	/* SESSION_PEER_NAME_MAX bytes exactly is fine. */
	long_peer[SESSION_PEER_NAME_MAX] = '\0';
	assert_int_equal(session_init(&sess, VM_ROLE_TARGET, MIG, VM, long_peer, 1), 0);
	assert_string_equal(sess.peer_identity, long_peer);
}

/* ---- the transition table ---- */

enum event {
	EV_SOURCE_PREPARE_SENT,
	EV_SOURCE_PREPARE_ACKED,
	EV_SOURCE_BEGIN_FINAL,
	EV_SOURCE_FINAL_ACKED,
	EV_SOURCE_APPLIED,
	EV_TARGET_PREPARE,
	EV_TARGET_FINAL,
	EV_TARGET_BEGIN_APPLY,
	EV_TARGET_APPLIED,
	EV_TARGET_APPLY_FAILED,
	EV_TARGET_ACKED,
	_EV_MAX,
};

static const char *const event_names[_EV_MAX] = {
	"source_prepare_sent", "source_prepare_acked", "source_begin_final", "source_final_acked",
	"source_applied",      "target_prepare",       "target_final",	     "target_begin_apply",
	"target_applied",      "target_apply_failed",  "target_acked",
};

/* Run one event with arguments that would be right for the session's current
 * generation (a fresh final state for target_final), so that the only reason
 * to refuse is the step. */
static int run_event(struct session *s, enum event ev)
{
	struct counter_state st;
	struct migration_report report;
	uint64_t gen;

	make_state(&st, 9);
	make_report(&report, s->generation, 0);
	switch (ev) {
	case EV_SOURCE_PREPARE_SENT:
		return session_source_prepare_sent(s, &st, 900);
	case EV_SOURCE_PREPARE_ACKED:
		return session_source_prepare_acked(s, PEER, 900);
	case EV_SOURCE_BEGIN_FINAL:
		return session_source_begin_final(s, &st, 900, &gen);
	case EV_SOURCE_FINAL_ACKED:
		return session_source_final_acked(s, PEER, s->generation, 900);
	case EV_SOURCE_APPLIED:
		return session_source_applied(s, PEER, &report, 900);
	case EV_TARGET_PREPARE:
		return session_target_prepare(s, PEER, &st, 900);
	case EV_TARGET_FINAL:
		return session_target_final(s, PEER, s->generation + 1, &st, 900);
	case EV_TARGET_BEGIN_APPLY:
		return session_target_begin_apply(s, 900);
	case EV_TARGET_APPLIED:
		return session_target_applied(s, &report, 900);
	case EV_TARGET_APPLY_FAILED:
		return session_target_apply_failed(s, "write failed", 900);
	case EV_TARGET_ACKED:
		return session_target_acked(s, PEER, 900);
	default:
		fail();
		return 0;
	}
}

/* Allowed transitions (event, from step) -> 0, and the documented no-ops ->
 * 1; everything else is out of order. */
static int expected_result(enum vm_role role, enum migration_step step, enum event ev)
{
	bool source_ev = ev <= EV_SOURCE_APPLIED;

	if (step == STEP_ABORTED || step == STEP_FAILED)
		return -ECANCELED;
	if ((role == VM_ROLE_SOURCE) != source_ev)
		return -EPROTO;
	switch (ev) {
	case EV_SOURCE_PREPARE_SENT:
	case EV_TARGET_PREPARE:
		return step == STEP_NONE ? 0 : -EPROTO;
	case EV_SOURCE_PREPARE_ACKED:
		return step == STEP_PREPARING ? 0 : -EPROTO;
	case EV_SOURCE_BEGIN_FINAL:
		return step == STEP_PREPARED || step == STEP_FINAL ? 0 : -EPROTO;
	case EV_SOURCE_FINAL_ACKED:
		return step == STEP_FINALIZING ? 0 : -EPROTO;
	case EV_SOURCE_APPLIED:
		/* In DONE, the very report it stored, resent: ack again. */
		return step == STEP_FINAL ? 0 : step == STEP_DONE ? 1 : -EPROTO;
	case EV_TARGET_FINAL:
		return step == STEP_PREPARED || step == STEP_FINAL ? 0 : -EPROTO;
	case EV_TARGET_BEGIN_APPLY:
		return step == STEP_FINAL			   ? 0
		       : step == STEP_APPLIED || step == STEP_DONE ? 1
								   : -EPROTO;
	case EV_TARGET_APPLIED:
	case EV_TARGET_APPLY_FAILED:
		return step == STEP_APPLYING ? 0 : -EPROTO;
	case EV_TARGET_ACKED:
		return step == STEP_APPLIED ? 0 : -EPROTO;
	default:
		fail();
		return 0;
	}
}

static void check_every_event_from(enum vm_role role, enum migration_step step)
{
	for (int ev = 0; ev < _EV_MAX; ev++) {
		int expected = expected_result(role, step, (enum event)ev);
		int r;

		if (role == VM_ROLE_SOURCE)
			source_to(&sess, step);
		else
			target_to(&sess, step);
		memcpy(&snap, &sess, sizeof(snap));
		r = run_event(&sess, (enum event)ev);
		if (r != expected)
			fail_msg("%s session in %s: %s returned %d, expected %d",
				 vm_role_to_string(role), migration_step_to_string(step),
				 event_names[ev], r, expected);
		if (r != 0 && memcmp(&snap, &sess, sizeof(snap)) != 0)
			fail_msg("%s session in %s: refused %s changed the session",
				 vm_role_to_string(role), migration_step_to_string(step),
				 event_names[ev]);
	}
}

static void test_out_of_order_transitions_are_refused_unchanged(void **unused)
{
	static const enum migration_step source_steps[] = {
		STEP_NONE,  STEP_PREPARING, STEP_PREPARED, STEP_FINALIZING,
		STEP_FINAL, STEP_DONE,	    STEP_ABORTED,  STEP_FAILED,
	};
	static const enum migration_step target_steps[] = {
		STEP_NONE,    STEP_PREPARED, STEP_FINAL,   STEP_APPLYING,
		STEP_APPLIED, STEP_DONE,     STEP_ABORTED, STEP_FAILED,
	};

	for (size_t i = 0; i < ELEMENTSOF(source_steps); i++)
		check_every_event_from(VM_ROLE_SOURCE, source_steps[i]);
	for (size_t i = 0; i < ELEMENTSOF(target_steps); i++)
		check_every_event_from(VM_ROLE_TARGET, target_steps[i]);
}

/* ---- generations and replays ---- */

static void test_stale_generation_is_refused(void **unused)
{
	struct counter_state st1, st2;
	struct migration_report report;
	uint64_t gen;

	make_state(&st1, 1);
	make_state(&st2, 2);

	/* Target holding generation 2 gets generation 1 late. */
	target_to(&sess, STEP_PREPARED);
	assert_int_equal(session_target_final(&sess, PEER, 2, &st2, 300), 0);
	assert_unchanged_after(&sess, session_target_final(&sess, PEER, 1, &st1, 301), -ESTALE);
	assert_unchanged_after(&sess, session_target_final(&sess, PEER, 1, &st2, 301), -ESTALE);

	/* Source at generation 2 gets the ack (and the report) of generation 1. */
	source_to(&sess, STEP_FINAL);
	assert_int_equal(session_source_begin_final(&sess, &st2, 310, &gen), 0);
	assert_int_equal(gen, 2);
	assert_unchanged_after(&sess, session_source_final_acked(&sess, PEER, 1, 311), -ESTALE);
	/* An ack of a generation never sent is out of order, not stale. */
	assert_unchanged_after(&sess, session_source_final_acked(&sess, PEER, 3, 311), -EPROTO);
	assert_int_equal(session_source_final_acked(&sess, PEER, 2, 312), 0);
	make_report(&report, 1, 0);
	assert_unchanged_after(&sess, session_source_applied(&sess, PEER, &report, 313), -ESTALE);
	make_report(&report, 3, 0);
	assert_unchanged_after(&sess, session_source_applied(&sess, PEER, &report, 313), -EPROTO);
}

static void test_target_refuses_generation_zero(void **unused)
{
	struct counter_state st;

	make_state(&st, 1);
	target_to(&sess, STEP_PREPARED);
	assert_unchanged_after(&sess, session_target_final(&sess, PEER, 0, &st, 300), -EINVAL);
}

static void test_exact_replay_returns_1_unchanged(void **unused)
{
	static const enum migration_step steps[] = { STEP_FINAL, STEP_APPLYING, STEP_APPLIED,
						     STEP_DONE };
	struct counter_state same;

	for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
		target_to(&sess, steps[i]);
		/* Same content, but different padding and different bytes past
		 * n_vcpus: neither is content. */
		memset(&same, 0xee, sizeof(same));
		same.backend = sess.final.backend;
		same.arch = sess.final.arch;
		same.guest_tsc_khz = sess.final.guest_tsc_khz;
		same.tsc_scaling_ratio = sess.final.tsc_scaling_ratio;
		same.tsc_scaling_frac_bits = sess.final.tsc_scaling_frac_bits;
		same.n_vcpus = sess.final.n_vcpus;
		memcpy(same.offset_cycles, sess.final.offset_cycles,
		       same.n_vcpus * sizeof(uint64_t));
		same.kvmclock.clock_ns = sess.final.kvmclock.clock_ns;
		same.kvmclock.flags = sess.final.kvmclock.flags;
		same.kvmclock.realtime_ns = sess.final.kvmclock.realtime_ns;
		same.kvmclock.host_tsc = sess.final.kvmclock.host_tsc;
		same.kvmclock.host_tsc_width = sess.final.kvmclock.host_tsc_width;
		same.anchor.tai_ns = sess.final.anchor.tai_ns;
		same.anchor.host_tsc = sess.final.anchor.host_tsc;
		same.anchor.width_ns = sess.final.anchor.width_ns;
		same.anchor.source = sess.final.anchor.source;
		same.anchor.host_tsc_khz = sess.final.anchor.host_tsc_khz;
		same.sync.maxerror_ns = sess.final.sync.maxerror_ns;
		same.sync.esterror_ns = sess.final.sync.esterror_ns;
		same.sync.unsynced = sess.final.sync.unsynced;
		same.sync.tai_offset_s = sess.final.sync.tai_offset_s;
		same.sync.leap = sess.final.sync.leap;
		assert_true(memcmp(&same, &sess.final, sizeof(same)) != 0);
		print_message("replay in %s\n", migration_step_to_string(steps[i]));
		assert_unchanged_after(&sess, session_target_final(&sess, PEER, 1, &same, 999), 1);
	}
}

/* Each changes one part of the content of make_state(&st, 0). */
static void change_offset(struct counter_state *st)
{
	st->offset_cycles[3]++;
}
static void change_vcpu_count(struct counter_state *st)
{
	st->n_vcpus--;
}
static void change_khz(struct counter_state *st)
{
	st->guest_tsc_khz++;
}
static void change_anchor(struct counter_state *st)
{
	st->anchor.host_tsc++;
}
static void change_kvmclock(struct counter_state *st)
{
	st->kvmclock.clock_ns++;
}
static void change_sync(struct counter_state *st)
{
	st->sync.unsynced = true;
}
static void change_backend(struct counter_state *st)
{
	st->backend = BACKEND_KVM_SYSCOUNTER;
}

static void test_conflicting_replay_is_refused_with_eexist(void **unused)
{
	static void (*const changes[])(struct counter_state *) = {
		change_offset,	 change_vcpu_count, change_khz,	    change_anchor,
		change_kvmclock, change_sync,	    change_backend,
	};
	static const enum migration_step steps[] = { STEP_FINAL, STEP_APPLYING, STEP_APPLIED,
						     STEP_DONE };

	for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
		for (size_t c = 0; c < ELEMENTSOF(changes); c++) {
			struct counter_state other;

			print_message("step %s change %zu\n", migration_step_to_string(steps[i]),
				      c);
			target_to(&sess, steps[i]);
			make_state(&other, 0);
			changes[c](&other);
			assert_unchanged_after(
				&sess, session_target_final(&sess, PEER, 1, &other, 999), -EEXIST);
		}
	}
}

static void test_target_refuses_other_generation_once_applying(void **unused)
{
	static const enum migration_step steps[] = { STEP_APPLYING, STEP_APPLIED, STEP_DONE };
	struct counter_state st;

	for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
		target_to(&sess, steps[i]);
		make_state(&st, 0);
		/* Newer, and older (0 = before the first), are both refused. */
		assert_unchanged_after(&sess, session_target_final(&sess, PEER, 2, &st, 999),
				       -EPROTO);
		assert_unchanged_after(&sess, session_target_final(&sess, PEER, 0, &st, 999),
				       -EPROTO);
	}
}

static void test_source_acks_resent_report_again(void **unused)
{
	struct migration_report report;

	source_to(&sess, STEP_DONE);
	make_report(&report, 1, 0);
	assert_unchanged_after(&sess, session_source_applied(&sess, PEER, &report, 999), 1);
	report.offsets_after[0]++;
	assert_unchanged_after(&sess, session_source_applied(&sess, PEER, &report, 999), -EEXIST);
}

/* ---- peer identity ---- */

typedef int (*peer_event_fn)(struct session *s, const char *from);

static int ev_source_prepare_acked(struct session *s, const char *from)
{
	return session_source_prepare_acked(s, from, 700);
}
static int ev_source_final_acked(struct session *s, const char *from)
{
	return session_source_final_acked(s, from, s->generation, 700);
}
static int ev_source_applied(struct session *s, const char *from)
{
	struct migration_report report;

	make_report(&report, s->generation, 0);
	return session_source_applied(s, from, &report, 700);
}
static int ev_target_prepare(struct session *s, const char *from)
{
	struct counter_state st;

	make_state(&st, 0);
	return session_target_prepare(s, from, &st, 700);
}
static int ev_target_final(struct session *s, const char *from)
{
	struct counter_state st;

	make_state(&st, 0);
	return session_target_final(s, from, s->generation + 1, &st, 700);
}
static int ev_target_acked(struct session *s, const char *from)
{
	return session_target_acked(s, from, 700);
}

static void test_wrong_peer_is_refused_at_every_step_taking_from(void **unused)
{
	static const struct {
		const char *name;
		enum vm_role role;
		enum migration_step step; /* where the event would be accepted */
		peer_event_fn fn;
	} cases[] = {
		{ "source_prepare_acked", VM_ROLE_SOURCE, STEP_PREPARING, ev_source_prepare_acked },
		{ "source_final_acked", VM_ROLE_SOURCE, STEP_FINALIZING, ev_source_final_acked },
		{ "source_applied", VM_ROLE_SOURCE, STEP_FINAL, ev_source_applied },
		{ "target_prepare", VM_ROLE_TARGET, STEP_NONE, ev_target_prepare },
		{ "target_final", VM_ROLE_TARGET, STEP_PREPARED, ev_target_final },
		{ "target_acked", VM_ROLE_TARGET, STEP_APPLIED, ev_target_acked },
	};
	/* Near misses count as strangers: identity is compared exactly. */
	static const char *const strangers[] = {
		OTHER,
		"",
		"target.example.ne",
		"target.example.net.",
		"TARGET.example.net",
		"target.example.net ",
		NULL,
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		print_message("%s\n", cases[i].name);
		for (size_t k = 0; k < ELEMENTSOF(strangers); k++) {
			if (cases[i].role == VM_ROLE_SOURCE)
				source_to(&sess, cases[i].step);
			else
				target_to(&sess, cases[i].step);
			assert_unchanged_after(&sess, cases[i].fn(&sess, strangers[k]), -EPERM);
		}
		/* Identity is checked before anything else: an aborted session
		 * tells a stranger nothing. */
		if (cases[i].role == VM_ROLE_SOURCE)
			source_to(&sess, STEP_ABORTED);
		else
			target_to(&sess, STEP_ABORTED);
		assert_unchanged_after(&sess, cases[i].fn(&sess, OTHER), -EPERM);
		assert_unchanged_after(&sess, cases[i].fn(&sess, PEER), -ECANCELED);
		/* And the right peer is accepted where the case says. */
		if (cases[i].role == VM_ROLE_SOURCE)
			source_to(&sess, cases[i].step);
		else
			target_to(&sess, cases[i].step);
		assert_int_equal(cases[i].fn(&sess, PEER), 0);
	}
}

/* ---- abort and fail ---- */

static void test_abort_before_apply_succeeds(void **unused)
{
	static const enum migration_step source_steps[] = { STEP_NONE, STEP_PREPARING,
							    STEP_PREPARED, STEP_FINALIZING,
							    STEP_FINAL };
	static const enum migration_step target_steps[] = { STEP_NONE, STEP_PREPARED, STEP_FINAL,
							    STEP_APPLYING };

	for (size_t i = 0; i < ELEMENTSOF(source_steps); i++) {
		source_to(&sess, source_steps[i]);
		assert_int_equal(session_abort(&sess, "operator asked", 800), 0);
		assert_int_equal(sess.step, STEP_ABORTED);
		assert_string_equal(sess.reason, "operator asked");
		assert_int_equal(sess.updated_ns, 800);
	}
	for (size_t i = 0; i < ELEMENTSOF(target_steps); i++) {
		target_to(&sess, target_steps[i]);
		assert_int_equal(session_abort(&sess, "source gave up", 800), 0);
		assert_int_equal(sess.step, STEP_ABORTED);
		assert_string_equal(sess.reason, "source gave up");
	}
}

static void test_abort_after_apply_is_refused_with_ealready(void **unused)
{
	target_to(&sess, STEP_APPLIED);
	assert_unchanged_after(&sess, session_abort(&sess, "too late", 800), -EALREADY);
	target_to(&sess, STEP_DONE);
	assert_unchanged_after(&sess, session_abort(&sess, "too late", 800), -EALREADY);
	source_to(&sess, STEP_DONE);
	assert_unchanged_after(&sess, session_abort(&sess, "too late", 800), -EALREADY);
}

static void test_abort_twice_returns_1_unchanged(void **unused)
{
	source_to(&sess, STEP_PREPARED);
	assert_int_equal(session_abort(&sess, "first", 800), 0);
	assert_unchanged_after(&sess, session_abort(&sess, "second", 801), 1);
	assert_string_equal(sess.reason, "first");
	/* A failed session is not an aborted one. */
	target_to(&sess, STEP_FAILED);
	assert_unchanged_after(&sess, session_abort(&sess, "late", 801), -ECANCELED);
}

static void test_messages_after_abort_are_cancelled(void **unused)
{
	for (int ev = 0; ev < _EV_MAX; ev++) {
		source_to(&sess, STEP_ABORTED);
		assert_unchanged_after(&sess, run_event(&sess, (enum event)ev), -ECANCELED);
		target_to(&sess, STEP_ABORTED);
		assert_unchanged_after(&sess, run_event(&sess, (enum event)ev), -ECANCELED);
	}
	target_to(&sess, STEP_ABORTED);
	assert_unchanged_after(&sess, session_fail(&sess, "late", 1), -ECANCELED);
}

static void test_fail_from_any_live_step(void **unused)
{
	static const enum migration_step target_steps[] = { STEP_NONE, STEP_PREPARED, STEP_FINAL,
							    STEP_APPLYING, STEP_APPLIED };

	for (size_t i = 0; i < ELEMENTSOF(target_steps); i++) {
		target_to(&sess, target_steps[i]);
		assert_int_equal(session_fail(&sess, "peer link lost", 850), 0);
		assert_int_equal(sess.step, STEP_FAILED);
		assert_string_equal(sess.reason, "peer link lost");
		assert_unchanged_after(&sess, session_fail(&sess, "again", 851), 1);
	}
	target_to(&sess, STEP_DONE);
	assert_unchanged_after(&sess, session_fail(&sess, "too late", 851), -EALREADY);
	source_to(&sess, STEP_FINALIZING);
	assert_int_equal(session_fail(&sess, "vmm gone", 852), 0);
	assert_int_equal(sess.step, STEP_FAILED);
}

static void test_reason_is_truncated_safely(void **unused)
{
	char reason[1000];

	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	source_to(&sess, STEP_PREPARED);
	assert_int_equal(session_abort(&sess, reason, 1), 0);
	assert_int_equal(strlen(sess.reason), SESSION_REASON_MAX);
	assert_memory_equal(sess.reason, reason, SESSION_REASON_MAX);

	target_to(&sess, STEP_APPLYING);
	assert_int_equal(session_target_apply_failed(&sess, reason, 2), 0);
	assert_int_equal(strlen(sess.reason), SESSION_REASON_MAX);

	target_to(&sess, STEP_NONE);
	assert_int_equal(session_fail(&sess, NULL, 3), 0);
	assert_string_equal(sess.reason, "");
}

/* ---- apply ---- */

static void test_apply_twice_is_a_noop_keeping_report(void **unused)
{
	struct migration_report report;

	target_to(&sess, STEP_APPLIED);
	make_report(&report, 1, 0);
	assert_memory_equal(&sess.report, &report, sizeof(report));
	assert_unchanged_after(&sess, session_target_begin_apply(&sess, 999), 1);
	assert_true(sess.has_report);
	assert_memory_equal(&sess.report, &report, sizeof(report));

	target_to(&sess, STEP_DONE);
	assert_unchanged_after(&sess, session_target_begin_apply(&sess, 999), 1);
	assert_memory_equal(&sess.report, &report, sizeof(report));

	/* While an apply runs, a second one is out of order. */
	target_to(&sess, STEP_APPLYING);
	assert_unchanged_after(&sess, session_target_begin_apply(&sess, 999), -EPROTO);
}

static void test_apply_without_final_is_refused(void **unused)
{
	target_to(&sess, STEP_PREPARED);
	assert_false(sess.has_final);
	assert_unchanged_after(&sess, session_target_begin_apply(&sess, 999), -EPROTO);
	target_to(&sess, STEP_NONE);
	assert_unchanged_after(&sess, session_target_begin_apply(&sess, 999), -EPROTO);
}

static void test_apply_failed_returns_to_final_and_apply_retries(void **unused)
{
	struct counter_state st2;
	struct migration_report report;

	target_to(&sess, STEP_APPLYING);
	assert_int_equal(session_target_apply_failed(&sess, "KVM_SET_DEVICE_ATTR: EIO", 600), 0);
	assert_int_equal(sess.step, STEP_FINAL);
	assert_true(sess.has_final);
	assert_int_equal(sess.generation, 1);
	assert_string_equal(sess.reason, "KVM_SET_DEVICE_ATTR: EIO");

	assert_int_equal(session_target_begin_apply(&sess, 601), 0);
	assert_int_equal(sess.step, STEP_APPLYING);
	make_report(&report, 1, 0);
	assert_int_equal(session_target_applied(&sess, &report, 602), 0);
	assert_int_equal(sess.step, STEP_APPLIED);

	/* After a failure the source may also send a newer final state. */
	target_to(&sess, STEP_APPLYING);
	assert_int_equal(session_target_apply_failed(&sess, "x", 600), 0);
	make_state(&st2, 2);
	assert_int_equal(session_target_final(&sess, PEER, 2, &st2, 601), 0);
	assert_int_equal(sess.generation, 2);
}

static void test_target_applied_refuses_report_of_other_migration(void **unused)
{
	struct migration_report report;

	target_to(&sess, STEP_APPLYING);
	make_report(&report, 1, 0);
	strcpy(report.migration_id, "00000000000000000000000000000000");
	assert_unchanged_after(&sess, session_target_applied(&sess, &report, 1), -EINVAL);
	make_report(&report, 1, 0);
	strcpy(report.vm_id, "vm-43");
	assert_unchanged_after(&sess, session_target_applied(&sess, &report, 1), -EINVAL);
	make_report(&report, 2, 0);
	assert_unchanged_after(&sess, session_target_applied(&sess, &report, 1), -EINVAL);

	source_to(&sess, STEP_FINAL);
	make_report(&report, 1, 0);
	strcpy(report.vm_id, "vm-43");
	assert_unchanged_after(&sess, session_source_applied(&sess, PEER, &report, 1), -EINVAL);
}

/* ---- names ---- */

static void test_step_names_round_trip(void **unused)
{
	for (int step = 0; step < _STEP_MAX; step++) {
		const char *name = migration_step_to_string((enum migration_step)step);

		assert_non_null(name);
		assert_int_equal(migration_step_from_string(name), step);
	}
	assert_string_equal(migration_step_to_string(STEP_APPLYING), "applying");
	assert_null(migration_step_to_string(_STEP_MAX));
	assert_null(migration_step_to_string(_STEP_INVALID));
	assert_int_equal(migration_step_from_string("applyin"), _STEP_INVALID);
	assert_int_equal(migration_step_from_string(NULL), _STEP_INVALID);

	assert_true(migration_step_is_terminal(STEP_DONE));
	assert_true(migration_step_is_terminal(STEP_ABORTED));
	assert_true(migration_step_is_terminal(STEP_FAILED));
	assert_false(migration_step_is_terminal(STEP_APPLIED));
	assert_false(migration_step_is_terminal(STEP_NONE));
}

/* ---- random walk ---- */

/* xorshift64*: a fixed seed makes every run the same walk. */
static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);

static uint64_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static unsigned rng_below(unsigned n)
{
	return (unsigned)(rng_next() % n);
}

enum {
	WALK_ABORT = _EV_MAX,
	WALK_FAIL,
	_WALK_MAX
};

/* The step an accepted (0) event leads to. */
static enum migration_step walk_next_step(int ev)
{
	static const enum migration_step next[_WALK_MAX] = {
		[EV_SOURCE_PREPARE_SENT] = STEP_PREPARING,
		[EV_SOURCE_PREPARE_ACKED] = STEP_PREPARED,
		[EV_SOURCE_BEGIN_FINAL] = STEP_FINALIZING,
		[EV_SOURCE_FINAL_ACKED] = STEP_FINAL,
		[EV_SOURCE_APPLIED] = STEP_DONE,
		[EV_TARGET_PREPARE] = STEP_PREPARED,
		[EV_TARGET_FINAL] = STEP_FINAL,
		[EV_TARGET_BEGIN_APPLY] = STEP_APPLYING,
		[EV_TARGET_APPLIED] = STEP_APPLIED,
		[EV_TARGET_APPLY_FAILED] = STEP_FINAL,
		[EV_TARGET_ACKED] = STEP_DONE,
		[WALK_ABORT] = STEP_ABORTED,
		[WALK_FAIL] = STEP_FAILED,
	};
	return next[ev];
}

static uint64_t walk_generation(const struct session *s)
{
	/* Mostly around the current one, sometimes anything small. */
	switch (rng_below(5)) {
	case 0:
		return s->generation > 0 ? s->generation - 1 : 0;
	case 1:
	case 2:
		return s->generation;
	case 3:
		return s->generation + 1;
	default:
		return rng_below(6);
	}
}

static int walk_event(struct session *s, int ev)
{
	const char *from = rng_below(10) == 0 ? OTHER : PEER;
	struct counter_state st;
	struct migration_report report;
	uint64_t gen;

	make_state(&st, rng_below(3));
	make_report(&report, walk_generation(s), rng_below(2));
	if (rng_below(20) == 0)
		strcpy(report.migration_id, "00000000000000000000000000000000");
	switch (ev) {
	case EV_SOURCE_PREPARE_SENT:
		return session_source_prepare_sent(s, &st, 1);
	case EV_SOURCE_PREPARE_ACKED:
		return session_source_prepare_acked(s, from, 1);
	case EV_SOURCE_BEGIN_FINAL:
		return session_source_begin_final(s, &st, 1, &gen);
	case EV_SOURCE_FINAL_ACKED:
		return session_source_final_acked(s, from, walk_generation(s), 1);
	case EV_SOURCE_APPLIED:
		return session_source_applied(s, from, &report, 1);
	case EV_TARGET_PREPARE:
		return session_target_prepare(s, from, &st, 1);
	case EV_TARGET_FINAL:
		return session_target_final(s, from, walk_generation(s), &st, 1);
	case EV_TARGET_BEGIN_APPLY:
		return session_target_begin_apply(s, 1);
	case EV_TARGET_APPLIED:
		return session_target_applied(s, &report, 1);
	case EV_TARGET_APPLY_FAILED:
		return session_target_apply_failed(s, "walk", 1);
	case EV_TARGET_ACKED:
		return session_target_acked(s, from, 1);
	case WALK_ABORT:
		return session_abort(s, "walk", 1);
	case WALK_FAIL:
		return session_fail(s, "walk", 1);
	default:
		fail();
		return 0;
	}
}

static int walk_pick_event(enum vm_role role)
{
	unsigned roll = rng_below(100);

	if (roll < 3)
		return WALK_ABORT;
	if (roll < 5)
		return WALK_FAIL;
	if (roll < 15)
		return (int)rng_below(_EV_MAX); /* either side's events */
	if (role == VM_ROLE_SOURCE)
		return EV_SOURCE_PREPARE_SENT + (int)rng_below(EV_SOURCE_APPLIED + 1);
	return EV_TARGET_PREPARE + (int)rng_below(EV_TARGET_ACKED - EV_TARGET_PREPARE + 1);
}

static void test_random_walk_keeps_invariants(void **unused)
{
	static struct session before;
	unsigned reached[_STEP_MAX] = { 0 };
	unsigned replays = 0;

	for (unsigned walk = 0; walk < 2000; walk++) {
		enum vm_role role = rng_below(2) ? VM_ROLE_SOURCE : VM_ROLE_TARGET;

		assert_int_equal(session_init(&sess, role, MIG, VM, PEER, 0), 0);
		for (unsigned i = 0; i < 40; i++) {
			int ev = walk_pick_event(role);
			int r;

			memcpy(&before, &sess, sizeof(before));
			r = walk_event(&sess, ev);

			/* Only documented answers. */
			if (!(r == 0 || r == 1 || r == -EPROTO || r == -EPERM || r == -ESTALE ||
			      r == -EEXIST || r == -ECANCELED || r == -EINVAL || r == -EALREADY))
				fail_msg("walk %u event %d: undocumented %d", walk, ev, r);
			/* Refusals and replays change nothing at all. */
			if (r != 0 && memcmp(&before, &sess, sizeof(before)) != 0)
				fail_msg("walk %u event %d: answer %d changed the session", walk,
					 ev, r);
			if (r == 0 && sess.step != walk_next_step(ev))
				fail_msg("walk %u: event %d from %s went to %s", walk, ev,
					 migration_step_to_string(before.step),
					 migration_step_to_string(sess.step));
			if (r == 1)
				replays++;

			assert_true(sess.generation >= before.generation);
			if (migration_step_is_terminal(before.step))
				assert_int_equal(sess.step, before.step);
			assert_int_equal(sess.role, role);
			assert_true(sess.step >= STEP_NONE && sess.step < _STEP_MAX);
			if (role == VM_ROLE_TARGET &&
			    (sess.step == STEP_APPLYING || sess.step == STEP_APPLIED))
				assert_true(sess.has_final);
			/* DONE on the target means it applied: a final state and a
			 * report. */
			if (role == VM_ROLE_TARGET && sess.step == STEP_DONE)
				assert_true(sess.has_final && sess.has_report);
			if (role == VM_ROLE_TARGET &&
			    (sess.step == STEP_FINAL || sess.step == STEP_APPLYING ||
			     sess.step == STEP_APPLIED))
				assert_true(sess.generation >= 1);
			if (role == VM_ROLE_SOURCE && sess.step == STEP_DONE)
				assert_true(sess.has_report &&
					    sess.report.generation == sess.generation);
			reached[sess.step]++;
		}
	}
	/* The walk is only evidence if it went everywhere. */
	for (int step = 0; step < _STEP_MAX; step++)
		if (reached[step] == 0)
			fail_msg("random walk never reached %s",
				 migration_step_to_string((enum migration_step)step));
	assert_true(replays > 0);
}

/* ---- the glue's questions (queries change nothing) ---- */

static void test_report_paused_only_at_prepared_or_final(void **unused)
{
	static const struct {
		enum migration_step step;
		int want;
	} source[] = {
		{ STEP_NONE, -EPROTO },	      { STEP_PREPARING, -EPROTO }, { STEP_PREPARED, 0 },
		{ STEP_FINALIZING, -EPROTO }, { STEP_FINAL, 0 },	   { STEP_DONE, -EPROTO },
		{ STEP_ABORTED, -ECANCELED }, { STEP_FAILED, -ECANCELED },
	};

	for (size_t i = 0; i < sizeof(source) / sizeof(source[0]); i++) {
		print_message("source at %s\n", migration_step_to_string(source[i].step));
		source_to(&sess, source[i].step);
		assert_unchanged_after(&sess, session_source_may_finalize(&sess), source[i].want);
	}
	/* A target is never asked to finalize. */
	target_to(&sess, STEP_PREPARED);
	assert_unchanged_after(&sess, session_source_may_finalize(&sess), -EPROTO);
	assert_int_equal(session_source_may_finalize(NULL), -EINVAL);
}

static void test_final_ack_replay_is_only_the_current_generation_from_the_peer(void **unused)
{
	source_to(&sess, STEP_FINAL);
	memcpy(&snap, &sess, sizeof(snap));
	assert_true(session_final_ack_is_replay(&sess, PEER, 1));
	assert_false(session_final_ack_is_replay(&sess, PEER, 2)); /* not the current one */
	assert_false(session_final_ack_is_replay(&sess, PEER, 0));
	assert_false(session_final_ack_is_replay(&sess, "other.example.net", 1)); /* foreign */
	assert_false(session_final_ack_is_replay(&sess, NULL, 1));
	assert_memory_equal(&snap, &sess, sizeof(snap));
	/* Waiting for the FinalAck it is no replay but the answer. */
	source_to(&sess, STEP_FINALIZING);
	assert_false(session_final_ack_is_replay(&sess, PEER, 1));
	source_to(&sess, STEP_DONE);
	assert_false(session_final_ack_is_replay(&sess, PEER, 1));
	/* A target's session holds no FinalAck. */
	target_to(&sess, STEP_FINAL);
	assert_false(session_final_ack_is_replay(&sess, PEER, 1));
	assert_false(session_final_ack_is_replay(NULL, PEER, 1));
}

/* A target that applied and never heard the source's Ack is done anyway;
 * the source's replay of the final state still gets its report. */
static void test_target_done_without_the_ack(void **unused)
{
	struct counter_state st;

	target_to(&sess, STEP_APPLIED);
	assert_int_equal(session_target_ack_lost(&sess, 200), 0);
	assert_int_equal(sess.step, STEP_DONE);
	assert_true(sess.has_report && sess.report.generation == 1);
	make_state(&st, 0);
	assert_unchanged_after(&sess, session_target_final(&sess, PEER, 1, &st, 210), 1);
	/* Only from APPLIED, only a target. */
	for (int step = STEP_NONE; step < _STEP_MAX; step++) {
		if (step == STEP_APPLIED || step == STEP_PREPARING || step == STEP_FINALIZING)
			continue; /* APPLIED: above; the others are a source's */
		target_to(&sess, (enum migration_step)step);
		assert_unchanged_after(&sess, session_target_ack_lost(&sess, 300),
				       step == STEP_ABORTED || step == STEP_FAILED ? -ECANCELED
										   : -EPROTO);
	}
	source_to(&sess, STEP_FINAL);
	assert_unchanged_after(&sess, session_target_ack_lost(&sess, 300), -EPROTO);
}

/* The recovery table, every step of each role a journal can hold. */
static void test_recovery_after_a_restart(void **unused)
{
	static const struct {
		enum vm_role role;
		enum migration_step step;
		enum session_recovery want;
	} table[] = {
		{ VM_ROLE_SOURCE, STEP_NONE, SESSION_RECOVERY_ABORT },
		{ VM_ROLE_SOURCE, STEP_PREPARING, SESSION_RECOVERY_ABORT },
		{ VM_ROLE_SOURCE, STEP_PREPARED, SESSION_RECOVERY_ABORT },
		/* The final state may be in flight: the target never confirmed
		 * it, and the source VM was not written. */
		{ VM_ROLE_SOURCE, STEP_FINALIZING, SESSION_RECOVERY_ABORT },
		{ VM_ROLE_SOURCE, STEP_FINAL, SESSION_RECOVERY_REPLAY_FINAL },
		{ VM_ROLE_SOURCE, STEP_DONE, SESSION_RECOVERY_KEEP },
		{ VM_ROLE_SOURCE, STEP_ABORTED, SESSION_RECOVERY_KEEP },
		{ VM_ROLE_SOURCE, STEP_FAILED, SESSION_RECOVERY_KEEP },
		{ VM_ROLE_TARGET, STEP_NONE, SESSION_RECOVERY_KEEP },
		{ VM_ROLE_TARGET, STEP_PREPARED, SESSION_RECOVERY_ABORT },
		{ VM_ROLE_TARGET, STEP_FINAL, SESSION_RECOVERY_AWAIT_SOURCE },
		{ VM_ROLE_TARGET, STEP_APPLYING, SESSION_RECOVERY_AWAIT_SOURCE },
		{ VM_ROLE_TARGET, STEP_APPLIED, SESSION_RECOVERY_KEEP },
		{ VM_ROLE_TARGET, STEP_DONE, SESSION_RECOVERY_KEEP },
		{ VM_ROLE_TARGET, STEP_ABORTED, SESSION_RECOVERY_KEEP },
		{ VM_ROLE_TARGET, STEP_FAILED, SESSION_RECOVERY_KEEP },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		print_message("%s at %s\n", vm_role_to_string(table[i].role),
			      migration_step_to_string(table[i].step));
		if (table[i].role == VM_ROLE_SOURCE)
			source_to(&sess, table[i].step);
		else
			target_to(&sess, table[i].step);
		assert_unchanged_after(&sess, session_recovery_of(&sess), table[i].want);
	}
}

static void test_a_recovered_target_applies_only_what_the_source_confirms(void **unused)
{
	struct counter_state st, newer;

	/* target_to's final state is generation 1 of make_state(0). */
	make_state(&st, 0);
	make_state(&newer, 3);
	target_to(&sess, STEP_FINAL);
	assert_int_equal(session_target_recovered(&sess, 500), 0);
	assert_true(sess.awaiting_source);
	assert_unchanged_after(&sess, session_target_begin_apply(&sess, 501), -ESTALE);
	/* A replay of that generation confirms it: 2, once. */
	assert_int_equal(session_target_final(&sess, PEER, 1, &st, 502), 2);
	assert_false(sess.awaiting_source);
	assert_unchanged_after(&sess, session_target_final(&sess, PEER, 1, &st, 503), 1);
	assert_int_equal(session_target_begin_apply(&sess, 504), 0);

	/* A newer generation confirms itself. */
	target_to(&sess, STEP_FINAL);
	assert_int_equal(session_target_recovered(&sess, 500), 0);
	assert_int_equal(session_target_final(&sess, PEER, 2, &newer, 502), 0);
	assert_false(sess.awaiting_source);
	assert_int_equal(session_target_begin_apply(&sess, 504), 0);

	/* An apply cut by the restart: back to FINAL, waiting, saying why. */
	target_to(&sess, STEP_APPLYING);
	assert_int_equal(session_target_recovered(&sess, 500), 0);
	assert_int_equal(sess.step, STEP_FINAL);
	assert_true(sess.awaiting_source);
	assert_non_null(strstr(sess.reason, "restarted"));
	/* Stale, conflicting or foreign replays do not confirm it. */
	assert_unchanged_after(&sess, session_target_final(&sess, PEER, 1, &newer, 505), -EEXIST);
	assert_unchanged_after(&sess, session_target_final(&sess, "evil", 1, &st, 505), -EPERM);
	/* Ending clears it. */
	assert_int_equal(session_fail(&sess, "source silent", 506), 0);
	assert_false(sess.awaiting_source);

	/* Nothing else waits: a source, a target before its final state or
	 * after its apply. */
	source_to(&sess, STEP_FINAL);
	assert_unchanged_after(&sess, session_target_recovered(&sess, 500), -EPROTO);
	target_to(&sess, STEP_PREPARED);
	assert_unchanged_after(&sess, session_target_recovered(&sess, 500), -EPROTO);
	target_to(&sess, STEP_APPLIED);
	assert_unchanged_after(&sess, session_target_recovered(&sess, 500), -EPROTO);
	assert_int_equal(session_target_recovered(NULL, 500), -EINVAL);
}

static void test_a_controller_aborts_a_source_only_before_its_final_state(void **unused)
{
	static const enum migration_step before[] = { STEP_PREPARING, STEP_PREPARED,
						      STEP_FINALIZING };

	for (size_t i = 0; i < sizeof(before) / sizeof(before[0]); i++) {
		source_to(&sess, before[i]);
		assert_int_equal(session_abort_by_controller(&sess, "operator", 2000), 0);
		assert_int_equal(sess.step, STEP_ABORTED);
		assert_string_equal(sess.reason, "operator");
	}
	/* The final state went out: the target decides, nothing changes here. */
	source_to(&sess, STEP_FINAL);
	assert_unchanged_after(&sess, session_abort_by_controller(&sess, "operator", 2000),
			       -EINPROGRESS);
	/* ... and the target's Abort, when it had not applied, is taken. */
	assert_int_equal(session_abort(&sess, "aborted on the target", 2001), 0);
	assert_int_equal(sess.step, STEP_ABORTED);
	/* A target aborts on a controller's word until it applied. */
	target_to(&sess, STEP_FINAL);
	assert_int_equal(session_abort_by_controller(&sess, "operator", 2000), 0);
	target_to(&sess, STEP_APPLIED);
	assert_unchanged_after(&sess, session_abort_by_controller(&sess, "operator", 2000),
			       -EALREADY);
	source_to(&sess, STEP_DONE);
	assert_unchanged_after(&sess, session_abort_by_controller(&sess, "operator", 2000),
			       -EALREADY);
}

static void test_target_admits_only_a_free_target_of_the_same_counter(void **unused)
{
	struct session_target_vm vm = {
		.registered = true,
		.arch = COUNTER_ARCH_X86_TSC,
		.offset_control = true,
		.n_vcpus = 4,
	};
	struct counter_state state = { .arch = COUNTER_ARCH_X86_TSC, .n_vcpus = 4 };

	assert_int_equal(session_target_admit(&vm, &state), 0);
	/* Each refusal alone. */
	vm.n_vcpus = 2;
	assert_int_equal(session_target_admit(&vm, &state), -EINVAL);
	vm.n_vcpus = 4;
	vm.offset_control = false;
	assert_int_equal(session_target_admit(&vm, &state), -EOPNOTSUPP);
	vm.offset_control = true;
	state.arch = COUNTER_ARCH_ARM64_CNTVCT;
	assert_int_equal(session_target_admit(&vm, &state), -ENOEXEC);
	state.arch = COUNTER_ARCH_X86_TSC;
	vm.busy = true;
	assert_int_equal(session_target_admit(&vm, &state), -EBUSY);
	vm.busy = false;
	vm.registered = false;
	assert_int_equal(session_target_admit(&vm, &state), -ENOENT);
	/* In order: a VM that is not there is not there, whatever else; a
	 * foreign counter is named before what this host's KVM lacks, and
	 * that before the vCPU count. */
	vm = (struct session_target_vm){ .busy = true, .arch = COUNTER_ARCH_ARM64_CNTVCT };
	assert_int_equal(session_target_admit(&vm, &state), -ENOENT);
	vm.registered = true;
	assert_int_equal(session_target_admit(&vm, &state), -EBUSY);
	vm.busy = false;
	assert_int_equal(session_target_admit(&vm, &state), -ENOEXEC);
	vm.arch = COUNTER_ARCH_X86_TSC;
	assert_int_equal(session_target_admit(&vm, &state), -EOPNOTSUPP);
	vm.offset_control = true;
	assert_int_equal(session_target_admit(&vm, &state), -EINVAL);
}

static void test_error_bound_verdict_follows_limit_and_policy(void **unused)
{
	/* No limit: anything goes, even an unsynchronised host's bound. */
	assert_int_equal(session_error_bound_verdict(UINT64_MAX, 0, true), SESSION_BOUND_WITHIN);
	/* At the limit is within it; one ns over is not. */
	assert_int_equal(session_error_bound_verdict(1000000, 1000000, true), SESSION_BOUND_WITHIN);
	assert_int_equal(session_error_bound_verdict(1000001, 1000000, true), SESSION_BOUND_REFUSE);
	assert_int_equal(session_error_bound_verdict(1000001, 1000000, false), SESSION_BOUND_WARN);
	assert_int_equal(session_error_bound_verdict(UINT64_MAX, 1, false), SESSION_BOUND_WARN);
	assert_int_equal(session_error_bound_verdict(0, 1, true), SESSION_BOUND_WITHIN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_source_happy_path_reaches_done),
		cmocka_unit_test(test_target_happy_path_reaches_done),
		cmocka_unit_test(test_target_accepts_newer_final_while_final),
		cmocka_unit_test(test_init_refuses_invalid_arguments),
		cmocka_unit_test(test_out_of_order_transitions_are_refused_unchanged),
		cmocka_unit_test(test_stale_generation_is_refused),
		cmocka_unit_test(test_target_refuses_generation_zero),
		cmocka_unit_test(test_exact_replay_returns_1_unchanged),
		cmocka_unit_test(test_conflicting_replay_is_refused_with_eexist),
		cmocka_unit_test(test_target_refuses_other_generation_once_applying),
		cmocka_unit_test(test_source_acks_resent_report_again),
		cmocka_unit_test(test_wrong_peer_is_refused_at_every_step_taking_from),
		cmocka_unit_test(test_abort_before_apply_succeeds),
		cmocka_unit_test(test_abort_after_apply_is_refused_with_ealready),
		cmocka_unit_test(test_abort_twice_returns_1_unchanged),
		cmocka_unit_test(test_messages_after_abort_are_cancelled),
		cmocka_unit_test(test_fail_from_any_live_step),
		cmocka_unit_test(test_reason_is_truncated_safely),
		cmocka_unit_test(test_apply_twice_is_a_noop_keeping_report),
		cmocka_unit_test(test_apply_without_final_is_refused),
		cmocka_unit_test(test_apply_failed_returns_to_final_and_apply_retries),
		cmocka_unit_test(test_target_applied_refuses_report_of_other_migration),
		cmocka_unit_test(test_step_names_round_trip),
		cmocka_unit_test(test_random_walk_keeps_invariants),
		cmocka_unit_test(test_report_paused_only_at_prepared_or_final),
		cmocka_unit_test(
			test_final_ack_replay_is_only_the_current_generation_from_the_peer),
		cmocka_unit_test(test_recovery_after_a_restart),
		cmocka_unit_test(test_a_recovered_target_applies_only_what_the_source_confirms),
		cmocka_unit_test(test_a_controller_aborts_a_source_only_before_its_final_state),
		cmocka_unit_test(test_target_admits_only_a_free_target_of_the_same_counter),
		cmocka_unit_test(test_error_bound_verdict_follows_limit_and_policy),
		cmocka_unit_test(test_target_done_without_the_ack),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
