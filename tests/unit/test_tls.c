/* test_tls.c - the peer link on a real libevent loop over loopback: mutual TLS 1.3 lets the
 * fleet's allow-listed hosts in, refuses everyone else, and frames arrive whole and in order. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "frame.h"
#include "peer_conn.h"
#include "tls.h"

#define RUN_TIMEOUT_MS 5000
#define MAX_FRAMES     128
#define N_CLIENTS      4

static char certs_dir[256];

/* What one side of a link (or every connection of a listener) saw. */
struct side {
	struct peer_conn *conn;
	int n_established;
	char identity[TLS_PEER_NAME_MAX + 1];
	int n_closed;
	int last_error;
	char reason[1024];
	size_t n_frames;
	size_t frame_len[MAX_FRAMES];
	uint8_t *frame[MAX_FRAMES];
	bool free_on_frame; /* peer_conn_free() from inside on_frame */
};

struct fixture {
	struct event_base *base;
	struct event *watchdog;
	bool timed_out;
	SSL_CTX *server_ctx; /* host-b, allows host-a.test */
	SSL_CTX *client_ctx; /* host-a, allows host-b.test */
	struct peer_listener *listener;
	char addr[64];
	struct side server;
	struct side clients[N_CLIENTS];
};

/* --- callbacks --- */

static void on_established(struct peer_conn *conn, const char *identity, void *userdata)
{
	struct side *s = userdata;

	s->conn = conn;
	s->n_established++;
	snprintf(s->identity, sizeof(s->identity), "%s", identity);
}

static void on_frame(struct peer_conn *conn, const uint8_t *payload, size_t len, void *userdata)
{
	struct side *s = userdata;

	if (s->n_frames < MAX_FRAMES) {
		s->frame[s->n_frames] = malloc(len + 1);
		assert_non_null(s->frame[s->n_frames]);
		if (len > 0)
			memcpy(s->frame[s->n_frames], payload, len);
		s->frame_len[s->n_frames] = len;
	}
	s->n_frames++;
	if (s->free_on_frame) {
		peer_conn_free(conn);
		if (s->conn == conn)
			s->conn = NULL;
	}
}

static void on_close(struct peer_conn *conn, int error, const char *reason, void *userdata)
{
	struct side *s = userdata;

	if (getenv("VC_TEST_VERBOSE"))
		print_message("on_close(%d %s): %s\n", error, strerror(-error), reason);
	s->n_closed++;
	s->last_error = error;
	snprintf(s->reason, sizeof(s->reason), "%s", reason ? reason : "");
	if (s->conn == conn)
		s->conn = NULL;
}

static const struct peer_conn_ops ops = {
	.on_established = on_established,
	.on_frame = on_frame,
	.on_close = on_close,
};

static void side_clear(struct side *s)
{
	peer_conn_free(s->conn);
	for (size_t i = 0; i < s->n_frames && i < MAX_FRAMES; i++)
		free(s->frame[i]);
	memset(s, 0, sizeof(*s));
}

/* --- running the loop --- */

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fixture *f = arg;

	f->timed_out = true;
}

static void watchdog_arm(struct fixture *f, int timeout_ms)
{
	const struct timeval tv = { .tv_sec = timeout_ms / 1000,
				    .tv_usec = (timeout_ms % 1000) * 1000 };

	f->timed_out = false;
	assert_int_equal(evtimer_add(f->watchdog, &tv), 0);
}

