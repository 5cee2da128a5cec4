/* vcd_config.h - the daemon's settings: what conf.c parses from the
 * configuration file and argv, and what struct vcd (vcd.h) runs with. Plain
 * C, no library's types, so that the parser depends on nothing of the
 * daemon's I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "counter_state.h"
#include "tls_config.h"

/* Limits (each a clear error when hit; vcounterd(8), LIMITS, lists them all
 * with the error a client sees). The four that a test cannot reach with
 * real resources are also settings (vcd_config.max_*, vcounterd.conf(5)):
 * the constant is their default and their upper bound. */
#define VCD_MAX_VMS			    4096 /* registered VMs per daemon: [vmm] max-vms */
#define VCD_MAX_VMM_CONNS		    1024 /* concurrent VMM connections: [vmm] max-connections */
#define VCD_MAX_MIGRATIONS		    1024 /* migrations kept (running + finished): [peer] max-migrations */
#define VCD_MAX_PEER_LINKS		    256 /* peer links, both directions */
#define VCD_MAX_ALLOWED_IDS		    64	/* --allow-uid / --allow-gid entries */
#define VCD_MAX_PENDING_OPS		    64	/* outstanding KVM ops per VMM connection */
/* A VM of more than 252 vCPUs registers in several messages: this many such
 * registrations under way per daemon (one per connection), each finished
 * within the deadline or dropped. */
#define VCD_MAX_PARTIAL_REGISTRATIONS	    4
#define VCD_PARTIAL_REGISTRATION_TIMEOUT_MS 5000

#define VCD_MAX_WATCHERS	   1024 /* WatchEvents streams: [control] max-watchers */
/* TLS identities per control role list ([control] operators, readers);
 * control.c checks it against the gRPC server's own GRPC_MAX_IDENTITIES. */
#define VCD_MAX_CONTROL_IDENTITIES 64
#define VCD_CONTROL_IDENTITY_MAX   255 /* bytes of one */

#define VCD_DEFAULT_VMM_SOCKET	   "/run/vcounterd/vmm.sock"
#define VCD_DEFAULT_CONTROL_SOCKET "/run/vcounterd/control.sock"
#define VCD_DEFAULT_PEER_PORT	   7420

struct vcd_config {
	const char *vmm_socket;
	const char *listen_addr; /* peer link; NULL: do not accept migrations */
	const char *host_name;	 /* this host's identity, for Hello and logs */
	struct tls_config tls;
	const char *allowed_peers[TLS_MAX_ALLOWED_PEERS];
	uid_t allowed_uids[VCD_MAX_ALLOWED_IDS];
	size_t n_allowed_uids;
	gid_t allowed_gids[VCD_MAX_ALLOWED_IDS];
	size_t n_allowed_gids;
	uint64_t error_bound_limit_ns; /* 0: no limit */
	bool error_bound_refuse;       /* refuse (else warn) above the limit */
	uint64_t max_abs_elapsed_ns;   /* |elapsed| beyond this is refused */
	uint32_t tsc_tolerance_ppm;    /* guest TSC rates this close are equal */
	unsigned kvm_op_timeout_ms;
	unsigned peer_timeout_ms;
	/* Limits, 1..VCD_MAX_* (their defaults): a reload that lowers one
	 * refuses new ones and keeps what is there. */
	uint32_t max_vms;
	uint32_t max_vmm_conns;
	uint32_t max_migrations;
	uint32_t max_watchers;
	/* --backends: allowed counter backends in preference order; 0: all
	 * that libvcounter has, in DESIGN.md order. */
	enum backend_kind backends[_BACKEND_KIND_MAX];
	size_t n_backends;

	/* service Control (gRPC): unix socket (NULL: none), TCP + TLS. */
	const char *control_socket;
	const char *control_listen;
	const char *control_operators[VCD_MAX_CONTROL_IDENTITIES]; /* TLS identities */
	size_t n_control_operators;
	const char *control_readers[VCD_MAX_CONTROL_IDENTITIES];
	size_t n_control_readers;
	uid_t control_operator_uids[VCD_MAX_ALLOWED_IDS];
	size_t n_control_operator_uids;
	uid_t control_reader_uids[VCD_MAX_ALLOWED_IDS];
	size_t n_control_reader_uids;
	gid_t control_operator_gids[VCD_MAX_ALLOWED_IDS];
	size_t n_control_operator_gids;
	gid_t control_reader_gids[VCD_MAX_ALLOWED_IDS];
	size_t n_control_reader_gids;

	/* Prometheus metrics over HTTP (metrics_http.h): "ADDR:PORT" or a bare
	 * port (127.0.0.1); NULL: off. */
	const char *metrics_listen;

	/* The session journal lives in <state_dir>/journal (journal.h); NULL:
	 * $STATE_DIRECTORY (systemd's StateDirectory=), else no journal. */
	const char *state_dir;

	/* This host's clock-error estimate (sync_source.h): "adjtimex",
	 * "chrony", "chrony@ADDR:PORT" or "fixed:NS". */
	const char *sync_source;
};
