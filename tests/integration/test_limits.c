/* test_limits.c - every limit vcounterd enforces on the VMM socket and the
 * control API, at its edge and one past it, against a real daemon: the Nth
 * succeeds, the N+1th gets the error vcounterd(8) LIMITS documents, the
 * daemon keeps serving and nothing already there is lost. Limits a test
 * cannot reach with real resources (4096 VMs, 1024 connections, watchers,
 * migrations) are lowered through their settings; the compiled constants
 * stay their caps (test_conf.c). Edges that need a raw TLS peer or HTTP/2
 * client are next to theirs: peer-link frames and links in
 * test_peer_link.c, gRPC messages, streams and queues in
 * test_control_transport.c, the peer link's 4 MiB queue in test_tls.c. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/kvm.h>
#include <netinet/in.h>
#include <setjmp.h>

#include <cmocka.h>

#include "counter_state.h"
#include "daemon_harness.h"
#include "frame.h"
#include "macro.h"
#include "unix_fd.h"
#include "vcounter/control.h"
#include "vcounter/vcounter.h"
#include "vmm_raw.h"
#include "wire.h"

/* The daemon's lowered limits, as vcounterd(8) LIMITS names them. */
#define TEST_MAX_VMS		 3
#define TEST_MAX_VMM_CONNS	 4
#define TEST_MAX_WATCHERS	 2
#define TEST_MAX_MIGRATIONS	 2
/* daemon/vcd.h VCD_MAX_PENDING_OPS (the test cannot include vcd.h, which
 * pulls in libevent and OpenSSL; vcounterd(8) LIMITS names the value). */
#define VCD_MAX_PENDING_OPS_TEST 64
#define STRINGIFY_(x)		 #x
#define STRINGIFY(x)		 STRINGIFY_(x)
#define SOURCE_NAME		 "host-a.test"
#define TARGET_NAME		 "host-b.test"
#define KVM_CAP_MAX_VCPUS_NR	 66   /* <linux/kvm.h> KVM_CAP_MAX_VCPUS */
#define PAD_FIELD_TAG_BYTE0	 0xc2 /* field 1000, length-delimited: tag 8002 */
#define PAD_FIELD_TAG_BYTE1	 0x3e

/* What one VMM connection costs the daemon in fds (vmm_raw_conn_fds). */
static int vmm_conn_fds;
static struct daemon_proc daemon_main;
static struct daemon_proc ops_daemon; /* pid 0 unless a test runs it */
static char certs_dir[256];
static bool certs_made_here;
static int baseline_fds;

/* ---- the VMM socket, raw (vmm_raw.h) ---- */

/* The daemon closed fd: end of file within 5 s. */
static void expect_closed(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char c;

	assert_int_equal(poll(&pfd, 1, 5000), 1);
	assert_int_equal(recv(fd, &c, 1, MSG_DONTWAIT), 0);
}

static void send_status(int fd, uint64_t id, const int *fds, size_t n_fds)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;

	req.id = id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	vmm_raw_send(fd, &req, fds, n_fds);
}

static void expect_error(int fd, uint64_t id, Vcounter__V1__ErrorCode code, int errno_value,
			 const char *substr)
{
	Vcounter__V1__VmmMessage *msg = vmm_raw_recv(fd);

	assert_non_null(msg);
	assert_int_equal(msg->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR);
	if (msg->error->code != code || (int)msg->error->errno_value != errno_value ||
	    (substr && !strstr(msg->error->message, substr)))
		fprintf(stderr, "got code %d errno %d message '%s'\n", msg->error->code,
			(int)msg->error->errno_value, msg->error->message);
	assert_int_equal(msg->id, id);
	assert_int_equal(msg->error->code, code);
	assert_int_equal(msg->error->errno_value, errno_value);
	if (substr)
		assert_non_null(strstr(msg->error->message, substr));
	wire_vmm_free(msg);
}

/* A StatusReply to id on fd; returned for a closer look (wire_vmm_free). */
static Vcounter__V1__VmmMessage *expect_status_reply(int fd, uint64_t id)
{
	Vcounter__V1__VmmMessage *reply = vmm_raw_recv(fd);

	assert_non_null(reply);
	if (reply->body_case != VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY)
		fprintf(stderr, "got body %d: %s\n", reply->body_case,
			reply->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR
				? reply->error->message
				: "");
	assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY);
	assert_int_equal(reply->id, id);
	return reply;
}

/* Status on a fresh connection: the daemon serves; the VMs it lists. */
static size_t registered_vms(void)
{
	int fd = vmm_raw_connect(daemon_main.vmm_socket);
	Vcounter__V1__VmmMessage *reply;
	size_t n;

	send_status(fd, 77, NULL, 0);
	reply = expect_status_reply(fd, 77);
	n = reply->status_reply->n_vms;
	wire_vmm_free(reply);
	close(fd);
	return n;
}

static void assert_daemon_serving(void)
{
	assert_true(harness_alive(&daemon_main));
	(void)registered_vms();
}

static void assert_fd_count_settles(int want)
{
	for (int i = 0; i < 400 && harness_fd_count(&daemon_main) != want; i++)
		usleep(5000);
	if (harness_fd_count(&daemon_main) != want)
		fprintf(stderr, "the daemon holds %d fds, %d expected\n",
			harness_fd_count(&daemon_main), want);
	assert_int_equal(harness_fd_count(&daemon_main), want);
}

/* ---- KVM ---- */

static int open_kvm_or_skip(const char *what)
{
	int fd = harness_kvm_open(what);

	if (fd < 0)
		skip();
	return fd;
}

/* ---- frame size ---- */

