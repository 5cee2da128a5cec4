/* test_fdstore.c - vcounterd across restarts: this test plays systemd's
 * part (systemd is not PID 1 here) with its real protocols: a NOTIFY_SOCKET
 * datagram socket taking FDSTORE=1 / FDSTOREREMOVE=1 by FDNAME with the fds
 * (SCM_RIGHTS) as systemd's service manager keeps them, and the VMM socket
 * plus the stored fds passed back by socket activation (LISTEN_FDS,
 * LISTEN_FDNAMES, LISTEN_PID; sd_listen_fds(3)). A real KVM VM registers
 * through libvcounter; the daemon is SIGKILLed and started again:
 *   1. with its fd store: the VM is back without a registration, and the
 *      VMM's next call reattaches it transparently;
 *   2. without (no systemd): the VMM's next call registers it again;
 *   3. with a corrupted state record: a warning, the VM's fds leave the
 *      store, and the VMM's next call registers it again;
 *   4. with the store, but the VMM exits before reattaching: the VM is
 *      dropped, and its fds leave the store.
 * Exit 0 pass, 77 skip (no /dev/kvm), 1 fail. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "daemon_harness.h"
#include "frame.h"
#include "vcounter/control.h"
#include "vcounter/vcounter.h"
#include "wire.h"

#define MAX_STORED 64
#define VM_ID	   "fdstore-vm:1"

static int failures;
static char dir[256];
static pid_t daemon_pid = -1;

#define CHECK(cond, ...)                                                                \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                   \
			fputc('\n', stderr);                                            \
			failures++;                                                     \
		}                                                                       \
	} while (0)

/* The service manager's fd store: (name, fd) in the order stored. */
struct store {
	char name[MAX_STORED][64];
	int fd[MAX_STORED];
	size_t n;
	bool ready;
};

static size_t store_count(const struct store *s, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n; i++)
		n += strcmp(s->name[i], name) == 0;
	return n;
}

static int store_fd(const struct store *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->name[i], name) == 0)
			return s->fd[i];
	return -1;
}

static void store_remove(struct store *s, const char *name)
{
	size_t j = 0;

	for (size_t i = 0; i < s->n; i++) {
		if (strcmp(s->name[i], name) == 0) {
			close(s->fd[i]);
			continue;
		}
		memmove(s->name[j], s->name[i], sizeof(s->name[i]));
		s->fd[j++] = s->fd[i];
	}
	s->n = j;
}

static void store_clear(struct store *s)
{
	for (size_t i = 0; i < s->n; i++)
		close(s->fd[i]);
	s->n = 0;
}

/* A VM's fds under "vm<k>", whatever k the daemon picked. */
static const char *store_vm_name(const struct store *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (strncmp(s->name[i], "vm", 2) == 0)
			return s->name[i];
	return NULL;
}

/* Take the daemon's notify messages for timeout_ms, as systemd does:
 * FDSTORE=1 keeps the fds under FDNAME (several fds may share a name),
 * FDSTOREREMOVE=1 closes every fd under FDNAME. Only from the main pid
 * (NotifyAccess=main), by SCM_CREDENTIALS. */
static void pump(int nfd, struct store *s, int timeout_ms)
{
	uint64_t end;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + (uint64_t)timeout_ms;
	for (;;) {
		struct pollfd pfd = { .fd = nfd, .events = POLLIN };
		char buf[4096], name[64] = "", tmp[64];
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(struct ucred))];
		} control;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) - 1 };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = &control,
				     .msg_controllen = sizeof(control) };
		int fds[253];
		size_t n_fds = 0;
		pid_t from = 0;
		ssize_t len;
		uint64_t now;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
		if (now >= end || poll(&pfd, 1, (int)(end - now)) != 1)
			return;
		len = recvmsg(nfd, &mh, MSG_CMSG_CLOEXEC);
		if (len < 0)
			continue;
		buf[len] = '\0';
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET)
				continue;
			if (c->cmsg_type == SCM_RIGHTS) {
				n_fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				memcpy(fds, CMSG_DATA(c), n_fds * sizeof(int));
			} else if (c->cmsg_type == SCM_CREDENTIALS) {
				struct ucred cred;

				memcpy(&cred, CMSG_DATA(c), sizeof(cred));
				from = cred.pid;
			}
		}
		CHECK(from == daemon_pid, "notify message from pid %d, daemon is %d: %.40s",
		      (int)from, (int)daemon_pid, buf);
		harness_notify_field(buf, "FDNAME", name, sizeof(name));
		if (harness_notify_field(buf, "FDSTORE", tmp, sizeof(tmp)) &&
		    strcmp(tmp, "1") == 0) {
			for (size_t i = 0; i < n_fds; i++) {
				CHECK(s->n < MAX_STORED, "store full");
				if (s->n >= MAX_STORED) {
					close(fds[i]);
					continue;
				}
				snprintf(s->name[s->n], sizeof(s->name[s->n]), "%s",
					 name[0] ? name : "stored");
				s->fd[s->n++] = fds[i];
			}
			continue;
		}
		for (size_t i = 0; i < n_fds; i++)
			close(fds[i]);
		if (harness_notify_field(buf, "FDSTOREREMOVE", tmp, sizeof(tmp)) &&
		    strcmp(tmp, "1") == 0)
			store_remove(s, name);
		if (harness_notify_field(buf, "READY", tmp, sizeof(tmp)))
			s->ready = true;
	}
}

