/* test_service.c - vcounterd under systemd's protocols, with this test as the
 * service manager: sd_notify(3) on a real NOTIFY_SOCKET (READY=1 and STATUS=,
 * WATCHDOG=1 at WatchdogSec/2, RELOADING=1 then READY=1 on SIGHUP,
 * STOPPING=1), socket activation by Debian's systemd-socket-activate (named
 * vmm and control sockets, served, and none of its own made), and why the
 * unit does not set PrivateUsers=: a user namespace like it hides a VMM's
 * group from SO_PEERCRED. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
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
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include <cmocka.h>

#include "daemon_harness.h"
#include "frame.h"
#include "macro.h"
#include "unix_fd.h"
#include "vcounter/vcounter.h"
#include "wire.h"

#define DAEMON_TEST_VERSION "0.1.0"

/* Under VC_DAEMON_WRAPPER (valgrind) the daemon starts in seconds. */
static int start_timeout_ms(void)
{
	return harness_wrapped() ? 60000 : 10000;
}

static bool program_exists(const char *name)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

/* What a test started or made, undone by its teardown even when an assertion
 * ended it early (cmocka longjmps out of the test). */
static pid_t live_pids[8];
static char live_dirs[4][256];

static void live_pid(pid_t pid, bool alive)
{
	for (size_t i = 0; i < ELEMENTSOF(live_pids); i++) {
		if (alive && live_pids[i] == 0) {
			live_pids[i] = pid;
			return;
		}
		if (!alive && live_pids[i] == pid)
			live_pids[i] = 0;
	}
}

/* ---- a temporary directory per test ---- */

struct test_dir {
	char path[256];
};

static void dir_make(struct test_dir *d)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(d->path, sizeof(d->path), "%s/vcounterd-service.XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(d->path));
	for (size_t i = 0; i < ELEMENTSOF(live_dirs); i++) {
		if (!live_dirs[i][0]) {
			snprintf(live_dirs[i], sizeof(live_dirs[i]), "%s", d->path);
			break;
		}
	}
	/* The daemon in a user namespace, and clients of other uids, get in. */
	assert_int_equal(chmod(d->path, 0755), 0);
}

static void dir_remove(struct test_dir *d)
{
	if (d->path[0] && !getenv("VC_KEEP_TEST_DIRS"))
		harness_remove_tree(d->path);
	for (size_t i = 0; i < ELEMENTSOF(live_dirs); i++)
		if (strcmp(live_dirs[i], d->path) == 0)
			live_dirs[i][0] = '\0';
}

/* Per-test teardown: kill what is still running, remove what is left. */
static int teardown_leftovers(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(live_pids); i++) {
		if (live_pids[i] > 0) {
			kill(live_pids[i], SIGKILL);
			waitpid(live_pids[i], NULL, 0);
			live_pids[i] = 0;
		}
	}
	for (size_t i = 0; i < ELEMENTSOF(live_dirs); i++) {
		if (live_dirs[i][0]) {
			struct test_dir d;

			memcpy(d.path, live_dirs[i], sizeof(d.path));
			dir_remove(&d);
		}
	}
	return 0;
}

static void dir_file(const struct test_dir *d, const char *name, char *buf, size_t size)
{
	assert_true((size_t)snprintf(buf, size, "%s/%s", d->path, name) < size);
}

static bool file_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* ---- the service manager's end of NOTIFY_SOCKET ---- */

struct notify_socket {
	int fd;
	char path[300];
};

