/* test_tls_faults.c - every TLS endpoint of a real vcounterd, both directions, with certificates
 * tests/gen-certs.sh makes: the daemon as a TLS client (a source connecting to a target that this
 * test plays with OpenSSL in a thread), the control API's TCP listener, and its own certificate
 * rotated on disk and reloaded (SIGHUP). Each fault is refused with its reason, nothing crosses,
 * and right after it the daemon serves good peers and controllers. The incoming peer listener's
 * refusals are test_peer_link.c's. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "daemon_harness.h"
#include "frame.h"
#include "kvm_test_vm.h"
#include "tls_client.h"
#include "vcounter/control.h"
#include "vcounter/vcounter.h"
#include "wire.h"

#define SELF_NAME     "host-a.test" /* the daemon under test */
#define TARGET_NAME   "host-b.test" /* the peer it migrates to, and that links to it */
#define URI_NAME      "spiffe://fleet.test/host-u"
#define OPERATOR_NAME "ctl-operator.test"
#define FAKE_REFUSAL  "fake target refuses on purpose"

/* Waits, much longer when VC_DAEMON_WRAPPER (valgrind) slows the daemon down. */
static int wait_ms = 10000;

static char certs_dir[256];
static char live_dir[256];
static char live_cert[320], live_key[320], control_port_path[320];
static struct daemon_proc daemon_a;
static int control_port;

/* The source VM of the test that runs (kvm_test_vm.h), registered on vc. */
static struct vcounter *vc;
static char vm_id[32];

/* ---- the daemon's log ---- */

static int log_count(const char *needle)
{
	return harness_file_count(daemon_a.log_path, needle);
}

static bool log_has_line(const char *a, const char *b)
{
	char line[4096];
	bool found = false;
	FILE *f = fopen(daemon_a.log_path, "re");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, a) && (!b || strstr(line, b));
	fclose(f);
	return found;
}

/* Some line holds a (and b, if given), within wait_ms. */
static void assert_log_line(const char *a, const char *b)
{
	int64_t deadline = harness_now_ms() + wait_ms;

	while (!log_has_line(a, b) && harness_now_ms() < deadline)
		harness_sleep_ms(10);
	if (!log_has_line(a, b)) {
		harness_dump_log(&daemon_a);
		fail_msg("no log line with '%s'%s%s", a, b ? " and " : "", b ? b : "");
	}
}

/* ---- the credentials on disk, and SIGHUP ---- */

/* Copy the first len bytes of src (all: SIZE_MAX) to dst in one rename: the daemon never reads
 * half a file, only what the test means it to. */
static void copy_file(const char *src, const char *dst, size_t len)
{
	char tmp[340], buf[8192];
	FILE *in, *out;
	size_t n, total = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
	in = fopen(src, "re");
	assert_non_null(in);
	out = fopen(tmp, "we");
	assert_non_null(out);
	while (total < len && (n = fread(buf, 1, sizeof(buf), in)) > 0) {
		if (n > len - total)
			n = len - total;
		assert_int_equal(fwrite(buf, 1, n, out), n);
		total += n;
	}
	fclose(in);
	assert_int_equal(fclose(out), 0);
	assert_int_equal(rename(tmp, dst), 0);
}

static size_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (size_t)st.st_size;
}

/* What the daemon's --cert and --key name from now on: cert_name.pem and key_name.key. */
static void install_credentials(const char *cert_name, const char *key_name)
{
	char cert[320], key[320];

	harness_cert_path(cert, sizeof(cert), certs_dir, cert_name, "pem");
	harness_cert_path(key, sizeof(key), certs_dir, key_name, "key");
	copy_file(cert, live_cert, SIZE_MAX);
	copy_file(key, live_key, SIZE_MAX);
}

/* SIGHUP and wait for the outcome: true when applied, false when refused. */
static bool reload(void)
{
	int applied = log_count("reload: configuration ");
	int refused = log_count("keeping the previous configuration");
	int64_t deadline = harness_now_ms() + wait_ms;

	assert_int_equal(kill(daemon_a.pid, SIGHUP), 0);
	while (harness_now_ms() < deadline) {
		if (log_count("reload: configuration ") > applied)
			return true;
		if (log_count("keeping the previous configuration") > refused)
			return false;
		if (!harness_alive(&daemon_a)) {
			harness_dump_log(&daemon_a);
			fail_msg("vcounterd died on SIGHUP");
		}
		harness_sleep_ms(10);
	}
	harness_dump_log(&daemon_a);
	fail_msg("no reload outcome in the log within %d ms", wait_ms);
	return false;
}

/* ---- a TLS client of the daemon's listeners (tls_client.h) ---- */

