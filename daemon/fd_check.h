/* fd_check.h - is an fd received from a VMM what it claims to be?
 * KVM names its anonymous inodes "kvm-vm" and "kvm-vcpu:<vcpu id>"
 * (virt/kvm/kvm_main.c: kvm_dev_ioctl_create_vm, create_vcpu_fd), and
 * /proc/self/fd/N reads "anon_inode:<name>". */
#pragma once

#include <stddef.h>
#include <stdint.h>

enum fd_kind {
	FD_KIND_OTHER = 0,
	FD_KIND_KVM_VM,
	FD_KIND_KVM_VCPU,
	_FD_KIND_MAX,
	_FD_KIND_INVALID = -1,
};

const char *fd_kind_to_string(enum fd_kind kind);

/* Pure: classify a /proc/self/fd link target. For a vCPU, *ret_vcpu_index is
 * its id. "anon_inode:kvm-vcpu:07", trailing garbage, overflow -> OTHER. */
enum fd_kind fd_check_parse_link(const char *link, uint32_t *ret_vcpu_index);

/* Classify an fd of this process via readlink(/proc/self/fd/N). -errno if
 * the link cannot be read (e.g. -EBADF). */
int fd_check_classify(int fd, enum fd_kind *ret_kind, uint32_t *ret_vcpu_index);

/* Are fds a and b of this process the same open file (kcmp(KCMP_FILE))?
 * 1, 0, or -errno (-ENOSYS without kcmp). Two SCM_RIGHTS copies of one KVM
 * VM fd are; a VM's fd and any other VM's are not. */
int fd_check_same_file(int a, int b);

/* Check a registration's fds: fds[0] is a kvm-vm fd, fds[1 + i] is the
 * kvm-vcpu fd with index i, n_fds == 1 + vcpu_count, 1 <= vcpu_count <=
 * VC_MAX_VCPUS, no fd twice (distinct names already imply distinct open
 * files; kcmp(KCMP_FILE), where available, names the duplicate in err).
 * The "index" is KVM's vcpu_id, the KVM_CREATE_VCPU argument (the APIC ID
 * on x86 for QEMU), so VMMs must create vCPUs with ids 0..vcpu_count-1.
 * Not checked, because KVM does not expose it to a process other than the
 * VM's creator: that the vCPUs belong to that VM; another VM's vCPU fd with
 * the right id passes.
 * Returns 0, or -EINVAL with a human sentence in err (if err_size > 0),
 * e.g. "fd 2 (vCPU 1) is anon_inode:kvm-vcpu:3, expected
 * anon_inode:kvm-vcpu:1", where "fd 2" is the position in fds; a duplicate
 * adds "; the same open file as fd 1 (vCPU 0)" where kcmp can tell. */
int fd_check_registration(const int *fds, size_t n_fds, uint32_t vcpu_count, char *err,
			  size_t err_size);
/* The same checks for positions first..first+n-1 of a registration whose
 * fds[0..first+n) have arrived: each message of a VM registered in several
 * is checked when it comes. */
int fd_check_slots(const int *fds, size_t first, size_t n, uint32_t vcpu_count, char *err,
		   size_t err_size);