/* A framed StatusRequest with request id `id` whose payload is exactly
 * payload_len bytes: a field the daemon does not know (1000) pads it, as
 * protobuf allows. The length prefix is written by hand, since
 * frame_header_encode refuses anything over the maximum. */
static uint8_t *padded_status(uint64_t id, size_t payload_len, size_t *ret_len)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;
	uint8_t *frame, *buf = malloc(FRAME_HEADER_BYTES + payload_len);
	size_t len, n, pad;
	uint32_t l = (uint32_t)payload_len;

	assert_non_null(buf);
	req.id = id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	assert_int_equal(wire_vmm_pack_frame(&req, &frame, &len), 0);
	n = len;
	memcpy(buf, frame, len);
	free(frame);
	buf[n++] = PAD_FIELD_TAG_BYTE0;
	buf[n++] = PAD_FIELD_TAG_BYTE1;
	/* The padding's length is a 3-byte varint for 16384..2097151. */
	pad = FRAME_HEADER_BYTES + payload_len - n - 3;
	assert_true(pad >= 16384 && pad < 2097152);
	n += harness_put_varint(buf + n, pad);
	memset(buf + n, 'x', pad);
	n += pad;
	assert_int_equal(n, FRAME_HEADER_BYTES + payload_len);
	buf[0] = (uint8_t)(l >> 24);
	buf[1] = (uint8_t)(l >> 16);
	buf[2] = (uint8_t)(l >> 8);
	buf[3] = (uint8_t)l;
	*ret_len = n;
	return buf;
}

static void test_vmm_frame_of_exactly_the_maximum_is_served_one_byte_more_refused(void **state)
{
	int fd = vmm_raw_connect(daemon_main.vmm_socket);
	int sndbuf = 1 << 20;
	uint8_t *buf;
	size_t len;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	buf = padded_status(11, VC_MAX_FRAME_BYTES, &len);
	assert_int_equal(send(fd, buf, len, 0), (ssize_t)len);
	free(buf);
	wire_vmm_free(expect_status_reply(fd, 11));

	buf = padded_status(12, VC_MAX_FRAME_BYTES + 1, &len);
	assert_int_equal(send(fd, buf, len, 0), (ssize_t)len);
	free(buf);
	/* Not read: request id 0. */
	expect_error(fd, 0, VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED, EMSGSIZE,
		     "message longer than the maximum frame size");

	/* The same connection goes on. */
	send_status(fd, 13, NULL, 0);
	wire_vmm_free(expect_status_reply(fd, 13));
	close(fd);
	assert_daemon_serving();
}

/* ---- fds per message ---- */

static void test_fds_253_per_message_arrive_254_cannot_be_sent(void **state)
{
	char cbuf[CMSG_SPACE((UNIX_FD_MAX_FDS + 1) * sizeof(int))] = { 0 };
	int fds[UNIX_FD_MAX_FDS + 1];
	struct iovec iov = { .iov_base = "x", .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	int fd = vmm_raw_connect(daemon_main.vmm_socket);

	for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(fds[i] >= 0);
	}
	/* 253 fds go in one message and all reach the daemon, which closes
	 * them: a status request takes none. */
	send_status(fd, 21, fds, UNIX_FD_MAX_FDS);
	expect_error(fd, 21, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, EINVAL,
		     "only accepted");
	assert_fd_count_settles(baseline_fds + vmm_conn_fds);

	/* 254: the kernel refuses to send them (SCM_MAX_FD), and so does
	 * unix_fd_send, before the kernel. */
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(c), fds, sizeof(fds));
	assert_int_equal(sendmsg(fd, &mh, MSG_NOSIGNAL), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(unix_fd_send(fd, "x", 1, fds, UNIX_FD_MAX_FDS + 1), -EINVAL);

	send_status(fd, 22, NULL, 0);
	wire_vmm_free(expect_status_reply(fd, 22));
	close(fd);
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		close(fds[i]);
	assert_fd_count_settles(baseline_fds);
}

/* ---- VMM connections ---- */

static void test_vmm_connections_at_the_limit_and_one_past(void **state)
{
	int conns[TEST_MAX_VMM_CONNS], extra;
	bool in = false;

	for (int i = 0; i < TEST_MAX_VMM_CONNS; i++) {
		conns[i] = vmm_raw_connect(daemon_main.vmm_socket);
		send_status(conns[i], 100 + (uint64_t)i, NULL, 0);
		wire_vmm_free(expect_status_reply(conns[i], 100 + (uint64_t)i));
	}
	extra = vmm_raw_connect(daemon_main.vmm_socket);
	expect_error(extra, 0, VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED, ENOSPC,
		     "too many VMM connections (limit 4, max-connections)");
	expect_closed(extra);
	close(extra);
	assert_true(harness_log_contains(&daemon_main, "too many VMM connections (limit 4"));

	/* Those already connected are still served. */
	for (int i = 0; i < TEST_MAX_VMM_CONNS; i++) {
		send_status(conns[i], 200 + (uint64_t)i, NULL, 0);
		wire_vmm_free(expect_status_reply(conns[i], 200 + (uint64_t)i));
	}
	/* One leaves: room for one (once the daemon has seen it go). */
	close(conns[0]);
	for (int i = 0; i < 200 && !in; i++) {
		Vcounter__V1__VmmMessage *reply;

		conns[0] = vmm_raw_connect(daemon_main.vmm_socket);
		send_status(conns[0], 300, NULL, 0);
		reply = vmm_raw_recv(conns[0]);
		assert_non_null(reply);
		in = reply->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY;
		wire_vmm_free(reply);
		if (!in) {
			close(conns[0]);
			usleep(10000);
		}
	}
	assert_true(in);
	for (int i = 0; i < TEST_MAX_VMM_CONNS; i++)
		close(conns[i]);
	assert_fd_count_settles(baseline_fds);
	assert_daemon_serving();
}

