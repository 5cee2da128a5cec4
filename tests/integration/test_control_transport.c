/* test_control_transport.c - the Control API's gRPC transport
 * (daemon/grpc.c) of a real vcounterd, spoken to in raw HTTP/2 by an
 * nghttp2 client session over a blocking unix socket or TLS connection:
 * statuses the transport answers itself, malformed input, deadlines,
 * roles, a watcher that does not read, and that the daemon keeps serving
 * with no fd left behind. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
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
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "daemon_harness.h"
#include "grpc_wire.h"
#include "h2_client.h"
#include "vcounter.pb-c.h"
#include "vcounter/vcounter.h"
#include "unix_fd.h"

#define CONTROL		   "/vcounter.v1.Control/"
#define IO_TIMEOUT_MS	   H2_IO_TIMEOUT_MS
/* Limits of daemon/grpc.h, restated: the test pins them. */
#define MAX_MESSAGE_BYTES  (1u << 20)
#define MAX_CONNECTIONS	   256
#define MAX_STREAMS	   128 /* GRPC_MAX_STREAMS, concurrent per connection */
#define IDLE_NO_ROLE_S	   10  /* daemon/grpc.h GRPC_IDLE_TIMEOUT_NO_ROLE_S */
#define NOBODY		   65534
#define STATUS_OK	   0
#define STATUS_INVALID_ARG 3
#define STATUS_DEADLINE	   4
#define STATUS_PERMISSION  7
#define STATUS_EXHAUSTED   8
#define STATUS_UNIMPL	   12
#define STATUS_INTERNAL	   13

static struct daemon_proc daemon_main;
static int baseline_fds;
/* a second daemon of one test; stopped by the teardown if the test fails */
static struct daemon_proc daemon_other;

/* A gRPC request body: one message with flag and announced length as given. */
static size_t grpc_body(uint8_t *out, uint8_t flag, uint32_t announced, const void *msg,
			size_t msg_len)
{
	grpc_wire_prefix(out, announced);
	out[0] = flag;
	if (msg_len)
		memcpy(out + GRPC_WIRE_PREFIX_BYTES, msg, msg_len);
	return GRPC_WIRE_PREFIX_BYTES + msg_len;
}

/* One unary call on a fresh connection; the status, or -1 if none came. */
static int unary_status(const char *path, const uint8_t *body, size_t body_len,
			const char *const *extra, char *ret_message, size_t message_size)
{
	struct h2 h;
	struct h2_stream *s;
	int status;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	s = h2_submit(&h, path, body, body_len, extra);
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	status = s->grpc_status;
	if (ret_message)
		snprintf(ret_message, message_size, "%s", s->grpc_message);
	h2_close(&h);
	return status;
}

/* The request for an empty message: 00 00000000. */
static const uint8_t empty_request[GRPC_WIRE_PREFIX_BYTES];

/* ListVms on a fresh connection answers OK with a ListVmsReply. */
static Vcounter__V1__ListVmsReply *list_vms(const char *socket_path)
{
	Vcounter__V1__ListVmsReply *reply;
	struct h2_stream *s;
	struct h2 h;
	uint32_t len;

	assert_int_equal(h2_open_unix(&h, socket_path), 0);
	s = h2_submit(&h, CONTROL "ListVms", empty_request, sizeof(empty_request), NULL);
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	assert_int_equal(s->error_code, NGHTTP2_NO_ERROR);
	assert_int_equal(s->http_status, 200);
	assert_int_equal(s->grpc_status, STATUS_OK);
	/* HEADERS, then DATA, then trailers */
	assert_int_equal(s->n_header_blocks, 2);
	assert_true(s->data_len >= GRPC_WIRE_PREFIX_BYTES);
	assert_int_equal(s->data[0], 0);
	len = (uint32_t)s->data[1] << 24 | (uint32_t)s->data[2] << 16 | (uint32_t)s->data[3] << 8 |
	      s->data[4];
	assert_int_equal(len, s->data_len - GRPC_WIRE_PREFIX_BYTES);
	reply = vcounter__v1__list_vms_reply__unpack(NULL, len, s->data + GRPC_WIRE_PREFIX_BYTES);
	assert_non_null(reply);
	h2_close(&h);
	return reply;
}

static Vcounter__V1__HostStatus *host_status(void)
{
	Vcounter__V1__HostStatus *hs;
	struct h2_stream *s;
	struct h2 h;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	s = h2_submit(&h, CONTROL "GetHostStatus", empty_request, sizeof(empty_request), NULL);
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	assert_int_equal(s->grpc_status, STATUS_OK);
	assert_true(s->data_len >= GRPC_WIRE_PREFIX_BYTES);
	hs = vcounter__v1__host_status__unpack(NULL, s->data_len - GRPC_WIRE_PREFIX_BYTES,
					       s->data + GRPC_WIRE_PREFIX_BYTES);
	assert_non_null(hs);
	h2_close(&h);
	return hs;
}

/* Watchers the daemon holds (HostStatus.watchers), once it settles to want
 * (the transport ends calls from its loop, a moment after the event). */
static void assert_watchers_settle(uint32_t want)
{
	uint32_t watchers = UINT32_MAX;

	for (int i = 0; i < 200 && watchers != want; i++) {
		Vcounter__V1__HostStatus *hs = host_status();

		watchers = hs->watchers;
		vcounter__v1__host_status__free_unpacked(hs, NULL);
		if (watchers != want)
			usleep(10000);
	}
	assert_int_equal(watchers, want);
}

static void assert_fds_settle(const struct daemon_proc *d, int want)
{
	int n = -1;

	for (int i = 0; i < 200 && n != want; i++) {
		n = harness_fd_count(d);
		if (n != want)
			usleep(10000);
	}
	assert_int_equal(n, want);
}

/* The daemon logs a refusal after the client has seen it. */
static void assert_log_eventually(const struct daemon_proc *d, const char *needle)
{
	bool found = false;

	for (int i = 0; i < 500 && !found; i++) {
		found = harness_log_contains(d, needle);
		if (!found)
			usleep(10000);
	}
	if (!found)
		fail_msg("no \"%s\" in the daemon's log", needle);
}