/* Run the loop until cond holds; the watchdog fails the test instead of hanging it. */
#define RUN_UNTIL_MS(f, cond, ms)                                          \
	do {                                                               \
		watchdog_arm((f), (ms));                                   \
		while (!(cond) && !(f)->timed_out)                         \
			event_base_loop((f)->base, EVLOOP_ONCE);           \
		evtimer_del((f)->watchdog);                                \
		if (!(cond))                                               \
			print_error("timed out waiting for: %s\n", #cond); \
		assert_true(cond);                                         \
	} while (0)
#define RUN_UNTIL(f, cond) RUN_UNTIL_MS(f, cond, RUN_TIMEOUT_MS)

/* --- certificates and contexts --- */

static void cert_path(char *buf, const char *name, const char *ext)
{
	snprintf(buf, PATH_MAX, "%s/%s.%s", certs_dir, name, ext);
}

static int ctx_new(const char *cert, const char *key, const char *ca, bool is_server,
		   const char *const *allowed, size_t n_allowed, SSL_CTX **ret_ctx, char *err,
		   size_t err_size)
{
	char ca_file[PATH_MAX], cert_file[PATH_MAX], key_file[PATH_MAX];
	const struct tls_config config = {
		.ca_file = ca_file,
		.cert_file = cert_file,
		.key_file = key_file,
		.allowed_peers = allowed,
		.n_allowed_peers = n_allowed,
	};

	cert_path(ca_file, ca, "pem");
	cert_path(cert_file, cert, "pem");
	cert_path(key_file, key, "key");
	return tls_ctx_new(&config, is_server, ret_ctx, err, err_size);
}

static SSL_CTX *make_ctx(const char *host, bool is_server, const char *const *allowed,
			 size_t n_allowed)
{
	SSL_CTX *ctx = NULL;
	char err[512] = "";
	int r;

	r = ctx_new(host, host, "ca", is_server, allowed, n_allowed, &ctx, err, sizeof(err));
	if (r < 0)
		print_error("tls_ctx_new(%s): %s\n", host, err);
	assert_int_equal(r, 0);
	assert_non_null(ctx);
	return ctx;
}

static const char *const allow_a[] = { "host-a.test" };
static const char *const allow_b[] = { "host-b.test" };

/* --- fixture --- */

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int port;

	assert_non_null(f);
	f->base = event_base_new();
	assert_non_null(f->base);
	f->watchdog = evtimer_new(f->base, watchdog_cb, f);
	assert_non_null(f->watchdog);
	f->server_ctx = make_ctx("host-b", true, allow_a, 1);
	f->client_ctx = make_ctx("host-a", false, allow_b, 1);
	assert_int_equal(peer_listener_new(f->base, f->server_ctx, "127.0.0.1:0", &ops, &f->server,
					   &f->listener),
			 0);
	port = peer_listener_port(f->listener);
	assert_true(port > 0 && port < 65536);
	snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", port);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (size_t i = 0; i < N_CLIENTS; i++)
		side_clear(&f->clients[i]);
	side_clear(&f->server);
	peer_listener_free(f->listener);
	SSL_CTX_free(f->server_ctx);
	SSL_CTX_free(f->client_ctx);
	event_free(f->watchdog);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* An extra listener on 127.0.0.1 with its own context and side; its address goes to addr. */
static struct peer_listener *listen_extra(struct fixture *f, SSL_CTX *ctx, struct side *s,
					  char addr[64])
{
	struct peer_listener *l = NULL;

	assert_int_equal(peer_listener_new(f->base, ctx, "127.0.0.1:0", &ops, s, &l), 0);
	snprintf(addr, 64, "127.0.0.1:%d", peer_listener_port(l));
	return l;
}

static void connect_client(struct fixture *f, SSL_CTX *ctx, const char *addr, const char *expected,
			   struct side *s)
{
	assert_int_equal(peer_conn_connect(f->base, ctx, addr, expected, &ops, s, &s->conn), 0);
	assert_non_null(s->conn);
}

static bool frame_equals(const struct side *s, size_t i, const void *data, size_t len)
{
	return i < s->n_frames && s->frame_len[i] == len &&
	       (len == 0 || memcmp(s->frame[i], data, len) == 0);
}

/* After a refusal: a well-behaved host-a client still gets in on the same listener, frames
 * flow both ways, and an orderly close reaches the server as error 0. */
static void assert_good_client_works(struct fixture *f)
{
	struct side *c = &f->clients[N_CLIENTS - 1];
	int est0 = f->server.n_established, closed0 = f->server.n_closed;
	size_t frames0 = f->server.n_frames, cframes0;
	static const uint8_t ping[] = "ping", pong[] = "pong";

	side_clear(c);
	connect_client(f, f->client_ctx, f->addr, "host-b.test", c);
	RUN_UNTIL(f, c->n_established == 1 && f->server.n_established == est0 + 1);
	assert_string_equal(c->identity, "host-b.test");
	assert_string_equal(f->server.identity, "host-a.test");
	cframes0 = c->n_frames;
	assert_int_equal(peer_conn_send(c->conn, ping, sizeof(ping)), 0);
	assert_int_equal(peer_conn_send(f->server.conn, pong, sizeof(pong)), 0);
	RUN_UNTIL(f, f->server.n_frames == frames0 + 1 && c->n_frames == cframes0 + 1);
	assert_true(frame_equals(&f->server, frames0, ping, sizeof(ping)));
	assert_true(frame_equals(c, cframes0, pong, sizeof(pong)));
	c->conn = peer_conn_free(c->conn);
	RUN_UNTIL(f, f->server.n_closed == closed0 + 1);
	assert_int_equal(f->server.last_error, 0);
	assert_int_equal(c->n_closed, 0);
}

/* --- a raw OpenSSL client, stepped by hand between loop iterations --- */

struct raw {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
};

static int raw_tcp_connect(struct fixture *f)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd;

	sin.sin_port = htons((uint16_t)peer_listener_port(f->listener));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	/* Loopback: completes at once, the kernel queues it for accept(). */
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
	return fd;
}

static void raw_open(struct fixture *f, struct raw *raw, const char *host, int max_version)
{
	char cert[PATH_MAX], key[PATH_MAX];

	cert_path(cert, host, "pem");
	cert_path(key, host, "key");
	raw->ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(raw->ctx);
	assert_int_equal(SSL_CTX_set_max_proto_version(raw->ctx, max_version), 1);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(raw->ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(raw->ctx, key, SSL_FILETYPE_PEM), 1);
	SSL_CTX_set_verify(raw->ctx, SSL_VERIFY_NONE, NULL);
	raw->fd = raw_tcp_connect(f);
	raw->ssl = SSL_new(raw->ctx);
	assert_non_null(raw->ssl);
	assert_int_equal(SSL_set_fd(raw->ssl, raw->fd), 1);
}

static void raw_close(struct raw *raw)
{
	SSL_free(raw->ssl);
	SSL_CTX_free(raw->ctx);
	if (raw->fd >= 0)
		close(raw->fd);
	ERR_clear_error();
	memset(raw, 0, sizeof(*raw));
	raw->fd = -1;
}

/* Let the daemon side run, then wait (bounded) for the raw socket to become ready. */
static void pump(struct fixture *f, int fd, short events)
{
	struct pollfd pfd = { .fd = fd, .events = events };

	event_base_loop(f->base, EVLOOP_NONBLOCK);
	(void)poll(&pfd, 1, 10);
}

