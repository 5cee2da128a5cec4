/* test_vmm_socket.c - a real vcounterd fed good and hostile input on its VMM
 * socket: every refusal is a clear Error naming the request, every fd the
 * daemon does not keep is closed, and the daemon keeps serving. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <linux/kcmp.h>
#include <linux/kvm.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon_harness.h"
#include "vcd_config.h"
#include "kvm_x86.h"
#include "frame.h"
#include "macro.h"
#include "unix_fd.h"
#include "vcounter/vcounter.h"
#include "vmm_raw.h"
#include "wire.h"

/* What one VMM connection costs the daemon in fds (vmm_raw_conn_fds). */
static int vmm_conn_fds;
static struct daemon_proc daemon_main;
static int baseline_fds;

/* Expect an Error reply with this request id and code. */
static void expect_error(int fd, uint64_t id, Vcounter__V1__ErrorCode code, const char *substr)
{
	Vcounter__V1__VmmMessage *msg = vmm_raw_recv(fd);

	assert_non_null(msg);
	assert_int_equal(msg->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR);
	assert_int_equal(msg->id, id);
	if (msg->error->code != code || (substr && !strstr(msg->error->message, substr)))
		fprintf(stderr, "got code %d message '%s'\n", msg->error->code,
			msg->error->message);
	assert_int_equal(msg->error->code, code);
	if (substr)
		assert_non_null(strstr(msg->error->message, substr));
	wire_vmm_free(msg);
}

/* A status request with this id on a fresh connection to socket_path; the
 * reply, checked to be a StatusReply to that id (free with wire_vmm_free). */
static Vcounter__V1__VmmMessage *status_of(const char *socket_path, uint64_t id)
{
	Vcounter__V1__VmmMessage *reply;
	int fd = vmm_raw_connect(socket_path);

	vmm_raw_send_status(fd, id);
	reply = vmm_raw_recv(fd);
	close(fd);
	assert_non_null(reply);
	assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY);
	assert_int_equal(reply->id, id);
	return reply;
}

/* The status reply's entry for vm_id on daemon d (asserts it exists). */
static void expect_status_backend(const struct daemon_proc *d, const char *vm_id,
				  const char *backend)
{
	Vcounter__V1__VmmMessage *reply = status_of(d->vmm_socket, 78);
	enum backend_kind kind;
	bool found = false;

	for (size_t i = 0; i < reply->status_reply->n_vms; i++) {
		const Vcounter__V1__VmStatus *vm = reply->status_reply->vms[i];

		if (strcmp(vm->vm_id, vm_id) != 0)
			continue;
		found = true;
		assert_int_equal(wire_backend_from_pb(vm->backend, &kind), 0);
		assert_string_equal(backend_kind_to_string(kind), backend);
		assert_int_equal(vm->vcpu_count, 2);
	}
	assert_true(found);
	wire_vmm_free(reply);
}

/* The daemon still answers a status request on a fresh connection, and has
 * closed every fd it did not keep. */
static void assert_daemon_serving(void)
{
	Vcounter__V1__VmmMessage *reply;

	assert_true(harness_alive(&daemon_main));
	reply = status_of(daemon_main.vmm_socket, 77);
	assert_string_equal(reply->status_reply->version, "0.1.0");
	wire_vmm_free(reply);
}

/* The daemon closes fds it does not keep after it answers, and a
 * connection's fds when it sees the hangup: wait (up to 1 s) for that. */
static void assert_fd_count_settles(int want)
{
	char cmd[128];

	for (int i = 0; i < 200 && harness_fd_count(&daemon_main) != want; i++)
		usleep(5000);
	if (harness_fd_count(&daemon_main) != want) {
		snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd >&2", (int)daemon_main.pid);
		fprintf(stderr, "the daemon holds %d fds, %d expected:\n",
			harness_fd_count(&daemon_main), want);
		(void)!system(cmd);
	}
	assert_int_equal(harness_fd_count(&daemon_main), want);
}

static void assert_fds_back_to_baseline(void)
{
	assert_fd_count_settles(baseline_fds);
}

static int group_setup(void **state)
{
	if (harness_start(&daemon_main, NULL) < 0)
		return -1;
	/* harness_start's readiness probe connected once; wait until the
	 * daemon has seen that connection go. */
	baseline_fds = harness_settled_fd_count(&daemon_main);
	vmm_conn_fds = vmm_raw_conn_fds(&daemon_main);
	return baseline_fds > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	if (!harness_alive(&daemon_main))
		harness_dump_log(&daemon_main);
	if (harness_wrapped())
		harness_dump_log(&daemon_main);
	if (harness_stop(&daemon_main) != 0) {
		fprintf(stderr, "vcounterd did not exit cleanly (see its log above)\n");
		return -1;
	}
	return 0;
}

