/* test_metrics.c - the Prometheus text byte for byte (families, escaping,
 * cumulative buckets, +Inf), each migration's outcome counted once, and the
 * metrics endpoint's request judge and address parsing. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "macro.h"
#include "metrics.h"
#include "metrics_http.h"
#include "netaddr.h"

/* Sessions are large (two counter states and a report): off the stack. */
static struct session sess;
static char text[METRICS_TEXT_MAX];

static const struct metrics_snapshot empty_snap = {
	.version = "0.1.0",
	.start_time_ns = UINT64_C(1700000000250000000),
};

static const char *render(const struct metrics *m, const struct metrics_snapshot *snap)
{
	int n = metrics_render(m, snap, text, sizeof(text));

	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(text));
	return text;
}

/* The sample line of text starting with prefix (a name and its labels, and the
 * space), or NULL; the value follows. */
static const char *sample(const char *prefix)
{
	size_t len = strlen(prefix);

	for (const char *line = text; *line;) {
		const char *nl = strchr(line, '\n');

		if (strncmp(line, prefix, len) == 0)
			return line + len;
		if (!nl)
			break;
		line = nl + 1;
	}
	return NULL;
}

static void assert_sample(const char *prefix, const char *value)
{
	const char *v = sample(prefix);
	size_t len = strlen(value);

	if (!v)
		fail_msg("no sample '%s' in:\n%s", prefix, text);
	if (strncmp(v, value, len) != 0 || v[len] != '\n')
		fail_msg("sample '%s' is '%.*s', expected '%s'", prefix, (int)strcspn(v, "\n"), v,
			 value);
}

/* In two parts: ISO C guarantees string literals of 4095 bytes only. */
static const char expected_head[] =
	"# HELP vcounterd_build_info The version of this vcounterd, as a label; always 1.\n"
	"# TYPE vcounterd_build_info gauge\n"
	"vcounterd_build_info{version=\"0.1.0\"} 1\n"
	"# HELP vcounterd_start_time_seconds When this vcounterd started, in seconds since the "
	"Unix epoch.\n"
	"# TYPE vcounterd_start_time_seconds gauge\n"
	"vcounterd_start_time_seconds 1700000000.25\n"
	"# HELP vcounterd_vms_registered VMs registered here whose registration finished, by "
	"role and counter backend.\n"
	"# TYPE vcounterd_vms_registered gauge\n"
	"vcounterd_vms_registered{role=\"source\",backend=\"none\"} 0\n"
	"vcounterd_vms_registered{role=\"source\",backend=\"kvm-x86\"} 2\n"
	"vcounterd_vms_registered{role=\"source\",backend=\"kvm-syscounter\"} 0\n"
	"vcounterd_vms_registered{role=\"source\",backend=\"kvm-arm64\"} 0\n"
	"vcounterd_vms_registered{role=\"target\",backend=\"none\"} 4\n"
	"vcounterd_vms_registered{role=\"target\",backend=\"kvm-x86\"} 0\n"
	"vcounterd_vms_registered{role=\"target\",backend=\"kvm-syscounter\"} 1\n"
	"vcounterd_vms_registered{role=\"target\",backend=\"kvm-arm64\"} 0\n"
	"# HELP vcounterd_migrations_total Migrations that ended, by role and outcome (a target "
	"is done once it applied).\n"
	"# TYPE vcounterd_migrations_total counter\n"
	"vcounterd_migrations_total{role=\"source\",outcome=\"done\"} 3\n"
	"vcounterd_migrations_total{role=\"source\",outcome=\"aborted\"} 0\n"
	"vcounterd_migrations_total{role=\"source\",outcome=\"failed\"} 1\n"
	"vcounterd_migrations_total{role=\"target\",outcome=\"done\"} 2\n"
	"vcounterd_migrations_total{role=\"target\",outcome=\"aborted\"} 1\n"
	"vcounterd_migrations_total{role=\"target\",outcome=\"failed\"} 0\n"
	"# HELP vcounterd_migrations_running Migrations not yet done, aborted or failed.\n"
	"# TYPE vcounterd_migrations_running gauge\n"
	"vcounterd_migrations_running 1\n";