/* Drive an SSL_connect/SSL_write-style call to completion: 1 done, 0 refused. */
#define RAW_STEP(f, raw, call, ret_ok)                                                       \
	do {                                                                                 \
		watchdog_arm((f), RUN_TIMEOUT_MS);                                           \
		for (;;) {                                                                   \
			int _r_ = (call);                                                    \
			int _e_;                                                             \
			if (_r_ > 0) {                                                       \
				*(ret_ok) = 1;                                               \
				break;                                                       \
			}                                                                    \
			_e_ = SSL_get_error((raw)->ssl, _r_);                                \
			if (_e_ != SSL_ERROR_WANT_READ && _e_ != SSL_ERROR_WANT_WRITE) {     \
				ERR_clear_error();                                           \
				*(ret_ok) = 0;                                               \
				break;                                                       \
			}                                                                    \
			assert_false((f)->timed_out);                                        \
			pump((f), (raw)->fd, _e_ == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT); \
		}                                                                            \
		evtimer_del((f)->watchdog);                                                  \
	} while (0)

static int raw_handshake(struct fixture *f, struct raw *raw)
{
	int ok;

	RAW_STEP(f, raw, SSL_connect(raw->ssl), &ok);
	return ok;
}

static void raw_write(struct fixture *f, struct raw *raw, const void *data, size_t len)
{
	int ok;

	RAW_STEP(f, raw, SSL_write(raw->ssl, data, (int)len), &ok);
	assert_int_equal(ok, 1);
}

/* A raw host-a client that the server has accepted as established. */
static void raw_established(struct fixture *f, struct raw *raw)
{
	int est0 = f->server.n_established;

	raw_open(f, raw, "host-a", TLS1_3_VERSION);
	assert_int_equal(raw_handshake(f, raw), 1);
	RUN_UNTIL(f, f->server.n_established == est0 + 1);
	assert_string_equal(f->server.identity, "host-a.test");
}

/* --- tests: contexts --- */

/* tls_ctx_check_own_certificate on a context made of cert_name's files, as a TLS server or
 * client; err gets its sentence. */
static int check_own(const char *cert_name, bool is_server, char *err, size_t err_size)
{
	char ca_file[PATH_MAX], cert_file[PATH_MAX], key_file[PATH_MAX];
	const struct tls_config config = {
		.ca_file = ca_file,
		.cert_file = cert_file,
		.key_file = key_file,
		.allowed_peers = allow_b,
		.n_allowed_peers = 1,
	};
	SSL_CTX *ctx = NULL;
	int r;

	cert_path(ca_file, "ca", "pem");
	cert_path(cert_file, cert_name, "pem");
	cert_path(key_file, cert_name, "key");
	/* tls_ctx_new itself takes any certificate whose key matches. */
	assert_int_equal(tls_ctx_new(&config, is_server, &ctx, err, err_size), 0);
	err[0] = '\0';
	r = tls_ctx_check_own_certificate(&config, ctx, is_server, err, err_size);
	SSL_CTX_free(ctx);
	return r;
}

static void test_own_certificate_must_chain_to_the_ca_and_be_valid_now(void **state)
{
	char err[512];

	(void)state;
	/* host-a and a controller's leaf carry serverAuth and clientAuth (gen-certs.sh). */
	for (int is_server = 0; is_server <= 1; is_server++) {
		assert_int_equal(check_own("host-a", is_server, err, sizeof(err)), 0);
		assert_string_equal(err, "");
		assert_int_equal(check_own("ctl-operator", is_server, err, sizeof(err)), 0);

		assert_int_equal(check_own("other-host", is_server, err, sizeof(err)),
				 -EKEYREJECTED);
		assert_non_null(strstr(err, "other-host.pem"));
		assert_non_null(strstr(err, "unable to get local issuer certificate"));

		assert_int_equal(check_own("expired", is_server, err, sizeof(err)), -EKEYEXPIRED);
		assert_non_null(strstr(err, "expired.pem"));
		assert_non_null(strstr(err, "certificate has expired"));
	}
}

