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

/* Decide from the environment whether there is a store (NOTIFY_SOCKET). */
void fdstore_init(struct vcd *vcd);
/* vm's registration is complete: store its fds under a new name, and the
 * state record. Failures are logged (the VM still serves; it is just not
 * kept across a restart). */
void fdstore_vm_add(struct vcd *vcd, struct vm_entry *vm);
/* vm is leaving: systemd drops its copies, the record is rewritten. */
void fdstore_vm_remove(struct vcd *vcd, struct vm_entry *vm);
/* vm's role or registered state changed (a target that arrived): the record
 * is rewritten. */
void fdstore_vm_changed(struct vcd *vcd, struct vm_entry *vm);
/* Rebuild the VMs the record names from fds (n of them, all taken: kept in
 * the VMs or closed). What does not fit (a bad record, missing or wrong
 * fds, a VMM process that is gone) is logged as a warning, closed and
 * removed from the store. Returns the number of VMs recovered. */
int fdstore_restore(struct vcd *vcd, struct fdstore_fd *fds, size_t n);