static const char expected_tail[] =
	"# HELP vcounterd_apply_latency_seconds Target side: from the VMM's apply request to the "
	"offsets written and verified.\n"
	"# TYPE vcounterd_apply_latency_seconds histogram\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.00001\"} 1\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.000025\"} 1\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.00005\"} 1\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.0001\"} 1\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.00025\"} 1\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.0005\"} 1\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.001\"} 1\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.0025\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.005\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.01\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.025\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.05\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.1\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.25\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"0.5\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"1\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"2.5\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"5\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"10\"} 3\n"
	"vcounterd_apply_latency_seconds_bucket{le=\"+Inf\"} 4\n"
	"vcounterd_apply_latency_seconds_sum 11.00401\n"
	"vcounterd_apply_latency_seconds_count 4\n"
	"# HELP vcounterd_last_error_bound_seconds Error bound of the last migration applied; "
	"+Inf when a host clock was not synchronised.\n"
	"# TYPE vcounterd_last_error_bound_seconds gauge\n"
	"vcounterd_last_error_bound_seconds 0.002306357\n"
	"# HELP vcounterd_last_elapsed_seconds Host time the last migration applied accounted "
	"between source and target.\n"
	"# TYPE vcounterd_last_elapsed_seconds gauge\n"
	"vcounterd_last_elapsed_seconds 0.060520739\n"
	"# HELP vcounterd_last_clamped_seconds How far the last migration's target clock read "
	"behind the source's anchor (0: it ran forward); the guest's counter was held by that, not "
	"moved back.\n"
	"# TYPE vcounterd_last_clamped_seconds gauge\n"
	"vcounterd_last_clamped_seconds 0.25\n"
	"# HELP vcounterd_counter_held_total Migrations done whose target clock read behind the "
	"source's anchor: the guest's counter was held rather than moved back (check the hosts' "
	"time sync).\n"
	"# TYPE vcounterd_counter_held_total counter\n"
	"vcounterd_counter_held_total 4\n"
	"# HELP vcounterd_kvmclock_checks_total Migrations applied here, by what the guest's "
	"kvmclock showed after the apply: ok, master-clock-lost, diverged (from its TSC), "
	"unchecked.\n"
	"# TYPE vcounterd_kvmclock_checks_total counter\n"
	"vcounterd_kvmclock_checks_total{verdict=\"unchecked\"} 1\n"
	"vcounterd_kvmclock_checks_total{verdict=\"ok\"} 9\n"
	"vcounterd_kvmclock_checks_total{verdict=\"master-clock-lost\"} 0\n"
	"vcounterd_kvmclock_checks_total{verdict=\"diverged\"} 2\n"
	"# HELP vcounterd_last_kvmclock_error_seconds kvmclock's advance minus the guest TSC's "
	"across the last checked migration applied here.\n"
	"# TYPE vcounterd_last_kvmclock_error_seconds gauge\n"
	"vcounterd_last_kvmclock_error_seconds -0.000001234\n"
	"# HELP vcounterd_peer_links Peer links, by state (connecting: TCP connect or TLS "
	"handshake running).\n"
	"# TYPE vcounterd_peer_links gauge\n"
	"vcounterd_peer_links{state=\"established\"} 1\n"
	"vcounterd_peer_links{state=\"connecting\"} 2\n"
	"# HELP vcounterd_peer_link_failures_total Peer links that ended in an error: connect or "
	"handshake failed, or the link was lost.\n"
	"# TYPE vcounterd_peer_link_failures_total counter\n"
	"vcounterd_peer_link_failures_total 5\n"
	"# HELP vcounterd_tls_handshake_failures_total Incoming TLS connections refused or lost "
	"before a verified handshake, by listener.\n"
	"# TYPE vcounterd_tls_handshake_failures_total counter\n"
	"vcounterd_tls_handshake_failures_total{listener=\"peer\"} 7\n"
	"vcounterd_tls_handshake_failures_total{listener=\"control\"} 0\n"
	"# HELP vcounterd_journal_write_failures_total Session journal writes that failed (disk "
	"full, I/O error); the step each was for did not take effect.\n"
	"# TYPE vcounterd_journal_write_failures_total counter\n"
	"vcounterd_journal_write_failures_total 2\n";
static const char expected_sockets[] =
	"# HELP vcounterd_accept_failures_total accept() on a listening socket that failed for "
	"want of file descriptors or memory; the socket then pauses, its connections wait in the "
	"backlog.\n"
	"# TYPE vcounterd_accept_failures_total counter\n"
	"vcounterd_accept_failures_total{socket=\"vmm\"} 12\n"
	"vcounterd_accept_failures_total{socket=\"peer\"} 0\n"
	"vcounterd_accept_failures_total{socket=\"control-unix\"} 0\n"
	"vcounterd_accept_failures_total{socket=\"control-tcp\"} 3\n"
	"vcounterd_accept_failures_total{socket=\"metrics\"} 0\n"
	"# HELP vcounterd_vmm_refusals_total Requests and connections the VMM socket refused, by "
	"reason.\n"
	"# TYPE vcounterd_vmm_refusals_total counter\n"
	"vcounterd_vmm_refusals_total{reason=\"malformed\"} 4\n"
	"vcounterd_vmm_refusals_total{reason=\"too-large\"} 0\n"
	"vcounterd_vmm_refusals_total{reason=\"invalid\"} 0\n"
	"vcounterd_vmm_refusals_total{reason=\"not-allowed\"} 0\n"
	"vcounterd_vmm_refusals_total{reason=\"limit\"} 0\n"
	"vcounterd_vmm_refusals_total{reason=\"exists\"} 0\n"
	"vcounterd_vmm_refusals_total{reason=\"unknown-vm\"} 0\n"
	"vcounterd_vmm_refusals_total{reason=\"out-of-fds\"} 1\n"
	"vcounterd_vmm_refusals_total{reason=\"other\"} 0\n";