static void test_ctx_new_reports_missing_files_and_bad_keys(void **state)
{
	char err[512], garbage[PATH_MAX];
	SSL_CTX *ctx = NULL;
	SSL *ssl;
	FILE *fp;
	char name[64];

	(void)state;
	assert_int_equal(ctx_new("host-a", "host-a", "no-such-ca", false, allow_b, 1, &ctx, err,
				 sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "no-such-ca.pem"));
	assert_int_equal(
		ctx_new("no-such-cert", "host-a", "ca", false, allow_b, 1, &ctx, err, sizeof(err)),
		-ENOENT);
	assert_non_null(strstr(err, "no-such-cert.pem"));
	assert_int_equal(
		ctx_new("host-a", "no-such-key", "ca", false, allow_b, 1, &ctx, err, sizeof(err)),
		-ENOENT);
	assert_non_null(strstr(err, "no-such-key.key"));

	/* host-b's key does not belong to host-a's certificate. */
	assert_int_equal(
		ctx_new("host-a", "host-b", "ca", true, allow_b, 1, &ctx, err, sizeof(err)),
		-EKEYREJECTED);
	assert_non_null(strstr(err, "host-b.key"));

	/* Not PEM at all. */
	cert_path(garbage, "garbage", "pem");
	fp = fopen(garbage, "w");
	assert_non_null(fp);
	fputs("this is not a certificate\n", fp);
	fclose(fp);
	assert_int_equal(
		ctx_new("garbage", "host-a", "ca", false, allow_b, 1, &ctx, err, sizeof(err)),
		-EINVAL);
	assert_non_null(strstr(err, "garbage.pem"));
	assert_int_equal(
		ctx_new("host-a", "host-a", "garbage", false, allow_b, 1, &ctx, err, sizeof(err)),
		-EINVAL);
	unlink(garbage);

	/* Allow-list entries must be real names. */
	{
		const char *const with_null[] = { "host-b.test", NULL };
		const char *const with_empty[] = { "" };

		assert_int_equal(ctx_new("host-a", "host-a", "ca", false, with_null, 2, &ctx, err,
					 sizeof(err)),
				 -EINVAL);
		assert_int_equal(ctx_new("host-a", "host-a", "ca", false, with_empty, 1, &ctx, err,
					 sizeof(err)),
				 -EINVAL);
		assert_int_equal(
			ctx_new("host-a", "host-a", "ca", false, NULL, 1, &ctx, err, sizeof(err)),
			-EINVAL);
		assert_int_equal(ctx_new("host-a", "host-a", "ca", false, allow_b,
					 TLS_MAX_ALLOWED_PEERS + 1, &ctx, err, sizeof(err)),
				 -EINVAL);
	}
	assert_null(ctx);

	/* A good one: TLS 1.3 only, peer certificate required; no identity before a handshake. */
	ctx = make_ctx("host-a", false, allow_b, 1);
	assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
	assert_int_equal(SSL_CTX_get_max_proto_version(ctx), TLS1_3_VERSION);
	assert_int_equal(SSL_CTX_get_verify_mode(ctx),
			 SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
	ssl = SSL_new(ctx);
	assert_non_null(ssl);
	assert_int_equal(tls_peer_identity(ssl, name, sizeof(name)), -ENOTCONN);
	assert_false(tls_peer_has_name(ssl, "host-b.test"));
	SSL_free(ssl);
	SSL_CTX_free(ctx);
}

/* --- tests: links --- */

static void test_mutual_tls_established_both_ways_with_identities(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];

	connect_client(f, f->client_ctx, f->addr, "host-b.test", c);
	/* Before the handshake: nothing to send on, no identity. */
	assert_int_equal(peer_conn_send(c->conn, (const uint8_t *)"x", 1), -ENOTCONN);
	assert_string_equal(peer_conn_identity(c->conn), "");

	RUN_UNTIL(f, c->n_established == 1 && f->server.n_established == 1);
	assert_string_equal(c->identity, "host-b.test");
	assert_string_equal(peer_conn_identity(c->conn), "host-b.test");
	assert_string_equal(f->server.identity, "host-a.test");
	assert_string_equal(peer_conn_identity(f->server.conn), "host-a.test");
	assert_int_equal(c->n_closed, 0);
	assert_int_equal(f->server.n_closed, 0);
}

static void test_connect_accepts_names_and_bracketed_ipv6(void **state)
{
	struct fixture *f = *state;
	struct peer_listener *l6 = NULL;
	struct side s6 = { 0 };
	char addr[64];
	int r;

	snprintf(addr, sizeof(addr), "localhost:%d", peer_listener_port(f->listener));
	connect_client(f, f->client_ctx, addr, "host-b.test", &f->clients[0]);
	RUN_UNTIL(f, f->clients[0].n_established == 1 && f->server.n_established == 1);

	r = peer_listener_new(f->base, f->server_ctx, "[::1]:0", &ops, &s6, &l6);
	if (r < 0) {
		print_message("no IPv6 loopback (%s): [::1] part skipped\n", strerror(-r));
		return;
	}
	snprintf(addr, sizeof(addr), "[::1]:%d", peer_listener_port(l6));
	connect_client(f, f->client_ctx, addr, "host-b.test", &f->clients[1]);
	RUN_UNTIL(f, f->clients[1].n_established == 1 && s6.n_established == 1);
	assert_string_equal(s6.identity, "host-a.test");
	side_clear(&f->clients[1]);
	RUN_UNTIL(f, s6.n_closed == 1);
	side_clear(&s6);
	peer_listener_free(l6);
}

static void test_connect_refuses_malformed_addresses(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		"127.0.0.1",	 "127.0.0.1:", ":7777",	    "127.0.0.1:0", "127.0.0.1:65536",
		"127.0.0.1:77x", "::1:7777",   "[::1]7777", "[::1:7777",   "[127.0.0.1]:7777",
	};
	struct peer_conn *conn = NULL;
	struct peer_listener *l = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = peer_conn_connect(f->base, f->client_ctx, bad[i], "host-b.test", &ops,
					  &f->clients[0], &conn);
		if (r != -EINVAL)
			print_error("%s -> %d\n", bad[i], r);
		assert_int_equal(r, -EINVAL);
	}
	assert_null(conn);
	assert_int_equal(
		peer_listener_new(f->base, f->server_ctx, "127.0.0.1", &ops, &f->server, &l),
		-EINVAL);
	assert_null(l);
}

