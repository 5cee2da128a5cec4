/* control.h - libvcounter's controller calls: drive and watch a vcounterd
 * through its gRPC service Control (proto/vcounter.proto), over the local
 * unix socket or TCP with mutual TLS. What fleet controllers in other
 * languages do with a stock gRPC client, C programs (and vcounterctl) do
 * with these.
 *
 * All calls are synchronous. They return 0 on success and -errno on
 * failure; after a failure vcounter_ctl_status() is the gRPC status the
 * daemon answered (or -1 when the failure was local: connect, TLS, I/O) and
 * vcounter_ctl_last_error() a sentence.
 *
 * A gRPC status becomes -errno as follows (vcounter_ctl_status() keeps the
 * status itself):
 *   CANCELLED           -ECANCELED
 *   INVALID_ARGUMENT    -EINVAL
 *   DEADLINE_EXCEEDED   -ETIME
 *   NOT_FOUND           -ENOENT      (unknown VM or migration)
 *   ALREADY_EXISTS      -EEXIST
 *   PERMISSION_DENIED   -EPERM       (this caller's role may not)
 *   RESOURCE_EXHAUSTED  -ENOBUFS     (a daemon limit was hit)
 *   FAILED_PRECONDITION -EBUSY       (not now: wrong role or step, the VM
 *                                     is migrating or cannot migrate)
 *   ABORTED             -EAGAIN
 *   OUT_OF_RANGE        -ERANGE
 *   UNIMPLEMENTED       -EOPNOTSUPP
 *   UNAVAILABLE         -EHOSTUNREACH (e.g. the target daemon)
 *   UNAUTHENTICATED     -EACCES
 *   UNKNOWN, INTERNAL, DATA_LOSS, numbers this version does not know: -EIO
 * An HTTP status other than 200 without grpc-status is mapped to a status
 * first, as gRPC does (doc/http-grpc-status-mapping.md: 400 INTERNAL, 401
 * UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504
 * UNAVAILABLE, else UNKNOWN).
 * Local failures (status -1): -ENOENT, -ECONNREFUSED, ... from connect();
 * -ECONNREFUSED also when the daemon refuses this controller's certificate
 * (a TLS alert), -EKEYREJECTED when the daemon's certificate fails
 * verification, -EPROTO for HTTP/2 errors (a reset stream, a GOAWAY, no ALPN
 * h2, a unary call answered with zero or two messages), -EBADMSG for a
 * message that does not unpack or carries invalid ids, -EMSGSIZE for one
 * over 4 MiB, -ECONNRESET when the daemon closes the connection. After a
 * local failure other than a deadline the connection is unusable (-ENOTCONN):
 * close it and connect again.
 * A deadline that passes is -ETIME with status DEADLINE_EXCEEDED, whether
 * the daemon's trailers or this library's own poll() timeout noticed first;
 * the stream is reset and the connection stays usable (unless the deadline
 * cut a write short: then later calls fail with -ENOTCONN too). */
#ifndef VCOUNTER_CONTROL_H
#define VCOUNTER_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vcounter/vcounter.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VCOUNTER_DEFAULT_CONTROL_SOCKET "/run/vcounterd/control.sock"

struct vcounter_ctl_options {
	/* Exactly one of: */
	const char *socket_path; /* unix socket, h2c (NULL and no address:
				    VCOUNTER_DEFAULT_CONTROL_SOCKET) */
	const char *address;	 /* "host:port": TCP + TLS 1.3, ALPN h2 */
	/* TLS (address only): fleet CA, this controller's certificate and key,
	 * and the daemon identity its certificate must carry (NULL: the
	 * host part of address). */
	const char *ca_file;
	const char *cert_file;
	const char *key_file;
	const char *server_name;
	/* Per call deadline, sent as grpc-timeout (0: none). */
	unsigned timeout_ms;
};

struct vcounter_ctl;

/* gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html),
 * as vcounter_ctl_status() returns them, and -1 for a local failure. */