static void test_status_names_version_and_request_id(void **state)
{
	assert_daemon_serving();
}

static void test_truncated_frame_is_refused(void **state)
{
	const uint8_t buf[] = { 0, 0, 0, 10, 1, 2, 3 };
	int fd = vmm_raw_connect(daemon_main.vmm_socket);

	assert_int_equal(send(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	expect_error(fd, 0, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, "truncated");
	close(fd);
	assert_daemon_serving();
}

static void test_length_prefix_over_maximum_is_refused(void **state)
{
	const uint8_t buf[] = { 0x7f, 0xff, 0xff, 0xff, 1, 2, 3 };
	int fd = vmm_raw_connect(daemon_main.vmm_socket);

	assert_int_equal(send(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	expect_error(fd, 0, VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED, "maximum");
	close(fd);
	assert_daemon_serving();
}

static void test_message_longer_than_any_frame_is_refused(void **state)
{
	size_t len = FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES + 100;
	uint8_t *buf = calloc(1, len);
	int fd = vmm_raw_connect(daemon_main.vmm_socket);
	int sndbuf = 1 << 20;

	assert_non_null(buf);
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	assert_int_equal(frame_header_encode(VC_MAX_FRAME_BYTES, buf), 0);
	assert_int_equal(send(fd, buf, len, 0), (ssize_t)len);
	expect_error(fd, 0, VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED, "longer");
	free(buf);
	close(fd);
	assert_daemon_serving();
}

static void test_garbage_protobuf_is_refused(void **state)
{
	/* A length-delimited field whose length runs past the end. */
	const uint8_t buf[] = { 0, 0, 0, 4, 0x52, 0x7f, 0x01, 0x02 };
	int fd = vmm_raw_connect(daemon_main.vmm_socket);

	assert_int_equal(send(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	expect_error(fd, 0, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, "not a valid");
	close(fd);
	assert_daemon_serving();
}

static void test_unknown_message_type_is_answered_with_its_id(void **state)
{
	/* id = 42 (field 1 varint), then field 50 varint 1: no body we know. */
	const uint8_t buf[] = { 0, 0, 0, 5, 0x08, 42, 0x90, 0x03, 0x01 };
	int fd = vmm_raw_connect(daemon_main.vmm_socket);

	assert_int_equal(send(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	expect_error(fd, 42, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED, "unknown");
	close(fd);
	assert_daemon_serving();
}

static void test_reply_type_sent_as_request_is_refused(void **state)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__MigrateOutReply r = VCOUNTER__V1__MIGRATE_OUT_REPLY__INIT;
	int fd = vmm_raw_connect(daemon_main.vmm_socket);

	req.id = 9;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY;
	req.migrate_out_reply = &r;
	vmm_raw_send(fd, &req, NULL, 0);
	expect_error(fd, 9, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED, "not a request");
	close(fd);
	assert_daemon_serving();
}

static void test_fds_on_a_non_register_message_are_closed(void **state)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;
	int fd = vmm_raw_connect(daemon_main.vmm_socket);
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	req.id = 5;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	vmm_raw_send(fd, &req, p, 2);
	expect_error(fd, 5, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, "only accepted");
	close(fd);
	close(p[0]);
	close(p[1]);
	assert_fds_back_to_baseline();
}

/* Register vm_id with n_vcpus claimed and these fds; expect a refusal. */
static void register_expect_refusal(const int *fds, size_t n_fds, uint32_t n_vcpus,
				    const char *substr)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__RegisterVm reg = VCOUNTER__V1__REGISTER_VM__INIT;
	int fd = vmm_raw_connect(daemon_main.vmm_socket);

	reg.vm_id = "vm-bad";
	reg.role = VCOUNTER__V1__ROLE__ROLE_SOURCE;
	reg.vcpu_count = n_vcpus;
	req.id = 1234;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM;
	req.register_vm = &reg;
	vmm_raw_send(fd, &req, fds, n_fds);
	expect_error(fd, 1234, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, substr);
	close(fd);
	assert_fds_back_to_baseline();
	assert_daemon_serving();
}

static void test_register_refuses_fds_of_the_wrong_kind(void **state)
{
	int p[2], sv[2], file, memfd, efd, devnull;
	char path[] = "/tmp/vcounterd-regular.XXXXXX";

	file = mkstemp(path);
	assert_true(file >= 0);
	unlink(path);
	memfd = memfd_create("not-a-vm", MFD_CLOEXEC);
	efd = eventfd(0, EFD_CLOEXEC);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_true(memfd >= 0 && efd >= 0 && devnull >= 0);

	{
		int fds[] = { file, devnull };
		register_expect_refusal(fds, 2, 1, "kvm-vm");
	}
	{
		int fds[] = { memfd, devnull };
		register_expect_refusal(fds, 2, 1, "kvm-vm");
	}
	{
		int fds[] = { sv[0], devnull };
		register_expect_refusal(fds, 2, 1, "kvm-vm");
	}
	{
		int fds[] = { p[0], efd };
		register_expect_refusal(fds, 2, 1, "kvm-vm");
	}
	{
		int fds[] = { efd };
		register_expect_refusal(fds, 1, 1, NULL);
	}

	close(file);
	close(memfd);
	close(efd);
	close(devnull);
	close(p[0]);
	close(p[1]);
	close(sv[0]);
	close(sv[1]);
}

#define TEST_VM_MAX_VCPUS 300

/* Does this kernel offer kernel-patch/'s KVM_CAP_SYSTEM_COUNTER_STATE? */
static bool kernel_has_syscounter(int vm_fd)
{
	return ioctl(vm_fd, KVM_CHECK_EXTENSION, 1024) > 0;
}

static int open_kvm_or_skip(void)
{
	int fd = harness_kvm_open("real KVM fd checks not run");

	if (fd < 0)
		skip();
	return fd;
}

static void test_register_refuses_misplaced_kvm_fds(void **state)
{
	int kvm = open_kvm_or_skip();
	struct harness_vm a, b;

	assert_int_equal(harness_vm_create(&a, kvm, 2), 0);
	assert_int_equal(harness_vm_create(&b, kvm, 3), 0);

	/* /dev/kvm itself where the VM belongs. */
	{
		int fds[] = { kvm, a.vcpu_fds[0], a.vcpu_fds[1] };
		register_expect_refusal(fds, 3, 2, "kvm-vm");
	}
	/* A vCPU fd where the VM fd belongs. */
	{
		int fds[] = { a.vcpu_fds[0], a.vcpu_fds[0], a.vcpu_fds[1] };
		register_expect_refusal(fds, 3, 2, "kvm-vm");
	}
	/* The VM fd in a vCPU slot. */
	{
		int fds[] = { a.vm_fd, a.vm_fd, a.vcpu_fds[1] };
		register_expect_refusal(fds, 3, 2, "kvm-vcpu");
	}
	/* Another VM's vCPU 2 in slot 1. */
	{
		int fds[] = { a.vm_fd, a.vcpu_fds[0], b.vcpu_fds[2] };
		register_expect_refusal(fds, 3, 2, "kvm-vcpu:1");
	}
	/* Swapped vCPUs. */
	{
		int fds[] = { a.vm_fd, a.vcpu_fds[1], a.vcpu_fds[0] };
		register_expect_refusal(fds, 3, 2, "kvm-vcpu:0");
	}
	/* The same vCPU twice. */
	{
		int fds[] = { a.vm_fd, a.vcpu_fds[0], a.vcpu_fds[0] };
		register_expect_refusal(fds, 3, 2, NULL);
	}
	/* Missing and extra fds. */
	{
		int fds[] = { a.vm_fd, a.vcpu_fds[0] };
		register_expect_refusal(fds, 2, 2, NULL);
	}
	{
		int fds[] = { a.vm_fd, a.vcpu_fds[0], a.vcpu_fds[1], b.vcpu_fds[2] };
		register_expect_refusal(fds, 4, 2, NULL);
	}
	{
		register_expect_refusal(NULL, 0, 2, NULL);
	}

	harness_vm_destroy(&a);
	harness_vm_destroy(&b);
	close(kvm);
}

static uint64_t read_offset(int vcpu_fd)
{
	uint64_t v = 0;

	assert_int_equal(kvm_x86_get_tsc_offset(vcpu_fd, &v), 0);
	return v;
}

/* One KVM VM registered under two ids would be handed off twice. The VM
 * fd is compared by its open file (kcmp), so a second SCM_RIGHTS copy of
 * it is refused, on the same connection and on another. Before, both ids
 * were accepted. */
static void test_register_refuses_a_vm_already_registered_under_another_id(void **state)
{
	struct vcounter *vc, *other;
	struct harness_vm vm;
	int kvm;

	/* The daemon compares open files with kcmp(2): a kernel without
	 * CONFIG_KCMP (the kernel-patch/ build's) cannot tell. */
	if (syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 0, 0) < 0 && errno == ENOSYS) {
		fprintf(stderr, "SKIP: this kernel has no kcmp(2) (CONFIG_KCMP), with which the "
				"daemon tells one VM fd from another\n");
		skip();
	}
	kvm = open_kvm_or_skip();

	assert_int_equal(harness_vm_create(&vm, kvm, 1), 0);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-once", VCOUNTER_ROLE_SOURCE, vm.vm_fd,
					      vm.vcpu_fds, 1, NULL),
			 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-twice", VCOUNTER_ROLE_SOURCE, vm.vm_fd,
					      vm.vcpu_fds, 1, NULL),
			 -EEXIST);
	assert_non_null(strstr(vcounter_last_error(vc), "already registered, as vm_id 'vm-once'"));
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &other), 0);
	assert_int_equal(vcounter_register_vm(other, "vm-thrice", VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      vm.vcpu_fds, 1, NULL),
			 -EEXIST);
	vcounter_close(other);
	/* Once unregistered, the VM may register again under any id. */
	assert_int_equal(vcounter_unregister_vm(vc, "vm-once"), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-twice", VCOUNTER_ROLE_SOURCE, vm.vm_fd,
					      vm.vcpu_fds, 1, NULL),
			 0);
	vcounter_close(vc);
	assert_fds_back_to_baseline();
	harness_vm_destroy(&vm);
	close(kvm);
}

