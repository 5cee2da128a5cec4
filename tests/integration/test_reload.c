/* test_reload.c - a real vcounterd run from a configuration file alone (--config), its file
 * rewritten and SIGHUP sent: new peer identities, controller roles, backends, policy, log level
 * and certificate take effect for the next connection; established links, the registered VM and
 * the daemon itself live on; a bad file (unknown key, bad value, unreadable certificate) is
 * refused with its file:line message and the previous configuration keeps working. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "daemon_harness.h"
#include "frame.h"
#include "macro.h"
#include "tls_client.h"
#include "vcounter/control.h"
#include "vcounter/vcounter.h"
#include "wire.h"

#define DAEMON_NAME	"host-b.test"
#define URI_NAME	"spiffe://fleet.test/host-u"
#define VM_ID		"vm-reload"
#define RECV_TIMEOUT_MS 5000

/* Seconds to wait for the daemon (much longer under VC_DAEMON_WRAPPER=valgrind). */
static int wait_s = 10;

static char certs_dir[256];
static char dir[256];
static char conf_path[320], log_path[320], vmm_socket[320], control_socket[320];
static char port_path[320], control_port_path[320];
static pid_t daemon_pid;
static int peer_port, control_port;

/* The registered VM (when /dev/kvm is there). */
static struct {
	bool ready;
	int kvm_fd, vm_fd, vcpu_fd;
	struct vcounter *vc;
} vm = { .kvm_fd = -1, .vm_fd = -1, .vcpu_fd = -1 };

/* ---- the daemon's log ---- */

static int log_count(const char *needle)
{
	return harness_file_count(log_path, needle);
}

static void dump_log(void)
{
	harness_dump_file(log_path);
}

static bool daemon_alive(void)
{
	int status;

	return daemon_pid > 0 && waitpid(daemon_pid, &status, WNOHANG) == 0;
}

static void assert_log_has(const char *needle)
{
	if (log_count(needle) == 0) {
		dump_log();
		fail_msg("not in the daemon's log: %s", needle);
	}
}

/* ---- the configuration file ---- */

struct settings {
	const char *allow_peer;
	const char *reader; /* NULL: none */
	const char *cert;   /* host-b, or another of gen-certs.sh */
	const char *backends;
	const char *policy;
	const char *log_level;
	const char *peer_listen;
	const char *extra; /* more lines, at the end */
};

static const struct settings initial = {
	.allow_peer = "host-a.test",
	.reader = NULL,
	.cert = "host-b",
	.backends = "kvm-syscounter kvm-x86",
	.policy = "warn",
	.log_level = "info",
	.peer_listen = "127.0.0.1:0",
};

/* Replace the file in one rename: the daemon never reads half of it. */
static void write_conf(const struct settings *s)
{
	char tmp[340], ca[320], cert[320], key[320];
	FILE *f;

	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, s->cert, "pem");
	harness_cert_path(key, sizeof(key), certs_dir, s->cert, "key");
	snprintf(tmp, sizeof(tmp), "%s.tmp", conf_path);
	f = fopen(tmp, "we");
	assert_non_null(f);
	fprintf(f,
		"# test_reload.c\n"
		"[daemon]\n"
		"host-name = " DAEMON_NAME "\n"
		"log-level = %s\n"
		"backends = %s\n"
		"\n"
		"[vmm]\n"
		"socket = %s\n"
		"\n"
		"[peer]\n"
		"listen = %s\n"
		"port-file = %s\n"
		"ca = %s\n"
		"cert = %s\n"
		"key = %s\n"
		"allow-peer = %s\n"
		"\n"
		"[control]\n"
		"socket = %s\n"
		"listen = 127.0.0.1:0\n"
		"port-file = %s\n"
		"operator = ctl-operator.test\n"
		"%s%s%s"
		"\n"
		"[policy]\n"
		"error-bound-policy = %s\n"
		"%s",
		s->log_level, s->backends, vmm_socket, s->peer_listen, port_path, ca, cert, key,
		s->allow_peer, control_socket, control_port_path, s->reader ? "reader = " : "",
		s->reader ? s->reader : "", s->reader ? "\n" : "", s->policy,
		s->extra ? s->extra : "");
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, conf_path), 0);
}

