/* test_journal.c - vcounterd's journal entries as a journal receives them: a real
 * daemon with --log-target journal (and auto, through JOURNAL_STREAM), its entries
 * read back field by field: MESSAGE_ID, PRIORITY, ERRNO, CODE_*, VCOUNTERD_*.
 *
 * Which journal, in order (VC_JOURNAL_MODE=host|private|standin forces one):
 * - host: the host's journald, when systemd runs it; read with journalctl;
 * - private: as root, a systemd-journald namespace instance started here, in a
 *   mount namespace of this test with a tmpfs over /run (and /var/log/journal),
 *   reached by the daemon at /run/systemd/journal/socket (a bind mount of the
 *   instance's directory, since libsystemd 252 always sends there), read with
 *   journalctl --namespace; nothing of the host's /run or journal is touched;
 * - standin: the same namespace, but a datagram socket of this test bound at
 *   /run/systemd/journal/socket, the native protocol parsed here (journald's
 *   own parser is not exercised then: the field names are checked against
 *   journal-fields(7)'s rules instead);
 * - else the test skips, saying why. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "daemon_harness.h"
#include "vcounter/vcounter.h"

/* daemon/log.h's LOG_MESSAGE_*, repeated: the test states the contract. */
#define MID_MIGRATION_FAILED "9825eeebad6f405090471253fc8cfc44"
#define MID_VM_REGISTERED    "5c75271fa4814929b628d5fbab4ca09e"
#define MID_VM_UNREGISTERED  "84c50426db0b4776a1413e076297c946"
#define MID_DAEMON_STARTED   "8d37f79148754c5a932ac68dce75e8f9"
#define MID_DAEMON_STOPPING  "56bffb2295c040389cc31049b9c017d8"
#define MID_CONFIG_RELOADED  "b6191f8548de4f65a478fc423020af77"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"
#define NAMESPACE      "vcounterd-test"
#define MAX_FIELDS     64
#define MAX_ENTRIES    1024

enum mode {
	MODE_HOST,
	MODE_PRIVATE,
	MODE_STANDIN
};
static const char *const mode_names[] = { "host", "private", "standin" };

static enum mode mode;
static bool journal_up;
static pid_t journald_pid = -1;
static int standin_fd = -1;
static int wait_ms = 10000;

struct entry {
	size_t n;
	char *key[MAX_FIELDS];
	char *value[MAX_FIELDS];
};

static struct entry entries[MAX_ENTRIES];
static size_t n_entries;

static void entries_clear(void)
{
	for (size_t i = 0; i < n_entries; i++)
		for (size_t j = 0; j < entries[i].n; j++) {
			free(entries[i].key[j]);
			free(entries[i].value[j]);
		}
	n_entries = 0;
}

static void entry_add(struct entry *e, const char *key, size_t key_len, const char *value,
		      size_t value_len)
{
	if (e->n >= MAX_FIELDS)
		fail_msg("more than %d fields in one entry", MAX_FIELDS);
	e->key[e->n] = strndup(key, key_len);
	e->value[e->n] = strndup(value, value_len);
	assert_non_null(e->key[e->n]);
	assert_non_null(e->value[e->n]);
	e->n++;
}

static const char *get(const struct entry *e, const char *key)
{
	for (size_t i = 0; i < e->n; i++)
		if (strcmp(e->key[i], key) == 0)
			return e->value[i];
	return NULL;
}

/* journalctl -o export and the native protocol share one syntax
 * (systemd's JOURNAL_EXPORT_FORMATS / JOURNAL_NATIVE_PROTOCOL docs): a field
 * is "KEY=value\n", or "KEY\n" + 64-bit little-endian size + bytes + "\n"
 * when the value holds a newline; an empty line ends an export entry. */
