/* manager.c - builds struct vcd, starts and wires its modules, runs the
 * event loop, tears down (manager.h). */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "cleanup.h"
#include "clockns.h"
#include "conf.h"
#include "control.h"
#include "fdstore.h"
#include "hostclock.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "metrics.h"
#include "metrics_http.h"
#include "migration.h"
#include "reload.h"
#include "service.h"
#include "sync_source.h"
#include "tls.h"
#include "unix_fd.h"
#include "vcd.h"
#include "vmm_server.h"

#include "config.h"

/* The daemon, and what only the manager touches. */
struct manager {
	struct vcd vcd; /* what every module is handed */
	struct event *sigint;
	struct event *sigterm;
	struct service *svc;
	/* Passed by systemd, or none; the paths are config's strings. */
	struct service_sockets socks;
	int vmm_fd;	/* the VMM socket until vmm_server_start() takes it */
	int control_fd; /* the control socket until control_start() takes it */
};

static struct manager *manager_of(struct vcd *vcd)
{
	return (struct manager *)((char *)vcd - offsetof(struct manager, vcd));
}

/* service.c's SIGHUP, between RELOADING=1 and READY=1. */
static int reload_cb(void *userdata)
{
	return vcd_reload(userdata);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct event_base *base = arg;

	log_info_id(LOG_MESSAGE_DAEMON_STOPPING, "signal %d: stopping", (int)sig);
	event_base_loopbreak(base);
}

static int vmm_socket_open(const char *path)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_un sa;
	int r;

	r = unix_fd_address(path, &sa);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A socket file left by a previous run is replaced. */
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	/* Access is decided by SO_PEERCRED; the mode only keeps others out. */
	if (chmod(path, 0660) < 0)
		return -errno;
	if (listen(fd, 64) < 0)
		return -errno;
	return TAKE_FD(fd);
}

static int tls_setup(struct vcd *vcd)
{
	const struct tls_config *t = &vcd->config.tls;
	char err[512];
	int r;

	if (!t->ca_file && !t->cert_file && !t->key_file)
		return 0;
	if (!t->ca_file || !t->cert_file || !t->key_file)
		return log_error_errno(-EINVAL, "--ca, --cert and --key go together");
	r = tls_ctx_new(t, true, &vcd->tls_server, err, sizeof(err));
	if (r < 0)
		return log_error_errno(r, "TLS server context: %s", err);
	r = tls_ctx_new(t, false, &vcd->tls_client, err, sizeof(err));
	if (r < 0)
		return log_error_errno(r, "TLS client context: %s", err);
	return 0;
}

static int write_port_file(const char *path, int port)
{
	FILE *f;
	char tmp[4096];
	int r;

	if (!path)
		return 0;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return log_error_errno(-ENAMETOOLONG, "cannot write %s", path);
	f = fopen(tmp, "we");
	if (!f)
		return log_error_errno(-errno, "cannot write %s", path);
	fprintf(f, "%d\n", port);
	r = fclose(f) != 0 ? -errno : rename(tmp, path) < 0 ? -errno : 0;
	if (r < 0)
		return log_error_errno(r, "cannot write %s", path);
	return 0;
}

/* The event loop, the stop signals and the TLS contexts. */
static int setup_base(struct manager *m)
{
	struct vcd *vcd = &m->vcd;

	vcd->started_ns = clock_ns(CLOCK_MONOTONIC);
	vcd->base = event_base_new();
	if (!vcd->base)
		return log_error_errno(-ENOMEM, "cannot create the event loop");
	/* Before any socket exists: whoever sees one may signal us at once (a
	 * test harness, systemd), and the default actions would kill the
	 * daemon without its clean-up. A reload before start-up finished has
	 * nothing to do: the configuration was just read. A peer gone
	 * mid-write must not kill it either. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	m->sigint = evsignal_new(vcd->base, SIGINT, signal_cb, vcd->base);
	m->sigterm = evsignal_new(vcd->base, SIGTERM, signal_cb, vcd->base);
	if (!m->sigint || !m->sigterm || evsignal_add(m->sigint, NULL) < 0 ||
	    evsignal_add(m->sigterm, NULL) < 0)
		return log_error_errno(-ENOMEM, "cannot watch SIGINT and SIGTERM");
	/* conf_validate checked what goes together (--listen needs TLS, ...). */
	return tls_setup(vcd);
}

/* Sockets passed by systemd (vcounterd.socket) or our own; the VMs the
 * previous run left in systemd's fd store. */
static int setup_sockets(struct manager *m)
{
	struct vcd *vcd = &m->vcd;
	struct service_sockets *socks = &m->socks;
	char err[512];
	int r;

	r = service_listen_fds(socks, err, sizeof(err));
	if (r < 0)
		return log_error_errno(r, "socket activation: %s", err);
	m->control_fd = socks->control_fd;
	m->vmm_fd = socks->vmm_fd;
	/* The VM registry's observers, in the order they hear a VM leave: its
	 * migrations end before watchers hear it unregistered; the fd store
	 * (fdstore_init) drops it once it is out of the registry. */
	r = fdstore_init(vcd);
	if (r >= 0)
		r = vm_registry_observe(&vcd->vms, migration_on_vm, vcd);
	if (r >= 0)
		r = vm_registry_observe(&vcd->vms, control_on_vm, vcd);
	if (r < 0) {
		for (size_t i = 0; i < socks->n_stored; i++)
			close_nointr(socks->stored[i].fd);
		free(TAKE_PTR(socks->stored));
		return log_error_errno(r, "cannot watch the VM registry");
	}
	fdstore_restore(vcd, socks->stored, socks->n_stored);
	free(TAKE_PTR(socks->stored));
	if (m->control_fd >= 0)
		vcd->config.control_socket = socks->control_path;
	if (m->vmm_fd >= 0)
		vcd->config.vmm_socket = socks->vmm_path;
	else
		m->vmm_fd = vmm_socket_open(vcd->config.vmm_socket);
	if (m->vmm_fd < 0)
		return log_error_errno(m->vmm_fd, "cannot listen on %s", vcd->config.vmm_socket);
	return 0;
}