/* SIGHUP and wait for the outcome: true when applied, false when refused. */
static bool reload(void)
{
	int applied = log_count("reload: configuration "), refused = log_count("keeping the "
									       "previous "
									       "configuration");
	int64_t deadline = harness_now_ms() + wait_s * 1000;

	assert_int_equal(kill(daemon_pid, SIGHUP), 0);
	while (harness_now_ms() < deadline) {
		if (log_count("reload: configuration ") > applied)
			return true;
		if (log_count("keeping the previous configuration") > refused)
			return false;
		if (!daemon_alive()) {
			dump_log();
			fail_msg("vcounterd died on SIGHUP");
		}
		harness_sleep_ms(10);
	}
	dump_log();
	fail_msg("no reload outcome in the log within %d s", wait_s);
	return false;
}

static void reload_ok(void)
{
	if (!reload()) {
		dump_log();
		fail_msg("the reload was refused");
	}
	assert_true(daemon_alive());
}

static void reload_refused(const char *message)
{
	if (reload()) {
		dump_log();
		fail_msg("the reload was applied");
	}
	assert_true(daemon_alive());
	assert_log_has(message);
}

/* ---- a peer daemon, over TLS 1.3 (as test_peer_link.c) ---- */

/* Handshake as cert_name, expecting the daemon to be server_name. */
static bool peer_open(struct tls_client *p, const char *cert_name, const char *server_name)
{
	return tls_client_open(p, &(struct tls_client_opts){
					  .certs_dir = certs_dir,
					  .cert_name = cert_name,
					  .server_name = server_name,
					  .port = peer_port,
					  .timeout_ms = RECV_TIMEOUT_MS,
				  });
}

/* Does the daemon take a link from cert_name (its Hello arrives)? A refusal shows as the end
 * of the link: TLS 1.3 lets the client finish its handshake before the server judged its
 * certificate. */
static bool peer_admitted(const char *cert_name, const char *server_name)
{
	Vcounter__V1__PeerMessage *msg = NULL;
	struct tls_client p;
	bool admitted = false;

	if (peer_open(&p, cert_name, server_name)) {
		msg = tls_client_next_peer(&p);
		admitted = msg && msg->body_case == VCOUNTER__V1__PEER_MESSAGE__BODY_HELLO;
		if (msg)
			assert_string_equal(msg->hello->host_name, DAEMON_NAME);
		wire_peer_free(msg);
	}
	tls_client_close(&p);
	return admitted;
}

/* An established link answers: a message of no body this version knows gets UNIMPLEMENTED. */
static void peer_ping(struct tls_client *p, uint64_t id)
{
	uint8_t buf[16];
	size_t n = FRAME_HEADER_BYTES, written = 0;
	Vcounter__V1__PeerMessage *msg;

	buf[n++] = 0x08; /* field 1 (id), varint */
	buf[n++] = (uint8_t)id;
	buf[n++] = 0x90; /* field 50, varint */
	buf[n++] = 0x03;
	buf[n++] = 0x01;
	assert_int_equal(frame_header_encode(n - FRAME_HEADER_BYTES, buf), 0);
	assert_int_equal(SSL_write_ex(p->ssl, buf, n, &written), 1);
	msg = tls_client_next_peer(p);
	assert_non_null(msg);
	assert_int_equal(msg->body_case, VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR);
	assert_int_equal(msg->id, id);
	assert_int_equal(msg->error->code, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED);
	wire_peer_free(msg);
}

/* ---- the control API ---- */

/* A controller on the TCP port, as cert_name: 0 when the status call worked. */
static int controller_status(const char *cert_name, const char *server_name)
{
	char address[64], ca[320], cert[320], key[320];
	struct vcounter_ctl_options o = {
		.address = address,
		.ca_file = ca,
		.cert_file = cert,
		.key_file = key,
		.server_name = server_name,
		.timeout_ms = RECV_TIMEOUT_MS,
	};
	struct vcounter_ctl_host host;
	struct vcounter_ctl *ctl = NULL;
	int r;

	snprintf(address, sizeof(address), "127.0.0.1:%d", control_port);
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, cert_name, "pem");
	harness_cert_path(key, sizeof(key), certs_dir, cert_name, "key");
	r = vcounter_ctl_connect(&o, &ctl);
	if (r == 0)
		r = vcounter_ctl_host_status(ctl, &host);
	vcounter_ctl_close(ctl);
	return r;
}

/* The control listener's handshake refuses cert_name (the daemon says so in its log). */
static bool controller_refused(const char *cert_name, const char *server_name)
{
	const char *why = "client certificate refused: no SAN on the control lists";
	int before = log_count(why);
	int r = controller_status(cert_name, server_name);
	int64_t deadline = harness_now_ms() + wait_s * 1000;

	if (r == 0)
		return false;
	/* The client sees the alert as a refused or reset connection. */
	assert_true(r == -ECONNREFUSED || r == -ECONNRESET);
	while (log_count(why) == before && harness_now_ms() < deadline)
		harness_sleep_ms(10);
	return log_count(why) > before;
}