static void assert_daemon_serving(void)
{
	Vcounter__V1__ListVmsReply *reply = list_vms(daemon_main.control_socket);

	vcounter__v1__list_vms_reply__free_unpacked(reply, NULL);
	assert_true(harness_alive(&daemon_main));
}

/* harness_start waits for the VMM socket; the control socket comes next. */
static int wait_control_socket(const struct daemon_proc *d)
{
	for (int i = 0; i < 1000; i++) {
		int fd = unix_fd_connect(d->control_socket, SOCK_STREAM);

		if (fd >= 0) {
			close(fd);
			return 0;
		}
		usleep(5000);
	}
	return -ETIMEDOUT;
}

/* ---- unary calls ---- */

static void test_list_vms_answers_ok_with_a_reply(void **state)
{
	Vcounter__V1__ListVmsReply *reply = list_vms(daemon_main.control_socket);

	assert_int_equal(reply->n_vms, 0);
	vcounter__v1__list_vms_reply__free_unpacked(reply, NULL);
}

static void test_unknown_method_is_unimplemented(void **state)
{
	char message[512];

	assert_int_equal(unary_status(CONTROL "NoSuchMethod", empty_request, sizeof(empty_request),
				      NULL, message, sizeof(message)),
			 STATUS_UNIMPL);
	assert_string_equal(message, "unknown method " CONTROL "NoSuchMethod");
	assert_int_equal(unary_status("/other.Service/ListVms", empty_request,
				      sizeof(empty_request), NULL, NULL, 0),
			 STATUS_UNIMPL);
}

static void test_wrong_content_type_is_http_415(void **state)
{
	const char *const extra[] = { "content-type", "application/json", NULL };
	struct h2_stream *s;
	struct h2 h;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	s = h2_submit(&h, CONTROL "ListVms", empty_request, sizeof(empty_request), extra);
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	assert_int_equal(s->http_status, 415);
	assert_int_equal(s->grpc_status, 2); /* UNKNOWN, HTTP 415's mapping */
	assert_non_null(strstr(s->grpc_message, "application/json"));
	h2_close(&h);
}

static void test_request_over_maximum_is_resource_exhausted(void **state)
{
	uint8_t body[GRPC_WIRE_PREFIX_BYTES];
	char message[512];

	/* The prefix alone decides: no body follows, and none is awaited. */
	grpc_body(body, 0, MAX_MESSAGE_BYTES + 1, NULL, 0);
	assert_int_equal(
		unary_status(CONTROL "ListVms", body, sizeof(body), NULL, message, sizeof(message)),
		STATUS_EXHAUSTED);
	assert_non_null(strstr(message, "1048577 bytes"));
	assert_daemon_serving();
}

/* A ListVmsRequest of exactly len bytes (field 1000, unknown, pads it),
 * with its gRPC prefix; malloc'd. */
static uint8_t *padded_list_vms_request(uint32_t len, size_t *ret_size)
{
	uint8_t *body = malloc(GRPC_WIRE_PREFIX_BYTES + len);
	size_t n = GRPC_WIRE_PREFIX_BYTES;
	uint32_t pad = len - 2 - 3; /* tag, a 3-byte varint length */

	assert_non_null(body);
	assert_true(pad >= 16384 && pad < 2097152);
	grpc_body(body, 0, len, NULL, 0);
	body[n++] = 0xc2; /* field 1000, length-delimited: tag 8002 */
	body[n++] = 0x3e;
	body[n++] = (uint8_t)(0x80 | (pad & 0x7f));
	body[n++] = (uint8_t)(0x80 | ((pad >> 7) & 0x7f));
	body[n++] = (uint8_t)(pad >> 14);
	memset(body + n, 0, pad);
	*ret_size = n + pad;
	assert_int_equal(*ret_size, GRPC_WIRE_PREFIX_BYTES + len);
	return body;
}

/* vcounterd(8) LIMITS: a request message of exactly GRPC_MAX_MESSAGE_BYTES
 * is served, one byte more (sent whole, not just announced) is not. */
static void test_request_of_exactly_the_maximum_is_served_one_more_is_not(void **state)
{
	char message[512];
	uint8_t *body;
	size_t size;

	body = padded_list_vms_request(MAX_MESSAGE_BYTES, &size);
	assert_int_equal(
		unary_status(CONTROL "ListVms", body, size, NULL, message, sizeof(message)),
		STATUS_OK);
	free(body);
	body = padded_list_vms_request(MAX_MESSAGE_BYTES + 1, &size);
	assert_int_equal(
		unary_status(CONTROL "ListVms", body, size, NULL, message, sizeof(message)),
		STATUS_EXHAUSTED);
	assert_string_equal(message,
			    "request message of 1048577 bytes is over the limit of 1048576");
	free(body);
	assert_daemon_serving();
}

/* GRPC_MAX_STREAMS (SETTINGS_MAX_CONCURRENT_STREAMS) streams at once on one
 * connection: all of them open (watches stay open), the next is refused
 * with REFUSED_STREAM, the others stay, and the connection goes on. The
 * client sends them all before it reads the daemon's SETTINGS, so nghttp2
 * on this side does not hold the extra one back. */
static void test_streams_over_the_maximum_are_refused(void **state)
{
	struct h2_stream *s[MAX_STREAMS + 1];
	int64_t deadline;
	size_t open = 0;
	struct h2 h;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	for (int i = 0; i <= MAX_STREAMS; i++) {
		s[i] = h2_submit(&h, CONTROL "WatchEvents", empty_request, sizeof(empty_request),
				 NULL);
		assert_non_null(s[i]);
	}
	deadline = harness_now_ms() + IO_TIMEOUT_MS;
	while (!s[MAX_STREAMS]->closed && harness_now_ms() < deadline)
		assert_true(h2_pump(&h, (int)(deadline - harness_now_ms())) >= 0);
	assert_true(s[MAX_STREAMS]->closed);
	assert_int_equal(s[MAX_STREAMS]->error_code, NGHTTP2_REFUSED_STREAM);
	assert_watchers_settle(MAX_STREAMS);
	for (int i = 0; i < MAX_STREAMS; i++)
		if (!s[i]->closed && s[i]->http_status == 200)
			open++;
	assert_int_equal(open, MAX_STREAMS);
	h2_close(&h);
	assert_watchers_settle(0);
	assert_daemon_serving();
}