/* Connect to port and run the handshake as cert_name, offering only TLS version (TLS1_3_VERSION
 * or TLS1_2_VERSION) and ALPN alpn (NULL: none), checking the daemon as a peer would: fleet CA
 * and SELF_NAME; see tls_client_open. */
static bool client_open(struct tls_client *c, int port, const char *cert_name, int version,
			const char *alpn)
{
	return tls_client_open(c, &(struct tls_client_opts){
					  .certs_dir = certs_dir,
					  .cert_name = cert_name,
					  .server_name = SELF_NAME,
					  .port = port,
					  .version = version,
					  .alpn = alpn,
					  .timeout_ms = wait_ms,
				  });
}

/* An incoming peer link as TARGET_NAME's host: handshake, and the daemon's Hello. */
static void peer_open_link(struct tls_client *c)
{
	Vcounter__V1__PeerMessage *msg;

	if (!client_open(c, daemon_a.peer_port, "host-b", TLS1_3_VERSION, NULL))
		fail_msg("peer handshake as host-b failed: %s", c->error);
	msg = tls_client_next_peer(c);
	if (!msg)
		fail_msg("no Hello on the peer link: %s", c->error);
	assert_int_equal(msg->body_case, VCOUNTER__V1__PEER_MESSAGE__BODY_HELLO);
	assert_string_equal(msg->hello->host_name, SELF_NAME);
	wire_peer_free(msg);
}

/* An established link answers: a message of no body this version knows gets UNIMPLEMENTED,
 * naming its id. */
static void peer_ping(struct tls_client *c, uint8_t id)
{
	uint8_t buf[16];
	size_t n = FRAME_HEADER_BYTES;
	Vcounter__V1__PeerMessage *msg;

	buf[n++] = 0x08; /* field 1 (id), varint */
	buf[n++] = id;
	buf[n++] = 0x90; /* field 50, varint: tag 400 */
	buf[n++] = 0x03;
	buf[n++] = 0x01;
	assert_int_equal(frame_header_encode(n - FRAME_HEADER_BYTES, buf), 0);
	assert_true(tls_client_write(c, buf, n));
	msg = tls_client_next_peer(c);
	assert_non_null(msg);
	assert_int_equal(msg->body_case, VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR);
	assert_int_equal(msg->id, id);
	assert_int_equal(msg->error->code, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED);
	wire_peer_free(msg);
}

/* ---- controllers ---- */

/* A controller on the TCP listener, as cert_name (libvcounter's own client): 0 when the
 * daemon answered a host status, naming itself. */
static int controller_status(const char *cert_name, struct vcounter_ctl **inout_ctl)
{
	char address[64], ca[320], cert[320], key[320];
	struct vcounter_ctl_options o = {
		.address = address,
		.ca_file = ca,
		.cert_file = cert,
		.key_file = key,
		.server_name = SELF_NAME,
		.timeout_ms = (unsigned)wait_ms,
	};
	struct vcounter_ctl *ctl = inout_ctl ? *inout_ctl : NULL;
	struct vcounter_ctl_host host;
	int r = 0;

	snprintf(address, sizeof(address), "127.0.0.1:%d", control_port);
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, cert_name, "pem");
	harness_cert_path(key, sizeof(key), certs_dir, cert_name, "key");
	if (!ctl)
		r = vcounter_ctl_connect(&o, &ctl);
	if (r == 0)
		r = vcounter_ctl_host_status(ctl, &host);
	if (r == 0)
		assert_string_equal(host.host_name, SELF_NAME);
	if (inout_ctl)
		*inout_ctl = ctl;
	else
		vcounter_ctl_close(ctl);
	return r;
}

/* The daemon lives, takes a good peer link (Hello) and answers a good controller. */
static void assert_daemon_serving(void)
{
	struct tls_client c;

	assert_true(harness_alive(&daemon_a));
	peer_open_link(&c);
	tls_client_close(&c);
	assert_int_equal(controller_status("ctl-operator", NULL), 0);
}

/* HTTP/2's client preface and an empty SETTINGS frame (RFC 9113 3.4, 6.5). */
static const uint8_t h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
				    "\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/* "127.0.0.1:PORT: TLS handshake failed" as the control listener logs a refusal. */
static void control_refusal_line(char *buf, size_t size, int local_port)
{
	snprintf(buf, size, " 127.0.0.1:%d: TLS handshake failed: ", local_port);
}

/* A controller as cert_name offering only TLS version, ALPN h2: refused. No HTTP/2 byte ever
 * comes back (a server's SETTINGS would), the connection ends, the daemon logs why. */