static void notify_open(struct notify_socket *n, const struct test_dir *d)
{
	struct sockaddr_un sa;
	int one = 1;

	dir_file(d, "notify", n->path, sizeof(n->path));
	assert_int_equal(unix_fd_address(n->path, &sa), 0);
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(n->fd >= 0);
	/* As systemd does: the sender's pid comes with each message, for
	 * NotifyAccess=main. */
	assert_int_equal(setsockopt(n->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	assert_int_equal(bind(n->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(chmod(n->path, 0666), 0);
}

static void notify_close(struct notify_socket *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}

/* One message within timeout_ms, NUL-terminated in buf, its sender's pid in
 * *ret_pid: 0, or -ETIMEDOUT. */
static int notify_recv(struct notify_socket *n, int timeout_ms, char *buf, size_t size,
		       pid_t *ret_pid)
{
	struct pollfd pfd = { .fd = n->fd, .events = POLLIN };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = size - 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = &control,
			     .msg_controllen = sizeof(control) };
	ssize_t len;

	if (poll(&pfd, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	len = recvmsg(n->fd, &mh, MSG_CMSG_CLOEXEC);
	assert_true(len >= 0);
	buf[len] = '\0';
	*ret_pid = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
			struct ucred cred;

			memcpy(&cred, CMSG_DATA(c), sizeof(cred));
			*ret_pid = cred.pid;
		}
	}
	return 0;
}

/* Skip WATCHDOG=1 pings until a message that starts with prefix, within
 * timeout_ms (anything else in between fails the test). It must come from
 * pid. */
static void notify_expect(struct notify_socket *n, pid_t pid, const char *prefix, int timeout_ms,
			  char *buf, size_t size)
{
	int64_t deadline = harness_now_ms() + timeout_ms;

	for (;;) {
		int64_t now = harness_now_ms();
		pid_t from;

		if (now >= deadline ||
		    notify_recv(n, (int)(deadline - now), buf, size, &from) < 0) {
			fail_msg("no '%s' on NOTIFY_SOCKET within %d ms", prefix, timeout_ms);
		}
		if (strcmp(buf, "WATCHDOG=1") == 0 && strncmp(prefix, "WATCHDOG=1", 10) != 0)
			continue;
		/* The fd store (test_fdstore.c tests it): not this test's subject. */
		if (strncmp(buf, "FDSTORE", 7) == 0 && strncmp(prefix, "FDSTORE", 7) != 0)
			continue;
		if (strncmp(buf, prefix, strlen(prefix)) != 0)
			fail_msg("expected '%s...' on NOTIFY_SOCKET, got '%s'", prefix, buf);
		assert_int_equal(from, pid); /* NotifyAccess=main */
		return;
	}
}

/* ---- starting the daemon as a service manager would ---- */

struct daemon {
	pid_t pid;
	char log_path[300];
};

struct spawn_opts {
	/* Before the daemon: a launcher (systemd-socket-activate ... --). */
	const char *const *launcher;
	const char *const *args; /* the daemon's own */
	const char *notify_socket;
	const char *watchdog_usec;
	bool watchdog_pid_self; /* WATCHDOG_PID= the daemon's pid */
	const char *watchdog_pid;
	/* Run in a new user namespace mapping only root (uid and gid 0), as
	 * PrivateUsers=yes maps only root and the service's own user. */
	bool userns_root_only;
};

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -EIO;
}

static void spawn(struct daemon *d, const struct test_dir *dir, const char *log_name,
		  const struct spawn_opts *o)
{
	char exe[512], wrapper_buf[512], *save = NULL;
	const char *argv[96], *wrapper = getenv("VC_DAEMON_WRAPPER");
	int to_child[2], to_parent[2];
	size_t n = 0;
	char c;

	snprintf(exe, sizeof(exe), "%s/daemon/vcounterd", harness_build_root());
	dir_file(dir, log_name, d->log_path, sizeof(d->log_path));
	for (size_t i = 0; o->launcher && o->launcher[i]; i++)
		argv[n++] = o->launcher[i];
	if (wrapper && *wrapper) {
		snprintf(wrapper_buf, sizeof(wrapper_buf), "%s", wrapper);
		for (char *tok = strtok_r(wrapper_buf, " ", &save); tok && n < 40;
		     tok = strtok_r(NULL, " ", &save))
			argv[n++] = tok;
	}
	argv[n++] = exe;
	for (size_t i = 0; o->args && o->args[i] && n < 94; i++)
		argv[n++] = o->args[i];
	argv[n] = NULL;

	assert_int_equal(pipe2(to_child, O_CLOEXEC), 0);
	assert_int_equal(pipe2(to_parent, O_CLOEXEC), 0);
	d->pid = fork();
	assert_true(d->pid >= 0);
	if (d->pid > 0)
		live_pid(d->pid, true);
	if (d->pid == 0) {
		int log = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		char pid[32];

		if (log >= 0) {
			dup2(log, STDERR_FILENO);
			dup2(log, STDOUT_FILENO);
		}
		unsetenv("NOTIFY_SOCKET");
		unsetenv("WATCHDOG_USEC");
		unsetenv("WATCHDOG_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDNAMES");
		if (o->notify_socket)
			setenv("NOTIFY_SOCKET", o->notify_socket, 1);
		if (o->watchdog_usec)
			setenv("WATCHDOG_USEC", o->watchdog_usec, 1);
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		if (o->watchdog_pid_self)
			setenv("WATCHDOG_PID", pid, 1);
		else if (o->watchdog_pid)
			setenv("WATCHDOG_PID", o->watchdog_pid, 1);
		if (o->userns_root_only) {
			/* The parent writes the maps (as systemd's helper does). */
			if (unshare(CLONE_NEWUSER) < 0)
				_exit(126);
			c = 'u';
			if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1)
				_exit(126);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(to_child[0]);
	close(to_parent[1]);
	if (o->userns_root_only) {
		char path[64];

		assert_int_equal(read(to_parent[0], &c, 1), 1);
		snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)d->pid);
		assert_int_equal(write_file(path, "0 0 1\n"), 0);
		snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)d->pid);
		assert_int_equal(write_file(path, "0 0 1\n"), 0);
		c = 'g';
		assert_int_equal(write(to_child[1], &c, 1), 1);
	}
	close(to_child[1]);
	close(to_parent[0]);
}