static void test_compressed_flag_without_encoding_is_internal(void **state)
{
	uint8_t body[16];
	size_t len = grpc_body(body, 1, 3, "abc", 3);
	char message[512];

	assert_int_equal(unary_status(CONTROL "ListVms", body, len, NULL, message, sizeof(message)),
			 STATUS_INTERNAL);
	assert_non_null(strstr(message, "compressed"));
}

static void test_compressed_message_with_gzip_encoding_is_unimplemented(void **state)
{
	const char *const extra[] = { "grpc-encoding", "gzip", NULL };
	uint8_t body[16];
	size_t len = grpc_body(body, 1, 3, "abc", 3);
	char message[512];

	assert_int_equal(
		unary_status(CONTROL "ListVms", body, len, extra, message, sizeof(message)),
		STATUS_UNIMPL);
	assert_non_null(strstr(message, "gzip"));
	/* The header alone, on an uncompressed message, is fine. */
	assert_int_equal(unary_status(CONTROL "ListVms", empty_request, sizeof(empty_request),
				      extra, NULL, 0),
			 STATUS_OK);
}

static void test_flag_byte_2_is_internal(void **state)
{
	uint8_t body[16];
	size_t len = grpc_body(body, 2, 0, NULL, 0);

	assert_int_equal(unary_status(CONTROL "ListVms", body, len, NULL, NULL, 0),
			 STATUS_INTERNAL);
}

static void test_garbage_protobuf_is_invalid_argument(void **state)
{
	uint8_t body[16];
	size_t len = grpc_body(body, 0, 3, "\xff\xff\xff", 3);
	char message[512];

	assert_int_equal(unary_status(CONTROL "ListVms", body, len, NULL, message, sizeof(message)),
			 STATUS_INVALID_ARG);
	assert_string_equal(message, "request does not parse as vcounter.v1.ListVmsRequest");
}

static void test_unary_needs_exactly_one_message(void **state)
{
	uint8_t two[2 * GRPC_WIRE_PREFIX_BYTES] = { 0 };
	uint8_t cut[GRPC_WIRE_PREFIX_BYTES + 1];
	char message[512];

	/* none: HEADERS with END_STREAM */
	assert_int_equal(unary_status(CONTROL "ListVms", NULL, 0, NULL, message, sizeof(message)),
			 STATUS_INVALID_ARG);
	assert_non_null(strstr(message, "no request message"));
	/* two */
	assert_int_equal(
		unary_status(CONTROL "ListVms", two, sizeof(two), NULL, message, sizeof(message)),
		STATUS_INVALID_ARG);
	assert_non_null(strstr(message, "more than one"));
	/* cut short: announces 2 bytes, carries 1 */
	grpc_body(cut, 0, 2, "\x08", 1);
	assert_int_equal(
		unary_status(CONTROL "ListVms", cut, sizeof(cut), NULL, message, sizeof(message)),
		STATUS_INVALID_ARG);
	assert_non_null(strstr(message, "cut short"));
}

static void test_malformed_grpc_timeout_is_invalid_argument(void **state)
{
	const char *const extra[] = { "grpc-timeout", "123456789S", NULL };

	assert_int_equal(unary_status(CONTROL "ListVms", empty_request, sizeof(empty_request),
				      extra, NULL, 0),
			 STATUS_INVALID_ARG);
}

/* Several calls on one connection, answered each on its own stream. */
static void test_calls_share_a_connection(void **state)
{
	struct h2_stream *s[4];
	struct h2 h;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	s[0] = h2_submit(&h, CONTROL "ListVms", empty_request, sizeof(empty_request), NULL);
	s[1] = h2_submit(&h, CONTROL "Nope", empty_request, sizeof(empty_request), NULL);
	s[2] = h2_submit(&h, CONTROL "GetHostStatus", empty_request, sizeof(empty_request), NULL);
	s[3] = h2_submit(&h, CONTROL "ListVms", (const uint8_t *)"\0\0\0\0\3\xff\xff\xff", 8, NULL);
	for (int i = 0; i < 4; i++) {
		assert_non_null(s[i]);
		assert_true(h2_wait_closed(&h, s[i]));
	}
	assert_int_equal(s[0]->grpc_status, STATUS_OK);
	assert_int_equal(s[1]->grpc_status, STATUS_UNIMPL);
	assert_int_equal(s[2]->grpc_status, STATUS_OK);
	assert_int_equal(s[3]->grpc_status, STATUS_INVALID_ARG);
	assert_false(h.goaway);
	h2_close(&h);
}

/* ---- the connection ---- */

/* Bytes that are not the HTTP/2 preface: the daemon sends its SETTINGS and a
 * GOAWAY, closes, and serves the next connection. */
static void test_malformed_preface_closes_that_connection_only(void **state)
{
	static const char garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02\x03garbage";
	uint8_t buf[4096];
	size_t have = 0;
	bool goaway = false, closed = false;
	int64_t deadline = harness_now_ms() + IO_TIMEOUT_MS;
	struct h2 other;
	struct h2_stream *s;
	int fd;

	/* A connection opened before keeps working through it. */
	assert_int_equal(h2_open_unix(&other, daemon_main.control_socket), 0);

	fd = unix_fd_connect(daemon_main.control_socket, SOCK_STREAM);
	assert_true(fd >= 0);
	assert_int_equal(send(fd, garbage, sizeof(garbage) - 1, MSG_NOSIGNAL),
			 (ssize_t)sizeof(garbage) - 1);
	while (!closed && harness_now_ms() < deadline) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, (int)(deadline - harness_now_ms())) != 1)
			break;
		n = recv(fd, buf + have, sizeof(buf) - have, 0);
		if (n <= 0)
			closed = true;
		else
			have += (size_t)n;
	}
	close(fd);
	assert_true(closed);
	/* frames: 9-byte headers, type at offset 3 (RFC 9113 section 4.1) */
	for (size_t off = 0; off + 9 <= have;) {
		size_t len = (size_t)buf[off] << 16 | (size_t)buf[off + 1] << 8 | buf[off + 2];

		if (buf[off + 3] == NGHTTP2_GOAWAY)
			goaway = true;
		off += 9 + len;
	}
	assert_true(goaway);

	s = h2_submit(&other, CONTROL "ListVms", empty_request, sizeof(empty_request), NULL);
	assert_non_null(s);
	assert_true(h2_wait_closed(&other, s));
	assert_int_equal(s->grpc_status, STATUS_OK);
	h2_close(&other);
	assert_daemon_serving();
}

