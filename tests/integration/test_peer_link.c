/* test_peer_link.c - this test is the source daemon, over mutual TLS 1.3, and the target VMM of
 * a real vcounterd target: hostile handshakes and frames, every protocol step with its replays,
 * and the apply on a real KVM VM whose offsets are read back here. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <netinet/in.h>
#include <poll.h>
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
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "counter_state.h"
#include "daemon_harness.h"
#include "kvm_x86.h"
#include "frame.h"
#include "hostclock.h"
#include "macro.h"
#include "tls_client.h"
#include "vcounter/vcounter.h"
#include "wire.h"

#define TARGET_NAME	"host-b.test"
#define URI_NAME	"spiffe://fleet.test/host-u"
#define TARGET_VM_ID	"vm-target"
#define RECV_TIMEOUT_MS 5000
#define LOG_WAIT_MS	3000
/* Fallback anchor rate when no KVM VM tells us the real one: any valid value
 * does for requests refused before the arithmetic. */
#define DEFAULT_KHZ	2000000u
/* Large source offsets, as a guest that ran long on another host has. */
#define SRC_OFFSET	UINT64_C(0x0000100000000000)

/* daemon/peer_link.h PEER_LOG_BURST: log lines per peer per interval. */
#define PEER_LOG_BURST_TEST 20

static char certs_dir[256];
static bool certs_made_here;
static struct daemon_proc target;

/* ---- the target VM: created here (this process is the target VMM) ---- */

struct target_vm {
	bool ready;
	int kvm_fd;
	int vm_fd;
	int vcpu_fds[2];
	bool honours_offsets; /* asked of KVM directly, not of the daemon */
	uint32_t tsc_khz;     /* KVM_GET_TSC_KHZ of vCPU 0 */
	struct vcounter *vc;
	struct vcounter_vm_info info;
};

static struct target_vm tvm = { .kvm_fd = -1, .vm_fd = -1, .vcpu_fds = { -1, -1 } };

/* ---- a TLS 1.3 client, as a peer daemon would be (tls_client.h) ---- */

enum {
	RECV_CLOSED = TLS_CLIENT_CLOSED, /* orderly close, or EOF without close_notify */
	RECV_MESSAGE = 1,
};

/* Connect and handshake as certs_dir/cert_name, checking the daemon as a
 * peer does; see tls_client_open. */
static bool peer_open(struct tls_client *p, const char *cert_name, bool tls12_only)
{
	return tls_client_open(p, &(struct tls_client_opts){
					  .certs_dir = certs_dir,
					  .cert_name = cert_name,
					  .server_name = TARGET_NAME,
					  .port = target.peer_port,
					  .version = tls12_only ? TLS1_2_VERSION : TLS1_3_VERSION,
					  .timeout_ms = RECV_TIMEOUT_MS,
				  });
}

static Vcounter__V1__PeerMessage *expect_msg(struct tls_client *p,
					     Vcounter__V1__PeerMessage__BodyCase body)
{
	Vcounter__V1__PeerMessage *msg = NULL;
	int r = tls_client_recv_peer(p, &msg);

	if (r != RECV_MESSAGE)
		fprintf(stderr, "expected body %d, got recv result %d (%s)\n", body, r, p->error);
	assert_int_equal(r, RECV_MESSAGE);
	if (msg->body_case != body)
		fprintf(stderr, "expected body %d, got %d%s%s\n", body, msg->body_case,
			msg->body_case == VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR ? ": " : "",
			msg->body_case == VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR
				? msg->error->message
				: "");
	assert_int_equal(msg->body_case, body);
	return msg;
}

/* An Error reply naming request id, with this code and a message holding substr. */
static void expect_error(struct tls_client *p, uint64_t id, Vcounter__V1__ErrorCode code,
			 const char *substr)
{
	Vcounter__V1__PeerMessage *msg = expect_msg(p, VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR);

	if (msg->error->code != code || (substr && !strstr(msg->error->message, substr)))
		fprintf(stderr, "got code %d message '%s', expected code %d with '%s'\n",
			msg->error->code, msg->error->message, code, substr ? substr : "");
	assert_int_equal(msg->id, id);
	assert_int_equal(msg->error->code, code);
	assert_true(msg->error->errno_value > 0);
	if (substr)
		assert_non_null(strstr(msg->error->message, substr));
	wire_peer_free(msg);
}

static void expect_hello(struct tls_client *p)
{
	Vcounter__V1__PeerMessage *msg = expect_msg(p, VCOUNTER__V1__PEER_MESSAGE__BODY_HELLO);

	assert_int_equal(msg->hello->protocol_version, 1);
	assert_string_equal(msg->hello->host_name, TARGET_NAME);
	/* The default: every backend this build has, in DESIGN.md order. */
	assert_int_equal(msg->hello->n_backends, 2);
	assert_int_equal(msg->hello->backends[0], VCOUNTER__V1__BACKEND__BACKEND_KVM_SYSCOUNTER);
	assert_int_equal(msg->hello->backends[1], VCOUNTER__V1__BACKEND__BACKEND_KVM_X86);
	wire_peer_free(msg);
}

/* An established link: handshake done and the daemon's Hello read. */
static void peer_open_link(struct tls_client *p, const char *cert_name)
{
	bool ok = peer_open(p, cert_name, false);

	if (!ok)
		fprintf(stderr, "handshake as %s failed: %s\n", cert_name, p->error);
	assert_true(ok);
	expect_hello(p);
}

static void peer_send_raw(struct tls_client *p, const uint8_t *buf, size_t len)
{
	size_t written = 0;

	assert_int_equal(SSL_write_ex(p->ssl, buf, len, &written), 1);
	assert_int_equal(written, len);
}

static void peer_send(struct tls_client *p, const Vcounter__V1__PeerMessage *msg)
{
	uint8_t *buf;
	size_t len;

	assert_int_equal(wire_peer_pack_frame(msg, &buf, &len), 0);
	peer_send_raw(p, buf, len);
	free(buf);
}

/* A PeerMessage with id and field 50 (no body this version knows), framed. */
static void send_unknown_body(struct tls_client *p, uint64_t id)
{
	uint8_t buf[32];
	size_t n = FRAME_HEADER_BYTES;

	buf[n++] = 0x08; /* field 1 (id), varint */
	n += harness_put_varint(buf + n, id);
	buf[n++] = 0x90; /* field 50, varint: tag 400 */
	buf[n++] = 0x03;
	buf[n++] = 0x01;
	assert_int_equal(frame_header_encode(n - FRAME_HEADER_BYTES, buf), 0);
	peer_send_raw(p, buf, n);
}

/* Frames on one link are handled in order: once this is answered, every
 * message sent before it (including those that get no reply) was handled. */
static void ping(struct tls_client *p, uint64_t id)
{
	send_unknown_body(p, id);
	expect_error(p, id, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED, "unknown");
}

/* ---- daemon log ---- */

static bool log_has_line(const char *a, const char *b)
{
	char line[4096];
	bool found = false;
	FILE *f = fopen(target.log_path, "re");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, a) && (!b || strstr(line, b));
	fclose(f);
	return found;
}

/* Some line holds a (and b, if given), within LOG_WAIT_MS. */
static void assert_log_line(const char *a, const char *b)
{
	for (int i = 0; i < LOG_WAIT_MS / 10 && !log_has_line(a, b); i++)
		usleep(10000);
	if (!log_has_line(a, b)) {
		harness_dump_log(&target);
		fprintf(stderr, "no log line with '%s'%s%s\n", a, b ? " and " : "", b ? b : "");
	}
	assert_true(log_has_line(a, b));
}

/* The daemon lives and a fresh good link gets a Hello. */
static void assert_target_serving(void)
{
	struct tls_client p;

	assert_true(harness_alive(&target));
	peer_open_link(&p, "host-a");
	tls_client_close(&p);
}

/* ---- messages ---- */

static void random_migration_id(char ret[VC_MIGRATION_ID_LEN + 1])
{
	uint8_t raw[VC_MIGRATION_ID_LEN / 2];

	assert_int_equal(getrandom(raw, sizeof(raw), 0), (ssize_t)sizeof(raw));
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(ret + 2 * i, 3, "%02x", raw[i]);
}

static uint32_t anchor_khz(void)
{
	return tvm.ready ? tvm.tsc_khz : DEFAULT_KHZ;
}

/* A source state as a source daemon sends it: offsets first, first + 1000,
 * ...; a fresh bracket anchor and sync error; kvmclock with realtime. */
static void make_state(struct counter_state *s, uint32_t guest_khz, uint32_t n_vcpus,
		       uint64_t first_offset)
{
	memset(s, 0, sizeof(*s));
	s->backend = BACKEND_KVM_X86;
	s->arch = COUNTER_ARCH_X86_TSC;
	s->guest_tsc_khz = guest_khz;
	s->n_vcpus = n_vcpus;
	for (uint32_t i = 0; i < n_vcpus; i++)
		s->offset_cycles[i] = first_offset + 1000 * i;
	assert_int_equal(hostclock_sync_error(&s->sync), 0);
	assert_int_equal(hostclock_bracket_anchor(anchor_khz(), &s->anchor), 0);
	/* A source guest whose kvmclock read 5 s at the anchor, as a real
	 * source's KVM_GET_CLOCK pairs it (realtime and host TSC), so that the
	 * target's kvmclock check has a reading to compare with. */
	s->kvmclock.clock_ns = 5 * NSEC_PER_SEC;
	s->kvmclock.flags = KVM_CLOCK_REALTIME;
	s->kvmclock.realtime_ns =
		s->anchor.tai_ns - (uint64_t)((int64_t)s->sync.tai_offset_s * NSEC_PER_SEC);
	s->kvmclock.host_tsc = s->anchor.host_tsc;
}

