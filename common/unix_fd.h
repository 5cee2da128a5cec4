/* unix_fd.h - one message plus its file descriptors over a unix
 * SOCK_SEQPACKET socket (SCM_RIGHTS), with SO_PEERCRED. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* At most this many fds travel with one message: a VM fd plus one fd per
 * vCPU. The receive control buffer is sized for exactly this many; more
 * gives MSG_CTRUNC. */
#define UNIX_FD_MAX_FDS (1 + 1024)

/* Send buf with n_fds fds attached (n_fds may be 0). Returns 0 or -errno;
 * a short write is -EMSGSIZE. */
int unix_fd_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds);

/* Receive one message of at most buf_size bytes and its fds.
 * Returns the message length (0 on orderly shutdown) or -errno:
 *   -EMSGSIZE  message larger than buf_size (MSG_TRUNC)
 *   -ECHRNG    more fds than UNIX_FD_MAX_FDS or control data truncated (MSG_CTRUNC)
 *   -EBADMSG   unexpected control message type
 * On any error every fd that did arrive is closed, and *ret_n_fds is 0.
 * Received fds are O_CLOEXEC (MSG_CMSG_CLOEXEC). ret_fds must hold
 * UNIX_FD_MAX_FDS entries. */
ssize_t unix_fd_recv(int sock, void *buf, size_t buf_size, int *ret_fds, size_t *ret_n_fds);

void unix_fd_close_all(int *fds, size_t n_fds);

/* SO_PEERCRED of a connected unix socket. */
int unix_fd_peer_cred(int sock, pid_t *ret_pid, uid_t *ret_uid, gid_t *ret_gid);
