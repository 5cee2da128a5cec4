/* unix_fd.c - one message plus its file descriptors over a unix
 * SOCK_SEQPACKET socket (SCM_RIGHTS, unix(7)), and the peer's SO_PEERCRED. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "macro.h"
#include "unix_fd.h"

/* Control buffer for the most fds one message can carry, aligned for
 * struct cmsghdr as cmsg(3) requires. */
union unix_fd_cmsg_buf {
	struct cmsghdr align;
	char buf[CMSG_SPACE(UNIX_FD_MAX_FDS * sizeof(int))];
};

void unix_fd_close_all(int *fds, size_t n_fds)
{
	if (!fds)
		return;
	for (size_t i = 0; i < n_fds; i++) {
		close_nointr(fds[i]);
		fds[i] = -1;
	}
}

int unix_fd_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds)
{
	union unix_fd_cmsg_buf control;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (!buf || len == 0 || n_fds > UNIX_FD_MAX_FDS || (n_fds > 0 && !fds))
		return -EINVAL;

	if (n_fds > 0) {
		struct cmsghdr *cmsg;

		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
		memcpy(CMSG_DATA(cmsg), fds, n_fds * sizeof(int));
	}

	/* MSG_NOSIGNAL: a VMM that went away is an error to handle, not a
	 * SIGPIPE that kills the daemon. */
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* SOCK_SEQPACKET sends whole messages or fails, so this is only
	 * reachable on a socket of another type. */
	if ((size_t)n != len)
		return -EMSGSIZE;
	return 0;
}

/* fds in one SCM_RIGHTS cmsg. The kernel clamps cmsg_len to the buffer
 * when it truncates (net/core/scm.c: put_cmsg), but count only what lies
 * inside msg_controllen all the same. */
static size_t cmsg_n_fds(const struct msghdr *msg, const struct cmsghdr *cmsg)
{
	const unsigned char *end = (const unsigned char *)msg->msg_control + msg->msg_controllen;
	size_t len;

	if (cmsg->cmsg_len < CMSG_LEN(0) || end < CMSG_DATA(cmsg))
		return 0;
	len = cmsg->cmsg_len - CMSG_LEN(0);
	if (len > (size_t)(end - CMSG_DATA(cmsg)))
		len = (size_t)(end - CMSG_DATA(cmsg));
	return len / sizeof(int);
}

/* Close every fd that arrived in any SCM_RIGHTS cmsg of msg. */
static void close_received(struct msghdr *msg)
{
	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(msg); cmsg; cmsg = CMSG_NXTHDR(msg, cmsg)) {
		size_t n;

		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		n = cmsg_n_fds(msg, cmsg);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(fd));
			close_nointr(fd);
		}
	}
}

/* Control data cut short: because this process could not take the fds
 * (scm_detach_fds stops at the first fd it cannot allocate, so there is no
 * fd free while the ones it did install are still open: -EMFILE, -ENFILE),
 * or because the sender sent more than the buffer holds (-ECHRNG). */
static int ctrunc_cause(int sock)
{
	int probe = fcntl(sock, F_DUPFD_CLOEXEC, 0);

	if (probe >= 0) {
		close_nointr(probe);
		return -ECHRNG;
	}
	return errno == EMFILE || errno == ENFILE ? -errno : -ECHRNG;
}

ssize_t unix_fd_recv_max(int sock, void *buf, size_t buf_size, size_t max_fds, int *ret_fds,
			 size_t *ret_n_fds)
{
	union unix_fd_cmsg_buf control;
	struct iovec iov = { .iov_base = buf, .iov_len = buf_size };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		/* The kernel installs only as many fds as fit here and flags
		 * the rest MSG_CTRUNC (net/core/scm.c: scm_detach_fds). */
		.msg_controllen = CMSG_SPACE(max_fds * sizeof(int)),
	};
	size_t n_fds = 0;
	ssize_t n;
	int r;

	if (!ret_n_fds || (!buf && buf_size > 0) || max_fds > UNIX_FD_MAX_FDS ||
	    (max_fds > 0 && !ret_fds))
		return -EINVAL;
	*ret_n_fds = 0;

	memset(&control, 0, sizeof(control));
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;

	if (msg.msg_flags & MSG_CTRUNC) {
		r = ctrunc_cause(sock);
		goto fail;
	}
	if (msg.msg_flags & MSG_TRUNC) {
		r = -EMSGSIZE;
		goto fail;
	}

	/* Validate everything before handing out any fd, so that an error
	 * leaves nothing half-owned. */
	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		/* Anything else (SCM_CREDENTIALS with SO_PASSCRED, ...) is
		 * not part of this protocol. An SCM_PIDFD (only sent with
		 * SO_PASSPIDFD, which nothing here sets) would carry an fd
		 * that this does not close. */
		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS ||
		    cmsg->cmsg_len < CMSG_LEN(0)) {
			r = -EBADMSG;
			goto fail;
		}
		n_fds += cmsg_n_fds(&msg, cmsg);
	}
	if (n_fds > max_fds) {
		r = -ECHRNG;
		goto fail;
	}
	/* An empty message cannot be told from end of stream; fds on one
	 * are a protocol error, not something to return with a 0. */
	if (n == 0 && n_fds > 0) {
		r = -EBADMSG;
		goto fail;
	}

	n_fds = 0;
	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		size_t k = cmsg_n_fds(&msg, cmsg);

		if (k > 0)
			memcpy(ret_fds + n_fds, CMSG_DATA(cmsg), k * sizeof(int));
		n_fds += k;
	}
	*ret_n_fds = n_fds;
	return n;

fail:
	close_received(&msg);
	return r;
}

ssize_t unix_fd_recv(int sock, void *buf, size_t buf_size, int *ret_fds, size_t *ret_n_fds)
{
	return unix_fd_recv_max(sock, buf, buf_size, UNIX_FD_MAX_FDS, ret_fds, ret_n_fds);
}

int unix_fd_peer_cred(int sock, pid_t *ret_pid, uid_t *ret_uid, gid_t *ret_gid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (len != sizeof(cred))
		return -EIO;
	/* A socket that was never connected reports pid 0 and uid/gid -1
	 * (unix(7), SO_PEERCRED): no peer to trust. */
	if (cred.pid <= 0)
		return -ENOTCONN;

	if (ret_pid)
		*ret_pid = cred.pid;
	if (ret_uid)
		*ret_uid = cred.uid;
	if (ret_gid)
		*ret_gid = cred.gid;
	return 0;
}

int unix_fd_address(const char *path, struct sockaddr_un *ret)
{
	size_t len = strlen(path);

	if (len >= sizeof(ret->sun_path))
		return -ENAMETOOLONG;
	*ret = (struct sockaddr_un){ .sun_family = AF_UNIX };
	memcpy(ret->sun_path, path, len + 1);
	return 0;
}

int unix_fd_connect(const char *path, int type)
{
	struct sockaddr_un sa;
	_cleanup_close_ int fd = -1;
	int r;

	r = unix_fd_address(path, &sa);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	return TAKE_FD(fd);
}