static void assert_controller_refused(const char *cert_name, int version, const char *reason)
{
	uint8_t frame_header[9];
	struct tls_client c;
	char line[64];
	int r = 0;

	if (client_open(&c, control_port, cert_name, version, "h2")) {
		/* The write may already fail: the daemon closed on us. */
		(void)tls_client_write(&c, h2_preface, sizeof(h2_preface) - 1);
		r = tls_client_read(&c, frame_header, sizeof(frame_header));
	}
	if (r == 1)
		fprintf(stderr, "the daemon answered %s with HTTP/2 (frame type %u)\n", cert_name,
			frame_header[3]);
	/* Ended: closed, reset, or a TLS alert; not answered, not left hanging. */
	assert_true(r == TLS_CLIENT_CLOSED || r == -ECONNRESET || r == -EPROTO);
	control_refusal_line(line, sizeof(line), c.local_port);
	tls_client_close(&c);
	assert_log_line(line, reason);
	assert_daemon_serving();
}

/* ---- a target this test plays: a real TLS server, or plaintext ---- */

struct fake_target {
	const char *cert_name; /* NULL: no TLS at all, an HTTP server */
	bool tls12_only;
	int listen_fd;
	char address[32];
	pthread_t thread;

	/* What it saw; read after fake_target_join(). */
	bool accepted;	     /* a TCP connection came */
	bool handshake_done; /* its side of the handshake completed */
	char tls_error[256]; /* OpenSSL's reason when not */
	X509 *client_cert;   /* what the daemon presented */
	size_t app_bytes;    /* decrypted bytes from the daemon */
	int n_frames;	     /* whole peer-link frames among them */
	int bodies[4];	     /* their body cases */
	uint8_t raw[2048];   /* plaintext: every byte the daemon sent */
	size_t raw_len;
};

static void *fake_target_plaintext(struct fake_target *t, int fd)
{
	static const char answer[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
	bool answered = false;
	ssize_t n;

	/* Whatever comes, once: answer as an HTTP server would, then keep what follows until
	 * the daemon hangs up. */
	while (t->raw_len < sizeof(t->raw) &&
	       (n = read(fd, t->raw + t->raw_len, sizeof(t->raw) - t->raw_len)) > 0) {
		t->raw_len += (size_t)n;
		if (!answered)
			answered = write(fd, answer, sizeof(answer) - 1) > 0;
	}
	return NULL;
}

/* Read exactly n decrypted bytes: false when the connection ended first. */
static bool fake_read(struct fake_target *t, SSL *ssl, uint8_t *buf, size_t n)
{
	size_t got = 0, chunk;

	while (got < n) {
		chunk = 0;
		if (SSL_read_ex(ssl, buf + got, n - got, &chunk) != 1)
			return false;
		got += chunk;
		t->app_bytes += chunk;
	}
	return true;
}

/* Refuse the Prepare with an Error naming its id: the source's VMM must see our words. */
static void fake_refuse(SSL *ssl, uint64_t id)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Error error = VCOUNTER__V1__ERROR__INIT;
	uint8_t *buf;
	size_t len, written;

	error.code = VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE;
	error.errno_value = EBUSY;
	error.message = (char *)FAKE_REFUSAL;
	msg.id = id;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR;
	msg.error = &error;
	if (wire_peer_pack_frame(&msg, &buf, &len) == 0) {
		(void)SSL_write_ex(ssl, buf, len, &written);
		free(buf);
	}
}

static void *fake_target_tls(struct fake_target *t, int fd)
{
	char cert[320], key[320], ca[320];
	int version = t->tls12_only ? TLS1_2_VERSION : TLS1_3_VERSION;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	SSL *ssl = NULL;

	harness_cert_path(cert, sizeof(cert), certs_dir, t->cert_name, "pem");
	harness_cert_path(key, sizeof(key), certs_dir, t->cert_name, "key");
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	/* No cmocka asserts off the main thread: a setup failure shows as no handshake. */
	if (!ctx || SSL_CTX_set_min_proto_version(ctx, version) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, version) != 1 ||
	    SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		snprintf(t->tls_error, sizeof(t->tls_error), "fake target: cannot set up %s",
			 t->cert_name);
		goto out;
	}
	/* A target daemon asks for the source's certificate: we see which one it presents. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	ssl = SSL_new(ctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1)
		goto out;
	if (SSL_accept(ssl) != 1) {
		tls_client_save_error(t->tls_error, sizeof(t->tls_error));
		goto out;
	}
	t->handshake_done = true;
	t->client_cert = SSL_get1_peer_certificate(ssl);

	/* Frames until the Prepare (refused), or until the daemon hangs up. */
	for (;;) {
		static __thread uint8_t payload[VC_MAX_FRAME_BYTES];
		Vcounter__V1__PeerMessage *msg = NULL;
		uint8_t header[FRAME_HEADER_BYTES];
		uint32_t len;
		bool prepare;

		if (!fake_read(t, ssl, header, sizeof(header)) ||
		    frame_header_decode(header, VC_MAX_FRAME_BYTES, &len) < 0 ||
		    !fake_read(t, ssl, payload, len) ||
		    wire_peer_unpack(payload, len, &msg, NULL) < 0)
			break;
		if (t->n_frames < (int)(sizeof(t->bodies) / sizeof(t->bodies[0])))
			t->bodies[t->n_frames] = msg->body_case;
		t->n_frames++;
		prepare = msg->body_case == VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE;
		if (prepare)
			fake_refuse(ssl, msg->id);
		wire_peer_free(msg);
		if (prepare)
			break;
	}
	(void)SSL_shutdown(ssl);
out:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

static void *fake_target_main(void *arg)
{
	struct fake_target *t = arg;
	struct pollfd pfd = { .fd = t->listen_fd, .events = POLLIN };
	struct timeval tv = { .tv_sec = wait_ms / 1000 };
	int fd;

	/* One connection, if the daemon makes one in time. */
	if (poll(&pfd, 1, wait_ms) != 1)
		return NULL;
	fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return NULL;
	t->accepted = true;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (t->cert_name)
		fake_target_tls(t, fd);
	else
		fake_target_plaintext(t, fd);
	close(fd);
	return NULL;
}

static void fake_target_start(struct fake_target *t, const char *cert_name, bool tls12_only)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);

	memset(t, 0, sizeof(*t));
	t->cert_name = cert_name;
	t->tls12_only = tls12_only;
	t->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(t->listen_fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(t->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(t->listen_fd, 4), 0);
	assert_int_equal(getsockname(t->listen_fd, (struct sockaddr *)&sa, &len), 0);
	snprintf(t->address, sizeof(t->address), "127.0.0.1:%d", ntohs(sa.sin_port));
	assert_int_equal(pthread_create(&t->thread, NULL, fake_target_main, t), 0);
}

static void fake_target_join(struct fake_target *t)
{
	assert_int_equal(pthread_join(t->thread, NULL), 0);
	close(t->listen_fd);
}

static void fake_target_done(struct fake_target *t)
{
	X509_free(t->client_cert);
	t->client_cert = NULL;
}

/* Did the daemon present certs_dir/cert_name.pem to the target? */
static bool fake_saw_client(const struct fake_target *t, const char *cert_name)
{
	return tls_cert_is(t->client_cert, certs_dir, cert_name);
}

/* ---- the source VM (kvm_test_vm.h), registered with the daemon ---- */

static int source_vm_setup(void **state)
{
	return kvm_test_vm_setup(state, 1);
}

static int source_vm_teardown(void **state)
{
	vcounter_close(vc);
	vc = NULL;
	return kvm_test_vm_teardown(state);
}

/* Register this test's VM as a migration source; skip (saying why) without /dev/kvm. */
static void source_vm_register(void **state)
{
	static unsigned n;
	struct kvm_test_vm *t = kvm_test_vm_or_skip(state);
	struct vcounter_vm_info info;

	snprintf(vm_id, sizeof(vm_id), "vm-tls-%u", ++n);
	assert_int_equal(vcounter_connect(daemon_a.vmm_socket, &vc), 0);
	assert_int_equal(vcounter_register_vm(vc, vm_id, VCOUNTER_ROLE_SOURCE, t->vm_fd,
					      t->vcpu_fds, 1, &info),
			 0);
	/* What a migration needs of the source: something to read the counter with. */
	if (strcmp(info.backend, "none") == 0)
		fail_msg("no backend for the source VM: %s", info.probe_detail);
}

/* The VMM asks to migrate to the fake target, expecting it to be expected_name: the call's
 * result; the daemon's sentence in ret_reason. The target is joined on return. */
static int migrate_to(struct fake_target *t, const char *expected_name, char *ret_reason,
		      size_t size)
{
	char id[VCOUNTER_MIGRATION_ID_SIZE];
	int r;

	r = vcounter_migrate_out(vc, vm_id, t->address, expected_name, id);
	snprintf(ret_reason, size, "%s", r < 0 ? vcounter_last_error(vc) : "");
	fake_target_join(t);
	return r;
}

/* A good target (host-b, fleet CA, TLS 1.3) gets the handshake, the daemon's certificate
 * (self_cert), its Hello and the Prepare, nothing before them; our refusal of the Prepare
 * comes back to the VMM word for word. */