static const char expected_shed[] =
	"# HELP vcounterd_connections_shed_total Connections closed before they were "
	"authenticated or served, by socket and reason: per-source (its address held its share), "
	"evicted (the oldest waiting, to make room), deadline, full.\n"
	"# TYPE vcounterd_connections_shed_total counter\n"
	"vcounterd_connections_shed_total{socket=\"vmm\",reason=\"per-source\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"vmm\",reason=\"evicted\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"vmm\",reason=\"deadline\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"vmm\",reason=\"full\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"peer\",reason=\"per-source\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"peer\",reason=\"evicted\"} 5\n"
	"vcounterd_connections_shed_total{socket=\"peer\",reason=\"deadline\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"peer\",reason=\"full\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"control-unix\",reason=\"per-source\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"control-unix\",reason=\"evicted\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"control-unix\",reason=\"deadline\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"control-unix\",reason=\"full\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"control-tcp\",reason=\"per-source\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"control-tcp\",reason=\"evicted\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"control-tcp\",reason=\"deadline\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"control-tcp\",reason=\"full\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"metrics\",reason=\"per-source\"} 2\n"
	"vcounterd_connections_shed_total{socket=\"metrics\",reason=\"evicted\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"metrics\",reason=\"deadline\"} 0\n"
	"vcounterd_connections_shed_total{socket=\"metrics\",reason=\"full\"} 0\n"
	"# HELP vcounterd_control_watchers Open WatchEvents streams of the control API.\n"
	"# TYPE vcounterd_control_watchers gauge\n"
	"vcounterd_control_watchers 3\n";
static const char expected_clock[] =
	"# HELP vcounterd_clock_error_seconds This host's clock-error estimate now, its share of "
	"a migration's error bound, by the sync source that made it; +Inf when unsynchronised or "
	"the source does not answer.\n"
	"# TYPE vcounterd_clock_error_seconds gauge\n"
	"vcounterd_clock_error_seconds{source=\"chrony\"} 0.001173\n";

static void test_render_known_state_is_exact(void **state)
{
	char expected[sizeof(expected_head) + sizeof(expected_tail) + sizeof(expected_sockets) +
		      sizeof(expected_shed) + sizeof(expected_clock)];
	struct metrics m = { 0 };
	struct metrics_snapshot snap = empty_snap;

	snap.vms[VM_ROLE_SOURCE][BACKEND_KVM_X86] = 2;
	snap.vms[VM_ROLE_TARGET][BACKEND_KVM_SYSCOUNTER] = 1;
	snap.vms[VM_ROLE_TARGET][BACKEND_NONE] = 4;
	snap.migrations_running = 1;
	snap.peer_links_established = 1;
	snap.peer_links_connecting = 2;
	snap.control_watchers = 3;
	snap.sync_source = SYNC_SOURCE_CHRONY;
	snap.clock_error_ns = 1173000;
	m.migrations[VM_ROLE_SOURCE][METRICS_OUTCOME_DONE] = 3;
	m.migrations[VM_ROLE_SOURCE][METRICS_OUTCOME_FAILED] = 1;
	m.migrations[VM_ROLE_TARGET][METRICS_OUTCOME_DONE] = 2;
	m.migrations[VM_ROLE_TARGET][METRICS_OUTCOME_ABORTED] = 1;
	/* 10 us, 2 ms twice, 11 s. */
	m.apply_latency_buckets[0] = 1;
	m.apply_latency_buckets[7] = 2;
	m.apply_latency_buckets[METRICS_APPLY_LATENCY_BUCKETS] = 1;
	m.apply_latency_count = 4;
	m.apply_latency_sum_ns = UINT64_C(10000) + 2 * UINT64_C(2000000) + UINT64_C(11000000000);
	m.has_last = true;
	m.last_error_bound_ns = 2306357;
	m.last_elapsed_ns = 60520739;
	m.last_clamped_ns = 250000000;
	m.counter_held = 4;
	m.kvmclock_checks[KVMCLOCK_UNCHECKED] = 1;
	m.kvmclock_checks[KVMCLOCK_OK] = 9;
	m.kvmclock_checks[KVMCLOCK_DIVERGED] = 2;
	m.has_last_kvmclock = true;
	m.last_kvmclock_error_ns = -1234;
	m.peer_link_failures = 5;
	m.tls_handshake_failures[METRICS_LISTENER_PEER] = 7;
	m.journal_write_failures = 2;
	m.accept_failures[METRICS_SOCKET_VMM] = 12;
	m.accept_failures[METRICS_SOCKET_CONTROL_TCP] = 3;
	m.vmm_refusals[METRICS_REFUSAL_MALFORMED] = 4;
	m.vmm_refusals[METRICS_REFUSAL_OUT_OF_FDS] = 1;
	metrics_shed(&m, METRICS_SOCKET_PEER, METRICS_SHED_EVICTED);
	m.connections_shed[METRICS_SOCKET_PEER][METRICS_SHED_EVICTED] += 4;
	m.connections_shed[METRICS_SOCKET_METRICS][METRICS_SHED_PER_SOURCE] = 2;
	metrics_shed(&m, _METRICS_SOCKET_MAX, METRICS_SHED_FULL); /* ignored */

	snprintf(expected, sizeof(expected), "%s%s%s%s%s", expected_head, expected_tail,
		 expected_sockets, expected_shed, expected_clock);
	assert_string_equal(render(&m, &snap), expected);
}

/* Each family's HELP and TYPE appear exactly once, HELP first, and every
 * sample belongs to the family declared last. */