static struct counter_state *state_new(uint32_t guest_khz, uint32_t n_vcpus, uint64_t first)
{
	struct counter_state *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	make_state(s, guest_khz, n_vcpus, first);
	return s;
}

/* state NULL: a Prepare without CounterState. */
static void send_prepare(struct tls_client *p, uint64_t id, const char *migration_id,
			 const char *vm_id, const struct counter_state *state)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Prepare prep = VCOUNTER__V1__PREPARE__INIT;
	struct wire_counter_state_pb pb;

	prep.migration_id = (char *)migration_id;
	prep.vm_id = (char *)vm_id;
	if (state) {
		wire_counter_state_to_pb(state, &pb);
		prep.state = &pb.state;
	}
	msg.id = id;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE;
	msg.prepare = &prep;
	peer_send(p, &msg);
}

static void send_final(struct tls_client *p, uint64_t id, const char *migration_id,
		       uint64_t generation, const struct counter_state *state)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__FinalState fin = VCOUNTER__V1__FINAL_STATE__INIT;
	struct wire_counter_state_pb pb;

	wire_counter_state_to_pb(state, &pb);
	fin.migration_id = (char *)migration_id;
	fin.generation = generation;
	fin.state = &pb.state;
	msg.id = id;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE;
	msg.final_state = &fin;
	peer_send(p, &msg);
}

static void send_abort(struct tls_client *p, uint64_t id, const char *migration_id,
		       const char *reason)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Abort ab = VCOUNTER__V1__ABORT__INIT;

	ab.migration_id = (char *)migration_id;
	ab.reason = (char *)reason;
	msg.id = id;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ABORT;
	msg.abort = &ab;
	peer_send(p, &msg);
}

static void send_ack(struct tls_client *p, uint64_t id, const char *migration_id)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Ack ack = VCOUNTER__V1__ACK__INIT;

	ack.migration_id = (char *)migration_id;
	msg.id = id;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ACK;
	msg.ack = &ack;
	peer_send(p, &msg);
}

static void expect_prepare_ack(struct tls_client *p, uint64_t id, const char *migration_id)
{
	Vcounter__V1__PeerMessage *msg =
		expect_msg(p, VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE_ACK);

	assert_int_equal(msg->id, id);
	assert_string_equal(msg->prepare_ack->migration_id, migration_id);
	wire_peer_free(msg);
}

static void expect_final_ack(struct tls_client *p, uint64_t id, const char *migration_id,
			     uint64_t generation)
{
	Vcounter__V1__PeerMessage *msg = expect_msg(p, VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_ACK);

	assert_int_equal(msg->id, id);
	assert_string_equal(msg->final_ack->migration_id, migration_id);
	assert_int_equal(msg->final_ack->generation, generation);
	wire_peer_free(msg);
}

/* ---- KVM ---- */

static uint64_t read_offset(int vcpu_fd)
{
	uint64_t v = 0;

	assert_int_equal(kvm_x86_get_tsc_offset(vcpu_fd, &v), 0);
	return v;
}

/* Create the 2-vCPU target VM and register it with the daemon as
 * ROLE_TARGET, once; skip without /dev/kvm. */
static void target_vm_or_skip(void)
{
	int khz;

	if (tvm.ready)
		return;
	tvm.kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (tvm.kvm_fd < 0) {
		fprintf(stderr, "SKIP: /dev/kvm unavailable (%s): no target VM to migrate to\n",
			strerror(errno));
		skip();
	}
	tvm.vm_fd = ioctl(tvm.kvm_fd, KVM_CREATE_VM, 0);
	assert_true(tvm.vm_fd >= 0);
	for (int i = 0; i < 2; i++) {
		tvm.vcpu_fds[i] = ioctl(tvm.vm_fd, KVM_CREATE_VCPU, i);
		assert_true(tvm.vcpu_fds[i] >= 0);
	}
	khz = ioctl(tvm.vcpu_fds[0], KVM_GET_TSC_KHZ);
	assert_true(khz > 0);
	tvm.tsc_khz = (uint32_t)khz;
	tvm.honours_offsets = harness_kvm_honours_offsets(tvm.vcpu_fds[0]);

	assert_int_equal(vcounter_connect(target.vmm_socket, &tvm.vc), 0);
	assert_int_equal(vcounter_register_vm(tvm.vc, TARGET_VM_ID, VCOUNTER_ROLE_TARGET, tvm.vm_fd,
					      tvm.vcpu_fds, 2, &tvm.info),
			 0);
	assert_string_equal(tvm.info.backend, "kvm-x86");
	assert_int_equal(tvm.info.guest_tsc_khz, tvm.tsc_khz);
	tvm.ready = true;
}

static void require_offset_control(void)
{
	target_vm_or_skip();
	if (!tvm.honours_offsets) {
		fprintf(stderr, "SKIP: rest of the protocol needs a KVM that honours offsets "
				"(run in tests/vm)\n");
		skip();
	}
}

static void target_vm_release(void)
{
	vcounter_close(tvm.vc);
	for (int i = 0; i < 2; i++)
		if (tvm.vcpu_fds[i] >= 0)
			close(tvm.vcpu_fds[i]);
	if (tvm.vm_fd >= 0)
		close(tvm.vm_fd);
	if (tvm.kvm_fd >= 0)
		close(tvm.kvm_fd);
}

/* ---- setup ---- */

/* The whole directory: gen-certs.sh makes more files than this test uses (controllers,
 * rotation), and a list here fell behind it, leaving keys in $TMPDIR after every run. */
static void remove_certs(void)
{
	if (!certs_made_here || getenv("VC_KEEP_TEST_DIRS"))
		return;
	harness_remove_tree(certs_dir);
}

static int group_setup(void **state)
{
	char ca[320], cert[320], key[320];
	const char *args[] = {
		"--listen",	"127.0.0.1:0",
		"--host-name",	TARGET_NAME,
		"--ca",		ca,
		"--cert",	cert,
		"--key",	key,
		"--allow-peer", "host-a.test",
		"--allow-peer", URI_NAME,
		NULL,
	};

	/* SSL_write to a daemon that closed on us must fail, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	certs_made_here = !getenv("VC_TEST_CERT_DIR");
	if (harness_certs(certs_dir, sizeof(certs_dir)) < 0) {
		fprintf(stderr, "cannot make test certificates (VC_TEST_CERTS unset?)\n");
		return -1;
	}
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, "host-b", "pem");
	harness_cert_path(key, sizeof(key), certs_dir, "host-b", "key");
	if (harness_start(&target, args) < 0) {
		remove_certs();
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	target_vm_release();
	if (!harness_alive(&target))
		harness_dump_log(&target);
	if (harness_wrapped())
		harness_dump_log(&target);
	if (harness_stop(&target) != 0) {
		fprintf(stderr, "vcounterd did not exit cleanly (see its log above)\n");
		return -1;
	}
	remove_certs();
	return 0;
}

/* ---- 1. handshakes ---- */

static void test_allowed_dns_and_uri_identities_get_hello(void **state)
{
	struct tls_client p;

	peer_open_link(&p, "host-a");
	tls_client_close(&p);
	peer_open_link(&p, "uri");
	tls_client_close(&p);
	assert_log_line("peer=host-a.test address=incoming: link up", NULL);
	assert_log_line("peer=" URI_NAME " address=incoming: link up", NULL);
}

/* A refused handshake: no Hello ever arrives (the link ends or fails),
 * the log names the reason next to our address, and others still get in. */
static void assert_handshake_refused(const char *cert_name, bool tls12_only, const char *reason)
{
	Vcounter__V1__PeerMessage *msg = NULL;
	char remote[32];
	struct tls_client p;
	int r = -EPROTO;

	if (peer_open(&p, cert_name, tls12_only))
		r = tls_client_recv_peer(&p, &msg);
	if (r == RECV_MESSAGE)
		fprintf(stderr, "the daemon accepted %s and sent body %d\n", cert_name,
			msg->body_case);
	assert_true(r == RECV_CLOSED || r == -EPROTO || r == -ECONNRESET);
	snprintf(remote, sizeof(remote), "peer 127.0.0.1:%d ", p.local_port);
	tls_client_close(&p);
	assert_log_line("incoming connection refused", remote);
	assert_log_line(remote, reason);
	assert_target_serving();
}

static void test_client_cert_from_other_ca_is_refused(void **state)
{
	/* other-host carries host-a.test, an allowed name, but another CA signed it. */
	assert_handshake_refused("other-host", false,
				 "certificate verification failed: unable to get local issuer");
}

static void test_client_cert_with_san_not_allowed_is_refused(void **state)
{
	assert_handshake_refused("evil", false, "allow-list");
}

static void test_expired_client_cert_is_refused(void **state)
{
	assert_handshake_refused("expired", false, "certificate has expired");
}

static void test_tls12_only_client_is_refused(void **state)
{
	assert_handshake_refused("host-a", true, "unsupported protocol");
}

static void test_plaintext_on_the_tls_port_is_refused(void **state)
{
	static const char request[] = "GET / HTTP/1.1\r\nHost: host-b.test\r\n\r\n";
	struct pollfd pfd;
	char remote[32], buf[256];
	int port, fd = tls_client_tcp_connect(target.peer_port, RECV_TIMEOUT_MS, &port);
	ssize_t n;

	assert_int_equal(write(fd, request, sizeof(request) - 1), (ssize_t)sizeof(request) - 1);
	/* The daemon may answer with an alert record, then closes. */
	do {
		pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&pfd, 1, RECV_TIMEOUT_MS), 1);
		n = read(fd, buf, sizeof(buf));
	} while (n > 0);
	assert_true(n == 0 || errno == ECONNRESET);
	close(fd);
	snprintf(remote, sizeof(remote), "peer 127.0.0.1:%d ", port);
	assert_log_line("incoming connection refused", remote);
	assert_log_line(remote, "TLS with peer");
	assert_target_serving();
}

