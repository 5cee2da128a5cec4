/* test_faults.c - two real daemons, a source and a target VM (real KVM),
 * and a fault at each protocol step: either daemon killed with SIGKILL
 * right after it journaled the step (fail points crash/<role>/<step>,
 * daemon/failpoint.h), a journal write that fails (EIO, ENOSPC), a VMM
 * that leaves mid-migration. After each, the daemons are restarted on
 * the same state directory and the test asserts what DESIGN.md section 3
 * promises: the outcome both control APIs report, the journal on disk,
 * the target VM's offsets (applied exactly as reported, or untouched)
 * and the source VM's (never written).
 *
 * The peer link itself is cut, black-holed and delayed by a TCP proxy the
 * test runs between the daemons (root may not have tc netem here).
 *
 * Steps past Prepare need a KVM that honours TSC offsets: they skip on a
 * host whose KVM ignores them and run in the nested-KVM rig (vm_faults). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "daemon_harness.h"
#include "failpoint.h"
#include "journal.h"
#include "kvm_x86.h"
#include "vcounter/control.h"
#include "vcounter/vcounter.h"

#define PEER_TIMEOUT_MS "3000"
#define N_VCPUS		2

struct node {
	const char *name; /* host-a, host-b: its certificate */
	const char *peer; /* the other's identity */
	char dir[256];
	char vmm_socket[300], control_socket[300], log_path[300], state_dir[300];
	char port_file[300];
	int port; /* 0 until first started */
	pid_t pid;
};

struct vm {
	int vm_fd;
	int vcpu_fds[N_VCPUS];
	struct vcounter *vc;
	uint64_t initial[N_VCPUS];
};

static char certs[256];
static int kvm_fd = -1;
static bool honours_offsets;
static struct node a = { .name = "host-a", .peer = "host-b.test" };
static struct node b = { .name = "host-b", .peer = "host-a.test" };
static struct vm src, dst;

/* ---- daemons ---- */

static void node_init(struct node *n)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(n->dir, sizeof(n->dir), "%s/vc-faults.XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(n->dir));
	snprintf(n->vmm_socket, sizeof(n->vmm_socket), "%s/vmm.sock", n->dir);
	snprintf(n->control_socket, sizeof(n->control_socket), "%s/control.sock", n->dir);
	snprintf(n->log_path, sizeof(n->log_path), "%s/vcounterd.log", n->dir);
	snprintf(n->state_dir, sizeof(n->state_dir), "%s/state", n->dir);
	snprintf(n->port_file, sizeof(n->port_file), "%s/port", n->dir);
	n->port = 0;
	n->pid = 0;
}

static bool control_ready(const struct node *n)
{
	struct vcounter_ctl_options o = { .socket_path = n->control_socket, .timeout_ms = 1000 };
	struct vcounter_ctl *ctl;
	struct vcounter_ctl_host h;
	bool ok;

	if (vcounter_ctl_connect(&o, &ctl) < 0)
		return false;
	memset(&h, 0, sizeof(h));
	ok = vcounter_ctl_host_status(ctl, &h) == 0;
	vcounter_ctl_close(ctl);
	return ok;
}

/* Start (or restart: same state directory, same peer port) n's daemon with
 * VCOUNTERD_FAILPOINTS=failpoints (NULL: none); its log accumulates. */
static void node_start(struct node *n, const char *failpoints)
{
	char exe[512], listen[64], ca[300], cert[300], key[300];
	const char *argv[40];
	size_t k = 0;

	snprintf(exe, sizeof(exe), "%s/daemon/vcounterd", harness_build_root());
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", n->port);
	snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
	snprintf(cert, sizeof(cert), "%s/%s.pem", certs, n->name);
	snprintf(key, sizeof(key), "%s/%s.key", certs, n->name);
	argv[k++] = exe;
	argv[k++] = "--vmm-socket";
	argv[k++] = n->vmm_socket;
	argv[k++] = "--control-socket";
	argv[k++] = n->control_socket;
	argv[k++] = "--listen";
	argv[k++] = listen;
	argv[k++] = "--port-file";
	argv[k++] = n->port_file;
	argv[k++] = "--host-name";
	argv[k++] = strcmp(n->name, "host-a") == 0 ? "host-a.test" : "host-b.test";
	argv[k++] = "--ca";
	argv[k++] = ca;
	argv[k++] = "--cert";
	argv[k++] = cert;
	argv[k++] = "--key";
	argv[k++] = key;
	argv[k++] = "--allow-peer";
	argv[k++] = n->peer;
	argv[k++] = "--state-directory";
	argv[k++] = n->state_dir;
	argv[k++] = "--peer-timeout";
	argv[k++] = PEER_TIMEOUT_MS;
	argv[k++] = "--log-level";
	argv[k++] = "debug";
	argv[k] = NULL;

	unlink(n->port_file);
	n->pid = fork();
	assert_true(n->pid >= 0);
	if (n->pid == 0) {
		int log = open(n->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		if (log >= 0) {
			dup2(log, STDERR_FILENO);
			dup2(log, STDOUT_FILENO);
		}
		if (failpoints)
			setenv("VCOUNTERD_FAILPOINTS", failpoints, 1);
		else
			unsetenv("VCOUNTERD_FAILPOINTS");
		execv(exe, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		int port = harness_read_port(n->port_file);

		if (port > 0 && control_ready(n)) {
			n->port = port;
			return;
		}
		if (waitpid(n->pid, NULL, WNOHANG) == n->pid)
			break;
		harness_sleep_ms(20);
	}
	harness_dump_file(n->log_path);
	fail_msg("%s's vcounterd did not start", n->name);
}

/* The daemon must die of the fail point's SIGKILL. */
static void node_expect_killed(struct node *n, const char *point)
{
	char line[128];
	int status = 0;

	for (int i = 0; i < 500 && waitpid(n->pid, &status, WNOHANG) == 0; i++)
		harness_sleep_ms(10);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
		harness_dump_file(n->log_path);
		fail_msg("%s was to die at fail point %s", n->name, point);
	}
	n->pid = 0;
	snprintf(line, sizeof(line), "fail point %s: SIGKILL", point);
	assert_true(harness_file_count(n->log_path, line) == 1);
}

/* SIGTERM: the daemon must exit 0 (under ASan, a leak or any error
 * found at exit makes that nonzero). */
static bool node_stop_status(struct node *n)
{
	int status = 0;
	pid_t r = 0;

	if (n->pid <= 0)
		return true;
	kill(n->pid, SIGTERM);
	for (int i = 0; i < 1000 && (r = waitpid(n->pid, &status, WNOHANG)) == 0; i++)
		harness_sleep_ms(10);
	if (r == 0) {
		kill(n->pid, SIGKILL);
		waitpid(n->pid, &status, 0);
	}
	n->pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		harness_dump_file(n->log_path);
		fprintf(stderr, "%s's vcounterd did not exit cleanly on SIGTERM (status 0x%x)\n",
			n->name, status);
		return false;
	}
	return true;
}

