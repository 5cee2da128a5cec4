/* daemon_harness.h - start and stop real vcounterd processes for integration
 * tests: temporary sockets and ports, certificates from tests/gen-certs.sh,
 * always torn down. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct daemon_proc {
	pid_t pid;
	char dir[256];		  /* private temp dir */
	char vmm_socket[300];	  /* dir/vmm.sock */
	char control_socket[300]; /* dir/control.sock (gRPC, service Control) */
	char log_path[300];	  /* dir/vcounterd.log */
	int peer_port;		  /* -1 when not listening */
};

/* mkdtemp under $TMPDIR and generate the test certificates there (or use
 * $VC_TEST_CERT_DIR when set: the rig has no openssl). */
int harness_certs(char *ret_dir, size_t size);
/* dir/name.ext: a certificate or key harness_certs made in dir. */
void harness_cert_path(char *buf, size_t size, const char *dir, const char *name, const char *ext);

/* The port a daemon wrote to path (--port-file, [control] port-file,
 * [metrics] port-file): > 0, or -1 while the file is absent or holds none. */
int harness_read_port(const char *path);
/* The same, waited for up to timeout_ms: the port, or -ETIMEDOUT. */
int harness_wait_port(const char *path, int timeout_ms);

/* A protobuf varint of v at out (at most 10 bytes): its length. For the
 * tests that hand-craft what a well-behaved encoder never writes. */
size_t harness_put_varint(uint8_t *out, uint64_t v);

/* rm -rf dir, saying so on stderr when it cannot. */
void harness_remove_tree(const char *dir);

/* CLOCK_MONOTONIC in milliseconds, signed so that deadlines subtract. */
int64_t harness_now_ms(void);
void harness_sleep_ms(long ms);

/* Fork build/daemon/vcounterd with args (NULL-terminated), under
 * VC_DAEMON_WRAPPER when set (e.g. "valgrind --error-exitcode=97"), its
 * stdout and stderr to log_path. journal_stream: NULL leaves
 * JOURNAL_STREAM as it is, "" unsets it, else sets it. The pid, or -errno. */
pid_t harness_spawn(const char *log_path, const char *journal_stream, const char *const *args);
/* Whether daemons run under VC_DAEMON_WRAPPER: much slower, wait longer. */
bool harness_wrapped(void);

/* Start build/daemon/vcounterd with extra args (NULL-terminated), wait until
 * its VMM socket accepts (and the port file exists when --listen is given). */
int harness_start(struct daemon_proc *d, const char *const *extra_args);
/* SIGTERM, wait, remove temp files. Returns the exit status or -1; under
 * VC_DAEMON_WRAPPER (valgrind) a nonzero status means the tool found errors. */
int harness_stop(struct daemon_proc *d);
bool harness_alive(const struct daemon_proc *d);
/* A group teardown's stop: the log dumped when the daemon died or ran under
 * VC_DAEMON_WRAPPER (valgrind's report is in it), then harness_stop. 0 for a
 * clean exit, else -1 with a line on stderr. */
int harness_finish(struct daemon_proc *d);
/* Number of open fds of the daemon (/proc/PID/fd). */
int harness_fd_count(const struct daemon_proc *d);
/* The fewest fds the daemon holds over 200 ms: its count once the
 * readiness probes' connections are gone (a baseline for leak checks). */
int harness_settled_fd_count(const struct daemon_proc *d);
/* Does the daemon's log contain needle? */
bool harness_log_contains(const struct daemon_proc *d, const char *needle);
void harness_dump_log(const struct daemon_proc *d);
/* The same for any log file (daemons a test starts itself): lines of path
 * that contain needle (0 when it cannot be read), and path on stderr. */
int harness_file_count(const char *path, const char *needle);
void harness_dump_file(const char *path);
const char *harness_build_root(void);
/* The value of NAME in an sd_notify message (lines of NAME=VALUE) into
 * buf, or NULL when the message has no such line. */
const char *harness_notify_field(const char *msg, const char *name, char *buf, size_t size);

/* The tests' own oracle for "does this host's KVM honour TSC offsets":
 * write the vCPU's offset + 0x12345678, read it back, restore. Independent
 * of the backend's probe, whose answer the daemon reports. */
bool harness_kvm_honours_offsets(int vcpu_fd);
/* A KVM VM of n vCPUs on kvm_fd (/dev/kvm): 0 with *ret_vm_fd and
 * vcpu_fds[0..n), or -errno with whatever was made closed. */
int harness_kvm_vm_create(int kvm_fd, unsigned n, int *ret_vm_fd, int *vcpu_fds);
/* The same, owning its vCPU fds: the VM a test registers with a daemon. */
struct harness_vm {
	int vm_fd;
	unsigned n;
	int *vcpu_fds;
};
/* 0 with vm filled, or -errno with vm empty (vm_fd -1, n 0) for
 * harness_vm_destroy() to free all the same. */
int harness_vm_create(struct harness_vm *vm, int kvm_fd, unsigned n);
void harness_vm_destroy(struct harness_vm *vm);
/* /dev/kvm, or -1 after a "SKIP: /dev/kvm unavailable (why): what" line on
 * stderr; the test then skips. */
int harness_kvm_open(const char *what);
/* A TCP connection to 127.0.0.1:port from source, an address of
 * 127.0.0.0/8 (another host, as far as the daemon can tell): the fd, or
 * -errno. */
int harness_tcp_connect_from(const char *source, int port);