static void parse_entries(const char *buf, size_t len, pid_t pid_of_all)
{
	struct entry *e = NULL;
	size_t p = 0;

	while (p < len) {
		const char *line = buf + p;
		const char *nl = memchr(line, '\n', len - p);
		size_t line_len = nl ? (size_t)(nl - line) : len - p;
		const char *eq = memchr(line, '=', line_len);

		if (line_len == 0) { /* end of an export entry */
			e = NULL;
			p++;
			continue;
		}
		if (!e) {
			if (n_entries >= MAX_ENTRIES)
				fail_msg("more than %d journal entries", MAX_ENTRIES);
			e = &entries[n_entries++];
			memset(e, 0, sizeof(*e));
			if (pid_of_all > 0) {
				char pid[16];

				snprintf(pid, sizeof(pid), "%d", (int)pid_of_all);
				entry_add(e, "_PID", 4, pid, strlen(pid));
			}
		}
		if (eq) {
			entry_add(e, line, (size_t)(eq - line), eq + 1,
				  line_len - (size_t)(eq - line) - 1);
			p += line_len + 1;
		} else {
			uint64_t size = 0;
			const unsigned char *s = (const unsigned char *)line + line_len + 1;

			if (!nl || p + line_len + 1 + 8 > len)
				fail_msg("truncated binary field");
			for (int i = 7; i >= 0; i--)
				size = (size << 8) | s[i];
			if (size > len - (p + line_len + 1 + 8) - 1)
				fail_msg("binary field of %" PRIu64 " bytes past the end", size);
			entry_add(e, line, line_len, (const char *)s + 8, (size_t)size);
			p += line_len + 1 + 8 + (size_t)size + 1;
		}
	}
}

/* ---- where entries come from ---- */

static void read_journalctl(pid_t pid)
{
	char cmd[256], *buf = NULL;
	size_t len = 0, cap = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "journalctl %s -o export --no-pager _PID=%d 2>/dev/null",
		 mode == MODE_PRIVATE ? "--namespace=" NAMESPACE : "", (int)pid);
	f = popen(cmd, "r");
	assert_non_null(f);
	for (;;) {
		size_t n;

		if (cap - len < 65536) {
			cap = cap ? cap * 2 : 131072;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = fread(buf + len, 1, cap - len, f);
		if (n == 0)
			break;
		len += n;
	}
	pclose(f);
	entries_clear();
	parse_entries(buf, len, 0);
	free(buf);
}

/* The stand-in receives as journald does, all the time, in a thread: a
 * blocking sd_journal_sendv() would otherwise stall the daemon once
 * net.unix.max_dgram_qlen (10 here) datagrams wait. The sender's pid comes
 * from SCM_CREDENTIALS, as journald takes it; a datagram too big for the
 * socket arrives as a sealed memfd (SCM_RIGHTS) instead. The main thread
 * parses what arrived (refresh). */
struct datagram {
	struct datagram *next;
	pid_t pid;
	size_t len;
	char data[];
};

static pthread_mutex_t standin_lock = PTHREAD_MUTEX_INITIALIZER;
static struct datagram *standin_head, **standin_tail = &standin_head;
static pthread_t standin_thread;

static void *standin_receive(void *arg)
{
	static char buf[256 * 1024];

	for (;;) {
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 4)];
		} control;
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = &control,
				     .msg_controllen = sizeof(control) };
		struct datagram *d;
		pid_t pid = 0;
		int memfd = -1;
		ssize_t n = recvmsg(standin_fd, &mh, MSG_CMSG_CLOEXEC);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL; /* shut down at the end; journal datagrams are never empty */
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
				pid = ((struct ucred *)(void *)CMSG_DATA(c))->pid;
			else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
				memcpy(&memfd, CMSG_DATA(c), sizeof(int));
		}
		if (memfd >= 0) {
			n = pread(memfd, buf, sizeof(buf), 0);
			close(memfd);
			if (n < 0)
				n = 0;
		}
		d = malloc(sizeof(*d) + (size_t)n);
		if (!d)
			abort();
		d->next = NULL;
		d->pid = pid;
		d->len = (size_t)n;
		memcpy(d->data, buf, (size_t)n);
		pthread_mutex_lock(&standin_lock);
		*standin_tail = d;
		standin_tail = &d->next;
		pthread_mutex_unlock(&standin_lock);
	}
}

static void drain_standin(void)
{
	struct datagram *d;

	pthread_mutex_lock(&standin_lock);
	d = standin_head;
	standin_head = NULL;
	standin_tail = &standin_head;
	pthread_mutex_unlock(&standin_lock);
	while (d) {
		struct datagram *next = d->next;

		parse_entries(d->data, d->len, d->pid);
		free(d);
		d = next;
	}
}

static void refresh(pid_t pid)
{
	if (mode == MODE_STANDIN)
		drain_standin();
	else
		read_journalctl(pid);
}

