/* fd_check.c - checks that the fds a VMM registers are the KVM VM and vCPU
 * fds it says they are, by the names KVM gives its anonymous inodes. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "counter_state.h"
#include "errmsg.h"
#include "fd_check.h"
#include "macro.h"

#if HAVE_KCMP_H && defined(SYS_kcmp)
#include <linux/kcmp.h>
#define FD_CHECK_HAVE_KCMP 1
#else
#define FD_CHECK_HAVE_KCMP 0
#endif

/* Only pseudo filesystems whose d_dname() prints a "<prefix>:" form produce a
 * link without a leading '/'; a path on a real filesystem always starts
 * with '/' (fs/d_path.c: prepend_path), and the "anon_inode:" form comes only
 * from anon_inodefs (fs/anon_inodes.c: anon_inodefs_dname) with a name
 * chosen by kernel code. So a user cannot make a file that reads like this. */
#define LINK_KVM_VM	     "anon_inode:kvm-vm"
#define LINK_KVM_VCPU_PREFIX "anon_inode:kvm-vcpu:"

static const char *const fd_kind_table[_FD_KIND_MAX] = {
	[FD_KIND_OTHER] = "other",
	[FD_KIND_KVM_VM] = "kvm-vm",
	[FD_KIND_KVM_VCPU] = "kvm-vcpu",
};

const char *fd_kind_to_string(enum fd_kind kind)
{
	if (kind < 0 || kind >= _FD_KIND_MAX)
		return NULL;
	return fd_kind_table[kind];
}

enum fd_kind fd_check_parse_link(const char *link, uint32_t *ret_vcpu_index)
{
	const size_t prefix_len = strlen(LINK_KVM_VCPU_PREFIX);
	uint64_t index = 0;
	const char *p;

	if (!link)
		return FD_KIND_OTHER;
	if (strcmp(link, LINK_KVM_VM) == 0)
		return FD_KIND_KVM_VM;
	if (strncmp(link, LINK_KVM_VCPU_PREFIX, prefix_len) != 0)
		return FD_KIND_OTHER;

	/* The kernel prints the id with "%d" (virt/kvm/kvm_main.c:
	 * create_vcpu_fd), so exactly the canonical decimal form is accepted:
	 * no sign, no leading zero, no trailing text. */
	p = link + prefix_len;
	if (*p == '\0' || (p[0] == '0' && p[1] != '\0'))
		return FD_KIND_OTHER;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return FD_KIND_OTHER;
		index = index * 10 + (uint64_t)(*p - '0');
		if (index > UINT32_MAX)
			return FD_KIND_OTHER;
	}

	if (ret_vcpu_index)
		*ret_vcpu_index = (uint32_t)index;
	return FD_KIND_KVM_VCPU;
}

/* readlink(/proc/self/fd/N) into buf, NUL-terminated. A target too long for
 * buf is cut; it is then a long path, not a KVM fd, either way. */
static int fd_link(int fd, char *buf, size_t size)
{
	char path[sizeof("/proc/self/fd/") + 3 * sizeof(int)];
	ssize_t n;

	if (fd < 0 || fcntl(fd, F_GETFD) < 0)
		return -EBADF;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

int fd_check_classify(int fd, enum fd_kind *ret_kind, uint32_t *ret_vcpu_index)
{
	char link[PATH_MAX];
	uint32_t index = 0;
	enum fd_kind kind;
	int r;

	r = fd_link(fd, link, sizeof(link));
	if (r < 0)
		return r;
	kind = fd_check_parse_link(link, &index);
	if (ret_kind)
		*ret_kind = kind;
	if (kind == FD_KIND_KVM_VCPU && ret_vcpu_index)
		*ret_vcpu_index = index;
	return 0;
}

/* 1 if a and b are the same open file (kcmp(2) KCMP_FILE), 0 if not,
 * -errno if kcmp cannot tell (no CONFIG_KCMP: -ENOSYS; seccomp or LSM: -EPERM). */
int fd_check_same_file(int a, int b)
{
#if FD_CHECK_HAVE_KCMP
	pid_t pid = getpid();
	long r = syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b);

	if (r < 0)
		return -errno;
	return r == 0;
#else
	return -ENOSYS;
#endif
}

