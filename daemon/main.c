/* main.c - vcounterd: command line, sockets, TLS contexts, event loop. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "macro.h"
#include "metrics_http.h"
#include "service.h"
#include "vcd.h"

#include "config.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vcounterd [OPTIONS]\n"
		"Hand KVM guests' system counters between hosts by offset.\n\n"
		"  --vmm-socket PATH        VMM socket (default %s)\n"
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
		"  --peer-timeout MS        peer answer deadline (default 30000)\n"
		"  --log-level LEVEL        error, warning, info (default), debug\n"
		"  --version                print the version\n"
		"  --help                   this text\n",
		VCD_DEFAULT_VMM_SOCKET, COUNTER_MATH_DEFAULT_TSC_TOLERANCE_PPM,
		VCD_DEFAULT_CONTROL_SOCKET);
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* "kvm-syscounter,kvm-x86": each known, built for this architecture, once. */
static int parse_backends(const char *list, struct vcd_config *cfg)
{
	_cleanup_free_ char *copy = strdup(list);
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	cfg->n_backends = 0;
	for (char *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
		enum backend_kind kind = backend_kind_from_string(name);

		if (kind != BACKEND_KVM_SYSCOUNTER && kind != BACKEND_KVM_X86) {
			fprintf(stderr,
				"vcounterd: --backends: '%s' is not a backend of this build "
				"(kvm-syscounter, kvm-x86)\n",
				name);
			return -EINVAL;
		}
		for (size_t i = 0; i < cfg->n_backends; i++) {
			if (cfg->backends[i] == kind) {
				fprintf(stderr, "vcounterd: --backends: '%s' twice\n", name);
				return -EINVAL;
			}
		}
		cfg->backends[cfg->n_backends++] = kind;
	}
	if (cfg->n_backends == 0) {
		fprintf(stderr, "vcounterd: --backends needs at least one backend\n");
		return -EINVAL;
	}
	return 0;
}

/* --control-*-uid/gid: a number, or a user/group name. */
static int parse_id(const char *s, bool group, uint32_t *ret)
{
	uint64_t v;

	if (parse_u64(s, &v) == 0 && v < UINT32_MAX) {
		*ret = (uint32_t)v;
		return 0;
	}
	if (group) {
		struct group *g = getgrnam(s);

		if (g) {
			*ret = g->gr_gid;
			return 0;
		}
	} else {
		struct passwd *p = getpwnam(s);

		if (p) {
			*ret = p->pw_uid;
			return 0;
		}
	}
	return -EINVAL;
}

static int add_name(const char **list, size_t *n, const char *name, const char *opt)
{
	if (!*name || strlen(name) > GRPC_IDENTITY_MAX) {
		fprintf(stderr, "vcounterd: %s needs a name of 1..%d bytes\n", opt,
			GRPC_IDENTITY_MAX);
		return -EINVAL;
	}
	if (*n >= GRPC_MAX_IDENTITIES) {
		fprintf(stderr, "vcounterd: too many %s (limit %d)\n", opt, GRPC_MAX_IDENTITIES);
		return -E2BIG;
	}
	list[(*n)++] = name;
	return 0;
}