/* The daemon pid's entry whose key is value, waiting up to timeout_ms for it. */
static const struct entry *find_entry(pid_t pid, const char *key, const char *value, int timeout_ms)
{
	char pid_s[16];

	snprintf(pid_s, sizeof(pid_s), "%d", (int)pid);
	for (int waited = 0;; waited += 100) {
		refresh(pid);
		for (size_t i = 0; i < n_entries; i++) {
			const char *v = get(&entries[i], key), *p = get(&entries[i], "_PID");

			if (v && p && strcmp(v, value) == 0 && strcmp(p, pid_s) == 0)
				return &entries[i];
		}
		if (waited >= timeout_ms)
			return NULL;
		harness_sleep_ms(100);
	}
}

static const struct entry *expect_entry(pid_t pid, const char *key, const char *value)
{
	const struct entry *e = find_entry(pid, key, value, wait_ms);

	if (!e)
		fail_msg("no journal entry of pid %d with %s=%s within %d ms (%zu entries of "
			 "it seen)",
			 (int)pid, key, value, wait_ms, n_entries);
	return e;
}

static void assert_field(const struct entry *e, const char *key, const char *want)
{
	const char *v = get(e, key);

	if (!v)
		fail_msg("entry '%s': no %s= (want '%s')", get(e, "MESSAGE"), key, want);
	if (strcmp(v, want) != 0)
		fail_msg("entry '%s': %s='%s', want '%s'", get(e, "MESSAGE"), key, v, want);
}

/* What every vcounterd entry has; and no field journald would refuse. */
static void assert_common_fields(const struct entry *e, const char *code_file)
{
	const char *line = get(e, "CODE_LINE");

	assert_field(e, "SYSLOG_IDENTIFIER", "vcounterd");
	assert_field(e, "CODE_FILE", code_file);
	assert_non_null(get(e, "CODE_FUNC"));
	assert_non_null(line);
	assert_true(atoi(line) > 0);
	assert_non_null(get(e, "PRIORITY"));
	assert_non_null(get(e, "MESSAGE"));
	assert_null(strchr(get(e, "MESSAGE"), '\n'));
	if (mode != MODE_STANDIN)
		assert_field(e, "_TRANSPORT", "journal");
	for (size_t i = 0; i < e->n; i++) {
		const char *k = e->key[i];

		if (k[0] == '_')
			continue; /* trusted fields journald adds (and our _PID) */
		if (!(k[0] >= 'A' && k[0] <= 'Z') ||
		    strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != strlen(k) ||
		    strlen(k) > 64)
			fail_msg("field name '%s' is not one journald keeps", k);
	}
}

/* ---- the journal of this test ---- */

static bool host_journald_runs(void)
{
	char state[64] = "";
	FILE *f;

	if (access(JOURNAL_SOCKET, F_OK) < 0)
		return false;
	f = popen("systemctl is-system-running 2>/dev/null", "r");
	if (!f)
		return false;
	if (!fgets(state, sizeof(state), f))
		state[0] = '\0';
	pclose(f);
	state[strcspn(state, "\n")] = '\0';
	return state[0] && strcmp(state, "offline") != 0 && strcmp(state, "unknown") != 0;
}