static void assert_good_target_reached(const char *self_cert)
{
	struct fake_target t;
	char reason[512];
	int r;

	fake_target_start(&t, "host-b", false);
	r = migrate_to(&t, TARGET_NAME, reason, sizeof(reason));
	if (!t.handshake_done)
		fprintf(stderr, "good target: handshake failed: %s\n", t.tls_error);
	assert_true(t.handshake_done);
	assert_true(fake_saw_client(&t, self_cert));
	assert_int_equal(t.n_frames, 2);
	assert_int_equal(t.bodies[0], VCOUNTER__V1__PEER_MESSAGE__BODY_HELLO);
	assert_int_equal(t.bodies[1], VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE);
	assert_true(r < 0);
	if (!strstr(reason, FAKE_REFUSAL))
		fail_msg("the VMM was told '%s', not the target's refusal", reason);
	fake_target_done(&t);
}

/* The daemon, as a TLS client, refuses this target: the VMM's call fails with error (the
 * connection's own: -EPROTO for TLS, -EPERM for the name) and a sentence that holds reason, the migration's failure is logged with it, the target never reads a byte of
 * application data (TLS 1.3 encrypts the handshake too, so "nothing" is counted after it), and
 * then a good target, peer and controller are served. alert: what the target's OpenSSL says
 * ended its handshake (the daemon's alert), or NULL when the target's side of the handshake
 * completes (a URI name is checked after it). */
static void assert_target_refused(const char *cert_name, bool tls12_only, const char *expected,
				  int error, const char *reason, const char *alert)
{
	struct fake_target t;
	char why[512];
	int r;

	fake_target_start(&t, cert_name, tls12_only);
	r = migrate_to(&t, expected, why, sizeof(why));
	fprintf(stderr, "target %s as %s: VMM told (%d) '%s'; target saw: %s\n",
		cert_name ? cert_name : "(plaintext)", expected, r, why,
		t.handshake_done ? "handshake done" : t.tls_error);
	assert_true(t.accepted);
	assert_int_equal(r, error);
	assert_non_null(strstr(why, "cannot establish the peer link: "));
	if (!strstr(why, reason))
		fail_msg("the VMM was told '%s', which does not say '%s'", why, reason);
	assert_int_equal(t.handshake_done, alert == NULL);
	if (alert && !strstr(t.tls_error, alert))
		fail_msg("the target's handshake ended with '%s', not '%s'", t.tls_error, alert);
	assert_int_equal(t.app_bytes, 0);
	assert_int_equal(t.n_frames, 0);
	assert_log_line("role=source step=failed: ", reason);
	fake_target_done(&t);

	assert_good_target_reached("host-a");
	assert_daemon_serving();
}

/* ---- 1. the daemon as a TLS client: the target it migrates to ---- */

static void test_target_cert_from_other_ca_is_refused(void **state)
{
	source_vm_register(state);
	/* host-b.test's name, but a CA the fleet does not trust. */
	assert_target_refused("other-host-b", false, TARGET_NAME, -EPROTO,
			      "unable to get local issuer certificate", "alert unknown ca");
}

static void test_expired_target_cert_is_refused(void **state)
{
	source_vm_register(state);
	/* Fleet CA, host-b.test, validity ended in 2020. */
	assert_target_refused("expired-b", false, TARGET_NAME, -EPROTO, "certificate has expired",
			      "alert certificate expired");
}

static void test_target_cert_for_another_name_is_refused(void **state)
{
	source_vm_register(state);
	/* Fleet CA and an allow-listed identity, but not the host the migration names. */
	assert_target_refused("uri", false, TARGET_NAME, -EPERM, "does not name " TARGET_NAME,
			      "alert bad certificate");
	/* A DNS name on no allow-list at all. */
	assert_target_refused("evil", false, TARGET_NAME, -EPERM, "does not name " TARGET_NAME,
			      "alert bad certificate");
}

static void test_target_without_the_expected_uri_is_refused_after_the_handshake(void **state)
{
	source_vm_register(state);
	/* A URI cannot go into OpenSSL's host check: it is compared once the handshake is done,
	 * and still no Hello or Prepare may reach the wrong host. */
	assert_target_refused("host-b", false, URI_NAME, -EPERM, "not the expected " URI_NAME,
			      NULL);
}

static void test_tls12_only_target_is_refused(void **state)
{
	source_vm_register(state);
	assert_target_refused("host-b", true, TARGET_NAME, -EPROTO, "protocol version",
			      "unsupported protocol");
}

