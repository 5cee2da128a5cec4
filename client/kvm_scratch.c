/* kvm_scratch.c - the probe's throwaway VM (kvm_scratch.h): where its
 * /dev/kvm comes from, and what creating it costs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "clockns.h"
#include "kvm_scratch.h"
#include "kvm_x86.h"
#include "macro.h"

/* Does fd's link name /dev/kvm (the node it was opened by)? */
static bool fd_links_dev_kvm(int fd)
{
	char path[64], target[sizeof(KVM_SCRATCH_DEV_PATH) + 1];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n != (ssize_t)strlen(KVM_SCRATCH_DEV_PATH))
		return false;
	target[n] = '\0';
	return strcmp(target, KVM_SCRATCH_DEV_PATH) == 0;
}

/* Is fd a /dev/kvm (the system fd, not a VM or vCPU one)? Only the system
 * fd answers KVM_GET_API_VERSION (kvm_dev_ioctl(); a VM fd's
 * kvm_vm_ioctl() has no such case). The link is checked first so that no
 * KVM ioctl number reaches another driver's fd, where it could mean
 * anything. */
static bool fd_is_dev_kvm(int fd)
{
	struct stat st;

	if (!fd_links_dev_kvm(fd) || fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode))
		return false;
	return ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION;
}

/* A sandboxed VMM may have no /dev/kvm left in its mount namespace, or lose
 * the permission to open it, after it opened it for its own VMs (QEMU keeps
 * that fd for its lifetime: KVMState.fd). KVM_CREATE_VM works on any open
 * /dev/kvm fd, so a duplicate of the VMM's own serves. Only descriptors
 * whose link names /dev/kvm are duplicated: closing a duplicate of a file
 * would release the VMM's POSIX record locks on it (fcntl(2), F_SETLK).
 * Duplicated, then checked again on the duplicate, so that a descriptor
 * another thread closes and reuses meanwhile is never mistaken for
 * /dev/kvm. -ENOENT when there is none. */
static int dup_held_dev_kvm(void)
{
	_cleanup_close_ int dir_fd = -1;
	DIR *dir;
	struct dirent *de;
	int found = -ENOENT;

	dir_fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return -ENOENT;
	dir = fdopendir(dir_fd);
	if (!dir)
		return -ENOENT;
	dir_fd = -1; /* the DIR owns it now */
	while ((de = readdir(dir))) {
		char *end;
		long n;
		int copy;

		errno = 0;
		n = strtol(de->d_name, &end, 10);
		if (errno || end == de->d_name || *end || n < 0 || n > INT_MAX || n == dirfd(dir) ||
		    !fd_links_dev_kvm((int)n))
			continue;
		copy = fcntl((int)n, F_DUPFD_CLOEXEC, 3);
		if (copy < 0)
			continue;
		if (fd_is_dev_kvm(copy)) {
			found = copy;
			break;
		}
		close(copy);
	}
	closedir(dir);
	return found;
}

int kvm_scratch_vm_create(struct kvm_scratch_vm *ret, char *detail, size_t detail_size)
{
	struct kvm_scratch_vm s = KVM_SCRATCH_VM_INIT;
	uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
	int r, open_errno;

	s.kvm_fd = open(KVM_SCRATCH_DEV_PATH, O_RDWR | O_CLOEXEC);
	if (s.kvm_fd < 0) {
		open_errno = errno;
		s.kvm_fd = dup_held_dev_kvm();
		if (s.kvm_fd < 0) {
			kvm_x86_detail(detail, detail_size,
				       "cannot create the probe's scratch VM: %s: %s, and this "
				       "process holds no %s fd (the probe writes an offset on a VM "
				       "of its own, never on the registered one)",
				       KVM_SCRATCH_DEV_PATH, strerror(open_errno),
				       KVM_SCRATCH_DEV_PATH);
			return -open_errno;
		}
		s.kvm_fd_held = true;
	}
	/* Type 0, the default VM. The question is what this host's KVM
	 * module does with an offset write (kvm_pvm drops it for every VM),
	 * so the verdict transfers to the registered VM; one of another type
	 * whose TSC the host may not set (a confidential VM) is not what this
	 * probe speaks for. */
	s.vm_fd = ioctl(s.kvm_fd, KVM_CREATE_VM, 0);
	if (s.vm_fd < 0) {
		r = -errno;
		kvm_x86_detail(detail, detail_size,
			       "cannot create the probe's scratch VM: KVM_CREATE_VM on %s: %s",
			       KVM_SCRATCH_DEV_PATH, strerror(-r));
		kvm_scratch_vm_close(&s);
		return r;
	}
	s.vcpu_fd = ioctl(s.vm_fd, KVM_CREATE_VCPU, 0UL);
	if (s.vcpu_fd < 0) {
		r = -errno;
		kvm_x86_detail(detail, detail_size,
			       "cannot create the probe's scratch VM: KVM_CREATE_VCPU 0: %s",
			       strerror(-r));
		kvm_scratch_vm_close(&s);
		return r;
	}
	s.create_ns = clock_ns(CLOCK_MONOTONIC) - t0;
	*ret = s;
	return 0;
}

void kvm_scratch_vm_close(struct kvm_scratch_vm *s)
{
	if (!s)
		return;
	s->vcpu_fd = close_nointr(s->vcpu_fd);
	s->vm_fd = close_nointr(s->vm_fd);
	s->kvm_fd = close_nointr(s->kvm_fd);
}
