/* main.c - vcounterd: configuration (conf.c), sockets, TLS contexts, event loop. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "clockns.h"
#include "conf.h"
#include "control.h"
#include "counter_math.h"
#include "failpoint.h"
#include "fdstore.h"
#include "hostclock.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "metrics_http.h"
#include "migration.h"
#include "reload.h"
#include "service.h"
#include "sync_source.h"
#include "tls.h"
#include "vcd.h"

#include "config.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vcounterd [OPTIONS]\n"
		"Hand KVM guests' system counters between hosts by offset.\n\n"
		"  --config FILE            configuration file, vcounterd.conf(5) (default\n"
		"                           %s,\n"
		"                           fine when missing); the options below win\n"
		"  --check-config           check the configuration (TLS files too), print\n"
		"                           it as in effect, exit 0; or say why not, exit 1\n"
		"  --vmm-socket PATH        VMM socket (default %s)\n"
		"  --state-directory DIR    keep the session journal in DIR/journal (default:\n"
		"                           $STATE_DIRECTORY, set by systemd; else none)\n"
		"  --listen ADDR:PORT       accept migrations from peers here (port 0: any)\n"
		"  --port-file FILE         write the peer port actually bound to FILE\n"
		"  --host-name NAME         this host's identity (its certificate SAN)\n"
		"  --ca FILE                fleet CA bundle (PEM)\n"
		"  --cert FILE              this host's certificate chain (PEM)\n"
		"  --key FILE               its private key (PEM)\n"
		"  --allow-peer NAME        peer identity (SAN) allowed on the peer link; "
		"repeatable\n"
		"  --allow-uid UID          VMM uid allowed on the VMM socket; repeatable\n"
		"                           (default: root and the daemon's own uid)\n"
		"  --allow-gid GID          VMM gid allowed on the VMM socket; repeatable\n"
		"  --error-bound-limit NS   error bound limit per migration (default 1000000)\n"
		"  --error-bound-policy P   'warn' (default) or 'refuse' above the limit\n"
		"  --max-elapsed NS         refuse |elapsed| above this (default 3600000000000)\n"
		"  --tsc-tolerance PPM      guest TSC rates this close count as equal (default "
		"%d,\n"
		"                           KVM's tsc_tolerance_ppm); 0 demands equal kHz\n"
		"  --backends LIST          counter backends allowed, in preference order\n"
		"                           (comma-separated: kvm-syscounter, kvm-x86;\n"
		"                           default: both, in that order)\n"
		"  --control-socket PATH    control API (gRPC, h2c) socket (default %s;\n"
		"                           'none': no socket)\n"
		"  --control-listen ADDR:PORT  control API on TCP, TLS 1.3 with client\n"
		"                           certificates of the fleet CA (--ca/--cert/--key)\n"
		"  --control-port-file FILE write the control TCP port actually bound to FILE\n"
		"  --metrics-listen ADDR:PORT  Prometheus metrics over HTTP (GET /metrics); a\n"
		"                           bare port is on 127.0.0.1 (default: off)\n"
		"  --metrics-port-file FILE write the metrics TCP port actually bound to FILE\n"
		"  --control-operator NAME  controller identity (SAN) that may start and\n"
		"                           abort migrations; repeatable\n"
		"  --control-reader NAME    controller identity that may list and watch;\n"
		"                           repeatable\n"
		"  --control-operator-uid UID, --control-operator-gid GID\n"
		"  --control-reader-uid UID, --control-reader-gid GID\n"
		"                           local callers on the control socket, by\n"
		"                           SO_PEERCRED (root and the daemon's uid are\n"
		"                           operators); repeatable\n"
		"  --kvm-op-timeout MS      VMM answer deadline (default 10000)\n"
		"  --sync-source SOURCE     this host's clock error: adjtimex (default),\n"
		"                           chrony, chrony@ADDR:PORT, linuxptp,\n"
		"                           linuxptp@PATH or fixed:NS\n"
		"  --peer-timeout MS        peer answer deadline (default 30000)\n"
		"  --max-vms N, --max-vmm-connections N, --max-migrations N, --max-watchers N\n"
		"                           limits, 1..their default (vcounterd(8), LIMITS)\n"
		"  --log-level LEVEL        error, warning, info (default), debug\n"
		"  --log-target TARGET      journal, stderr, or auto (default): the journal\n"
		"                           when stderr is connected to it\n"
		"  --version                print the version\n"
		"  --help                   this text\n",
		CONF_DEFAULT_PATH, VCD_DEFAULT_VMM_SOCKET, COUNTER_MATH_DEFAULT_TSC_TOLERANCE_PPM,
		VCD_DEFAULT_CONTROL_SOCKET);
}

/* --check-config, once the configuration (TLS files included) checked out: print it. */
static int check_config(struct conf *conf)
{
	conf_print(conf, stdout);
	conf_free(conf);
	return EXIT_SUCCESS;
}