/* "VM" or "vCPU <i>": what position pos of a registration must hold. */
static void describe_slot(size_t pos, char *buf, size_t size)
{
	if (pos == 0)
		snprintf(buf, size, "VM");
	else
		snprintf(buf, size, "vCPU %zu", pos - 1);
}

/* Every distinct (kind, index) names a distinct open file: KVM makes one
 * file per VM and one per vCPU id (virt/kvm/kvm_main.c), and an open file's
 * name never changes. So once each position holds the name it must, no open
 * file can appear twice, and the index check alone forbids duplicates. kcmp
 * only adds to the message for a rejected fd that it duplicates another
 * position, which tells a VMM author what went wrong. */
int fd_check_slots(const int *fds, size_t first, size_t n, uint32_t vcpu_count, char *err,
		   size_t err_size)
{
	size_t n_fds = first + n;

	if (vcpu_count == 0)
		return errmsg(err, err_size, -EINVAL,
			      "vcpu_count is 0, a VM needs at least one vCPU");
	if (vcpu_count > VC_MAX_VCPUS)
		return errmsg(err, err_size, -EINVAL,
			      "vcpu_count %" PRIu32 " exceeds the limit of %d", vcpu_count,
			      VC_MAX_VCPUS);
	if ((!fds && n > 0) || n_fds < first || n_fds > (size_t)vcpu_count + 1)
		return errmsg(err, err_size, -EINVAL,
			      "fds %zu..%zu do not fit a VM of %" PRIu32 " vCPUs", first, n_fds - 1,
			      vcpu_count);

	for (size_t pos = first; pos < n_fds; pos++) {
		enum fd_kind want_kind = pos == 0 ? FD_KIND_KVM_VM : FD_KIND_KVM_VCPU;
		uint32_t want_index = pos == 0 ? 0 : (uint32_t)(pos - 1);
		char link[PATH_MAX], slot[32], other_slot[32], want[64];
		enum fd_kind kind;
		uint32_t index = 0;
		size_t other_pos;
		int r;

		describe_slot(pos, slot, sizeof(slot));
		r = fd_link(fds[pos], link, sizeof(link));
		if (r < 0)
			return errmsg(err, err_size, -EINVAL, "fd %zu (%s) cannot be inspected: %s",
				      pos, slot, strerror(-r));

		kind = fd_check_parse_link(link, &index);
		if (kind == want_kind && (kind == FD_KIND_KVM_VM || index == want_index))
			continue;

		if (pos == 0)
			snprintf(want, sizeof(want), "%s", LINK_KVM_VM);
		else
			snprintf(want, sizeof(want), "%s%" PRIu32, LINK_KVM_VCPU_PREFIX,
				 want_index);

		/* The position this fd's name belongs in, if the registration
		 * has one: is this fd that very file again? */
		if (kind == FD_KIND_KVM_VM)
			other_pos = 0;
		else if (kind == FD_KIND_KVM_VCPU && index < vcpu_count)
			other_pos = (size_t)index + 1;
		else
			other_pos = pos;
		if (other_pos != pos && other_pos < n_fds &&
		    fd_check_same_file(fds[pos], fds[other_pos]) == 1) {
			describe_slot(other_pos, other_slot, sizeof(other_slot));
			return errmsg(err, err_size, -EINVAL,
				      "fd %zu (%s) is %s, expected %s; the same open file as "
				      "fd %zu (%s)",
				      pos, slot, link, want, other_pos, other_slot);
		}
		return errmsg(err, err_size, -EINVAL, "fd %zu (%s) is %s, expected %s", pos, slot,
			      link, want);
	}
	return 0;
}

int fd_check_registration(const int *fds, size_t n_fds, uint32_t vcpu_count, char *err,
			  size_t err_size)
{
	if (vcpu_count > 0 && vcpu_count <= VC_MAX_VCPUS &&
	    (!fds || n_fds != (size_t)vcpu_count + 1))
		return errmsg(err, err_size, -EINVAL,
			      "expected %zu fds (VM + %" PRIu32 " vCPUs), got %zu",
			      (size_t)vcpu_count + 1, vcpu_count, fds ? n_fds : 0);
	return fd_check_slots(fds, 0, n_fds, vcpu_count, err, err_size);
}