static void test_plaintext_target_is_refused(void **state)
{
	struct fake_target t;
	char why[512];
	int r;

	source_vm_register(state);
	fake_target_start(&t, NULL, false);
	r = migrate_to(&t, TARGET_NAME, why, sizeof(why));
	fprintf(stderr, "plaintext target: VMM told (%d) '%s'; %zu bytes came\n", r, why,
		t.raw_len);
	assert_true(t.accepted);
	assert_int_equal(r, -EPROTO);
	assert_non_null(strstr(why, "cannot establish the peer link: TLS with peer"));
	/* All the daemon sent: TLS records of the handshake (22) or alerts (21), in the clear
	 * since no key was agreed; no application data (23), no frame. */
	assert_true(t.raw_len >= 5);
	for (size_t at = 0; at + 5 <= t.raw_len;) {
		size_t len = ((size_t)t.raw[at + 3] << 8) | t.raw[at + 4];

		assert_true(t.raw[at] == 22 || t.raw[at] == 21);
		at += 5 + len;
	}
	assert_true(t.raw[0] == 22); /* it began with its ClientHello */
	assert_log_line("role=source step=failed: ", "TLS with peer");
	assert_good_target_reached("host-a");
	assert_daemon_serving();
}

/* A controller's StartMigration to a bad target: the migration exists, then fails with the
 * reason, which GetMigration reports; the target got nothing. */
static void test_controller_sees_why_the_target_was_refused(void **state)
{
	struct vcounter_ctl_options o = { .socket_path = daemon_a.control_socket,
					  .timeout_ms = (unsigned)wait_ms };
	struct vcounter_ctl_migration m;
	struct vcounter_ctl *ctl = NULL;
	struct fake_target t;
	int64_t deadline;

	source_vm_register(state);
	fake_target_start(&t, "expired-b", false);
	assert_int_equal(vcounter_ctl_connect(&o, &ctl), 0);
	assert_int_equal(vcounter_ctl_start_migration(ctl, vm_id, t.address, TARGET_NAME, &m), 0);
	assert_string_equal(m.vm_id, vm_id);
	deadline = harness_now_ms() + wait_ms;
	while (!m.terminal && harness_now_ms() < deadline) {
		char id[VCOUNTER_MIGRATION_ID_SIZE];

		harness_sleep_ms(20);
		memcpy(id, m.migration_id, sizeof(id));
		vcounter_ctl_migration_clear(&m);
		assert_int_equal(vcounter_ctl_get_migration(ctl, id, &m), 0);
	}
	fake_target_join(&t);
	assert_true(m.terminal);
	assert_string_equal(m.step, "failed");
	assert_string_equal(m.role, "source");
	assert_string_equal(m.peer_address, t.address);
	if (!strstr(m.failure_reason, "certificate has expired"))
		fail_msg("the controller was told '%s'", m.failure_reason);
	assert_true(t.accepted);
	assert_false(t.handshake_done);
	assert_int_equal(t.app_bytes, 0);
	vcounter_ctl_migration_clear(&m);
	vcounter_ctl_close(ctl);
	fake_target_done(&t);
	assert_good_target_reached("host-a");
	assert_daemon_serving();
}

/* ---- 2. the control API's TCP listener (TLS 1.3, ALPN h2) ---- */

static void test_controller_with_the_right_certificate_is_served(void **state)
{
	struct tls_client c;
	uint8_t frame_header[9];

	assert_int_equal(controller_status("ctl-operator", NULL), 0);
	/* By hand too: the daemon presents its own certificate and speaks HTTP/2 first thing
	 * (its SETTINGS frame, type 4), so refusals below are told apart by that. */
	assert_true(client_open(&c, control_port, "ctl-operator", TLS1_3_VERSION, "h2"));
	assert_true(tls_client_server_is(&c, certs_dir, "host-a"));
	assert_true(tls_client_write(&c, h2_preface, sizeof(h2_preface) - 1));
	assert_int_equal(tls_client_read(&c, frame_header, sizeof(frame_header)), 1);
	assert_int_equal(frame_header[3], 4);
	tls_client_close(&c);
}

static void test_controller_cert_from_other_ca_is_refused(void **state)
{
	/* ctl-operator.test's name, another CA. */
	assert_controller_refused("ctl-other", TLS1_3_VERSION,
				  "unable to get local issuer certificate");
}

static void test_expired_controller_cert_is_refused(void **state)
{
	assert_controller_refused("ctl-expired", TLS1_3_VERSION, "certificate has expired");
}

static void test_tls12_only_controller_is_refused(void **state)
{
	assert_controller_refused("ctl-operator", TLS1_2_VERSION, "unsupported protocol");
}

