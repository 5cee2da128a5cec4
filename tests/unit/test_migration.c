/* test_migration.c - the migration flow (daemon/migration.c) between two
 * daemons in one process, on one event loop: the real state machine, glue,
 * session journal, sync source and host clocks; the peer link and the VMM
 * are fakes at their ports (flow_fakes.h), so the test decides when each
 * frame arrives and when each KVM op completes. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "flow_fakes.h"
#include "migration.h"
#include "vmm_server.h"

static int setup(void **state)
{
	(void)state;
	flow_setup();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	flow_teardown();
	return 0;
}

static void test_a_migration_from_start_to_done(void **state)
{
	const struct reply *r;
	char id[VC_MIGRATION_ID_LEN + 1];

	(void)state;
	migration_vmm_handlers.migrate_out(&host_a, 11, 1, VM_ID, ADDR_B, NAME_B);
	settle();
	r = reply_to(&host_a, 1);
	assert_non_null(r);
	assert_int_equal(r->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY);
	snprintf(id, sizeof(id), "%s", r->migration_id);
	assert_int_equal(session_of(&host_a, id)->step, STEP_PREPARED);
	assert_int_equal(session_of(&host_b, id)->step, STEP_PREPARED);

	/* The source's VMM paused its guest. */
	migration_vmm_handlers.report_paused(&host_a, 11, 2, VM_ID, id);
	settle();
	r = reply_to(&host_a, 2);
	assert_non_null(r);
	assert_int_equal(r->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED_REPLY);
	assert_int_equal(session_of(&host_b, id)->step, STEP_FINAL);

	/* The target's VMM applies. */
	migration_vmm_handlers.apply(&host_b, 22, 3, VM_ID, id);
	settle();
	r = reply_to(&host_b, 3);
	assert_non_null(r);
	assert_int_equal(r->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY_REPLY);
	assert_int_equal(session_of(&host_a, id)->step, STEP_DONE);
	assert_int_equal(session_of(&host_b, id)->step, STEP_DONE);
	assert_int_equal(applies, 1);
	assert_int_equal(source_writes, 0);
}

/* A migration started by the source's VMM (request 1) and its guest
 * paused (request 2): both hosts at FINAL. */
static void start_and_pause(char id[VC_MIGRATION_ID_LEN + 1])
{
	const struct reply *r;

	migration_vmm_handlers.migrate_out(&host_a, 11, 1, VM_ID, ADDR_B, NAME_B);
	settle();
	r = reply_to(&host_a, 1);
	assert_non_null(r);
	snprintf(id, VC_MIGRATION_ID_LEN + 1, "%s", r->migration_id);
	migration_vmm_handlers.report_paused(&host_a, 11, 2, VM_ID, id);
	settle();
	assert_int_equal(session_of(&host_a, id)->step, STEP_FINAL);
	assert_int_equal(session_of(&host_b, id)->step, STEP_FINAL);
}

/* A controller cannot abort a source whose final state may be applied
 * already: the target decides, and its abort ends both. */
static void test_a_source_at_final_is_aborted_on_the_target(void **state)
{
	struct migration_view v;
	const struct reply *r;
	char id[VC_MIGRATION_ID_LEN + 1];

	(void)state;
	start_and_pause(id);

	assert_int_equal(migration_abort(&host_a, id, "operator", &v), -EINPROGRESS);
	assert_int_equal(session_of(&host_a, id)->step, STEP_FINAL);
	assert_int_equal(migration_abort(&host_b, id, "operator", &v), 0);
	settle();
	assert_int_equal(session_of(&host_a, id)->step, STEP_ABORTED);
	assert_int_equal(session_of(&host_b, id)->step, STEP_ABORTED);
	/* The target's VMM is refused the apply it asks for now. */
	migration_vmm_handlers.apply(&host_b, 22, 3, VM_ID, id);
	settle();
	r = reply_to(&host_b, 3);
	assert_non_null(r);
	assert_int_equal(r->body_case, -ECANCELED);
	assert_int_equal(applies, 0);
	assert_int_equal(source_writes, 0);
}

/* The daemons stop (SIGTERM) while the target's apply waits at its VMM and
 * the source's read is answered: the manager stops the migrations, then
 * the VMM socket, whose held ops end then; their callbacks find no
 * migration and do nothing. Found by fuzz_peer_link: they dereferenced the
 * migrations already gone. The stop is the teardown's. */
