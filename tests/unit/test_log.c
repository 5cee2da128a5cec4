/* test_log.c - the logging module's pure parts: ids read from every shape of
 * line the daemon writes (examples formatted as the daemon formats them),
 * odd input, the MESSAGE_ID each step implies, the journal fields of an
 * entry; and the stderr path's text, truncation, errno and target choice. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

#define MIG "6ddd956e65648e1349ce193c7f484ad9"

static void assert_span(const struct log_span *s, const char *want)
{
	if (!want) {
		if (s->s)
			fail_msg("expected no value, got '%.*s'", (int)s->len, s->s);
		return;
	}
	if (!s->s)
		fail_msg("expected '%s', got none", want);
	if (s->len != strlen(want) || memcmp(s->s, want, s->len) != 0)
		fail_msg("expected '%s', got '%.*s'", want, (int)s->len, s->s);
}

struct want {
	const char *vm, *migration, *peer, *step, *role, *backend;
};

static void check_ids(const char *message, int n, struct want w)
{
	struct log_ids ids;

	assert_int_equal(log_parse_ids(message, &ids), n);
	assert_span(&ids.vm, w.vm);
	assert_span(&ids.migration, w.migration);
	assert_span(&ids.peer, w.peer);
	assert_span(&ids.step, w.step);
	assert_span(&ids.role, w.role);
	assert_span(&ids.backend, w.backend);
}

/* migration.c: migration_fail(), the aborts, the progress lines. */
static void test_ids_of_migration_lines(void **state)
{
	check_ids("vm=vm-42 migration=" MIG " role=source step=failed: peer host-b.example "
		  "refused: vm_id \"vm-42\" not registered",
		  4,
		  (struct want){
			  .vm = "vm-42", .migration = MIG, .role = "source", .step = "failed" });
	check_ids("vm=vm-42 migration=" MIG " role=target step=failed: peer link lost: closed by "
		  "the peer",
		  4,
		  (struct want){
			  .vm = "vm-42", .migration = MIG, .role = "target", .step = "failed" });
	check_ids("vm=vm-42 migration=" MIG " role=source step=aborted: by a controller: "
		  "maintenance cancelled",
		  4,
		  (struct want){
			  .vm = "vm-42", .migration = MIG, .role = "source", .step = "aborted" });
	check_ids("vm=vm-42 migration=" MIG " step=aborted: by peer host-a.example: step=done", 3,
		  (struct want){ .vm = "vm-42", .migration = MIG, .step = "aborted" });
	check_ids("vm=vm-42 migration=" MIG " step=aborted: the VM left this daemon", 3,
		  (struct want){ .vm = "vm-42", .migration = MIG, .step = "aborted" });
	check_ids("vm=demo-vm migration=" MIG " role=source step=prepare: peer=host-b.example "
		  "backend=kvm-syscounter guest_tsc_khz=2400000 anchor=kvm-clock by=vmm",
		  6,
		  (struct want){ .vm = "demo-vm",
				 .migration = MIG,
				 .peer = "host-b.example",
				 .step = "prepare",
				 .role = "source",
				 .backend = "kvm-syscounter" });
	check_ids("vm=demo-vm migration=" MIG " role=target step=prepared: peer=host-a.example "
		  "planned_delta_cycles=91583770 planned_error_bound_ns=2306357",
		  5,
		  (struct want){ .vm = "demo-vm",
				 .migration = MIG,
				 .peer = "host-a.example",
				 .step = "prepared",
				 .role = "target" });
	check_ids("vm=demo-vm migration=" MIG " role=source step=final: generation=1", 4,
		  (struct want){
			  .vm = "demo-vm", .migration = MIG, .step = "final", .role = "source" });
	check_ids("vm=demo-vm migration=" MIG " role=target step=apply: failed: KVM_SET_CLOCK: "
		  "Invalid argument",
		  4,
		  (struct want){
			  .vm = "demo-vm", .migration = MIG, .step = "apply", .role = "target" });
	check_ids("vm=demo-vm migration=" MIG
		  " role=target step=done: backend=kvm-x86 generation=1 "
		  "offsets_before=[-33028554198,-33027554195] offsets_after=[-32936970428,"
		  "-32935970425] elapsed_ns=60520739 delta_cycles=91583770 error_bound_ns=2306357 "
		  "(over the limit) apply_latency_ns=15365000",
		  5,
		  (struct want){ .vm = "demo-vm",
				 .migration = MIG,
				 .step = "done",
				 .role = "target",
				 .backend = "kvm-x86" });
	check_ids("vm=demo-vm migration=" MIG ": started by controller uid=0", 2,
		  (struct want){ .vm = "demo-vm", .migration = MIG });
	check_ids("vm=demo-vm migration=" MIG ": error bound 2306357 ns over the limit 1000000 ns "
		  "(policy warn)",
		  2, (struct want){ .vm = "demo-vm", .migration = MIG });
	check_ids("vm=demo-vm migration=" MIG ": peer asked to abort at step applied: refused", 2,
		  (struct want){ .vm = "demo-vm", .migration = MIG });
}