static void test_every_family_declared_once_before_its_samples(void **state)
{
	static const char *const families[] = {
		"vcounterd_build_info",
		"vcounterd_start_time_seconds",
		"vcounterd_vms_registered",
		"vcounterd_migrations_total",
		"vcounterd_migrations_running",
		"vcounterd_apply_latency_seconds",
		"vcounterd_last_error_bound_seconds",
		"vcounterd_last_elapsed_seconds",
		"vcounterd_last_clamped_seconds",
		"vcounterd_counter_held_total",
		"vcounterd_kvmclock_checks_total",
		"vcounterd_last_kvmclock_error_seconds",
		"vcounterd_peer_links",
		"vcounterd_peer_link_failures_total",
		"vcounterd_tls_handshake_failures_total",
		"vcounterd_journal_write_failures_total",
		"vcounterd_accept_failures_total",
		"vcounterd_vmm_refusals_total",
		"vcounterd_connections_shed_total",
		"vcounterd_control_watchers",
		"vcounterd_clock_error_seconds",
	};
	struct metrics m = { .has_last = true };
	char current[64] = "";
	int help_seen[ELEMENTSOF(families)] = { 0 }, type_seen[ELEMENTSOF(families)] = { 0 };

	render(&m, &empty_snap);
	for (char *line = text, *nl; *line; line = nl + 1) {
		char name[64];

		nl = strchr(line, '\n');
		assert_non_null(nl);
		if (sscanf(line, "# HELP %63s", name) == 1) {
			size_t i;

			for (i = 0; i < ELEMENTSOF(families); i++)
				if (strcmp(families[i], name) == 0)
					break;
			assert_true(i < ELEMENTSOF(families));
			assert_int_equal(help_seen[i]++, 0);
			snprintf(current, sizeof(current), "%s", name);
			continue;
		}
		if (sscanf(line, "# TYPE %63s", name) == 1) {
			assert_string_equal(name, current);
			for (size_t i = 0; i < ELEMENTSOF(families); i++)
				if (strcmp(families[i], name) == 0)
					assert_int_equal(type_seen[i]++, 0);
			continue;
		}
		/* A sample: its name is the family's, or a histogram's _bucket,
		 * _sum, _count. */
		assert_int_equal(strncmp(line, current, strlen(current)), 0);
		assert_true(strchr("{ _", line[strlen(current)]) != NULL);
	}
	for (size_t i = 0; i < ELEMENTSOF(families); i++) {
		assert_int_equal(help_seen[i], 1);
		assert_int_equal(type_seen[i], 1);
	}
}

static void test_label_values_are_escaped(void **state)
{
	struct metrics m = { 0 };
	struct metrics_snapshot snap = empty_snap;

	snap.version = "1.0\\beta \"rc\"\nnext";
	render(&m, &snap);
	assert_non_null(strstr(
		text, "vcounterd_build_info{version=\"1.0\\\\beta \\\"rc\\\"\\nnext\"} 1\n"));
	/* No raw line feed inside it: the sample is one line. */
	assert_sample("vcounterd_build_info{version=\"1.0\\\\beta \\\"rc\\\"\\nnext\"} ", "1");
}

static void session_at(enum vm_role role, enum migration_step step, bool has_report)
{
	memset(&sess, 0, sizeof(sess));
	sess.role = role;
	sess.step = step;
	sess.has_report = has_report;
}

static void test_histogram_is_cumulative_with_inf_sum_and_count(void **state)
{
	/* On a bound counts in that bucket (le is <=); just above, in the next. */
	static const uint64_t latencies_ns[] = {
		10000, 10001, 15365000, UINT64_C(10000000000), UINT64_C(10000000001), UINT64_C(0),
	};
	struct metrics m = { 0 };

	for (size_t i = 0; i < ELEMENTSOF(latencies_ns); i++) {
		bool counted = false;

		session_at(VM_ROLE_TARGET, STEP_APPLIED, true);
		sess.report.apply_latency_ns = latencies_ns[i];
		metrics_migration_changed(&m, &sess, &counted);
		assert_true(counted);
	}
	render(&m, &empty_snap);
	assert_sample("vcounterd_apply_latency_seconds_bucket{le=\"0.00001\"} ", "2");
	assert_sample("vcounterd_apply_latency_seconds_bucket{le=\"0.000025\"} ", "3");
	assert_sample("vcounterd_apply_latency_seconds_bucket{le=\"0.01\"} ", "3");
	assert_sample("vcounterd_apply_latency_seconds_bucket{le=\"0.025\"} ", "4");
	assert_sample("vcounterd_apply_latency_seconds_bucket{le=\"5\"} ", "4");
	assert_sample("vcounterd_apply_latency_seconds_bucket{le=\"10\"} ", "5");
	assert_sample("vcounterd_apply_latency_seconds_bucket{le=\"+Inf\"} ", "6");
	assert_sample("vcounterd_apply_latency_seconds_sum ", "20.015385002");
	assert_sample("vcounterd_apply_latency_seconds_count ", "6");
	/* The last one applied sets the gauges. */
	assert_sample("vcounterd_last_error_bound_seconds ", "0");
	assert_sample("vcounterd_migrations_total{role=\"target\",outcome=\"done\"} ", "6");
}

