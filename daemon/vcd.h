/* vcd.h - the daemon's state and the calls between its parts: the VMM socket
 * (vmm_server.c), migrations and the peer link (migration.c), start-up
 * (main.c). Core decisions live in pure modules (session.c,
 * counter_math.c); this is the glue that does their I/O. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "counter_math.h"
#include "counter_state.h"
#include "grpc.h"
#include "session.h"
#include "tls.h"
#include "migration_view.h"
#include "vcd_config.h"
#include "vm_registry.h"
#include "vcounter.pb-c.h"

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

struct vcd;
struct conf;

/* error is 0 or -errno (-ETIMEDOUT, -ECONNRESET when the VMM went away, or
 * what the VMM reported); msg a sentence when error != 0. outcome is only
 * valid during the call. */
typedef void (*vcd_kvm_op_cb)(struct vcd *vcd, int error, const char *msg,
			      const struct kvm_op_outcome *outcome, void *userdata);

struct vcd {
	struct event_base *base;
	struct vcd_config config;
	SSL_CTX *tls_server;
	SSL_CTX *tls_client;
	struct vmm_server *vmm;
	struct migrations *migrations;
	struct control *control;
	struct vm_registry vms;	  /* every VM registered here: their one owner */
	uint64_t started_ns;	  /* CLOCK_MONOTONIC at start-up */
	uint32_t host_tsc_khz;	  /* this host's TSC rate, measured at start-up; 0: unknown */
	struct sync_source *sync; /* this host's clock-error estimate (config.sync_source) */
	struct metrics_http *metrics_http;
	/* The configuration config was made from (conf.h): its strings'
	 * owner, and what a reload reads again. */
	struct conf *conf;
	bool fdstore;		 /* NOTIFY_SOCKET set: VMs kept in systemd's fd store */
	bool stopping;		 /* shutting down: VMs stay in the store for a restart */
	uint64_t next_fd_name;	 /* k of the next "vm<k>" FDNAME */
	struct journal *journal; /* NULL: migrations are not journaled */
};

/* vmm_server.c */
/* What the VMM socket hands to the migrations: their entry points, given
 * to vmm_server_start() by main.c, so that the VMM socket does not call the
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

/* migration.c */
int migrations_start(struct vcd *vcd);
/* After migrations_start: fn hears every migration's every change (a step,
 * a generation, a failure), in the order observers subscribed. -ENOSPC past
 * MIGRATIONS_MAX_OBSERVERS. */
#define MIGRATIONS_MAX_OBSERVERS 4
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
 * failed. */
int migration_abort(struct vcd *vcd, const char *migration_id, const char *reason,
		    struct migration_view *ret);

/* control.c: service Control. */
int control_start(struct vcd *vcd, int listen_unix_fd);
/* The TLS server context of the control API's TCP listener for cfg: the
 * fleet CA, this host's certificate, the controllers' names as allow-list. */
int control_tls_new(const struct vcd_config *cfg, SSL_CTX **ret, char *err, size_t err_size);
/* A reload: cfg's role lists, and tls (when the TCP listener is on), for
 * connections from now on. -errno with a sentence in err: nothing changed. */
int control_reconfigure(struct vcd *vcd, const struct vcd_config *cfg, SSL_CTX *tls, char *err,
			size_t err_size);
void control_stop(struct vcd *vcd);
int control_tcp_port(struct vcd *vcd);	       /* -ENOTCONN without TCP */
size_t control_watcher_count(struct vcd *vcd); /* open WatchEvents streams */
/* The VM registry's observer (vcd): WatchEvents hear a VM registered and
 * unregistered. */
void control_on_vm(void *vcd, enum vm_event event, struct vm_entry *vm);
/* The migrations' observer (vcd): WatchEvents hear each step. */
void control_on_migration(void *vcd, const struct migration_event *ev);

/* reload.c: read the configuration file and the command line again and
 * swap the result in (certificates, allow-lists, roles, policy, timeouts,
 * log level, backends), or keep the old one whole and log why ("FILE:LINE:
 * key 'k' = 'v': reason"): 0 or -errno. Settings that need a restart
 * (sockets, listen addresses, host name, port files) keep their values,
 * with a warning when the file changed them. */
int vcd_reload(struct vcd *vcd);
/* Build (and free) the TLS contexts conf asks for: 0, or -errno with the
 * key, its file and line, and OpenSSL's reason in err. */
int vcd_check_tls(const struct conf *conf, char *err, size_t err_size);
