/* test_metrics.c - a real vcounterd's GET /metrics: the text parses as
 * Prometheus' exposition format, its values move with what the daemon sees
 * (a VM registered, a refused TLS handshake, a failed migration, a watcher),
 * and hostile HTTP gets a clear status or a close while the daemon keeps
 * serving and gives back every fd. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon_harness.h"
#include "metrics_http.h"
#include "vmm_raw.h"
#include "vmm_server.h"
#include "wire.h"
#include "vcounter/control.h"
#include "vcounter/vcounter.h"

#define SOURCE_NAME "host-a.test"
#define TARGET_NAME "host-b.test"

static struct daemon_proc daemon_main;
static char certs_dir[256], work_dir[256];
static bool certs_made_here;
static int metrics_port, peer_port, control_port;
static int baseline_fds;

/* ---- HTTP by hand ---- */

static int tcp_connect(int port)
{
	struct sockaddr_in sin = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		fail_msg("connect to port %d: %s", port, strerror(errno));
	return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0)
			fail_msg("send: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/* Read until the peer closes (or resets) or timeout_ms passes without data;
 * NUL-terminated. The count, or -errno when reset before anything came. */
static ssize_t read_until_close(int fd, char *buf, size_t size, int timeout_ms)
{
	size_t len = 0;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, timeout_ms) != 1)
			break;
		n = recv(fd, buf + len, size - 1 - len, 0);
		if (n < 0) {
			if (len == 0)
				return -errno;
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == size - 1)
			break;
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

/* The status of the response in buf, -1 if it is not one. */
static int response_status(const char *buf)
{
	int status;

	if (sscanf(buf, "HTTP/1.1 %3d ", &status) != 1)
		return -1;
	return status;
}

/* One request on a fresh connection; the whole response in resp. */
static int http_exchange(const void *req, size_t len, char *resp, size_t size)
{
	int fd = tcp_connect(metrics_port);
	ssize_t n;

	send_all(fd, req, len);
	n = read_until_close(fd, resp, size, 10000);
	close(fd);
	return n < 0 ? -1 : response_status(resp);
}

static int http_exchange_str(const char *req, char *resp, size_t size)
{
	return http_exchange(req, strlen(req), resp, size);
}

/* ---- the exposition format, checked independently of the daemon's code ---- */