static void test_connect_to_closed_port_reports_econnrefused(void **state)
{
	struct fixture *f = *state;
	struct peer_listener *l = NULL;
	struct side *c = &f->clients[0];
	char addr[64];

	/* A port that was just free'd has nobody listening. */
	assert_int_equal(
		peer_listener_new(f->base, f->server_ctx, "127.0.0.1:0", &ops, &f->server, &l), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", peer_listener_port(l));
	peer_listener_free(l);

	connect_client(f, f->client_ctx, addr, "host-b.test", c);
	/* Never from inside peer_conn_connect: the caller has its pointer first. */
	assert_int_equal(c->n_closed, 0);
	RUN_UNTIL(f, c->n_closed == 1);
	assert_int_equal(c->last_error, -ECONNREFUSED);
	assert_non_null(strstr(c->reason, addr));
	assert_int_equal(c->n_established, 0);
	assert_null(c->conn);
}

static void test_frames_flow_both_directions_in_order(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	static uint8_t big[VC_MAX_FRAME_BYTES];
	static const uint8_t one[] = "first", two[] = "second";

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + 3);
	connect_client(f, f->client_ctx, f->addr, "host-b.test", c);
	RUN_UNTIL(f, c->n_established == 1 && f->server.n_established == 1);

	/* Two frames queued back to back leave in one write and are split on arrival; an empty
	 * frame and a maximal one are frames like any other. */
	assert_int_equal(peer_conn_send(c->conn, one, sizeof(one)), 0);
	assert_int_equal(peer_conn_send(c->conn, two, sizeof(two)), 0);
	assert_int_equal(peer_conn_send(c->conn, NULL, 0), 0);
	assert_int_equal(peer_conn_send(c->conn, big, sizeof(big)), 0);
	assert_int_equal(peer_conn_send(c->conn, big, sizeof(big) + 1), -EMSGSIZE);
	assert_int_equal(peer_conn_send(f->server.conn, two, sizeof(two)), 0);
	assert_int_equal(peer_conn_send(f->server.conn, big, 1000), 0);
	assert_int_equal(peer_conn_send(f->server.conn, one, sizeof(one)), 0);

	RUN_UNTIL(f, f->server.n_frames == 4 && c->n_frames == 3);
	assert_true(frame_equals(&f->server, 0, one, sizeof(one)));
	assert_true(frame_equals(&f->server, 1, two, sizeof(two)));
	assert_true(frame_equals(&f->server, 2, NULL, 0));
	assert_true(frame_equals(&f->server, 3, big, sizeof(big)));
	assert_true(frame_equals(c, 0, two, sizeof(two)));
	assert_true(frame_equals(c, 1, big, 1000));
	assert_true(frame_equals(c, 2, one, sizeof(one)));
	assert_int_equal(f->server.n_closed + c->n_closed, 0);
}

static void test_frame_split_over_many_writes_is_reassembled(void **state)
{
	struct fixture *f = *state;
	struct raw raw = { .fd = -1 };
	uint8_t wire[2 * FRAME_HEADER_BYTES + 300 + 3];
	uint8_t payload[300];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(255 - i);
	assert_int_equal(frame_header_encode(sizeof(payload), wire), 0);
	memcpy(wire + FRAME_HEADER_BYTES, payload, sizeof(payload));
	n = FRAME_HEADER_BYTES + sizeof(payload);
	assert_int_equal(frame_header_encode(3, wire + n), 0);
	memcpy(wire + n + FRAME_HEADER_BYTES, "abc", 3);
	n += FRAME_HEADER_BYTES + 3;
	assert_int_equal(n, sizeof(wire));

	raw_established(f, &raw);
	/* One TLS record per byte, the loop running in between: the server sees headers and
	 * payloads in pieces and must deliver each frame exactly when its last byte is in. */
	for (size_t i = 0; i < n; i++) {
		size_t want = i < FRAME_HEADER_BYTES + sizeof(payload) ? 0 : 1;

		assert_int_equal(f->server.n_frames, want);
		raw_write(f, &raw, wire + i, 1);
		pump(f, raw.fd, POLLIN);
		if (i == FRAME_HEADER_BYTES + sizeof(payload) - 1)
			RUN_UNTIL(f, f->server.n_frames == 1);
	}
	RUN_UNTIL(f, f->server.n_frames == 2);
	assert_true(frame_equals(&f->server, 0, payload, sizeof(payload)));
	assert_true(frame_equals(&f->server, 1, "abc", 3));
	assert_int_equal(f->server.n_closed, 0);

	/* An orderly TLS close (close_notify) is error 0. */
	assert_int_equal(SSL_shutdown(raw.ssl) >= 0, 1);
	raw_close(&raw);
	RUN_UNTIL(f, f->server.n_closed == 1);
	assert_int_equal(f->server.last_error, 0);
}

static void test_oversize_length_prefix_closes_with_emsgsize(void **state)
{
	struct fixture *f = *state;
	struct raw raw = { .fd = -1 };
	uint8_t header[FRAME_HEADER_BYTES];
	uint32_t len = VC_MAX_FRAME_BYTES + 1;

	header[0] = (uint8_t)(len >> 24);
	header[1] = (uint8_t)(len >> 16);
	header[2] = (uint8_t)(len >> 8);
	header[3] = (uint8_t)len;
	raw_established(f, &raw);
	/* Refused on the header alone, before any payload is waited for or buffered. */
	raw_write(f, &raw, header, sizeof(header));
	RUN_UNTIL(f, f->server.n_closed == 1);
	assert_int_equal(f->server.last_error, -EMSGSIZE);
	assert_int_equal(f->server.n_frames, 0);
	raw_close(&raw);
	assert_good_client_works(f);
}

static void test_close_without_close_notify_reports_econnreset(void **state)
{
	struct fixture *f = *state;
	struct raw raw = { .fd = -1 };

	raw_established(f, &raw);
	/* TCP FIN without TLS close_notify: the peer vanished (crash, kill), not an orderly end. */
	close(raw.fd);
	raw.fd = -1;
	RUN_UNTIL(f, f->server.n_closed == 1);
	assert_int_equal(f->server.last_error, -ECONNRESET);
	assert_non_null(strstr(f->server.reason, "close_notify"));
	raw_close(&raw);
}

static void test_peer_conn_free_flushes_queued_frames_and_closes_orderly(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	static const uint8_t last[] = "abort: migration 7 cancelled";

	connect_client(f, f->client_ctx, f->addr, "host-b.test", c);
	RUN_UNTIL(f, c->n_established == 1 && f->server.n_established == 1);
	assert_int_equal(peer_conn_send(c->conn, last, sizeof(last)), 0);
	assert_int_equal(peer_conn_send(c->conn, last, 10), 0);
	c->conn = peer_conn_free(c->conn);
	RUN_UNTIL(f, f->server.n_closed == 1);
	assert_int_equal(f->server.n_frames, 2);
	assert_true(frame_equals(&f->server, 0, last, sizeof(last)));
	assert_true(frame_equals(&f->server, 1, last, 10));
	assert_int_equal(f->server.last_error, 0);
	assert_int_equal(c->n_closed, 0); /* peer_conn_free: no on_close */
}

