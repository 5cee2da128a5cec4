/* fdstore.h - registered VMs kept across a restart in systemd's file
 * descriptor store (sd_pid_notify_with_fds(3): FDSTORE=1, FDNAME=,
 * FDSTOREREMOVE=1; the unit's FileDescriptorStoreMax=). Each VM's fds are
 * stored under "vm<k>", and a sealed memfd "state" holds what the daemon
 * knew of them (vm_store.h). On restart systemd passes them back with the
 * sockets (LISTEN_FDNAMES) and fdstore_restore() rebuilds the VMs, detached
 * until their VMM sends AttachVm. Without NOTIFY_SOCKET every call is a
 * no-op: nothing survives a restart, and VMMs register again. */
#pragma once

#include <stddef.h>

struct vcd;
struct vm_entry;

/* An fd systemd passed back from the store, by its FDNAME. */
struct fdstore_fd {
	char name[256];
	int fd;
};

/* Decide from the environment whether there is a store (NOTIFY_SOCKET),
 * and follow the VM registry: a VM registered has its fds stored under a
 * new name and the state record rewritten (a failure is logged: the VM
 * still serves, it is just not kept across a restart); one that changed
 * (a target that arrived) rewrites the record; one removed has systemd drop
 * its copies. 0, or -ENOSPC when the registry has no room for an observer. */
int fdstore_init(struct vcd *vcd);
/* Rebuild the VMs the record names from fds (n of them, all taken: kept in
 * the VMs or closed). What does not fit (a bad record, missing or wrong
 * fds, a VMM process that is gone) is logged as a warning, closed and
 * removed from the store. Returns the number of VMs recovered. */
int fdstore_restore(struct vcd *vcd, struct fdstore_fd *fds, size_t n);