static bool is_name(const char *s, size_t len)
{
	if (len == 0 || !(s[0] == '_' || s[0] == ':' || (s[0] >= 'a' && s[0] <= 'z') ||
			  (s[0] >= 'A' && s[0] <= 'Z')))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!(s[i] == '_' || s[i] == ':' || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

/* One sample line: name{label="value",...} value. */
static void check_sample_line(const char *line, size_t len)
{
	size_t i = 0, start;
	char value[64];
	char *end;

	while (i < len && line[i] != '{' && line[i] != ' ')
		i++;
	if (!is_name(line, i))
		fail_msg("bad metric name in '%.*s'", (int)len, line);
	if (i < len && line[i] == '{') {
		for (i++;;) {
			start = i;
			while (i < len && line[i] != '=')
				i++;
			if (!is_name(line + start, i - start) || i + 1 >= len || line[i + 1] != '"')
				fail_msg("bad label in '%.*s'", (int)len, line);
			for (i += 2; i < len && line[i] != '"'; i++)
				if (line[i] == '\\' && (++i >= len || !strchr("\\\"n", line[i])))
					fail_msg("bad escape in '%.*s'", (int)len, line);
			if (i >= len)
				fail_msg("unterminated label value in '%.*s'", (int)len, line);
			i++;
			if (i < len && line[i] == ',') {
				i++;
				continue;
			}
			if (i >= len || line[i] != '}')
				fail_msg("bad label list in '%.*s'", (int)len, line);
			i++;
			break;
		}
	}
	if (i >= len || line[i] != ' ' || len - i - 1 == 0 || len - i - 1 >= sizeof(value))
		fail_msg("no value in '%.*s'", (int)len, line);
	memcpy(value, line + i + 1, len - i - 1);
	value[len - i - 1] = '\0';
	(void)strtod(value, &end);
	if (*end)
		fail_msg("value '%s' is not a number", value);
}

struct scrape {
	char buf[65536];
	const char *body;
};

static struct scrape scraped;

/* GET /metrics: 200, the 0.0.4 content type, a body of Content-Length bytes
 * that parses line by line. */
static void scrape(void)
{
	const char *req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	const char *hdr_end, *cl;
	long content_length;
	int status = http_exchange_str(req, scraped.buf, sizeof(scraped.buf));

	if (status != 200)
		fail_msg("GET /metrics: status %d: %.200s", status, scraped.buf);
	hdr_end = strstr(scraped.buf, "\r\n\r\n");
	assert_non_null(hdr_end);
	assert_non_null(strstr(scraped.buf,
			       "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	cl = strstr(scraped.buf, "\r\nContent-Length: ");
	assert_true(cl && cl < hdr_end);
	content_length = strtol(cl + 18, NULL, 10);
	scraped.body = hdr_end + 4;
	assert_int_equal((long)strlen(scraped.body), content_length);

	for (const char *line = scraped.body, *nl; *line; line = nl + 1) {
		char name[128], type[32];

		nl = strchr(line, '\n');
		assert_non_null(nl); /* every line ends with a line feed */
		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (sscanf(line, "# TYPE %127s %31s", name, type) == 2) {
			assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
				    strcmp(type, "histogram") == 0);
			continue;
		}
		check_sample_line(line, (size_t)(nl - line));
	}
}

/* The value of series ("name" or "name{labels}") in the last scrape. */
static bool scraped_value(const char *series, double *ret)
{
	size_t len = strlen(series);

	for (const char *line = scraped.body; line && *line;) {
		const char *nl = strchr(line, '\n');

		if (strncmp(line, series, len) == 0 && line[len] == ' ') {
			*ret = strtod(line + len + 1, NULL);
			return true;
		}
		line = nl ? nl + 1 : NULL;
	}
	return false;
}

static double metric(const char *series)
{
	double v;

	scrape();
	if (!scraped_value(series, &v))
		fail_msg("no series %s in:\n%s", series, scraped.body);
	return v;
}

/* Metrics follow events within the daemon's loop: poll up to 10 s. */
static void wait_metric(const char *series, double want)
{
	double v = NAN;

	for (int i = 0; i < 200; i++) {
		v = metric(series);
		if (v == want)
			return;
		harness_sleep_ms(50);
	}
	fail_msg("%s is %g, expected %g", series, v, want);
}

/* ---- fds ---- */

/* The daemon frees a connection at its close, after at most
 * METRICS_HTTP_LINGER_MS; wait up to 5 s. */
static void assert_fds_back_to_baseline(void)
{
	char cmd[128];

	for (int i = 0; i < 500 && harness_fd_count(&daemon_main) != baseline_fds; i++)
		harness_sleep_ms(10);
	if (harness_fd_count(&daemon_main) != baseline_fds) {
		snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd >&2", (int)daemon_main.pid);
		fprintf(stderr, "the daemon holds %d fds, %d expected:\n",
			harness_fd_count(&daemon_main), baseline_fds);
		(void)!system(cmd);
	}
	assert_int_equal(harness_fd_count(&daemon_main), baseline_fds);
}

static void assert_daemon_serving(void)
{
	assert_true(harness_alive(&daemon_main));
	assert_int_equal(metric("vcounterd_build_info{version=\"0.1.0\"}"), 1);
}

/* ---- 1. what is served ---- */

static void test_scrape_has_every_family_and_sane_values(void **state)
{
	static const char *const families[] = {
		"vcounterd_build_info gauge",
		"vcounterd_start_time_seconds gauge",
		"vcounterd_vms_registered gauge",
		"vcounterd_migrations_total counter",
		"vcounterd_migrations_running gauge",
		"vcounterd_apply_latency_seconds histogram",
		"vcounterd_last_error_bound_seconds gauge",
		"vcounterd_last_elapsed_seconds gauge",
		"vcounterd_peer_links gauge",
		"vcounterd_peer_link_failures_total counter",
		"vcounterd_tls_handshake_failures_total counter",
		"vcounterd_control_watchers gauge",
		"vcounterd_kvmclock_checks_total counter",
		"vcounterd_clock_error_seconds gauge",
		"vcounterd_accept_failures_total counter",
		"vcounterd_vmm_refusals_total counter",
	};
	char type_line[128];
	double start, now = (double)time(NULL), clock_error;

	scrape();
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		snprintf(type_line, sizeof(type_line), "# TYPE %s\n", families[i]);
		if (!strstr(scraped.body, type_line))
			fail_msg("no '%s' in:\n%s", type_line, scraped.body);
	}
	assert_true(scraped_value("vcounterd_start_time_seconds", &start));
	assert_true(start > now - 600 && start <= now + 1);
	assert_int_equal(metric("vcounterd_vms_registered{role=\"source\",backend=\"kvm-x86\"}"),
			 0);
	assert_int_equal(metric("vcounterd_migrations_running"), 0);
	assert_int_equal(metric("vcounterd_apply_latency_seconds_bucket{le=\"+Inf\"}"), 0);
	assert_int_equal(metric("vcounterd_apply_latency_seconds_count"), 0);
	assert_int_equal(metric("vcounterd_control_watchers"), 0);
	/* This host's share of a bound, from adjtimex: a number of seconds, or
	 * +Inf on a host whose clock is not synchronised. */
	clock_error = metric("vcounterd_clock_error_seconds{source=\"adjtimex\"}");
	assert_true(isinf(clock_error) || (clock_error >= 0 && clock_error < 16));
	assert_true(
		harness_log_contains(&daemon_main, "metrics: serving GET /metrics on 127.0.0.1:"));
	assert_fds_back_to_baseline();
}

/* ---- 2. values that move ---- */

static void test_refused_tls_handshakes_are_counted_by_listener(void **state)
{
	const char *plaintext = "GET / HTTP/1.0\r\n\r\n";
	double peer = metric("vcounterd_tls_handshake_failures_total{listener=\"peer\"}");
	double control = metric("vcounterd_tls_handshake_failures_total{listener=\"control\"}");
	char buf[256];
	int fd;

	/* Plaintext where TLS is expected: the server's handshake fails. */
	fd = tcp_connect(peer_port);
	send_all(fd, plaintext, strlen(plaintext));
	(void)read_until_close(fd, buf, sizeof(buf), 10000);
	close(fd);
	wait_metric("vcounterd_tls_handshake_failures_total{listener=\"peer\"}", peer + 1);

	fd = tcp_connect(control_port);
	send_all(fd, plaintext, strlen(plaintext));
	(void)read_until_close(fd, buf, sizeof(buf), 10000);
	close(fd);
	wait_metric("vcounterd_tls_handshake_failures_total{listener=\"control\"}", control + 1);
	assert_int_equal(metric("vcounterd_tls_handshake_failures_total{listener=\"peer\"}"),
			 peer + 1);
	assert_fds_back_to_baseline();
}

static int watch_cb(const struct vcounter_ctl_event *event, void *userdata)
{
	return 0; /* until killed */
}

static void test_control_watchers_follow_watch_streams(void **state)
{
	pid_t child;
	int status;

	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct vcounter_ctl_options opts = { .socket_path = daemon_main.control_socket };
		struct vcounter_ctl *ctl;

		if (vcounter_ctl_connect(&opts, &ctl) < 0)
			_exit(1);
		vcounter_ctl_watch(ctl, NULL, NULL, watch_cb, NULL);
		_exit(2);
	}
	wait_metric("vcounterd_control_watchers", 1);
	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, &status, 0), child);
	wait_metric("vcounterd_control_watchers", 0);
	assert_fds_back_to_baseline();
}