static void test_free_inside_on_frame_stops_delivery(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];

	connect_client(f, f->client_ctx, f->addr, "host-b.test", c);
	RUN_UNTIL(f, c->n_established == 1 && f->server.n_established == 1);
	f->server.free_on_frame = true;
	/* Three frames in one read: the server frees its conn in the first on_frame. */
	assert_int_equal(peer_conn_send(c->conn, (const uint8_t *)"1", 1), 0);
	assert_int_equal(peer_conn_send(c->conn, (const uint8_t *)"2", 1), 0);
	assert_int_equal(peer_conn_send(c->conn, (const uint8_t *)"3", 1), 0);
	RUN_UNTIL(f, c->n_closed == 1);
	assert_int_equal(c->last_error, 0);
	assert_int_equal(f->server.n_frames, 1);
	assert_int_equal(f->server.n_closed, 0);
	assert_null(f->server.conn);
}

static void test_send_over_pending_cap_fails_with_enobufs(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	static uint8_t payload[VC_MAX_FRAME_BYTES];
	const size_t frame = FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES;
	const size_t n_full = PEER_CONN_MAX_PENDING_BYTES / frame;
	const size_t rest = PEER_CONN_MAX_PENDING_BYTES - n_full * frame - FRAME_HEADER_BYTES;

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i ^ (i >> 8));
	connect_client(f, f->client_ctx, f->addr, "host-b.test", c);
	RUN_UNTIL(f, c->n_established == 1 && f->server.n_established == 1);

	/* Without the loop running nothing leaves the output buffer: fill it to exactly the cap. */
	for (size_t i = 0; i < n_full; i++)
		assert_int_equal(peer_conn_send(c->conn, payload, sizeof(payload)), 0);
	assert_int_equal(peer_conn_send(c->conn, payload, rest + 1), -ENOBUFS);
	assert_int_equal(peer_conn_send(c->conn, payload, rest), 0);
	assert_int_equal(peer_conn_send(c->conn, NULL, 0), -ENOBUFS);

	/* The link is still fine: everything queued arrives whole. */
	RUN_UNTIL_MS(f, f->server.n_frames == n_full + 1, 20000);
	for (size_t i = 0; i < n_full && i < MAX_FRAMES; i++)
		assert_true(frame_equals(&f->server, i, payload, sizeof(payload)));
	assert_true(frame_equals(&f->server, n_full, payload, rest));
	assert_int_equal(peer_conn_send(c->conn, NULL, 0), 0);
	assert_int_equal(f->server.n_closed + c->n_closed, 0);
}

/* --- tests: refusals --- */

static void test_client_cert_from_other_ca_is_refused(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	SSL_CTX *ctx = make_ctx("other-host", false, allow_b, 1);

	/* Same SAN as host-a, signed by a CA the fleet does not trust. */
	connect_client(f, ctx, f->addr, "host-b.test", c);
	RUN_UNTIL(f, f->server.n_closed == 1 && c->n_closed == 1);
	assert_int_equal(f->server.last_error, -EPROTO);
	assert_non_null(strstr(f->server.reason, "certificate verification failed"));
	assert_int_equal(f->server.n_established, 0);
	/* TLS 1.3: the client may have finished before the server judged it; either way it ends
	 * in an error, not an orderly close. */
	assert_true(c->last_error < 0);
	SSL_CTX_free(ctx);
	assert_good_client_works(f);
}

static void test_server_cert_from_other_ca_is_refused(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	struct side bad_server = { 0 };
	struct peer_listener *bad = NULL;
	const char *const allow_ab[] = { "host-a.test", "host-b.test" };
	SSL_CTX *bad_ctx = make_ctx("other-host", true, allow_a, 1);
	SSL_CTX *ctx = make_ctx("host-a", false, allow_ab, 2);
	char addr[64];

	bad = listen_extra(f, bad_ctx, &bad_server, addr);
	connect_client(f, ctx, addr, "host-a.test", c);
	RUN_UNTIL(f, c->n_closed == 1 && bad_server.n_closed == 1);
	assert_int_equal(c->last_error, -EPROTO);
	assert_non_null(strstr(c->reason, "certificate verification failed"));
	assert_int_equal(c->n_established, 0);
	assert_int_equal(bad_server.n_established, 0);
	assert_true(bad_server.last_error < 0);

	/* The same client context gets into a good server. */
	side_clear(c);
	connect_client(f, ctx, f->addr, "host-b.test", c);
	RUN_UNTIL(f, c->n_established == 1 && f->server.n_established == 1);
	side_clear(c);
	peer_listener_free(bad);
	SSL_CTX_free(bad_ctx);
	SSL_CTX_free(ctx);
	assert_good_client_works(f);
}