static void test_register_real_vm_reports_the_truth_about_offset_control(void **state)
{
	int kvm = open_kvm_or_skip();
	struct vcounter_vm_info info;
	struct vcounter *vc;
	struct harness_vm vm;
	uint64_t before[2];
	int honours;

	assert_int_equal(harness_vm_create(&vm, kvm, 2), 0);
	honours = harness_kvm_honours_offsets(vm.vcpu_fds[0]);
	before[0] = read_offset(vm.vcpu_fds[0]);
	before[1] = read_offset(vm.vcpu_fds[1]);

	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-real", VCOUNTER_ROLE_SOURCE, vm.vm_fd,
					      vm.vcpu_fds, 2, &info),
			 0);
	/* The kernel-patch/ backend where the kernel offers it (tests/kernel),
	 * else the upstream one. */
	assert_string_equal(info.backend,
			    kernel_has_syscounter(vm.vm_fd) ? "kvm-syscounter" : "kvm-x86");
	assert_int_equal(info.offset_control, honours);
	if (!honours) {
		assert_non_null(strstr(info.probe_detail, "offset control unavailable"));
		fprintf(stderr, "note: this host's KVM ignores TSC offsets: %s\n",
			info.probe_detail);
	}
	assert_true(info.guest_tsc_khz > 0);
	/* Registration left every offset as it was (the probe writes only its
	 * scratch VM; test_kvm_x86 holds it to that under a seccomp guard). */
	assert_true(read_offset(vm.vcpu_fds[0]) == before[0]);
	assert_true(read_offset(vm.vcpu_fds[1]) == before[1]);
	/* The daemon now holds 3 more fds. */
	assert_int_equal(harness_fd_count(&daemon_main), baseline_fds + vmm_conn_fds + 3);

	/* The same id twice is refused, and the refused fds are not kept. */
	assert_int_equal(vcounter_register_vm(vc, "vm-real", VCOUNTER_ROLE_SOURCE, vm.vm_fd,
					      vm.vcpu_fds, 2, &info),
			 -EEXIST);
	assert_int_equal(vcounter_unregister_vm(vc, "vm-real"), 0);
	assert_int_equal(harness_fd_count(&daemon_main), baseline_fds + vmm_conn_fds);
	assert_int_equal(vcounter_unregister_vm(vc, "vm-real"), -ENOENT);
	assert_non_null(strstr(vcounter_last_error(vc), "no such VM"));

	/* A VMM that disconnects releases its VMs' fds. */
	assert_int_equal(vcounter_register_vm(vc, "vm-real", VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      vm.vcpu_fds, 2, &info),
			 0);
	vcounter_close(vc);
	assert_fds_back_to_baseline();
	harness_vm_destroy(&vm);
	close(kvm);
}