static void test_plaintext_controller_is_refused(void **state)
{
	struct pollfd pfd;
	uint8_t buf[512];
	char line[64];
	int port, fd = tls_client_tcp_connect(control_port, wait_ms, &port);
	ssize_t n;
	size_t total = 0;

	/* h2c, as the unix socket takes it: not on the TLS port. */
	assert_int_equal(write(fd, h2_preface, sizeof(h2_preface) - 1),
			 (ssize_t)sizeof(h2_preface) - 1);
	do {
		pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&pfd, 1, wait_ms), 1);
		n = read(fd, buf, sizeof(buf));
		/* At most a TLS alert record (21), never an HTTP/2 frame. */
		if (n > 0 && total == 0)
			assert_int_equal(buf[0], 21);
		total += n > 0 ? (size_t)n : 0;
	} while (n > 0);
	close(fd);
	control_refusal_line(line, sizeof(line), port);
	assert_log_line(line, NULL);
	assert_daemon_serving();
}

/* ---- 3. rotation: new files on disk, SIGHUP ---- */

/* New connections to the peer and control listeners get cert_name's certificate. */
static void assert_listeners_present(const char *cert_name)
{
	struct tls_client c;

	peer_open_link(&c);
	assert_true(tls_client_server_is(&c, certs_dir, cert_name));
	tls_client_close(&c);
	assert_true(client_open(&c, control_port, "ctl-operator", TLS1_3_VERSION, "h2"));
	assert_true(tls_client_server_is(&c, certs_dir, cert_name));
	tls_client_close(&c);
	assert_int_equal(controller_status("ctl-operator", NULL), 0);
}

static void test_rotation_serves_the_new_cert_and_keeps_existing_links(void **state)
{
	struct vcounter_ctl *ctl = NULL;
	struct tls_client linked;

	assert_listeners_present("host-a");
	/* A peer link and a controller connection from before the rotation. */
	peer_open_link(&linked);
	assert_int_equal(controller_status("ctl-operator", &ctl), 0);

	install_credentials("host-a-next", "host-a-next");
	if (!reload())
		fail_msg("the rotation to host-a-next was refused");
	assert_log_line("reload: configuration ", "applied");
	assert_listeners_present("host-a-next");

	/* Both live on, on the credentials they were opened with. */
	peer_ping(&linked, 7);
	assert_true(tls_client_server_is(&linked, certs_dir, "host-a"));
	assert_int_equal(controller_status("ctl-operator", &ctl), 0);
	vcounter_ctl_close(ctl);
	tls_client_close(&linked);
	assert_daemon_serving();
}

/* Rotating to cert_name.pem with key_name.key (cert_len bytes of the PEM; SIZE_MAX: all) is
 * refused, naming the cert or key and why; the credentials in effect stay, and serve. */
static void assert_rotation_refused(const char *cert_name, const char *key_name, size_t cert_len,
				    const char *why, const char *in_effect)
{
	char cert[320];

	install_credentials(cert_name, key_name);
	if (cert_len != SIZE_MAX) {
		harness_cert_path(cert, sizeof(cert), certs_dir, cert_name, "pem");
		copy_file(cert, live_cert, cert_len);
	}
	if (reload()) {
		harness_dump_log(&daemon_a);
		fail_msg("the rotation to %s/%s was applied", cert_name, key_name);
	}
	assert_log_line(why, "; keeping the previous configuration");
	assert_listeners_present(in_effect);
	assert_daemon_serving();
}

static void test_rotation_to_a_broken_pair_is_refused_and_the_old_cert_stays(void **state)
{
	char cert[320];

	/* In effect since the last test. */
	assert_listeners_present("host-a-next");
	/* A key that is not the certificate's. */
	assert_rotation_refused("host-a", "host-a-next", SIZE_MAX, "key does not match certificate",
				"host-a-next");
	/* Another CA's certificate for our name, with its own key. */
	assert_rotation_refused("other-host", "other-host", SIZE_MAX,
				"not valid under the configured CA: unable to get local issuer "
				"certificate",
				"host-a-next");
	/* Our name and the fleet CA, but expired. */
	assert_rotation_refused("expired", "expired", SIZE_MAX,
				"not valid under the configured CA: certificate has expired",
				"host-a-next");
	/* A PEM cut in half, as a copy that ran out of disk leaves it. */
	harness_cert_path(cert, sizeof(cert), certs_dir, "host-a", "pem");
	assert_rotation_refused("host-a", "host-a", file_size(cert) / 2,
				"cannot load certificate chain", "host-a-next");

	/* And the good pair is taken again. */
	install_credentials("host-a", "host-a");
	if (!reload())
		fail_msg("the rotation back to host-a was refused");
	assert_listeners_present("host-a");
}