static void dump_log(const struct daemon *d)
{
	harness_dump_file(d->log_path);
}

static bool log_contains(const struct daemon *d, const char *needle)
{
	return harness_file_count(d->log_path, needle) > 0;
}

/* Wait for the daemon to exit by itself: its exit status, or -1 (killed). */
static int wait_exit(struct daemon *d, int timeout_ms)
{
	int status = 0;

	for (int waited = 0; waited < timeout_ms; waited += 10) {
		pid_t r = waitpid(d->pid, &status, WNOHANG);

		if (r == d->pid) {
			live_pid(d->pid, false);
			d->pid = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		}
		harness_sleep_ms(10);
	}
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &status, 0);
	live_pid(d->pid, false);
	d->pid = 0;
	return -1;
}

/* SIGTERM; the exit status (under VC_DAEMON_WRAPPER: nonzero if the tool
 * found errors). */
static int stop(struct daemon *d)
{
	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	return wait_exit(d, start_timeout_ms());
}

/* ---- the VMM socket, raw: a status request ---- */

/* A status request on a fresh connection: the reply (free with
 * wire_vmm_free), or NULL when none came within timeout_ms. No cmocka
 * assertion: forked clients call it too. */
static Vcounter__V1__VmmMessage *vmm_status(const char *path, uint64_t id, int timeout_ms)
{
	static uint8_t buf[FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES];
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply = NULL;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;
	int fd = unix_fd_connect(path, SOCK_SEQPACKET), fds[UNIX_FD_MAX_FDS];
	struct pollfd pfd = { .events = POLLIN };
	size_t n_fds = 0, len;
	const uint8_t *payload;
	uint8_t *frame;
	ssize_t n;

	if (fd < 0)
		return NULL;
	req.id = id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	if (wire_vmm_pack_frame(&req, &frame, &len) < 0) {
		close(fd);
		return NULL;
	}
	/* A refused connection has its Error queued and is closed: the send
	 * may fail (EPIPE), the Error is still there to read. */
	(void)unix_fd_send(fd, frame, len, NULL, 0);
	free(frame);
	pfd.fd = fd;
	if (poll(&pfd, 1, timeout_ms) == 1) {
		n = unix_fd_recv(fd, buf, sizeof(buf), fds, &n_fds);
		/* Closed with our request unread: the first read reports the
		 * reset (sk_err, unix_release_sock), the next the Error. */
		if (n == -ECONNRESET)
			n = unix_fd_recv(fd, buf, sizeof(buf), fds, &n_fds);
		unix_fd_close_all(fds, n_fds);
		if (n > 0 &&
		    frame_parse_datagram(buf, (size_t)n, VC_MAX_FRAME_BYTES, &payload, &len) == 0)
			(void)wire_vmm_unpack(payload, len, &reply, NULL);
	}
	close(fd);
	return reply;
}