/* The peer port flooded by strangers that connect and never handshake:
 * an allowed peer still gets in. Before, 64 handshake slots were shared by
 * everyone with a 10 s deadline, and 64 stalled connections from anywhere
 * locked every peer out. One address now holds at most
 * PEER_LISTENER_MAX_PER_SOURCE slots, and when many addresses fill them
 * all, the oldest waiting makes room for the newest. */
static void test_strangers_that_never_handshake_do_not_lock_a_peer_out(void **state)
{
	enum {
		ONE_HOST = 200,
		HOSTS = 16,
		PER_HOST = 8
	};
	static int stalled[ONE_HOST + HOSTS * PER_HOST];
	struct tls_client p;
	size_t n = 0;
	char addr[32];

	/* 200 from one host: it keeps 8, the rest are closed at accept. */
	for (int i = 0; i < ONE_HOST; i++) {
		stalled[n] = harness_tcp_connect_from("127.0.0.2", target.peer_port);
		assert_true(stalled[n++] >= 0);
	}
	for (int i = 0; i < 3; i++) {
		peer_open_link(&p, "host-a");
		ping(&p, 40 + (uint64_t)i);
		tls_client_close(&p);
	}
	assert_true(harness_log_contains(&target, "closed at accept: that address has 8 TLS "
						  "handshakes running"));
	/* 128 more from 16 hosts, 8 each: every slot taken by strangers, and
	 * still the peer's handshake gets one. */
	for (int h = 0; h < HOSTS; h++) {
		snprintf(addr, sizeof(addr), "127.0.1.%d", h + 1);
		for (int i = 0; i < PER_HOST; i++) {
			stalled[n] = harness_tcp_connect_from(addr, target.peer_port);
			assert_true(stalled[n++] >= 0);
		}
	}
	for (int i = 0; i < 3; i++) {
		peer_open_link(&p, "host-a");
		ping(&p, 50 + (uint64_t)i);
		tls_client_close(&p);
	}
	assert_true(harness_log_contains(&target, "the oldest, closed to make room"));
	for (size_t i = 0; i < n; i++)
		close(stalled[i]);
	assert_target_serving();
}

/* ---- 2. garbage on an established link ---- */

static void test_garbage_protobuf_gets_invalid_argument(void **state)
{
	/* A length-delimited field whose length runs past the end. */
	static const uint8_t buf[] = { 0, 0, 0, 4, 0x52, 0x7f, 0x01, 0x02 };
	struct tls_client p;

	peer_open_link(&p, "host-a");
	peer_send_raw(&p, buf, sizeof(buf));
	expect_error(&p, 0, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "not a valid PeerMessage");
	/* The link survives a bad message: the framing is intact. */
	ping(&p, 3);
	tls_client_close(&p);
	assert_target_serving();
}

/* 200 garbage frames from an authenticated peer: each is answered, but what
 * what the daemon logs of that link is bounded (PEER_LOG_BURST lines per
 * interval). Before, each was a warning: 200k frames made 240k lines. */
static void test_garbage_flood_from_a_peer_is_answered_but_its_log_bounded(void **state)
{
	static const uint8_t buf[] = { 0, 0, 0, 4, 0x52, 0x7f, 0x01, 0x02 };
	const char *line = "peer=host-a.test: refusing request 0";
	int before = harness_file_count(target.log_path, line), lines;
	struct tls_client p;

	peer_open_link(&p, "host-a");
	for (int i = 0; i < 200; i++) {
		peer_send_raw(&p, buf, sizeof(buf));
		expect_error(&p, 0, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
			     "not a valid PeerMessage");
	}
	ping(&p, 4);
	tls_client_close(&p);
	lines = harness_file_count(target.log_path, line) - before;
	fprintf(stderr, "200 garbage frames: %d log lines\n", lines);
	assert_true(lines <= PEER_LOG_BURST_TEST);
	assert_target_serving();
}

static void test_unknown_body_gets_unimplemented_naming_its_id(void **state)
{
	struct tls_client p;

	peer_open_link(&p, "host-a");
	send_unknown_body(&p, 42);
	expect_error(&p, 42, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED,
		     "unknown or missing message type");
	/* An id that needs a multi-byte varint is named just as well. */
	send_unknown_body(&p, UINT64_C(0x123456789a));
	expect_error(&p, UINT64_C(0x123456789a), VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED,
		     "unknown");
	tls_client_close(&p);
	assert_target_serving();
}

static void test_length_prefix_over_maximum_closes_only_that_link(void **state)
{
	uint8_t buf[FRAME_HEADER_BYTES + 16] = { 0 };
	Vcounter__V1__PeerMessage *msg = NULL;
	struct tls_client bystander, p;
	uint32_t over = VC_MAX_FRAME_BYTES + 1;
	int r;

	peer_open_link(&bystander, "uri");
	peer_open_link(&p, "host-a");
	/* frame_header_encode refuses to write this; the wire does not care. */
	buf[0] = (uint8_t)(over >> 24);
	buf[1] = (uint8_t)(over >> 16);
	buf[2] = (uint8_t)(over >> 8);
	buf[3] = (uint8_t)over;
	peer_send_raw(&p, buf, sizeof(buf));
	r = tls_client_recv_peer(&p, &msg);
	if (r == RECV_MESSAGE)
		fprintf(stderr, "got body %d instead of a close\n", msg->body_case);
	assert_true(r == RECV_CLOSED || r == -ECONNRESET);
	tls_client_close(&p);
	assert_log_line("peer=host-a.test address=incoming: link closed", "announced a frame over");

	/* The link that was open all along still works, and new ones get in. */
	ping(&bystander, 8);
	tls_client_close(&bystander);
	assert_target_serving();
}

/* A PeerMessage with id, field 50 (no body this version knows) and an
 * unknown field 1000 of padding, payload_len bytes in all, framed. */
static void send_padded_unknown_body(struct tls_client *p, uint64_t id, size_t payload_len)
{
	static uint8_t buf[FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES + 16];
	size_t n = FRAME_HEADER_BYTES, pad;
	uint32_t len = (uint32_t)payload_len;

	buf[n++] = 0x08; /* field 1 (id), varint */
	n += harness_put_varint(buf + n, id);
	buf[n++] = 0x90; /* field 50, varint: tag 400 */
	buf[n++] = 0x03;
	buf[n++] = 0x01;
	buf[n++] = 0xc2; /* field 1000, length-delimited: tag 8002 */
	buf[n++] = 0x3e;
	/* The padding's length takes 3 varint bytes for 16384..2097151. */
	pad = payload_len - (n - FRAME_HEADER_BYTES) - 3;
	assert_true(pad >= 16384 && n + 3 + pad <= sizeof(buf));
	n += harness_put_varint(buf + n, pad);
	memset(buf + n, 'x', pad);
	n += pad;
	assert_int_equal(n - FRAME_HEADER_BYTES, payload_len);
	/* Written by hand: frame_header_encode refuses to write max + 1. */
	buf[0] = (uint8_t)(len >> 24);
	buf[1] = (uint8_t)(len >> 16);
	buf[2] = (uint8_t)(len >> 8);
	buf[3] = (uint8_t)len;
	if (payload_len <= VC_MAX_FRAME_BYTES) {
		peer_send_raw(p, buf, n);
	} else {
		/* The daemon may close on the header, before the rest is written. */
		size_t written = 0;

		(void)SSL_write_ex(p->ssl, buf, n, &written);
	}
}

/* vcounterd(8), LIMITS: a frame of exactly VC_MAX_FRAME_BYTES is read and
 * answered; one byte more (a real frame, not just its header) closes that
 * link and no other. */