/* ---- the daemon's own file descriptors ---- */

/* Ticks of CPU (user + system) the daemon has used. */
static unsigned long long daemon_cpu_ticks(void)
{
	unsigned long long utime = 0, stime = 0;
	char path[64], buf[1024], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)daemon_main.pid);
	f = fopen(path, "re");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	/* Fields 14 and 15, counted after the command's closing parenthesis. */
	p = strrchr(buf, ')');
	assert_non_null(p);
	assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
				&utime, &stime),
			 2);
	return utime + stime;
}

/* At its RLIMIT_NOFILE the daemon's accept() on the VMM socket fails with
 * EMFILE while the connection waits in the backlog. It used to retry at
 * once, for ever: a core at 100 % and a log line per failure (1.37 M lines
 * in 1.5 s). It pauses now, says so once, and serves the waiting VMM as
 * soon as fds are free. */
static void test_vmm_socket_at_the_daemon_fd_limit_pauses_then_serves(void **state)
{
	struct rlimit saved, tight;
	unsigned long long ticks;
	long hz = sysconf(_SC_CLK_TCK);
	int fd, warned, emfile;

	if (harness_wrapped()) {
		fprintf(stderr, "SKIP: the daemon runs under a wrapper (valgrind), whose own file "
				"table does not follow a limit set from outside\n");
		skip();
	}
	assert_int_equal(prlimit(daemon_main.pid, RLIMIT_NOFILE, NULL, &saved), 0);
	tight = saved;
	tight.rlim_cur = (rlim_t)harness_fd_count(&daemon_main);
	assert_int_equal(prlimit(daemon_main.pid, RLIMIT_NOFILE, &tight, NULL), 0);

	fd = vmm_raw_connect(daemon_main.vmm_socket);
	send_status(fd, 901, NULL, 0);
	for (int i = 0;
	     i < 200 && !harness_log_contains(&daemon_main, "accept on the vmm socket failed"); i++)
		usleep(10000);
	/* A second at the limit: a spinning daemon uses all of it. */
	ticks = daemon_cpu_ticks();
	usleep(1000000);
	ticks = daemon_cpu_ticks() - ticks;
	warned = harness_file_count(daemon_main.log_path, "accept on the vmm socket failed");
	emfile = harness_file_count(daemon_main.log_path, "Too many open files");
	/* Fds again, before any assertion (one failing would leave the limit
	 * for the next test): the waiting VMM is served, and the episode ends
	 * in one line. */
	assert_int_equal(prlimit(daemon_main.pid, RLIMIT_NOFILE, &saved, NULL), 0);
	fprintf(stderr, "daemon CPU over 1 s at its fd limit: %llu of %ld ticks\n", ticks, hz);
	assert_true(ticks < (unsigned long long)hz / 2);
	assert_int_equal(warned, 1);
	assert_int_equal(emfile, 1);
	wire_vmm_free(expect_status_reply(fd, 901));
	close(fd);
	for (int i = 0;
	     i < 300 && !harness_log_contains(&daemon_main, "accepting on the vmm socket again");
	     i++)
		usleep(10000);
	assert_true(harness_log_contains(&daemon_main, "accepting on the vmm socket again"));
	assert_int_equal(
		harness_file_count(daemon_main.log_path, "accept on the vmm socket failed"), 1);
	assert_fd_count_settles(baseline_fds);
	assert_daemon_serving();
}

/* Fds sent to a daemon at its fd limit: the kernel cannot install them and
 * cuts the control data short, as it does for a sender that sends too many.
 * The VMM used to be told E2BIG "too many file descriptors"; it is told the
 * daemon is out of fds (EMFILE), and the fds it sent are closed. */
static void test_fds_sent_to_a_daemon_out_of_fds_get_emfile(void **state)
{
	struct rlimit saved, tight;
	Vcounter__V1__VmmMessage *reply;
	int fd, sent[3];

	if (harness_wrapped()) {
		fprintf(stderr, "SKIP: the daemon runs under a wrapper (valgrind), whose own file "
				"table does not follow a limit set from outside\n");
		skip();
	}
	fd = vmm_raw_connect(daemon_main.vmm_socket);
	/* Served once, so that the connection is accepted before the limit. */
	send_status(fd, 910, NULL, 0);
	wire_vmm_free(expect_status_reply(fd, 910));
	for (int i = 0; i < 3; i++) {
		sent[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(sent[i] >= 0);
	}
	assert_int_equal(prlimit(daemon_main.pid, RLIMIT_NOFILE, NULL, &saved), 0);
	tight = saved;
	tight.rlim_cur = (rlim_t)harness_fd_count(&daemon_main);
	assert_int_equal(prlimit(daemon_main.pid, RLIMIT_NOFILE, &tight, NULL), 0);
	send_status(fd, 911, sent, 3);
	reply = vmm_raw_recv(fd);
	/* The limit back before any assertion, which would leave it for the next test. */
	assert_int_equal(prlimit(daemon_main.pid, RLIMIT_NOFILE, &saved, NULL), 0);
	assert_non_null(reply);
	assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR);
	if (reply->error->errno_value != EMFILE)
		fprintf(stderr, "got errno %u: %s\n", reply->error->errno_value,
			reply->error->message);
	assert_int_equal(reply->error->errno_value, EMFILE);
	assert_int_equal(reply->error->code, VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(reply->error->message, "vcounterd is out of file descriptors"));
	wire_vmm_free(reply);
	/* The connection serves on. */
	send_status(fd, 912, NULL, 0);
	wire_vmm_free(expect_status_reply(fd, 912));
	for (int i = 0; i < 3; i++)
		close(sent[i]);
	close(fd);
	assert_fd_count_settles(baseline_fds);
}