/* The daemon's client context follows the rotation too (KVM: a migration makes the
 * connection), and a refused rotation leaves it alone. */
static void test_rotation_changes_what_the_daemon_presents_to_targets(void **state)
{
	source_vm_register(state);
	assert_good_target_reached("host-a");
	install_credentials("host-a-next", "host-a-next");
	assert_true(reload());
	assert_good_target_reached("host-a-next");
	install_credentials("expired", "expired");
	assert_false(reload());
	assert_good_target_reached("host-a-next");
	install_credentials("host-a", "host-a");
	assert_true(reload());
	assert_good_target_reached("host-a");
	assert_daemon_serving();
}

/* ---- setup ---- */

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	char ca[320];
	const char *args[] = {
		"--host-name",
		SELF_NAME,
		"--listen",
		"127.0.0.1:0",
		"--ca",
		ca,
		"--cert",
		live_cert,
		"--key",
		live_key,
		"--allow-peer",
		TARGET_NAME,
		"--allow-peer",
		URI_NAME,
		"--control-listen",
		"127.0.0.1:0",
		"--control-port-file",
		control_port_path,
		"--control-operator",
		OPERATOR_NAME,
		NULL,
	};

	/* Writes to a daemon that closed on us must fail, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	if (harness_wrapped())
		wait_ms = 120000;
	if (harness_certs(certs_dir, sizeof(certs_dir)) < 0) {
		fprintf(stderr, "cannot make test certificates (VC_TEST_CERTS unset?)\n");
		return -1;
	}
	/* The daemon's own files live here, where the tests rotate them. */
	snprintf(live_dir, sizeof(live_dir), "%s/vcounterd-tls.XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(live_dir))
		return -1;
	snprintf(live_cert, sizeof(live_cert), "%s/self.pem", live_dir);
	snprintf(live_key, sizeof(live_key), "%s/self.key", live_dir);
	snprintf(control_port_path, sizeof(control_port_path), "%s/control-port", live_dir);
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	install_credentials("host-a", "host-a");
	if (harness_start(&daemon_a, args) < 0)
		return -1;
	/* Written once the control listener is up, which may be after the sockets are. */
	control_port = harness_wait_port(control_port_path, wait_ms);
	if (control_port <= 0) {
		fprintf(stderr, "no control port in %s\n", control_port_path);
		harness_dump_log(&daemon_a);
		harness_stop(&daemon_a); /* cmocka runs no teardown after a failed setup */
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	int r = harness_finish(&daemon_a);

	if (!getenv("VC_KEEP_TEST_DIRS")) {
		harness_remove_tree(live_dir);
		if (!getenv("VC_TEST_CERT_DIR"))
			harness_remove_tree(certs_dir);
	}
	return r;
}

#define KVM_TEST(f) cmocka_unit_test_setup_teardown(f, source_vm_setup, source_vm_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		KVM_TEST(test_target_cert_from_other_ca_is_refused),
		KVM_TEST(test_expired_target_cert_is_refused),
		KVM_TEST(test_target_cert_for_another_name_is_refused),
		KVM_TEST(test_target_without_the_expected_uri_is_refused_after_the_handshake),
		KVM_TEST(test_tls12_only_target_is_refused),
		KVM_TEST(test_plaintext_target_is_refused),
		KVM_TEST(test_controller_sees_why_the_target_was_refused),
		cmocka_unit_test(test_controller_with_the_right_certificate_is_served),
		cmocka_unit_test(test_controller_cert_from_other_ca_is_refused),
		cmocka_unit_test(test_expired_controller_cert_is_refused),
		cmocka_unit_test(test_tls12_only_controller_is_refused),
		cmocka_unit_test(test_plaintext_controller_is_refused),
		cmocka_unit_test(test_rotation_serves_the_new_cert_and_keeps_existing_links),
		cmocka_unit_test(test_rotation_to_a_broken_pair_is_refused_and_the_old_cert_stays),
		KVM_TEST(test_rotation_changes_what_the_daemon_presents_to_targets),
	};

	int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
	int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	/* Half of this test is the daemon as a TLS client, which takes a source VM: without
	 * KVM the whole is a skip (77), said plainly, unless something else failed. */
	if (kvm_fd < 0) {
		fprintf(stderr,
			"SKIP: /dev/kvm unavailable (%s): no source VM, so the daemon as a TLS "
			"client (targets refused, rotation seen by targets) was not tested\n",
			strerror(errno));
		return failed ? failed : 77;
	}
	close(kvm_fd);
	return failed;
}