static void test_san_not_on_allow_list_is_refused(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	SSL_CTX *evil_client = make_ctx("evil", false, allow_b, 1);
	SSL_CTX *evil_server = make_ctx("evil", true, allow_a, 1);
	struct peer_listener *l = NULL;
	struct side s = { 0 };
	char addr[64];

	/* A fleet-signed certificate whose name the server does not allow. */
	connect_client(f, evil_client, f->addr, "host-b.test", c);
	RUN_UNTIL(f, f->server.n_closed == 1 && c->n_closed == 1);
	assert_int_equal(f->server.last_error, -EPERM);
	assert_non_null(strstr(f->server.reason, "allow-list"));
	assert_int_equal(f->server.n_established, 0);
	assert_true(c->last_error < 0);
	side_clear(c);
	SSL_CTX_free(evil_client);
	assert_good_client_works(f);

	/* The other way round: the client expects host-evil.test and gets it, but its own
	 * allow-list does not have that name. */
	l = listen_extra(f, evil_server, &s, addr);
	connect_client(f, f->client_ctx, addr, "host-evil.test", c);
	RUN_UNTIL(f, c->n_closed == 1 && s.n_closed == 1);
	assert_int_equal(c->last_error, -EPERM);
	assert_int_equal(c->n_established, 0);
	assert_int_equal(s.n_established, 0);
	peer_listener_free(l);
	SSL_CTX_free(evil_server);
	assert_good_client_works(f);
}

static void test_allow_list_match_is_exact_and_case_insensitive(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *allowed;
		bool admitted;
	} cases[] = {
		{ "HOST-A.Test", true },   /* DNS names are case-insensitive */
		{ "host-a", false },	   /* no prefix match */
		{ "host-a.test.", false }, /* no normalisation */
		{ "*.test", false },	   /* no wildcards */
		{ "a.test", false },	   /* no suffix match */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *const allowed[] = { cases[i].allowed };
		SSL_CTX *server_ctx = make_ctx("host-b", true, allowed, 1);
		struct peer_listener *l = NULL;
		struct side s = { 0 }, *c = &f->clients[0];
		char addr[64];

		l = listen_extra(f, server_ctx, &s, addr);
		side_clear(c);
		connect_client(f, f->client_ctx, addr, "host-b.test", c);
		if (cases[i].admitted) {
			RUN_UNTIL(f, s.n_established == 1);
			assert_string_equal(s.identity, "host-a.test");
		} else {
			RUN_UNTIL(f, s.n_closed == 1);
			assert_int_equal(s.last_error, -EPERM);
			assert_int_equal(s.n_established, 0);
		}
		side_clear(c);
		side_clear(&s);
		peer_listener_free(l);
		SSL_CTX_free(server_ctx);
	}

	/* An empty allow-list lets nobody in. */
	{
		SSL_CTX *server_ctx = make_ctx("host-b", true, NULL, 0);
		struct peer_listener *l = NULL;
		struct side s = { 0 }, *c = &f->clients[0];
		char addr[64];

		l = listen_extra(f, server_ctx, &s, addr);
		connect_client(f, f->client_ctx, addr, "host-b.test", c);
		RUN_UNTIL(f, s.n_closed == 1);
		assert_int_equal(s.last_error, -EPERM);
		side_clear(c);
		side_clear(&s);
		peer_listener_free(l);
		SSL_CTX_free(server_ctx);
	}
	assert_good_client_works(f);
}

static void test_uri_san_identity_is_accepted(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	const char *const allowed[] = { "host-a.test", "spiffe://fleet.test/host-u" };
	SSL_CTX *server_ctx = make_ctx("host-b", true, allowed, 2);
	SSL_CTX *uri_ctx = make_ctx("uri", false, allow_b, 1);
	struct peer_listener *l = NULL;
	struct side s = { 0 };
	char addr[64];

	l = listen_extra(f, server_ctx, &s, addr);
	connect_client(f, uri_ctx, addr, "host-b.test", c);
	RUN_UNTIL(f, s.n_established == 1 && c->n_established == 1);
	assert_string_equal(s.identity, "spiffe://fleet.test/host-u");
	side_clear(c);
	side_clear(&s);
	peer_listener_free(l);
	SSL_CTX_free(server_ctx);

	/* URIs compare byte for byte. */
	{
		const char *const upper[] = { "SPIFFE://fleet.test/HOST-U" };

		server_ctx = make_ctx("host-b", true, upper, 1);
		l = listen_extra(f, server_ctx, &s, addr);
		connect_client(f, uri_ctx, addr, "host-b.test", c);
		RUN_UNTIL(f, s.n_closed == 1);
		assert_int_equal(s.last_error, -EPERM);
		assert_int_equal(s.n_established, 0);
		side_clear(c);
		side_clear(&s);
		peer_listener_free(l);
		SSL_CTX_free(server_ctx);
	}
	SSL_CTX_free(uri_ctx);
	assert_good_client_works(f);
}

static void test_client_expecting_other_name_is_refused(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	const char *const allowed[] = { "host-b.test", "host-c.test" };
	SSL_CTX *ctx = make_ctx("host-a", false, allowed, 2);

	/* host-b is allow-listed, but this migration wants host-c. */
	connect_client(f, ctx, f->addr, "host-c.test", c);
	RUN_UNTIL(f, c->n_closed == 1 && f->server.n_closed == 1);
	assert_int_equal(c->last_error, -EPERM);
	assert_non_null(strstr(c->reason, "host-c.test"));
	assert_int_equal(c->n_established, 0);
	assert_int_equal(f->server.n_established, 0);
	assert_true(f->server.last_error < 0);
	SSL_CTX_free(ctx);
	assert_good_client_works(f);
}

static void test_plaintext_client_is_refused_and_listener_keeps_serving(void **state)
{
	struct fixture *f = *state;
	static const char http[] = "GET / HTTP/1.0\r\nHost: host-b.test\r\n\r\n";
	int fd = raw_tcp_connect(f);

	assert_int_equal(write(fd, http, strlen(http)), (ssize_t)strlen(http));
	RUN_UNTIL(f, f->server.n_closed == 1);
	assert_int_equal(f->server.last_error, -EPROTO);
	assert_int_equal(f->server.n_established, 0);
	close(fd);
	assert_good_client_works(f);
}