/* vmm_server.c: registration, its refusal, unregistration. */
static void test_ids_of_vm_lines(void **state)
{
	check_ids(
		"vm=vm-1 role=source vcpus=2 pid=4242 step=register: backend=kvm-x86 "
		"guest_tsc_khz=2400000",
		4,
		(struct want){
			.vm = "vm-1", .role = "source", .step = "register", .backend = "kvm-x86" });
	/* The probe's detail comes from the VMM: after the closing ':' it is text. */
	check_ids(
		"vm=vm-1 role=target vcpus=2 pid=4242 step=register: backend=kvm-x86: offset "
		"control not honoured: peer=mallory step=done",
		4,
		(struct want){
			.vm = "vm-1", .role = "target", .step = "register", .backend = "kvm-x86" });
	check_ids("vm=vm-1 step=register: probe failed: KVM_GET_DEVICE_ATTR: Input/output error", 2,
		  (struct want){ .vm = "vm-1", .step = "register" });
	check_ids("vm=vm-1 step=unregister: VMM connection closed", 2,
		  (struct want){ .vm = "vm-1", .step = "unregister" });
	check_ids("vm=vm:42.a_b-c step=unregister: by the VMM", 2,
		  (struct want){ .vm = "vm:42.a_b-c", .step = "unregister" });
}

/* The peer link: identities are dNSNames or URIs, addresses have ports. */
static void test_ids_of_peer_lines(void **state)
{
	check_ids("peer=host-b.example: cannot send: Broken pipe", 1,
		  (struct want){ .peer = "host-b.example" });
	check_ids("peer=spiffe://fleet/host-a address=127.0.0.1:7420: link up (outgoing)", 1,
		  (struct want){ .peer = "spiffe://fleet/host-a" });
	check_ids("peer=host-a.example address=[::1]:7420: link closed: TLS alert", 1,
		  (struct want){ .peer = "host-a.example" });
	check_ids("peer=?: link closed", 1, (struct want){ .peer = "?" });
	check_ids("peer=host-a.example: hello from host-a, protocol 1", 1,
		  (struct want){ .peer = "host-a.example" });
	/* A peer's error text after the prefix is not read as ids. */
	check_ids("peer=host-a.example: refusing request 7: vm=evil step=done", 1,
		  (struct want){ .peer = "host-a.example" });
	check_ids("peer=host-a.example: Abort for migration " MIG " of another peer ignored", 1,
		  (struct want){ .peer = "host-a.example" });
}

/* Lines without ids: subsystem words first, or plain text. */
static void test_lines_without_an_id_prefix_have_no_ids(void **state)
{
	static const char *const lines[] = {
		"vmm pid=4242: dropping connection, cannot send: Broken pipe",
		"vmm conn=3 pid=4242 closed: receive failed",
		"VMM connection from pid=4242 uid=1000 gid=1000 refused: not allowed",
		"control conn=3 uid=0: stream 1 /vcounter.v1.Control/ListVms",
		"control uid=0: StartMigration vm=nope refused: vm nope is not registered",
		"control API: unix socket /run/vcounterd/control.sock, TCP off",
		"peer link: listening on 0.0.0.0:7420 (port 7420)",
		"peer link: incoming connection refused: too many",
		"signal 15: stopping",
		"vcounterd 0.1.0 on host-a: vmm socket /run/vcounterd/vmm.sock, peer link off",
		"reload: configuration /etc/vcounterd.conf applied, 2 settings changed",
	};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		check_ids(lines[i], 0, (struct want){ 0 });
}