/* Registrations still arriving in several messages do not count against
 * --max-vms: before, two first messages (of any 253 fds) took --max-vms 2
 * from legitimate VMs. Here two are under way at --max-vms 3, and three
 * VMs register all the same (the connections: two, the VMs', and one for
 * the status, the limit of 4). */
static void test_partial_registrations_do_not_take_registered_vm_slots(void **state)
{
	enum {
		BIG = 300,
		PARTIALS = 2
	};
	int kvm = open_kvm_or_skip("registrations in several messages"), conns[PARTIALS];
	struct harness_vm big, vms[TEST_MAX_VMS];
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__RegisterVm reg = VCOUNTER__V1__REGISTER_VM__INIT;
	int fds[UNIX_FD_MAX_FDS], r;
	struct vcounter *vc;
	char id[16];

	r = harness_vm_create(&big, kvm, BIG);
	if (r < 0) {
		fprintf(stderr, "SKIP: this KVM will not create %d vCPUs: %s\n", BIG, strerror(-r));
		harness_vm_destroy(&big);
		close(kvm);
		skip();
	}
	fds[0] = big.vm_fd;
	memcpy(fds + 1, big.vcpu_fds, (UNIX_FD_MAX_FDS - 1) * sizeof(int));
	reg.role = VCOUNTER__V1__ROLE__ROLE_TARGET;
	reg.vcpu_count = BIG;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM;
	req.register_vm = &reg;
	for (int i = 0; i < PARTIALS; i++) {
		snprintf(id, sizeof(id), "vm-big-%d", i);
		reg.vm_id = id;
		req.id = 60 + (uint64_t)i;
		conns[i] = vmm_raw_connect(daemon_main.vmm_socket);
		vmm_raw_send(conns[i], &req, fds, UNIX_FD_MAX_FDS);
		reply = vmm_raw_recv(conns[i]);
		assert_non_null(reply);
		assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_OK);
		wire_vmm_free(reply);
	}
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	for (int i = 0; i < TEST_MAX_VMS; i++) {
		assert_int_equal(harness_vm_create(&vms[i], kvm, 1), 0);
		snprintf(id, sizeof(id), "vm-%d", i);
		assert_int_equal(vcounter_register_vm(vc, id, VCOUNTER_ROLE_TARGET, vms[i].vm_fd,
						      vms[i].vcpu_fds, 1, NULL),
				 0);
	}
	assert_int_equal(registered_vms(), TEST_MAX_VMS);
	vcounter_close(vc);
	for (int i = 0; i < PARTIALS; i++)
		close(conns[i]);
	for (int i = 0; i < TEST_MAX_VMS; i++)
		harness_vm_destroy(&vms[i]);
	assert_fd_count_settles(baseline_fds);
	harness_vm_destroy(&big);
	close(kvm);
}

/* ---- VMs per daemon ---- */

static void test_registered_vms_at_the_limit_and_one_past(void **state)
{
	int kvm = open_kvm_or_skip("the VM limit");
	struct harness_vm vms[TEST_MAX_VMS + 1];
	struct vcounter_vm_info info;
	struct vcounter *vc;
	char id[16];

	for (int i = 0; i <= TEST_MAX_VMS; i++)
		assert_int_equal(harness_vm_create(&vms[i], kvm, 1), 0);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	for (int i = 0; i < TEST_MAX_VMS; i++) {
		snprintf(id, sizeof(id), "vm-%d", i);
		assert_int_equal(vcounter_register_vm(vc, id, VCOUNTER_ROLE_TARGET, vms[i].vm_fd,
						      vms[i].vcpu_fds, 1, &info),
				 0);
	}
	assert_int_equal(vcounter_register_vm(vc, "vm-3", VCOUNTER_ROLE_TARGET, vms[3].vm_fd,
					      vms[3].vcpu_fds, 1, &info),
			 -ENOSPC);
	assert_string_equal(vcounter_last_error(vc), "too many registered VMs (limit 3, max-vms)");
	/* The refused VM's fds are not kept; the three are all there. */
	assert_fd_count_settles(baseline_fds + vmm_conn_fds + 2 * TEST_MAX_VMS);
	assert_int_equal(registered_vms(), TEST_MAX_VMS);

	/* One leaves: the next one fits. */
	assert_int_equal(vcounter_unregister_vm(vc, "vm-0"), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-3", VCOUNTER_ROLE_TARGET, vms[3].vm_fd,
					      vms[3].vcpu_fds, 1, &info),
			 0);
	assert_int_equal(registered_vms(), TEST_MAX_VMS);
	vcounter_close(vc);
	assert_fd_count_settles(baseline_fds);
	for (int i = 0; i <= TEST_MAX_VMS; i++)
		harness_vm_destroy(&vms[i]);
	close(kvm);
}

/* ---- vCPUs per VM ---- */