static void test_tls12_only_client_is_refused(void **state)
{
	struct fixture *f = *state;
	struct raw raw = { .fd = -1 };

	/* Valid fleet certificate, but it speaks at most TLS 1.2. */
	raw_open(f, &raw, "host-a", TLS1_2_VERSION);
	assert_int_equal(raw_handshake(f, &raw), 0);
	RUN_UNTIL(f, f->server.n_closed == 1);
	assert_int_equal(f->server.last_error, -EPROTO);
	assert_int_equal(f->server.n_established, 0);
	raw_close(&raw);
	assert_good_client_works(f);
}

static void test_expired_cert_is_refused(void **state)
{
	struct fixture *f = *state;
	struct side *c = &f->clients[0];
	SSL_CTX *ctx = make_ctx("expired", false, allow_b, 1);

	/* Fleet CA, allow-listed SAN (host-a.test), validity ended in 2020. */
	connect_client(f, ctx, f->addr, "host-b.test", c);
	RUN_UNTIL(f, f->server.n_closed == 1 && c->n_closed == 1);
	assert_int_equal(f->server.last_error, -EPROTO);
	assert_non_null(strstr(f->server.reason, "expired"));
	assert_int_equal(f->server.n_established, 0);
	SSL_CTX_free(ctx);
	assert_good_client_works(f);
}

static void test_silent_client_times_out_without_blocking_others(void **state)
{
	struct fixture *f = *state;
	int fd = raw_tcp_connect(f);

	/* While a connection sits in its handshake sending nothing, others get through. */
	assert_good_client_works(f);
	assert_int_equal(f->server.last_error, 0);
	RUN_UNTIL_MS(f, f->server.n_closed == 2, PEER_CONN_HANDSHAKE_TIMEOUT_MS + 5000);
	assert_int_equal(f->server.last_error, -ETIMEDOUT);
	close(fd);
}

static void test_listener_free_drops_pending_handshakes(void **state)
{
	struct fixture *f = *state;
	struct pollfd pfd;
	char byte;
	int fd = raw_tcp_connect(f);

	/* One loop pass accepts it (accept callbacks are not deferred). */
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	f->listener = peer_listener_free(f->listener);
	/* Accepted and then closed by us: EOF. (Had it never been accepted, closing the
	 * listening socket would reset it instead.) libevent closes the socket of a freed
	 * bufferevent from the loop, so keep it running. */
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
	watchdog_arm(f, RUN_TIMEOUT_MS);
	while (!f->timed_out && poll(&pfd, 1, 0) == 0)
		pump(f, fd, POLLIN);
	evtimer_del(f->watchdog);
	assert_int_equal(poll(&pfd, 1, 0), 1);
	assert_int_equal(read(fd, &byte, 1), 0);
	assert_int_equal(f->server.n_closed, 0);
	close(fd);
}

/* --- certificates on disk --- */

static int remove_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char p[PATH_MAX];

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		unlink(p);
	}
	closedir(d);
	return rmdir(path) < 0 ? -errno : 0;
}

static int group_setup(void **state)
{
	const char *script = getenv("VC_TEST_CERTS");
	char cmd[2 * PATH_MAX];

	(void)state;
	if (!script) {
		print_error("VC_TEST_CERTS (path of tests/gen-certs.sh) is not set\n");
		return -1;
	}
	snprintf(certs_dir, sizeof(certs_dir), "%s/vc-test-tls.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(certs_dir)) {
		print_error("mkdtemp: %s\n", strerror(errno));
		return -1;
	}
	snprintf(cmd, sizeof(cmd), "'%s' '%s'", script, certs_dir);
	if (system(cmd) != 0) {
		print_error("%s failed\n", cmd);
		remove_dir(certs_dir);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	return remove_dir(certs_dir);
}

#define T(test) cmocka_unit_test_setup_teardown(test, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctx_new_reports_missing_files_and_bad_keys),
		cmocka_unit_test(test_own_certificate_must_chain_to_the_ca_and_be_valid_now),
		T(test_mutual_tls_established_both_ways_with_identities),
		T(test_connect_accepts_names_and_bracketed_ipv6),
		T(test_connect_refuses_malformed_addresses),
		T(test_connect_to_closed_port_reports_econnrefused),
		T(test_frames_flow_both_directions_in_order),
		T(test_frame_split_over_many_writes_is_reassembled),
		T(test_oversize_length_prefix_closes_with_emsgsize),
		T(test_close_without_close_notify_reports_econnreset),
		T(test_peer_conn_free_flushes_queued_frames_and_closes_orderly),
		T(test_free_inside_on_frame_stops_delivery),
		T(test_send_over_pending_cap_fails_with_enobufs),
		T(test_client_cert_from_other_ca_is_refused),
		T(test_server_cert_from_other_ca_is_refused),
		T(test_san_not_on_allow_list_is_refused),
		T(test_allow_list_match_is_exact_and_case_insensitive),
		T(test_uri_san_identity_is_accepted),
		T(test_client_expecting_other_name_is_refused),
		T(test_plaintext_client_is_refused_and_listener_keeps_serving),
		T(test_tls12_only_client_is_refused),
		T(test_expired_cert_is_refused),
		T(test_silent_client_times_out_without_blocking_others),
		T(test_listener_free_drops_pending_handshakes),
	};

	/* An SSL_write to a peer that has gone raises SIGPIPE; the daemon ignores it too. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