static void test_stopping_with_kvm_ops_held(void **state)
{
	char id[VC_MIGRATION_ID_LEN + 1];

	(void)state;
	/* The target holds its deferred apply at the VMM ... */
	start_and_pause(id);
	/* ... and the source a read its VMM has not answered: paused again. */
	migration_vmm_handlers.report_paused(&host_a, 11, 3, VM_ID, id);
	assert_int_equal(source_writes, 0);
}

/* ---- a seeded walk of interleavings ---- */

static uint64_t rng;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

struct walk_stats {
	unsigned done, aborted, failed, restarts, losses, reorders, duplicates, aborts;
};

static void check_invariants(const char *id, unsigned seed)
{
	const struct session *a = session_of(&host_a, id);
	struct migration_view vb;
	bool target_known = migration_get_view(&host_b, id, &vb) == 0;
	const struct session *b = target_known ? vb.s : NULL;

	if (source_writes)
		fail_msg("seed %u: the source VM was written", seed);
	/* The target applies only a final state the source sent: never a
	 * generation newer than the source's newest. */
	if (b && b->has_report && (!a->has_final || b->report.generation > a->generation))
		fail_msg("seed %u: target applied generation %" PRIu64
			 ", source sent up to %" PRIu64,
			 seed, b->report.generation, a->generation);
	if (a->step == STEP_DONE) {
		/* Done: both hold the same report, of the source's newest state. */
		if (!b || !b->has_report)
			fail_msg("seed %u: source done, target has no report", seed);
		if (memcmp(&a->report, &b->report, sizeof(a->report)) != 0 ||
		    a->report.generation != a->generation)
			fail_msg("seed %u: source and target hold different reports", seed);
	}
	/* A source that gave up never did so on the state the target applied:
	 * only when its VMM paused again after that apply (a newer generation
	 * the target then refused). */
	if ((a->step == STEP_ABORTED || a->step == STEP_FAILED) && b && b->has_report &&
	    b->report.generation == a->generation)
		fail_msg("seed %u: source %s (%s), target applied its generation %" PRIu64, seed,
			 migration_step_to_string(a->step), a->reason, a->generation);
}

/* Both sides terminal (a target that never heard of it counts as ended). */
static bool ended(const char *id)
{
	struct migration_view vb;

	if (!migration_step_is_terminal(session_of(&host_a, id)->step))
		return false;
	return migration_get_view(&host_b, id, &vb) < 0 || migration_step_is_terminal(vb.s->step);
}

/* Was the source's pause request answered with its generation? */
static bool paused_ok(uint64_t request_id)
{
	const struct reply *r = request_id ? reply_to(&host_a, request_id) : NULL;

	return r && r->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED_REPLY;
}

