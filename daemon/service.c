/* service.c - vcounterd under systemd: sockets from socket activation, and
 * readiness, status, watchdog, reload and stop through sd_notify(3). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "cleanup.h"
#include "clockns.h"
#include "control.h"
#include "log.h"
#include "macro.h"
#include "migration.h"
#include "service.h"
#include "vcd.h"
#include "vm_store.h"

struct service {
	struct vcd *vcd;
	bool notify; /* NOTIFY_SOCKET is set: someone listens */
	bool ready;  /* READY=1 sent and not stopping: STATUS= updates go out */
	struct event *watchdog_ev;
	uint64_t watchdog_usec; /* WATCHDOG_USEC; 0: no watchdog */
	struct event *status_ev;
	struct event *sighup_ev;
	service_reload_fn reload;
	void *reload_userdata;
	int reload_error; /* of the last reload; 0 if it succeeded */
	char last_status[512];
};

/* The address of a unix socket, as people write it. */
static void socket_path(int fd, char *buf, size_t size)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	size_t n;

	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 ||
	    len <= offsetof(struct sockaddr_un, sun_path)) {
		snprintf(buf, size, "(unnamed)");
		return;
	}
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (sa.sun_path[0] == '\0') /* abstract: unix(7), not NUL-terminated */
		snprintf(buf, size, "@%.*s", (int)(n - 1), sa.sun_path + 1);
	else
		snprintf(buf, size, "%.*s", (int)strnlen(sa.sun_path, n), sa.sun_path);
}

static int fd_nonblock(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -errno;
	return fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ? -errno : 0;
}

static void strv_free(char **strv)
{
	for (char **s = strv; s && *s; s++)
		free(*s);
	free(strv);
}

/* One passed fd named name (or "unknown": LISTEN_FDNAMES missing) into s. */
static int take_fd(int fd, const char *name, struct service_sockets *s, char *err, size_t err_size)
{
	static const struct {
		const char *name;
		int type;
		const char *directive;
	} sockets[] = {
		{ "vmm", SOCK_SEQPACKET, "ListenSequentialPacket=" },
		{ "control", SOCK_STREAM, "ListenStream=" },
	};

	if (strcmp(name, "state") == 0 || vm_store_fd_name_is_valid(name)) {
		struct fdstore_fd *p;

		p = realloc(s->stored, (s->n_stored + 1) * sizeof(*p));
		if (!p) {
			snprintf(err, err_size, "out of memory");
			return -ENOMEM;
		}
		s->stored = p;
		snprintf(p[s->n_stored].name, sizeof(p[s->n_stored].name), "%s", name);
		p[s->n_stored++].fd = fd;
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
		return 0;
	}
	for (size_t i = 0; i < ELEMENTSOF(sockets); i++) {
		int *slot = i == 0 ? &s->vmm_fd : &s->control_fd;
		int r;

		if (strcmp(name, sockets[i].name) != 0)
			continue;
		if (*slot >= 0) {
			snprintf(err, err_size, "fds %d and %d are both named '%s'", *slot, fd,
				 name);
			return -EINVAL;
		}
		r = sd_is_socket_unix(fd, sockets[i].type, 1, NULL, 0);
		if (r <= 0) {
			snprintf(err, err_size,
				 "fd %d named '%s' is not a listening AF_UNIX %s socket (%s "
				 "with a path)",
				 fd, name,
				 sockets[i].type == SOCK_SEQPACKET ? "SOCK_SEQPACKET"
								   : "SOCK_STREAM",
				 sockets[i].directive);
			return -EINVAL;
		}
		*slot = fd;
		return 0;
	}
	snprintf(err, err_size,
		 "fd %d is named '%s': vcounterd takes 'vmm' (ListenSequentialPacket=) and "
		 "'control' (ListenStream=), named by FileDescriptorName= in its socket unit, "
		 "and 'state' and 'vm<k>' from its fd store",
		 fd, name);
	return -EINVAL;
}