enum vcounter_ctl_status_code {
	VCOUNTER_CTL_STATUS_LOCAL = -1,
	VCOUNTER_CTL_STATUS_OK = 0,
	VCOUNTER_CTL_STATUS_CANCELLED = 1,
	VCOUNTER_CTL_STATUS_UNKNOWN = 2,
	VCOUNTER_CTL_STATUS_INVALID_ARGUMENT = 3,
	VCOUNTER_CTL_STATUS_DEADLINE_EXCEEDED = 4,
	VCOUNTER_CTL_STATUS_NOT_FOUND = 5,
	VCOUNTER_CTL_STATUS_ALREADY_EXISTS = 6,
	VCOUNTER_CTL_STATUS_PERMISSION_DENIED = 7,
	VCOUNTER_CTL_STATUS_RESOURCE_EXHAUSTED = 8,
	VCOUNTER_CTL_STATUS_FAILED_PRECONDITION = 9,
	VCOUNTER_CTL_STATUS_ABORTED = 10,
	VCOUNTER_CTL_STATUS_OUT_OF_RANGE = 11,
	VCOUNTER_CTL_STATUS_UNIMPLEMENTED = 12,
	VCOUNTER_CTL_STATUS_INTERNAL = 13,
	VCOUNTER_CTL_STATUS_UNAVAILABLE = 14,
	VCOUNTER_CTL_STATUS_DATA_LOSS = 15,
	VCOUNTER_CTL_STATUS_UNAUTHENTICATED = 16,
};

/* Connect and exchange the HTTP/2 prefaces: on return the daemon has
 * answered (and, over TLS, accepted this controller's certificate). That
 * takes at most timeout_ms, or 10 s when it is 0. */
int vcounter_ctl_connect(const struct vcounter_ctl_options *options, struct vcounter_ctl **ret);
void vcounter_ctl_close(struct vcounter_ctl *ctl); /* NULL ok */
/* ctl NULL: why this thread's last vcounter_ctl_connect() failed, naming
 * the socket or address. */
const char *vcounter_ctl_last_error(const struct vcounter_ctl *ctl);
/* Change the deadline of later calls (0: none), e.g. none for a watch
 * after short unary calls. */
void vcounter_ctl_set_timeout(struct vcounter_ctl *ctl, unsigned timeout_ms);
/* gRPC status of the last call (0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND, ...),
 * -1 when it failed before a status arrived. */
int vcounter_ctl_status(const struct vcounter_ctl *ctl);
/* "NOT_FOUND" for 5, ...; "LOCAL" for -1. */
const char *vcounter_ctl_status_name(int status);

struct vcounter_ctl_vm {
	char vm_id[64];
	char role[16];	  /* "source", "target" */
	char backend[32]; /* "kvm-syscounter", "kvm-x86", "none", ... */
	char arch[16];	  /* "x86-tsc", "arm64-cntvct", "none" */
	uint32_t vcpu_count;
	bool offset_control;
	bool registration_complete;
	char probe_detail[256];
	uint32_t guest_tsc_khz;
	int32_t registered_by_pid;
	uint32_t registered_by_uid;
};

struct vcounter_ctl_backend {
	char name[32];
	bool allowed;
	bool kernel_support;
	char detail[256];
	uint32_t vm_count;
};

#define VCOUNTER_CTL_MAX_BACKENDS 8

struct vcounter_ctl_host {
	char version[32];
	char host_name[256];
	struct vcounter_ctl_backend backends[VCOUNTER_CTL_MAX_BACKENDS];
	size_t n_backends;
	bool clock_synced;
	uint64_t maxerror_ns;
	uint64_t esterror_ns;
	int32_t tai_offset_s;
	char sync_source[16];	 /* what estimated maxerror: adjtimex, chrony, linuxptp, fixed */
	char sync_problem[256];	 /* why it gave none ("": it did) */
	uint64_t error_bound_ns; /* UINT64_MAX: unsynchronised */
	uint32_t vm_count;
	uint32_t migrations_running;
	uint32_t migrations_kept;
	uint32_t watchers;
	char peer_listen_address[256];
	uint64_t uptime_ns;
	uint32_t host_tsc_khz;
};