static void walk(unsigned seed, struct walk_stats *st)
{
	char id[VC_MIGRATION_ID_LEN + 1] = "";
	uint64_t req = 100, paused_req = 0, apply_req = 0;
	bool applying = false;
	const struct reply *r;

	rng = UINT64_C(0x9e3779b97f4a7c15) ^ ((uint64_t)seed * UINT64_C(0x2545f4914f6cdd1d));
	if (rng == 0)
		rng = 1;
	migration_vmm_handlers.migrate_out(&host_a, 11, 1, VM_ID, ADDR_B, NAME_B);
	for (int step = 0; step < 80; step++) {
		unsigned what = rnd(100);

		event_base_loop(base, EVLOOP_NONBLOCK);
		if (!id[0] && (r = reply_to(&host_a, 1)) &&
		    r->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY)
			snprintf(id, sizeof(id), "%s", r->migration_id);
		if (what < 44) {
			(void)deliver_one();
		} else if (what < 50) {
			st->reorders += deliver_any(rnd(MAX_EVENTS));
		} else if (what < 53) {
			duplicate_frame(rnd(MAX_EVENTS));
			st->duplicates++;
		} else if (what < 77) {
			(void)complete_one();
		} else if (what < 86) {
			/* QEMU pauses (again, after a failed attempt) only
			 * before the target ran anything. */
			if (id[0] && !applying) {
				paused_req = req;
				migration_vmm_handlers.report_paused(&host_a, 11, req++, VM_ID, id);
			}
		} else if (what < 95) {
			/* The target applies once its QEMU has the device
			 * state, which the source sends only after its pause
			 * was answered. */
			if (id[0] && paused_ok(paused_req)) {
				applying = true;
				migration_vmm_handlers.apply(&host_b, 22, req++, VM_ID, id);
			}
		} else if (what < 98) {
			/* A controller aborts, on either host. */
			if (id[0]) {
				struct migration_view v;

				(void)migration_abort(rnd(2) ? &host_a : &host_b, id,
						      "aborted by the walk", &v);
				st->aborts++;
			}
		} else if (what < 99) {
			link_loss();
			st->losses++;
		} else {
			restart(rnd(2) ? &host_a : &host_b);
			st->restarts++;
		}
	}
	/* Healthy from here: every frame arrives, every op completes, the
	 * VMMs ask once more. */
	settle();
	if (!id[0]) {
		r = reply_to(&host_a, 1);
		if (!r || r->body_case != VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY) {
			st->failed++; /* refused or failed before it had an id */
			assert_int_equal(source_writes, 0);
			return;
		}
		snprintf(id, sizeof(id), "%s", r->migration_id);
	}
	if (!applying) {
		paused_req = req;
		migration_vmm_handlers.report_paused(&host_a, 11, req++, VM_ID, id);
		settle();
	}
	if (paused_ok(paused_req)) {
		apply_req = req;
		migration_vmm_handlers.apply(&host_b, 22, req++, VM_ID, id);
		settle();
	}
	/* A source's pause that was never answered (a restart, a lost link)
	 * means its QEMU never sent the device state: the target's incoming
	 * migration fails and its VMM lets the VM go. */
	if (!paused_ok(paused_req)) {
		struct vm_entry *vm = vm_registry_find(&host_b.vms, VM_ID);

		if (vm)
			vm_registry_remove(&host_b.vms, vm);
		settle();
	}
	/* The rest ends by the flow's own timers (a replay, a timeout); a
	 * target VMM told ESTALE (recovered, the source not yet confirmed
	 * its state) asks again, as libvcounter does. */
	for (int t = 0; t < 1000 && !ended(id); t++) {
		usleep(1000);
		settle();
		r = apply_req ? reply_to(&host_b, apply_req) : NULL;
		if (r && r->body_case == -ESTALE) {
			apply_req = req;
			migration_vmm_handlers.apply(&host_b, 22, req++, VM_ID, id);
		}
	}
	check_invariants(id, seed);
	if (!ended(id))
		fail_msg("seed %u: not ended after 1 s of timers: source %s, target %s", seed,
			 migration_step_to_string(session_of(&host_a, id)->step),
			 migration_get_view(&host_b, id, &(struct migration_view){ 0 }) == 0
				 ? migration_step_to_string(session_of(&host_b, id)->step)
				 : "none");
	switch (session_of(&host_a, id)->step) {
	case STEP_DONE:
		st->done++;
		break;
	case STEP_ABORTED:
		st->aborted++;
		break;
	case STEP_FAILED:
		st->failed++;
		break;
	default:
		break;
	}
}

/* 1,000 seeded interleavings of delivery (a link's frame overtaking
 * another link's, a frame arriving twice), KVM op completion, VMM requests
 * at any time (a pause reported again, an apply early or twice), a
 * controller's abort on either host, link losses and restarts of either
 * daemon; then a healthy end. Each keeps the
 * invariants the integration tests assert: the source never written, no
 * stale or foreign apply, the two sides' outcomes agree. */
static void test_seeded_interleavings_keep_the_invariants(void **state)
{
	const char *env = getenv("VC_MIGRATION_WALKS");
	unsigned n = env ? (unsigned)strtoul(env, NULL, 10) : 1000;
	struct walk_stats st = { 0 };

	(void)state;
	for (unsigned seed = 0; seed < n; seed++) {
		setup(NULL);
		/* Timeouts that fire within the walk and end it soon after. */
		host_a.config.peer_timeout_ms = host_b.config.peer_timeout_ms = 16;
		walk(seed, &st);
		teardown(NULL);
	}
	print_message("%u walks: %u done, %u aborted, %u failed; %u link losses, %u restarts, "
		      "%u frames overtaking another link's, %u duplicated, %u controller "
		      "aborts\n",
		      n, st.done, st.aborted, st.failed, st.losses, st.restarts, st.reorders,
		      st.duplicates, st.aborts);
	assert_int_equal(st.done + st.aborted + st.failed, n);
	assert_true(st.done > 0 && st.aborted + st.failed > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_a_migration_from_start_to_done, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_source_at_final_is_aborted_on_the_target,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_stopping_with_kvm_ops_held, setup, teardown),
		cmocka_unit_test(test_seeded_interleavings_keep_the_invariants),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
