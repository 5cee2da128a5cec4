/* vmm_raw.c - the VMM socket spoken raw. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon_harness.h"
#include "frame.h"
#include "unix_fd.h"
#include "vmm_raw.h"
#include "wire.h"

int vmm_raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

void vmm_raw_send(int fd, Vcounter__V1__VmmMessage *msg, const int *fds, size_t n_fds)
{
	uint8_t *buf;
	size_t len;

	assert_int_equal(wire_vmm_pack_frame(msg, &buf, &len), 0);
	assert_int_equal(unix_fd_send(fd, buf, len, fds, n_fds), 0);
	free(buf);
}

Vcounter__V1__VmmMessage *vmm_raw_recv(int fd)
{
	static uint8_t buf[FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int fds[UNIX_FD_MAX_FDS];
	size_t n_fds = 0, len;
	const uint8_t *payload;
	Vcounter__V1__VmmMessage *msg;
	ssize_t n;

	if (poll(&pfd, 1, 5000) != 1)
		return NULL;
	n = unix_fd_recv(fd, buf, sizeof(buf), fds, &n_fds);
	/* Closed by the daemon with our requests unread: the first read
	 * reports the reset (unix_release_sock sets sk_err), the next ones
	 * what it had sent before. */
	if (n == -ECONNRESET)
		n = unix_fd_recv(fd, buf, sizeof(buf), fds, &n_fds);
	unix_fd_close_all(fds, n_fds);
	if (n <= 0)
		return NULL;
	if (frame_parse_datagram(buf, (size_t)n, VC_MAX_FRAME_BYTES, &payload, &len) < 0)
		return NULL;
	if (wire_vmm_unpack(payload, len, &msg, NULL) < 0)
		return NULL;
	return msg;
}

void vmm_raw_send_status(int fd, uint64_t id)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;

	req.id = id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	vmm_raw_send(fd, &req, NULL, 0);
}

int vmm_raw_conn_fds(const struct daemon_proc *d)
{
	int before = harness_settled_fd_count(d), after, fd;
	Vcounter__V1__VmmMessage *reply;

	fd = vmm_raw_connect(d->vmm_socket);
	vmm_raw_send_status(fd, 1);
	reply = vmm_raw_recv(fd);
	assert_non_null(reply);
	wire_vmm_free(reply);
	after = harness_fd_count(d);
	close(fd);
	return after - before;
}