static void test_vcpus_per_vm_at_the_limit_and_one_past(void **state)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__RegisterVm reg = VCOUNTER__V1__REGISTER_VM__INIT;
	int kvm = open_kvm_or_skip("the vCPU limit"), fd, max_vcpus;
	static int no_fds[VC_MAX_VCPUS + 1];
	struct vcounter_vm_info info;
	struct rlimit nofile;
	struct vcounter *vc;
	struct harness_vm vm;
	int r;

	/* One past: refused before any fd is looked at, by the daemon and by
	 * libvcounter. */
	fd = vmm_raw_connect(daemon_main.vmm_socket);
	reg.vm_id = "vm-1025";
	reg.role = VCOUNTER__V1__ROLE__ROLE_TARGET;
	reg.vcpu_count = VC_MAX_VCPUS + 1;
	req.id = 31;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM;
	req.register_vm = &reg;
	vmm_raw_send(fd, &req, NULL, 0);
	expect_error(fd, 31, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, EINVAL,
		     "vcpu_count 1025 out of range 1..1024");
	close(fd);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-1025", VCOUNTER_ROLE_TARGET, 0, no_fds,
					      VC_MAX_VCPUS + 1, &info),
			 -EINVAL);
	assert_daemon_serving();

	/* At the limit, with a real VM of VC_MAX_VCPUS vCPUs where KVM has as
	 * many (KVM_CAP_MAX_VCPUS), and both sides may hold that many fds. */
	max_vcpus = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS_NR);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &nofile), 0);
	if (max_vcpus < VC_MAX_VCPUS || nofile.rlim_cur < 2 * VC_MAX_VCPUS + 64) {
		fprintf(stderr,
			"SKIP: KVM_CAP_MAX_VCPUS %d, RLIMIT_NOFILE %llu: no VM of %d vCPUs here\n",
			max_vcpus, (unsigned long long)nofile.rlim_cur, VC_MAX_VCPUS);
		vcounter_close(vc);
		close(kvm);
		skip();
	}
	r = harness_vm_create(&vm, kvm, VC_MAX_VCPUS);
	if (r < 0) {
		fprintf(stderr, "SKIP: KVM will not make a VM of %d vCPUs: %s\n", VC_MAX_VCPUS,
			strerror(-r));
		harness_vm_destroy(&vm);
		vcounter_close(vc);
		close(kvm);
		skip();
	}
	/* KVM's own limit is the daemon's here: a 1025th vCPU does not exist. */
	if (max_vcpus == VC_MAX_VCPUS) {
		assert_int_equal(ioctl(vm.vm_fd, KVM_CREATE_VCPU, VC_MAX_VCPUS), -1);
		assert_int_equal(errno, EINVAL);
	}
	assert_int_equal(vcounter_register_vm(vc, "vm-1024", VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      vm.vcpu_fds, VC_MAX_VCPUS, &info),
			 0);
	assert_true(info.guest_tsc_khz > 0);
	assert_fd_count_settles(baseline_fds + vmm_conn_fds + 1 + VC_MAX_VCPUS);
	assert_int_equal(vcounter_unregister_vm(vc, "vm-1024"), 0);
	vcounter_close(vc);
	assert_fd_count_settles(baseline_fds);
	harness_vm_destroy(&vm);
	close(kvm);
}

/* ---- what a VMM connection may hold ---- */

/* A raw RegisterVm of a 1-vCPU target VM, answered later (the probe). */
static void send_register(int fd, uint64_t id, const char *vm_id, const struct harness_vm *vm)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__RegisterVm reg = VCOUNTER__V1__REGISTER_VM__INIT;
	int fds[2] = { vm->vm_fd, vm->vcpu_fds[0] };

	reg.vm_id = (char *)vm_id;
	reg.role = VCOUNTER__V1__ROLE__ROLE_TARGET;
	reg.vcpu_count = 1;
	req.id = id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM;
	req.register_vm = &reg;
	vmm_raw_send(fd, &req, fds, 2);
}

/* VCD_MAX_PENDING_OPS KVM ops the daemon asked a VMM to run and it has not
 * answered: registration's probe is one. A VMM that answers none has 64
 * registrations waiting; the 65th is refused with EBUSY at once, the 64
 * wait on, and another VMM is served. Its own daemon: 65 VMs are more than
 * the main one's --max-vms. */
static void test_kvm_ops_per_vmm_at_the_limit_and_one_past(void **state)
{
	const char *args[] = { "--kvm-op-timeout", "60000", NULL };
	int kvm = open_kvm_or_skip("the KVM op limit");
	static struct harness_vm vms[VCD_MAX_PENDING_OPS_TEST + 1];
	struct daemon_proc *d = &ops_daemon;
	int fd, other, base, ops = 0;
	char vm_id[16];

	assert_int_equal(harness_start(d, args), 0);
	/* harness_start's readiness probe connected once: let that settle. */
	base = harness_fd_count(d);
	for (int i = 0; i < 40; i++) {
		usleep(5000);
		if (harness_fd_count(d) < base)
			base = harness_fd_count(d);
	}
	for (int i = 0; i <= VCD_MAX_PENDING_OPS_TEST; i++)
		assert_int_equal(harness_vm_create(&vms[i], kvm, 1), 0);

	fd = vmm_raw_connect(d->vmm_socket);
	for (int i = 0; i <= VCD_MAX_PENDING_OPS_TEST; i++) {
		snprintf(vm_id, sizeof(vm_id), "vm-op%d", i);
		send_register(fd, 1000 + (uint64_t)i, vm_id, &vms[i]);
	}
	/* 64 probes asked for, then the 65th registration's refusal. */
	for (;;) {
		Vcounter__V1__VmmMessage *msg = vmm_raw_recv(fd);

		assert_non_null(msg);
		if (msg->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP) {
			ops++;
			wire_vmm_free(msg);
			continue;
		}
		if (msg->body_case != VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR)
			fail_msg("body %d after %d KVM ops", msg->body_case, ops);
		if (msg->id != 1000 + VCD_MAX_PENDING_OPS_TEST)
			fail_msg("error to %llu after %d ops: %s", (unsigned long long)msg->id, ops,
				 msg->error->message);
		assert_int_equal(msg->error->errno_value, EBUSY);
		assert_int_equal(msg->error->code, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE);
		assert_non_null(strstr(msg->error->message, "cannot ask the VMM to probe its VM"));
		wire_vmm_free(msg);
		break;
	}
	assert_int_equal(ops, VCD_MAX_PENDING_OPS_TEST);

	/* Another VMM is served; this one's 64 stay until it goes. */
	other = vmm_raw_connect(d->vmm_socket);
	send_status(other, 5, NULL, 0);
	wire_vmm_free(expect_status_reply(other, 5));
	close(other);
	assert_true(harness_fd_count(d) >= base + 1 + 2 * VCD_MAX_PENDING_OPS_TEST);
	close(fd);
	for (int i = 0; i < 400 && harness_fd_count(d) != base; i++)
		usleep(5000);
	assert_int_equal(harness_fd_count(d), base);
	assert_true(harness_alive(d));
	assert_int_equal(harness_stop(d), 0);
	d->pid = 0;
	for (int i = 0; i <= VCD_MAX_PENDING_OPS_TEST; i++)
		harness_vm_destroy(&vms[i]);
	close(kvm);
}