static void node_stop(struct node *n)
{
	if (!node_stop_status(n))
		fail();
}

static bool node_cleanup(struct node *n)
{
	bool ok = node_stop_status(n);

	if (n->dir[0] && !getenv("VC_KEEP_TEST_DIRS"))
		harness_remove_tree(n->dir);
	n->dir[0] = '\0';
	return ok;
}

/* ---- what the control API and the journal say ---- */

static int get_migration(const struct node *n, const char *id, struct vcounter_ctl_migration *m)
{
	struct vcounter_ctl_options o = { .socket_path = n->control_socket, .timeout_ms = 2000 };
	struct vcounter_ctl *ctl;
	int r;

	memset(m, 0, sizeof(*m));
	r = vcounter_ctl_connect(&o, &ctl);
	if (r < 0)
		return r;
	r = vcounter_ctl_get_migration(ctl, id, m);
	vcounter_ctl_close(ctl);
	return r;
}

/* Wait (up to 20 s) until n reports migration id at step; then m holds it
 * (clear it with vcounter_ctl_migration_clear). */
static void expect_step(const struct node *n, const char *id, const char *step,
			struct vcounter_ctl_migration *m)
{
	for (int i = 0; i < 400; i++) {
		if (get_migration(n, id, m) == 0 && strcmp(m->step, step) == 0)
			return;
		vcounter_ctl_migration_clear(m);
		harness_sleep_ms(50);
	}
	get_migration(n, id, m);
	harness_dump_file(n->log_path);
	fail_msg("%s: migration %s at step \"%s\" (%s), expected \"%s\"", n->name, id, m->step,
		 m->failure_reason, step);
}

static void expect_no_migration(const struct node *n, const char *id)
{
	struct vcounter_ctl_migration m;

	assert_int_not_equal(get_migration(n, id, &m), 0);
}

static void expect_journal(const struct node *n, const char *id, enum migration_step step)
{
	char path[512];
	struct journal_entry *e = calloc(1, sizeof(*e));
	uint8_t *buf = malloc(JOURNAL_MAX_BYTES + 1);
	char err[320];
	size_t len;
	FILE *f;

	assert_non_null(e);
	assert_non_null(buf);
	snprintf(path, sizeof(path), "%s/journal/%s.journal", n->state_dir, id);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("%s: no journal file %s", n->name, path);
	len = fread(buf, 1, JOURNAL_MAX_BYTES + 1, f);
	fclose(f);
	if (journal_decode(buf, len, e, err, sizeof(err)) < 0)
		fail_msg("%s: journal file %s does not decode: %s", n->name, path, err);
	if (e->s.step != step)
		fail_msg("%s: journal of %s says %s, expected %s", n->name, id,
			 migration_step_to_string(e->s.step), migration_step_to_string(step));
	free(buf);
	free(e);
}

/* ---- VMs ---- */

static uint64_t offset_get(int vcpu_fd)
{
	uint64_t v = 0;

	assert_int_equal(kvm_x86_get_tsc_offset(vcpu_fd, &v), 0);
	return v;
}

static void vm_create(struct vm *v)
{
	assert_int_equal(harness_kvm_vm_create(kvm_fd, N_VCPUS, &v->vm_fd, v->vcpu_fds), 0);
	for (int i = 0; i < N_VCPUS; i++)
		v->initial[i] = offset_get(v->vcpu_fds[i]);
	v->vc = NULL;
}

static void vm_destroy(struct vm *v)
{
	vcounter_close(v->vc);
	v->vc = NULL;
	for (int i = 0; i < N_VCPUS; i++)
		close(v->vcpu_fds[i]);
	close(v->vm_fd);
}

/* (Re)register v on n's daemon on a new connection. */
static void vm_register(struct vm *v, const struct node *n, enum vcounter_role role)
{
	struct vcounter_vm_info info;

	vcounter_close(v->vc);
	v->vc = NULL;
	assert_int_equal(vcounter_connect(n->vmm_socket, &v->vc), 0);
	if (vcounter_register_vm(v->vc, "vm-1", role, v->vm_fd, v->vcpu_fds, N_VCPUS, &info) < 0)
		fail_msg("register on %s: %s", n->name, vcounter_last_error(v->vc));
}

static void expect_untouched(const struct vm *v, const char *what)
{
	for (int i = 0; i < N_VCPUS; i++)
		if (offset_get(v->vcpu_fds[i]) != v->initial[i])
			fail_msg("%s VM: vCPU %d offset %" PRId64 ", was %" PRId64, what, i,
				 (int64_t)offset_get(v->vcpu_fds[i]), (int64_t)v->initial[i]);
}