/* A real KVM VM of 2 vCPUs, or a skip saying why not. */
static void test_vm_create_or_skip(struct harness_vm *vm)
{
	int kvm = harness_kvm_open("no VM to register");

	if (kvm < 0)
		skip();
	assert_int_equal(harness_vm_create(vm, kvm, 2), 0);
	close(kvm);
}

static void vms_series(char *buf, size_t size, const char *role, const char *backend)
{
	snprintf(buf, size, "vcounterd_vms_registered{role=\"%s\",backend=\"%s\"}", role, backend);
}

static void test_registered_vm_moves_the_gauge(void **state)
{
	struct vcounter_vm_info info;
	struct vcounter *vc;
	struct harness_vm vm;
	char series[160];

	test_vm_create_or_skip(&vm);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-metrics", VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      vm.vcpu_fds, 2, &info),
			 0);
	vms_series(series, sizeof(series), "target", info.backend);
	assert_int_equal(metric(series), 1);
	vms_series(series, sizeof(series), "source", info.backend);
	assert_int_equal(metric(series), 0);

	assert_int_equal(vcounter_unregister_vm(vc, "vm-metrics"), 0);
	vms_series(series, sizeof(series), "target", info.backend);
	assert_int_equal(metric(series), 0);

	/* A VMM that disconnects takes its VMs along. */
	assert_int_equal(vcounter_register_vm(vc, "vm-metrics", VCOUNTER_ROLE_TARGET, vm.vm_fd,
					      vm.vcpu_fds, 2, &info),
			 0);
	assert_int_equal(metric(series), 1);
	vcounter_close(vc);
	wait_metric(series, 0);
	harness_vm_destroy(&vm);
	assert_fds_back_to_baseline();
}