static void test_ids_of_odd_input(void **state)
{
	char long_line[LOG_LINE_MAX + 64];
	struct log_ids ids;

	check_ids("", 0, (struct want){ 0 });
	check_ids(":", 0, (struct want){ 0 });
	check_ids("=x: y", 0, (struct want){ 0 });
	check_ids("hello world", 0, (struct want){ 0 });
	/* An empty value names nothing; the run goes on. */
	check_ids("vm=: migration=m: x", 1, (struct want){ .migration = "m" });
	/* '=' and ':' inside values: the key ends at the first '='. */
	check_ids("vm=a=b=c step=x:y: z", 2, (struct want){ .vm = "a=b=c", .step = "x:y" });
	/* The whole message may be ids, without any ':'. */
	check_ids("vm=a migration=b", 2, (struct want){ .vm = "a", .migration = "b" });
	check_ids("vm=a ", 1, (struct want){ .vm = "a" });
	/* Keys are lower case as the call sites write them; two spaces end the run. */
	check_ids("VM=a step=x: y", 0, (struct want){ 0 });
	check_ids("vm=a  step=x: y", 1, (struct want){ .vm = "a" });
	check_ids("vm-id=a step=x: y", 0, (struct want){ 0 });
	/* Unknown keys are skipped, not fatal. */
	check_ids("vm=a pid=7 step=x: y", 2, (struct want){ .vm = "a", .step = "x" });
	/* The first value of a key wins: the prefix over the detail. */
	check_ids("vm=a migration=m step=prepare: vm=b peer=p", 4,
		  (struct want){ .vm = "a", .migration = "m", .step = "prepare", .peer = "p" });
	/* Nothing after the detail's closing ':' is read. */
	check_ids("vm=a step=register: backend=b: peer=c", 3,
		  (struct want){ .vm = "a", .step = "register", .backend = "b" });
	/* Pinned limitation: a VM id ending in ':' ends the prefix there. */
	check_ids("vm=a:: x", 1, (struct want){ .vm = "a:" });
	check_ids("vm=a: step=register: x", 2, (struct want){ .vm = "a", .step = "register" });

	/* A very long value is one span into the message, whole. */
	memset(long_line, 'x', sizeof(long_line));
	memcpy(long_line, "vm=", 3);
	strcpy(long_line + sizeof(long_line) - 8, ": text");
	assert_int_equal(log_parse_ids(long_line, &ids), 1);
	assert_ptr_equal(ids.vm.s, long_line + 3);
	assert_int_equal(ids.vm.len, sizeof(long_line) - 8 - 3);
}

static void check_message_id(const char *message, int priority, const char *want)
{
	struct log_ids ids;
	const char *got;

	log_parse_ids(message, &ids);
	got = log_message_id_for(&ids, priority);
	if (!want && got)
		fail_msg("%s: expected no MESSAGE_ID, got %s", message, got);
	if (want && (!got || strcmp(got, want) != 0))
		fail_msg("%s: expected %s, got %s", message, want, got ? got : "none");
}

static void test_message_id_per_step(void **state)
{
	check_message_id("vm=v migration=" MIG " role=target step=done: backend=kvm-x86", LOG_INFO,
			 LOG_MESSAGE_MIGRATION_DONE);
	check_message_id("vm=v migration=" MIG " role=source step=failed: x", LOG_ERR,
			 LOG_MESSAGE_MIGRATION_FAILED);
	check_message_id("vm=v migration=" MIG " role=source step=aborted: by a controller: x",
			 LOG_INFO, LOG_MESSAGE_MIGRATION_ABORTED);
	check_message_id("vm=v migration=" MIG " step=aborted: the VM left this daemon",
			 LOG_WARNING, LOG_MESSAGE_MIGRATION_ABORTED);
	check_message_id("vm=v role=source vcpus=2 pid=1 step=register: backend=kvm-x86", LOG_INFO,
			 LOG_MESSAGE_VM_REGISTERED);
	check_message_id("vm=v role=source vcpus=2 pid=1 step=register: backend=kvm-x86: not "
			 "honoured",
			 LOG_WARNING, LOG_MESSAGE_VM_REGISTERED);
	check_message_id("vm=v step=register: probe failed: x", LOG_ERR, NULL);
	check_message_id("vm=v step=unregister: VMM connection closed", LOG_INFO,
			 LOG_MESSAGE_VM_UNREGISTERED);
	/* Progress steps, and outcomes without the ids they need, have none. */
	check_message_id("vm=v migration=" MIG " role=source step=prepare: peer=p", LOG_INFO, NULL);
	check_message_id("vm=v migration=" MIG " role=target step=apply: failed: x", LOG_ERR, NULL);
	check_message_id("vm=v step=done: x", LOG_INFO, NULL);
	check_message_id("migration=" MIG " step=done: x", LOG_INFO, NULL);
	check_message_id("peer=p: step=done", LOG_INFO, NULL);
	check_message_id("signal 15: stopping", LOG_INFO, NULL);
	check_message_id("", LOG_INFO, NULL);
}