/* The target's offsets are what its report says it applied. */
static void expect_applied(const struct vm *v, const struct vcounter_report *rep)
{
	assert_int_equal(rep->n_vcpus, N_VCPUS);
	for (int i = 0; i < N_VCPUS; i++) {
		assert_true(offset_get(v->vcpu_fds[i]) == rep->offsets_after[i]);
		assert_true(rep->offsets_before[i] == src.initial[i]);
	}
	/* The phase between the vCPUs is the source's, exactly. */
	assert_true(rep->offsets_after[1] - rep->offsets_after[0] ==
		    src.initial[1] - src.initial[0]);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
	signal(SIGPIPE, SIG_IGN);
	if (harness_wrapped()) {
		fprintf(stderr, "SKIP: these tests SIGKILL the daemons on purpose; a memory "
				"checker's verdict on a killed process means nothing "
				"(VC_DAEMON_WRAPPER is set)\n");
		exit(77);
	}
	if (!failpoints_built_in()) {
		fprintf(stderr, "SKIP: vcounterd was built without fail points (libfiu-dev, "
				"meson -Dfailpoints)\n");
		exit(77);
	}
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0) {
		fprintf(stderr, "SKIP: no /dev/kvm (%s): the fault tests use real VMs\n",
			strerror(errno));
		exit(77);
	}
	if (harness_certs(certs, sizeof(certs)) < 0) {
		fprintf(stderr, "cannot make test certificates (VC_TEST_CERTS unset?)\n");
		return -1;
	}
	vm_create(&src);
	honours_offsets = harness_kvm_honours_offsets(src.vcpu_fds[0]);
	vm_destroy(&src);
	return 0;
}

static int group_teardown(void **state)
{
	if (kvm_fd >= 0)
		close(kvm_fd);
	return 0;
}

/* Fresh daemons and VMs for each case: the source VM on A, the target VM
 * on B. */
static int setup(void **state)
{
	node_init(&a);
	node_init(&b);
	node_start(&a, NULL);
	node_start(&b, NULL);
	vm_create(&src);
	vm_create(&dst);
	vm_register(&src, &a, VCOUNTER_ROLE_SOURCE);
	vm_register(&dst, &b, VCOUNTER_ROLE_TARGET);
	return 0;
}

static int teardown(void **state)
{
	bool ok_a, ok_b;

	vm_destroy(&src);
	vm_destroy(&dst);
	ok_a = node_cleanup(&a);
	ok_b = node_cleanup(&b);
	return ok_a && ok_b ? 0 : -1;
}

static void require_offset_control(void)
{
	if (!honours_offsets) {
		fprintf(stderr, "SKIP: steps past Prepare need a KVM that honours TSC offsets "
				"(this one ignores them: run in tests/vm, vm_faults)\n");
		skip();
	}
}

static void restart_with(struct node *n, const char *failpoints)
{
	node_stop(n);
	node_start(n, failpoints);
	/* The VMM's connection went with the old daemon. */
	vm_register(n == &a ? &src : &dst, n,
		    n == &a ? VCOUNTER_ROLE_SOURCE : VCOUNTER_ROLE_TARGET);
}

static void migrate_out(char id[VCOUNTER_MIGRATION_ID_SIZE])
{
	char peer[64];

	snprintf(peer, sizeof(peer), "127.0.0.1:%d", b.port);
	if (vcounter_migrate_out(src.vc, "vm-1", peer, "host-b.test", id) < 0)
		fail_msg("migrate_out: %s", vcounter_last_error(src.vc));
}

/* The source VMM paused: the target daemon holds the final state. */
static void paused(const char *id)
{
	uint64_t gen;

	if (vcounter_report_paused(src.vc, "vm-1", id, &gen) < 0)
		fail_msg("report_paused: %s", vcounter_last_error(src.vc));
}

/* The target VMM applies; the report is the caller's to free. */
static struct vcounter_report *applied(const char *id)
{
	struct vcounter_report *rep = NULL;

	if (vcounter_apply(dst.vc, "vm-1", id, &rep) < 0)
		fail_msg("apply: %s", vcounter_last_error(dst.vc));
	return rep;
}

/* The source's id of a migration whose MigrateOut reply was lost: its only
 * migration, from the control API. */
static void only_migration(const struct node *n, char id[VCOUNTER_MIGRATION_ID_SIZE])
{
	struct vcounter_ctl_options o = { .socket_path = n->control_socket, .timeout_ms = 2000 };
	struct vcounter_ctl_migration *ms = NULL;
	struct vcounter_ctl *ctl;
	size_t count = 0;

	assert_int_equal(vcounter_ctl_connect(&o, &ctl), 0);
	assert_int_equal(vcounter_ctl_list_migrations(ctl, NULL, false, &ms, &count), 0);
	vcounter_ctl_close(ctl);
	assert_int_equal(count, 1);
	memcpy(id, ms[0].migration_id, VCOUNTER_MIGRATION_ID_SIZE);
	vcounter_ctl_migrations_free(ms, count);
}

/* ---- the source killed ---- */

/* Killed before Prepare left: nothing reached the target; the restart
 * aborts, and says why. */
static void test_source_killed_at_preparing_aborts(void **state)
{
	struct vcounter_ctl_migration m;
	char id[VCOUNTER_MIGRATION_ID_SIZE];

	restart_with(&a, "crash/source/preparing");
	assert_true(vcounter_migrate_out(src.vc, "vm-1", "127.0.0.1:1", "host-b.test", id) < 0);
	node_expect_killed(&a, "crash/source/preparing");
	node_start(&a, NULL);
	only_migration(&a, id);
	expect_step(&a, id, "aborted", &m);
	assert_true(m.recovered);
	assert_non_null(strstr(m.failure_reason, "restarted at step preparing"));
	vcounter_ctl_migration_clear(&m);
	expect_journal(&a, id, STEP_ABORTED);
	expect_no_migration(&b, id);
	expect_untouched(&src, "source");
	expect_untouched(&dst, "target");
	assert_true(harness_file_count(a.log_path, "session journal") >= 1);
}

/* Killed with PrepareAck journaled, the VMM unanswered: the target, whose
 * link broke, fails; the restarted source aborts. */
