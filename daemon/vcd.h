/* vcd.h - the daemon's state: what the manager (manager.c) builds and every module's glue
 * is handed. Each module's calls are in its own header (vmm_server.h,
 * migration.h, control.h, reload.h, fdstore.h, ...); core decisions live in
 * pure modules (session.c, counter_math.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "vcd_config.h"
#include "vm_registry.h"

struct conf;
struct control;
struct event_base;
struct journal;
struct metrics_http;
struct migrations;
struct sync_source;
struct vmm_server;

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