static void test_frame_of_exactly_the_maximum_is_answered_one_more_closes(void **state)
{
	Vcounter__V1__PeerMessage *msg = NULL;
	struct tls_client bystander, p;
	int r;

	peer_open_link(&bystander, "uri");
	peer_open_link(&p, "host-a");
	send_padded_unknown_body(&p, 41, VC_MAX_FRAME_BYTES);
	expect_error(&p, 41, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED, "unknown");
	ping(&p, 42);

	send_padded_unknown_body(&p, 43, VC_MAX_FRAME_BYTES + 1);
	r = tls_client_recv_peer(&p, &msg);
	if (r == RECV_MESSAGE)
		fprintf(stderr, "got body %d instead of a close\n", msg->body_case);
	assert_true(r == RECV_CLOSED || r == -ECONNRESET);
	tls_client_close(&p);
	assert_log_line("peer=host-a.test address=incoming: link closed",
			"announced a frame over 65536 bytes");

	ping(&bystander, 44);
	tls_client_close(&bystander);
	assert_target_serving();
}

/* daemon/vcd.h VCD_MAX_PEER_LINKS, restated: the test pins it. */
#define MAX_PEER_LINKS 256

/* VCD_MAX_PEER_LINKS verified links at once: all get their Hello and are
 * served; one more completes its handshake and is dropped without one
 * ("too many peer links"); one leaving makes room. */
static void test_peer_links_at_the_limit_and_one_past(void **state)
{
	static struct tls_client links[MAX_PEER_LINKS + 1];
	Vcounter__V1__PeerMessage *msg = NULL;
	struct tls_client *extra = &links[MAX_PEER_LINKS];
	bool in = false;
	int r;

	for (int i = 0; i < MAX_PEER_LINKS; i++)
		peer_open_link(&links[i], i % 2 ? "uri" : "host-a");
	assert_true(peer_open(extra, "host-a", false));
	r = tls_client_recv_peer(extra, &msg);
	if (r == RECV_MESSAGE)
		fprintf(stderr, "got body %d instead of a close\n", msg->body_case);
	assert_true(r == RECV_CLOSED || r == -ECONNRESET);
	tls_client_close(extra);
	assert_log_line("too many peer links, connection dropped", NULL);

	/* Those up are served, first and last. */
	ping(&links[0], 51);
	ping(&links[MAX_PEER_LINKS - 1], 52);

	/* One leaves: room for one (once the daemon has seen it go). */
	tls_client_close(&links[0]);
	for (int i = 0; i < 100 && !in; i++) {
		assert_true(peer_open(extra, "host-a", false));
		r = tls_client_recv_peer(extra, &msg);
		in = r == RECV_MESSAGE;
		if (in) {
			assert_int_equal(msg->body_case, VCOUNTER__V1__PEER_MESSAGE__BODY_HELLO);
			wire_peer_free(msg);
		} else {
			tls_client_close(extra);
			usleep(20000);
		}
	}
	assert_true(in);
	ping(extra, 53);
	for (int i = 1; i <= MAX_PEER_LINKS; i++)
		tls_client_close(&links[i]);
	assert_target_serving();
}

/* ---- 3. unknown migrations ---- */

static void test_final_state_for_unknown_migration_is_not_found(void **state)
{
	struct counter_state *s = state_new(DEFAULT_KHZ, 2, SRC_OFFSET);
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_final(&p, 11, id, 1, s);
	expect_error(&p, 11, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND, id);
	send_final(&p, 12, "", 1, s);
	expect_error(&p, 12, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND, "unknown migration id");
	tls_client_close(&p);
	free(s);
	assert_target_serving();
}

static void test_applied_and_abort_for_unknown_migration_are_harmless(void **state)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Applied applied = VCOUNTER__V1__APPLIED__INIT;
	struct migration_report *rep = calloc(1, sizeof(*rep));
	struct wire_report_pb pb;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	assert_non_null(rep);
	random_migration_id(id);
	memcpy(rep->migration_id, id, sizeof(rep->migration_id));
	snprintf(rep->vm_id, sizeof(rep->vm_id), "%s", TARGET_VM_ID);
	rep->backend = BACKEND_KVM_X86;
	rep->generation = 1;
	rep->n_vcpus = 2;
	rep->offsets_before[0] = rep->offsets_after[0] = SRC_OFFSET;
	rep->offsets_before[1] = rep->offsets_after[1] = SRC_OFFSET + 1000;
	rep->guest_tsc_khz = DEFAULT_KHZ;
	wire_report_to_pb(rep, &pb);
	applied.report = &pb.report;
	msg.id = 21;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED;
	msg.applied = &applied;

	peer_open_link(&p, "host-a");
	peer_send(&p, &msg);
	expect_error(&p, 21, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND, id);
	/* An Applied without its report is refused as such. */
	applied.report = NULL;
	msg.id = 22;
	peer_send(&p, &msg);
	expect_error(&p, 22, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, "report missing");
	/* Abort gets no reply; the link still answers afterwards. */
	send_abort(&p, 23, id, "nothing to abort");
	send_abort(&p, 24, "", NULL);
	ping(&p, 25);
	tls_client_close(&p);
	free(rep);
	assert_target_serving();
}

static void test_replies_to_requests_never_made_are_ignored(void **state)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__FinalAck fa = VCOUNTER__V1__FINAL_ACK__INIT;
	Vcounter__V1__Error e = VCOUNTER__V1__ERROR__INIT;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_ack(&p, 9001, id);
	fa.migration_id = id;
	fa.generation = 1;
	msg.id = 9002;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_ACK;
	msg.final_ack = &fa;
	peer_send(&p, &msg);
	e.code = VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL;
	e.message = "no such request";
	msg.id = 9003;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR;
	msg.error = &e;
	peer_send(&p, &msg);
	ping(&p, 9004);
	assert_log_line("reply to unknown request 9001 ignored", NULL);
	assert_log_line("reply to unknown request 9002 ignored", NULL);
	assert_log_line("reply to unknown request 9003 ignored", NULL);
	tls_client_close(&p);
	assert_target_serving();
}

/* ---- 4. Prepare validation ---- */