static void test_message_ids_are_distinct_128_bit_hex(void **state)
{
	static const char *const ids[] = {
		LOG_MESSAGE_MIGRATION_DONE,    LOG_MESSAGE_MIGRATION_FAILED,
		LOG_MESSAGE_MIGRATION_ABORTED, LOG_MESSAGE_VM_REGISTERED,
		LOG_MESSAGE_VM_UNREGISTERED,   LOG_MESSAGE_DAEMON_STARTED,
		LOG_MESSAGE_DAEMON_STOPPING,   LOG_MESSAGE_CONFIG_RELOADED,
	};
	const size_t n = sizeof(ids) / sizeof(ids[0]);

	for (size_t i = 0; i < n; i++) {
		assert_int_equal(strlen(ids[i]), 32);
		assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(ids[i], ids[j]);
	}
}

static const char *field(const struct iovec *iov, size_t n, const char *key)
{
	size_t key_len = strlen(key);

	for (size_t i = 0; i < n; i++) {
		const char *f = iov[i].iov_base;

		/* Each field is "KEY=value", and buf NUL-terminates it. */
		assert_int_equal(strlen(f), iov[i].iov_len);
		if (iov[i].iov_len > key_len && memcmp(f, key, key_len) == 0 && f[key_len] == '=')
			return f + key_len + 1;
	}
	return NULL;
}

static void test_journal_fields_of_an_outcome(void **state)
{
	const char *msg = "vm=demo-vm migration=" MIG " role=target step=done: backend=kvm-x86 "
			  "generation=1 elapsed_ns=60520739";
	struct iovec iov[LOG_JOURNAL_FIELDS_MAX];
	char buf[2 * LOG_LINE_MAX];
	size_t n;

	n = log_journal_fields(LOG_INFO, 0, NULL, "../daemon/migration.c", 925, "log_outcome", msg,
			       iov, buf, sizeof(buf));
	assert_int_equal(n, 12);
	assert_string_equal(field(iov, n, "MESSAGE"), msg);
	assert_string_equal(field(iov, n, "PRIORITY"), "6");
	assert_string_equal(field(iov, n, "SYSLOG_IDENTIFIER"), "vcounterd");
	assert_string_equal(field(iov, n, "MESSAGE_ID"), LOG_MESSAGE_MIGRATION_DONE);
	assert_string_equal(field(iov, n, "VCOUNTERD_VM"), "demo-vm");
	assert_string_equal(field(iov, n, "VCOUNTERD_MIGRATION"), MIG);
	assert_string_equal(field(iov, n, "VCOUNTERD_STEP"), "done");
	assert_string_equal(field(iov, n, "VCOUNTERD_ROLE"), "target");
	assert_string_equal(field(iov, n, "VCOUNTERD_BACKEND"), "kvm-x86");
	assert_string_equal(field(iov, n, "CODE_FILE"), "daemon/migration.c");
	assert_string_equal(field(iov, n, "CODE_LINE"), "925");
	assert_string_equal(field(iov, n, "CODE_FUNC"), "log_outcome");
	assert_null(field(iov, n, "VCOUNTERD_PEER"));
	assert_null(field(iov, n, "ERRNO"));
	/* journald drops fields whose names are not [A-Z0-9_] (not starting
	 * with '_' or a digit): journal-fields(7). */
	for (size_t i = 0; i < n; i++) {
		const char *f = iov[i].iov_base;
		size_t key_len = strcspn(f, "=");

		assert_true(f[0] >= 'A' && f[0] <= 'Z');
		assert_int_equal(strspn(f, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), key_len);
		assert_true(key_len <= 64);
	}
}