/* The daemon queues nothing for a VMM (SOCK_SEQPACKET, non-blocking sends):
 * the socket's send buffer is the limit, and a VMM that fills it by not
 * reading its replies is disconnected ("dropping connection, cannot
 * send"); others go on. */
static void test_vmm_that_does_not_read_is_disconnected(void **state)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;
	int fd = vmm_raw_connect(daemon_main.vmm_socket), replies = 0, sent;
	Vcounter__V1__VmmMessage *msg;
	uint8_t *buf;
	size_t len;

	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	assert_int_equal(wire_vmm_pack_frame(&req, &buf, &len), 0);
	for (sent = 0; sent < 100000; sent++) {
		if (send(fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len)
			break; /* dropped: EPIPE or ECONNRESET */
		if (sent % 64 == 0 &&
		    harness_log_contains(&daemon_main, "dropping connection, cannot send"))
			break;
	}
	free(buf);
	assert_true(sent < 100000);
	while ((msg = vmm_raw_recv(fd))) {
		assert_int_equal(msg->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY);
		replies++;
		wire_vmm_free(msg);
	}
	/* Some replies fit in the buffer, then the daemon closed. */
	assert_true(replies > 0 && replies < sent);
	assert_true(harness_log_contains(&daemon_main, "dropping connection, cannot send"));
	close(fd);
	assert_fd_count_settles(baseline_fds);
	assert_daemon_serving();
}

/* ---- watchers ---- */

/* The control socket the helpers below use: daemon_main's, unless a test
 * runs its own daemon (ops_daemon). */
static const char *ctl_socket(void)
{
	return ops_daemon.pid > 0 ? ops_daemon.control_socket : daemon_main.control_socket;
}

static struct vcounter_ctl *ctl_connect(unsigned timeout_ms)
{
	struct vcounter_ctl_options opts = { .socket_path = ctl_socket(),
					     .timeout_ms = timeout_ms };
	struct vcounter_ctl *ctl = NULL;

	if (vcounter_ctl_connect(&opts, &ctl) < 0)
		fail_msg("control connect: %s", vcounter_ctl_last_error(NULL));
	return ctl;
}

static uint32_t watcher_count(void)
{
	struct vcounter_ctl *ctl = ctl_connect(5000);
	struct vcounter_ctl_host host;
	uint32_t n;

	assert_int_equal(vcounter_ctl_host_status(ctl, &host), 0);
	n = host.watchers;
	vcounter_ctl_close(ctl);
	return n;
}

static void wait_watchers(uint32_t want)
{
	for (int i = 0; i < 500 && watcher_count() != want; i++)
		usleep(10000);
	assert_int_equal(watcher_count(), want);
}

static int tell_accepted(const struct vcounter_ctl_event *event, void *userdata)
{
	int fd = *(int *)userdata;

	if (!event)
		(void)!write(fd, "w", 1);
	return 0;
}

/* A process that holds one WatchEvents stream open until it is killed; its
 * pid once the daemon has accepted the watch. */
static pid_t start_watcher(void)
{
	int p[2];
	pid_t pid;
	char c;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct vcounter_ctl_options opts = { .socket_path = ctl_socket() };
		struct vcounter_ctl *ctl;

		close(p[0]);
		if (vcounter_ctl_connect(&opts, &ctl) < 0)
			_exit(1);
		vcounter_ctl_watch(ctl, NULL, NULL, tell_accepted, &p[1]);
		_exit(2);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
	return pid;
}

static void stop_watcher(pid_t pid)
{
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
}

/* The daemon sends a watch's response headers before it decides (events
 * must not be missed), so a refused watch sees them, then its status. */
static int count_events(const struct vcounter_ctl_event *event, void *userdata)
{
	if (event)
		(*(int *)userdata)++;
	return 0;
}