static void test_prepare_refuses_invalid_ids(void **state)
{
	struct counter_state *s = state_new(DEFAULT_KHZ, 2, SRC_OFFSET);
	char id[VC_MIGRATION_ID_LEN + 1], upper[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	random_migration_id(id);
	memcpy(upper, id, sizeof(upper));
	upper[0] = 'A'; /* ids are lower-case hex */
	peer_open_link(&p, "host-a");
	send_prepare(&p, 31, "", TARGET_VM_ID, s);
	expect_error(&p, 31, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "invalid migration or VM id");
	send_prepare(&p, 32, "0123456789abcdef", TARGET_VM_ID, s);
	expect_error(&p, 32, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "invalid migration or VM id");
	send_prepare(&p, 33, upper, TARGET_VM_ID, s);
	expect_error(&p, 33, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "invalid migration or VM id");
	send_prepare(&p, 34, id, "vm with spaces", s);
	expect_error(&p, 34, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "invalid migration or VM id");
	send_prepare(&p, 35, id, "", s);
	expect_error(&p, 35, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "invalid migration or VM id");
	tls_client_close(&p);
	free(s);
	assert_target_serving();
}

static void test_prepare_refuses_missing_or_invalid_counter_state(void **state)
{
	struct counter_state *s = state_new(DEFAULT_KHZ, 2, SRC_OFFSET);
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_prepare(&p, 41, id, TARGET_VM_ID, NULL);
	expect_error(&p, 41, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "invalid counter state: counter state missing");

	s->guest_tsc_khz = 0;
	send_prepare(&p, 42, id, TARGET_VM_ID, s);
	expect_error(&p, 42, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "guest_tsc_khz is 0");

	s->guest_tsc_khz = DEFAULT_KHZ;
	s->n_vcpus = 0;
	send_prepare(&p, 43, id, TARGET_VM_ID, s);
	expect_error(&p, 43, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "offset_cycles has no entries");

	s->n_vcpus = 2;
	s->backend = BACKEND_NONE;
	send_prepare(&p, 44, id, TARGET_VM_ID, s);
	expect_error(&p, 44, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, "backend is none");

	s->backend = BACKEND_KVM_X86;
	s->anchor.source = ANCHOR_NONE;
	send_prepare(&p, 45, id, TARGET_VM_ID, s);
	expect_error(&p, 45, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "anchor source is none");

	s->anchor.source = ANCHOR_BRACKET;
	s->arch = COUNTER_ARCH_NONE;
	send_prepare(&p, 46, id, TARGET_VM_ID, s);
	expect_error(&p, 46, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "invalid counter state: counter arch missing");
	tls_client_close(&p);
	free(s);
	/* None of these started a migration: the same id is still free. */
	assert_false(log_has_line(id, "step=prepared"));
	assert_target_serving();
}

static void test_prepare_for_unknown_vm_is_not_found(void **state)
{
	struct counter_state *s = state_new(DEFAULT_KHZ, 2, SRC_OFFSET);
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_prepare(&p, 51, id, "vm-nowhere", s);
	expect_error(&p, 51, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND,
		     "no target VM vm-nowhere registered on " TARGET_NAME);
	tls_client_close(&p);
	free(s);
	assert_target_serving();
}

static void test_prepare_for_a_source_role_vm_is_not_found(void **state)
{
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct vcounter *vc;
	struct tls_client p;
	int vm_fd, vcpu_fd;

	target_vm_or_skip();
	/* A VM that runs here and may leave is no destination. */
	vm_fd = ioctl(tvm.kvm_fd, KVM_CREATE_VM, 0);
	assert_true(vm_fd >= 0);
	vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
	assert_true(vcpu_fd >= 0);
	assert_int_equal(vcounter_connect(target.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-leaving", VCOUNTER_ROLE_SOURCE, vm_fd,
					      &vcpu_fd, 1, NULL),
			 0);
	s = state_new(tvm.tsc_khz, 1, SRC_OFFSET);
	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_prepare(&p, 55, id, "vm-leaving", s);
	expect_error(&p, 55, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND, "no target VM vm-leaving");
	tls_client_close(&p);
	vcounter_close(vc);
	close(vcpu_fd);
	close(vm_fd);
	free(s);
	assert_target_serving();
}

/* Where offsets are not honoured, the daemon says so before judging the
 * state against the VM: that refusal is final whatever else is wrong. */
static void expect_prepare_refusal_or_unavailable(struct tls_client *p, uint64_t id,
						  Vcounter__V1__ErrorCode code, const char *substr)
{
	if (tvm.honours_offsets)
		expect_error(p, id, code, substr);
	else
		expect_error(p, id, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE,
			     "offset control unavailable");
}

static void test_prepare_refuses_vcpu_count_mismatch(void **state)
{
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	target_vm_or_skip();
	s = state_new(tvm.tsc_khz, 3, SRC_OFFSET);
	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_prepare(&p, 61, id, TARGET_VM_ID, s);
	expect_prepare_refusal_or_unavailable(&p, 61,
					      VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
					      "source VM has 3 vCPUs, target VM 2");
	make_state(s, tvm.tsc_khz, 1, SRC_OFFSET);
	send_prepare(&p, 62, id, TARGET_VM_ID, s);
	expect_prepare_refusal_or_unavailable(&p, 62,
					      VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
					      "source VM has 1 vCPUs, target VM 2");
	tls_client_close(&p);
	free(s);
	assert_target_serving();
}

static void test_prepare_refuses_guest_tsc_frequency_mismatch(void **state)
{
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	target_vm_or_skip();
	/* The nested KVM of the rig cannot scale (DESIGN.md section 5): the
	 * refusal is what a frequency change gets. */
	s = state_new(tvm.tsc_khz + 1000, 2, SRC_OFFSET);
	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_prepare(&p, 71, id, TARGET_VM_ID, s);
	expect_prepare_refusal_or_unavailable(&p, 71,
					      VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION,
					      "guest TSC frequencies differ");
	tls_client_close(&p);
	free(s);
	assert_target_serving();
}

/* Well-formed, but another architecture's counter: foreign state, refused
 * before anything about the target VM's KVM (even its offset control) is
 * considered, and no migration starts. */
static void test_prepare_refuses_another_architectures_counter(void **state)
{
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	target_vm_or_skip();
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	s->arch = COUNTER_ARCH_ARM64_CNTVCT;
	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_prepare(&p, 72, id, TARGET_VM_ID, s);
	expect_error(&p, 72, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION,
		     "source counter arm64-cntvct, target VM x86-tsc: the source's counter is of "
		     "another architecture");
	tls_client_close(&p);
	free(s);
	assert_false(log_has_line(id, "step=prepared"));
	assert_target_serving();
}

/* ---- 5. the honest branch ---- */

static void test_prepare_tells_the_truth_about_offset_control(void **state)
{
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client p;

	target_vm_or_skip();
	/* The daemon's probe agrees with what KVM told us directly. */
	assert_int_equal(tvm.info.offset_control, tvm.honours_offsets);
	if (tvm.honours_offsets)
		return; /* the valid Prepare is the first step of the next test */

	assert_non_null(strstr(tvm.info.probe_detail, "offset control unavailable"));
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	random_migration_id(id);
	peer_open_link(&p, "host-a");
	send_prepare(&p, 81, id, TARGET_VM_ID, s);
	expect_error(&p, 81, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE,
		     "offset control unavailable");
	/* Nothing was started: the same Prepare is refused the same way. */
	send_prepare(&p, 82, id, TARGET_VM_ID, s);
	expect_error(&p, 82, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE, TARGET_NAME);
	tls_client_close(&p);
	free(s);
	assert_target_serving();
	fprintf(stderr, "note: this host's KVM ignores TSC offsets; the rest of the protocol "
			"is skipped here (run in tests/vm)\n");
}

/* ---- 6. the whole protocol, with replays ---- */

static void read_vm_offsets(uint64_t ret[2])
{
	ret[0] = read_offset(tvm.vcpu_fds[0]);
	ret[1] = read_offset(tvm.vcpu_fds[1]);
}

static void assert_report_equal(const struct vcounter_report *a, const struct vcounter_report *b)
{
	assert_string_equal(a->migration_id, b->migration_id);
	assert_string_equal(a->vm_id, b->vm_id);
	assert_string_equal(a->backend, b->backend);
	assert_int_equal(a->generation, b->generation);
	assert_int_equal(a->n_vcpus, b->n_vcpus);
	for (uint32_t i = 0; i < a->n_vcpus; i++) {
		assert_true(a->offsets_before[i] == b->offsets_before[i]);
		assert_true(a->offsets_after[i] == b->offsets_after[i]);
	}
	assert_true(a->elapsed_ns == b->elapsed_ns);
	assert_true(a->delta_cycles == b->delta_cycles);
	assert_true(a->error_bound_ns == b->error_bound_ns);
	assert_true(a->apply_latency_ns == b->apply_latency_ns);
	assert_int_equal(a->guest_tsc_khz, b->guest_tsc_khz);
	assert_int_equal(a->error_bound_exceeded, b->error_bound_exceeded);
}

/* The Applied the target sends its source carries the VMM's report. */
static uint64_t expect_applied(struct tls_client *p, const struct vcounter_report *rep)
{
	Vcounter__V1__PeerMessage *msg = expect_msg(p, VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED);
	const Vcounter__V1__MigrationReport *r = msg->applied->report;
	uint64_t id = msg->id;

	assert_non_null(r);
	assert_true(id > 0);
	assert_string_equal(r->migration_id, rep->migration_id);
	assert_string_equal(r->vm_id, rep->vm_id);
	assert_int_equal(r->backend, VCOUNTER__V1__BACKEND__BACKEND_KVM_X86);
	assert_int_equal(r->generation, rep->generation);
	assert_int_equal(r->n_offsets_before, rep->n_vcpus);
	assert_int_equal(r->n_offsets_after, rep->n_vcpus);
	for (uint32_t i = 0; i < rep->n_vcpus; i++) {
		assert_true(r->offsets_before[i] == rep->offsets_before[i]);
		assert_true(r->offsets_after[i] == rep->offsets_after[i]);
	}
	assert_true(r->elapsed_ns == rep->elapsed_ns);
	assert_true(r->delta_cycles == rep->delta_cycles);
	assert_true(r->error_bound_ns == rep->error_bound_ns);
	assert_true(r->apply_latency_ns == rep->apply_latency_ns);
	assert_int_equal(r->guest_tsc_khz, rep->guest_tsc_khz);
	assert_true(r->clamped_ns == rep->clamped_ns);
	assert_string_equal(rep->timescale,
			    r->timescale == VCOUNTER__V1__TIMESCALE__TIMESCALE_TAI ? "tai" : "utc");
	assert_true(r->kvmclock_error_ns == rep->kvmclock_error_ns);
	assert_int_equal(r->kvmclock_flags_after, rep->kvmclock_flags_after);
	print_message("kvmclock %s, off the TSC by %" PRId64 " ns, flags %#x/%#x/%#x\n",
		      rep->kvmclock_check, rep->kvmclock_error_ns, rep->kvmclock_flags_source,
		      rep->kvmclock_flags_before, rep->kvmclock_flags_after);
	/* The guest's kvmclock moved with its TSC: the check passed. */
	assert_int_equal(r->kvmclock_verdict, VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_OK);
	assert_string_equal(rep->kvmclock_check, "ok");
	wire_peer_free(msg);
	return id;
}

/* The target VMM's notices of migration id, in order: each step of
 * steps[] (NULL-terminated), nothing else; notices of other migrations
 * (earlier tests) are skipped. The last one's reason must hold reason. */
static void expect_notices(const char *id, const char *const *steps, const char *reason)
{
	struct vcounter_notice n;
	size_t i = 0;

	while (steps[i]) {
		assert_int_equal(vcounter_next_notice(tvm.vc, 2000, &n), 1);
		if (strcmp(n.migration_id, id) != 0)
			continue;
		assert_string_equal(n.vm_id, TARGET_VM_ID);
		assert_int_equal(n.role, VCOUNTER_ROLE_TARGET);
		assert_string_equal(n.peer_identity, "host-a.test");
		assert_string_equal(n.step, steps[i]);
		assert_int_equal(n.terminal, strcmp(n.step, "done") == 0 ||
						     strcmp(n.step, "aborted") == 0 ||
						     strcmp(n.step, "failed") == 0);
		i++;
	}
	if (reason)
		assert_non_null(strstr(n.reason, reason));
	/* And no more of this migration. */
	while (vcounter_next_notice(tvm.vc, 0, &n) == 1)
		assert_string_not_equal(n.migration_id, id);
}

static void test_full_protocol_with_replays_applies_by_offset(void **state)
{
	struct counter_state *prep, *fin2, *conflict, *fin3;
	struct vcounter_report *rep = NULL, *again = NULL;
	char id[VC_MIGRATION_ID_LEN + 1], other[VC_MIGRATION_ID_LEN + 1];
	uint64_t vm_before[2], vm_after[2], applied_id;
	struct tls_client a, u;

	require_offset_control();
	random_migration_id(id);
	random_migration_id(other);
	prep = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	peer_open_link(&a, "host-a");
	peer_open_link(&u, "uri");

	/* Prepare, and the same migration id again. */
	send_prepare(&a, 101, id, TARGET_VM_ID, prep);
	expect_prepare_ack(&a, 101, id);
	assert_log_line(id, "role=target step=prepared: peer=host-a.test");
	send_prepare(&a, 102, id, TARGET_VM_ID, prep);
	expect_error(&a, 102, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION,
		     "already exists");
	/* One incoming migration per VM at a time, whoever asks. */
	send_prepare(&u, 103, other, TARGET_VM_ID, prep);
	expect_error(&u, 103, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE, id);

	/* The guest ran on and wrote its TSC: the final offsets differ. */
	fin2 = state_new(tvm.tsc_khz, 2, SRC_OFFSET + 123456789);
	send_final(&a, 104, id, 2, fin2);
	expect_final_ack(&a, 104, id, 2);
	/* An older generation is stale. */
	fin3 = state_new(tvm.tsc_khz, 2, SRC_OFFSET + 999);
	send_final(&a, 105, id, 1, fin3);
	expect_error(&a, 105, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION, "stale");
	/* An exact replay is a no-op, acked as before. */
	send_final(&a, 106, id, 2, fin2);
	expect_final_ack(&a, 106, id, 2);
	assert_log_line(id, "final state generation 2 replayed, no-op");
	/* The same generation with other content is a conflict. */
	conflict = calloc(1, sizeof(*conflict));
	assert_non_null(conflict);
	*conflict = *fin2;
	conflict->offset_cycles[1] += 1;
	send_final(&a, 107, id, 2, conflict);
	expect_error(&a, 107, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION, "other content");
	/* Another allowed peer may not touch this migration: no newer
	 * generation, no abort. */
	send_final(&u, 108, id, 3, fin3);
	expect_error(&u, 108, VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED, "another peer");
	send_abort(&u, 109, id, "hijack");
	ping(&u, 110);
	assert_log_line("Abort for migration", id);

	/* The VMM applies: generation 2, by offset. */
	read_vm_offsets(vm_before);
	assert_int_equal(vcounter_apply(tvm.vc, TARGET_VM_ID, id, &rep), 0);
	assert_string_equal(rep->migration_id, id);
	assert_string_equal(rep->vm_id, TARGET_VM_ID);
	assert_string_equal(rep->backend, "kvm-x86");
	assert_int_equal(rep->generation, 2);
	assert_int_equal(rep->n_vcpus, 2);
	assert_int_equal(rep->guest_tsc_khz, tvm.tsc_khz);
	for (int i = 0; i < 2; i++) {
		assert_true(rep->offsets_before[i] == fin2->offset_cycles[i]);
		/* Every vCPU moves by the same delta: the phase is copied exactly. */
		assert_true(rep->offsets_after[i] - rep->offsets_before[i] ==
			    (uint64_t)rep->delta_cycles);
	}
	assert_true(rep->offsets_after[1] - rep->offsets_after[0] == 1000);
	/* Same host, a moment later: elapsed time is small and positive. */
	assert_true(rep->elapsed_ns > 0 && rep->elapsed_ns < 60 * (int64_t)NSEC_PER_SEC);
	read_vm_offsets(vm_after);
	assert_true(vm_after[0] == rep->offsets_after[0]);
	assert_true(vm_after[1] == rep->offsets_after[1]);
	assert_true(vm_after[0] != vm_before[0]);

	/* The source hears of it, with the same report, and acks. */
	applied_id = expect_applied(&a, rep);
	send_ack(&a, applied_id, id);
	ping(&a, 111);

	/* Applying again answers the first report and writes nothing. */
	assert_int_equal(vcounter_apply(tvm.vc, TARGET_VM_ID, id, &again), 0);
	assert_report_equal(again, rep);
	read_vm_offsets(vm_before);
	assert_true(vm_before[0] == vm_after[0] && vm_before[1] == vm_after[1]);
	assert_log_line(id, "apply repeated, no-op");

	/* Done: no newer generation, and no abort, can undo it. */
	send_final(&a, 112, id, 3, fin3);
	expect_error(&a, 112, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION,
		     "refused at step done");
	send_abort(&a, 113, id, "too late");
	ping(&a, 114);
	assert_log_line(id, "peer asked to abort at step done: refused");
	vcounter_report_free(again);
	again = NULL;
	assert_int_equal(vcounter_apply(tvm.vc, TARGET_VM_ID, id, &again), 0);
	assert_report_equal(again, rep);
	read_vm_offsets(vm_before);
	assert_true(vm_before[0] == vm_after[0] && vm_before[1] == vm_after[1]);

	/* The source never saw a second Applied: the next frame is this reply. */
	ping(&a, 115);
	/* The VMM was told of every step, once: replays, refusals and the
	 * repeated apply moved nothing. */
	expect_notices(
		id,
		(const char *const[]){ "prepared", "final", "applying", "applied", "done", NULL },
		NULL);
	vcounter_report_free(rep);
	vcounter_report_free(again);
	tls_client_close(&u);
	tls_client_close(&a);
	free(prep);
	free(fin2);
	free(fin3);
	free(conflict);
	assert_target_serving();
}

/* ---- 7. abort before apply ---- */

static void test_abort_before_apply_leaves_the_vm_untouched(void **state)
{
	struct vcounter_report *rep = NULL;
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	uint64_t vm_before[2], vm_after[2];
	struct tls_client a;

	require_offset_control();
	random_migration_id(id);
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET + 777);
	peer_open_link(&a, "host-a");

	/* The VM's previous migration is done: it may receive another. */
	send_prepare(&a, 201, id, TARGET_VM_ID, s);
	expect_prepare_ack(&a, 201, id);
	make_state(s, tvm.tsc_khz, 2, SRC_OFFSET + 888);
	send_final(&a, 202, id, 1, s);
	expect_final_ack(&a, 202, id, 1);

	read_vm_offsets(vm_before);
	send_abort(&a, 203, id, "operator cancelled");
	ping(&a, 204);
	assert_log_line(id, "step=aborted: by peer host-a.test: operator cancelled");

	assert_int_equal(vcounter_apply(tvm.vc, TARGET_VM_ID, id, &rep), -ECANCELED);
	assert_null(rep);
	assert_non_null(strstr(vcounter_last_error(tvm.vc), "aborted"));
	expect_notices(id, (const char *const[]){ "prepared", "final", "aborted", NULL },
		       "operator cancelled");
	read_vm_offsets(vm_after);
	assert_true(vm_after[0] == vm_before[0] && vm_after[1] == vm_before[1]);

	/* An aborted migration takes no further final state. */
	send_final(&a, 205, id, 2, s);
	expect_error(&a, 205, VCOUNTER__V1__ERROR_CODE__ERROR_ABORTED, "aborted");
	/* Nor is it restarted under the same id. */
	send_prepare(&a, 206, id, TARGET_VM_ID, s);
	expect_error(&a, 206, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION,
		     "already exists");
	tls_client_close(&a);
	free(s);
	assert_target_serving();
}