static void path_in_dir(const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s", dir, name);
}

/* Start vcounterd as systemd would: listen_fd as "vmm", then the store's
 * fds under their names, at 3.., with LISTEN_PID set in the child. */
static void start_daemon(int listen_fd, const struct store *s, const char *notify_path,
			 const char *log_name)
{
	char exe[512], log_path[300], control[300], vmm[300];

	snprintf(exe, sizeof(exe), "%s/daemon/vcounterd", harness_build_root());
	path_in_dir(log_name, log_path, sizeof(log_path));
	path_in_dir("control.sock", control, sizeof(control));
	path_in_dir("vmm.sock", vmm, sizeof(vmm));
	unlink(control);
	daemon_pid = fork();
	if (daemon_pid < 0) {
		perror("fork");
		exit(1);
	}
	if (daemon_pid == 0) {
		int high[1 + MAX_STORED], n = 0, log;
		char names[4096] = "vmm", num[32];

		log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		dup2(log, STDERR_FILENO);
		dup2(log, STDOUT_FILENO);
		/* Out of the way first, then to 3.. in order. */
		high[n++] = fcntl(listen_fd, F_DUPFD_CLOEXEC, 100);
		for (size_t i = 0; s && i < s->n; i++) {
			high[n++] = fcntl(s->fd[i], F_DUPFD_CLOEXEC, 100);
			snprintf(names + strlen(names), sizeof(names) - strlen(names), ":%s",
				 s->name[i]);
		}
		for (int i = 0; i < n; i++)
			dup2(high[i], 3 + i); /* dup2 clears FD_CLOEXEC */
		snprintf(num, sizeof(num), "%d", n);
		setenv("LISTEN_FDS", num, 1);
		setenv("LISTEN_FDNAMES", names, 1);
		snprintf(num, sizeof(num), "%d", (int)getpid());
		setenv("LISTEN_PID", num, 1);
		unsetenv("WATCHDOG_USEC");
		if (notify_path)
			setenv("NOTIFY_SOCKET", notify_path, 1);
		else
			unsetenv("NOTIFY_SOCKET");
		execl(exe, exe, "--vmm-socket", vmm, "--control-socket", control, "--log-level",
		      "debug", (char *)NULL);
		_exit(127);
	}
}

static void kill_daemon(void)
{
	if (daemon_pid > 0) {
		kill(daemon_pid, SIGKILL);
		waitpid(daemon_pid, NULL, 0);
	}
	daemon_pid = -1;
}

static size_t log_count(const char *log_name, const char *needle)
{
	char path[300];

	path_in_dir(log_name, path, sizeof(path));
	return (size_t)harness_file_count(path, needle);
}

static void dump_log(const char *log_name)
{
	char path[300];

	path_in_dir(log_name, path, sizeof(path));
	harness_dump_file(path);
}

/* Wait for a log line (the daemon serves once it logs "vcounterd ... on"). */
static bool wait_log(const char *log_name, const char *needle, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 20) {
		if (log_count(log_name, needle) > 0)
			return true;
		usleep(20000);
	}
	return false;
}

static void wait_ready(int nfd, struct store *s, const char *log_name)
{
	if (nfd >= 0) {
		s->ready = false;
		for (int i = 0; i < 100 && !s->ready; i++)
			pump(nfd, s, 100);
		CHECK(s->ready, "no READY=1 from the daemon (%s)", log_name);
	} else {
		CHECK(wait_log(log_name, "peer link", 10000), "daemon did not start (%s)",
		      log_name);
	}
}