/* The daemon as the local root controller sees it. */
static void local_status(struct vcounter_ctl_host *ret_host, size_t *ret_n_vms)
{
	struct vcounter_ctl_options o = { .socket_path = control_socket,
					  .timeout_ms = RECV_TIMEOUT_MS };
	struct vcounter_ctl *ctl = NULL;
	struct vcounter_ctl_vm *vms = NULL;

	assert_int_equal(vcounter_ctl_connect(&o, &ctl), 0);
	assert_int_equal(vcounter_ctl_host_status(ctl, ret_host), 0);
	assert_int_equal(vcounter_ctl_list_vms(ctl, &vms, ret_n_vms), 0);
	for (size_t i = 0; i < *ret_n_vms; i++)
		assert_string_equal(vms[i].vm_id, VM_ID);
	free(vms);
	vcounter_ctl_close(ctl);
}

static bool backend_allowed(const struct vcounter_ctl_host *host, const char *name)
{
	for (size_t i = 0; i < host->n_backends; i++)
		if (strcmp(host->backends[i].name, name) == 0)
			return host->backends[i].allowed;
	fail_msg("backend %s not in the host status", name);
	return false;
}

/* The VM is still there, as registered (when there is one). */
static void assert_vm_listed(void)
{
	struct vcounter_ctl_host host;
	size_t n_vms;

	local_status(&host, &n_vms);
	assert_int_equal(n_vms, vm.ready ? 1 : 0);
	assert_int_equal(host.vm_count, vm.ready ? 1 : 0);
}

/* ---- the daemon ---- */

static int daemon_start(void)
{
	/* The file alone: nothing on the command line would override it. */
	const char *args[] = { "--config", conf_path, NULL };
	int64_t deadline;

	if (harness_wrapped())
		wait_s = 120;
	/* stderr lines, not the journal, whatever the test runs under. */
	daemon_pid = harness_spawn(log_path, "", args);
	if (daemon_pid < 0)
		return daemon_pid;
	/* Ready: the ports are written and SIGHUP has its handler (logged after it is set). */
	deadline = harness_now_ms() + wait_s * 1000;
	while (harness_now_ms() < deadline && daemon_alive()) {
		peer_port = harness_read_port(port_path);
		control_port = harness_read_port(control_port_path);
		if (peer_port > 0 && control_port > 0 && log_count(": vmm socket ") > 0)
			return 0;
		harness_sleep_ms(10);
	}
	dump_log();
	return -ETIMEDOUT;
}

static int daemon_stop(void)
{
	int status = -1;

	if (daemon_pid <= 0)
		return -1;
	kill(daemon_pid, SIGTERM);
	for (int i = 0; i < wait_s * 100; i++) {
		if (waitpid(daemon_pid, &status, WNOHANG) == daemon_pid)
			break;
		harness_sleep_ms(10);
	}
	if (waitpid(daemon_pid, &status, WNOHANG) == 0) {
		kill(daemon_pid, SIGKILL);
		waitpid(daemon_pid, &status, 0);
	}
	daemon_pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Register a 1-vCPU target VM, as a VMM does; without /dev/kvm, say so and go on. */
static void vm_register(void)
{
	struct vcounter_vm_info info;

	vm.kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm.kvm_fd < 0) {
		fprintf(stderr,
			"SKIP (part): /dev/kvm unavailable (%s): no registered VM to keep\n",
			strerror(errno));
		return;
	}
	vm.vm_fd = ioctl(vm.kvm_fd, KVM_CREATE_VM, 0);
	assert_true(vm.vm_fd >= 0);
	vm.vcpu_fd = ioctl(vm.vm_fd, KVM_CREATE_VCPU, 0);
	assert_true(vm.vcpu_fd >= 0);
	assert_int_equal(vcounter_connect(vmm_socket, &vm.vc), 0);
	assert_int_equal(vcounter_register_vm(vm.vc, VM_ID, VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      &vm.vcpu_fd, 1, &info),
			 0);
	vm.ready = true;
}