/* Is vm_id registered with the daemon now? */
static bool vm_registered(const char *vm_id)
{
	Vcounter__V1__VmmMessage *reply = status_of(daemon_main.vmm_socket, 79);
	bool found = false;

	for (size_t i = 0; i < reply->status_reply->n_vms; i++)
		found |= strcmp(reply->status_reply->vms[i]->vm_id, vm_id) == 0;
	wire_vmm_free(reply);
	return found;
}

/* The VMM: registers a VM, forks a child that keeps the socket (and sleeps),
 * tells the test the child's pid and exits. */
static void forking_vmm(int kvm, int pipe_fd)
{
	struct harness_vm vm;
	struct vcounter *vc;
	pid_t child;

	if (harness_vm_create(&vm, kvm, 1) < 0 ||
	    vcounter_connect(daemon_main.vmm_socket, &vc) < 0 ||
	    vcounter_register_vm(vc, "vm-forked", VCOUNTER_ROLE_SOURCE, vm.vm_fd, vm.vcpu_fds, 1,
				 NULL) < 0)
		_exit(1);
	child = fork();
	if (child == 0) {
		sleep(60);
		_exit(0);
	}
	if (write(pipe_fd, &child, sizeof(child)) != (ssize_t)sizeof(child))
		_exit(2);
	_exit(0);
}

