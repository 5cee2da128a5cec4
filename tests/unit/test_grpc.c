/* test_grpc.c - the gRPC server (daemon/grpc.c) alone: a method table of
 * this test's own (no control API, no daemon) served on a unix socket by a
 * real event loop in a thread, spoken to by the tests' raw HTTP/2 client
 * (tests/integration/h2_client.c). The control API over this transport,
 * its limits, roles and TLS, are test_control_transport's. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "daemon_harness.h"
#include "grpc.h"
#include "grpc_wire.h"
#include "h2_client.h"
#include "vcounter.pb-c.h"

static struct event_base *base;
static struct grpc_server *server;
static pthread_t loop_thread;
static atomic_bool stop;
static char dir[64], sock_path[96];
static atomic_int calls;

/* ---- the methods, this test's ---- */

/* Unary: answers with the request's migration id in a GetMigrationRequest. */
static void echo(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	const Vcounter__V1__GetMigrationRequest *req =
		(const Vcounter__V1__GetMigrationRequest *)request;
	Vcounter__V1__GetMigrationRequest reply = VCOUNTER__V1__GET_MIGRATION_REQUEST__INIT;

	calls++;
	reply.migration_id = req->migration_id;
	/* Not cmocka's asserts: this runs in the server's thread. */
	if (grpc_call_send(call, &reply.base) != 0)
		abort();
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void refuse(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	calls++;
	grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "refused: %s", "50% sure");
}

/* Server streaming: three messages, then OK. */
static void three(struct grpc_call *call, const ProtobufCMessage *request, void *userdata)
{
	Vcounter__V1__GetMigrationRequest msg = VCOUNTER__V1__GET_MIGRATION_REQUEST__INIT;

	calls++;
	msg.migration_id = "x";
	for (int i = 0; i < 3; i++)
		if (grpc_call_send(call, &msg.base) != 0)
			abort();
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static const struct grpc_method methods[] = {
	{ "/test.Svc/Echo", &vcounter__v1__get_migration_request__descriptor, false,
	  GRPC_ROLE_READER, echo },
	{ "/test.Svc/Refuse", &vcounter__v1__get_migration_request__descriptor, false,
	  GRPC_ROLE_READER, refuse },
	{ "/test.Svc/Three", &vcounter__v1__get_migration_request__descriptor, true,
	  GRPC_ROLE_READER, three },
};

/* ---- the server's loop, in its own thread ---- */

static void *loop(void *arg)
{
	while (!stop) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(500);
	}
	return NULL;
}