static void test_each_outcome_is_counted_once(void **state)
{
	struct metrics m = { 0 };
	bool counted = false;

	/* A target: steps before APPLIED count nothing. */
	for (enum migration_step step = STEP_NONE; step < STEP_APPLIED; step++) {
		session_at(VM_ROLE_TARGET, step, false);
		metrics_migration_changed(&m, &sess, &counted);
		assert_false(counted);
	}
	session_at(VM_ROLE_TARGET, STEP_APPLIED, true);
	sess.report.apply_latency_ns = 1000;
	metrics_migration_changed(&m, &sess, &counted);
	assert_true(counted);
	/* Seen again applied, acked (DONE), then failed (an Error to its
	 * Applied): still one outcome, one observation. */
	metrics_migration_changed(&m, &sess, &counted);
	sess.step = STEP_DONE;
	metrics_migration_changed(&m, &sess, &counted);
	sess.step = STEP_FAILED;
	metrics_migration_changed(&m, &sess, &counted);
	assert_int_equal(m.migrations[VM_ROLE_TARGET][METRICS_OUTCOME_DONE], 1);
	assert_int_equal(m.migrations[VM_ROLE_TARGET][METRICS_OUTCOME_FAILED], 0);
	assert_int_equal(m.apply_latency_count, 1);

	/* A source: APPLIED is not its outcome (DONE is). */
	counted = false;
	session_at(VM_ROLE_SOURCE, STEP_APPLIED, false);
	metrics_migration_changed(&m, &sess, &counted);
	assert_false(counted);
	session_at(VM_ROLE_SOURCE, STEP_FAILED, false);
	metrics_migration_changed(&m, &sess, &counted);
	metrics_migration_changed(&m, &sess, &counted);
	assert_int_equal(m.migrations[VM_ROLE_SOURCE][METRICS_OUTCOME_FAILED], 1);

	counted = false;
	session_at(VM_ROLE_SOURCE, STEP_ABORTED, false);
	metrics_migration_changed(&m, &sess, &counted);
	metrics_migration_changed(&m, &sess, &counted);
	assert_int_equal(m.migrations[VM_ROLE_SOURCE][METRICS_OUTCOME_ABORTED], 1);

	/* A session of no role is not a migration. */
	counted = false;
	session_at(VM_ROLE_NONE, STEP_FAILED, false);
	metrics_migration_changed(&m, &sess, &counted);
	assert_false(counted);

	render(&m, &empty_snap);
	assert_sample("vcounterd_migrations_total{role=\"source\",outcome=\"done\"} ", "0");
	assert_sample("vcounterd_migrations_total{role=\"source\",outcome=\"aborted\"} ", "1");
	assert_sample("vcounterd_migrations_total{role=\"source\",outcome=\"failed\"} ", "1");
	assert_sample("vcounterd_migrations_total{role=\"target\",outcome=\"done\"} ", "1");
	assert_sample("vcounterd_migrations_total{role=\"target\",outcome=\"aborted\"} ", "0");
	assert_sample("vcounterd_migrations_total{role=\"target\",outcome=\"failed\"} ", "0");
}

/* The source learns the report at DONE: it sets the last bound and elapsed
 * time, but the latency histogram is the target's alone (else a fleet would
 * count each apply twice). */
static void test_source_done_sets_last_gauges_not_the_histogram(void **state)
{
	struct metrics m = { 0 };
	bool counted = false;

	render(&m, &empty_snap);
	assert_null(sample("vcounterd_last_error_bound_seconds "));
	assert_null(sample("vcounterd_last_elapsed_seconds "));

	session_at(VM_ROLE_SOURCE, STEP_DONE, true);
	sess.report.apply_latency_ns = 5000;
	sess.report.error_bound_ns = 1500000000;
	sess.report.elapsed_ns = -1500000001;
	metrics_migration_changed(&m, &sess, &counted);
	render(&m, &empty_snap);
	assert_sample("vcounterd_migrations_total{role=\"source\",outcome=\"done\"} ", "1");
	assert_sample("vcounterd_last_error_bound_seconds ", "1.5");
	assert_sample("vcounterd_last_elapsed_seconds ", "-1.500000001");
	assert_sample("vcounterd_last_clamped_seconds ", "0");
	assert_sample("vcounterd_counter_held_total ", "0");
	assert_sample("vcounterd_apply_latency_seconds_count ", "0");
	assert_sample("vcounterd_apply_latency_seconds_bucket{le=\"+Inf\"} ", "0");
}

/* A target clock behind: the hold is counted once per migration done, on
 * either side, and the last amount shown. */
static void test_held_counter_is_counted_and_its_amount_shown(void **state)
{
	struct metrics m = { 0 };
	bool counted = false;

	session_at(VM_ROLE_TARGET, STEP_APPLIED, true);
	sess.report.elapsed_ns = 0;
	sess.report.clamped_ns = 2000000001;
	metrics_migration_changed(&m, &sess, &counted);
	metrics_migration_changed(&m, &sess, &counted); /* the same step again */
	render(&m, &empty_snap);
	assert_sample("vcounterd_counter_held_total ", "1");
	assert_sample("vcounterd_last_clamped_seconds ", "2.000000001");

	counted = false;
	sess.report.clamped_ns = 0;
	metrics_migration_changed(&m, &sess, &counted);
	render(&m, &empty_snap);
	assert_sample("vcounterd_counter_held_total ", "1");
	assert_sample("vcounterd_last_clamped_seconds ", "0");
}

/* The target counts each verdict once per migration; the source, which only
 * holds the target's report, counts none. */
