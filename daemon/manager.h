/* manager.h - vcounterd's manager: the one place that builds a struct vcd
 * (vcd.h), starts its modules in order and wires them (the VM registry's
 * and the migrations' observers), runs the event loop until SIGINT or
 * SIGTERM, and tears everything down in reverse. main.c only turns argv
 * into a checked configuration; every other module is handed the struct
 * vcd it built. After systemd-timesyncd's Manager. */
#pragma once

struct conf;
struct vcd;

/* Build and start a daemon from conf (conf_load(), its TLS files checked
 * by vcd_check_tls()), which it takes: freed with the daemon, also when
 * this fails. Opens or takes over (socket activation) every socket,
 * restores the fd store's VMs, recovers journaled migrations and writes
 * the port files. 0 with *ret set, or a negative errno, the reason
 * logged and nothing left behind. */
int vcd_new(struct conf *conf, struct vcd **ret);

/* Tell systemd it is ready, run until a stop signal, tell it it stops.
 * 0, or a negative errno when the event loop failed. */
int vcd_run(struct vcd *vcd);

/* Stop every module (VMs stay in the fd store for the next start), free
 * everything vcd_new() built. NULL-safe; returns NULL. */
struct vcd *vcd_free(struct vcd *vcd);
