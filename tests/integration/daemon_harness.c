/* daemon_harness.c - real vcounterd processes for integration tests. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "clockns.h"
#include "daemon_harness.h"
#include "kvm_x86.h"
#include "macro.h"
#include "unix_fd.h"

/* The daemons' RLIMIT_NOFILE, at least (harness_spawn). */
#define HARNESS_NOFILE 65536

const char *harness_build_root(void)
{
	const char *r = getenv("VC_BUILD_ROOT");

	return r ? r : ".";
}

int harness_certs(char *ret_dir, size_t size)
{
	const char *script = getenv("VC_TEST_CERTS");
	const char *tmp = getenv("TMPDIR");
	const char *ready = getenv("VC_TEST_CERT_DIR");
	char cmd[1024];

	/* Made beforehand where openssl is missing (the nested-KVM rig). */
	if (ready) {
		snprintf(ret_dir, size, "%s", ready);
		return 0;
	}
	if (!script)
		return -ENOENT;
	snprintf(ret_dir, size, "%s/vcounterd-certs.XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(ret_dir))
		return -errno;
	snprintf(cmd, sizeof(cmd), "sh '%s' '%s'", script, ret_dir);
	return system(cmd) == 0 ? 0 : -EIO;
}

int harness_read_port(const char *path)
{
	FILE *f = fopen(path, "re");
	int port = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%d", &port) != 1 || port <= 0)
		port = -1;
	fclose(f);
	return port;
}

int harness_wait_port(const char *path, int timeout_ms)
{
	int64_t deadline = harness_now_ms() + timeout_ms;

	for (;;) {
		int port = harness_read_port(path);

		if (port > 0)
			return port;
		if (harness_now_ms() >= deadline)
			return -ETIMEDOUT;
		harness_sleep_ms(5);
	}
}

size_t harness_put_varint(uint8_t *out, uint64_t v)
{
	size_t n = 0;

	do {
		out[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			out[n] |= 0x80;
		n++;
	} while (v);
	return n;
}

void harness_remove_tree(const char *dir)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

void harness_cert_path(char *buf, size_t size, const char *dir, const char *name, const char *ext)
{
	snprintf(buf, size, "%s/%s.%s", dir, name, ext);
}

int64_t harness_now_ms(void)
{
	return (int64_t)(clock_ns(CLOCK_MONOTONIC) / 1000000);
}

void harness_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static bool socket_accepts(const char *path)
{
	int fd = unix_fd_connect(path, SOCK_SEQPACKET);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

bool harness_wrapped(void)
{
	const char *wrapper = getenv("VC_DAEMON_WRAPPER");

	return wrapper && *wrapper;
}

pid_t harness_spawn(const char *log_path, const char *journal_stream, const char *const *args)
{
	char exe[512], wrapper_buf[512], *save = NULL;
	const char *argv[80];
	size_t n = 0;
	pid_t pid;

	snprintf(exe, sizeof(exe), "%s/daemon/vcounterd", harness_build_root());
	/* The tool's exit status then tells. */
	if (harness_wrapped()) {
		snprintf(wrapper_buf, sizeof(wrapper_buf), "%s", getenv("VC_DAEMON_WRAPPER"));
		for (char *tok = strtok_r(wrapper_buf, " ", &save); tok && n < 16;
		     tok = strtok_r(NULL, " ", &save))
			argv[n++] = tok;
	}
	argv[n++] = exe;
	for (size_t i = 0; args[i]; i++) {
		if (n + 1 >= ELEMENTSOF(argv))
			return -E2BIG;
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		struct rlimit nofile;

		if (log < 0)
			_exit(126);
		dup2(log, STDERR_FILENO);
		dup2(log, STDOUT_FILENO);
		if (journal_stream && *journal_stream)
			setenv("JOURNAL_STREAM", journal_stream, 1);
		else if (journal_stream)
			unsetenv("JOURNAL_STREAM");
		/* As vcounterd.service's LimitNOFILE= does, if not as far: with a
		 * shell's 1024 (the rig's), the VMs of hundreds of vCPUs the tests
		 * register in several messages at once do not fit. */
		if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < HARNESS_NOFILE) {
			struct rlimit want = { .rlim_cur = HARNESS_NOFILE,
					       .rlim_max = HARNESS_NOFILE };

			if (nofile.rlim_max > HARNESS_NOFILE)
				want.rlim_max = nofile.rlim_max;
			/* Raising the hard limit takes root; else up to it. */
			if (setrlimit(RLIMIT_NOFILE, &want) < 0) {
				nofile.rlim_cur = nofile.rlim_max;
				(void)setrlimit(RLIMIT_NOFILE, &nofile);
			}
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

int harness_start(struct daemon_proc *d, const char *const *extra_args)
{
	const char *tmp = getenv("TMPDIR");
	char port_file[320];
	const char *argv[64];
	bool listening = false;
	int wait_rounds = harness_wrapped() ? 3000 : 500; /* slow start under valgrind */
	size_t n = 0;

	memset(d, 0, sizeof(*d));
	d->peer_port = -1;
	snprintf(d->dir, sizeof(d->dir), "%s/vcounterd-test.XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(d->dir))
		return -errno;
	snprintf(d->vmm_socket, sizeof(d->vmm_socket), "%s/vmm.sock", d->dir);
	snprintf(d->control_socket, sizeof(d->control_socket), "%s/control.sock", d->dir);
	snprintf(d->log_path, sizeof(d->log_path), "%s/vcounterd.log", d->dir);
	snprintf(port_file, sizeof(port_file), "%s/port", d->dir);
	argv[n++] = "--vmm-socket";
	argv[n++] = d->vmm_socket;
	argv[n++] = "--control-socket";
	argv[n++] = d->control_socket;
	argv[n++] = "--port-file";
	argv[n++] = port_file;
	argv[n++] = "--log-level";
	argv[n++] = "debug";
	for (size_t i = 0; extra_args && extra_args[i] && n < 62; i++) {
		if (strcmp(extra_args[i], "--listen") == 0)
			listening = true;
		argv[n++] = extra_args[i];
	}
	argv[n] = NULL;

	d->pid = harness_spawn(d->log_path, NULL, argv);
	if (d->pid < 0)
		return d->pid;
	for (int i = 0; i < wait_rounds; i++) {
		struct stat st;

		if (!harness_alive(d))
			break;
		/* The control socket is set up after the VMM socket: ready
		 * when both are (the daemon reports READY=1 only then). */
		if (socket_accepts(d->vmm_socket) && stat(d->control_socket, &st) == 0 &&
		    S_ISSOCK(st.st_mode)) {
			if (!listening)
				return 0;
			d->peer_port = harness_read_port(port_file);
			if (d->peer_port > 0)
				return 0;
		}
		harness_sleep_ms(10);
	}
	harness_dump_log(d);
	harness_stop(d);
	return -ETIMEDOUT;
}

bool harness_alive(const struct daemon_proc *d)
{
	int status;

	if (d->pid <= 0)
		return false;
	return waitpid(d->pid, &status, WNOHANG) == 0;
}

int harness_finish(struct daemon_proc *d)
{
	if (!harness_alive(d) || harness_wrapped())
		harness_dump_log(d);
	if (harness_stop(d) != 0) {
		fprintf(stderr, "vcounterd did not exit cleanly (see its log above)\n");
		return -1;
	}
	return 0;
}

int harness_stop(struct daemon_proc *d)
{
	int status = -1;

	if (d->pid > 0) {
		kill(d->pid, SIGTERM);
		for (int i = 0; i < 300; i++) {
			pid_t r = waitpid(d->pid, &status, WNOHANG);

			if (r == d->pid || r < 0)
				break;
			harness_sleep_ms(10);
		}
		if (waitpid(d->pid, &status, WNOHANG) == 0) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &status, 0);
		}
		d->pid = 0;
	}
	/* A daemon that crashed on its way out fails whatever test stopped it,
	 * whether or not that test looks at the status. */
	if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL && WTERMSIG(status) != SIGTERM) {
		fprintf(stderr, "vcounterd (log %s) crashed on SIGTERM: %s\n", d->log_path,
			strsignal(WTERMSIG(status)));
		harness_dump_log(d);
		abort();
	}
	if (d->dir[0] && !getenv("VC_KEEP_TEST_DIRS"))
		harness_remove_tree(d->dir);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int harness_fd_count(const struct daemon_proc *d)
{
	char path[64];
	struct dirent *de;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((de = readdir(dir)))
		if (de->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

int harness_settled_fd_count(const struct daemon_proc *d)
{
	int least = harness_fd_count(d);

	for (int i = 0; i < 40; i++) {
		int n;

		harness_sleep_ms(5);
		n = harness_fd_count(d);
		if (n < least)
			least = n;
	}
	return least;
}

int harness_file_count(const char *path, const char *needle)
{
	char line[4096];
	FILE *f = fopen(path, "re");
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

void harness_dump_file(const char *path)
{
	char line[4096];
	FILE *f = fopen(path, "re");

	if (!f)
		return;
	fprintf(stderr, "---- %s ----\n", path);
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fclose(f);
}

bool harness_log_contains(const struct daemon_proc *d, const char *needle)
{
	return harness_file_count(d->log_path, needle) > 0;
}

void harness_dump_log(const struct daemon_proc *d)
{
	harness_dump_file(d->log_path);
}

bool harness_kvm_honours_offsets(int vcpu_fd)
{
	uint64_t orig, back;
	bool honoured;

	if (kvm_x86_get_tsc_offset(vcpu_fd, &orig) < 0 ||
	    kvm_x86_set_tsc_offset(vcpu_fd, orig + 0x12345678) < 0)
		return false;
	honoured = kvm_x86_get_tsc_offset(vcpu_fd, &back) == 0 && back == orig + 0x12345678;
	if (kvm_x86_set_tsc_offset(vcpu_fd, orig) < 0)
		return false;
	return honoured;
}

int harness_kvm_vm_create(int kvm_fd, unsigned n, int *ret_vm_fd, int *vcpu_fds)
{
	int vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0), r;

	if (vm_fd < 0)
		return -errno;
	for (unsigned i = 0; i < n; i++) {
		vcpu_fds[i] = ioctl(vm_fd, KVM_CREATE_VCPU, i);
		if (vcpu_fds[i] < 0) {
			r = -errno;
			while (i > 0)
				close(vcpu_fds[--i]);
			close(vm_fd);
			return r;
		}
	}
	*ret_vm_fd = vm_fd;
	return 0;
}

int harness_vm_create(struct harness_vm *vm, int kvm_fd, unsigned n)
{
	int r = -ENOMEM;

	vm->vm_fd = -1;
	vm->n = 0;
	vm->vcpu_fds = calloc(n ? n : 1, sizeof(int));
	if (vm->vcpu_fds)
		r = harness_kvm_vm_create(kvm_fd, n, &vm->vm_fd, vm->vcpu_fds);
	if (r == 0)
		vm->n = n;
	return r;
}

void harness_vm_destroy(struct harness_vm *vm)
{
	for (unsigned i = 0; i < vm->n; i++)
		close(vm->vcpu_fds[i]);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	free(vm->vcpu_fds);
	vm->vcpu_fds = NULL;
	vm->vm_fd = -1;
	vm->n = 0;
}

int harness_kvm_open(const char *what)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		fprintf(stderr, "SKIP: /dev/kvm unavailable (%s): %s\n", strerror(errno), what);
	return fd;
}

const char *harness_notify_field(const char *msg, const char *name, char *buf, size_t size)
{
	size_t n = strlen(name);

	for (const char *line = msg; line && *line; line = strchr(line, '\n')) {
		if (*line == '\n')
			line++;
		if (strncmp(line, name, n) == 0 && line[n] == '=') {
			snprintf(buf, size, "%.*s", (int)strcspn(line + n + 1, "\n"), line + n + 1);
			return buf;
		}
	}
	return NULL;
}

int harness_tcp_connect_from(const char *source, int port)
{
	struct sockaddr_in from = { .sin_family = AF_INET }, to = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

	if (fd < 0)
		return -errno;
	to.sin_port = htons((uint16_t)port);
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (inet_pton(AF_INET, source, &from.sin_addr) != 1) {
		close(fd);
		return -EINVAL;
	}
	if (bind(fd, (struct sockaddr *)&from, sizeof(from)) < 0 ||
	    connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}