static int parse_args(int argc, char **argv, struct vcd_config *cfg, const char **port_file,
		      const char **control_port_file, const char **metrics_port_file,
		      int *log_level)
{
	enum {
		ARG_VMM_SOCKET = 0x100,
		ARG_LISTEN,
		ARG_PORT_FILE,
		ARG_HOST_NAME,
		ARG_CA,
		ARG_CERT,
		ARG_KEY,
		ARG_ALLOW_PEER,
		ARG_ALLOW_UID,
		ARG_ALLOW_GID,
		ARG_BOUND_LIMIT,
		ARG_BOUND_POLICY,
		ARG_MAX_ELAPSED,
		ARG_TSC_TOLERANCE,
		ARG_BACKENDS,
		ARG_KVM_OP_TIMEOUT,
		ARG_PEER_TIMEOUT,
		ARG_CONTROL_SOCKET,
		ARG_CONTROL_LISTEN,
		ARG_CONTROL_PORT_FILE,
		ARG_METRICS_LISTEN,
		ARG_METRICS_PORT_FILE,
		ARG_CONTROL_OPERATOR,
		ARG_CONTROL_READER,
		ARG_CONTROL_OPERATOR_UID,
		ARG_CONTROL_OPERATOR_GID,
		ARG_CONTROL_READER_UID,
		ARG_CONTROL_READER_GID,
		ARG_LOG_LEVEL,
		ARG_VERSION,
	};
	static const struct option options[] = {
		{ "vmm-socket", required_argument, NULL, ARG_VMM_SOCKET },
		{ "listen", required_argument, NULL, ARG_LISTEN },
		{ "port-file", required_argument, NULL, ARG_PORT_FILE },
		{ "host-name", required_argument, NULL, ARG_HOST_NAME },
		{ "ca", required_argument, NULL, ARG_CA },
		{ "cert", required_argument, NULL, ARG_CERT },
		{ "key", required_argument, NULL, ARG_KEY },
		{ "allow-peer", required_argument, NULL, ARG_ALLOW_PEER },
		{ "allow-uid", required_argument, NULL, ARG_ALLOW_UID },
		{ "allow-gid", required_argument, NULL, ARG_ALLOW_GID },
		{ "error-bound-limit", required_argument, NULL, ARG_BOUND_LIMIT },
		{ "error-bound-policy", required_argument, NULL, ARG_BOUND_POLICY },
		{ "max-elapsed", required_argument, NULL, ARG_MAX_ELAPSED },
		{ "tsc-tolerance", required_argument, NULL, ARG_TSC_TOLERANCE },
		{ "backends", required_argument, NULL, ARG_BACKENDS },
		{ "kvm-op-timeout", required_argument, NULL, ARG_KVM_OP_TIMEOUT },
		{ "peer-timeout", required_argument, NULL, ARG_PEER_TIMEOUT },
		{ "control-socket", required_argument, NULL, ARG_CONTROL_SOCKET },
		{ "control-listen", required_argument, NULL, ARG_CONTROL_LISTEN },
		{ "control-port-file", required_argument, NULL, ARG_CONTROL_PORT_FILE },
		{ "metrics-listen", required_argument, NULL, ARG_METRICS_LISTEN },
		{ "metrics-port-file", required_argument, NULL, ARG_METRICS_PORT_FILE },
		{ "control-operator", required_argument, NULL, ARG_CONTROL_OPERATOR },
		{ "control-reader", required_argument, NULL, ARG_CONTROL_READER },
		{ "control-operator-uid", required_argument, NULL, ARG_CONTROL_OPERATOR_UID },
		{ "control-operator-gid", required_argument, NULL, ARG_CONTROL_OPERATOR_GID },
		{ "control-reader-uid", required_argument, NULL, ARG_CONTROL_READER_UID },
		{ "control-reader-gid", required_argument, NULL, ARG_CONTROL_READER_GID },
		{ "log-level", required_argument, NULL, ARG_LOG_LEVEL },
		{ "version", no_argument, NULL, ARG_VERSION },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_VMM_SOCKET:
			cfg->vmm_socket = optarg;
			break;
		case ARG_LISTEN:
			cfg->listen_addr = optarg;
			break;
		case ARG_PORT_FILE:
			*port_file = optarg;
			break;
		case ARG_HOST_NAME:
			cfg->host_name = optarg;
			break;
		case ARG_CA:
			cfg->tls.ca_file = optarg;
			break;
		case ARG_CERT:
			cfg->tls.cert_file = optarg;
			break;
		case ARG_KEY:
			cfg->tls.key_file = optarg;
			break;
		case ARG_ALLOW_PEER:
			if (cfg->tls.n_allowed_peers >= TLS_MAX_ALLOWED_PEERS) {
				fprintf(stderr, "vcounterd: too many --allow-peer (limit %d)\n",
					TLS_MAX_ALLOWED_PEERS);
				return -E2BIG;
			}
			cfg->allowed_peers[cfg->tls.n_allowed_peers++] = optarg;
			break;
		case ARG_ALLOW_UID:
		case ARG_ALLOW_GID:
			if (parse_u64(optarg, &v) < 0 || v > UINT32_MAX - 1) {
				fprintf(stderr, "vcounterd: invalid %s '%s'\n",
					c == ARG_ALLOW_UID ? "--allow-uid" : "--allow-gid", optarg);
				return -EINVAL;
			}
			if (c == ARG_ALLOW_UID) {
				if (cfg->n_allowed_uids >= VCD_MAX_ALLOWED_IDS)
					return -E2BIG;
				cfg->allowed_uids[cfg->n_allowed_uids++] = (uid_t)v;
			} else {
				if (cfg->n_allowed_gids >= VCD_MAX_ALLOWED_IDS)
					return -E2BIG;
				cfg->allowed_gids[cfg->n_allowed_gids++] = (gid_t)v;
			}
			break;
		case ARG_BOUND_LIMIT:
		case ARG_MAX_ELAPSED:
		case ARG_KVM_OP_TIMEOUT:
		case ARG_PEER_TIMEOUT:
			if (parse_u64(optarg, &v) < 0 ||
			    ((c == ARG_KVM_OP_TIMEOUT || c == ARG_PEER_TIMEOUT) &&
			     (v == 0 || v > 3600000))) {
				fprintf(stderr, "vcounterd: invalid value '%s' for %s\n", optarg,
					argv[optind - 1]);
				return -EINVAL;
			}
			if (c == ARG_BOUND_LIMIT)
				cfg->error_bound_limit_ns = v;
			else if (c == ARG_MAX_ELAPSED)
				cfg->max_abs_elapsed_ns = v;
			else if (c == ARG_KVM_OP_TIMEOUT)
				cfg->kvm_op_timeout_ms = (unsigned)v;
			else
				cfg->peer_timeout_ms = (unsigned)v;
			break;
		case ARG_TSC_TOLERANCE:
			/* 1000000 ppm would call any two rates equal. */
			if (parse_u64(optarg, &v) < 0 || v > 10000) {
				fprintf(stderr,
					"vcounterd: --tsc-tolerance must be 0..10000 ppm\n");
				return -EINVAL;
			}
			cfg->tsc_tolerance_ppm = (uint32_t)v;
			break;
		case ARG_BACKENDS:
			if (parse_backends(optarg, cfg) < 0)
				return -EINVAL;
			break;
		case ARG_BOUND_POLICY:
			if (strcmp(optarg, "warn") == 0)
				cfg->error_bound_refuse = false;
			else if (strcmp(optarg, "refuse") == 0)
				cfg->error_bound_refuse = true;
			else {
				fprintf(stderr,
					"vcounterd: --error-bound-policy must be warn or refuse\n");
				return -EINVAL;
			}
			break;
		case ARG_CONTROL_SOCKET:
			cfg->control_socket = strcmp(optarg, "none") == 0 ? NULL : optarg;
			break;
		case ARG_CONTROL_LISTEN:
			cfg->control_listen = optarg;
			break;
		case ARG_CONTROL_PORT_FILE:
			*control_port_file = optarg;
			break;
		case ARG_METRICS_LISTEN:
			cfg->metrics_listen = optarg;
			break;
		case ARG_METRICS_PORT_FILE:
			*metrics_port_file = optarg;
			break;
		case ARG_CONTROL_OPERATOR:
			if (add_name(cfg->control_operators, &cfg->n_control_operators, optarg,
				     "--control-operator") < 0)
				return -EINVAL;
			break;
		case ARG_CONTROL_READER:
			if (add_name(cfg->control_readers, &cfg->n_control_readers, optarg,
				     "--control-reader") < 0)
				return -EINVAL;
			break;
		case ARG_CONTROL_OPERATOR_UID:
		case ARG_CONTROL_OPERATOR_GID:
		case ARG_CONTROL_READER_UID:
		case ARG_CONTROL_READER_GID: {
			bool group = c == ARG_CONTROL_OPERATOR_GID || c == ARG_CONTROL_READER_GID;
			bool op = c == ARG_CONTROL_OPERATOR_UID || c == ARG_CONTROL_OPERATOR_GID;
			size_t *n = group ? (op ? &cfg->n_control_operator_gids
						: &cfg->n_control_reader_gids)
					  : (op ? &cfg->n_control_operator_uids
						: &cfg->n_control_reader_uids);
			uint32_t id;

			if (parse_id(optarg, group, &id) < 0) {
				fprintf(stderr, "vcounterd: %s: no such %s '%s'\n",
					argv[optind - 1], group ? "group" : "user", optarg);
				return -EINVAL;
			}
			if (*n >= VCD_MAX_ALLOWED_IDS) {
				fprintf(stderr, "vcounterd: too many %s (limit %d)\n",
					argv[optind - 1], VCD_MAX_ALLOWED_IDS);
				return -E2BIG;
			}
			if (group)
				(op ? cfg->control_operator_gids : cfg->control_reader_gids)[*n] =
					id;
			else
				(op ? cfg->control_operator_uids : cfg->control_reader_uids)[*n] =
					id;
			(*n)++;
			break;
		}
		case ARG_LOG_LEVEL:
			*log_level = log_parse_level(optarg);
			if (*log_level < 0) {
				fprintf(stderr, "vcounterd: unknown log level '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case ARG_VERSION:
			printf("vcounterd %s\n", VCOUNTER_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vcounterd: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	cfg->tls.allowed_peers = cfg->allowed_peers;
	return 1;
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

	log_info("signal %d: stopping", (int)sig);
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
	struct vcd vcd = {
		.config = {
			.vmm_socket = VCD_DEFAULT_VMM_SOCKET,
			.control_socket = VCD_DEFAULT_CONTROL_SOCKET,
			.error_bound_limit_ns = 1000000,
			.max_abs_elapsed_ns = UINT64_C(3600) * NSEC_PER_SEC,
			.tsc_tolerance_ppm = COUNTER_MATH_DEFAULT_TSC_TOLERANCE_PPM,
			.kvm_op_timeout_ms = 10000,
			.peer_timeout_ms = 30000,
		},
	};
	struct event *sigint = NULL, *sigterm = NULL;
	const char *port_file = NULL, *control_port_file = NULL, *metrics_port_file = NULL;
	int log_level = LOG_INFO;
	int vmm_fd, r, ret = EXIT_FAILURE;
	struct service *svc = NULL;
	struct service_sockets socks;
	_cleanup_close_ int control_fd = -1;
	char err[512];

	r = parse_args(argc, argv, &vcd.config, &port_file, &control_port_file, &metrics_port_file,
		       &log_level);
	if (r <= 0)
		return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	log_setup(log_level);
	if (vcd.config.n_allowed_uids == 0) {
		vcd.config.allowed_uids[vcd.config.n_allowed_uids++] = 0;
		if (getuid() != 0)
			vcd.config.allowed_uids[vcd.config.n_allowed_uids++] = getuid();
	}
	if (!vcd.config.host_name) {
		static char host[256];

		gethostname(host, sizeof(host) - 1);
		vcd.config.host_name = host;
	}
	signal(SIGPIPE, SIG_IGN);

	vcd.started_ns = vcd_now_ns();
	vcd.base = event_base_new();
	if (!vcd.base) {
		log_error("cannot create the event loop");
		return EXIT_FAILURE;
	}
	if (tls_setup(&vcd) < 0)
		goto out;
	if (vcd.config.listen_addr && !vcd.tls_server) {
		log_error(
			"--listen needs --ca, --cert and --key: the peer link is mutual TLS only");
		goto out;
	}
	if (vcd.config.control_listen &&
	    (!vcd.tls_server ||
	     vcd.config.n_control_operators + vcd.config.n_control_readers == 0)) {
		log_error("--control-listen needs --ca, --cert, --key and at least one "
			  "--control-operator or --control-reader: TCP callers are known by "
			  "certificate only");
		goto out;
	}
	if (control_port_file && !vcd.config.control_listen) {
		log_error("--control-port-file needs --control-listen");
		goto out;
	}
	if (metrics_port_file && !vcd.config.metrics_listen) {
		log_error("--metrics-port-file needs --metrics-listen");
		goto out;
	}
	/* Sockets passed by systemd (vcounterd.socket) replace opening our own. */
	r = service_listen_fds(&socks, err, sizeof(err));
	if (r < 0) {
		log_error_errno(r, "socket activation: %s", err);
		goto out;
	}
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
	r = vmm_server_start(&vcd, vmm_fd);
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
	sigint = evsignal_new(vcd.base, SIGINT, signal_cb, vcd.base);
	sigterm = evsignal_new(vcd.base, SIGTERM, signal_cb, vcd.base);
	if (!sigint || !sigterm)
		goto out;
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	r = service_new(&vcd, NULL, NULL, &svc);
	if (r < 0) {
		log_error_errno(r, "cannot set up the systemd notifications");
		goto out;
	}

	log_info("vcounterd %s on %s: vmm socket %s, peer link %s", VCOUNTER_VERSION,
		 vcd.config.host_name, vcd.config.vmm_socket,
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
	vmm_server_stop(&vcd);
	if (vcd.tls_server)
		SSL_CTX_free(vcd.tls_server);
	if (vcd.tls_client)
		SSL_CTX_free(vcd.tls_client);
	event_base_free(vcd.base);
	return ret;
}