static int setup(void **state)
{
	struct grpc_server_config gc = { .listen_unix_fd = -1 };
	char err[256];

	snprintf(dir, sizeof(dir), "/tmp/vc-grpc-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(sock_path, sizeof(sock_path), "%s/control.sock", dir);
	gc.unix_path = sock_path;
	base = event_base_new();
	assert_non_null(base);
	assert_int_equal(grpc_server_new(base, &gc, methods, sizeof(methods) / sizeof(methods[0]),
					 NULL, &server, err, sizeof(err)),
			 0);
	calls = 0;
	stop = false;
	assert_int_equal(pthread_create(&loop_thread, NULL, loop, NULL), 0);
	return 0;
}

static int teardown(void **state)
{
	stop = true;
	pthread_join(loop_thread, NULL);
	server = grpc_server_free(server);
	event_base_free(base);
	assert_int_equal(access(sock_path, F_OK), -1); /* the socket file is gone */
	rmdir(dir);
	return 0;
}

/* ---- a call ---- */

static struct h2_stream *unary(struct h2 *h, const char *path, const char *migration_id)
{
	Vcounter__V1__GetMigrationRequest req = VCOUNTER__V1__GET_MIGRATION_REQUEST__INIT;
	static uint8_t body[256];
	size_t len;
	struct h2_stream *s;

	req.migration_id = (char *)migration_id;
	len = vcounter__v1__get_migration_request__get_packed_size(&req);
	assert_true(GRPC_WIRE_PREFIX_BYTES + len <= sizeof(body));
	grpc_wire_prefix(body, (uint32_t)len);
	vcounter__v1__get_migration_request__pack(&req, body + GRPC_WIRE_PREFIX_BYTES);
	s = h2_submit(h, path, body, GRPC_WIRE_PREFIX_BYTES + len, NULL);
	assert_non_null(s);
	assert_true(h2_wait_closed(h, s));
	return s;
}

/* The messages of s's data: how many, the last one's migration id. */
static size_t messages(const struct h2_stream *s, char *last, size_t last_size)
{
	size_t n = 0, off = 0;

	while (off + GRPC_WIRE_PREFIX_BYTES <= s->data_len) {
		uint32_t len = (uint32_t)s->data[off + 1] << 24 | (uint32_t)s->data[off + 2] << 16 |
			       (uint32_t)s->data[off + 3] << 8 | s->data[off + 4];
		Vcounter__V1__GetMigrationRequest *m;

		assert_true(off + GRPC_WIRE_PREFIX_BYTES + len <= s->data_len);
		m = vcounter__v1__get_migration_request__unpack(
			NULL, len, s->data + off + GRPC_WIRE_PREFIX_BYTES);
		assert_non_null(m);
		snprintf(last, last_size, "%s", m->migration_id);
		vcounter__v1__get_migration_request__free_unpacked(m, NULL);
		off += GRPC_WIRE_PREFIX_BYTES + len;
		n++;
	}
	assert_int_equal(off, s->data_len);
	return n;
}

/* ---- tests ---- */

static void test_a_unary_call_gets_its_handlers_answer(void **state)
{
	struct h2 h;
	struct h2_stream *s;
	char last[64] = "";

	assert_int_equal(h2_open_unix(&h, sock_path), 0);
	s = unary(&h, "/test.Svc/Echo", "0123456789abcdef0123456789abcdef");
	assert_int_equal(s->http_status, 200);
	assert_int_equal(s->grpc_status, GRPC_STATUS_OK);
	assert_int_equal(messages(s, last, sizeof(last)), 1);
	assert_string_equal(last, "0123456789abcdef0123456789abcdef");
	/* Status and message as the handler said, percent-encoded on the
	 * wire and decoded here. */
	s = unary(&h, "/test.Svc/Refuse", "");
	assert_int_equal(s->grpc_status, GRPC_STATUS_FAILED_PRECONDITION);
	assert_string_equal(s->grpc_message, "refused: 50% sure");
	assert_int_equal(messages(s, last, sizeof(last)), 0);
	assert_int_equal(calls, 2);
	h2_close(&h);
}

static void test_a_stream_delivers_every_message(void **state)
{
	struct h2 h;
	struct h2_stream *s;
	char last[64] = "";

	assert_int_equal(h2_open_unix(&h, sock_path), 0);
	s = unary(&h, "/test.Svc/Three", "");
	assert_int_equal(s->grpc_status, GRPC_STATUS_OK);
	assert_int_equal(messages(s, last, sizeof(last)), 3);
	assert_string_equal(last, "x");
	h2_close(&h);
}

static void test_what_no_method_takes_is_refused_by_the_transport(void **state)
{
	static const uint8_t garbage[] = { 0, 0, 0, 0, 3, 0xff, 0xff, 0xff };
	struct h2 h;
	struct h2_stream *s;

	assert_int_equal(h2_open_unix(&h, sock_path), 0);
	s = unary(&h, "/test.Svc/Nope", "");
	assert_int_equal(s->grpc_status, GRPC_STATUS_UNIMPLEMENTED);
	/* A message that does not unpack as the method's request. */
	s = h2_submit(&h, "/test.Svc/Echo", garbage, sizeof(garbage), NULL);
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	assert_int_equal(s->grpc_status, GRPC_STATUS_INVALID_ARGUMENT);
	/* Not gRPC at all. */
	s = h2_submit(&h, "/test.Svc/Echo", garbage, sizeof(garbage),
		      (const char *const[]){ "content-type", "text/plain", NULL });
	assert_non_null(s);
	assert_true(h2_wait_closed(&h, s));
	assert_true(s->http_status == 415 || s->grpc_status > 0);
	/* None of it reached a handler, and the server still serves. */
	assert_int_equal(calls, 0);
	s = unary(&h, "/test.Svc/Echo", "a");
	assert_int_equal(s->grpc_status, GRPC_STATUS_OK);
	h2_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_a_unary_call_gets_its_handlers_answer, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_stream_delivers_every_message, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_what_no_method_takes_is_refused_by_the_transport, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