static void test_kvmclock_verdicts_are_counted_by_the_target(void **state)
{
	struct metrics m = { 0 };
	bool counted = false;

	session_at(VM_ROLE_TARGET, STEP_APPLIED, true);
	sess.report.kvmclock_verdict = KVMCLOCK_DIVERGED;
	sess.report.kvmclock_error_ns = 37000000000;
	metrics_migration_changed(&m, &sess, &counted);
	metrics_migration_changed(&m, &sess, &counted);
	render(&m, &empty_snap);
	assert_sample("vcounterd_kvmclock_checks_total{verdict=\"diverged\"} ", "1");
	assert_sample("vcounterd_kvmclock_checks_total{verdict=\"ok\"} ", "0");
	assert_sample("vcounterd_last_kvmclock_error_seconds ", "37");

	/* Unchecked is counted, but leaves the last error alone. */
	counted = false;
	sess.report.kvmclock_verdict = KVMCLOCK_UNCHECKED;
	sess.report.kvmclock_error_ns = 0;
	metrics_migration_changed(&m, &sess, &counted);
	render(&m, &empty_snap);
	assert_sample("vcounterd_kvmclock_checks_total{verdict=\"unchecked\"} ", "1");
	assert_sample("vcounterd_last_kvmclock_error_seconds ", "37");

	counted = false;
	session_at(VM_ROLE_SOURCE, STEP_DONE, true);
	sess.report.kvmclock_verdict = KVMCLOCK_MASTER_CLOCK_LOST;
	metrics_migration_changed(&m, &sess, &counted);
	render(&m, &empty_snap);
	assert_sample("vcounterd_kvmclock_checks_total{verdict=\"master-clock-lost\"} ", "0");
}

static void test_unbounded_error_bound_is_inf(void **state)
{
	struct metrics m = { 0 };
	bool counted = false;

	session_at(VM_ROLE_TARGET, STEP_APPLIED, true);
	sess.report.error_bound_ns = UINT64_MAX;
	sess.report.elapsed_ns = INT64_MIN;
	metrics_migration_changed(&m, &sess, &counted);
	render(&m, &empty_snap);
	assert_sample("vcounterd_last_error_bound_seconds ", "+Inf");
	assert_sample("vcounterd_last_elapsed_seconds ", "-9223372036.854775808");
}

static void test_failures_are_counted_by_listener(void **state)
{
	struct metrics m = { 0 };

	metrics_tls_handshake_failed(&m, METRICS_LISTENER_PEER);
	metrics_tls_handshake_failed(&m, METRICS_LISTENER_CONTROL);
	metrics_tls_handshake_failed(&m, METRICS_LISTENER_CONTROL);
	metrics_tls_handshake_failed(&m, _METRICS_LISTENER_MAX); /* ignored */
	metrics_peer_link_closed(&m, 0);			 /* orderly */
	metrics_peer_link_closed(&m, -ECONNREFUSED);
	metrics_peer_link_closed(&m, -EPROTO);
	render(&m, &empty_snap);
	assert_sample("vcounterd_tls_handshake_failures_total{listener=\"peer\"} ", "1");
	assert_sample("vcounterd_tls_handshake_failures_total{listener=\"control\"} ", "2");
	assert_sample("vcounterd_peer_link_failures_total ", "2");
}

/* Every value at its widest fits METRICS_TEXT_MAX; one byte too few is
 * -ENOBUFS, never a truncated text. */
