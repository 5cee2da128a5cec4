/* fuzz_vmm_server - libFuzzer target: the daemon's own VMM socket
 * (vmm_server.c) fed a sequence of datagrams in-process, as one VMM
 * connection would send them: the frames, the dispatch, the registration
 * bookkeeping, the replies. The migrations are a handler table that
 * answers each request (as migration.c does, through the VMM socket's
 * replies); KVM ops never complete, since no VMM answers them.
 *
 * Input: records of a 2-byte big-endian length and that many bytes, each
 * one datagram. After the last, the connection closes and the daemon must
 * still answer a new connection's StatusRequest: a crash, a leak, a hang
 * or a daemon that stopped serving fails the input. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <event2/event.h>

#include "frame.h"
#include "log.h"
#include "sync_source.h"
#include "vcd.h"
#include "vmm_server.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vcd vcd;
static char sock_path[108];

static void fake_migrate_out(struct vcd *v, uint64_t conn_id, uint64_t request_id,
			     const char *vm_id, const char *peer_address, const char *peer_name)
{
	(void)vm_id;
	(void)peer_address;
	(void)peer_name;
	vmm_reply_error(v, conn_id, request_id, -ENOENT, "no such VM");
}

static void fake_paused_or_apply(struct vcd *v, uint64_t conn_id, uint64_t request_id,
				 const char *vm_id, const char *migration_id)
{
	(void)vm_id;
	(void)migration_id;
	vmm_reply_ok(v, conn_id, request_id);
}

static size_t fake_count(struct vcd *v)
{
	(void)v;
	return 0;
}

static const struct vmm_migration_handlers migrations = {
	.migrate_out = fake_migrate_out,
	.report_paused = fake_paused_or_apply,
	.apply = fake_paused_or_apply,
	.count = fake_count,
};

static void setup_once(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/vc-fuzz-vmm-XXXXXX", err[256];
	int lfd;

	if (vcd.base)
		return;
	log_set_target(LOG_TARGET_STDERR);
	log_setup(LOG_CRIT); /* quiet: every refusal would be a line */
	vcd.base = event_base_new();
	vcd.config.max_vms = 8;
	vcd.config.max_vmm_conns = 8;
	vcd.config.kvm_op_timeout_ms = 1;
	vcd.config.allowed_uids[0] = getuid();
	vcd.config.n_allowed_uids = 1;
	if (!vcd.base || !mkdtemp(dir) ||
	    sync_source_open(vcd.base, "fixed:1000", &vcd.sync, err, sizeof(err)) < 0)
		abort();
	snprintf(sock_path, sizeof(sock_path), "%s/vmm.sock", dir);
	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 8) < 0 ||
	    vmm_server_start(&vcd, lfd, &migrations) < 0)
		abort();
}

static void pump(int rounds)
{
	for (int i = 0; i < rounds; i++)
		event_base_loop(vcd.base, EVLOOP_NONBLOCK);
}

static int vmm_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		abort();
	pump(2);
	return fd;
}

static void drain(int fd)
{
	uint8_t buf[FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

/* A new connection's StatusRequest is answered with a StatusReply. */
static void assert_serving(void)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply = NULL;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;
	static uint8_t buf[FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES];
	const uint8_t *payload;
	size_t payload_len;
	uint8_t *frame;
	size_t len;
	ssize_t n = -1;
	int fd = vmm_connect();

	req.id = 77;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	if (wire_vmm_pack_frame(&req, &frame, &len) < 0 || send(fd, frame, len, 0) != (ssize_t)len)
		abort();
	free(frame);
	for (int i = 0; i < 1000 && n < 0; i++) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		pump(1);
		if (poll(&pfd, 1, 1) == 1)
			n = recv(fd, buf, sizeof(buf), 0);
	}
	if (n <= 0 ||
	    frame_parse_datagram(buf, (size_t)n, VC_MAX_FRAME_BYTES, &payload, &payload_len) < 0 ||
	    wire_vmm_unpack(payload, payload_len, &reply, NULL) < 0 || reply->id != 77 ||
	    reply->body_case != VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY)
		abort(); /* the daemon stopped serving */
	wire_vmm_free(reply);
	close(fd);
	pump(2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd;

	setup_once();
	fd = vmm_connect();
	while (size >= 2) {
		size_t len = (size_t)data[0] << 8 | data[1];

		data += 2;
		size -= 2;
		if (len > size)
			len = size;
		/* A full socket buffer (the daemon answers, nobody reads):
		 * what is not sent is not sent. */
		(void)send(fd, data, len, MSG_DONTWAIT);
		data += len;
		size -= len;
		pump(2);
		drain(fd);
	}
	close(fd);
	pump(3);
	assert_serving();
	return 0;
}