static void test_source_killed_at_prepared_aborts_both(void **state)
{
	struct vcounter_ctl_migration m;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	char peer[64];

	require_offset_control();
	restart_with(&a, "crash/source/prepared");
	snprintf(peer, sizeof(peer), "127.0.0.1:%d", b.port);
	assert_true(vcounter_migrate_out(src.vc, "vm-1", peer, "host-b.test", id) < 0);
	node_expect_killed(&a, "crash/source/prepared");
	node_start(&a, NULL);
	only_migration(&a, id);
	expect_step(&a, id, "aborted", &m);
	assert_true(m.recovered);
	vcounter_ctl_migration_clear(&m);
	expect_journal(&a, id, STEP_ABORTED);
	get_migration(&b, id, &m);
	assert_true(strcmp(m.step, "failed") == 0 || strcmp(m.step, "aborted") == 0);
	assert_true(m.terminal);
	vcounter_ctl_migration_clear(&m);
	expect_untouched(&src, "source");
	expect_untouched(&dst, "target");
}

/* Killed after the final state was journaled, before it was sent: the VMM
 * was never told the target holds it (it resumes its guest), so the
 * restart aborts, and tells the target. */
static void test_source_killed_at_finalizing_aborts_both(void **state)
{
	struct vcounter_report *rep = NULL;
	struct vcounter_ctl_migration m;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	uint64_t gen;

	require_offset_control();
	restart_with(&a, "crash/source/finalizing");
	migrate_out(id);
	assert_true(vcounter_report_paused(src.vc, "vm-1", id, &gen) < 0);
	node_expect_killed(&a, "crash/source/finalizing");
	node_start(&a, NULL);
	expect_step(&a, id, "aborted", &m);
	vcounter_ctl_migration_clear(&m);
	expect_journal(&a, id, STEP_ABORTED);
	get_migration(&b, id, &m);
	assert_true(m.terminal);
	assert_true(strcmp(m.step, "done") != 0 && strcmp(m.step, "applied") != 0);
	vcounter_ctl_migration_clear(&m);
	/* Nothing to apply on the target. */
	assert_true(vcounter_apply(dst.vc, "vm-1", id, &rep) < 0);
	expect_untouched(&src, "source");
	expect_untouched(&dst, "target");
}

/* Killed once the target held the final state: the restart resumes,
 * replaying it; the target applies once, both end done. */