/* Garbage on the VMM socket: every datagram still gets its Error reply and
 * is counted by reason, but one connection logs at most
 * VMM_REFUSAL_LOG_BURST lines per interval (before: none at all; a log line
 * each would let a VMM flood the journal). */
static void test_vmm_refusals_are_counted_and_their_log_bounded(void **state)
{
	static const uint8_t garbage[] = { 0, 0, 0, 3, 0xff, 0xff, 0xff };
	const double before = metric("vcounterd_vmm_refusals_total{reason=\"malformed\"}");
	char line[128];
	int fd = vmm_raw_connect(daemon_main.vmm_socket);

	for (int i = 0; i < 50; i++) {
		Vcounter__V1__VmmMessage *reply;

		assert_int_equal(send(fd, garbage, sizeof(garbage), 0), (ssize_t)sizeof(garbage));
		reply = vmm_raw_recv(fd);
		assert_non_null(reply);
		assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR);
		assert_int_equal(reply->error->errno_value, EBADMSG);
		wire_vmm_free(reply);
	}
	close(fd);
	assert_int_equal(metric("vcounterd_vmm_refusals_total{reason=\"malformed\"}") - before, 50);
	snprintf(line, sizeof(line), "vmm pid=%d uid=%u gid=%u: request 0 refused: ", (int)getpid(),
		 (unsigned)getuid(), (unsigned)getgid());
	assert_int_equal(harness_file_count(daemon_main.log_path, line), VMM_REFUSAL_LOG_BURST);
	assert_true(harness_log_contains(&daemon_main,
					 "message is not a valid VmmMessage: Bad message"));
	assert_fds_back_to_baseline();
}

static void start_migration(const char *vm_id, const char *address)
{
	struct vcounter_ctl_options opts = { .socket_path = daemon_main.control_socket,
					     .timeout_ms = 10000 };
	struct vcounter_ctl_migration mig;
	struct vcounter_ctl *ctl;

	assert_int_equal(vcounter_ctl_connect(&opts, &ctl), 0);
	if (vcounter_ctl_start_migration(ctl, vm_id, address, TARGET_NAME, &mig) < 0)
		fail_msg("StartMigration: %s", vcounter_ctl_last_error(ctl));
	vcounter_ctl_migration_clear(&mig);
	vcounter_ctl_close(ctl);
}

/* A controller starts two migrations of a source VM: to a port nobody
 * listens on (the link fails, so does the migration), then to a real target
 * daemon that has no such VM (the link comes up and stays, the target
 * refuses Prepare: failed again). */