/* ---- more: links, identities and VMs that come and go ---- */

/* A second target VM, registered on its own VMM connection. */
struct extra_vm {
	int vm_fd;
	int vcpu_fds[2];
	struct vcounter *vc;
};

static void extra_vm_start(struct extra_vm *v, const char *vm_id)
{
	struct vcounter_vm_info info;

	v->vm_fd = ioctl(tvm.kvm_fd, KVM_CREATE_VM, 0);
	assert_true(v->vm_fd >= 0);
	for (int i = 0; i < 2; i++) {
		v->vcpu_fds[i] = ioctl(v->vm_fd, KVM_CREATE_VCPU, i);
		assert_true(v->vcpu_fds[i] >= 0);
	}
	assert_int_equal(vcounter_connect(target.vmm_socket, &v->vc), 0);
	assert_int_equal(vcounter_register_vm(v->vc, vm_id, VCOUNTER_ROLE_TARGET, v->vm_fd,
					      v->vcpu_fds, 2, &info),
			 0);
	assert_true(info.offset_control);
}

static void extra_vm_stop(struct extra_vm *v)
{
	vcounter_close(v->vc);
	v->vc = NULL;
	for (int i = 0; i < 2; i++)
		close(v->vcpu_fds[i]);
	close(v->vm_fd);
}