static void vm_release(void)
{
	vcounter_close(vm.vc);
	if (vm.vcpu_fd >= 0)
		close(vm.vcpu_fd);
	if (vm.vm_fd >= 0)
		close(vm.vm_fd);
	if (vm.kvm_fd >= 0)
		close(vm.kvm_fd);
}

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	/* SSL_write to a daemon that closed on us must fail, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	if (harness_certs(certs_dir, sizeof(certs_dir)) < 0) {
		fprintf(stderr, "cannot make test certificates (VC_TEST_CERTS unset?)\n");
		return -1;
	}
	snprintf(dir, sizeof(dir), "%s/vcounterd-reload.XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	snprintf(conf_path, sizeof(conf_path), "%s/vcounterd.conf", dir);
	snprintf(log_path, sizeof(log_path), "%s/vcounterd.log", dir);
	snprintf(vmm_socket, sizeof(vmm_socket), "%s/vmm.sock", dir);
	snprintf(control_socket, sizeof(control_socket), "%s/control.sock", dir);
	snprintf(port_path, sizeof(port_path), "%s/port", dir);
	snprintf(control_port_path, sizeof(control_port_path), "%s/control-port", dir);
	write_conf(&initial);
	if (daemon_start() < 0) {
		fprintf(stderr, "vcounterd did not start from %s\n", conf_path);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	int status;

	vm_release();
	if (!daemon_alive() || harness_wrapped())
		dump_log();
	status = daemon_stop();
	if (!getenv("VC_KEEP_TEST_DIRS")) {
		harness_remove_tree(dir);
		if (!getenv("VC_TEST_CERT_DIR"))
			harness_remove_tree(certs_dir);
	}
	if (status != 0) {
		fprintf(stderr, "vcounterd did not exit cleanly: %d\n", status);
		return -1;
	}
	return 0;
}

/* ---- the tests, in order: each starts from where the last left the daemon ---- */

static void test_the_file_alone_configures_the_daemon(void **state)
{
	struct vcounter_ctl_host host;
	size_t n_vms;

	/* Everything came from the file: host name, sockets, ports, identities. */
	assert_true(peer_admitted("host-a", DAEMON_NAME));
	assert_false(peer_admitted("uri", DAEMON_NAME));
	assert_int_equal(controller_status("ctl-operator", DAEMON_NAME), 0);
	assert_true(controller_refused("ctl-reader", DAEMON_NAME));
	local_status(&host, &n_vms);
	assert_string_equal(host.host_name, DAEMON_NAME);
	assert_true(backend_allowed(&host, "kvm-syscounter"));
	assert_true(backend_allowed(&host, "kvm-x86"));
	/* log-level = info: no debug line. */
	assert_int_equal(log_count(" debug: "), 0);
	vm_register();
	assert_vm_listed();
}

