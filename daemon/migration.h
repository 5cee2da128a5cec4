/* migration.h - migrations and the peer link: the flow on both
 * sides, its registry and views, and recovery from the session journal. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "migration_view.h"
#include "vm_registry.h"
#include "vmm_server.h"

struct vcd;

int migrations_start(struct vcd *vcd);
/* After migrations_start: fn hears every migration's every change (a step,
 * a generation, a failure), in the order observers subscribed. -ENOSPC past
 * MIGRATIONS_MAX_OBSERVERS (migration_view.h). */
int migrations_observe(struct vcd *vcd, migration_observer_fn fn, void *userdata);
int migrations_listen_port(struct vcd *vcd);
/* vcd->tls_server changed (a reload): incoming links from now on use it. */
void migrations_tls_changed(struct vcd *vcd);
void migrations_stop(struct vcd *vcd);
/* Open the session journal (config.state_dir) and resume or abort every
 * migration it holds: 0, or -errno when the directory cannot be used. */
int migrations_recover(struct vcd *vcd);
/* The VMM socket's migration requests (MigrateOut, ReportPaused, Apply)
 * and its StatusReply's count, as vmm_server_start() takes them. */
extern const struct vmm_migration_handlers migration_vmm_handlers;
/* The VM registry's observer (vcd): a VM unregistered ends its running
 * migrations. */
void migration_on_vm(void *vcd, enum vm_event event, struct vm_entry *vm);
size_t migration_count(struct vcd *vcd);

/* A migration as the control API shows it; the pointers are valid until the
 * event loop runs again. */

int migration_get_view(struct vcd *vcd, const char *migration_id, struct migration_view *ret);
void migrations_foreach(struct vcd *vcd,
			void (*cb)(const struct migration_view *view, void *userdata),
			void *userdata);
size_t migrations_running(struct vcd *vcd);
/* Peer links verified and up, and those still connecting or handshaking. */
void migrations_link_counts(struct vcd *vcd, size_t *ret_established, size_t *ret_connecting);
/* Service Control's StartMigration: like a VMM's MigrateOut, but nobody
 * waits; the VMM that registered the VM learns of it by MigrationNotice.
 * -errno with a sentence in err: -EINVAL bad arguments, -ENOENT no such VM,
 * -EADDRNOTAVAIL a target VM, -EAGAIN registration not finished,
 * -EOPNOTSUPP no counter backend, -EBUSY one is running, -ENOKEY no TLS
 * client identity, -ECONNREFUSED et al. cannot reach the peer, -ENOSPC. */
int migration_start(struct vcd *vcd, const char *vm_id, const char *peer_address,
		    const char *peer_name, struct migration_view *ret, char *err, size_t err_size);
/* Abort by a controller: never touches the source VM. 0 (or 1: was already
 * aborted), -ENOENT, -EALREADY applied (cannot un-apply), -ECANCELED
 * failed, -EINPROGRESS a source whose final state may be with the target
 * (session_abort_by_controller: abort it there). */
int migration_abort(struct vcd *vcd, const char *migration_id, const char *reason,
		    struct migration_view *ret);