static void test_failed_migrations_and_peer_links_are_counted(void **state)
{
	const char *outcome = "vcounterd_migrations_total{role=\"source\",outcome=\"failed\"}";
	double failed = metric(outcome);
	double link_failures = metric("vcounterd_peer_link_failures_total");
	char ca[320], cert[320], key[320], address[64], target_port_file[320];
	char target_metrics[32];
	const char *target_args[] = {
		"--listen",
		"127.0.0.1:0",
		"--host-name",
		TARGET_NAME,
		"--ca",
		ca,
		"--cert",
		cert,
		"--key",
		key,
		"--allow-peer",
		SOURCE_NAME,
		"--metrics-listen",
		"127.0.0.1:0",
		"--metrics-port-file",
		target_port_file,
		NULL,
	};
	struct vcounter_vm_info info;
	struct daemon_proc target;
	struct vcounter *vc;
	struct harness_vm vm;
	int saved_port;
	FILE *f;

	test_vm_create_or_skip(&vm);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, "vm-source", VCOUNTER_ROLE_SOURCE, vm.vm_fd,
					      vm.vcpu_fds, 2, &info),
			 0);

	/* Port 1 on loopback: connection refused. */
	start_migration("vm-source", "127.0.0.1:1");
	wait_metric(outcome, failed + 1);
	assert_int_equal(metric("vcounterd_peer_link_failures_total"), link_failures + 1);
	assert_int_equal(metric("vcounterd_migrations_running"), 0);
	assert_int_equal(metric("vcounterd_peer_links{state=\"established\"}"), 0);
	assert_int_equal(metric("vcounterd_peer_links{state=\"connecting\"}"), 0);
	assert_int_equal(metric("vcounterd_migrations_total{role=\"source\",outcome=\"done\"}"), 0);

	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, "host-b", "pem");
	harness_cert_path(key, sizeof(key), certs_dir, "host-b", "key");
	snprintf(target_port_file, sizeof(target_port_file), "%s/target-metrics-port", work_dir);
	assert_int_equal(harness_start(&target, target_args), 0);
	snprintf(address, sizeof(address), "127.0.0.1:%d", target.peer_port);
	start_migration("vm-source", address);
	wait_metric(outcome, failed + 2);
	assert_true(harness_log_contains(&daemon_main, "no target VM vm-source registered"));
	assert_int_equal(metric("vcounterd_peer_links{state=\"established\"}"), 1);
	assert_int_equal(metric("vcounterd_peer_link_failures_total"), link_failures + 1);

	/* The target counts the incoming link, and no migration of its own. */
	f = fopen(target_port_file, "re");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%31s", target_metrics), 1);
	fclose(f);
	saved_port = metrics_port;
	metrics_port = atoi(target_metrics);
	assert_int_equal(metric("vcounterd_peer_links{state=\"established\"}"), 1);
	assert_int_equal(metric("vcounterd_tls_handshake_failures_total{listener=\"peer\"}"), 0);
	assert_int_equal(metric("vcounterd_migrations_total{role=\"target\",outcome=\"failed\"}"),
			 0);
	metrics_port = saved_port;
	assert_int_equal(harness_stop(&target), 0);

	/* The target closed the link in order: gone, and not a failure. */
	wait_metric("vcounterd_peer_links{state=\"established\"}", 0);
	assert_int_equal(metric("vcounterd_peer_link_failures_total"), link_failures + 1);
	assert_int_equal(vcounter_unregister_vm(vc, "vm-source"), 0);
	vcounter_close(vc);
	harness_vm_destroy(&vm);
	assert_fds_back_to_baseline();
}

/* ---- 3. hostile HTTP ---- */

static void expect_status(const char *what, const void *req, size_t len, int status,
			  const char *header)
{
	static char resp[65536];
	int got = http_exchange(req, len, resp, sizeof(resp));

	if (got != status)
		fail_msg("%s: status %d, expected %d: %.200s", what, got, status, resp);
	assert_non_null(strstr(resp, "\r\nConnection: close\r\n"));
	if (header && !strstr(resp, header))
		fail_msg("%s: no '%s' in: %.300s", what, header, resp);
}

