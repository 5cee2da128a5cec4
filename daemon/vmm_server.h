/* vmm_server.h - the VMM socket: VMMs register their VMs and hand
 * over KVM ops to run, and the migrations reach them through it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "counter_state.h"
#include "migration_view.h"
#include "vcounter.pb-c.h"
#include "vm_registry.h"

struct vcd;

/* Refusals on the VMM socket logged per connection (and for all those
 * refused at accept): this many per interval, then a count. */
#define VMM_REFUSAL_LOG_BURST	    10
#define VMM_REFUSAL_LOG_INTERVAL_NS (10 * UINT64_C(1000000000))

/* What a KVM op run by the VMM's libvcounter returned, decoded and checked. */
struct kvm_op_outcome {
	enum backend_kind backend;
	bool offset_control;
	char detail[256];
	bool has_state;
	struct counter_state state;
	bool has_apply_anchor;
	struct host_anchor apply_anchor;
	uint64_t apply_ns;
	bool has_clock_before; /* APPLY: the target kvmclock before the write */
	struct kvmclock_state clock_before;
};

/* error is 0 or -errno (-ETIMEDOUT, -ECONNRESET when the VMM went away, or
 * what the VMM reported); msg a sentence when error != 0. outcome is only
 * valid during the call. */
typedef void (*vcd_kvm_op_cb)(struct vcd *vcd, int error, const char *msg,
			      const struct kvm_op_outcome *outcome, void *userdata);

/* What the VMM socket hands to the migrations: their entry points, given
 * to vmm_server_start() by the manager, so that the VMM socket does not call the
 * migrations by name (they call it: vmm_kvm_op, vmm_reply). Each answers
 * request_id on connection conn_id itself. */
struct vmm_migration_handlers {
	void (*migrate_out)(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
			    const char *vm_id, const char *peer_address, const char *peer_name);
	void (*report_paused)(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
			      const char *vm_id, const char *migration_id);
	void (*apply)(struct vcd *vcd, uint64_t conn_id, uint64_t request_id, const char *vm_id,
		      const char *migration_id);
	size_t (*count)(struct vcd *vcd); /* migrations kept */
};

int vmm_server_start(struct vcd *vcd, int listen_fd, const struct vmm_migration_handlers *mh);
void vmm_server_stop(struct vcd *vcd);
/* Forget vm (logged with why): its migrations end, its fds are closed. */
void vmm_drop_vm(struct vcd *vcd, struct vm_entry *vm, const char *why);
/* Send a reply to request id on VMM connection conn_id (gone: dropped). */
void vmm_reply_ok(struct vcd *vcd, uint64_t conn_id, uint64_t request_id);
void vmm_reply_error(struct vcd *vcd, uint64_t conn_id, uint64_t request_id, int error,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6), nonnull(5)));
void vmm_reply(struct vcd *vcd, uint64_t conn_id, Vcounter__V1__VmmMessage *msg);
struct kvm_op_request {
	int kind; /* Vcounter__V1__KvmOpKind */
	/* KVM_OP_APPLY: the final source state, and which migration it is. */
	const struct counter_state *plan_source;
	const char *migration_id;
	uint64_t generation;
	/* Sent ahead of need: no deadline until vmm_kvm_op_arm(). */
	bool deferred;
};

/* Ask the VMM holding vm to run a KVM op; cb is called exactly once (with
 * -ECANCELED after vmm_kvm_op_cancel). */
int vmm_kvm_op(struct vcd *vcd, const struct vm_entry *vm, const struct kvm_op_request *req,
	       vcd_kvm_op_cb cb, void *userdata, uint64_t *ret_op_id);
/* Start the deadline of a deferred op: -ENOENT if it is gone. */
int vmm_kvm_op_arm(struct vcd *vcd, uint64_t conn_id, uint64_t op_id);
void vmm_kvm_op_cancel(struct vcd *vcd, uint64_t conn_id, uint64_t op_id);

/* Best effort, for notices the VMM did not ask for: a VMM that does not
 * read loses the notice (logged), not its connection. */
void vmm_notify(struct vcd *vcd, uint64_t conn_id, const Vcounter__V1__VmmMessage *msg);
/* The migrations' observer (vcd): the VMM holding the migration's VM hears a
 * MigrationNotice. */
void vmm_on_migration(void *vcd, const struct migration_event *ev);