/* HTTP/2 that breaks the protocol after a good preface (a DATA frame on
 * stream 0): GOAWAY and close. */
static void test_protocol_error_after_preface_gets_goaway(void **state)
{
	static const uint8_t data_on_stream_0[] = { 0, 0, 1, NGHTTP2_DATA, 0, 0, 0, 0, 0, 'x' };
	struct h2 h;
	int64_t deadline = harness_now_ms() + IO_TIMEOUT_MS;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	assert_int_equal(h2_write_all(&h, data_on_stream_0, sizeof(data_on_stream_0)), 0);
	while (!h.eof && harness_now_ms() < deadline)
		(void)h2_pump(&h, (int)(deadline - harness_now_ms()));
	assert_true(h.goaway);
	assert_true(h.eof);
	h2_close(&h);
	assert_daemon_serving();
}

/* "Rapid reset" (CVE-2023-44487): open a stream and reset it at once, over
 * and over, so that the server does work for calls that never run. Past the
 * burst the daemon ends that connection with GOAWAY; others are served. */
static void test_rapid_reset_flood_closes_that_connection_only(void **state)
{
	nghttp2_nv nva[] = {
#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, 0 }
		NV(":method", "POST"),
		NV(":scheme", "http"),
		NV(":path", CONTROL "WatchEvents"),
		NV(":authority", "localhost"),
		NV("te", "trailers"),
		NV("content-type", "application/grpc"),
#undef NV
	};
	int64_t deadline = harness_now_ms() + IO_TIMEOUT_MS;
	struct h2 h;
	int sent = 0;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	for (; sent < 2000 && !h.goaway && !h.eof; sent++) {
		int32_t id = nghttp2_submit_headers(h.session, NGHTTP2_FLAG_NONE, -1, NULL, nva,
						    sizeof(nva) / sizeof(nva[0]), NULL);

		assert_true(id > 0);
		/* HEADERS out first: a stream reset before it is sent is
		 * never sent at all. */
		if (h2_flush(&h) < 0)
			break;
		assert_int_equal(
			nghttp2_submit_rst_stream(h.session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL),
			0);
		if (h2_flush(&h) < 0 || h2_pump(&h, 0) < 0)
			break;
	}
	while (!h.eof && harness_now_ms() < deadline)
		(void)h2_pump(&h, (int)(deadline - harness_now_ms()));
	fprintf(stderr, "note: connection ended after %d opened-and-reset streams\n", sent);
	assert_true(h.goaway);
	assert_true(h.eof);
	/* Past the burst of 200, long before the 2000 this would send. */
	assert_true(sent > 150 && sent < 1000);
	h2_close(&h);
	assert_watchers_settle(0);
	assert_daemon_serving();
}

/* The daemon's first bytes on a connection: its SETTINGS frame (9-byte
 * header, type 4). Returns the frame type, or -1 if the connection ended
 * (or nothing came within IO_TIMEOUT_MS). */
static int first_frame_type(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint8_t header[9];
	size_t have = 0;

	while (have < sizeof(header)) {
		ssize_t n;

		if (poll(&pfd, 1, IO_TIMEOUT_MS) != 1)
			return -1;
		n = recv(fd, header + have, sizeof(header) - have, 0);
		if (n <= 0)
			return -1;
		have += (size_t)n;
	}
	return header[3];
}

/* This test's connections: closed by its teardown too, so that a failure
 * does not leave the daemon at its limit for every later test. */
static int max_conn_fds[MAX_CONNECTIONS];
static int n_max_conn_fds;

static int close_max_conn_fds(void **state)
{
	while (n_max_conn_fds > 0)
		close(max_conn_fds[--n_max_conn_fds]);
	return 0;
}

/* GRPC_MAX_CONNECTIONS at once: one more is closed at accept, with a
 * warning; a connection that goes frees its slot. */
static void test_connections_over_the_maximum_are_refused(void **state)
{
	struct h2_stream *s = NULL;
	struct h2 h = { .fd = -1 };
	int extra;

	for (int i = 0; i < MAX_CONNECTIONS; i++) {
		int fd = unix_fd_connect(daemon_main.control_socket, SOCK_STREAM);

		assert_true(fd >= 0);
		max_conn_fds[n_max_conn_fds++] = fd;
		assert_int_equal(first_frame_type(fd), NGHTTP2_SETTINGS);
	}
	extra = unix_fd_connect(daemon_main.control_socket, SOCK_STREAM);
	assert_true(extra >= 0); /* the kernel's backlog took it */
	assert_int_equal(first_frame_type(extra), -1);
	close(extra);
	assert_log_eventually(&daemon_main, "256 connections open (max 256)");

	close(max_conn_fds[0]);
	max_conn_fds[0] = max_conn_fds[--n_max_conn_fds];
	/* The daemon sees that close in its own time; until then a new
	 * connection is still refused at accept (its preface write may fail
	 * with EPIPE): try again. */
	for (int tries = 0; tries < 100; tries++) {
		if (h2_open_unix(&h, daemon_main.control_socket) == 0) {
			s = h2_submit(&h, CONTROL "ListVms", empty_request, sizeof(empty_request),
				      NULL);
			if (s && h2_wait_closed(&h, s))
				break;
		}
		h2_close(&h);
		s = NULL;
		usleep(10000);
	}
	assert_non_null(s);
	assert_int_equal(s->grpc_status, STATUS_OK);
	h2_close(&h);
	close_max_conn_fds(NULL);
	assert_fds_settle(&daemon_main, baseline_fds);
}