static void test_source_killed_at_final_resumes_to_done(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	uint64_t gen;

	require_offset_control();
	restart_with(&a, "crash/source/final");
	migrate_out(id);
	assert_true(vcounter_report_paused(src.vc, "vm-1", id, &gen) < 0);
	node_expect_killed(&a, "crash/source/final");
	node_start(&a, NULL);
	get_migration(&a, id, &m);
	assert_true(m.recovered);
	vcounter_ctl_migration_clear(&m);
	/* The target held it all along; its VMM applies. */
	rep = applied(id);
	expect_applied(&dst, rep);
	expect_step(&a, id, "done", &m);
	assert_true(m.has_report);
	assert_true(m.report.offsets_after[0] == rep->offsets_after[0]);
	vcounter_ctl_migration_clear(&m);
	expect_step(&b, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	expect_journal(&a, id, STEP_DONE);
	expect_journal(&b, id, STEP_DONE);
	assert_true(harness_file_count(a.log_path, "after the replay") >= 1);
	vcounter_report_free(rep);
	expect_untouched(&src, "source");
}

/* Killed after it journaled the target's report as done, before its Ack
 * left: done here; the target applied exactly once and, never acked, is
 * done after the peer timeout (its outcome: the counter was written). */
static void test_source_killed_at_done_keeps_the_outcome(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];

	require_offset_control();
	restart_with(&a, "crash/source/done");
	migrate_out(id);
	paused(id);
	rep = applied(id);
	node_expect_killed(&a, "crash/source/done");
	node_start(&a, NULL);
	expect_step(&a, id, "done", &m);
	assert_true(m.recovered);
	assert_true(m.has_report);
	assert_true(m.report.offsets_after[0] == rep->offsets_after[0]);
	vcounter_ctl_migration_clear(&m);
	expect_step(&b, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	expect_applied(&dst, rep);
	expect_journal(&a, id, STEP_DONE);
	expect_journal(&b, id, STEP_DONE);
	assert_true(harness_file_count(b.log_path, "acknowledgement did not come") == 1);
	vcounter_report_free(rep);
	expect_untouched(&src, "source");
}

/* A controller aborts; the source dies having journaled it, before the
 * target was told: aborted after the restart too, and the target, whose
 * link broke, ends without applying. */
static void test_source_killed_at_aborted_stays_aborted(void **state)
{
	struct vcounter_ctl_options o = { .socket_path = a.control_socket, .timeout_ms = 2000 };
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	struct vcounter_ctl *ctl;

	require_offset_control();
	restart_with(&a, "crash/source/aborted");
	migrate_out(id);
	assert_int_equal(vcounter_ctl_connect(&o, &ctl), 0);
	memset(&m, 0, sizeof(m));
	assert_true(vcounter_ctl_abort_migration(ctl, id, "operator changed their mind", &m) < 0);
	vcounter_ctl_close(ctl);
	node_expect_killed(&a, "crash/source/aborted");
	node_start(&a, NULL);
	expect_step(&a, id, "aborted", &m);
	assert_non_null(strstr(m.failure_reason, "changed their mind"));
	vcounter_ctl_migration_clear(&m);
	expect_journal(&a, id, STEP_ABORTED);
	get_migration(&b, id, &m);
	assert_true(m.terminal && strcmp(m.step, "done") != 0);
	vcounter_ctl_migration_clear(&m);
	assert_true(vcounter_apply(dst.vc, "vm-1", id, &rep) < 0);
	expect_untouched(&src, "source");
	expect_untouched(&dst, "target");
}

/* ---- the target killed ---- */

static void test_target_killed_at_prepared_aborts(void **state)
{
	struct vcounter_ctl_migration m;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	char peer[64];

	require_offset_control();
	restart_with(&b, "crash/target/prepared");
	snprintf(peer, sizeof(peer), "127.0.0.1:%d", b.port);
	assert_true(vcounter_migrate_out(src.vc, "vm-1", peer, "host-b.test", id) < 0);
	node_expect_killed(&b, "crash/target/prepared");
	node_start(&b, NULL);
	only_migration(&b, id);
	expect_step(&b, id, "aborted", &m);
	assert_true(m.recovered);
	assert_non_null(strstr(m.failure_reason, "before the final state"));
	vcounter_ctl_migration_clear(&m);
	expect_journal(&b, id, STEP_ABORTED);
	expect_step(&a, id, "failed", &m);
	vcounter_ctl_migration_clear(&m);
	expect_untouched(&src, "source");
	expect_untouched(&dst, "target");
}

/* The final state was journaled, FinalAck never left: the source failed.
 * The restarted target cannot prove that state current, so it refuses to
 * apply it, and gives up when the source does not confirm it. */
static void test_target_killed_at_final_never_applies_unconfirmed_state(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	uint64_t gen;

	require_offset_control();
	restart_with(&b, "crash/target/final");
	migrate_out(id);
	assert_true(vcounter_report_paused(src.vc, "vm-1", id, &gen) < 0);
	node_expect_killed(&b, "crash/target/final");
	expect_step(&a, id, "failed", &m);
	vcounter_ctl_migration_clear(&m);
	restart_with(&b, NULL);
	get_migration(&b, id, &m);
	assert_string_equal(m.step, "final");
	assert_true(m.recovered);
	assert_true(m.awaiting_source);
	vcounter_ctl_migration_clear(&m);
	assert_int_equal(vcounter_apply(dst.vc, "vm-1", id, &rep), -ESTALE);
	assert_non_null(strstr(vcounter_last_error(dst.vc), "not yet confirmed"));
	expect_untouched(&dst, "target");
	expect_step(&b, id, "failed", &m);
	assert_non_null(strstr(m.failure_reason, "did not confirm"));
	vcounter_ctl_migration_clear(&m);
	expect_journal(&b, id, STEP_FAILED);
	assert_true(vcounter_apply(dst.vc, "vm-1", id, &rep) < 0);
	expect_untouched(&dst, "target");
	expect_untouched(&src, "source");
}

/* Killed as the apply began: the source, in final, replays on a new link;
 * that confirms the state, the VMM applies again, both end done. */
static void test_target_killed_at_applying_resumes_after_the_replay(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	int i;

	require_offset_control();
	restart_with(&b, "crash/target/applying");
	migrate_out(id);
	paused(id);
	assert_true(vcounter_apply(dst.vc, "vm-1", id, &rep) < 0);
	node_expect_killed(&b, "crash/target/applying");
	restart_with(&b, NULL);
	for (i = 0; i < 400; i++) {
		get_migration(&b, id, &m);
		if (!m.awaiting_source) {
			vcounter_ctl_migration_clear(&m);
			break;
		}
		vcounter_ctl_migration_clear(&m);
		harness_sleep_ms(50);
	}
	assert_true(i < 400);
	assert_true(harness_file_count(b.log_path, "the source confirmed generation 1") == 1);
	rep = applied(id);
	expect_applied(&dst, rep);
	expect_step(&a, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	expect_step(&b, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	expect_journal(&b, id, STEP_DONE);
	vcounter_report_free(rep);
	expect_untouched(&src, "source");
}

/* Killed with the apply journaled as done, the VMM unanswered: the source's
 * replay gets the report again; applying again writes nothing. */
static void test_target_killed_at_applied_is_not_applied_twice(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	uint64_t written[N_VCPUS];

	require_offset_control();
	restart_with(&b, "crash/target/applied");
	migrate_out(id);
	paused(id);
	assert_true(vcounter_apply(dst.vc, "vm-1", id, &rep) < 0);
	node_expect_killed(&b, "crash/target/applied");
	for (int i = 0; i < N_VCPUS; i++)
		written[i] = offset_get(dst.vcpu_fds[i]);
	restart_with(&b, NULL);
	expect_step(&a, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	expect_step(&b, id, "done", &m);
	assert_true(m.recovered);
	vcounter_ctl_migration_clear(&m);
	rep = applied(id);
	expect_applied(&dst, rep);
	for (int i = 0; i < N_VCPUS; i++)
		assert_true(offset_get(dst.vcpu_fds[i]) == written[i]);
	expect_journal(&a, id, STEP_DONE);
	expect_journal(&b, id, STEP_DONE);
	vcounter_report_free(rep);
	expect_untouched(&src, "source");
}

/* ---- the peer link: a proxy between the daemons ---- */

#define PROXY_MAX_PAIRS 16

enum proxy_mode {
	PROXY_FORWARD,
	PROXY_BLACK_HOLE
};

struct proxy {
	int listen_fd;
	int port;
	int target_port;
	int wake[2];
	pthread_t thread;
	atomic_int mode;
	atomic_int delay_ms;
	atomic_bool cut, stop;
	atomic_int accepted;
	int pairs[PROXY_MAX_PAIRS][2]; /* -1: free */
};

static void proxy_close_pair(struct proxy *p, int k)
{
	close(p->pairs[k][0]);
	close(p->pairs[k][1]);
	p->pairs[k][0] = p->pairs[k][1] = -1;
}

static void proxy_accept(struct proxy *p)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)p->target_port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int in = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC), out;

	if (in < 0)
		return;
	out = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (out < 0 || connect(out, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(in);
		if (out >= 0)
			close(out);
		return;
	}
	for (int k = 0; k < PROXY_MAX_PAIRS; k++) {
		if (p->pairs[k][0] < 0) {
			p->pairs[k][0] = in;
			p->pairs[k][1] = out;
			atomic_fetch_add(&p->accepted, 1);
			return;
		}
	}
	close(in);
	close(out);
}

/* Forward what one side of pair k sent to the other; false when it closed. */
static bool proxy_forward(struct proxy *p, int k, int side)
{
	char buf[65536];
	ssize_t n = read(p->pairs[k][side], buf, sizeof(buf));
	int delay = atomic_load(&p->delay_ms);

	if (n <= 0)
		return false;
	if (delay > 0)
		harness_sleep_ms(delay);
	for (ssize_t done = 0; done < n;) {
		ssize_t w = write(p->pairs[k][!side], buf + done, (size_t)(n - done));

		if (w <= 0)
			return false;
		done += w;
	}
	return true;
}

static void *proxy_main(void *arg)
{
	struct proxy *p = arg;

	while (!atomic_load(&p->stop)) {
		struct pollfd pfd[2 + 2 * PROXY_MAX_PAIRS];
		int idx[2 * PROXY_MAX_PAIRS];
		nfds_t n = 0;

		if (atomic_exchange(&p->cut, false))
			for (int k = 0; k < PROXY_MAX_PAIRS; k++)
				if (p->pairs[k][0] >= 0)
					proxy_close_pair(p, k);
		pfd[n++] = (struct pollfd){ .fd = p->wake[0], .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = p->listen_fd, .events = POLLIN };
		/* A black hole keeps the connections open and moves nothing. */
		if (atomic_load(&p->mode) == PROXY_FORWARD)
			for (int k = 0; k < PROXY_MAX_PAIRS; k++)
				for (int side = 0; side < 2 && p->pairs[k][0] >= 0; side++) {
					idx[n - 2] = k * 2 + side;
					pfd[n++] = (struct pollfd){ .fd = p->pairs[k][side],
								    .events = POLLIN };
				}
		if (poll(pfd, n, 1000) <= 0)
			continue;
		if (pfd[0].revents) {
			char c;

			(void)!read(p->wake[0], &c, 1);
		}
		if (pfd[1].revents & POLLIN)
			proxy_accept(p);
		for (nfds_t i = 2; i < n; i++) {
			int k = idx[i - 2] / 2, side = idx[i - 2] % 2;

			if (!pfd[i].revents || p->pairs[k][0] < 0)
				continue;
			if (!proxy_forward(p, k, side))
				proxy_close_pair(p, k);
		}
	}
	for (int k = 0; k < PROXY_MAX_PAIRS; k++)
		if (p->pairs[k][0] >= 0)
			proxy_close_pair(p, k);
	return NULL;
}

static void proxy_wake(struct proxy *p)
{
	(void)!write(p->wake[1], "x", 1);
}

static void proxy_start(struct proxy *p, int target_port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	memset(p, 0, sizeof(*p));
	for (int k = 0; k < PROXY_MAX_PAIRS; k++)
		p->pairs[k][0] = p->pairs[k][1] = -1;
	p->target_port = target_port;
	p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->listen_fd >= 0);
	assert_int_equal(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(p->listen_fd, 16), 0);
	assert_int_equal(getsockname(p->listen_fd, (struct sockaddr *)&sa, &len), 0);
	p->port = ntohs(sa.sin_port);
	assert_int_equal(pipe2(p->wake, O_CLOEXEC), 0);
	assert_int_equal(pthread_create(&p->thread, NULL, proxy_main, p), 0);
}

static void proxy_set(struct proxy *p, enum proxy_mode mode, int delay_ms)
{
	atomic_store(&p->mode, mode);
	atomic_store(&p->delay_ms, delay_ms);
	proxy_wake(p);
}

/* Close every connection it carries, both sides (a cable pulled and put
 * back: new connections go through). */
static void proxy_cut(struct proxy *p)
{
	atomic_store(&p->cut, true);
	proxy_wake(p);
	for (int i = 0; i < 100 && atomic_load(&p->cut); i++)
		harness_sleep_ms(10);
}

static void proxy_stop(struct proxy *p)
{
	atomic_store(&p->stop, true);
	proxy_wake(p);
	pthread_join(p->thread, NULL);
	close(p->listen_fd);
	close(p->wake[0]);
	close(p->wake[1]);
}

static void migrate_out_via(const struct proxy *p, char id[VCOUNTER_MIGRATION_ID_SIZE])
{
	char peer[64];

	snprintf(peer, sizeof(peer), "127.0.0.1:%d", p->port);
	if (vcounter_migrate_out(src.vc, "vm-1", peer, "host-b.test", id) < 0)
		fail_msg("migrate_out: %s", vcounter_last_error(src.vc));
}

/* The link breaks once the target holds the final state: the source
 * replays it on a new connection, and the report comes back that way. */
static void test_link_cut_after_the_final_state_is_replayed(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	struct proxy p;

	require_offset_control();
	proxy_start(&p, b.port);
	migrate_out_via(&p, id);
	paused(id);
	assert_int_equal(atomic_load(&p.accepted), 1);
	proxy_cut(&p);
	for (int i = 0; i < 200 && harness_file_count(a.log_path, "after the replay") == 0; i++)
		harness_sleep_ms(50);
	assert_int_equal(harness_file_count(a.log_path, "replaying it on a new link"), 1);
	assert_int_equal(harness_file_count(a.log_path, "after the replay"), 1);
	assert_int_equal(atomic_load(&p.accepted), 2);
	rep = applied(id);
	expect_applied(&dst, rep);
	expect_step(&a, id, "done", &m);
	assert_true(m.report.offsets_after[1] == rep->offsets_after[1]);
	vcounter_ctl_migration_clear(&m);
	expect_step(&b, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	vcounter_report_free(rep);
	proxy_stop(&p);
	expect_untouched(&src, "source");
}

/* The link goes silent (connections open, nothing moves) after Prepare:
 * the source gives up at its deadline; when the link finally breaks, the
 * target, which never got the final state, ends too; nothing applied. */
static void test_black_hole_times_out_and_nothing_is_applied(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	struct proxy p;
	uint64_t gen;

	require_offset_control();
	proxy_start(&p, b.port);
	migrate_out_via(&p, id);
	proxy_set(&p, PROXY_BLACK_HOLE, 0);
	assert_int_equal(vcounter_report_paused(src.vc, "vm-1", id, &gen), -ETIMEDOUT);
	expect_step(&a, id, "failed", &m);
	assert_non_null(strstr(m.failure_reason, "did not answer"));
	vcounter_ctl_migration_clear(&m);
	get_migration(&b, id, &m);
	assert_string_equal(m.step, "prepared");
	vcounter_ctl_migration_clear(&m);
	proxy_cut(&p);
	expect_step(&b, id, "failed", &m);
	vcounter_ctl_migration_clear(&m);
	assert_true(vcounter_apply(dst.vc, "vm-1", id, &rep) < 0);
	proxy_stop(&p);
	expect_untouched(&dst, "target");
	expect_untouched(&src, "source");
}

/* A slow link (every chunk held 150 ms each way) only makes it slower. */
static void test_delayed_link_still_completes(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	struct proxy p;

	require_offset_control();
	proxy_start(&p, b.port);
	proxy_set(&p, PROXY_FORWARD, 150);
	migrate_out_via(&p, id);
	paused(id);
	rep = applied(id);
	expect_applied(&dst, rep);
	expect_step(&a, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	expect_step(&b, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	vcounter_report_free(rep);
	proxy_stop(&p);
	expect_untouched(&src, "source");
}

/* The target dies having journaled done: nothing was left to do, and
 * after the restart both sides say done, the offsets as applied. */
static void test_target_killed_at_done_keeps_the_outcome(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];

	require_offset_control();
	restart_with(&b, "crash/target/done");
	migrate_out(id);
	paused(id);
	rep = applied(id);
	node_expect_killed(&b, "crash/target/done");
	restart_with(&b, NULL);
	expect_step(&b, id, "done", &m);
	assert_true(m.recovered);
	vcounter_ctl_migration_clear(&m);
	expect_step(&a, id, "done", &m);
	vcounter_ctl_migration_clear(&m);
	expect_applied(&dst, rep);
	expect_journal(&b, id, STEP_DONE);
	vcounter_report_free(rep);
	expect_untouched(&src, "source");
}

/* ---- the journal failing, the VMM leaving ---- */

/* Files a full disk, a bad sector or a stray copy left: each reported and
 * set aside, never loaded; the daemon starts and serves. */
static void test_corrupt_journal_files_are_set_aside(void **state)
{
	static const char *const names[] = {
		"00000000000000000000000000000001.journal", /* not a journal */
		"00000000000000000000000000000002.journal", /* truncated */
		"00000000000000000000000000000003.journal", /* another's record */
	};
	struct journal_entry *e = calloc(1, sizeof(*e));
	struct vcounter_ctl_migration m;
	char path[600], corrupt[620];
	uint8_t *buf;
	size_t len;
	FILE *f;

	assert_non_null(e);
	node_stop(&a);
	/* A well-formed record, under its own name and two others. */
	e->sequence = 1;
	snprintf(e->s.migration_id, sizeof(e->s.migration_id), "%s",
		 "00000000000000000000000000000009");
	snprintf(e->s.vm_id, sizeof(e->s.vm_id), "vm-1");
	snprintf(e->s.peer_identity, sizeof(e->s.peer_identity), "host-b.test");
	e->s.role = VM_ROLE_SOURCE;
	e->s.step = STEP_ABORTED;
	e->s.prepared.backend = BACKEND_KVM_X86;
	e->s.prepared.arch = COUNTER_ARCH_X86_TSC;
	e->s.prepared.guest_tsc_khz = 2000000;
	e->s.prepared.n_vcpus = 1;
	e->s.prepared.anchor.source = ANCHOR_BRACKET;
	e->s.prepared.anchor.host_tsc_khz = 2000000;
	assert_int_equal(journal_encode(e, &buf, &len), 0);
	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/journal/%s", a.state_dir,
			 i < 3 ? names[i] : "00000000000000000000000000000009.journal");
		f = fopen(path, "wb");
		assert_non_null(f);
		if (i == 0)
			fputs("not a journal at all\n", f);
		else
			assert_int_equal(fwrite(buf, 1, i == 1 ? len - 7 : len, f),
					 i == 1 ? len - 7 : len);
		fclose(f);
	}
	node_start(&a, NULL);
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/journal/%s", a.state_dir, names[i]);
		snprintf(corrupt, sizeof(corrupt), "%s.corrupt", path);
		assert_int_equal(access(path, F_OK), -1);
		assert_int_equal(access(corrupt, F_OK), 0);
		assert_true(harness_file_count(a.log_path, names[i]) >= 1);
	}
	assert_int_equal(harness_file_count(a.log_path, "bad magic"), 1);
	assert_int_equal(harness_file_count(a.log_path, "truncated"), 1);
	assert_int_equal(harness_file_count(a.log_path, "not its file name"), 1);
	assert_int_equal(harness_file_count(a.log_path, "1 migrations loaded, 3 files set aside"),
			 1);
	/* The good one is history in the control API; the daemon serves. */
	expect_step(&a, "00000000000000000000000000000009", "aborted", &m);
	assert_true(m.recovered);
	vcounter_ctl_migration_clear(&m);
	vm_register(&src, &a, VCOUNTER_ROLE_SOURCE);
	free(buf);
	free(e);
}

