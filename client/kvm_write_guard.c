/* kvm_write_guard.c - the counter-write guard (kvm_write_guard.h): a seccomp
 * BPF program on ioctl's fd and request, SECCOMP_RET_TRAP, and a SIGSYS
 * handler that counts and makes the call fail with EPERM. */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>

#include "kvm_write_guard.h"
#include "uapi/kvm_syscounter.h"

static const uint32_t guarded_requests[] = {
	KVM_SET_DEVICE_ATTR, KVM_SET_SYSTEM_COUNTER_STATE, KVM_SET_MSRS, KVM_SET_TSC_KHZ,
	KVM_SET_CLOCK,
};

static _Atomic uint64_t refused;
static _Atomic int last_fd;
static _Atomic unsigned long last_request;
static atomic_bool installed;

/* SECCOMP_RET_TRAP skips the call and raises SIGSYS in the calling thread;
 * what the handler leaves in RAX is the call's return value
 * (Documentation/userspace-api/seccomp_filter.rst, SECCOMP_RET_TRAP). */
static void on_sigsys(int sig, siginfo_t *info, void *ucontext)
{
	ucontext_t *uc = ucontext;

	atomic_fetch_add(&refused, 1);
	atomic_store(&last_fd, (int)uc->uc_mcontext.gregs[REG_RDI]);
	atomic_store(&last_request, (unsigned long)uc->uc_mcontext.gregs[REG_RSI]);
	uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
}

int kvm_write_guard_install(int vm_fd, const int *vcpu_fds, unsigned n_vcpus)
{
	const size_t n_req = sizeof(guarded_requests) / sizeof(guarded_requests[0]);
	/* 7 to the request's load, the requests, 3 to the fd's load, one
	 * pair per fd, the last allow */
	const size_t len = 10 + n_req + 2 * ((size_t)n_vcpus + 1);
	struct sock_filter *f, *p;
	struct sock_fprog prog;
	struct sigaction sa;
	bool expected = false;
	int r;

	if (vm_fd < 0 || (!vcpu_fds && n_vcpus) || len > BPF_MAXINSNS)
		return -EINVAL;
	if (!atomic_compare_exchange_strong(&installed, &expected, true))
		return -EALREADY;
	f = calloc(len, sizeof(*f));
	if (!f)
		return -ENOMEM;
	p = f;
	*p++ = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					    offsetof(struct seccomp_data, arch));
	*p++ = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	*p++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	*p++ = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					    offsetof(struct seccomp_data, nr));
	*p++ = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 1, 0);
	*p++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	/* The low words (little endian): the kernel takes fd and request as
	 * unsigned int (ksys_ioctl()), whatever the upper halves hold. */
	*p++ = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					    offsetof(struct seccomp_data, args[1]));
	for (size_t i = 0; i < n_req; i++)
		*p++ = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, guarded_requests[i],
						    (uint8_t)(n_req - i), 0);
	*p++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	*p++ = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					    offsetof(struct seccomp_data, args[0]));
	for (unsigned i = 0; i <= n_vcpus; i++) {
		int fd = i == 0 ? vm_fd : vcpu_fds[i - 1];

		*p++ = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)fd, 0, 1);
		*p++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP);
	}
	*p++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	assert((size_t)(p - f) == len);
	prog = (struct sock_fprog){ .len = (unsigned short)(p - f), .filter = f };

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	/* prctl(PR_SET_SECCOMP), not seccomp(2) with SECCOMP_FILTER_FLAG_TSYNC:
	 * valgrind, which runs the unit tests, has no seccomp(2) (ENOSYS). */
	if (sigaction(SIGSYS, &sa, NULL) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
		r = -errno;
	else
		r = 0;
	free(f);
	return r;
}

uint64_t kvm_write_guard_refused(int *ret_last_fd, unsigned long *ret_last_request)
{
	if (ret_last_fd)
		*ret_last_fd = atomic_load(&last_fd);
	if (ret_last_request)
		*ret_last_request = atomic_load(&last_request);
	return atomic_load(&refused);
}