/* service.c's SIGHUP, between RELOADING=1 and READY=1. */
static int reload_cb(void *userdata)
{
	return vcd_reload(userdata);
}

static int vmm_socket_open(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
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

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct event_base *base = arg;

	log_info_id(LOG_MESSAGE_DAEMON_STOPPING, "signal %d: stopping", (int)sig);
	event_base_loopbreak(base);
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

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "%d\n", port);
	if (fclose(f) != 0)
		return -errno;
	return rename(tmp, path) < 0 ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct vcd vcd = { 0 };
	struct event *sigint = NULL, *sigterm = NULL;
	const char *port_file, *control_port_file, *metrics_port_file;
	struct conf_cmdline cmd;
	struct conf *conf = NULL;
	char conf_err[CONF_ERROR_MAX];
	int vmm_fd, r, ret = EXIT_FAILURE;
	struct service *svc = NULL;
	struct service_sockets socks;
	_cleanup_close_ int control_fd = -1;
	char err[512];

	/* The file, then the flags over it; checked whole (conf.h). */
	r = conf_parse_cmdline(argc, argv, &cmd, conf_err, sizeof(conf_err));
	if (r < 0) {
		fprintf(stderr, "vcounterd: %s\n", conf_err);
		return EXIT_FAILURE;
	}
	if (cmd.help) {
		usage(stdout);
		return EXIT_SUCCESS;
	}
	if (cmd.version) {
		printf("vcounterd %s\n", VCOUNTER_VERSION);
		return EXIT_SUCCESS;
	}
	r = conf_load(cmd.config_path, argc, argv, &conf_system_ops, &conf, conf_err,
		      sizeof(conf_err));
	if (r < 0) {
		fprintf(stderr, "vcounterd: %s\n", conf_err);
		return EXIT_FAILURE;
	}
	/* The TLS files too, so that a bad one is named by its key and line, as on reload. */
	r = vcd_check_tls(conf, conf_err, sizeof(conf_err));
	if (r < 0) {
		fprintf(stderr, "vcounterd: %s\n", conf_err);
		conf_free(conf);
		return EXIT_FAILURE;
	}
	if (cmd.check_config)
		return check_config(conf);
	vcd.conf = conf;
	conf_apply(conf, NULL, &vcd.config);
	port_file = conf->port_file;
	control_port_file = conf->control_port_file;
	metrics_port_file = conf->metrics_port_file;
	log_set_target(conf->log_target);
	log_setup(conf->log_level);
	if (failpoints_init() < 0) {
		conf_free(conf);
		return EXIT_FAILURE;
	}
	signal(SIGPIPE, SIG_IGN);

	vcd.started_ns = clock_ns(CLOCK_MONOTONIC);
	vcd.base = event_base_new();
	if (!vcd.base) {
		log_error("cannot create the event loop");
		conf_free(vcd.conf);
		return EXIT_FAILURE;
	}
	/* Before any socket exists: whoever sees one may signal us at once (a
	 * test harness, systemd), and the default actions would kill the
	 * daemon without its clean-up. A reload before start-up finished has
	 * nothing to do: the configuration was just read. */
	signal(SIGHUP, SIG_IGN);
	sigint = evsignal_new(vcd.base, SIGINT, signal_cb, vcd.base);
	sigterm = evsignal_new(vcd.base, SIGTERM, signal_cb, vcd.base);
	if (!sigint || !sigterm || evsignal_add(sigint, NULL) < 0 ||
	    evsignal_add(sigterm, NULL) < 0)
		goto out;
	/* conf_validate checked what goes together (--listen needs TLS, ...). */
	if (tls_setup(&vcd) < 0)
		goto out;
	/* Sockets passed by systemd (vcounterd.socket) replace opening our own. */
	r = service_listen_fds(&socks, err, sizeof(err));
	if (r < 0) {
		log_error_errno(r, "socket activation: %s", err);
		goto out;
	}
	/* VMs kept in systemd's fd store by the previous run (fdstore.h). */
	/* The VM registry's observers, in the order they hear a VM leave: its
	 * migrations end before watchers hear it unregistered; the fd store
	 * (fdstore_init) drops it once it is out of the registry. */
	if (fdstore_init(&vcd) < 0 || vm_registry_observe(&vcd.vms, migration_on_vm, &vcd) < 0 ||
	    vm_registry_observe(&vcd.vms, control_on_vm, &vcd) < 0)
		goto out;
	fdstore_restore(&vcd, socks.stored, socks.n_stored);
	free(socks.stored);
	control_fd = socks.control_fd;
	if (control_fd >= 0)
		vcd.config.control_socket = socks.control_path;
	if (socks.vmm_fd >= 0) {
		vmm_fd = socks.vmm_fd;
		vcd.config.vmm_socket = socks.vmm_path;
	} else {
		vmm_fd = vmm_socket_open(vcd.config.vmm_socket);
	}
	if (vmm_fd < 0) {
		log_error_errno(vmm_fd, "cannot listen on %s", vcd.config.vmm_socket);
		goto out;
	}
	/* Once, ~20 ms: the target's anchors at prepare and the control API's
	 * host view measure their brackets with it. */
	if (hostclock_tsc_khz(&vcd.host_tsc_khz) < 0)
		vcd.host_tsc_khz = 0;
	r = sync_source_open(vcd.base, vcd.config.sync_source, &vcd.sync, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		goto out;
	}
	r = vmm_server_start(&vcd, vmm_fd, &migration_vmm_handlers);
	if (r < 0) {
		close(vmm_fd);
		log_error_errno(r, "cannot start the VMM socket");
		goto out;
	}
	r = migrations_start(&vcd);
	if (r < 0) {
		log_error_errno(r, "cannot start the peer link on %s",
				vcd.config.listen_addr ? vcd.config.listen_addr : "-");
		goto out;
	}
	/* Each change of a migration, in this order: watchers, the metrics,
	 * the VMM holding the VM. */
	if (migrations_observe(&vcd, control_on_migration, &vcd) < 0 ||
	    migrations_observe(&vcd, metrics_on_migration, &vcd_metrics) < 0 ||
	    migrations_observe(&vcd, vmm_on_migration, &vcd) < 0)
		goto out;
	/* Before the control API: a controller's first look sees them. */
	if (migrations_recover(&vcd) < 0)
		goto out; /* migrations_recover said why */
	if (port_file) {
		r = write_port_file(port_file, migrations_listen_port(&vcd));
		if (r < 0) {
			log_error_errno(r, "cannot write %s", port_file);
			goto out;
		}
	}
	/* Before the control socket: a test harness that waits for that socket
	 * then finds the metrics port file written too. */
	if (metrics_http_start(&vcd) < 0)
		goto out; /* metrics_http_start said why */
	if (metrics_port_file) {
		r = write_port_file(metrics_port_file, metrics_http_port(&vcd));
		if (r < 0) {
			log_error_errno(r, "cannot write %s", metrics_port_file);
			goto out;
		}
	}
	r = control_start(&vcd, control_fd);
	if (r < 0)
		goto out; /* control_start said why */
	control_fd = -1;  /* the control API's now (grpc.h) */
	if (control_port_file) {
		r = write_port_file(control_port_file, control_tcp_port(&vcd));
		if (r < 0) {
			log_error_errno(r, "cannot write %s", control_port_file);
			goto out;
		}
	}
	r = service_new(&vcd, reload_cb, &vcd, &svc);
	if (r < 0) {
		log_error_errno(r, "cannot set up the systemd notifications");
		goto out;
	}

	log_info_id(LOG_MESSAGE_DAEMON_STARTED, "vcounterd %s on %s: vmm socket %s, peer link %s",
		    VCOUNTER_VERSION, vcd.config.host_name, vcd.config.vmm_socket,
		    vcd.config.listen_addr ? vcd.config.listen_addr : "off");
	service_ready(svc);
	event_base_dispatch(vcd.base);
	service_stopping(svc);
	ret = EXIT_SUCCESS;
out:
	service_free(svc);
	if (sigint)
		event_free(sigint);
	if (sigterm)
		event_free(sigterm);
	metrics_http_stop(&vcd);
	control_stop(&vcd);
	migrations_stop(&vcd);
	/* The VMs stay in the fd store: a restart recovers them. */
	vcd.stopping = true;
	vmm_server_stop(&vcd);
	/* Callbacks libevent deferred (a peer link's bufferevent that was
	 * still writing holds a reference until its callback runs): let them
	 * run now, with every component gone, so that their objects are freed. */
	event_base_loop(vcd.base, EVLOOP_NONBLOCK);
	sync_source_free(vcd.sync);
	if (vcd.tls_server)
		SSL_CTX_free(vcd.tls_server);
	if (vcd.tls_client)
		SSL_CTX_free(vcd.tls_client);
	event_base_free(vcd.base);
	conf_free(vcd.conf);
	return ret;
}