struct vcounter_ctl_migration {
	char migration_id[VCOUNTER_MIGRATION_ID_SIZE];
	char vm_id[64];
	char role[16];
	char step[16]; /* "preparing", ..., "done", "aborted", "failed" */
	bool terminal; /* done, aborted or failed */
	char peer_identity[256];
	char peer_address[256];
	uint64_t generation;
	bool started_by_controller;
	uint64_t age_ns;
	uint64_t step_age_ns;
	int64_t planned_delta_cycles;
	uint64_t planned_error_bound_ns;
	char failure_reason[256];
	bool recovered;	      /* resumed from the daemon's session journal */
	bool awaiting_source; /* target, recovered: apply waits for the source */
	/* From APPLIED on: what the target applied (offsets arrays are
	 * malloc'd, freed by vcounter_ctl_migration_clear). */
	bool has_report;
	struct vcounter_report report;
};

enum vcounter_ctl_event_kind {
	VCOUNTER_CTL_EVENT_VM_REGISTERED = 1,
	VCOUNTER_CTL_EVENT_VM_UNREGISTERED = 2,
	VCOUNTER_CTL_EVENT_MIGRATION_STEP = 3,
	VCOUNTER_CTL_EVENT_MIGRATION_OUTCOME = 4,
};

struct vcounter_ctl_event {
	uint64_t seq;
	uint64_t realtime_ns;
	enum vcounter_ctl_event_kind kind;
	struct vcounter_ctl_vm vm;		 /* VM_* kinds */
	struct vcounter_ctl_migration migration; /* MIGRATION_* kinds */
};

/* Free what a migration's report holds; the struct itself is the caller's. */
void vcounter_ctl_migration_clear(struct vcounter_ctl_migration *m);
/* Free an array from vcounter_ctl_list_migrations. NULL ok. */
void vcounter_ctl_migrations_free(struct vcounter_ctl_migration *m, size_t n);

int vcounter_ctl_host_status(struct vcounter_ctl *ctl, struct vcounter_ctl_host *ret);
/* *ret is malloc'd (free()), *ret_n entries. */
int vcounter_ctl_list_vms(struct vcounter_ctl *ctl, struct vcounter_ctl_vm **ret, size_t *ret_n);
/* vm_id NULL or "": every VM's. */
int vcounter_ctl_list_migrations(struct vcounter_ctl *ctl, const char *vm_id, bool running_only,
				 struct vcounter_ctl_migration **ret, size_t *ret_n);
int vcounter_ctl_get_migration(struct vcounter_ctl *ctl, const char *migration_id,
			       struct vcounter_ctl_migration *ret);
/* Start migrating vm_id (registered here as a source) to the daemon at
 * peer_address whose certificate carries peer_name. Returns when the
 * migration exists (step preparing); watch it for the rest. */
int vcounter_ctl_start_migration(struct vcounter_ctl *ctl, const char *vm_id,
				 const char *peer_address, const char *peer_name,
				 struct vcounter_ctl_migration *ret);
int vcounter_ctl_abort_migration(struct vcounter_ctl *ctl, const char *migration_id,
				 const char *reason, struct vcounter_ctl_migration *ret);

/* Stream events (filters NULL or "": all) to cb until cb returns nonzero
 * (the stream is cancelled with RST_STREAM; that value is returned, status
 * CANCELLED), the deadline passes (-ETIME) or the daemon ends the stream
 * (-EPIPE when it ends it with OK, else its status as -errno, as above).
 * cb is first called once with event NULL when the daemon has accepted the
 * watch (its response headers arrived): every event after that instant is
 * delivered. The event is valid during cb only. Events of a kind this
 * version does not know are skipped. cb must not use ctl (calls on one
 * connection are sequential); another connection is fine. */
int vcounter_ctl_watch(struct vcounter_ctl *ctl, const char *vm_id, const char *migration_id,
		       int (*cb)(const struct vcounter_ctl_event *event, void *userdata),
		       void *userdata);

#ifdef __cplusplus
}
#endif

#endif