static void test_watchers_at_the_limit_and_one_past(void **state)
{
	pid_t watchers[TEST_MAX_WATCHERS];
	struct vcounter_ctl *ctl;
	int events = 0;

	for (int i = 0; i < TEST_MAX_WATCHERS; i++)
		watchers[i] = start_watcher();
	wait_watchers(TEST_MAX_WATCHERS);

	ctl = ctl_connect(5000);
	assert_true(vcounter_ctl_watch(ctl, NULL, NULL, count_events, &events) < 0);
	assert_int_equal(events, 0);
	assert_int_equal(vcounter_ctl_status(ctl), VCOUNTER_CTL_STATUS_RESOURCE_EXHAUSTED);
	if (!strstr(vcounter_ctl_last_error(ctl), "too many watchers (limit 2, max-watchers)"))
		fail_msg("error: %s", vcounter_ctl_last_error(ctl));
	/* The refusal took nobody's place, and the connection is still good. */
	assert_int_equal(watcher_count(), TEST_MAX_WATCHERS);

	vcounter_ctl_close(ctl);

	/* One leaves: room for one more. */
	stop_watcher(watchers[0]);
	wait_watchers(TEST_MAX_WATCHERS - 1);
	watchers[0] = start_watcher();
	wait_watchers(TEST_MAX_WATCHERS);
	for (int i = 0; i < TEST_MAX_WATCHERS; i++)
		stop_watcher(watchers[i]);
	wait_watchers(0);
	assert_daemon_serving();
}

/* A reload that lowers a limit keeps what is there and refuses new ones
 * until the count is under the new limit ([control] max-watchers from a
 * file, 2 then 1). */