int service_listen_fds(struct service_sockets *ret, char *err, size_t err_size)
{
	struct service_sockets s = { .vmm_fd = -1, .control_fd = -1 };
	char **names = NULL;
	int n, r = 0;

	/* Unset LISTEN_*: nothing the daemon starts may take them for its own. */
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		snprintf(err, err_size, "malformed LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES");
		return n;
	}
	for (int i = 0; i < n && r == 0; i++)
		r = take_fd(SD_LISTEN_FDS_START + i, names ? names[i] : "unknown", &s, err,
			    err_size);
	for (int i = 0; i < n && r == 0; i++) {
		int fd = SD_LISTEN_FDS_START + i;

		if (fd != s.vmm_fd && fd != s.control_fd)
			continue;
		r = fd_nonblock(fd);
		if (r < 0)
			snprintf(err, err_size, "fd %d: cannot make it non-blocking: %s",
				 SD_LISTEN_FDS_START + i, strerror(-r));
	}
	strv_free(names);
	if (r < 0) {
		for (int i = 0; i < n; i++)
			close(SD_LISTEN_FDS_START + i);
		free(s.stored);
		return r;
	}
	if (s.vmm_fd >= 0)
		socket_path(s.vmm_fd, s.vmm_path, sizeof(s.vmm_path));
	if (s.control_fd >= 0)
		socket_path(s.control_fd, s.control_path, sizeof(s.control_path));
	*ret = s;
	return 0;
}

static void notify(struct service *svc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void notify(struct service *svc, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int r;

	if (!svc || !svc->notify)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	r = sd_notify(0, msg);
	if (r < 0)
		log_debug_errno(r, "sd_notify(%.*s)", (int)strcspn(msg, "\n"), msg);
}

/* host:port of the peer link with the port actually bound (--listen :0). */
static void peer_link_address(struct vcd *vcd, char *buf, size_t size)
{
	const char *addr = vcd->config.listen_addr;
	const char *colon = strrchr(addr, ':');
	int port = migrations_listen_port(vcd);

	if (colon && port > 0)
		snprintf(buf, size, "%.*s:%d", (int)(colon - addr), addr, port);
	else
		snprintf(buf, size, "%s", addr);
}

void service_format_status(const struct service *svc, char *buf, size_t size)
{
	struct vcd *vcd = svc->vcd;
	const struct vcd_config *cfg = &vcd->config;
	size_t running = migrations_running(vcd);
	char peer[300] = "off", control[600] = "off", reload[128] = "";
	int tcp_port = control_tcp_port(vcd);

	if (cfg->listen_addr) {
		snprintf(peer, sizeof(peer), "on ");
		peer_link_address(vcd, peer + 3, sizeof(peer) - 3);
	}
	if (vcd->control && cfg->control_socket && tcp_port > 0)
		snprintf(control, sizeof(control), "on %s and TCP port %d", cfg->control_socket,
			 tcp_port);
	else if (vcd->control && cfg->control_socket)
		snprintf(control, sizeof(control), "on %s", cfg->control_socket);
	else if (vcd->control && tcp_port > 0)
		snprintf(control, sizeof(control), "on TCP port %d", tcp_port);
	if (svc->reload_error)
		snprintf(reload, sizeof(reload),
			 "; last reload failed (%s), previous configuration kept",
			 strerror(svc->reload_error));
	snprintf(buf, size, "serving %zu VM%s, %zu migration%s running, peer link %s, control %s%s",
		 vm_registry_count(&vcd->vms), vm_registry_count(&vcd->vms) == 1 ? "" : "s",
		 running, running == 1 ? "" : "s", peer, control, reload);
}

/* Send STATUS= when the line changed since it was last sent. */
static void status_update(struct service *svc)
{
	char status[sizeof(svc->last_status)];

	service_format_status(svc, status, sizeof(status));
	if (strcmp(status, svc->last_status) == 0)
		return;
	snprintf(svc->last_status, sizeof(svc->last_status), "%s", status);
	notify(svc, "STATUS=%s", status);
}

static void status_cb(evutil_socket_t fd, short what, void *arg)
{
	struct service *svc = arg;

	if (svc->ready)
		status_update(svc);
}

/* The ping comes from the event loop, so it stops when the loop does. */
static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	notify(arg, "WATCHDOG=1");
}