/* A source that cannot journal does not send Prepare. */
static void test_source_journal_full_refuses_to_start(void **state)
{
	struct vcounter_ctl_migration m;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	char peer[64];

	restart_with(&a, "journal/write/source/preparing=ENOSPC");
	snprintf(peer, sizeof(peer), "127.0.0.1:%d", b.port);
	assert_true(vcounter_migrate_out(src.vc, "vm-1", peer, "host-b.test", id) < 0);
	assert_non_null(strstr(vcounter_last_error(src.vc), "session journal"));
	only_migration(&a, id);
	expect_step(&a, id, "failed", &m);
	assert_non_null(strstr(m.failure_reason, "No space left on device"));
	vcounter_ctl_migration_clear(&m);
	expect_journal(&a, id, STEP_FAILED);
	expect_no_migration(&b, id);
	assert_int_equal(kill(a.pid, 0), 0); /* the daemon keeps running */
	/* The link the migration opened comes up (and carries its Abort)
	 * before the teardown stops the daemon. */
	for (int i = 0; i < 200 && harness_file_count(a.log_path, "link up (outgoing)") == 0; i++)
		harness_sleep_ms(20);
	expect_untouched(&src, "source");
	expect_untouched(&dst, "target");
}

/* A target whose fsync fails does not acknowledge the final state. */
static void test_target_journal_eio_refuses_the_final_state(void **state)
{
	struct vcounter_ctl_migration m;
	struct vcounter_report *rep = NULL;
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	uint64_t gen;

	require_offset_control();
	restart_with(&b, "journal/fsync/target/final=EIO");
	migrate_out(id);
	assert_true(vcounter_report_paused(src.vc, "vm-1", id, &gen) < 0);
	assert_non_null(strstr(vcounter_last_error(src.vc), "cannot record"));
	expect_step(&a, id, "failed", &m);
	vcounter_ctl_migration_clear(&m);
	expect_step(&b, id, "failed", &m);
	vcounter_ctl_migration_clear(&m);
	expect_journal(&b, id, STEP_FAILED);
	assert_true(vcounter_apply(dst.vc, "vm-1", id, &rep) < 0);
	expect_untouched(&dst, "target");
	expect_untouched(&src, "source");
}