/* The VMs service Control lists. */
static size_t control_vm_count(const char *vm_id)
{
	struct vcounter_ctl_options o = { .timeout_ms = 5000 };
	struct vcounter_ctl *ctl = NULL;
	struct vcounter_ctl_vm *vms = NULL;
	char control[300];
	size_t n = 0, found = 0;

	path_in_dir("control.sock", control, sizeof(control));
	o.socket_path = control;
	if (vcounter_ctl_connect(&o, &ctl) < 0)
		return (size_t)-1;
	if (vcounter_ctl_list_vms(ctl, &vms, &n) == 0)
		for (size_t i = 0; i < n; i++)
			found += strcmp(vms[i].vm_id, vm_id) == 0;
	free(vms);
	vcounter_ctl_close(ctl);
	return found;
}

/* AttachVm from a process other than the VMM (same uid, another pid), on
 * the wire: the error code the daemon answers, or -1. */
static int attach_from_other_process(const char *vm_id)
{
	int pipefd[2], code = -1;
	pid_t child;

	if (pipe(pipefd) < 0)
		return -1;
	child = fork();
	if (child == 0) {
		Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply = NULL;
		Vcounter__V1__AttachVm at = VCOUNTER__V1__ATTACH_VM__INIT;
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		uint8_t *frame, buf[65536];
		const uint8_t *payload;
		size_t len, payload_len;
		ssize_t n;
		int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);

		code = -1;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%.90s/vmm.sock", dir);
		at.vm_id = (char *)vm_id;
		req.id = 1;
		req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_ATTACH_VM;
		req.attach_vm = &at;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		    wire_vmm_pack_frame(&req, &frame, &len) == 0 &&
		    send(fd, frame, len, 0) == (ssize_t)len &&
		    (n = recv(fd, buf, sizeof(buf), 0)) > 0 &&
		    frame_parse_datagram(buf, (size_t)n, VC_MAX_FRAME_BYTES, &payload,
					 &payload_len) == 0 &&
		    wire_vmm_unpack(payload, payload_len, &reply, NULL) == 0 && reply)
			code = reply->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR
				       ? (int)reply->error->code
				       : 0;
		if (write(pipefd[1], &code, sizeof(code)) != sizeof(code))
			_exit(1);
		_exit(0);
	}
	close(pipefd[1]);
	if (read(pipefd[0], &code, sizeof(code)) != sizeof(code))
		code = -1;
	close(pipefd[0]);
	waitpid(child, NULL, 0);
	return code;
}

struct kvm_vm {
	int kvm, vm, vcpu;
};

static int kvm_vm_create(struct kvm_vm *v)
{
	v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (v->kvm < 0)
		return -errno;
	v->vm = ioctl(v->kvm, KVM_CREATE_VM, 0);
	if (v->vm < 0)
		return -errno;
	v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0);
	return v->vcpu < 0 ? -errno : 0;
}

static void register_vm(struct vcounter *vc, struct kvm_vm *v)
{
	struct vcounter_vm_info info;
	int r = vcounter_register_vm(vc, VM_ID, VCOUNTER_ROLE_SOURCE, v->vm, &v->vcpu, 1, &info);

	CHECK(r == 0, "register: %s", vcounter_last_error(vc));
}

/* Scenario 1: SIGKILL, restart with the store: recovered, reattached. */
static void crash_restart_with_store(int listen_fd, int nfd, const char *notify_path,
				     struct kvm_vm *v)
{
	struct store s = { .n = 0 };
	struct vcounter *vc = NULL;
	char vmm[300], name[64];
	const char *vm_name;
	unsigned seals;
	int r;