static struct event *timer_new(struct event_base *base, uint64_t usec, event_callback_fn cb,
			       void *arg)
{
	struct timeval tv = { .tv_sec = (time_t)(usec / 1000000),
			      .tv_usec = (suseconds_t)(usec % 1000000) };
	struct event *ev = event_new(base, -1, EV_PERSIST, cb, arg);

	if (ev && event_add(ev, &tv) < 0) {
		ev = event_unref(ev);
		return NULL;
	}
	return ev;
}

static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	struct service *svc = arg;
	int r = 0;

	log_info("SIGHUP: reloading the configuration");
	service_reloading(svc);
	if (svc->reload)
		r = svc->reload(svc->reload_userdata);
	else
		log_info("SIGHUP: no configuration file to re-read");
	service_reloaded(svc, r);
}

int service_new(struct vcd *vcd, service_reload_fn reload, void *reload_userdata,
		struct service **ret)
{
	struct service *svc = calloc(1, sizeof(*svc));
	uint64_t usec = 0;
	int r;

	if (!svc)
		return -ENOMEM;
	svc->vcd = vcd;
	svc->reload = reload;
	svc->reload_userdata = reload_userdata;
	svc->notify = getenv("NOTIFY_SOCKET") != NULL;
	/* > 0 only when WATCHDOG_PID, if set, is this process. */
	r = sd_watchdog_enabled(0, &usec);
	if (r < 0)
		log_warning_errno(r, "systemd watchdog: malformed WATCHDOG_USEC/WATCHDOG_PID, "
				     "no pings");
	if (r > 0 && usec > 0) {
		/* Half the period: a ping late by one loop turn still counts
		 * (sd_watchdog_enabled(3) recommends it). */
		svc->watchdog_usec = usec;
		svc->watchdog_ev = timer_new(vcd->base, usec / 2, watchdog_cb, svc);
		if (!svc->watchdog_ev)
			goto nomem;
		log_info("systemd watchdog: WATCHDOG=1 every %" PRIu64 " ms", usec / 2000);
	}
	if (svc->notify) {
		svc->status_ev = timer_new(vcd->base, SERVICE_STATUS_INTERVAL_MS * UINT64_C(1000),
					   status_cb, svc);
		if (!svc->status_ev)
			goto nomem;
	}
	svc->sighup_ev = evsignal_new(vcd->base, SIGHUP, sighup_cb, svc);
	if (!svc->sighup_ev || evsignal_add(svc->sighup_ev, NULL) < 0)
		goto nomem;
	*ret = svc;
	return 0;
nomem:
	service_free(svc);
	return -ENOMEM;
}

struct service *service_free(struct service *svc)
{
	if (!svc)
		return NULL;
	svc->watchdog_ev = event_unref(svc->watchdog_ev);
	svc->status_ev = event_unref(svc->status_ev);
	svc->sighup_ev = event_unref(svc->sighup_ev);
	free(svc);
	return NULL;
}

void service_ready(struct service *svc)
{
	service_format_status(svc, svc->last_status, sizeof(svc->last_status));
	svc->ready = true;
	notify(svc, "READY=1\nSTATUS=%s", svc->last_status);
}

void service_reloading(struct service *svc)
{
	svc->ready = false;
	notify(svc, "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=%" PRIu64,
	       clock_ns(CLOCK_MONOTONIC) / 1000);
}

void service_reloaded(struct service *svc, int r)
{
	svc->reload_error = r < 0 ? -r : 0;
	service_ready(svc);
}

void service_stopping(struct service *svc)
{
	svc->ready = false;
	notify(svc, "STOPPING=1\nSTATUS=stopping");
}