static void test_bad_requests_get_clear_statuses(void **state)
{
	static char big[16384];
	size_t n;

	expect_status("TLS ClientHello", "\x16\x03\x01\x00\x05hello\r\n\r\n", 11, 400, NULL);
	expect_status("HTTP/0.9", "GET /metrics\r\n\r\n", 16, 400, NULL);
	expect_status("POST", "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 49, 405,
		      "\r\nAllow: GET\r\n");
	expect_status("HEAD", "HEAD /metrics HTTP/1.1\r\n\r\n", 26, 405, NULL);
	expect_status("unknown path", "GET /metrics/x HTTP/1.1\r\n\r\n", 28, 404, NULL);
	expect_status("root", "GET / HTTP/1.1\r\n\r\n", 18, 404, NULL);
	expect_status("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, 505, NULL);

	n = (size_t)snprintf(big, sizeof(big), "GET /");
	memset(big + n, 'a', METRICS_HTTP_MAX_LINE_BYTES);
	n += METRICS_HTTP_MAX_LINE_BYTES;
	n += (size_t)snprintf(big + n, sizeof(big) - n, " HTTP/1.1\r\n\r\n");
	expect_status("request line over the limit", big, n, 414, NULL);

	n = (size_t)snprintf(big, sizeof(big), "GET /metrics HTTP/1.1\r\nX-Pad: ");
	memset(big + n, 'p', METRICS_HTTP_MAX_REQUEST_BYTES);
	n += METRICS_HTTP_MAX_REQUEST_BYTES;
	n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\n\r\n");
	expect_status("headers over the limit", big, n, 431, NULL);

	/* Two requests in one connection: one answer, then the close. */
	{
		static char resp[65536];
		const char *two = "GET / HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n";

		assert_int_equal(http_exchange_str(two, resp, sizeof(resp)), 404);
		assert_null(strstr(resp + 4, "HTTP/1.1"));
	}
	assert_daemon_serving();
	assert_fds_back_to_baseline();
}

/* Bytes without a line end, for as long as the daemon takes them: 414 at
 * 2 KiB, then it drops what follows and closes after 64 KiB more (the client
 * sees the status or a reset, never a hang), and serves on. */
static void test_flood_is_cut_off(void **state)
{
	static char chunk[1 << 20], resp[4096];
	size_t sent = 0, limit = (size_t)256 << 20;
	bool closed = false;
	ssize_t n;
	int fd = tcp_connect(metrics_port);

	memset(chunk, 'A', sizeof(chunk));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (int idle = 0; !closed && sent < limit && idle < 500;) {
		n = send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
		if (n > 0) {
			sent += (size_t)n;
			idle = 0;
		} else if (n < 0 && errno == EAGAIN) {
			harness_sleep_ms(10);
			idle++;
		} else {
			closed = n < 0 && (errno == EPIPE || errno == ECONNRESET);
			break;
		}
	}
	if (!closed)
		fail_msg("the daemon took %zu bytes without closing", sent);
	fcntl(fd, F_SETFL, 0);
	n = read_until_close(fd, resp, sizeof(resp), 5000);
	if (n > 0)
		assert_int_equal(response_status(resp), 414);
	else
		assert_true(n == 0 || n == -ECONNRESET);
	close(fd);
	assert_daemon_serving();
	assert_fds_back_to_baseline();
}

/* A client that connects and says nothing, and one that stops halfway, get
 * 408 after METRICS_HTTP_REQUEST_TIMEOUT_MS and the close. */
static void test_silent_clients_are_closed_by_timeout(void **state)
{
	char resp[1024];
	struct timespec t0, t1;
	int silent = tcp_connect(metrics_port);
	int halfway = tcp_connect(metrics_port);
	double waited_ms;

	send_all(halfway, "GET /metrics HTTP/1.1\r\nHost:", 28);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_true(read_until_close(silent, resp, sizeof(resp),
				     METRICS_HTTP_REQUEST_TIMEOUT_MS + 5000) > 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(response_status(resp), 408);
	waited_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_true(waited_ms > METRICS_HTTP_REQUEST_TIMEOUT_MS - 1000);
	assert_true(read_until_close(halfway, resp, sizeof(resp), 5000) > 0);
	assert_int_equal(response_status(resp), 408);
	close(silent);
	close(halfway);
	assert_daemon_serving();
	assert_fds_back_to_baseline();
}

#define FLOOD_CONNECTIONS 300
#define FLOOD_HOSTS	  7 /* 8 each: with the first's 8, every slot */

/* How many of fds[0..n) the daemon answered (503) and closed; those are
 * closed here too, and -1 in fds. */
static int count_refused(int *fds, int n)
{
	static char resp[4096];
	int busy = 0;

	for (int i = 0; i < n; i++) {
		struct pollfd pfd = { .fd = fds[i], .events = POLLIN };

		if (fds[i] < 0 || poll(&pfd, 1, 0) != 1)
			continue;
		assert_true(read_until_close(fds[i], resp, sizeof(resp), 2000) > 0);
		assert_int_equal(response_status(resp), 503);
		close(fds[i]);
		fds[i] = -1;
		busy++;
	}
	return busy;
}

/* Slowloris: connections that never send their request. 300 from one
 * address: METRICS_HTTP_MAX_PER_SOURCE are held (until their deadline), the
 * rest get 503 at once. With every slot then taken from 8 addresses, a
 * scraper still gets its metrics: the oldest connection still sending makes
 * room. Before, 64 such connections from anywhere gave every scraper 503
 * until their 5 s deadline. */
static void test_connection_limit_refuses_the_excess(void **state)
{
	static int fds[FLOOD_CONNECTIONS + FLOOD_HOSTS * METRICS_HTTP_MAX_PER_SOURCE];
	static char resp[65536];
	const double evicted =
		metric("vcounterd_connections_shed_total{socket=\"metrics\",reason=\"evicted\"}");
	int n = 0, busy = 0, served = 0;
	char addr[32];

	for (int i = 0; i < FLOOD_CONNECTIONS; i++) {
		fds[n] = harness_tcp_connect_from("127.0.0.2", metrics_port);
		assert_true(fds[n++] >= 0);
	}
	/* The refused ones are answered at once; give the daemon the time to
	 * accept them all. */
	for (int round = 0; round < 100 && busy < FLOOD_CONNECTIONS - METRICS_HTTP_MAX_PER_SOURCE;
	     round++) {
		busy += count_refused(fds, n);
		harness_sleep_ms(20);
	}
	harness_sleep_ms(100); /* none beyond those */
	busy += count_refused(fds, n);
	assert_int_equal(busy, FLOOD_CONNECTIONS - METRICS_HTTP_MAX_PER_SOURCE);
	/* Every slot taken, from 8 addresses. */
	for (int h = 0; h < FLOOD_HOSTS; h++) {
		snprintf(addr, sizeof(addr), "127.0.4.%d", h + 1);
		for (int i = 0; i < METRICS_HTTP_MAX_PER_SOURCE; i++) {
			fds[n] = harness_tcp_connect_from(addr, metrics_port);
			assert_true(fds[n++] >= 0);
		}
	}
	harness_sleep_ms(100);
	assert_int_equal(count_refused(fds, n), 0);
	assert_int_equal(harness_fd_count(&daemon_main),
			 baseline_fds + METRICS_HTTP_MAX_CONNECTIONS);
	/* Full, and a scraper is served: the oldest waiting made room. */
	assert_int_equal(
		metric("vcounterd_connections_shed_total{socket=\"metrics\",reason=\"evicted\"}") -
			evicted,
		1);
	/* The ones still held are served when they ask. */
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			(void)send(fds[i], "GET /metrics HTTP/1.1\r\n\r\n", 25, MSG_NOSIGNAL);
	for (int i = 0; i < n; i++) {
		ssize_t got;

		if (fds[i] < 0)
			continue;
		got = read_until_close(fds[i], resp, sizeof(resp), 10000);
		/* The evicted one was closed without a response; the others
		 * are served, or told 408 if their deadline, shorter as the
		 * slots filled, passed first (a slow machine, valgrind). */
		if (got > 0) {
			int status = response_status(resp);

			assert_true(status == 200 || status == 408);
			served += status == 200;
		}
		close(fds[i]);
	}
	fprintf(stderr, "held connections served: %d\n", served);
	assert_daemon_serving();
	assert_fds_back_to_baseline();
}

/* ---- 4. configuration ---- */

/* The daemon refuses args: exits non-zero, and says why. */
static void expect_daemon_refuses(const char *const *args, const char *why)
{
	char cmd[1024], out[1024] = "";
	size_t n =
		(size_t)snprintf(cmd, sizeof(cmd), "'%s/daemon/vcounterd'", harness_build_root());
	FILE *p;

	for (size_t i = 0; args[i]; i++)
		n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, " '%s'", args[i]);
	snprintf(cmd + n, sizeof(cmd) - n,
		 " --vmm-socket '%s/refused.sock' --control-socket none 2>&1", work_dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	(void)!fread(out, 1, sizeof(out) - 1, p);
	assert_true(pclose(p) != 0);
	if (!strstr(out, why))
		fail_msg("no '%s' in: %s", why, out);
}

static void test_listen_addresses_invalid_or_public(void **state)
{
	const char *bad[] = { "--metrics-listen", "localhost:9420", NULL };
	const char *orphan[] = { "--metrics-port-file", "/dev/null", NULL };
	const char *public[] = { "--metrics-listen", "0.0.0.0:0", NULL };
	struct daemon_proc d;

	expect_daemon_refuses(bad, "metrics: invalid listen address 'localhost:9420'");
	expect_daemon_refuses(orphan, "--metrics-port-file needs --metrics-listen");
	/* Allowed, with a warning. */
	assert_int_equal(harness_start(&d, public), 0);
	assert_true(harness_log_contains(&d, "not a loopback address"));
	/* harness_start returns once the control socket exists, which is
	 * before the daemon handles SIGTERM: on the slow rig (QEMU TCG) an
	 * immediate stop killed it. It logs its start line after. */
	for (int i = 0; i < 1000 && !harness_log_contains(&d, "vcounterd 0.1.0 on "); i++)
		harness_sleep_ms(10);
	assert_int_equal(harness_stop(&d), 0);
	/* Off by default. */
	assert_false(harness_log_contains(&daemon_main, "not a loopback address"));
}

/* ---- setup ---- */

static int group_setup(void **state)
{
	char ca[320], cert[320], key[320], metrics_file[320], control_file[320];
	const char *args[] = {
		"--listen",
		"127.0.0.1:0",
		"--host-name",
		SOURCE_NAME,
		"--ca",
		ca,
		"--cert",
		cert,
		"--key",
		key,
		"--allow-peer",
		TARGET_NAME,
		"--metrics-listen",
		"127.0.0.1:0",
		"--metrics-port-file",
		metrics_file,
		"--control-listen",
		"127.0.0.1:0",
		"--control-port-file",
		control_file,
		"--control-reader",
		"ctl-reader.test",
		NULL,
	};
	const char *tmp = getenv("TMPDIR");

	signal(SIGPIPE, SIG_IGN);
	certs_made_here = !getenv("VC_TEST_CERT_DIR");
	if (harness_certs(certs_dir, sizeof(certs_dir)) < 0) {
		fprintf(stderr, "cannot make test certificates (VC_TEST_CERTS unset?)\n");
		return -1;
	}
	snprintf(work_dir, sizeof(work_dir), "%s/vcounterd-metrics.XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(work_dir))
		return -1;
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, "host-a", "pem");
	harness_cert_path(key, sizeof(key), certs_dir, "host-a", "key");
	snprintf(metrics_file, sizeof(metrics_file), "%s/metrics-port", work_dir);
	snprintf(control_file, sizeof(control_file), "%s/control-port", work_dir);
	if (harness_start(&daemon_main, args) < 0)
		return -1;
	/* The metrics port file is written before the control socket the
	 * harness waits for; the control port file only after it. */
	metrics_port = harness_read_port(metrics_file);
	control_port = harness_wait_port(control_file, 30000);
	peer_port = daemon_main.peer_port;
	if (metrics_port <= 0 || control_port <= 0 || peer_port <= 0) {
		fprintf(stderr, "ports: metrics %d control %d peer %d\n", metrics_port,
			control_port, peer_port);
		return -1;
	}
	/* harness_start's readiness probe connected once: let that settle. */
	baseline_fds = harness_settled_fd_count(&daemon_main);
	return baseline_fds > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	int r = harness_finish(&daemon_main);

	if (work_dir[0])
		harness_remove_tree(work_dir);
	if (certs_made_here && certs_dir[0])
		harness_remove_tree(certs_dir);
	return r;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scrape_has_every_family_and_sane_values),
		cmocka_unit_test(test_refused_tls_handshakes_are_counted_by_listener),
		cmocka_unit_test(test_control_watchers_follow_watch_streams),
		cmocka_unit_test(test_registered_vm_moves_the_gauge),
		cmocka_unit_test(test_failed_migrations_and_peer_links_are_counted),
		cmocka_unit_test(test_bad_requests_get_clear_statuses),
		cmocka_unit_test(test_vmm_refusals_are_counted_and_their_log_bounded),
		cmocka_unit_test(test_flood_is_cut_off),
		cmocka_unit_test(test_silent_clients_are_closed_by_timeout),
		cmocka_unit_test(test_connection_limit_refuses_the_excess),
		cmocka_unit_test(test_listen_addresses_invalid_or_public),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