/* The source VMM goes away after Prepare: both sides abort. */
static void test_source_vmm_leaving_aborts_both(void **state)
{
	struct vcounter_ctl_migration m;
	char id[VCOUNTER_MIGRATION_ID_SIZE];

	require_offset_control();
	migrate_out(id);
	vcounter_close(src.vc);
	src.vc = NULL;
	expect_step(&a, id, "aborted", &m);
	vcounter_ctl_migration_clear(&m);
	expect_step(&b, id, "aborted", &m);
	vcounter_ctl_migration_clear(&m);
	expect_journal(&a, id, STEP_ABORTED);
	expect_journal(&b, id, STEP_ABORTED);
	expect_untouched(&dst, "target");
	expect_untouched(&src, "source");
}

/* ---- a daemon restarted under a VM that arrived ---- */

/* The target VMM's done notice: the migration is over, the VM lives on B. */
static void expect_done_notice(struct vcounter *vc, const char *id)
{
	struct vcounter_notice n;

	for (int i = 0; i < 100; i++) {
		int r = vcounter_next_notice(vc, 100, &n);

		assert_true(r >= 0);
		if (r == 1 && strcmp(n.migration_id, id) == 0 && strcmp(n.step, "done") == 0) {
			assert_int_equal(n.role, VCOUNTER_ROLE_TARGET);
			return;
		}
	}
	fail_msg("no done notice for %s on the target's connection", id);
}