static void test_reload_lowering_a_limit_keeps_what_is_there(void **state)
{
	char conf_path[sizeof(certs_dir) + 32], config_arg[sizeof(conf_path) + 16];
	const char *args[] = { config_arg, NULL };
	pid_t watchers[2];
	struct vcounter_ctl *ctl;
	FILE *f;

	snprintf(conf_path, sizeof(conf_path), "%s/limits.conf", certs_dir);
	snprintf(config_arg, sizeof(config_arg), "--config=%s", conf_path);
	f = fopen(conf_path, "we");
	assert_non_null(f);
	fputs("[control]\nmax-watchers = 2\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(harness_start(&ops_daemon, args), 0);

	watchers[0] = start_watcher();
	watchers[1] = start_watcher();
	wait_watchers(2);
	f = fopen(conf_path, "we");
	assert_non_null(f);
	fputs("[control]\nmax-watchers = 1\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(kill(ops_daemon.pid, SIGHUP), 0);
	for (int i = 0; i < 500 && !harness_log_contains(&ops_daemon, "setting changed"); i++)
		usleep(10000);
	assert_true(harness_log_contains(&ops_daemon,
					 "reload: [control] max-watchers = '1' (was '2')"));

	/* Both stay; a third, and a second once one left, are refused. */
	assert_int_equal(watcher_count(), 2);
	ctl = ctl_connect(5000);
	assert_true(vcounter_ctl_watch(ctl, NULL, NULL, count_events, &(int){ 0 }) < 0);
	assert_int_equal(vcounter_ctl_status(ctl), VCOUNTER_CTL_STATUS_RESOURCE_EXHAUSTED);
	if (!strstr(vcounter_ctl_last_error(ctl), "too many watchers (limit 1, max-watchers)"))
		fail_msg("error: %s", vcounter_ctl_last_error(ctl));
	stop_watcher(watchers[0]);
	wait_watchers(1);
	assert_true(vcounter_ctl_watch(ctl, NULL, NULL, count_events, &(int){ 0 }) < 0);
	assert_int_equal(vcounter_ctl_status(ctl), VCOUNTER_CTL_STATUS_RESOURCE_EXHAUSTED);
	vcounter_ctl_close(ctl);
	stop_watcher(watchers[1]);
	wait_watchers(0);
	watchers[0] = start_watcher();
	wait_watchers(1);
	stop_watcher(watchers[0]);
	assert_int_equal(harness_stop(&ops_daemon), 0);
	unlink(conf_path);
}

/* ---- migrations ---- */

static int start_migration(struct vcounter_ctl *ctl, const char *vm_id, const char *address,
			   char *ret_id, size_t size)
{
	struct vcounter_ctl_migration mig;
	int r = vcounter_ctl_start_migration(ctl, vm_id, address, TARGET_NAME, &mig);

	if (r == 0) {
		snprintf(ret_id, size, "%s", mig.migration_id);
		vcounter_ctl_migration_clear(&mig);
	}
	return r;
}

static size_t running_migrations(struct vcounter_ctl *ctl)
{
	struct vcounter_ctl_migration *list = NULL;
	size_t n = 0;

	assert_int_equal(vcounter_ctl_list_migrations(ctl, NULL, true, &list, &n), 0);
	vcounter_ctl_migrations_free(list, n);
	return n;
}

/* The target is a TCP port that accepts and never says a word: each
 * migration stays in preparing (the TLS handshake waits for --peer-timeout,
 * a minute), so they are all running when the next one comes. */
static void test_running_migrations_at_the_limit_and_one_past(void **state)
{
	int kvm = open_kvm_or_skip("the migration limit");
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sa_len = sizeof(sa);
	struct harness_vm vms[TEST_MAX_MIGRATIONS + 1];
	char ids[TEST_MAX_MIGRATIONS + 1][64], vm_id[16], address[64];
	struct vcounter_ctl_migration aborted;
	struct vcounter_vm_info info;
	struct vcounter_ctl *ctl;
	struct vcounter *vc;
	int silent;

	silent = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(silent >= 0);
	assert_int_equal(bind(silent, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(silent, 16), 0);
	assert_int_equal(getsockname(silent, (struct sockaddr *)&sa, &sa_len), 0);
	snprintf(address, sizeof(address), "127.0.0.1:%d", ntohs(sa.sin_port));

	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	for (int i = 0; i <= TEST_MAX_MIGRATIONS; i++) {
		assert_int_equal(harness_vm_create(&vms[i], kvm, 1), 0);
		snprintf(vm_id, sizeof(vm_id), "vm-m%d", i);
		assert_int_equal(vcounter_register_vm(vc, vm_id, VCOUNTER_ROLE_SOURCE, vms[i].vm_fd,
						      vms[i].vcpu_fds, 1, &info),
				 0);
	}
	ctl = ctl_connect(10000);
	for (int i = 0; i < TEST_MAX_MIGRATIONS; i++) {
		snprintf(vm_id, sizeof(vm_id), "vm-m%d", i);
		if (start_migration(ctl, vm_id, address, ids[i], sizeof(ids[i])) < 0)
			fail_msg("StartMigration %s: %s", vm_id, vcounter_ctl_last_error(ctl));
	}
	assert_int_equal(running_migrations(ctl), TEST_MAX_MIGRATIONS);

	assert_true(start_migration(ctl, "vm-m2", address, ids[2], sizeof(ids[2])) < 0);
	assert_int_equal(vcounter_ctl_status(ctl), VCOUNTER_CTL_STATUS_RESOURCE_EXHAUSTED);
	if (!strstr(vcounter_ctl_last_error(ctl), "too many migrations running (limit 2)"))
		fail_msg("error: %s", vcounter_ctl_last_error(ctl));
	/* Those running are untouched. */
	assert_int_equal(running_migrations(ctl), TEST_MAX_MIGRATIONS);

	/* One ends: the next one takes the finished one's place. */
	assert_int_equal(vcounter_ctl_abort_migration(ctl, ids[0], "test", &aborted), 0);
	vcounter_ctl_migration_clear(&aborted);
	if (start_migration(ctl, "vm-m2", address, ids[2], sizeof(ids[2])) < 0)
		fail_msg("StartMigration vm-m2: %s", vcounter_ctl_last_error(ctl));
	assert_int_equal(running_migrations(ctl), TEST_MAX_MIGRATIONS);

	for (int i = 1; i <= TEST_MAX_MIGRATIONS; i++) {
		assert_int_equal(vcounter_ctl_abort_migration(ctl, ids[i], "test", &aborted), 0);
		vcounter_ctl_migration_clear(&aborted);
	}
	vcounter_ctl_close(ctl);
	vcounter_close(vc);
	close(silent);
	for (int i = 0; i <= TEST_MAX_MIGRATIONS; i++)
		harness_vm_destroy(&vms[i]);
	close(kvm);
	assert_daemon_serving();
}

/* ---- the daemon ---- */

/* A test that failed midway leaves no daemon of its own behind. */
static int stop_ops_daemon(void **state)
{
	if (ops_daemon.pid > 0) {
		harness_dump_log(&ops_daemon);
		harness_stop(&ops_daemon);
		ops_daemon.pid = 0;
	}
	return 0;
}

static int group_setup(void **state)
{
	char ca[320], cert[320], key[320];
	struct rlimit nofile;
	const char *args[] = {
		"--max-vms",
		STRINGIFY(TEST_MAX_VMS),
		"--max-vmm-connections",
		STRINGIFY(TEST_MAX_VMM_CONNS),
		"--max-watchers",
		STRINGIFY(TEST_MAX_WATCHERS),
		"--max-migrations",
		STRINGIFY(TEST_MAX_MIGRATIONS),
		"--host-name",
		SOURCE_NAME,
		"--ca",
		ca,
		"--cert",
		cert,
		"--key",
		key,
		"--peer-timeout",
		"60000",
		NULL,
	};

	signal(SIGPIPE, SIG_IGN);
	/* A VM of VC_MAX_VCPUS vCPUs is that many fds on both sides (the
	 * daemon inherits this): raise the soft limit as far as allowed. */
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &nofile);
	}
	certs_made_here = !getenv("VC_TEST_CERT_DIR");
	if (harness_certs(certs_dir, sizeof(certs_dir)) < 0) {
		fprintf(stderr, "cannot make test certificates (VC_TEST_CERTS unset?)\n");
		return -1;
	}
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, "host-a", "pem");
	harness_cert_path(key, sizeof(key), certs_dir, "host-a", "key");
	if (harness_start(&daemon_main, args) < 0)
		return -1;
	/* harness_start's readiness probe connected once: let that settle. */
	baseline_fds = harness_settled_fd_count(&daemon_main);
	vmm_conn_fds = vmm_raw_conn_fds(&daemon_main);
	return baseline_fds > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	int r = harness_finish(&daemon_main);

	if (certs_made_here && certs_dir[0])
		harness_remove_tree(certs_dir);
	return r;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_vmm_frame_of_exactly_the_maximum_is_served_one_byte_more_refused),
		cmocka_unit_test(test_fds_253_per_message_arrive_254_cannot_be_sent),
		cmocka_unit_test(test_vmm_connections_at_the_limit_and_one_past),
		cmocka_unit_test(test_vmm_socket_at_the_daemon_fd_limit_pauses_then_serves),
		cmocka_unit_test(test_fds_sent_to_a_daemon_out_of_fds_get_emfile),
		cmocka_unit_test(test_registered_vms_at_the_limit_and_one_past),
		cmocka_unit_test(test_partial_registrations_do_not_take_registered_vm_slots),
		cmocka_unit_test(test_vcpus_per_vm_at_the_limit_and_one_past),
		cmocka_unit_test_teardown(test_kvm_ops_per_vmm_at_the_limit_and_one_past,
					  stop_ops_daemon),
		cmocka_unit_test(test_vmm_that_does_not_read_is_disconnected),
		cmocka_unit_test(test_watchers_at_the_limit_and_one_past),
		cmocka_unit_test_teardown(test_reload_lowering_a_limit_keeps_what_is_there,
					  stop_ops_daemon),
		cmocka_unit_test(test_running_migrations_at_the_limit_and_one_past),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