/* ---- server streaming ---- */

static void test_watch_headers_come_before_any_event(void **state)
{
	struct h2_stream *s;
	int64_t deadline = harness_now_ms() + IO_TIMEOUT_MS;
	struct h2 h;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	s = h2_submit(&h, CONTROL "WatchEvents", empty_request, sizeof(empty_request), NULL);
	assert_non_null(s);
	while (s->n_header_blocks == 0 && harness_now_ms() < deadline)
		assert_true(h2_pump(&h, (int)(deadline - harness_now_ms())) >= 0);
	assert_int_equal(s->n_header_blocks, 1);
	assert_int_equal(s->http_status, 200);
	assert_int_equal(s->grpc_status, -1); /* not trailers-only */
	assert_false(s->closed);
	assert_int_equal(s->data_len, 0);
	assert_watchers_settle(1);
	/* Closing the connection cancels the watch: the handler's cancel
	 * callback dropped its watcher. */
	h2_close(&h);
	assert_watchers_settle(0);
}

static void test_watch_with_grpc_timeout_ends_deadline_exceeded(void **state)
{
	const char *const extra[] = { "grpc-timeout", "1m", NULL };
	struct h2_stream *s;
	struct h2 h;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	s = h2_submit(&h, CONTROL "WatchEvents", empty_request, sizeof(empty_request), extra);
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	assert_int_equal(s->error_code, NGHTTP2_NO_ERROR);
	assert_int_equal(s->grpc_status, STATUS_DEADLINE);
	assert_non_null(strstr(s->grpc_message, "1m"));
	h2_close(&h);
	assert_watchers_settle(0);
}

/* A client resetting its watch: the daemon's watcher goes. */
static void test_client_reset_cancels_the_watch(void **state)
{
	struct h2_stream *s;
	int64_t deadline = harness_now_ms() + IO_TIMEOUT_MS;
	struct h2 h;

	assert_int_equal(h2_open_unix(&h, daemon_main.control_socket), 0);
	s = h2_submit(&h, CONTROL "WatchEvents", empty_request, sizeof(empty_request), NULL);
	assert_non_null(s);
	while (s->n_header_blocks == 0 && harness_now_ms() < deadline)
		assert_true(h2_pump(&h, (int)(deadline - harness_now_ms())) >= 0);
	assert_watchers_settle(1);
	assert_int_equal(
		nghttp2_submit_rst_stream(h.session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL), 0);
	assert_int_equal(h2_flush(&h), 0);
	assert_watchers_settle(0);
	/* the connection itself goes on */
	s = h2_submit(&h, CONTROL "ListVms", empty_request, sizeof(empty_request), NULL);
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	assert_int_equal(s->grpc_status, STATUS_OK);
	h2_close(&h);
}

static int open_kvm_or_skip(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr,
			"SKIP: /dev/kvm unavailable (%s): no VM to register, so no events "
			"to fill a watcher's queue\n",
			strerror(errno));
		skip();
	}
	return fd;
}

/* A watcher that announces a stream window of 0 and never reads: its events
 * pile up in the daemon's queue for that stream until GRPC_MAX_STREAM_QUEUE,
 * then the stream is reset (CANCEL) and the watcher dropped. Meanwhile
 * another connection's ListVms is answered: nobody waits for it. */
static void test_watcher_that_does_not_read_is_dropped(void **state)
{
	int kvm = open_kvm_or_skip();
	struct vcounter_vm_info info;
	Vcounter__V1__ListVmsReply *reply;
	struct vcounter *vc;
	struct h2_stream *s;
	struct h2 watcher;
	int vm_fd, vcpu_fd;
	unsigned cycles = 0;
	bool dropped = false;
	int64_t deadline;

	vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(vm_fd >= 0);
	vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
	assert_true(vcpu_fd >= 0);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);

	assert_int_equal(h2_open_unix(&watcher, daemon_main.control_socket), 0);
	/* window 0 for every stream: the daemon may send no DATA at all */
	{
		nghttp2_settings_entry zero = { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0 };

		assert_int_equal(
			nghttp2_submit_settings(watcher.session, NGHTTP2_FLAG_NONE, &zero, 1), 0);
	}
	s = h2_submit(&watcher, CONTROL "WatchEvents", empty_request, sizeof(empty_request), NULL);
	assert_non_null(s);
	deadline = harness_now_ms() + IO_TIMEOUT_MS;
	while (s->n_header_blocks == 0 && harness_now_ms() < deadline)
		assert_true(h2_pump(&watcher, (int)(deadline - harness_now_ms())) >= 0);
	assert_int_equal(s->http_status, 200);
	assert_watchers_settle(1);

	/* From here the watcher reads nothing. Each cycle is two events of a
	 * few hundred bytes; the queue bound is 256 KiB. */
	deadline = harness_now_ms() + 120000;
	while (!dropped && harness_now_ms() < deadline) {
		assert_int_equal(vcounter_register_vm(vc, "vm-events", VCOUNTER_ROLE_TARGET, vm_fd,
						      &vcpu_fd, 1, &info),
				 0);
		assert_int_equal(vcounter_unregister_vm(vc, "vm-events"), 0);
		cycles++;
		if (cycles == 200) {
			/* clogged, not yet dropped: others are served */
			reply = list_vms(daemon_main.control_socket);
			vcounter__v1__list_vms_reply__free_unpacked(reply, NULL);
		}
		if (cycles % 100 == 0)
			dropped = harness_log_contains(&daemon_main, "client does not read");
	}
	assert_true(dropped);
	assert_log_eventually(&daemon_main, "watcher uid=0");
	assert_watchers_settle(0);
	reply = list_vms(daemon_main.control_socket);
	vcounter__v1__list_vms_reply__free_unpacked(reply, NULL);

	/* Reading now, the watcher finds its stream reset with CANCEL. */
	assert_true(h2_wait_closed(&watcher, s));
	assert_int_equal(s->error_code, NGHTTP2_CANCEL);
	assert_int_equal(s->data_len, 0);
	h2_close(&watcher);

	vcounter_close(vc);
	close(vcpu_fd);
	close(vm_fd);
	close(kvm);
	fprintf(stderr, "note: watcher dropped after %u register/unregister cycles\n", cycles);
}

