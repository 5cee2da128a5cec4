/* migration_internal.h - what the files of the migrations share: the
 * migration record and its registry, and the calls between the files. Not
 * for the rest of the daemon, which has migration.h. The files call one
 * way only (tools/module-graph checks it): migration.c (the entry points:
 * the VMM's requests, the peer link's messages, the controller's calls,
 * timeouts) and migration_recovery.c call migration_source.c and
 * migration_target.c, which call migration_core.c and never each other. */
#pragma once

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>

#include "cleanup.h"
#include "clockns.h"
#include "counter_math.h"
#include "failpoint.h"
#include "frame.h"
#include "hostclock.h"
#include "journal.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "migration_view.h"
#include "vm_registry.h"
#include "vmm_server.h"
#include "peer_link.h"
#include "sync_source.h"
#include "vcd.h"
#include "wire.h"

struct migration {
	struct migration *next;
	struct vcd *vcd;
	struct session s;
	uint64_t link_id;
	/* The VMM request this migration still owes an answer to. */
	uint64_t vmm_conn_id;
	uint64_t vmm_request_id;
	uint64_t peer_request_id; /* target: id of the message to answer */
	struct event *timer;	  /* peer reply deadline */
	uint64_t apply_started_ns;
	/* Target: the APPLY op handed to the VMM for the current final state. */
	uint64_t apply_op_id;
	uint64_t apply_op_conn_id;
	int64_t planned_delta_cycles;
	uint64_t planned_error_bound_ns;
	char peer_address[256]; /* source: where the target daemon listens */
	bool by_controller;
	bool metrics_counted; /* its outcome is in vcounterd_migrations_total */
	/* Session journal: what the file on disk says now. */
	uint64_t journal_seq;
	enum migration_step journaled_step;
	uint64_t journaled_generation;
	bool recovered;	      /* loaded from the journal at start-up */
	struct event *replay; /* source: replay the final state on a new link */
	unsigned replay_attempts;
};

struct migrations {
	struct peer_links links; /* the peer link's transport (peer_link.h) */
	struct migration *list;
	size_t n;
	struct {
		migration_observer_fn fn;
		void *userdata;
	} observers[MIGRATIONS_MAX_OBSERVERS];
	size_t n_observers;
	/* A migration's peer deadline passed (migration.c's, set at start). */
	event_callback_fn on_timeout;
};

struct op_ctx {
	char migration_id[VC_MIGRATION_ID_LEN + 1];
	uint64_t op_id;
};

/* migration_core.c: the registry, the journal steps, the observers */
struct migration *migration_find(struct vcd *vcd, const char *migration_id);
struct peer_link *migration_link_find(struct vcd *vcd, uint64_t link_id);
int migration_new_id(char ret[VC_MIGRATION_ID_LEN + 1]);
void migration_free(struct vcd *vcd, struct migration *m);
int migration_new(struct vcd *vcd, struct migration **ret);
void migration_arm_timer(struct vcd *vcd, struct migration *m);
void migration_reply_vmm_error(struct vcd *vcd, struct migration *m, int error, const char *text);
void migration_withdraw_apply_op(struct vcd *vcd, struct migration *m);
void migration_view_of(const struct migration *m, struct migration_view *ret);
int migration_record(struct vcd *vcd, struct migration *m);
void migration_record_after(struct vcd *vcd, struct migration *m);
void migration_changed(struct vcd *vcd, struct migration *m);
void migration_fail(struct vcd *vcd, struct migration *m, int error, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void migration_journal_failed(struct vcd *vcd, struct migration *m, int error);
struct op_ctx *migration_op_ctx_new(const struct migration *m);
void migration_sync_or_unknown(struct vcd *vcd, const struct migration *m, const char *role,
			       struct sync_error *sync);
void migration_log_outcome(const struct migration_report *rep, const char *role);
void migration_send_abort(struct vcd *vcd, struct migration *m, const char *reason);

/* migration_source.c: the source side */
void migration_handle_migrate_out(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
				  const char *vm_id, const char *peer_address,
				  const char *peer_name);
void migration_handle_report_paused(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
				    const char *vm_id, const char *migration_id);
void source_handle_applied(struct vcd *vcd, struct peer_link *link,
			   const Vcounter__V1__PeerMessage *msg);
void source_handle_prepare_ack(struct vcd *vcd, struct peer_link *link,
			       const Vcounter__V1__PeerMessage *msg, const char *migration_id);
void source_handle_final_ack(struct vcd *vcd, struct peer_link *link,
			     const Vcounter__V1__PeerMessage *msg, const char *migration_id);
void source_handle_error_reply(struct vcd *vcd, struct peer_link *link,
			       const Vcounter__V1__PeerMessage *msg, const char *migration_id);
void source_replay_cb(evutil_socket_t fd, short what, void *arg);
void source_schedule_replay(struct vcd *vcd, struct migration *m);

/* migration_target.c: the target side */
void migration_handle_apply(struct vcd *vcd, uint64_t conn_id, uint64_t request_id,
			    const char *vm_id, const char *migration_id);
void target_handle_prepare(struct vcd *vcd, struct peer_link *link,
			   const Vcounter__V1__PeerMessage *msg);
void target_handle_final(struct vcd *vcd, struct peer_link *link,
			 const Vcounter__V1__PeerMessage *msg);
void target_arrived(struct vcd *vcd, struct migration *m);