/* A status request the daemon answers with its version. */
static void assert_vmm_serves(const char *path, int timeout_ms)
{
	Vcounter__V1__VmmMessage *reply = vmm_status(path, 7, timeout_ms);

	assert_non_null(reply);
	assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY);
	assert_int_equal(reply->id, 7);
	assert_string_equal(reply->status_reply->version, DAEMON_TEST_VERSION);
	wire_vmm_free(reply);
}

/* `vcounterctl --socket path --json status`, the real binary: its exit
 * status; stdout into out. */
static int vcounterctl_status(const char *path, char *out, size_t size)
{
	char exe[512];
	int p[2], status;
	size_t len = 0;
	ssize_t n;
	pid_t pid;

	snprintf(exe, sizeof(exe), "%s/client/vcounterctl", harness_build_root());
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		execl(exe, exe, "--socket", path, "--timeout", "10000", "--json", "status",
		      (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	while (len + 1 < size && (n = read(p[0], out + len, size - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- sd_notify ---- */

/* One daemon for the notify tests, in order: ready, watchdog, status,
 * reload, stop. */
static struct test_dir notify_dir;
static struct notify_socket notify_sock = { .fd = -1 };
static struct daemon notify_daemon;
static char notify_vmm_socket[300], notify_control_socket[300];

#define WATCHDOG_USEC 600000 /* pings every 300 ms */

static int notify_group_setup(void **state)
{
	static char port_file[300];
	static const char *args[16];
	size_t n = 0;

	dir_make(&notify_dir);
	notify_open(&notify_sock, &notify_dir);
	dir_file(&notify_dir, "vmm.sock", notify_vmm_socket, sizeof(notify_vmm_socket));
	dir_file(&notify_dir, "control.sock", notify_control_socket, sizeof(notify_control_socket));
	dir_file(&notify_dir, "port", port_file, sizeof(port_file));
	args[n++] = "--vmm-socket";
	args[n++] = notify_vmm_socket;
	args[n++] = "--control-socket";
	args[n++] = notify_control_socket;
	args[n++] = "--log-level";
	args[n++] = "debug";
	args[n] = NULL;
	spawn(&notify_daemon, &notify_dir, "vcounterd.log",
	      &(struct spawn_opts){ .args = args,
				    .notify_socket = notify_sock.path,
				    .watchdog_usec = "600000",
				    .watchdog_pid_self = true });
	return 0;
}

static int notify_group_teardown(void **state)
{
	if (notify_daemon.pid > 0) {
		dump_log(&notify_daemon);
		stop(&notify_daemon);
	}
	notify_close(&notify_sock);
	dir_remove(&notify_dir);
	return 0;
}

static void test_ready_comes_with_a_status_line(void **state)
{
	char msg[1024], status[1024], want[1024];

	notify_expect(&notify_sock, notify_daemon.pid, "READY=1", start_timeout_ms(), msg,
		      sizeof(msg));
	assert_non_null(harness_notify_field(msg, "STATUS", status, sizeof(status)));
	snprintf(want, sizeof(want),
		 "serving 0 VMs, 0 migrations running, peer link off, control on %s",
		 notify_control_socket);
	assert_string_equal(status, want);
	/* READY=1 means serving: the VMM socket answers at once. */
	assert_vmm_serves(notify_vmm_socket, 5000);
}

static void test_watchdog_pings_every_half_period(void **state)
{
	const int64_t window_ms = 3000, period_ms = WATCHDOG_USEC / 2000;
	int64_t end = harness_now_ms() + window_ms;
	unsigned pings = 0;
	char msg[256];
	pid_t from;

	while (harness_now_ms() < end) {
		if (notify_recv(&notify_sock, (int)(end - harness_now_ms()), msg, sizeof(msg),
				&from) < 0)
			break;
		if (strcmp(msg, "WATCHDOG=1") == 0) {
			assert_int_equal(from, notify_daemon.pid);
			pings++;
		}
	}
	/* 10 expected: a loop turn late or early is fine, a stalled or
	 * racing timer is not. */
	fprintf(stderr, "%u WATCHDOG=1 in %" PRId64 " ms (every %" PRId64 " ms expected)\n", pings,
		window_ms, period_ms);
	assert_true(pings >= window_ms / period_ms - 3);
	assert_true(pings <= window_ms / period_ms + 2);
}

static void test_status_follows_registrations(void **state)
{
	struct vcounter *vc = NULL;
	struct vcounter_vm_info info;
	char msg[1024], status[1024];
	int kvm, vm_fd, vcpu_fd;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		fprintf(stderr, "SKIP registration part: /dev/kvm: %s\n", strerror(errno));
		skip();
	}
	vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(vm_fd >= 0);
	vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0UL);
	assert_true(vcpu_fd >= 0);

	assert_int_equal(vcounter_connect(notify_vmm_socket, &vc), 0);
	assert_int_equal(
		vcounter_register_vm(vc, "svc-vm", VCOUNTER_ROLE_TARGET, vm_fd, &vcpu_fd, 1, &info),
		0);
	/* At most SERVICE_STATUS_INTERVAL_MS (1 s) later. */
	notify_expect(&notify_sock, notify_daemon.pid, "STATUS=serving 1 VM,", 3000, msg,
		      sizeof(msg));
	assert_non_null(harness_notify_field(msg, "STATUS", status, sizeof(status)));
	assert_non_null(strstr(status, "serving 1 VM, 0 migrations running, peer link off"));

	assert_int_equal(vcounter_unregister_vm(vc, "svc-vm"), 0);
	notify_expect(&notify_sock, notify_daemon.pid, "STATUS=serving 0 VMs,", 3000, msg,
		      sizeof(msg));
	vcounter_close(vc);
	close(vcpu_fd);
	close(vm_fd);
	close(kvm);
}

static void test_sighup_sends_reloading_then_ready(void **state)
{
	char msg[1024], field[256];
	struct timespec ts;
	uint64_t sent_us, now_us;

	assert_int_equal(kill(notify_daemon.pid, SIGHUP), 0);
	notify_expect(&notify_sock, notify_daemon.pid, "RELOADING=1", 10000, msg, sizeof(msg));
	/* systemd >= 253 matches MONOTONIC_USEC= with its own clock: the
	 * daemon's CLOCK_MONOTONIC, now. */
	assert_non_null(harness_notify_field(msg, "MONOTONIC_USEC", field, sizeof(field)));
	sent_us = strtoull(field, NULL, 10);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	assert_true(sent_us <= now_us && now_us - sent_us < 10000000);
	notify_expect(&notify_sock, notify_daemon.pid, "READY=1", 10000, msg, sizeof(msg));
	assert_non_null(harness_notify_field(msg, "STATUS", field, sizeof(field)));
	assert_non_null(strstr(field, "serving 0 VMs"));
	/* The reload went through the configuration's reload, not around it. */
	assert_true(log_contains(&notify_daemon, "reload: configuration"));
	assert_vmm_serves(notify_vmm_socket, 5000);
}

static void test_sigterm_sends_stopping(void **state)
{
	char msg[1024];
	pid_t pid = notify_daemon.pid;

	assert_int_equal(kill(pid, SIGTERM), 0);
	notify_expect(&notify_sock, pid, "STOPPING=1", 10000, msg, sizeof(msg));
	assert_int_equal(wait_exit(&notify_daemon, start_timeout_ms()), 0);
}

/* Not this process's watchdog (WATCHDOG_PID another pid), or none: no pings,
 * but READY=1 all the same. */
static void test_no_watchdog_pings_when_not_asked(void **state)
{
	const char *watchdog_pids[] = { "1", NULL };
	struct test_dir dir;
	struct notify_socket ns;
	char vmm[300], control[300], msg[1024];

	for (size_t i = 0; i < ELEMENTSOF(watchdog_pids); i++) {
		const char *args[] = { "--vmm-socket", vmm, "--control-socket", control, NULL };
		struct daemon d;
		int64_t end;
		pid_t from;

		dir_make(&dir);
		notify_open(&ns, &dir);
		dir_file(&dir, "vmm.sock", vmm, sizeof(vmm));
		dir_file(&dir, "control.sock", control, sizeof(control));
		spawn(&d, &dir, "vcounterd.log",
		      &(struct spawn_opts){ .args = args,
					    .notify_socket = ns.path,
					    .watchdog_usec = watchdog_pids[i] ? "200000" : NULL,
					    .watchdog_pid = watchdog_pids[i] });
		notify_expect(&ns, d.pid, "READY=1", start_timeout_ms(), msg, sizeof(msg));
		end = harness_now_ms() + 1000; /* 10 pings if it pinged */
		while (harness_now_ms() < end && notify_recv(&ns, (int)(end - harness_now_ms()),
							     msg, sizeof(msg), &from) == 0)
			assert_string_not_equal(msg, "WATCHDOG=1");
		assert_int_equal(stop(&d), 0);
		notify_close(&ns);
		dir_remove(&dir);
	}
}

/* ---- socket activation ---- */

static void skip_without_socket_activate(void)
{
	if (!program_exists("systemd-socket-activate")) {
		fprintf(stderr, "SKIP: systemd-socket-activate is missing (Debian package "
				"systemd)\n");
		skip();
	}
}

static void wait_for_file(const char *path, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms && !file_exists(path); waited += 10)
		harness_sleep_ms(10);
	assert_true(file_exists(path));
}

/* systemd-socket-activate names every socket it opens alike, and --seqpacket
 * is for all of them: one opens the VMM socket (SOCK_SEQPACKET) and execs a
 * second, which passes it on with its own control socket (SOCK_STREAM) and
 * names both, as systemd does for vcounterd.socket and
 * vcounterd-control.socket. Each execs in place: the daemon keeps the pid. */
static void test_socket_activation_serves_passed_sockets(void **state)
{
	struct test_dir dir;
	struct notify_socket ns;
	struct daemon d;
	char vmm[300], control[300], own_dir[300], own_vmm[320], own_control[320];
	char msg[1024], status[1024], out[8192];

	skip_without_socket_activate();
	dir_make(&dir);
	notify_open(&ns, &dir);
	dir_file(&dir, "vmm.sock", vmm, sizeof(vmm));
	dir_file(&dir, "control.sock", control, sizeof(control));
	dir_file(&dir, "own", own_dir, sizeof(own_dir));
	assert_int_equal(mkdir(own_dir, 0755), 0);
	snprintf(own_vmm, sizeof(own_vmm), "%s/vmm.sock", own_dir);
	snprintf(own_control, sizeof(own_control), "%s/control.sock", own_dir);
	{
		const char *launcher[] = { "systemd-socket-activate",
					   "--seqpacket",
					   "-l",
					   vmm,
					   "-E",
					   "NOTIFY_SOCKET",
					   "--",
					   "systemd-socket-activate",
					   "-l",
					   control,
					   "--fdname=vmm:control",
					   "-E",
					   "NOTIFY_SOCKET",
					   "--",
					   NULL };
		/* Paths of its own that it must not use. */
		const char *args[] = {
			"--vmm-socket", own_vmm, "--control-socket", own_control, "--log-level",
			"debug",	NULL
		};

		spawn(&d, &dir, "vcounterd.log",
		      &(struct spawn_opts){
			      .launcher = launcher, .args = args, .notify_socket = ns.path });
	}
	/* Activation on demand: the first VMM connection starts the daemon,
	 * which answers it. */
	wait_for_file(vmm, 5000);
	assert_vmm_serves(vmm, start_timeout_ms());
	notify_expect(&ns, d.pid, "READY=1", start_timeout_ms(), msg, sizeof(msg));
	assert_non_null(harness_notify_field(msg, "STATUS", status, sizeof(status)));
	assert_non_null(strstr(status, control));

	/* The control API on the passed stream socket, to the real vcounterctl. */
	if (vcounterctl_status(control, out, sizeof(out)) != 0)
		dump_log(&d);
	assert_non_null(strstr(out, "\"version\":\"" DAEMON_TEST_VERSION "\""));

	/* No socket of its own. */
	assert_false(file_exists(own_vmm));
	assert_false(file_exists(own_control));
	snprintf(msg, sizeof(msg), "vmm socket %s,", vmm);
	assert_true(log_contains(&d, msg));

	/* A reload keeps the passed sockets. */
	assert_int_equal(kill(d.pid, SIGHUP), 0);
	notify_expect(&ns, d.pid, "RELOADING=1", 10000, msg, sizeof(msg));
	notify_expect(&ns, d.pid, "READY=1", 10000, msg, sizeof(msg));
	assert_vmm_serves(vmm, 5000);
	assert_int_equal(vcounterctl_status(control, out, sizeof(out)), 0);

	assert_int_equal(stop(&d), 0);
	/* The sockets were systemd's (here: the launcher's) to remove. */
	assert_false(file_exists(own_vmm));
	notify_close(&ns);
	dir_remove(&dir);
}

/* A passed socket the daemon cannot place: it exits 1 and says why. */
static void expect_activation_refused(const char *const *launcher_opts, const char *sock_name,
				      bool seqpacket, const char *why)
{
	struct test_dir dir;
	struct daemon d;
	char sock[300], vmm[300];
	const char *launcher[16];
	const char *args[] = { "--vmm-socket", vmm, "--control-socket", "none", NULL };
	size_t n = 0;
	int fd;

	dir_make(&dir);
	dir_file(&dir, sock_name, sock, sizeof(sock));
	dir_file(&dir, "own-vmm.sock", vmm, sizeof(vmm));
	launcher[n++] = "systemd-socket-activate";
	if (seqpacket)
		launcher[n++] = "--seqpacket";
	launcher[n++] = "-l";
	launcher[n++] = sock;
	for (size_t i = 0; launcher_opts[i]; i++)
		launcher[n++] = launcher_opts[i];
	launcher[n++] = "--";
	launcher[n] = NULL;
	spawn(&d, &dir, "vcounterd.log",
	      &(struct spawn_opts){ .launcher = launcher, .args = args });
	wait_for_file(sock, 5000);
	/* Any connection activates. */
	fd = unix_fd_connect(sock, seqpacket ? SOCK_SEQPACKET : SOCK_STREAM);
	assert_true(fd >= 0);
	if (wait_exit(&d, start_timeout_ms()) != 1 || !log_contains(&d, why))
		dump_log(&d);
	close(fd);
	assert_true(log_contains(&d, why));
	assert_false(file_exists(vmm));
	dir_remove(&dir);
}

static void test_socket_activation_refuses_unknown_name(void **state)
{
	const char *opts[] = { "--fdname=vmm-socket", NULL };

	skip_without_socket_activate();
	expect_activation_refused(opts, "x.sock", true,
				  "fd 3 is named 'vmm-socket': vcounterd takes 'vmm'");
}

static void test_socket_activation_refuses_unnamed(void **state)
{
	const char *opts[] = { NULL };

	skip_without_socket_activate();
	/* No FileDescriptorName=: systemd names it after the socket unit;
	 * systemd-socket-activate passes no names ("unknown"). */
	expect_activation_refused(opts, "x.sock", true, "fd 3 is named 'unknown'");
}

static void test_socket_activation_refuses_stream_as_vmm(void **state)
{
	const char *opts[] = { "--fdname=vmm", NULL };

	skip_without_socket_activate();
	expect_activation_refused(opts, "vmm.sock", false,
				  "fd 3 named 'vmm' is not a listening AF_UNIX SOCK_SEQPACKET");
}

/* ---- why not PrivateUsers=yes ---- */

/* A VMM of another uid and group (as VMMs of group kvm are) asks for status
 * on path: 0 answered, -EPERM refused. */
static int status_as(const char *path, uid_t uid, gid_t gid)
{
	int p[2], status;
	pid_t pid;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		Vcounter__V1__VmmMessage *reply;
		char verdict = 'c';

		if (setgroups(0, NULL) == 0 && setresgid(gid, gid, gid) == 0 &&
		    setresuid(uid, uid, uid) == 0) {
			verdict = 'x';
			reply = vmm_status(path, 9, 5000);
			if (reply &&
			    reply->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY)
				verdict = 'y';
			else if (reply &&
				 reply->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR &&
				 reply->error->code ==
					 VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED)
				verdict = 'n';
			if (reply)
				wire_vmm_free(reply);
		}
		_exit(write(p[1], &verdict, 1) == 1 ? 0 : 1);
	}
	close(p[1]);
	{
		char verdict = '?';

		assert_int_equal(read(p[0], &verdict, 1), 1);
		close(p[0]);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (verdict != 'y' && verdict != 'n')
			fprintf(stderr, "uid %u gid %u: no status reply nor refusal (%c)\n",
				(unsigned)uid, (unsigned)gid, verdict);
		assert_true(verdict == 'y' || verdict == 'n');
		return verdict == 'y' ? 0 : -EPERM;
	}
}

static void test_private_users_would_refuse_vmms_of_a_group(void **state)
{
	const uid_t vmm_uid = 4242;
	const gid_t vmm_gid = 4242;
	struct test_dir dir;
	struct notify_socket ns;
	char vmm[300], msg[1024];
	const char *args[] = { "--vmm-socket", vmm,	      "--control-socket",
			       "none",	       "--allow-gid", "4242",
			       "--log-level",  "debug",	      NULL };

	if (geteuid() != 0) {
		fprintf(stderr, "SKIP: needs root (a VMM of another uid, user namespace maps)\n");
		skip();
	}
	for (int userns = 0; userns <= 1; userns++) {
		struct daemon d;

		dir_make(&dir);
		notify_open(&ns, &dir);
		dir_file(&dir, "vmm.sock", vmm, sizeof(vmm));
		spawn(&d, &dir, "vcounterd.log",
		      &(struct spawn_opts){
			      .args = args, .notify_socket = ns.path, .userns_root_only = userns });
		notify_expect(&ns, d.pid, "READY=1", start_timeout_ms(), msg, sizeof(msg));
		assert_int_equal(chmod(vmm, 0666), 0);
		if (!userns) {
			/* Allowed by --allow-gid, as group kvm would be. */
			assert_int_equal(status_as(vmm, vmm_uid, vmm_gid), 0);
		} else {
			/* Under PrivateUsers=yes's mapping SO_PEERCRED says
			 * nobody/nogroup: the same VMM is refused. */
			assert_int_equal(status_as(vmm, vmm_uid, vmm_gid), -EPERM);
			assert_true(log_contains(&d, "uid=65534 gid=65534: request 0 refused: VMM "
						     "connection refused: uid/gid not allowed"));
		}
		assert_int_equal(stop(&d), 0);
		notify_close(&ns);
		dir_remove(&dir);
	}
}

int main(void)
{
	const struct CMUnitTest notify_tests[] = {
		cmocka_unit_test(test_ready_comes_with_a_status_line),
		cmocka_unit_test(test_watchdog_pings_every_half_period),
		cmocka_unit_test(test_status_follows_registrations),
		cmocka_unit_test(test_sighup_sends_reloading_then_ready),
		cmocka_unit_test(test_sigterm_sends_stopping),
	};
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_no_watchdog_pings_when_not_asked,
					  teardown_leftovers),
		cmocka_unit_test_teardown(test_socket_activation_serves_passed_sockets,
					  teardown_leftovers),
		cmocka_unit_test_teardown(test_socket_activation_refuses_unknown_name,
					  teardown_leftovers),
		cmocka_unit_test_teardown(test_socket_activation_refuses_unnamed,
					  teardown_leftovers),
		cmocka_unit_test_teardown(test_socket_activation_refuses_stream_as_vmm,
					  teardown_leftovers),
		cmocka_unit_test_teardown(test_private_users_would_refuse_vmms_of_a_group,
					  teardown_leftovers),
	};
	int failed;

	failed = cmocka_run_group_tests_name("sd_notify", notify_tests, notify_group_setup,
					     notify_group_teardown);
	failed += cmocka_run_group_tests_name("service", tests, NULL, NULL);
	return failed;
}