/* GRPC_MAX_CONN_QUEUE: five watches on one connection that reads nothing
 * each stay under GRPC_MAX_STREAM_QUEUE (256 KiB) while together they pass
 * 1 MiB, so the connection is what goes ("client does not read, N bytes
 * waiting on the connection"), all five watchers with it, and others are
 * served. */
static void test_connection_that_does_not_read_is_closed(void **state)
{
	int kvm = open_kvm_or_skip();
	struct vcounter_vm_info info;
	Vcounter__V1__ListVmsReply *reply;
	struct h2_stream *s[5];
	struct vcounter *vc;
	struct h2 watcher;
	int vm_fd, vcpu_fd;
	unsigned cycles = 0;
	bool closed = false;
	int64_t deadline;
	int stream_resets = harness_file_count(daemon_main.log_path, "waiting; stream reset");

	vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(vm_fd >= 0);
	vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
	assert_true(vcpu_fd >= 0);
	assert_int_equal(vcounter_connect(daemon_main.vmm_socket, &vc), 0);

	assert_int_equal(h2_open_unix(&watcher, daemon_main.control_socket), 0);
	{
		nghttp2_settings_entry zero = { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0 };

		assert_int_equal(
			nghttp2_submit_settings(watcher.session, NGHTTP2_FLAG_NONE, &zero, 1), 0);
	}
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
		s[i] = h2_submit(&watcher, CONTROL "WatchEvents", empty_request,
				 sizeof(empty_request), NULL);
		assert_non_null(s[i]);
	}
	deadline = harness_now_ms() + IO_TIMEOUT_MS;
	while (s[4]->n_header_blocks == 0 && harness_now_ms() < deadline)
		assert_true(h2_pump(&watcher, (int)(deadline - harness_now_ms())) >= 0);
	assert_watchers_settle(5);

	deadline = harness_now_ms() + 120000;
	while (!closed && harness_now_ms() < deadline) {
		assert_int_equal(vcounter_register_vm(vc, "vm-events", VCOUNTER_ROLE_TARGET, vm_fd,
						      &vcpu_fd, 1, &info),
				 0);
		assert_int_equal(vcounter_unregister_vm(vc, "vm-events"), 0);
		cycles++;
		if (cycles % 50 == 0)
			closed = harness_log_contains(&daemon_main, "waiting on the connection");
	}
	assert_true(closed);
	/* The connection, not one stream: no stream was over its own bound. */
	assert_int_equal(harness_file_count(daemon_main.log_path, "waiting; stream reset"),
			 stream_resets);
	assert_watchers_settle(0);
	reply = list_vms(daemon_main.control_socket);
	vcounter__v1__list_vms_reply__free_unpacked(reply, NULL);
	h2_close(&watcher);

	vcounter_close(vc);
	close(vcpu_fd);
	close(vm_fd);
	close(kvm);
	fprintf(stderr, "note: connection closed after %u register/unregister cycles\n", cycles);
}

/* ---- roles on the unix socket ---- */

/* In a child that became uid/gid NOBODY before connecting (SO_PEERCRED is
 * taken at connect()): the status of a call, as the exit status. */
static int status_as_nobody(const char *socket_path, const char *path)
{
	int wstatus;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct h2_stream *s;
		struct h2 h;

		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
			_exit(100);
		if (h2_open_unix(&h, socket_path) < 0)
			_exit(101);
		s = h2_submit(&h, path, empty_request, sizeof(empty_request), NULL);
		if (!s || !h2_wait_closed(&h, s) || s->grpc_status < 0)
			_exit(102);
		_exit(s->grpc_status);
	}
	assert_int_equal(waitpid(pid, &wstatus, 0), pid);
	assert_true(WIFEXITED(wstatus));
	return WEXITSTATUS(wstatus);
}

/* Let NOBODY reach the socket (the daemon makes it 0660 in a 0700 dir). */
static void open_socket_to_all(const struct daemon_proc *d)
{
	assert_int_equal(chmod(d->dir, 0711), 0);
	assert_int_equal(chmod(d->control_socket, 0666), 0);
}

static void test_caller_on_no_list_is_permission_denied(void **state)
{
	open_socket_to_all(&daemon_main);
	assert_int_equal(status_as_nobody(daemon_main.control_socket, CONTROL "ListVms"),
			 STATUS_PERMISSION);
	assert_int_equal(status_as_nobody(daemon_main.control_socket, CONTROL "StartMigration"),
			 STATUS_PERMISSION);
	/* root and the daemon's euid are operators: PERMISSION_DENIED is not
	 * everyone's answer */
	assert_daemon_serving();
	assert_log_eventually(&daemon_main, "needs the reader role; caller uid=65534");
}

/* A caller with no role holds a connection slot for nothing: once refused
 * and idle it gets GOAWAY after GRPC_IDLE_TIMEOUT_NO_ROLE_S. The child
 * exits 0 when that came in [timeout - 2, timeout + 5] s. */
static void test_idle_connection_without_a_role_is_closed(void **state)
{
	int wstatus;
	pid_t pid;

	open_socket_to_all(&daemon_main);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct h2_stream *s;
		int64_t start, deadline;
		struct h2 h;

		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
			_exit(100);
		if (h2_open_unix(&h, daemon_main.control_socket) < 0)
			_exit(101);
		s = h2_submit(&h, CONTROL "ListVms", empty_request, sizeof(empty_request), NULL);
		if (!s || !h2_wait_closed(&h, s) || s->grpc_status != STATUS_PERMISSION)
			_exit(102);
		start = harness_now_ms();
		deadline = start + (IDLE_NO_ROLE_S + 5) * 1000;
		while (!h.eof && harness_now_ms() < deadline)
			(void)h2_pump(&h, (int)(deadline - harness_now_ms()));
		if (!h.goaway || !h.eof)
			_exit(103);
		if (harness_now_ms() - start < (IDLE_NO_ROLE_S - 2) * 1000)
			_exit(104);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &wstatus, 0), pid);
	assert_true(WIFEXITED(wstatus));
	assert_int_equal(WEXITSTATUS(wstatus), 0);
	assert_daemon_serving();
}

