/* vmm_raw.h - the VMM socket spoken raw, as a VMM without libvcounter (or
 * a hostile one) would: SOCK_SEQPACKET, one framed VmmMessage per datagram,
 * fds beside it. For the tests that feed the daemon what libvcounter never
 * sends. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "vcounter.pb-c.h"

struct daemon_proc;

/* A connection to the daemon's VMM socket at path. */
int vmm_raw_connect(const char *path);
/* Frame msg and send it with fds (n_fds of them, may be 0). */
void vmm_raw_send(int fd, Vcounter__V1__VmmMessage *msg, const int *fds, size_t n_fds);
/* One reply within 5 s (fds that came with it closed); NULL on timeout,
 * close, or a datagram that is no VmmMessage. Free with wire_vmm_free. */
Vcounter__V1__VmmMessage *vmm_raw_recv(int fd);
/* A StatusRequest with this id. */
void vmm_raw_send_status(int fd, uint64_t id);
/* The fds one served VMM connection costs daemon d: its socket, and the
 * pidfd watching the process that connected where the daemon can open one
 * (not under valgrind 3.19, which lacks pidfd_open). */
int vmm_raw_conn_fds(const struct daemon_proc *d);