/* A registration belongs to the process that made it: when that process
 * exits, its VMs go, though a child it forked still holds the socket (KVM
 * runs a VM's ioctls only in its creator's mm, and the connection's
 * credentials are no longer anyone's). Before, the VM stayed registered
 * under the dead VMM's pid for as long as the child lived. */
static void test_a_vmm_that_exits_takes_its_vms_though_a_child_holds_the_socket(void **state)
{
	int kvm, p[2], status;
	pid_t vmm, child = -1;
	bool gone = false;

	if (vmm_conn_fds < 2) {
		fprintf(stderr,
			"SKIP: this daemon cannot watch its VMMs' processes (no pidfd_open: "
			"valgrind 3.19 lacks it)\n");
		skip();
	}
	kvm = open_kvm_or_skip();

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	vmm = fork();
	assert_true(vmm >= 0);
	if (vmm == 0)
		forking_vmm(kvm, p[1]);
	close(p[1]);
	assert_int_equal(read(p[0], &child, sizeof(child)), (ssize_t)sizeof(child));
	close(p[0]);
	assert_int_equal(waitpid(vmm, &status, 0), vmm);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	for (int i = 0; i < 200 && !gone; i++) {
		gone = !vm_registered("vm-forked");
		if (!gone)
			usleep(10000);
	}
	kill(child, SIGKILL);
	assert_true(gone);
	assert_true(harness_log_contains(&daemon_main, "exited; whoever else holds the socket does "
						       "not keep its VMs"));
	close(kvm);
	assert_fds_back_to_baseline();
	assert_daemon_serving();
}

/* A RegisterVm of the TEST_VM_MAX_VCPUS-vCPU target "vm-big" starting at
 * first_vcpu, with these fds. */
static void send_big_register(int fd, uint64_t id, uint32_t first_vcpu, const int *fds,
			      size_t n_fds)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__RegisterVm reg = VCOUNTER__V1__REGISTER_VM__INIT;

	reg.vm_id = "vm-big";
	reg.role = VCOUNTER__V1__ROLE__ROLE_TARGET;
	reg.vcpu_count = TEST_VM_MAX_VCPUS;
	reg.first_vcpu = first_vcpu;
	req.id = id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM;
	req.register_vm = &reg;
	vmm_raw_send(fd, &req, fds, n_fds);
}

/* The first, full message: answered with ok, the VM is not complete yet. */
static void send_big_first_message(int fd, uint64_t id, const int *fds)
{
	Vcounter__V1__VmmMessage *reply;

	send_big_register(fd, id, 0, fds, UNIX_FD_MAX_FDS);
	reply = vmm_raw_recv(fd);
	assert_non_null(reply);
	if (reply->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR)
		fprintf(stderr, "first message %" PRIu64 " refused: %s\n", id,
			reply->error->message);
	assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_OK);
	assert_int_equal(reply->id, id);
	wire_vmm_free(reply);
}

/* More vCPUs than one message has room for (SCM_MAX_FD = 253 fds): the
 * registration goes in full messages, and a continuation that does not fit
 * drops the whole registration with every fd it brought. */