static void test_reader_uid_may_read_but_not_operate(void **state)
{
	const char *const args[] = { "--control-reader-uid", "65534", NULL };
	struct daemon_proc *d = &daemon_other;

	assert_int_equal(harness_start(d, args), 0);
	assert_int_equal(wait_control_socket(d), 0);
	open_socket_to_all(d);
	assert_int_equal(status_as_nobody(d->control_socket, CONTROL "ListVms"), STATUS_OK);
	assert_int_equal(status_as_nobody(d->control_socket, CONTROL "StartMigration"),
			 STATUS_PERMISSION);
	assert_log_eventually(d, "needs the operator role; caller uid=65534");
	assert_int_equal(harness_stop(d), 0);
	d->pid = 0;
}

/* ---- TCP + TLS ---- */

static char certs_dir[256];
static bool certs_made_here;

static void remove_certs(void)
{
	if (!certs_made_here || !certs_dir[0])
		return;
	/* the whole directory is ours (mkdtemp in harness_certs) */
	harness_remove_tree(certs_dir);
	certs_dir[0] = '\0';
}

struct tls_daemon {
	struct daemon_proc *d;
	int port;
};

static void tls_daemon_start(struct tls_daemon *t)
{
	char ca[320], cert[320], key[320], port_file[320];
	const char *args[] = {
		"--control-listen",
		"127.0.0.1:0",
		"--control-port-file",
		port_file,
		"--host-name",
		"host-b.test",
		"--ca",
		ca,
		"--cert",
		cert,
		"--key",
		key,
		"--control-operator",
		"ctl-operator.test",
		"--control-reader",
		"ctl-reader.test",
		NULL,
	};

	certs_made_here = !getenv("VC_TEST_CERT_DIR");
	if (!certs_dir[0] && harness_certs(certs_dir, sizeof(certs_dir)) < 0)
		fail_msg("cannot make test certificates (VC_TEST_CERTS unset?)");
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs_dir, "host-b", "pem");
	harness_cert_path(key, sizeof(key), certs_dir, "host-b", "key");
	/* the daemon's dir is made by harness_start: the port file goes next
	 * to the certificates instead */
	snprintf(port_file, sizeof(port_file), "%s/control-port", certs_dir);
	unlink(port_file);
	t->d = &daemon_other;
	assert_int_equal(harness_start(t->d, args), 0);
	t->port = harness_wait_port(port_file, 5000);
	if (t->port < 0)
		harness_dump_log(t->d);
	assert_true(t->port > 0);
	unlink(port_file);
}

/* Connect with certs_dir/cert_name and ALPN alpn ("" for none); runs the
 * handshake and starts HTTP/2. false when the handshake fails here. */
static bool h2_open_tls(struct h2 *h, int port, const char *cert_name, const char *alpn)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	char cert[320], key[320], ca[320];
	unsigned char protos[32];
	SSL_CTX *ctx;
	SSL *ssl;
	int fd, r;
	bool ok;

	harness_cert_path(cert, sizeof(cert), certs_dir, cert_name, "pem");
	harness_cert_path(key, sizeof(key), certs_dir, cert_name, "key");
	harness_cert_path(ca, sizeof(ca), certs_dir, "ca", "pem");
	ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION), 1);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (*alpn) {
		protos[0] = (unsigned char)strlen(alpn);
		memcpy(protos + 1, alpn, strlen(alpn));
		/* 0 is success for this one */
		assert_int_equal(SSL_CTX_set_alpn_protos(ctx, protos, 1 + strlen(alpn)), 0);
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* ssl holds it */
	assert_non_null(ssl);
	assert_int_equal(SSL_set1_host(ssl, "host-b.test"), 1);
	assert_int_equal(SSL_set_fd(ssl, fd), 1);
	ok = SSL_connect(ssl) == 1;
	ERR_clear_error();
	r = h2_start(h, fd, ssl);
	if (!ok) {
		h->eof = true;
		return false;
	}
	/* A refused certificate may only show on reading (TLS 1.3), so a
	 * failed write of the preface is not an error here. */
	return r == 0 || r == -EPIPE;
}

/* The daemon refuses the connection: it may complete the client's side of
 * the handshake (TLS 1.3 judges the client certificate after), but no
 * HTTP/2 frame ever comes and the connection ends. */
static void assert_refused(struct tls_daemon *t, const char *cert_name, const char *alpn)
{
	int64_t deadline = harness_now_ms() + IO_TIMEOUT_MS;
	struct h2 h;

	(void)h2_open_tls(&h, t->port, cert_name, alpn);
	while (!h.eof && harness_now_ms() < deadline)
		(void)h2_pump(&h, (int)(deadline - harness_now_ms()));
	assert_true(h.eof);
	assert_int_equal(h.n_frames, 0);
	h2_close(&h);
}

static int tls_status(struct tls_daemon *t, const char *cert_name, const char *path)
{
	struct h2_stream *s;
	struct h2 h;
	int status;

	assert_true(h2_open_tls(&h, t->port, cert_name, "h2"));
	s = h2_submit(&h, path, empty_request, sizeof(empty_request), NULL);
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	status = s->grpc_status;
	h2_close(&h);
	return status;
}