	path_in_dir("vmm.sock", vmm, sizeof(vmm));
	start_daemon(listen_fd, NULL, notify_path, "run1.log");
	wait_ready(nfd, &s, "run1.log");
	CHECK(vcounter_connect(vmm, &vc) == 0, "connect");
	register_vm(vc, v);
	pump(nfd, &s, 300);
	vm_name = store_vm_name(&s);
	CHECK(vm_name != NULL, "no vm<k> in the fd store after registration");
	if (!vm_name)
		return;
	snprintf(name, sizeof(name), "%s", vm_name);
	CHECK(store_count(&s, name) == 2, "%zu fds under %s, expected VM + 1 vCPU",
	      store_count(&s, name), name);
	CHECK(store_count(&s, "state") == 1, "%zu state records", store_count(&s, "state"));
	seals = (unsigned)fcntl(store_fd(&s, "state"), F_GET_SEALS);
	CHECK((seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)) ==
		      (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW),
	      "state memfd seals %#x", seals);
	CHECK(log_count("run1.log", "step=register") == 1, "registered once");

	kill_daemon(); /* a crash: nothing removed from the store */
	start_daemon(listen_fd, &s, notify_path, "run2.log");
	wait_ready(nfd, &s, "run2.log");
	CHECK(log_count("run2.log", "step=recover: recovered") == 1, "no recovered line");
	CHECK(log_count("run2.log", "step=register") == 0, "a registration after restart");
	CHECK(control_vm_count(VM_ID) == 1, "service Control does not list the recovered VM");
	CHECK(store_count(&s, name) == 2, "the restart dropped %s from the store", name);

	/* Another process of the same user may not take the VM over. */
	r = attach_from_other_process(VM_ID);
	CHECK(r == VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED,
	      "AttachVm from another pid: code %d, expected PERMISSION_DENIED", r);
	r = attach_from_other_process("no-such-vm");
	CHECK(r == VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND,
	      "AttachVm of an unknown VM: code %d, expected NOT_FOUND", r);

	/* The next call finds the old connection dead, reattaches, and runs:
	 * unregister succeeds only on the connection the VM is bound to. */
	r = vcounter_unregister_vm(vc, VM_ID);
	CHECK(r == 0, "unregister after the restart: %d %s", r, vcounter_last_error(vc));
	CHECK(log_count("run2.log", "step=reattach: reattached") == 1, "no reattach line");
	CHECK(log_count("run2.log", "step=register") == 0, "re-registered instead of reattached");
	pump(nfd, &s, 300);
	CHECK(store_count(&s, name) == 0, "unregister left %s in the store", name);
	CHECK(store_count(&s, "state") == 1, "%zu state records", store_count(&s, "state"));
	if (failures) {
		dump_log("run1.log");
		dump_log("run2.log");
	}
	vcounter_close(vc);
	kill_daemon();
	store_clear(&s);
}

/* Scenario 2: no systemd (no NOTIFY_SOCKET, nothing stored): the VMM's
 * next call registers the VM again. */
static void restart_without_store(int listen_fd, struct kvm_vm *v)
{
	struct vcounter *vc = NULL;
	char vmm[300];
	int r;

	path_in_dir("vmm.sock", vmm, sizeof(vmm));
	start_daemon(listen_fd, NULL, NULL, "run3.log");
	wait_ready(-1, NULL, "run3.log");
	CHECK(vcounter_connect(vmm, &vc) == 0, "connect");
	register_vm(vc, v);
	kill_daemon();
	start_daemon(listen_fd, NULL, NULL, "run4.log");
	wait_ready(-1, NULL, "run4.log");
	CHECK(control_vm_count(VM_ID) == 0, "a VM survived a restart without a store");
	r = vcounter_unregister_vm(vc, VM_ID);
	CHECK(r == 0, "unregister after the restart: %d %s", r, vcounter_last_error(vc));
	CHECK(log_count("run4.log", "step=register") == 1, "not registered again");
	CHECK(log_count("run4.log", "step=unregister") == 1, "not unregistered");
	if (failures) {
		dump_log("run3.log");
		dump_log("run4.log");
	}
	vcounter_close(vc);
	kill_daemon();
}

/* Scenario 3: a flipped byte in the state record. */
static void corrupted_state(int listen_fd, int nfd, const char *notify_path, struct kvm_vm *v)
{
	struct store s = { .n = 0 };
	struct vcounter *vc = NULL;
	char vmm[300], name[64], buf[65536];
	const char *vm_name;
	ssize_t len;
	int r, bad;

	path_in_dir("vmm.sock", vmm, sizeof(vmm));
	start_daemon(listen_fd, NULL, notify_path, "run5.log");
	wait_ready(nfd, &s, "run5.log");
	CHECK(vcounter_connect(vmm, &vc) == 0, "connect");
	register_vm(vc, v);
	pump(nfd, &s, 300);
	vm_name = store_vm_name(&s);
	CHECK(vm_name && store_count(&s, "state") == 1, "store not filled");
	if (!vm_name || store_count(&s, "state") != 1)
		return;
	snprintf(name, sizeof(name), "%s", vm_name);
	kill_daemon();

	/* Replace the stored record by a copy with one byte flipped. */
	len = pread(store_fd(&s, "state"), buf, sizeof(buf), 0);
	CHECK(len > 40, "state record of %zd bytes", len);
	buf[len - 5] ^= 0x40;
	bad = memfd_create("corrupt", MFD_CLOEXEC);
	CHECK(write(bad, buf, (size_t)len) == len, "write");
	store_remove(&s, "state");
	snprintf(s.name[s.n], sizeof(s.name[s.n]), "state");
	s.fd[s.n++] = bad;

	start_daemon(listen_fd, &s, notify_path, "run6.log");
	wait_ready(nfd, &s, "run6.log");
	pump(nfd, &s, 300);
	CHECK(log_count("run6.log", "state record unusable") == 1, "no warning on a bad record");
	CHECK(store_count(&s, name) == 0, "%s still stored after a bad record", name);
	CHECK(control_vm_count(VM_ID) == 0, "a VM recovered from a bad record");
	r = vcounter_unregister_vm(vc, VM_ID);
	CHECK(r == 0, "unregister after the restart: %d %s", r, vcounter_last_error(vc));
	CHECK(log_count("run6.log", "step=register") == 1, "not registered again");
	pump(nfd, &s, 300);
	CHECK(store_vm_name(&s) == NULL, "%s stored after the VM was unregistered",
	      store_vm_name(&s));
	if (failures) {
		dump_log("run5.log");
		dump_log("run6.log");
	}
	vcounter_close(vc);
	kill_daemon();
	store_clear(&s);
}