static void test_check_config_prints_the_file_as_in_effect(void **state)
{
	char cmd[1024], out[320], line[1024];
	bool found = false;
	FILE *f;

	snprintf(out, sizeof(out), "%s/check.out", dir);
	snprintf(cmd, sizeof(cmd), "'%s/daemon/vcounterd' --config '%s' --check-config >'%s' 2>&1",
		 harness_build_root(), conf_path, out);
	assert_int_equal(system(cmd), 0);
	f = fopen(out, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		found |= strcmp(line, "allow-peer = host-a.test\t# line 16\n") == 0;
	fclose(f);
	assert_true(found);
}

static void test_reload_applies_allow_lists_roles_backends_policy_log_level(void **state)
{
	struct settings s = initial;
	struct vcounter_ctl_host host;
	struct tls_client linked;
	size_t n_vms;

	/* A link established before the reload lives through it. */
	assert_true(peer_open(&linked, "host-a", DAEMON_NAME));
	{
		Vcounter__V1__PeerMessage *hello = tls_client_next_peer(&linked);

		assert_non_null(hello);
		wire_peer_free(hello);
	}

	s.allow_peer = "host-a.test " URI_NAME;
	s.reader = "ctl-reader.test";
	s.backends = "kvm-x86";
	s.policy = "refuse";
	s.log_level = "debug";
	write_conf(&s);
	reload_ok();

	assert_true(peer_admitted("uri", DAEMON_NAME));
	assert_true(peer_admitted("host-a", DAEMON_NAME));
	assert_false(peer_admitted("evil", DAEMON_NAME));
	assert_int_equal(controller_status("ctl-reader", DAEMON_NAME), 0);
	assert_int_equal(controller_status("ctl-operator", DAEMON_NAME), 0);
	local_status(&host, &n_vms);
	assert_false(backend_allowed(&host, "kvm-syscounter"));
	assert_true(backend_allowed(&host, "kvm-x86"));
	assert_log_has("reload: [policy] error-bound-policy = 'refuse' (was 'warn')");
	assert_log_has("reload: [peer] allow-peer = 'host-a.test " URI_NAME
		       "' (was 'host-a.test')");
	assert_log_has("reload: [daemon] log-level = 'debug' (was 'info')");
	/* log-level = debug: the connections above were logged at debug level. */
	assert_true(log_count(" debug: ") > 0);

	peer_ping(&linked, 7);
	tls_client_close(&linked);
	assert_vm_listed();
}

/* A UDP port on loopback where nothing listens (bound, read, closed). */
static int unused_udp_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* The host's clock-error source is the operator's to change by a reload: the
 * host status follows it, a chronyd that does not answer is said so (and the
 * error is unbounded, not 0), and a source that is none is refused whole. */
static void test_reload_changes_the_sync_source(void **state)
{
	struct settings s = initial;
	struct vcounter_ctl_host host;
	char extra[128], chrony[64];
	int64_t deadline;
	size_t n_vms;

	s.extra = "[clock]\nsync-source = fixed:250000\n";
	write_conf(&s);
	reload_ok();
	assert_log_has("reload: [clock] sync-source = 'fixed:250000' (was 'adjtimex')");
	local_status(&host, &n_vms);
	assert_string_equal(host.sync_source, "fixed");
	assert_true(host.clock_synced);
	assert_true(host.maxerror_ns == 250000);
	assert_true(host.error_bound_ns >= 250000 && host.error_bound_ns < 250000 + 1000000);
	assert_string_equal(host.sync_problem, "");

	snprintf(chrony, sizeof(chrony), "127.0.0.1:%d", unused_udp_port());
	snprintf(extra, sizeof(extra), "[clock]\nsync-source = chrony@%s\n", chrony);
	s.extra = extra;
	write_conf(&s);
	reload_ok();
	/* The first poll went out at the reload; the port's ICMP answer names why. */
	deadline = harness_now_ms() + wait_s * 1000;
	do {
		local_status(&host, &n_vms);
	} while (!strstr(host.sync_problem, "Connection refused") && harness_now_ms() < deadline &&
		 (harness_sleep_ms(20), true));
	assert_string_equal(host.sync_source, "chrony");
	assert_false(host.clock_synced);
	assert_true(host.error_bound_ns == UINT64_MAX);
	assert_non_null(strstr(host.sync_problem, chrony));
	assert_non_null(strstr(host.sync_problem, "no answer yet: Connection refused"));
	assert_log_has("sync source chrony (");

	s.extra = "[clock]\nsync-source = ntpd\n";
	write_conf(&s);
	reload_refused("key 'sync-source' = 'ntpd': sync source \"ntpd\": expected adjtimex, "
		       "chrony, chrony@ADDR:PORT, linuxptp, linuxptp@PATH or fixed:NS; keeping the "
		       "previous configuration");
	local_status(&host, &n_vms);
	assert_string_equal(host.sync_source, "chrony");

	s.extra = NULL;
	write_conf(&s);
	reload_ok();
	local_status(&host, &n_vms);
	assert_string_equal(host.sync_source, "adjtimex");
	assert_string_equal(host.sync_problem, "");
	assert_vm_listed();
}

static void test_reload_swaps_the_certificate_for_new_connections(void **state)
{
	struct settings s = initial;

	s.allow_peer = "host-a.test " URI_NAME;
	s.reader = "ctl-reader.test";
	/* The daemon now presents host-a's certificate (SAN host-a.test). */
	s.cert = "host-a";
	write_conf(&s);
	reload_ok();

	assert_true(peer_admitted("uri", "host-a.test"));
	assert_false(peer_admitted("uri", DAEMON_NAME));
	assert_int_equal(controller_status("ctl-reader", "host-a.test"), 0);
	assert_int_equal(controller_status("ctl-reader", DAEMON_NAME), -EKEYREJECTED);
	/* Back to its own, and the reader and URI peer gone again. */
	write_conf(&initial);
	reload_ok();
	assert_true(peer_admitted("host-a", DAEMON_NAME));
	assert_false(peer_admitted("uri", DAEMON_NAME));
	assert_true(controller_refused("ctl-reader", DAEMON_NAME));
	assert_vm_listed();
}

static void test_bad_files_are_refused_and_the_old_configuration_stays(void **state)
{
	struct settings s = initial;
	char message[2048], missing[320];

	/* Each would change the allow-list, were it applied. */
	s.allow_peer = "host-a.test " URI_NAME;

	s.extra = "tsc-tolerance-ppm = 20\nerror-bound-limit = 5\n";
	write_conf(&s);
	snprintf(message, sizeof(message),
		 "reload: %s:27: key 'error-bound-limit' = '5': unknown key in [policy]; keeping "
		 "the previous configuration",
		 conf_path);
	reload_refused(message);
	assert_false(peer_admitted("uri", DAEMON_NAME));

	s.extra = "kvm-op-timeout-ms = 0\n";
	write_conf(&s);
	snprintf(message, sizeof(message),
		 "reload: %s:26: key 'kvm-op-timeout-ms' = '0': out of range (1..3600000); "
		 "keeping the previous configuration",
		 conf_path);
	reload_refused(message);
	assert_false(peer_admitted("uri", DAEMON_NAME));

	s.extra = NULL;
	s.cert = "no-such-cert";
	write_conf(&s);
	harness_cert_path(missing, sizeof(missing), certs_dir, "no-such-cert", "pem");
	snprintf(message, sizeof(message),
		 "reload: %s:14: key 'cert' = '%s': certificate file %s: No such file or "
		 "directory; keeping the previous configuration",
		 conf_path, missing, missing);
	reload_refused(message);

	/* A key that does not belong to the certificate. */
	s.cert = "host-b";
	s.extra = NULL;
	write_conf(&s);
	{
		/* host-b.pem with host-a.key: written by hand. */
		char text[4096];
		FILE *f = fopen(conf_path, "re");
		size_t len;
		char *k;

		assert_non_null(f);
		len = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[len] = '\0';
		k = strstr(text, "host-b.key");
		assert_non_null(k);
		memcpy(k, "host-a", 6);
		f = fopen(conf_path, "we");
		assert_non_null(f);
		fputs(text, f);
		assert_int_equal(fclose(f), 0);
	}
	snprintf(message, sizeof(message), "reload: %s:15: key 'key' = '", conf_path);
	reload_refused(message);
	{
		char key[320], why[700];

		harness_cert_path(key, sizeof(key), certs_dir, "host-a", "key");
		snprintf(why, sizeof(why), "'%s': key does not match certificate %s", key, key);
		assert_log_has(why);
	}

	/* A file that is gone. */
	{
		char away[340];

		snprintf(away, sizeof(away), "%s.away", conf_path);
		assert_int_equal(rename(conf_path, away), 0);
		snprintf(message, sizeof(message),
			 "reload: %s: cannot read: No such file or directory; keeping the previous "
			 "configuration",
			 conf_path);
		reload_refused(message);
		assert_int_equal(rename(away, conf_path), 0);
	}

	/* All the while the previous configuration served. */
	assert_true(peer_admitted("host-a", DAEMON_NAME));
	assert_false(peer_admitted("uri", DAEMON_NAME));
	assert_int_equal(controller_status("ctl-operator", DAEMON_NAME), 0);
	assert_vm_listed();

	/* And a good file is taken again. */
	s.extra = NULL;
	write_conf(&s);
	reload_ok();
	assert_true(peer_admitted("uri", DAEMON_NAME));
}

static void test_settings_that_need_a_restart_keep_their_values(void **state)
{
	struct settings s = initial;
	int port = peer_port;

	s.peer_listen = "127.0.0.1:1";
	s.allow_peer = "host-a.test " URI_NAME " host-evil.test";
	write_conf(&s);
	reload_ok();
	assert_log_has("reload: [peer] listen changed from '127.0.0.1:0' to '127.0.0.1:1': that "
		       "takes a restart; keeping '127.0.0.1:0'");
	/* Still where it was, and the rest of the file applied. */
	assert_int_equal(harness_read_port(port_path), port);
	assert_true(peer_admitted("evil", DAEMON_NAME));
	assert_vm_listed();
	assert_true(daemon_alive());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_the_file_alone_configures_the_daemon),
		cmocka_unit_test(test_check_config_prints_the_file_as_in_effect),
		cmocka_unit_test(test_reload_applies_allow_lists_roles_backends_policy_log_level),
		cmocka_unit_test(test_reload_changes_the_sync_source),
		cmocka_unit_test(test_reload_swaps_the_certificate_for_new_connections),
		cmocka_unit_test(test_bad_files_are_refused_and_the_old_configuration_stays),
		cmocka_unit_test(test_settings_that_need_a_restart_keep_their_values),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