/* The modules, in the order each needs the ones before. */
static int start_modules(struct manager *m)
{
	struct vcd *vcd = &m->vcd;
	const struct conf *conf = vcd->conf;
	char err[512];
	int r;

	/* Once, ~20 ms: the target's anchors at prepare and the control API's
	 * host view measure their brackets with it. */
	if (hostclock_tsc_khz(&vcd->host_tsc_khz) < 0)
		vcd->host_tsc_khz = 0;
	r = sync_source_open(vcd->base, vcd->config.sync_source, &vcd->sync, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		return r;
	}
	r = vmm_server_start(vcd, m->vmm_fd, &migration_vmm_handlers);
	if (r < 0)
		return log_error_errno(r, "cannot start the VMM socket");
	m->vmm_fd = -1; /* the VMM server's now */
	r = migrations_start(vcd);
	if (r < 0)
		return log_error_errno(r, "cannot start the peer link on %s",
				       vcd->config.listen_addr ? vcd->config.listen_addr : "-");
	/* Each change of a migration, in this order: watchers, the metrics,
	 * the VMM holding the VM. */
	r = migrations_observe(vcd, control_on_migration, vcd);
	if (r >= 0)
		r = migrations_observe(vcd, metrics_on_migration, &vcd_metrics);
	if (r >= 0)
		r = migrations_observe(vcd, vmm_on_migration, vcd);
	if (r < 0)
		return log_error_errno(r, "cannot watch the migrations");
	/* Before the control API: a controller's first look sees them. */
	r = migrations_recover(vcd);
	if (r < 0)
		return r; /* migrations_recover said why */
	r = write_port_file(conf->port_file, migrations_listen_port(vcd));
	if (r < 0)
		return r;
	/* Before the control socket: a test harness that waits for that socket
	 * then finds the metrics port file written too. */
	r = metrics_http_start(vcd);
	if (r < 0)
		return r; /* metrics_http_start said why */
	r = write_port_file(conf->metrics_port_file, metrics_http_port(vcd));
	if (r < 0)
		return r;
	r = control_start(vcd, m->control_fd);
	if (r < 0)
		return r;   /* control_start said why */
	m->control_fd = -1; /* the control API's now (grpc.h) */
	r = write_port_file(conf->control_port_file, control_tcp_port(vcd));
	if (r < 0)
		return r;
	r = service_new(vcd, reload_cb, vcd, &m->svc);
	if (r < 0)
		return log_error_errno(r, "cannot set up the systemd notifications");
	return 0;
}

int vcd_new(struct conf *conf, struct vcd **ret)
{
	struct manager *m;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m) {
		conf_free(conf);
		return log_error_errno(-ENOMEM, "out of memory");
	}
	m->vmm_fd = m->control_fd = -1;
	m->vcd.conf = conf;
	conf_apply(conf, NULL, &m->vcd.config);
	r = setup_base(m);
	if (r >= 0)
		r = setup_sockets(m);
	if (r >= 0)
		r = start_modules(m);
	if (r < 0) {
		vcd_free(&m->vcd);
		return r;
	}
	log_info_id(LOG_MESSAGE_DAEMON_STARTED, "vcounterd %s on %s: vmm socket %s, peer link %s",
		    VCOUNTER_VERSION, m->vcd.config.host_name, m->vcd.config.vmm_socket,
		    m->vcd.config.listen_addr ? m->vcd.config.listen_addr : "off");
	*ret = &m->vcd;
	return 0;
}

int vcd_run(struct vcd *vcd)
{
	struct manager *m = manager_of(vcd);
	int r;

	service_ready(m->svc);
	r = event_base_dispatch(vcd->base);
	service_stopping(m->svc);
	return r < 0 ? log_error_errno(-EIO, "the event loop failed") : 0;
}

struct vcd *vcd_free(struct vcd *vcd)
{
	struct manager *m;

	if (!vcd)
		return NULL;
	m = manager_of(vcd);
	m->svc = service_free(m->svc);
	m->sigint = event_unref(m->sigint);
	m->sigterm = event_unref(m->sigterm);
	close_nointr(m->vmm_fd);
	close_nointr(m->control_fd);
	if (vcd->base) {
		metrics_http_stop(vcd);
		control_stop(vcd);
		migrations_stop(vcd);
		/* The VMs stay in the fd store: a restart recovers them. */
		vcd->stopping = true;
		vmm_server_stop(vcd);
		/* Callbacks libevent deferred (a peer link's bufferevent that
		 * was still writing holds a reference until its callback
		 * runs): let them run now, with every component gone, so that
		 * their objects are freed. */
		event_base_loop(vcd->base, EVLOOP_NONBLOCK);
	}
	vcd->sync = sync_source_free(vcd->sync);
	vcd->tls_server = ssl_ctx_unref(vcd->tls_server);
	vcd->tls_client = ssl_ctx_unref(vcd->tls_client);
	if (vcd->base)
		event_base_free(vcd->base);
	conf_free(vcd->conf);
	free(m);
	return NULL;
}