/* Scenario 4: the VMM exits while its VM is detached: the daemon drops
 * the VM (it would keep the guest's memory) and its fds leave the store. */
static void vmm_exits_while_detached(int listen_fd, int nfd, const char *notify_path)
{
	struct store s = { .n = 0 };
	char vmm[300], name[64];
	const char *vm_name;
	int go[2], done[2];
	pid_t child;
	char c = 0;

	path_in_dir("vmm.sock", vmm, sizeof(vmm));
	start_daemon(listen_fd, NULL, notify_path, "run7.log");
	wait_ready(nfd, &s, "run7.log");
	if (pipe2(go, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0)
		return;
	child = fork();
	if (child == 0) {
		struct vcounter *vc = NULL;
		struct kvm_vm v;

		if (kvm_vm_create(&v) < 0 || vcounter_connect(vmm, &vc) < 0 ||
		    vcounter_register_vm(vc, "exiting-vm", VCOUNTER_ROLE_SOURCE, v.vm, &v.vcpu, 1,
					 NULL) < 0)
			_exit(1);
		c = 'r';
		if (write(done[1], &c, 1) != 1 || read(go[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	CHECK(read(done[0], &c, 1) == 1 && c == 'r', "the child VMM did not register");
	pump(nfd, &s, 300);
	vm_name = store_vm_name(&s);
	CHECK(vm_name != NULL, "no vm<k> in the store");
	snprintf(name, sizeof(name), "%s", vm_name ? vm_name : "-");
	kill_daemon();
	start_daemon(listen_fd, &s, notify_path, "run8.log");
	wait_ready(nfd, &s, "run8.log");
	CHECK(log_count("run8.log", "step=recover: recovered") == 1, "not recovered");
	c = 'x';
	CHECK(write(go[1], &c, 1) == 1, "write");
	waitpid(child, NULL, 0);
	CHECK(wait_log("run8.log", "its VMM exited before reattaching", 5000),
	      "a detached VM outlived its VMM");
	pump(nfd, &s, 300);
	CHECK(store_count(&s, name) == 0, "%s still stored after its VMM exited", name);
	if (failures) {
		dump_log("run7.log");
		dump_log("run8.log");
	}
	close(go[0]), close(go[1]), close(done[0]), close(done[1]);
	kill_daemon();
	store_clear(&s);
}

int main(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char notify_path[300], vmm[300], comm[64] = "?";
	struct kvm_vm v;
	int one = 1, nfd, listen_fd, r;
	FILE *f;

	signal(SIGPIPE, SIG_IGN);
	f = fopen("/proc/1/comm", "r");
	if (f) {
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = '\0';
		fclose(f);
	}
	printf("PID 1 is '%s'%s: this test plays the service manager (NOTIFY_SOCKET fd "
	       "store, socket activation)\n",
	       comm, strcmp(comm, "systemd") == 0 ? "" : ", not systemd");
	r = kvm_vm_create(&v);
	if (r < 0) {
		printf("SKIP: no KVM VM (/dev/kvm: %s)\n", strerror(-r));
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/vcounterd-fdstore.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	path_in_dir("notify.sock", notify_path, sizeof(notify_path));
	path_in_dir("vmm.sock", vmm, sizeof(vmm));

	nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", notify_path);
	if (nfd < 0 || bind(nfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    setsockopt(nfd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
		perror("notify socket");
		return 1;
	}
	listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", vmm);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(listen_fd, 16) < 0) {
		perror("vmm socket");
		return 1;
	}

	crash_restart_with_store(listen_fd, nfd, notify_path, &v);
	restart_without_store(listen_fd, &v);
	corrupted_state(listen_fd, nfd, notify_path, &v);
	vmm_exits_while_detached(listen_fd, nfd, notify_path);

	kill_daemon();
	if (!failures)
		harness_remove_tree(dir);
	printf("%s: %d failed checks\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