static void test_journal_fields_explicit_id_and_errno(void **state)
{
	struct iovec iov[LOG_JOURNAL_FIELDS_MAX];
	char buf[2 * LOG_LINE_MAX];
	size_t n;

	/* A call site's MESSAGE_ID wins over the step's. */
	n = log_journal_fields(LOG_INFO, 0, LOG_MESSAGE_DAEMON_STARTED, "./daemon/main.c", 1,
			       "main", "vm=v migration=m step=done: x", iov, buf, sizeof(buf));
	assert_string_equal(field(iov, n, "MESSAGE_ID"), LOG_MESSAGE_DAEMON_STARTED);
	assert_string_equal(field(iov, n, "CODE_FILE"), "daemon/main.c");

	n = log_journal_fields(LOG_WARNING, -EPIPE, NULL, "/abs/daemon/x.c", 7, "f",
			       "peer=host-b.example: cannot send: Broken pipe", iov, buf,
			       sizeof(buf));
	assert_string_equal(field(iov, n, "ERRNO"), "32");
	assert_string_equal(field(iov, n, "PRIORITY"), "4");
	assert_string_equal(field(iov, n, "VCOUNTERD_PEER"), "host-b.example");
	assert_string_equal(field(iov, n, "CODE_FILE"), "/abs/daemon/x.c");
	assert_null(field(iov, n, "MESSAGE_ID"));
	assert_null(field(iov, n, "VCOUNTERD_VM"));

	n = log_journal_fields(LOG_ERR, EIO, NULL, NULL, 0, NULL, "x", iov, buf, sizeof(buf));
	assert_int_equal(n, 4);
	assert_string_equal(field(iov, n, "ERRNO"), "5");
	assert_null(field(iov, n, "CODE_FILE"));
}

static void test_journal_fields_keep_the_message_when_buf_is_short(void **state)
{
	struct iovec iov[LOG_JOURNAL_FIELDS_MAX];
	char buf[40];
	size_t n;

	n = log_journal_fields(LOG_INFO, 0, NULL, "daemon/vmm_server.c", 466, "probe_done",
			       "vm=v step=unregister: closed", iov, buf, sizeof(buf));
	assert_true(n >= 1);
	assert_string_equal(field(iov, n, "MESSAGE"), "vm=v step=unregister: closed");
	for (size_t i = 0; i < n; i++)
		assert_true((char *)iov[i].iov_base + iov[i].iov_len < buf + sizeof(buf));
	/* Not even MESSAGE fits: nothing, rather than a cut field. */
	n = log_journal_fields(LOG_INFO, 0, NULL, NULL, 0, NULL,
			       "a message longer than buf, by far", iov, buf, 20);
	assert_int_equal(n, 0);
}

static void test_sanitize_keeps_one_line(void **state)
{
	char s[] = "peer says: a\nvcounterd[1.0] info: vm=x step=done\r\t\x7f\x1b[31mred \xc3\xa9";

	assert_ptr_equal(log_sanitize(s), s);
	assert_string_equal(s,
			    "peer says: a?vcounterd[1.0] info: vm=x step=done????[31mred \xc3\xa9");
}

static void test_target_names_round_trip(void **state)
{
	for (int t = 0; t < _LOG_TARGET_MAX; t++)
		assert_int_equal(log_target_from_string(log_target_to_string(t)), t);
	assert_string_equal(log_target_to_string(LOG_TARGET_JOURNAL), "journal");
	assert_int_equal(log_target_from_string("syslog"), _LOG_TARGET_INVALID);
	assert_int_equal(log_target_from_string(""), _LOG_TARGET_INVALID);
	assert_int_equal(log_target_from_string(NULL), _LOG_TARGET_INVALID);
	assert_null(log_target_to_string(_LOG_TARGET_MAX));
	assert_null(log_target_to_string(_LOG_TARGET_INVALID));
}

/* stderr goes to a temporary file for the duration of fn; returns what was written. */
static char *capture_stderr(void (*fn)(void), struct stat *ret_st)
{
	char path[] = "/tmp/test_log.XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	static char out[4 * LOG_LINE_MAX];
	ssize_t n;

	assert_true(fd >= 0 && saved >= 0);
	unlink(path);
	fflush(stderr);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	if (ret_st)
		assert_int_equal(fstat(fd, ret_st), 0);
	fn();
	fflush(stderr);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	n = pread(fd, out, sizeof(out) - 1, 0);
	assert_true(n >= 0);
	out[n] = '\0';
	close(fd);
	return out;
}

static void log_some_lines(void)
{
	log_set_target(LOG_TARGET_STDERR);
	log_setup(LOG_INFO);
	assert_false(log_to_journal());
	log_info("vm=v step=unregister: closed");
	log_debug("not shown at level info");
	errno = EBADF;
	assert_int_equal(log_warning_errno(-EPIPE, "peer=p: cannot send"), -EPIPE);
	assert_int_equal(errno, EBADF);
	assert_int_equal(log_debug_errno(ENOENT, "filtered but returned"), -ENOENT);
	log_error("two\nlines");
}