static void test_register_vm_larger_than_one_message(void **state)
{
	int kvm = open_kvm_or_skip();
	static struct harness_vm vm;
	struct vcounter_vm_info info;
	struct vcounter *vc;
	int r, fd, fds[UNIX_FD_MAX_FDS];

	r = harness_vm_create(&vm, kvm, TEST_VM_MAX_VCPUS);
	if (r < 0) {
		fprintf(stderr, "SKIP: this KVM will not create %d vCPUs: %s\n", TEST_VM_MAX_VCPUS,
			strerror(-r));
		close(kvm);
		skip();
	}
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-big", VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      vm.vcpu_fds, TEST_VM_MAX_VCPUS, &info),
			 0);
	assert_string_equal(info.backend,
			    kernel_has_syscounter(vm.vm_fd) ? "kvm-syscounter" : "kvm-x86");
	assert_int_equal(harness_fd_count(&daemon_main),
			 baseline_fds + vmm_conn_fds + 1 + TEST_VM_MAX_VCPUS);
	assert_int_equal(vcounter_unregister_vm(vc, "vm-big"), 0);
	vcounter_close(vc);
	assert_fds_back_to_baseline();

	/* A first message short of full is fds missing. */
	fds[0] = vm.vm_fd;
	memcpy(fds + 1, vm.vcpu_fds, (UNIX_FD_MAX_FDS - 1) * sizeof(int));
	register_expect_refusal(fds, 100, TEST_VM_MAX_VCPUS, "expected 253");

	/* A full first message, then a continuation from the wrong vCPU. */
	fd = vmm_raw_connect(daemon_main.vmm_socket);
	send_big_first_message(fd, 1, fds);
	/* The daemon holds the first message's fds while it waits. */
	assert_int_equal(harness_fd_count(&daemon_main),
			 baseline_fds + vmm_conn_fds + UNIX_FD_MAX_FDS);
	send_big_register(fd, 2, 200 /* 252 is next */, vm.vcpu_fds + 252, TEST_VM_MAX_VCPUS - 252);
	expect_error(fd, 2, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "registration dropped");
	assert_fd_count_settles(baseline_fds + vmm_conn_fds);
	close(fd);

	/* A VMM that disconnects halfway releases what it sent. */
	fd = vmm_raw_connect(daemon_main.vmm_socket);
	send_big_first_message(fd, 3, fds);
	close(fd);
	assert_fds_back_to_baseline();
	assert_daemon_serving();
	harness_vm_destroy(&vm);
	close(kvm);
}

/* A registration in several messages is checked as its fds come and is
 * bounded. Before, a first message of 253 fds was answered ok and held
 * unchecked, with no deadline, and counted against --max-vms: two were
 * enough to lock out a legitimate VM at --max-vms 2. */
static void test_partial_registrations_are_checked_bounded_and_timed_out(void **state)
{
	int kvm = open_kvm_or_skip();
	static struct harness_vm vm;
	int r, conns[VCD_MAX_PARTIAL_REGISTRATIONS + 1], fds[UNIX_FD_MAX_FDS];

	/* 253 memfds as the first message: refused at once, nothing held. */
	for (int i = 0; i < UNIX_FD_MAX_FDS; i++) {
		fds[i] = memfd_create("not-a-vcpu", MFD_CLOEXEC);
		assert_true(fds[i] >= 0);
	}
	conns[0] = vmm_raw_connect(daemon_main.vmm_socket);
	send_big_register(conns[0], 1, 0, fds, UNIX_FD_MAX_FDS);
	expect_error(conns[0], 1, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "expected anon_inode:kvm-vm");
	close(conns[0]);
	unix_fd_close_all(fds, UNIX_FD_MAX_FDS);
	assert_fds_back_to_baseline();

	r = harness_vm_create(&vm, kvm, TEST_VM_MAX_VCPUS);
	if (r < 0) {
		fprintf(stderr, "SKIP: this KVM will not create %d vCPUs: %s\n", TEST_VM_MAX_VCPUS,
			strerror(-r));
		harness_vm_destroy(&vm);
		close(kvm);
		skip();
	}
	fds[0] = vm.vm_fd;
	memcpy(fds + 1, vm.vcpu_fds, (UNIX_FD_MAX_FDS - 1) * sizeof(int));
	/* As many under way as the limit, from as many connections; one more waits its turn. */
	for (int i = 0; i < VCD_MAX_PARTIAL_REGISTRATIONS; i++) {
		conns[i] = vmm_raw_connect(daemon_main.vmm_socket);
		send_big_first_message(conns[i], 10 + (uint64_t)i, fds);
	}
	conns[VCD_MAX_PARTIAL_REGISTRATIONS] = vmm_raw_connect(daemon_main.vmm_socket);
	send_big_register(conns[VCD_MAX_PARTIAL_REGISTRATIONS], 20, 0, fds, UNIX_FD_MAX_FDS);
	expect_error(conns[VCD_MAX_PARTIAL_REGISTRATIONS], 20,
		     VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE,
		     "too many registrations in several messages under way (limit 4)");
	/* A second one on a connection that has one under way. */
	send_big_register(conns[0], 21, 0, fds, UNIX_FD_MAX_FDS);
	expect_error(conns[0], 21, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE,
		     "already under way on this connection");
	for (int i = 1; i <= VCD_MAX_PARTIAL_REGISTRATIONS; i++)
		close(conns[i]);
	assert_fd_count_settles(baseline_fds + vmm_conn_fds + UNIX_FD_MAX_FDS);

	/* The one left is not finished in time: dropped with its fds. */
	usleep((VCD_PARTIAL_REGISTRATION_TIMEOUT_MS + 500) * 1000);
	assert_fd_count_settles(baseline_fds + vmm_conn_fds);
	assert_true(harness_log_contains(&daemon_main, "not finished within its deadline"));
	send_big_register(conns[0], 22, 252, vm.vcpu_fds + 252, TEST_VM_MAX_VCPUS - 252);
	expect_error(conns[0], 22, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND,
		     "no registration of that VM in progress");
	close(conns[0]);
	assert_fds_back_to_baseline();
	assert_daemon_serving();
	harness_vm_destroy(&vm);
	close(kvm);
}