/* Each errno of an Error reply names one reason; every reason has a label. */
static void test_vmm_refusals_are_named_by_errno(void **state)
{
	static const struct {
		int error;
		enum metrics_refusal want;
	} cases[] = {
		{ -EBADMSG, METRICS_REFUSAL_MALFORMED },  { ENOMSG, METRICS_REFUSAL_MALFORMED },
		{ -EMSGSIZE, METRICS_REFUSAL_TOO_LARGE }, { -E2BIG, METRICS_REFUSAL_TOO_LARGE },
		{ -EINVAL, METRICS_REFUSAL_INVALID },	  { -EPERM, METRICS_REFUSAL_NOT_ALLOWED },
		{ -ENOSPC, METRICS_REFUSAL_LIMIT },	  { -EBUSY, METRICS_REFUSAL_LIMIT },
		{ -EEXIST, METRICS_REFUSAL_EXISTS },	  { -ENOENT, METRICS_REFUSAL_UNKNOWN_VM },
		{ -EMFILE, METRICS_REFUSAL_OUT_OF_FDS },  { ENFILE, METRICS_REFUSAL_OUT_OF_FDS },
		{ -ETIMEDOUT, METRICS_REFUSAL_OTHER },	  { 0, METRICS_REFUSAL_OTHER },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		assert_int_equal(metrics_refusal_from_errno(cases[i].error), cases[i].want);
	for (int k = 0; k < _METRICS_REFUSAL_MAX; k++)
		assert_non_null(metrics_refusal_to_string(k));
	assert_null(metrics_refusal_to_string(_METRICS_REFUSAL_MAX));
	assert_null(metrics_refusal_to_string(_METRICS_REFUSAL_INVALID));
}

static void test_widest_text_fits_and_short_buffer_is_refused(void **state)
{
	struct metrics m;
	struct metrics_snapshot snap;
	static char small[METRICS_TEXT_MAX];
	int n;

	memset(&m, 0xff, sizeof(m));
	m.has_last = true;
	m.last_elapsed_ns = INT64_MIN;
	m.last_error_bound_ns = UINT64_MAX - 1;
	m.has_last_kvmclock = true;
	m.last_kvmclock_error_ns = INT64_MIN;
	memset(&snap, 0xff, sizeof(snap));
	snap.version = "0.1.0-with-a-rather-long-suffix-that-no-release-should-ever-have";
	snap.sync_source = SYNC_SOURCE_LINUXPTP; /* the longest name */
	snap.clock_error_ns = UINT64_MAX - 1;
	n = metrics_render(&m, &snap, text, sizeof(text));
	assert_true(n > 0 && n < METRICS_TEXT_MAX);
	assert_non_null(sample("vcounterd_apply_latency_seconds_count "));
	assert_sample("vcounterd_control_watchers ", "18446744073709551615");

	assert_int_equal(metrics_render(&m, &snap, small, (size_t)n), -ENOBUFS);
	assert_int_equal(metrics_render(&m, &snap, small, (size_t)n + 1), n);
	assert_string_equal(small, text);
	assert_int_equal(metrics_render(&m, &snap, small, 0), -ENOBUFS);
}

/* ---- the HTTP endpoint's pure parts ---- */

static int judge(const char *req)
{
	return metrics_http_judge_request(req, strlen(req));
}

static void test_request_judge_answers_each_kind(void **state)
{
	static const struct {
		const char *request;
		int status;
	} cases[] = {
		{ "GET /metrics HTTP/1.1\r\nHost: localhost:9420\r\nAccept: */*\r\n\r\n", 200 },
		{ "GET /metrics HTTP/1.0\r\n\r\n", 200 },
		{ "GET /metrics?name[]=vcounterd_vms_registered HTTP/1.1\r\n\r\n", 200 },
		/* Empty lines before the request, bare LF line ends. */
		{ "\r\n\nGET /metrics HTTP/1.1\nHost: x\n\n", 200 },
		{ "GET /metrics HTTP/1.1\r\nUser-Agent: a\tb \x80\r\n\r\n", 200 },
		/* Not yet decided. */
		{ "", 0 },
		{ "\r\n", 0 },
		{ "G", 0 },
		{ "GET", 0 },
		{ "GET /metrics HTTP/1.1", 0 },
		{ "GET /metrics HTTP/1.1\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nHost: x\r\n", 0 },
		{ "GET /metrics HTTP/1.1\r\nHost: x\r\n\r", 0 },
		/* Other paths. */
		{ "GET / HTTP/1.1\r\n\r\n", 404 },
		{ "GET /metricsx HTTP/1.1\r\n\r\n", 404 },
		{ "GET /metrics/ HTTP/1.1\r\n\r\n", 404 },
		{ "GET http://localhost/metrics HTTP/1.1\r\n\r\n", 404 },
		{ "GET * HTTP/1.1\r\n\r\n", 404 },
		/* Other methods: on the request line, headers or not. */
		{ "POST /metrics HTTP/1.1\r\n", 405 },
		{ "HEAD /metrics HTTP/1.1\r\n\r\n", 405 },
		{ "get /metrics HTTP/1.1\r\n\r\n", 405 },
		{ "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505 },
		{ "GET /metrics HTTP/2.0\r\n\r\n", 505 },
		{ "GET /metrics HTTP/0.9\r\n\r\n", 505 },
		/* Garbage, at the first byte that cannot be a method. */
		{ "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400 },
		{ "GET\t/metrics HTTP/1.1\r\n\r\n", 400 },
		{ "G\x00T /metrics HTTP/1.1\r\n\r\n", 0 }, /* strlen stops at the NUL */
		{ " GET /metrics HTTP/1.1\r\n\r\n", 400 },
		{ "GET /metrics\r\n", 400 },
		{ "GET  /metrics HTTP/1.1\r\n", 400 },
		{ "GET /metrics  HTTP/1.1\r\n", 400 },
		{ "GET /metrics HTTP/1.1 \r\n", 400 },
		{ "GET /metrics http/1.1\r\n", 400 },
		{ "GET /metrics HTTP/1.10\r\n", 400 },
		{ "GET /met\x7frics HTTP/1.1\r\n", 400 },
		{ "GET /metrics HTTP/1.1\rX\r\n\r\n", 400 },
		/* Header lines: no space before the colon, no fold, a name. */
		{ "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400 },
		{ "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400 },
		{ "GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n", 400 },
		{ "GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n", 400 },
		{ "GET /metrics HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400 },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		int got = judge(cases[i].request);

		if (got != cases[i].status)
			fail_msg("case %zu: got %d, expected %d", i, got, cases[i].status);
	}
	/* A NUL inside the method is not a token character. */
	assert_int_equal(metrics_http_judge_request("G\0T / HTTP/1.1\r\n\r\n", 18), 400);
}

static void test_request_judge_enforces_the_size_limits(void **state)
{
	static char buf[METRICS_HTTP_MAX_REQUEST_BYTES * 2];
	const char *line = "GET /metrics HTTP/1.1\r\n";
	size_t n;

	/* A request line without its end: 414 once it is over the limit. */
	n = (size_t)snprintf(buf, sizeof(buf), "GET /");
	memset(buf + n, 'a', METRICS_HTTP_MAX_LINE_BYTES - n);
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_LINE_BYTES), 0);
	buf[METRICS_HTTP_MAX_LINE_BYTES] = 'a';
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_LINE_BYTES + 1), 414);
	/* A method that never ends is over the line limit too. */
	memset(buf, 'G', METRICS_HTTP_MAX_LINE_BYTES + 1);
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_LINE_BYTES), 0);
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_LINE_BYTES + 1), 414);
	/* A whole request line over the limit. */
	n = (size_t)snprintf(buf, sizeof(buf), "GET /");
	memset(buf + n, 'a', METRICS_HTTP_MAX_LINE_BYTES);
	n += METRICS_HTTP_MAX_LINE_BYTES;
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, " HTTP/1.1\r\n\r\n");
	assert_int_equal(metrics_http_judge_request(buf, n), 414);

	/* A head of exactly METRICS_HTTP_MAX_REQUEST_BYTES is served; one byte
	 * more is 431, whether the head has ended or not. */
	n = (size_t)snprintf(buf, sizeof(buf), "%sX-Pad: ", line);
	memset(buf + n, 'p', METRICS_HTTP_MAX_REQUEST_BYTES - n - 4);
	n = METRICS_HTTP_MAX_REQUEST_BYTES - 4;
	memcpy(buf + n, "\r\n\r\n", 4);
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_REQUEST_BYTES), 200);
	memmove(buf + n + 1, "\r\n\r\n", 4);
	buf[n] = 'p';
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_REQUEST_BYTES + 1), 431);
	/* Headers that never end. */
	n = (size_t)snprintf(buf, sizeof(buf), "%s", line);
	while (n + 8 < sizeof(buf))
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X: y\r\n");
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_REQUEST_BYTES), 0);
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_REQUEST_BYTES + 1), 431);
	/* Empty lines alone, beyond the limit. */
	memset(buf, '\n', METRICS_HTTP_MAX_REQUEST_BYTES + 1);
	assert_int_equal(metrics_http_judge_request(buf, METRICS_HTTP_MAX_REQUEST_BYTES + 1), 431);
}