static void test_tls_roles_come_from_the_certificate(void **state)
{
	struct tls_daemon t;
	int baseline;

	tls_daemon_start(&t);
	baseline = harness_settled_fd_count(t.d);

	assert_int_equal(tls_status(&t, "ctl-operator", CONTROL "ListVms"), STATUS_OK);
	assert_int_equal(tls_status(&t, "ctl-reader", CONTROL "ListVms"), STATUS_OK);
	assert_int_equal(tls_status(&t, "ctl-reader", CONTROL "StartMigration"), STATUS_PERMISSION);
	assert_true(harness_log_contains(t.d, "needs the operator role; caller "
					      "ctl-reader.test has reader"));
	/* ctl-operator.test's name on a certificate of another CA */
	assert_refused(&t, "ctl-other", "h2");
	assert_log_eventually(t.d, "TLS handshake failed: client certificate refused");
	/* a host certificate of the fleet CA that is on no control list */
	assert_refused(&t, "host-a", "h2");
	assert_log_eventually(t.d, "client certificate refused: no SAN on the control lists");
	/* no ALPN h2 */
	assert_refused(&t, "ctl-operator", "http/1.1");
	assert_refused(&t, "ctl-operator", "");
	assert_log_eventually(t.d, "did not offer ALPN h2");
	/* and it still serves */
	assert_int_equal(tls_status(&t, "ctl-operator", CONTROL "ListVms"), STATUS_OK);
	assert_fds_settle(t.d, baseline);
	assert_int_equal(harness_stop(t.d), 0);
	t.d->pid = 0;
}

/* Strangers flood the control port with connections that never handshake.
 * Before, the unix socket and TCP shared one pool of 256, and 256 stalled
 * TCP handshakes locked local root out of vcounterctl. Now the unix socket
 * has its own pool, one address holds at most 8 TCP handshakes, and when
 * they are all taken the oldest makes room: root and an allowed controller
 * both get in. */
static void test_strangers_on_the_control_port_lock_no_one_out(void **state)
{
	enum {
		ONE_HOST = 300,
		HOSTS = 40,
		PER_HOST = 8
	};
	static int stalled[ONE_HOST + HOSTS * PER_HOST];
	Vcounter__V1__ListVmsReply *reply;
	struct tls_daemon t;
	char addr[32];
	size_t n = 0;
	int baseline;

	tls_daemon_start(&t);
	baseline = harness_settled_fd_count(t.d);
	for (int i = 0; i < ONE_HOST; i++) {
		stalled[n] = harness_tcp_connect_from("127.0.0.2", t.port);
		assert_true(stalled[n++] >= 0);
	}
	/* 40 hosts of 8: more than every handshake slot, and than the TCP pool. */
	for (int h = 0; h < HOSTS; h++) {
		snprintf(addr, sizeof(addr), "127.0.2.%d", h + 1);
		for (int i = 0; i < PER_HOST; i++) {
			stalled[n] = harness_tcp_connect_from(addr, t.port);
			assert_true(stalled[n++] >= 0);
		}
	}
	reply = list_vms(t.d->control_socket);
	assert_non_null(reply);
	vcounter__v1__list_vms_reply__free_unpacked(reply, NULL);
	assert_int_equal(tls_status(&t, "ctl-operator", CONTROL "ListVms"), STATUS_OK);
	assert_log_eventually(t.d, "that address has 8 TLS handshakes running");
	assert_log_eventually(t.d, "the oldest, closed to make room");
	for (size_t i = 0; i < n; i++)
		close(stalled[i]);
	assert_fds_settle(t.d, baseline);
	assert_int_equal(harness_stop(t.d), 0);
	t.d->pid = 0;
}

/* ---- the end ---- */

static void test_daemon_alive_with_fds_back_to_baseline(void **state)
{
	assert_daemon_serving();
	assert_fds_settle(&daemon_main, baseline_fds);
	assert_watchers_settle(0);
}

static int group_setup(void **state)
{
	/* writes to a daemon that closed on us must fail, not kill us */
	signal(SIGPIPE, SIG_IGN);
	if (harness_start(&daemon_main, NULL) < 0)
		return -1;
	if (wait_control_socket(&daemon_main) < 0) {
		harness_dump_log(&daemon_main);
		return -1;
	}
	/* the readiness probes connected; let the daemon see them go */
	baseline_fds = harness_settled_fd_count(&daemon_main);
	return baseline_fds > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	if (daemon_other.pid > 0) {
		harness_dump_log(&daemon_other);
		harness_stop(&daemon_other);
	}
	remove_certs();
	return harness_finish(&daemon_main);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_list_vms_answers_ok_with_a_reply),
		cmocka_unit_test(test_unknown_method_is_unimplemented),
		cmocka_unit_test(test_wrong_content_type_is_http_415),
		cmocka_unit_test(test_request_over_maximum_is_resource_exhausted),
		cmocka_unit_test(test_request_of_exactly_the_maximum_is_served_one_more_is_not),
		cmocka_unit_test(test_streams_over_the_maximum_are_refused),
		cmocka_unit_test(test_compressed_flag_without_encoding_is_internal),
		cmocka_unit_test(test_compressed_message_with_gzip_encoding_is_unimplemented),
		cmocka_unit_test(test_flag_byte_2_is_internal),
		cmocka_unit_test(test_garbage_protobuf_is_invalid_argument),
		cmocka_unit_test(test_unary_needs_exactly_one_message),
		cmocka_unit_test(test_malformed_grpc_timeout_is_invalid_argument),
		cmocka_unit_test(test_calls_share_a_connection),
		cmocka_unit_test(test_malformed_preface_closes_that_connection_only),
		cmocka_unit_test(test_protocol_error_after_preface_gets_goaway),
		cmocka_unit_test(test_rapid_reset_flood_closes_that_connection_only),
		cmocka_unit_test_teardown(test_connections_over_the_maximum_are_refused,
					  close_max_conn_fds),
		cmocka_unit_test(test_watch_headers_come_before_any_event),
		cmocka_unit_test(test_watch_with_grpc_timeout_ends_deadline_exceeded),
		cmocka_unit_test(test_client_reset_cancels_the_watch),
		cmocka_unit_test(test_watcher_that_does_not_read_is_dropped),
		cmocka_unit_test(test_connection_that_does_not_read_is_closed),
		cmocka_unit_test(test_caller_on_no_list_is_permission_denied),
		cmocka_unit_test(test_idle_connection_without_a_role_is_closed),
		cmocka_unit_test(test_reader_uid_may_read_but_not_operate),
		cmocka_unit_test(test_tls_roles_come_from_the_certificate),
		cmocka_unit_test(test_strangers_on_the_control_port_lock_no_one_out),
		cmocka_unit_test(test_daemon_alive_with_fds_back_to_baseline),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