static void test_target_vm_leaving_aborts_and_tells_the_source(void **state)
{
	Vcounter__V1__PeerMessage *msg;
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct extra_vm v;
	struct tls_client a;

	require_offset_control();
	extra_vm_start(&v, "vm-leaves");
	random_migration_id(id);
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	peer_open_link(&a, "host-a");
	send_prepare(&a, 301, id, "vm-leaves", s);
	expect_prepare_ack(&a, 301, id);

	/* Its VMM goes away before the final state: the source must hear it. */
	extra_vm_stop(&v);
	msg = expect_msg(&a, VCOUNTER__V1__PEER_MESSAGE__BODY_ABORT);
	assert_string_equal(msg->abort->migration_id, id);
	assert_string_equal(msg->abort->reason, "VM unregistered");
	wire_peer_free(msg);
	send_final(&a, 302, id, 1, s);
	expect_error(&a, 302, VCOUNTER__V1__ERROR_CODE__ERROR_ABORTED, "aborted");
	tls_client_close(&a);
	free(s);
	assert_target_serving();
}

/* session.h: "Identity goes first so that a foreign peer learns nothing
 * about the session". A FinalState from another allowed peer is refused as
 * foreign whatever its content, not judged against the prepared state. */
static void test_foreign_peer_learns_nothing_about_a_migration(void **state)
{
	struct counter_state *s, *odd;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct extra_vm v;
	struct tls_client a, u;

	require_offset_control();
	extra_vm_start(&v, "vm-private");
	random_migration_id(id);
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	odd = state_new(tvm.tsc_khz, 3, SRC_OFFSET);
	peer_open_link(&a, "host-a");
	peer_open_link(&u, "uri");
	send_prepare(&a, 401, id, "vm-private", s);
	expect_prepare_ack(&a, 401, id);

	send_final(&u, 402, id, 1, s);
	expect_error(&u, 402, VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED, "another peer");
	/* Another vCPU count, or another frequency, must not tell it more. */
	send_final(&u, 403, id, 1, odd);
	expect_error(&u, 403, VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED, "another peer");
	make_state(odd, tvm.tsc_khz + 1000, 2, SRC_OFFSET);
	send_final(&u, 404, id, 1, odd);
	expect_error(&u, 404, VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED, "another peer");

	tls_client_close(&u);
	tls_client_close(&a);
	extra_vm_stop(&v);
	free(s);
	free(odd);
	assert_target_serving();
}

/* The target keeps a migration that holds its final state when the link
 * drops (link_close_cb); the source reconnects and replays that state, as
 * replays are meant for. The Applied must then reach the source on the link
 * it now uses. */
static void test_final_state_replay_on_a_new_link_gets_the_applied(void **state)
{
	struct vcounter_report *rep = NULL;
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct extra_vm v;
	uint64_t applied_id;
	struct tls_client a;

	require_offset_control();
	extra_vm_start(&v, "vm-relinked");
	random_migration_id(id);
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	peer_open_link(&a, "host-a");
	send_prepare(&a, 501, id, "vm-relinked", s);
	expect_prepare_ack(&a, 501, id);
	make_state(s, tvm.tsc_khz, 2, SRC_OFFSET + 4242);
	send_final(&a, 502, id, 1, s);
	expect_final_ack(&a, 502, id, 1);
	tls_client_close(&a);

	peer_open_link(&a, "host-a");
	send_final(&a, 503, id, 1, s);
	expect_final_ack(&a, 503, id, 1);
	assert_int_equal(vcounter_apply(v.vc, "vm-relinked", id, &rep), 0);
	assert_true(rep->offsets_before[0] == SRC_OFFSET + 4242);
	applied_id = expect_applied(&a, rep);
	send_ack(&a, applied_id, id);
	ping(&a, 504);
	vcounter_report_free(rep);
	tls_client_close(&a);
	extra_vm_stop(&v);
	free(s);
	assert_target_serving();
}

/* A VM that arrived on its source host was prepared with the rate of its
 * registration there, and its VMM then restored the rate it came with
 * (KVM_SET_TSC_KHZ), which KVM keeps unscaled within its tolerance. The
 * final state may carry that rate; a rate beyond the tolerance is another
 * frequency, refused, and the migration goes on with a good one. */
static void test_final_state_rate_within_the_tolerance_is_the_same_rate(void **state)
{
	struct vcounter_report *rep = NULL;
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct extra_vm v;
	uint64_t applied_id;
	struct tls_client a;

	require_offset_control();
	extra_vm_start(&v, "vm-rate");
	random_migration_id(id);
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	peer_open_link(&a, "host-a");
	send_prepare(&a, 701, id, "vm-rate", s);
	expect_prepare_ack(&a, 701, id);

	/* 1000 ppm: four times the default tolerance. */
	make_state(s, tvm.tsc_khz + tvm.tsc_khz / 1000, 2, SRC_OFFSET);
	send_final(&a, 702, id, 1, s);
	expect_error(&a, 702, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, "frequency");
	/* 100 ppm: the same rate. */
	make_state(s, tvm.tsc_khz - tvm.tsc_khz / 10000, 2, SRC_OFFSET + 7);
	send_final(&a, 703, id, 1, s);
	expect_final_ack(&a, 703, id, 1);

	assert_int_equal(vcounter_apply(v.vc, "vm-rate", id, &rep), 0);
	assert_true(rep->offsets_before[0] == SRC_OFFSET + 7);
	assert_true(read_offset(v.vcpu_fds[0]) == rep->offsets_after[0]);
	applied_id = expect_applied(&a, rep);
	send_ack(&a, applied_id, id);
	ping(&a, 704);
	vcounter_report_free(rep);
	tls_client_close(&a);
	extra_vm_stop(&v);
	free(s);
	assert_target_serving();
}

/* A source whose clock is 2 s ahead of this host's (or this host's behind):
 * the anchors say the blackout lasted -2 s. Moved by them, the guest's TSC
 * would go back 2 s below values it read on the source. It is held
 * instead: the guest reads no less than at the source's final read, the
 * report says by how much the clocks disagreed, and the bound includes it. */
static void test_target_clock_behind_holds_the_guest_counter(void **state)
{
	struct vcounter_report *rep = NULL;
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct extra_vm v;
	uint64_t applied_id, guest_at_src, guest_now;
	struct tls_client a;

	require_offset_control();
	extra_vm_start(&v, "vm-behind");
	random_migration_id(id);
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	s->anchor.tai_ns += 2 * NSEC_PER_SEC;
	peer_open_link(&a, "host-a");
	send_prepare(&a, 801, id, "vm-behind", s);
	expect_prepare_ack(&a, 801, id);
	assert_log_line("vm=vm-behind", "earlier than the source's at prepare");

	make_state(s, tvm.tsc_khz, 2, SRC_OFFSET);
	s->anchor.tai_ns += 2 * NSEC_PER_SEC;
	s->kvmclock.realtime_ns += 2 * NSEC_PER_SEC;
	guest_at_src = s->anchor.host_tsc + s->offset_cycles[0];
	send_final(&a, 802, id, 1, s);
	expect_final_ack(&a, 802, id, 1);
	assert_int_equal(vcounter_apply(v.vc, "vm-behind", id, &rep), 0);

	assert_true(rep->elapsed_ns == 0);
	assert_true(rep->clamped_ns > NSEC_PER_SEC && rep->clamped_ns <= 2 * NSEC_PER_SEC);
	assert_true(rep->error_bound_ns >= rep->clamped_ns);
	/* Held: the guest TSC now is the source's at its anchor plus only the
	 * host cycles since the apply, so at least that, and by well under 2 s. */
	guest_now = __builtin_ia32_rdtsc() + read_offset(v.vcpu_fds[0]);
	assert_true((int64_t)(guest_now - guest_at_src) >= 0);
	assert_true(guest_now - guest_at_src < (uint64_t)tvm.tsc_khz * 1000); /* 1 s */
	assert_true(rep->offsets_after[1] - rep->offsets_after[0] ==
		    s->offset_cycles[1] - s->offset_cycles[0]);
	applied_id = expect_applied(&a, rep);
	send_ack(&a, applied_id, id);
	ping(&a, 803);
	assert_log_line("vm=vm-behind", "the guest's counter was held");
	vcounter_report_free(rep);
	tls_client_close(&a);
	extra_vm_stop(&v);
	free(s);
	assert_target_serving();
}

/* A source host whose time daemon keeps the kernel's TAI offset (chrony
 * with leapsectz: CLOCK_TAI 37 s ahead of REALTIME) and a target whose
 * daemon does not (systemd-timesyncd: 0), both on time: counted in TAI the
 * target would be 37 s behind and the guest held; counted in UTC the
 * elapsed time is the blackout, and kvmclock moves with the TSC. */