static void test_unknown_migration_ids_are_refused(void **state)
{
	int kvm = open_kvm_or_skip();
	struct vcounter_report *rep = NULL;
	struct vcounter *vc;
	struct harness_vm vm;
	uint64_t gen;

	assert_int_equal(harness_vm_create(&vm, kvm, 1), 0);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-ids", VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      vm.vcpu_fds, 1, NULL),
			 0);
	assert_int_equal(vcounter_apply(vc, "vm-ids", "0123456789abcdef0123456789abcdef", &rep),
			 -ENOENT);
	assert_null(rep);
	assert_int_equal(
		vcounter_report_paused(vc, "vm-ids", "0123456789abcdef0123456789abcdef", &gen),
		-ENOENT);
	/* A target VM cannot migrate out. */
	assert_int_equal(vcounter_migrate_out(vc, "vm-ids", "127.0.0.1:1", "host-b.test",
					      (char[VCOUNTER_MIGRATION_ID_SIZE]){ 0 }),
			 -EINVAL);
	vcounter_close(vc);
	harness_vm_destroy(&vm);
	close(kvm);
	assert_daemon_serving();
}

static void test_migrate_out_without_tls_is_a_clear_error(void **state)
{
	int kvm = open_kvm_or_skip();
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	struct vcounter *vc;
	struct harness_vm vm;

	assert_int_equal(harness_vm_create(&vm, kvm, 1), 0);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-notls", VCOUNTER_ROLE_SOURCE, vm.vm_fd,
					      vm.vcpu_fds, 1, NULL),
			 0);
	assert_int_equal(vcounter_migrate_out(vc, "vm-notls", "127.0.0.1:1", "host-b.test", id),
			 -ENOKEY);
	assert_non_null(strstr(vcounter_last_error(vc), "TLS"));
	vcounter_close(vc);
	harness_vm_destroy(&vm);
	close(kvm);
}

/* --backends is the operator's: the daemon's probe offers only those, in
 * that order, and a VM whose KVM has none of them registers without offset
 * control, saying what each lacks. */