static void expect_address(const char *s, int family, const char *host, int port, bool loopback)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	char got[INET6_ADDRSTRLEN];

	if (netaddr_parse(s, &ss, &len) < 0)
		fail_msg("'%s' refused", s);
	assert_int_equal(ss.ss_family, family);
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		assert_int_equal(len, sizeof(*sin));
		assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, got, sizeof(got)));
		assert_int_equal(ntohs(sin->sin_port), port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		assert_int_equal(len, sizeof(*sin6));
		assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, got, sizeof(got)));
		assert_int_equal(ntohs(sin6->sin6_port), port);
	}
	assert_string_equal(got, host);
	assert_int_equal(netaddr_is_loopback((struct sockaddr *)&ss), loopback);
}

static void test_listen_address_bare_port_is_loopback(void **state)
{
	static const char *const invalid[] = {
		"",
		":9420",
		"127.0.0.1",
		"127.0.0.1:",
		"127.0.0.1:65536",
		"127.0.0.1:-1",
		"127.0.0.1:+1",
		"127.0.0.1: 1",
		"localhost:9420",
		"::1:9420",
		"[::1]9420",
		"[]:9420",
		"[::1]:",
		"[127.0.0.1]:1",
		"99999",
		"0x10",
		"1.2.3:4",
		"1.2.3.4:5:6",
		"[::1]:000001",
	};
	struct sockaddr_storage ss;
	socklen_t len;

	expect_address("9420", AF_INET, "127.0.0.1", 9420, true);
	expect_address("0", AF_INET, "127.0.0.1", 0, true);
	expect_address("127.0.0.1:9420", AF_INET, "127.0.0.1", 9420, true);
	expect_address("127.1.2.3:65535", AF_INET, "127.1.2.3", 65535, true);
	expect_address("0.0.0.0:9420", AF_INET, "0.0.0.0", 9420, false);
	expect_address("192.0.2.7:80", AF_INET, "192.0.2.7", 80, false);
	expect_address("128.0.0.1:80", AF_INET, "128.0.0.1", 80, false);
	expect_address("[::1]:9420", AF_INET6, "::1", 9420, true);
	expect_address("[::]:9420", AF_INET6, "::", 9420, false);
	expect_address("[::ffff:127.0.0.2]:1", AF_INET6, "::ffff:127.0.0.2", 1, true);
	expect_address("[::ffff:10.0.0.1]:1", AF_INET6, "::ffff:10.0.0.1", 1, false);
	expect_address("[2001:db8::1]:9420", AF_INET6, "2001:db8::1", 9420, false);
	for (size_t i = 0; i < ELEMENTSOF(invalid); i++)
		if (netaddr_parse(invalid[i], &ss, &len) != -EINVAL)
			fail_msg("'%s' accepted", invalid[i]);
	assert_int_equal(netaddr_parse(NULL, &ss, &len), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_known_state_is_exact),
		cmocka_unit_test(test_every_family_declared_once_before_its_samples),
		cmocka_unit_test(test_label_values_are_escaped),
		cmocka_unit_test(test_histogram_is_cumulative_with_inf_sum_and_count),
		cmocka_unit_test(test_each_outcome_is_counted_once),
		cmocka_unit_test(test_source_done_sets_last_gauges_not_the_histogram),
		cmocka_unit_test(test_held_counter_is_counted_and_its_amount_shown),
		cmocka_unit_test(test_kvmclock_verdicts_are_counted_by_the_target),
		cmocka_unit_test(test_unbounded_error_bound_is_inf),
		cmocka_unit_test(test_failures_are_counted_by_listener),
		cmocka_unit_test(test_vmm_refusals_are_named_by_errno),
		cmocka_unit_test(test_widest_text_fits_and_short_buffer_is_refused),
		cmocka_unit_test(test_request_judge_answers_each_kind),
		cmocka_unit_test(test_request_judge_enforces_the_size_limits),
		cmocka_unit_test(test_listen_address_bare_port_is_loopback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
