/* unix_fd.h - one message plus its file descriptors over a unix
 * SOCK_SEQPACKET socket (SCM_RIGHTS), with SO_PEERCRED. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

/* At most this many fds travel with one message. The kernel refuses more:
 * SCM_MAX_FD (include/net/scm.h) is 253 for all SCM_RIGHTS cmsgs of one
 * sendmsg together, and more fails with EINVAL (measured on 6.18: 253 fds
 * pass, 254 fds or 2 x 200 fds give EINVAL). So a VM fd plus its vCPU fds
 * fit one message only up to 252 vCPUs; larger VMs need several messages.
 * The receive control buffer is sized for exactly this many. */
#define UNIX_FD_MAX_FDS 253

/* Send buf (len > 0: an empty SOCK_SEQPACKET message reads as end of stream
 * at the receiver) with n_fds fds attached (n_fds may be 0, at most
 * UNIX_FD_MAX_FDS, else -EINVAL). Never raises SIGPIPE (a closed peer is
 * -EPIPE). Returns 0 or -errno; a short write is -EMSGSIZE. */
int unix_fd_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds);

/* Receive one message of at most buf_size bytes and its fds.
 * Returns the message length (0 on orderly shutdown, or an empty message,
 * which cannot be told apart) or -errno:
 *   -EMSGSIZE  message larger than buf_size (MSG_TRUNC)
 *   -ECHRNG    more fds than UNIX_FD_MAX_FDS or control data truncated
 *              (MSG_CTRUNC)
 *   -EMFILE, -ENFILE  control data truncated because this process (or the
 *              system) is out of fds: the kernel stops installing them at
 *              the first it cannot (net/core/scm.c: scm_detach_fds)
 *   -EBADMSG   unexpected control message type (e.g. SCM_CREDENTIALS when
 *              SO_PASSCRED is set), or fds with an empty message
 * On any error every fd that did arrive is closed, and *ret_n_fds is 0.
 * Received fds are O_CLOEXEC (MSG_CMSG_CLOEXEC). ret_fds must hold
 * UNIX_FD_MAX_FDS entries. Retries on EINTR. */
ssize_t unix_fd_recv(int sock, void *buf, size_t buf_size, int *ret_fds, size_t *ret_n_fds);

/* unix_fd_recv() accepting at most max_fds (<= UNIX_FD_MAX_FDS, else
 * -EINVAL) fds: the control buffer is sized for max_fds, so a message with
 * more is -ECHRNG with every fd closed. For messages that must carry no or
 * few fds; ret_fds must hold max_fds entries. */
ssize_t unix_fd_recv_max(int sock, void *buf, size_t buf_size, size_t max_fds, int *ret_fds,
			 size_t *ret_n_fds);

/* Close each fd >= 0 and set it to -1. */
void unix_fd_close_all(int *fds, size_t n_fds);

/* SO_PEERCRED of a connected unix socket. */
int unix_fd_peer_cred(int sock, pid_t *ret_pid, uid_t *ret_uid, gid_t *ret_gid);

/* path as a unix socket address: -ENAMETOOLONG when it does not fit
 * sun_path with its terminating NUL. */
int unix_fd_address(const char *path, struct sockaddr_un *ret);
/* A new close-on-exec socket of type (SOCK_SEQPACKET, SOCK_STREAM)
 * connected to path: the fd, or -errno (-ENAMETOOLONG, -ENOENT,
 * -ECONNREFUSED, -EPROTOTYPE for a socket of another type). */
int unix_fd_connect(const char *path, int type);