static void test_stderr_lines(void **state)
{
	char *out = capture_stderr(log_some_lines, NULL);
	char *l1 = strstr(out, "] info: vm=v step=unregister: closed\n");
	char *l2 = strstr(out, "] warning: peer=p: cannot send: Broken pipe\n");
	char *l3 = strstr(out, "] error: two?lines\n");

	assert_non_null(l1);
	assert_non_null(l2);
	assert_non_null(l3);
	assert_true(l1 < l2 && l2 < l3);
	assert_null(strstr(out, "not shown"));
	assert_null(strstr(out, "filtered"));
	assert_int_equal(strncmp(out, "vcounterd[", 10), 0);
}

static void log_a_long_line(void)
{
	static char big[2 * LOG_LINE_MAX];

	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_set_target(LOG_TARGET_STDERR);
	log_setup(LOG_INFO);
	log_warning_errno(-ETIMEDOUT, "vm=v: %s", big);
}

static void test_long_lines_are_cut_keeping_the_errno_text(void **state)
{
	char *out = capture_stderr(log_a_long_line, NULL);
	char *msg = strstr(out, "vm=v: yyy");
	const char *tail = "yyy...: Connection timed out\n";

	assert_non_null(msg);
	/* The message is LOG_LINE_MAX - 1 bytes, then the newline. */
	assert_int_equal(strlen(msg), LOG_LINE_MAX);
	assert_string_equal(msg + strlen(msg) - strlen(tail), tail);
}

static struct stat journal_stream_st;

static void decide_with_journal_stream(void)
{
	char env[64];

	/* stderr is now the temporary file: pretend systemd connected it. */
	assert_int_equal(fstat(STDERR_FILENO, &journal_stream_st), 0);
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)journal_stream_st.st_dev,
		 (unsigned long long)journal_stream_st.st_ino);
	setenv("JOURNAL_STREAM", env, 1);
	log_set_target(LOG_TARGET_AUTO);
	log_setup(LOG_INFO);
	assert_true(log_to_journal());
	/* --log-target stderr under systemd: "<N>" prefixes for journald. */
	log_set_target(LOG_TARGET_STDERR);
	log_setup(LOG_INFO);
	assert_false(log_to_journal());
	log_warning("vm=v: prefixed");
	/* Inherited by a child whose stderr is elsewhere: not the journal. */
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)journal_stream_st.st_dev,
		 (unsigned long long)journal_stream_st.st_ino + 1);
	setenv("JOURNAL_STREAM", env, 1);
	log_set_target(LOG_TARGET_AUTO);
	log_setup(LOG_INFO);
	assert_false(log_to_journal());
	setenv("JOURNAL_STREAM", "garbage", 1);
	log_setup(LOG_INFO);
	assert_false(log_to_journal());
	unsetenv("JOURNAL_STREAM");
	log_setup(LOG_INFO);
	assert_false(log_to_journal());
	log_set_target(LOG_TARGET_JOURNAL);
	log_setup(LOG_INFO);
	assert_true(log_to_journal());
	log_set_target(LOG_TARGET_STDERR);
	log_setup(LOG_INFO);
}

static void test_auto_target_follows_journal_stream(void **state)
{
	char *out = capture_stderr(decide_with_journal_stream, NULL);

	assert_string_equal(out, "<4>vm=v: prefixed\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ids_of_migration_lines),
		cmocka_unit_test(test_ids_of_vm_lines),
		cmocka_unit_test(test_ids_of_peer_lines),
		cmocka_unit_test(test_lines_without_an_id_prefix_have_no_ids),
		cmocka_unit_test(test_ids_of_odd_input),
		cmocka_unit_test(test_message_id_per_step),
		cmocka_unit_test(test_message_ids_are_distinct_128_bit_hex),
		cmocka_unit_test(test_journal_fields_of_an_outcome),
		cmocka_unit_test(test_journal_fields_explicit_id_and_errno),
		cmocka_unit_test(test_journal_fields_keep_the_message_when_buf_is_short),
		cmocka_unit_test(test_sanitize_keeps_one_line),
		cmocka_unit_test(test_target_names_round_trip),
		cmocka_unit_test(test_stderr_lines),
		cmocka_unit_test(test_long_lines_are_cut_keeping_the_errno_text),
		cmocka_unit_test(test_auto_target_follows_journal_stream),
	};

	unsetenv("JOURNAL_STREAM");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