/* A VM migrates A -> B; B's daemon restarts without an fd store (no
 * systemd), so its VMM's connection registers the VM again on its next
 * call. The VM lives on B now: it must come back as the source it became,
 * and leave B by its next migration, back to A, without its VMM registering
 * anything by hand (as QEMU does not). Registered again as the target it
 * first was, B would refuse: "registered as a migration target". */
static void test_vm_that_arrived_leaves_again_after_its_daemon_restarts(void **state)
{
	struct vcounter_report *rep1, *rep2 = NULL;
	char id1[VCOUNTER_MIGRATION_ID_SIZE], id2[VCOUNTER_MIGRATION_ID_SIZE], peer[64];
	struct vcounter_ctl_migration m;
	struct vm back;
	uint64_t gen;

	require_offset_control();
	migrate_out(id1);
	paused(id1);
	rep1 = applied(id1);
	expect_step(&b, id1, "done", &m);
	vcounter_ctl_migration_clear(&m);
	expect_done_notice(dst.vc, id1);

	node_stop(&b);
	node_start(&b, NULL);
	/* A takes the VM back into a new target VM under the same name. */
	assert_int_equal(vcounter_unregister_vm(src.vc, "vm-1"), 0);
	vm_create(&back);
	vm_register(&back, &a, VCOUNTER_ROLE_TARGET);

	snprintf(peer, sizeof(peer), "127.0.0.1:%d", a.port);
	if (vcounter_migrate_out(dst.vc, "vm-1", peer, "host-a.test", id2) < 0)
		fail_msg("migrate_out from B after its restart: %s", vcounter_last_error(dst.vc));
	if (vcounter_report_paused(dst.vc, "vm-1", id2, &gen) < 0)
		fail_msg("report_paused on B: %s", vcounter_last_error(dst.vc));
	if (vcounter_apply(back.vc, "vm-1", id2, &rep2) < 0)
		fail_msg("apply on A: %s", vcounter_last_error(back.vc));
	expect_step(&b, id2, "done", &m);
	assert_string_equal(m.role, "source");
	vcounter_ctl_migration_clear(&m);
	/* B's VM left with the offsets hop 1 applied, and was not written. */
	for (int i = 0; i < N_VCPUS; i++) {
		assert_true(rep2->offsets_before[i] == rep1->offsets_after[i]);
		assert_true(offset_get(dst.vcpu_fds[i]) == rep1->offsets_after[i]);
		assert_true(offset_get(back.vcpu_fds[i]) == rep2->offsets_after[i]);
	}
	assert_true(rep2->offsets_after[1] - rep2->offsets_after[0] ==
		    src.initial[1] - src.initial[0]);
	vcounter_report_free(rep1);
	vcounter_report_free(rep2);
	vm_destroy(&back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_source_killed_at_preparing_aborts, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_source_killed_at_prepared_aborts_both, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_source_killed_at_finalizing_aborts_both, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_source_killed_at_final_resumes_to_done, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_source_killed_at_done_keeps_the_outcome, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_source_killed_at_aborted_stays_aborted, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_target_killed_at_prepared_aborts, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_target_killed_at_final_never_applies_unconfirmed_state, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			test_target_killed_at_applying_resumes_after_the_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_target_killed_at_applied_is_not_applied_twice,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_target_killed_at_done_keeps_the_outcome, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_source_journal_full_refuses_to_start, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_target_journal_eio_refuses_the_final_state,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_vm_that_arrived_leaves_again_after_its_daemon_restarts, setup,
			teardown),
		cmocka_unit_test_setup_teardown(test_source_vmm_leaving_aborts_both, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_journal_files_are_set_aside, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_link_cut_after_the_final_state_is_replayed,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_black_hole_times_out_and_nothing_is_applied,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_delayed_link_still_completes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
