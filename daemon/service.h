/* service.h - vcounterd as a systemd service: the listening sockets socket
 * activation passes (sd_listen_fds_with_names(3)), and the sd_notify(3)
 * protocol: READY=1 with a STATUS= line kept current, WATCHDOG=1 from the
 * event loop, RELOADING=1 around a reload, STOPPING=1. Without NOTIFY_SOCKET
 * the notifications are no-ops, so the daemon runs the same by hand. */
#pragma once

#include <stddef.h>
#include <sys/un.h>

#include "fdstore.h"

struct vcd;

/* STATUS= changes (VMs registered, migrations running) go out at most this
 * often: the line is recomputed on a timer and sent when it differs. */
#define SERVICE_STATUS_INTERVAL_MS 1000

/* Sockets passed by the service manager, by FileDescriptorName=. */
struct service_sockets {
	int vmm_fd;	/* "vmm": AF_UNIX SOCK_SEQPACKET, listening; -1: none */
	int control_fd; /* "control": AF_UNIX SOCK_STREAM, listening; -1: none */
	/* Their addresses for logs and STATUS= ("@name" if abstract). */
	char vmm_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	char control_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	/* What the fd store passed back (fdstore.h): "state" and "vm<k>" fds,
	 * left as they are (no O_NONBLOCK: a VM's open file is its VMM's too).
	 * malloc'd, NULL when none; fdstore_restore() takes the fds. */
	struct fdstore_fd *stored;
	size_t n_stored;
};

/* Take the sockets passed by socket activation (LISTEN_FDS, LISTEN_FDNAMES;
 * the variables are unset), and the fd store's "state" and "vm<k>" fds. The
 * ones found are the caller's, the sockets non-blocking and close-on-exec;
 * none passed is 0 with both fds -1. Another name, "vmm" or "control" twice,
 * or a socket of another kind is -EINVAL with a sentence in err, and every
 * passed fd is closed. */
int service_listen_fds(struct service_sockets *ret, char *err, size_t err_size);

struct service;

/* Re-read the configuration: 0, or -errno when the previous one stays (the
 * function logged why). */
typedef int (*service_reload_fn)(void *userdata);

/* Arm the watchdog pings (when the manager asked: sd_watchdog_enabled(3)),
 * the STATUS= updates (when there is a NOTIFY_SOCKET) and SIGHUP (systemctl
 * reload: the unit's ExecReload= sends it) on vcd's loop. SIGHUP runs reload
 * between RELOADING=1 and READY=1; reload NULL: nothing to re-read, but
 * SIGHUP is still answered (its default action would end the daemon). */
int service_new(struct vcd *vcd, service_reload_fn reload, void *reload_userdata,
		struct service **ret);
/* NULL ok; returns NULL. */
struct service *service_free(struct service *svc);

/* The daemon serves: READY=1 with the status line. */
void service_ready(struct service *svc);
/* Around a configuration reload (service_new's SIGHUP does this itself):
 * RELOADING=1 with MONOTONIC_USEC=
 * (systemd >= 253 matches it against its own clock, older ones ignore it),
 * then READY=1. A failed reload (r < 0) keeps the previous configuration and
 * says so in STATUS= until a reload succeeds. */
void service_reloading(struct service *svc);
void service_reloaded(struct service *svc, int r);
/* Shutting down: STOPPING=1. */
void service_stopping(struct service *svc);

/* The STATUS= line as it would be sent now: "serving 3 VMs, 0 migrations
 * running, peer link on 0.0.0.0:7420, control on /run/vcounterd/control.sock". */
void service_format_status(const struct service *svc, char *buf, size_t size);