static void test_source_with_another_tai_offset_counts_utc(void **state)
{
	struct vcounter_report *rep = NULL;
	struct sync_error here;
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct extra_vm v;
	uint64_t applied_id;
	int32_t other;
	struct tls_client a;

	require_offset_control();
	assert_int_equal(hostclock_sync_error(&here), 0);
	/* Whatever this host keeps, the source keeps another offset. */
	other = here.tai_offset_s == 0 ? 37 : 0;
	extra_vm_start(&v, "vm-tai");
	random_migration_id(id);
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	s->sync.tai_offset_s = other;
	s->anchor.tai_ns += (uint64_t)((int64_t)(other - here.tai_offset_s) * NSEC_PER_SEC);
	peer_open_link(&a, "host-a");
	send_prepare(&a, 811, id, "vm-tai", s);
	expect_prepare_ack(&a, 811, id);

	make_state(s, tvm.tsc_khz, 2, SRC_OFFSET);
	s->sync.tai_offset_s = other;
	s->anchor.tai_ns += (uint64_t)((int64_t)(other - here.tai_offset_s) * NSEC_PER_SEC);
	send_final(&a, 812, id, 1, s);
	expect_final_ack(&a, 812, id, 1);
	assert_int_equal(vcounter_apply(v.vc, "vm-tai", id, &rep), 0);

	assert_string_equal(rep->timescale, "utc");
	assert_true(rep->clamped_ns == 0);
	assert_true(rep->elapsed_ns > 0 && rep->elapsed_ns < (int64_t)NSEC_PER_SEC);
	assert_string_equal(rep->kvmclock_check, "ok");
	print_message("kvmclock off the TSC by %" PRId64 " ns\n", rep->kvmclock_error_ns);
	applied_id = expect_applied(&a, rep);
	send_ack(&a, applied_id, id);
	ping(&a, 813);
	vcounter_report_free(rep);
	tls_client_close(&a);
	extra_vm_stop(&v);
	free(s);
	assert_target_serving();
}

/* Two hosts that both keep a TAI offset, one a second short (an old leap
 * table) with no leap second near: CLOCK_TAI differ by a second whichever is
 * right. Refused at prepare, before the guest stops, naming both offsets. */
static void set_tai_offset(int seconds)
{
	struct timex tx = { .modes = ADJ_TAI, .constant = seconds };

	if (adjtimex(&tx) < 0)
		fail_msg("adjtimex(ADJ_TAI, %d): %s", seconds, strerror(errno));
}

static void test_prepare_refuses_tai_offsets_that_disagree(void **state)
{
	bool set = false;
	struct sync_error here;
	struct counter_state *s;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct tls_client a;

	require_offset_control();
	assert_int_equal(hostclock_sync_error(&here), 0);
	if (here.tai_offset_s == 0) {
		/* Only a throwaway host's clock is ours to set (the rig's). */
		if (!getenv("VC_TEST_SCRATCH_HOST")) {
			fprintf(stderr, "SKIP: this host keeps no TAI offset (adjtimex tai 0), "
					"and it is not a scratch host to set one on (tests/vm)\n");
			skip();
		}
		set_tai_offset(37);
		set = true;
		assert_int_equal(hostclock_sync_error(&here), 0);
		assert_int_equal(here.tai_offset_s, 37);
	}
	random_migration_id(id);
	s = state_new(tvm.tsc_khz, 2, SRC_OFFSET);
	s->sync.tai_offset_s = here.tai_offset_s - 1;
	s->anchor.tai_ns -= NSEC_PER_SEC;
	peer_open_link(&a, "host-a");
	send_prepare(&a, 821, id, TARGET_VM_ID, s);
	expect_error(&a, 821, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT,
		     "different TAI offsets");
	if (set)
		set_tai_offset(0);
	tls_client_close(&a);
	free(s);
	assert_target_serving();
}

/* A source that sends valid messages in the wrong order for a live
 * migration: each is refused or ignored, nothing changes, and the
 * migration then completes with the newest final state. */
static void test_valid_messages_in_the_wrong_order_change_nothing(void **state)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Applied applied = VCOUNTER__V1__APPLIED__INIT;
	struct migration_report *early;
	struct vcounter_report *rep = NULL;
	struct wire_report_pb pb;
	struct counter_state *s1, *s2;
	char id[VC_MIGRATION_ID_LEN + 1];
	struct extra_vm v;
	uint64_t applied_id;
	struct tls_client a;

	require_offset_control();
	early = calloc(1, sizeof(*early));
	assert_non_null(early);
	extra_vm_start(&v, "vm-order");
	random_migration_id(id);
	s1 = state_new(tvm.tsc_khz, 2, SRC_OFFSET + 1);
	s2 = state_new(tvm.tsc_khz, 2, SRC_OFFSET + 2);
	peer_open_link(&a, "host-a");

	/* The final state before Prepare: no such migration yet. */
	send_final(&a, 601, id, 1, s1);
	expect_error(&a, 601, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND, id);
	send_prepare(&a, 602, id, "vm-order", s1);
	expect_prepare_ack(&a, 602, id);

	/* Applied is the target's message to send, not to receive. */
	memcpy(early->migration_id, id, sizeof(early->migration_id));
	snprintf(early->vm_id, sizeof(early->vm_id), "vm-order");
	early->backend = BACKEND_KVM_X86;
	early->generation = 1;
	early->n_vcpus = 2;
	early->guest_tsc_khz = tvm.tsc_khz;
	wire_report_to_pb(early, &pb);
	applied.report = &pb.report;
	msg.id = 603;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED;
	msg.applied = &applied;
	peer_send(&a, &msg);
	expect_error(&a, 603, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND, id);
	/* An Ack before anything was applied answers no request. */
	send_ack(&a, 604, id);
	ping(&a, 605);
	assert_log_line("reply to unknown request 604 ignored", NULL);
	/* The VMM asking to apply before any final state. */
	assert_int_equal(vcounter_apply(v.vc, "vm-order", id, &rep), -EPROTO);

	/* Generation 2, then 1 late: the late one is stale. */
	send_final(&a, 606, id, 2, s2);
	expect_final_ack(&a, 606, id, 2);
	send_final(&a, 607, id, 1, s1);
	expect_error(&a, 607, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION, "stale");
	/* Prepare again, mid-migration. */
	send_prepare(&a, 608, id, "vm-order", s1);
	expect_error(&a, 608, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION,
		     "already exists");

	assert_int_equal(vcounter_apply(v.vc, "vm-order", id, &rep), 0);
	assert_true(rep->generation == 2);
	assert_true(rep->offsets_before[0] == SRC_OFFSET + 2);
	assert_true(read_offset(v.vcpu_fds[0]) == rep->offsets_after[0]);
	applied_id = expect_applied(&a, rep);
	send_ack(&a, applied_id, id);
	ping(&a, 609);
	vcounter_report_free(rep);
	tls_client_close(&a);
	extra_vm_stop(&v);
	free(s1);
	free(s2);
	free(early);
	assert_target_serving();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed_dns_and_uri_identities_get_hello),
		cmocka_unit_test(test_client_cert_from_other_ca_is_refused),
		cmocka_unit_test(test_client_cert_with_san_not_allowed_is_refused),
		cmocka_unit_test(test_expired_client_cert_is_refused),
		cmocka_unit_test(test_tls12_only_client_is_refused),
		cmocka_unit_test(test_plaintext_on_the_tls_port_is_refused),
		cmocka_unit_test(test_garbage_protobuf_gets_invalid_argument),
		cmocka_unit_test(test_garbage_flood_from_a_peer_is_answered_but_its_log_bounded),
		cmocka_unit_test(test_unknown_body_gets_unimplemented_naming_its_id),
		cmocka_unit_test(test_length_prefix_over_maximum_closes_only_that_link),
		cmocka_unit_test(test_frame_of_exactly_the_maximum_is_answered_one_more_closes),
		cmocka_unit_test(test_peer_links_at_the_limit_and_one_past),
		cmocka_unit_test(test_final_state_for_unknown_migration_is_not_found),
		cmocka_unit_test(test_applied_and_abort_for_unknown_migration_are_harmless),
		cmocka_unit_test(test_replies_to_requests_never_made_are_ignored),
		cmocka_unit_test(test_prepare_refuses_invalid_ids),
		cmocka_unit_test(test_prepare_refuses_missing_or_invalid_counter_state),
		cmocka_unit_test(test_prepare_for_unknown_vm_is_not_found),
		cmocka_unit_test(test_prepare_for_a_source_role_vm_is_not_found),
		cmocka_unit_test(test_prepare_refuses_vcpu_count_mismatch),
		cmocka_unit_test(test_prepare_refuses_guest_tsc_frequency_mismatch),
		cmocka_unit_test(test_prepare_refuses_another_architectures_counter),
		cmocka_unit_test(test_prepare_tells_the_truth_about_offset_control),
		cmocka_unit_test(test_full_protocol_with_replays_applies_by_offset),
		cmocka_unit_test(test_abort_before_apply_leaves_the_vm_untouched),
		cmocka_unit_test(test_target_vm_leaving_aborts_and_tells_the_source),
		cmocka_unit_test(test_foreign_peer_learns_nothing_about_a_migration),
		cmocka_unit_test(test_final_state_replay_on_a_new_link_gets_the_applied),
		cmocka_unit_test(test_final_state_rate_within_the_tolerance_is_the_same_rate),
		cmocka_unit_test(test_target_clock_behind_holds_the_guest_counter),
		cmocka_unit_test(test_source_with_another_tai_offset_counts_utc),
		cmocka_unit_test(test_prepare_refuses_tai_offsets_that_disagree),
		cmocka_unit_test(test_valid_messages_in_the_wrong_order_change_nothing),
		/* Last: the closes of its strangers' connections use up the log
		 * budget of unverified connections that tests above read lines of. */
		cmocka_unit_test(test_strangers_that_never_handshake_do_not_lock_a_peer_out),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