static void test_backends_flag_limits_and_orders_the_probe(void **state)
{
	const char *only_patch[] = { "--backends", "kvm-syscounter", NULL };
	const char *x86_first[] = { "--backends", "kvm-x86,kvm-syscounter", NULL };
	int kvm = open_kvm_or_skip();
	struct vcounter_vm_info info;
	struct daemon_proc d;
	struct vcounter *vc;
	struct harness_vm vm;
	char id[VC_MIGRATION_ID_LEN + 1];
	bool patched;

	assert_int_equal(harness_vm_create(&vm, kvm, 2), 0);
	patched = kernel_has_syscounter(vm.vm_fd);

	assert_int_equal(harness_start(&d, only_patch), 0);
	assert_int_equal(vcounter_connect(d.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-only-patch", VCOUNTER_ROLE_SOURCE, vm.vm_fd,
					      vm.vcpu_fds, 2, &info),
			 0);
	expect_status_backend(&d, "vm-only-patch", info.backend);
	if (patched) {
		assert_string_equal(info.backend, "kvm-syscounter");
	} else {
		assert_string_equal(info.backend, "none");
		assert_false(info.offset_control);
		assert_string_equal(info.probe_detail,
				    "no counter backend for this VM: kvm-syscounter: "
				    "KVM_CAP_SYSTEM_COUNTER_STATE not offered (a kernel without "
				    "vcounterd's kernel-patch/)");
		assert_true(harness_log_contains(&d, "backend=none"));
		/* Such a VM cannot leave: refused at once, saying why. */
		assert_int_equal(
			vcounter_migrate_out(vc, "vm-only-patch", "127.0.0.1:1", "host-b.test", id),
			-EOPNOTSUPP);
		assert_non_null(strstr(vcounter_last_error(vc),
				       "source VM vm-only-patch: no counter backend"));
	}
	vcounter_close(vc);
	assert_int_equal(harness_stop(&d), 0);

	assert_int_equal(harness_start(&d, x86_first), 0);
	assert_int_equal(vcounter_connect(d.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-x86-first", VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      vm.vcpu_fds, 2, &info),
			 0);
	assert_string_equal(info.backend, "kvm-x86");
	assert_true(harness_log_contains(&d, "backend=kvm-x86"));
	expect_status_backend(&d, "vm-x86-first", "kvm-x86");
	vcounter_close(vc);
	assert_int_equal(harness_stop(&d), 0);
	harness_vm_destroy(&vm);
	close(kvm);
}

/* Runs vcounterd with args; it must exit non-zero at once, saying why. */
static void expect_daemon_refuses_args(const char *const *args, const char *substr)
{
	char exe[512], out[1024] = "";
	const char *argv[16];
	size_t n = 0, got = 0;
	int pipefd[2], status;
	ssize_t r;
	pid_t pid;

	snprintf(exe, sizeof(exe), "%s/daemon/vcounterd", harness_build_root());
	argv[n++] = exe;
	for (size_t i = 0; args[i] && n < ELEMENTSOF(argv) - 1; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], STDERR_FILENO);
		execv(exe, (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	while (got < sizeof(out) - 1 && (r = read(pipefd[0], out + got, sizeof(out) - 1 - got)) > 0)
		got += (size_t)r;
	close(pipefd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 0);
	if (!strstr(out, substr))
		fprintf(stderr, "vcounterd said: %s\n", out);
	assert_non_null(strstr(out, substr));
}

static void test_backends_flag_refuses_garbage(void **state)
{
	const char *arm64[] = { "--backends", "kvm-arm64", NULL };
	const char *twice[] = { "--backends", "kvm-x86,kvm-x86", NULL };
	const char *empty[] = { "--backends", ",", NULL };
	const char *junk[] = { "--backends", "kvm-x86,\x01x", NULL };

	expect_daemon_refuses_args(arm64, "'kvm-arm64' is not a backend of this build");
	expect_daemon_refuses_args(twice, "'kvm-x86' twice");
	expect_daemon_refuses_args(empty, "--backends ',': needs at least one backend");
	expect_daemon_refuses_args(junk, "is not a backend of this build");
}

static void test_connection_from_a_uid_not_allowed_is_refused(void **state)
{
	const char *args[] = { "--allow-uid", "4242", NULL };
	Vcounter__V1__VmmMessage *msg;
	struct daemon_proc d;
	int fd;

	if (getuid() == 4242)
		skip();
	assert_int_equal(harness_start(&d, args), 0);
	fd = vmm_raw_connect(d.vmm_socket);
	msg = vmm_raw_recv(fd);
	assert_non_null(msg);
	assert_int_equal(msg->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR);
	assert_int_equal(msg->error->code, VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED);
	wire_vmm_free(msg);
	close(fd);
	assert_true(harness_alive(&d));
	assert_true(harness_log_contains(&d, "not allowed"));
	assert_int_equal(harness_stop(&d), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_names_version_and_request_id),
		cmocka_unit_test(test_truncated_frame_is_refused),
		cmocka_unit_test(test_length_prefix_over_maximum_is_refused),
		cmocka_unit_test(test_message_longer_than_any_frame_is_refused),
		cmocka_unit_test(test_garbage_protobuf_is_refused),
		cmocka_unit_test(test_unknown_message_type_is_answered_with_its_id),
		cmocka_unit_test(test_reply_type_sent_as_request_is_refused),
		cmocka_unit_test(test_fds_on_a_non_register_message_are_closed),
		cmocka_unit_test(test_register_refuses_fds_of_the_wrong_kind),
		cmocka_unit_test(test_register_refuses_misplaced_kvm_fds),
		cmocka_unit_test(test_register_real_vm_reports_the_truth_about_offset_control),
		cmocka_unit_test(test_register_refuses_a_vm_already_registered_under_another_id),
		cmocka_unit_test(
			test_a_vmm_that_exits_takes_its_vms_though_a_child_holds_the_socket),
		cmocka_unit_test(test_register_vm_larger_than_one_message),
		cmocka_unit_test(test_partial_registrations_are_checked_bounded_and_timed_out),
		cmocka_unit_test(test_unknown_migration_ids_are_refused),
		cmocka_unit_test(test_migrate_out_without_tls_is_a_clear_error),
		cmocka_unit_test(test_backends_flag_limits_and_orders_the_probe),
		cmocka_unit_test(test_backends_flag_refuses_garbage),
		cmocka_unit_test(test_connection_from_a_uid_not_allowed_is_refused),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