static const char *journald_binary(void)
{
	static const char *const paths[] = { "/lib/systemd/systemd-journald",
					     "/usr/lib/systemd/systemd-journald" };

	for (size_t i = 0; i < 2; i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

/* A mount namespace of this test (its daemons inherit it): tmpfs over /run,
 * so /run/systemd/journal/socket is ours to create, and over
 * /var/log/journal, where a namespace instance of journald writes. */
static int private_run(char *why, size_t size)
{
	struct stat st;

	if (geteuid() != 0) {
		snprintf(why, size, "not root: cannot give this test its own /run");
		return -EPERM;
	}
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0) {
		snprintf(why, size, "no private mount namespace (%s)", strerror(errno));
		return -errno;
	}
	if (stat("/var/log/journal", &st) == 0 && S_ISDIR(st.st_mode) &&
	    mount("tmpfs", "/var/log/journal", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0) {
		snprintf(why, size, "cannot hide /var/log/journal (%s)", strerror(errno));
		return -errno;
	}
	return 0;
}

static void start_private_journald(void)
{
	const char *dir = "/run/systemd/journal." NAMESPACE;
	char socket_path[128];

	journald_pid = fork();
	assert_true(journald_pid >= 0);
	if (journald_pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		execl(journald_binary(), "systemd-journald", NAMESPACE, (char *)NULL);
		_exit(127);
	}
	snprintf(socket_path, sizeof(socket_path), "%s/socket", dir);
	for (int i = 0; access(socket_path, F_OK) < 0; i++) {
		if (i > 100)
			fail_msg("systemd-journald %s made no %s", NAMESPACE, socket_path);
		harness_sleep_ms(50);
	}
	/* libsystemd's sd_journal_sendv() writes to JOURNAL_SOCKET only. */
	assert_int_equal(mkdir("/run/systemd/journal", 0755), 0);
	assert_int_equal(mount(dir, "/run/systemd/journal", NULL, MS_BIND, NULL), 0);
}

static void start_standin(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET };
	int one = 1, rcvbuf = 8 * 1024 * 1024;

	assert_int_equal(mkdir("/run/systemd", 0755), 0);
	assert_int_equal(mkdir("/run/systemd/journal", 0755), 0);
	standin_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(standin_fd >= 0);
	assert_int_equal(bind(standin_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(chmod(JOURNAL_SOCKET, 0666), 0);
	assert_int_equal(setsockopt(standin_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	(void)setsockopt(standin_fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	assert_int_equal(pthread_create(&standin_thread, NULL, standin_receive, NULL), 0);
}

static void ensure_journal(void)
{
	if (journal_up)
		return;
	if (mode == MODE_PRIVATE)
		start_private_journald();
	else if (mode == MODE_STANDIN)
		start_standin();
	journal_up = true;
}

/* ---- daemons ---- */

static char certs_dir[256];

/* A daemon this test starts itself: own stderr file and environment
 * (JOURNAL_STREAM set, or unset when NULL); under VC_DAEMON_WRAPPER
 * (valgrind) as the harness starts its daemons. */
static pid_t spawn_daemon(const char *stderr_path, const char *journal_stream,
			  const char *const *args)
{
	pid_t pid = harness_spawn(stderr_path, journal_stream ? journal_stream : "", args);

	assert_true(pid > 0);
	return pid;
}

static int wait_exit(pid_t pid)
{
	int status;

	for (int i = 0; i < wait_ms / 10; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		harness_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	fail_msg("vcounterd %d did not exit", (int)pid);
	return -1;
}

/* Lines of path the daemon wrote: valgrind's own notes under
 * VC_DAEMON_WRAPPER ("--PID-- WARNING: unhandled ... syscall") aside. */
static size_t daemon_lines(const char *path)
{
	char line[1024];
	size_t n = 0;
	int pid_len;
	FILE *f = fopen(path, "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		pid_len = 0;
		if (sscanf(line, "--%*d--%n", &pid_len) >= 0 && pid_len > 0)
			continue;
		n++;
	}
	fclose(f);
	return n;
}

static bool file_contains(const char *path, const char *needle)
{
	char line[4096];
	bool found = false;
	FILE *f = fopen(path, "re");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

/* A harness daemon this test already sent SIGTERM: its exit status (0, or
 * the wrapper's error code), without a second signal that could land while
 * it exits (ASan's leak check takes a while); then the harness cleans up. */
static void stop_signalled(struct daemon_proc *d)
{
	assert_int_equal(wait_exit(d->pid), 0);
	d->pid = 0;
	harness_stop(d);
}

/* ---- tests ---- */

/* Before any journal exists here: the lines still go out, on stderr. */
static void test_unreachable_journal_falls_back_to_stderr(void **state)
{
	const char *args[] = { "--log-target", "journal", NULL };
	struct daemon_proc d;

	if (mode == MODE_HOST) {
		fprintf(stderr, "SKIP: the host's journal is reachable: no fallback to see\n");
		skip();
	}
	assert_int_equal(access(JOURNAL_SOCKET, F_OK), -1);
	assert_int_equal(harness_start(&d, args), 0);
	/* One warning, then every line as it would be on stderr. */
	for (int i = 0; i < wait_ms / 10 && !harness_log_contains(&d, "info: vcounterd "); i++)
		harness_sleep_ms(10);
	assert_true(harness_log_contains(&d, "warning: cannot log to the journal (No such file or "
					     "directory); logging to stderr"));
	assert_true(harness_log_contains(&d, "info: vcounterd "));
	kill(d.pid, SIGTERM);
	for (int i = 0; i < 300 && !harness_log_contains(&d, "info: signal 15: stopping"); i++)
		harness_sleep_ms(10);
	assert_true(harness_log_contains(&d, "info: signal 15: stopping"));
	stop_signalled(&d);
}

static void test_daemon_lifecycle_vm_and_migration_entries(void **state)
{
	char ca[300], cert[300], key[300], vm_id[64], migration_id[VCOUNTER_MIGRATION_ID_SIZE];
	const char *args[] = { "--log-target", "journal", "--host-name", "host-a.test", "--ca", ca,
			       "--cert",       cert,	  "--key",	 key,		NULL };
	struct vcounter_vm_info info;
	const struct entry *e;
	struct daemon_proc d;
	struct vcounter *vc;
	char want[512];
	int kvm, vm_fd, vcpu_fd, r;

	ensure_journal();
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, "host-a", "pem");
	harness_cert_path(key, sizeof(key), certs_dir, "host-a", "key");
	assert_int_equal(harness_start(&d, args), 0);

	e = expect_entry(d.pid, "MESSAGE_ID", MID_DAEMON_STARTED);
	assert_common_fields(e, "daemon/manager.c");
	assert_field(e, "PRIORITY", "6");
	assert_field(e, "CODE_FUNC", "vcd_new");
	snprintf(want, sizeof(want), "vcounterd 0.1.0 on host-a.test: vmm socket %s, peer link off",
		 d.vmm_socket);
	assert_field(e, "MESSAGE", want);
	assert_null(get(e, "VCOUNTERD_VM"));
	/* Nothing on stderr: the journal took it all. */
	assert_int_equal(daemon_lines(d.log_path), 0);

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		fprintf(stderr, "note: /dev/kvm unavailable (%s): no VM or migration entries\n",
			strerror(errno));
	} else {
		vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
		assert_true(vm_fd >= 0);
		vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
		assert_true(vcpu_fd >= 0);
		snprintf(vm_id, sizeof(vm_id), "journal-vm-%d", (int)getpid());
		assert_int_equal(vcounter_connect(d.vmm_socket, &vc), 0);
		assert_int_equal(vcounter_register_vm(vc, vm_id, VCOUNTER_ROLE_SOURCE, vm_fd,
						      &vcpu_fd, 1, &info),
				 0);

		/* Registered: info when offsets are honoured, warning when not. */
		e = expect_entry(d.pid, "MESSAGE_ID", MID_VM_REGISTERED);
		assert_common_fields(e, "daemon/vmm_server.c");
		assert_field(e, "VCOUNTERD_VM", vm_id);
		assert_field(e, "VCOUNTERD_ROLE", "source");
		assert_field(e, "VCOUNTERD_STEP", "register");
		assert_field(e, "VCOUNTERD_BACKEND", info.backend);
		assert_field(e, "PRIORITY", info.offset_control ? "6" : "4");
		assert_null(get(e, "VCOUNTERD_MIGRATION"));
		snprintf(want, sizeof(want),
			 "vm=%s role=source vcpus=1 pid=%d step=register: "
			 "backend=%s",
			 vm_id, (int)getpid(), info.backend);
		assert_int_equal(strncmp(get(e, "MESSAGE"), want, strlen(want)), 0);

		/* A migration to a port where nobody listens fails at prepare. */
		r = vcounter_migrate_out(vc, vm_id, "127.0.0.1:1", "host-b.test", migration_id);
		e = expect_entry(d.pid, "MESSAGE_ID", MID_MIGRATION_FAILED);
		assert_common_fields(e, "daemon/migration_core.c");
		assert_field(e, "PRIORITY", "3");
		assert_field(e, "VCOUNTERD_VM", vm_id);
		assert_field(e, "VCOUNTERD_ROLE", "source");
		assert_field(e, "VCOUNTERD_STEP", "failed");
		assert_non_null(get(e, "VCOUNTERD_MIGRATION"));
		assert_int_equal(strlen(get(e, "VCOUNTERD_MIGRATION")), 32);
		if (r == 0)
			assert_field(e, "VCOUNTERD_MIGRATION", migration_id);
		snprintf(want, sizeof(want), "vm=%s migration=%s role=source step=failed: ", vm_id,
			 get(e, "VCOUNTERD_MIGRATION"));
		assert_int_equal(strncmp(get(e, "MESSAGE"), want, strlen(want)), 0);

		assert_int_equal(vcounter_unregister_vm(vc, vm_id), 0);
		e = expect_entry(d.pid, "MESSAGE_ID", MID_VM_UNREGISTERED);
		assert_common_fields(e, "daemon/vmm_server.c");
		assert_field(e, "VCOUNTERD_VM", vm_id);
		assert_field(e, "VCOUNTERD_STEP", "unregister");
		assert_field(e, "PRIORITY", "6");
		vcounter_close(vc);
		close(vcpu_fd);
		close(vm_fd);
		close(kvm);
	}

	kill(d.pid, SIGTERM);
	e = expect_entry(d.pid, "MESSAGE_ID", MID_DAEMON_STOPPING);
	assert_common_fields(e, "daemon/manager.c");
	assert_field(e, "MESSAGE", "signal 15: stopping");
	assert_field(e, "CODE_FUNC", "signal_cb");
	stop_signalled(&d);
}

/* log_error_errno(): ERRNO= beside the text that ends in strerror. */
static void test_failed_start_logs_errno(void **state)
{
	char dir[] = "/tmp/vcounterd-journal.XXXXXX", out[300], sock[300], want[400];
	const char *args[] = { "--log-target", "journal", "--vmm-socket", sock, "--control-socket",
			       "none",	       NULL };
	const struct entry *e;
	pid_t pid;

	ensure_journal();
	assert_non_null(mkdtemp(dir));
	snprintf(out, sizeof(out), "%s/stderr", dir);
	snprintf(sock, sizeof(sock), "%s/missing/vmm.sock", dir);
	pid = spawn_daemon(out, NULL, args);
	assert_int_equal(wait_exit(pid), 1);
	snprintf(want, sizeof(want), "cannot listen on %s: No such file or directory", sock);
	e = expect_entry(pid, "MESSAGE", want);
	assert_common_fields(e, "daemon/manager.c");
	assert_field(e, "ERRNO", "2");
	assert_field(e, "PRIORITY", "3");
	assert_null(get(e, "MESSAGE_ID"));
	unlink(out);
	rmdir(dir);
}

/* SIGHUP with a configuration file: the reload is one entry with its id. */
static void test_reload_entry(void **state)
{
	char dir[] = "/tmp/vcounterd-journal.XXXXXX", out[300], sock[300], conf[300], want[400];
	const char *args[] = { "--config", conf, "--vmm-socket", sock, "--control-socket",
			       "none",	   NULL };
	const struct entry *e;
	FILE *f;
	pid_t pid;

	ensure_journal();
	assert_non_null(mkdtemp(dir));
	snprintf(out, sizeof(out), "%s/stderr", dir);
	snprintf(sock, sizeof(sock), "%s/vmm.sock", dir);
	snprintf(conf, sizeof(conf), "%s/vcounterd.conf", dir);
	f = fopen(conf, "we");
	assert_non_null(f);
	fputs("[daemon]\nlog-target = journal\n", f);
	assert_int_equal(fclose(f), 0);

	pid = spawn_daemon(out, NULL, args);
	expect_entry(pid, "MESSAGE_ID", MID_DAEMON_STARTED);
	kill(pid, SIGHUP);
	e = expect_entry(pid, "MESSAGE_ID", MID_CONFIG_RELOADED);
	assert_common_fields(e, "daemon/reload.c");
	assert_field(e, "PRIORITY", "6");
	snprintf(want, sizeof(want), "reload: configuration %s applied, 0 settings changed", conf);
	assert_field(e, "MESSAGE", want);
	kill(pid, SIGTERM);
	assert_int_equal(wait_exit(pid), 0);
	assert_int_equal(daemon_lines(out), 0);
	unlink(conf);
	unlink(out);
	rmdir(dir);
}

/* --log-target auto: the journal exactly when stderr is JOURNAL_STREAM's. */
static void test_auto_target_follows_journal_stream(void **state)
{
	char dir[] = "/tmp/vcounterd-journal.XXXXXX", out[300], sock[300], stream[64];
	const char *args[] = { "--log-target", "auto", "--vmm-socket", sock, "--control-socket",
			       "none",	       NULL };
	struct stat st;
	pid_t pid;
	int fd;

	ensure_journal();
	assert_non_null(mkdtemp(dir));
	snprintf(out, sizeof(out), "%s/stderr", dir);
	snprintf(sock, sizeof(sock), "%s/vmm.sock", dir);
	/* The stream systemd would have connected: this file, made first. */
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	close(fd);
	snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);

	/* spawn_daemon() truncates the same file: same device and inode. */
	pid = spawn_daemon(out, stream, args);
	expect_entry(pid, "MESSAGE_ID", MID_DAEMON_STARTED);
	kill(pid, SIGTERM);
	expect_entry(pid, "MESSAGE_ID", MID_DAEMON_STOPPING);
	assert_int_equal(wait_exit(pid), 0);
	assert_int_equal(daemon_lines(out), 0);

	/* An inherited JOURNAL_STREAM of another stream: stderr lines. */
	snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino + 1);
	pid = spawn_daemon(out, stream, args);
	for (int i = 0; i < wait_ms / 10 && !file_contains(out, "info: vcounterd "); i++)
		harness_sleep_ms(10);
	assert_true(file_contains(out, "info: vcounterd "));
	kill(pid, SIGTERM);
	assert_int_equal(wait_exit(pid), 0);
	assert_true(file_contains(out, "info: signal 15: stopping"));
	/* It has exited: whatever it sent is there by now. */
	assert_null(find_entry(pid, "MESSAGE_ID", MID_DAEMON_STARTED, 500));
	unlink(out);
	rmdir(dir);
}

static int choose_mode(char *why, size_t size)
{
	const char *forced = getenv("VC_JOURNAL_MODE");

	if (forced && *forced && strcmp(forced, "host") != 0 && strcmp(forced, "private") != 0 &&
	    strcmp(forced, "standin") != 0) {
		snprintf(why, size, "VC_JOURNAL_MODE=%s: not host, private or standin", forced);
		return -EINVAL;
	}
	if (!forced || !*forced || strcmp(forced, "host") == 0) {
		if (host_journald_runs()) {
			mode = MODE_HOST;
			return 0;
		}
		if (forced && *forced) {
			snprintf(why, size, "no journald runs on this host");
			return -ENOENT;
		}
	}
	if (private_run(why, size) < 0)
		return -EPERM;
	if ((!forced || !*forced || strcmp(forced, "private") == 0) && journald_binary()) {
		mode = MODE_PRIVATE;
		return 0;
	}
	if (forced && strcmp(forced, "private") == 0) {
		snprintf(why, size, "no systemd-journald binary (Debian package systemd)");
		return -ENOENT;
	}
	mode = MODE_STANDIN;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unreachable_journal_falls_back_to_stderr),
		cmocka_unit_test(test_daemon_lifecycle_vm_and_migration_entries),
		cmocka_unit_test(test_failed_start_logs_errno),
		cmocka_unit_test(test_reload_entry),
		cmocka_unit_test(test_auto_target_follows_journal_stream),
	};
	char why[256] = "";
	int r;

	if (choose_mode(why, sizeof(why)) < 0) {
		printf("SKIP: %s: no journal to test against\n", why);
		return 77;
	}
	switch (mode) {
	case MODE_HOST:
		printf("journal: the host's journald (%s), read with journalctl _PID=\n",
		       JOURNAL_SOCKET);
		break;
	case MODE_PRIVATE:
		printf("journal: a real systemd-journald (%s, namespace instance '%s') in this "
		       "test's mount namespace, at %s there (the host's /run is untouched); read "
		       "with journalctl --namespace=%s\n",
		       journald_binary(), NAMESPACE, JOURNAL_SOCKET, NAMESPACE);
		break;
	case MODE_STANDIN:
		printf("journal: STAND-IN, not journald: a datagram socket of this test at %s in "
		       "its own mount namespace (the host's /run is untouched), native protocol "
		       "parsed here\n",
		       JOURNAL_SOCKET);
		break;
	}
	fflush(stdout);
	if (harness_wrapped())
		wait_ms = 60000; /* valgrind */
	if (harness_certs(certs_dir, sizeof(certs_dir)) < 0) {
		printf("cannot make test certificates (VC_TEST_CERTS unset?)\n");
		return 1;
	}
	r = cmocka_run_group_tests_name(mode_names[mode], tests, NULL, NULL);
	entries_clear();
	if (journald_pid > 0) {
		kill(journald_pid, SIGTERM);
		waitpid(journald_pid, NULL, 0);
	}
	if (standin_fd >= 0) {
		/* Wakes the receiver out of recvmsg(): it returns and ends. */
		shutdown(standin_fd, SHUT_RDWR);
		pthread_join(standin_thread, NULL);
		drain_standin();
		entries_clear();
		close(standin_fd);
	}
	if (!getenv("VC_TEST_CERT_DIR") && !getenv("VC_KEEP_TEST_DIRS"))
		harness_remove_tree(certs_dir);
	return r;
}
