/* test_control.c - service Control's handlers (daemon/control.c) alone: the
 * gRPC server and the migrations are faked here (the linker takes these
 * before libvcdaemon's), so the test calls each method as the server would,
 * sees every message sent and the status each call ends with, and chooses
 * what the migrations answer. The VMs are a real registry's. The wire, the
 * roles and the transports are test_control_transport's and grpc_interop's. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "control.h"
#include "grpc.h"
#include "migration.h"
#include "migration_view.h"
#include "session.h"
#include "sync_source.h"
#include "vcd.h"
#include "vcounter.pb-c.h"

#define MID "0123456789abcdef0123456789abcdef"

static struct vcd vcd;

/* ---- the gRPC server, faked: calls the test makes, what they send ---- */

struct grpc_call {
	struct grpc_caller caller;
	int n_sent;
	int last_sent_kind; /* Event.kind of the last event sent, or -1 */
	bool finished;
	enum grpc_status status;
	char message[512];
	grpc_cancel_cb cancel;
	void *cancel_userdata;
};

struct grpc_server {
	const struct grpc_method *methods;
	size_t n_methods;
	void *userdata;
};

static struct grpc_server server;

int grpc_server_new(struct event_base *base, const struct grpc_server_config *config,
		    const struct grpc_method *methods, size_t n_methods, void *userdata,
		    struct grpc_server **ret, char *err, size_t err_size)
{
	server = (struct grpc_server){ .methods = methods,
				       .n_methods = n_methods,
				       .userdata = userdata };
	*ret = &server;
	return 0;
}

struct grpc_server *grpc_server_free(struct grpc_server *s)
{
	return NULL;
}

int grpc_server_set_roles(struct grpc_server *s, const struct grpc_server_config *config, char *err,
			  size_t err_size)
{
	return 0;
}

void grpc_server_set_tls(struct grpc_server *s, SSL_CTX *tls)
{
}

int grpc_server_tcp_port(const struct grpc_server *s)
{
	return -ENOTCONN;
}

const struct grpc_caller *grpc_call_caller(const struct grpc_call *call)
{
	return &call->caller;
}

int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *message)
{
	assert_false(call->finished);
	call->n_sent++;
	call->last_sent_kind = message->descriptor == &vcounter__v1__event__descriptor
				       ? (int)((const Vcounter__V1__Event *)message)->kind
				       : -1;
	return 0;
}

void grpc_call_finish(struct grpc_call *call, enum grpc_status status, const char *fmt, ...)
{
	va_list ap;

	assert_false(call->finished);
	call->finished = true;
	call->status = status;
	call->message[0] = '\0';
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(call->message, sizeof(call->message), fmt, ap);
		va_end(ap);
	}
}

void grpc_call_on_cancel(struct grpc_call *call, grpc_cancel_cb cb, void *userdata)
{
	call->cancel = cb;
	call->cancel_userdata = userdata;
}

/* ---- the migrations, faked: what each call answers ---- */

static struct session fake_session;
static int fake_abort, fake_start;

static void fake_view(struct migration_view *ret)
{
	*ret = (struct migration_view){ .s = &fake_session };
}

int migration_abort(struct vcd *v, const char *migration_id, const char *reason,
		    struct migration_view *ret)
{
	fake_view(ret);
	return fake_abort;
}

int migration_start(struct vcd *v, const char *vm_id, const char *peer_address,
		    const char *peer_name, struct migration_view *ret, char *err, size_t err_size)
{
	fake_view(ret);
	if (fake_start < 0)
		snprintf(err, err_size, "refused by the test");
	return fake_start;
}

int migration_get_view(struct vcd *v, const char *migration_id, struct migration_view *ret)
{
	if (strcmp(migration_id, fake_session.migration_id) != 0)
		return -ENOENT;
	fake_view(ret);
	return 0;
}

void migrations_foreach(struct vcd *v, void (*cb)(const struct migration_view *, void *),
			void *userdata)
{
	struct migration_view view;

	fake_view(&view);
	cb(&view, userdata);
}

size_t migrations_running(struct vcd *v)
{
	return 1;
}

size_t migration_count(struct vcd *v)
{
	return 1;
}

int migrations_listen_port(struct vcd *v)
{
	return -1;
}

int sync_source_read(const struct sync_source *ss, struct sync_error *ret, char *err,
		     size_t err_size)
{
	*ret = (struct sync_error){ .maxerror_ns = 1000 };
	return 0;
}

const struct sync_source_spec *sync_source_spec(const struct sync_source *ss)
{
	static const struct sync_source_spec spec = { .kind = SYNC_SOURCE_FIXED };

	return &spec;
}

/* ---- calling a method ---- */

static const struct grpc_method *method(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/vcounter.v1.Control/%s", name);
	for (size_t i = 0; i < server.n_methods; i++)
		if (strcmp(server.methods[i].path, path) == 0)
			return &server.methods[i];
	fail_msg("no method %s", name);
	return NULL;
}

static void call(const char *name, struct grpc_call *c, const ProtobufCMessage *request)
{
	const struct grpc_method *m = method(name);

	assert_ptr_equal(request->descriptor, m->request);
	*c = (struct grpc_call){ .caller = { .role = GRPC_ROLE_OPERATOR, .identity = "ctl.test" },
				 .last_sent_kind = -1 };
	m->handler(c, request, server.userdata);
}

static int setup(void **state)
{
	memset(&vcd, 0, sizeof(vcd));
	vcd.base = event_base_new();
	vcd.config.control_socket = "/nonexistent/control.sock"; /* the fake opens nothing */
	vcd.config.max_watchers = 2;
	vcd.config.host_name = "host-b.test";
	assert_int_equal(control_start(&vcd, -1), 0);
	assert_int_equal(session_init(&fake_session, VM_ROLE_SOURCE, MID, "vm-1", "host-b.test", 1),
			 0);
	fake_abort = fake_start = 0;
	return 0;
}

static int teardown(void **state)
{
	control_stop(&vcd);
	vm_registry_clear(&vcd.vms);
	event_base_free(vcd.base);
	return 0;
}

/* ---- tests ---- */

static void test_abort_answers_each_outcome_with_its_status(void **state)
{
	Vcounter__V1__AbortMigrationRequest req = VCOUNTER__V1__ABORT_MIGRATION_REQUEST__INIT;
	struct grpc_call c;

	req.migration_id = "not an id";
	call("AbortMigration", &c, &req.base);
	assert_int_equal(c.status, GRPC_STATUS_INVALID_ARGUMENT);
	req.migration_id = MID;
	req.reason = "maintenance";
	call("AbortMigration", &c, &req.base);
	assert_int_equal(c.status, GRPC_STATUS_OK);
	assert_int_equal(c.n_sent, 1);
	fake_abort = -ENOENT;
	call("AbortMigration", &c, &req.base);
	assert_int_equal(c.status, GRPC_STATUS_NOT_FOUND);
	assert_int_equal(c.n_sent, 0);
	/* Applied: nothing to undo. */
	fake_abort = -EALREADY;
	fake_session.step = STEP_DONE;
	call("AbortMigration", &c, &req.base);
	assert_int_equal(c.status, GRPC_STATUS_FAILED_PRECONDITION);
	assert_non_null(strstr(c.message, "the target applied"));
	/* A source past its final state: the target decides, named. */
	fake_abort = -EINPROGRESS;
	fake_session.step = STEP_FINAL;
	call("AbortMigration", &c, &req.base);
	assert_int_equal(c.status, GRPC_STATUS_FAILED_PRECONDITION);
	assert_non_null(strstr(c.message, "abort it on host-b.test"));
	assert_int_equal(c.n_sent, 0);
	fake_abort = -ECANCELED;
	snprintf(fake_session.reason, sizeof(fake_session.reason), "peer link lost");
	call("AbortMigration", &c, &req.base);
	assert_int_equal(c.status, GRPC_STATUS_FAILED_PRECONDITION);
	assert_non_null(strstr(c.message, "already failed: peer link lost"));
}

static void test_start_says_why_it_was_refused(void **state)
{
	Vcounter__V1__StartMigrationRequest req = VCOUNTER__V1__START_MIGRATION_REQUEST__INIT;
	struct grpc_call c;

	req.vm_id = "vm-1";
	req.peer_address = "192.0.2.7:7420";
	req.peer_name = "host-b.test";
	call("StartMigration", &c, &req.base);
	assert_int_equal(c.status, GRPC_STATUS_OK);
	assert_int_equal(c.n_sent, 1);
	fake_start = -ENOENT;
	call("StartMigration", &c, &req.base);
	assert_int_equal(c.status, GRPC_STATUS_NOT_FOUND);
	assert_non_null(strstr(c.message, "refused by the test"));
	fake_start = -EBUSY;
	call("StartMigration", &c, &req.base);
	assert_true(c.status != GRPC_STATUS_OK && c.status != GRPC_STATUS_NOT_FOUND);
	assert_int_equal(c.n_sent, 0);
}

static void test_get_and_list_name_only_what_exists(void **state)
{
	Vcounter__V1__GetMigrationRequest get = VCOUNTER__V1__GET_MIGRATION_REQUEST__INIT;
	Vcounter__V1__ListMigrationsRequest list = VCOUNTER__V1__LIST_MIGRATIONS_REQUEST__INIT;
	struct grpc_call c;

	get.migration_id = MID;
	call("GetMigration", &c, &get.base);
	assert_int_equal(c.status, GRPC_STATUS_OK);
	assert_int_equal(c.n_sent, 1);
	get.migration_id = "ffffffffffffffffffffffffffffffff";
	call("GetMigration", &c, &get.base);
	assert_int_equal(c.status, GRPC_STATUS_NOT_FOUND);
	get.migration_id = "../../etc/passwd";
	call("GetMigration", &c, &get.base);
	assert_int_equal(c.status, GRPC_STATUS_INVALID_ARGUMENT);
	list.vm_id = "bad vm id!";
	call("ListMigrations", &c, &list.base);
	assert_int_equal(c.status, GRPC_STATUS_INVALID_ARGUMENT);
	list.vm_id = "vm-1";
	call("ListMigrations", &c, &list.base);
	assert_int_equal(c.status, GRPC_STATUS_OK);
	assert_int_equal(c.n_sent, 1);
}

static void test_watchers_hear_what_they_filter_for_up_to_the_limit(void **state)
{
	Vcounter__V1__WatchEventsRequest req = VCOUNTER__V1__WATCH_EVENTS_REQUEST__INIT;
	struct grpc_call all, other, third;
	struct migration_event ev;
	struct vm_entry *vm;

	call("WatchEvents", &all, &req.base);
	assert_false(all.finished); /* a stream: open until cancelled */
	req.vm_id = "vm-2";
	call("WatchEvents", &other, &req.base);
	assert_int_equal(control_watcher_count(&vcd), 2);
	/* The limit (max-watchers 2). */
	req.vm_id = NULL;
	call("WatchEvents", &third, &req.base);
	assert_int_equal(third.status, GRPC_STATUS_RESOURCE_EXHAUSTED);

	/* A migration of vm-1 moves: the unfiltered watcher hears it. */
	memset(&ev, 0, sizeof(ev));
	fake_view(&ev.view);
	fake_session.step = STEP_PREPARED;
	control_on_migration(&vcd, &ev);
	assert_int_equal(all.n_sent, 1);
	assert_int_equal(all.last_sent_kind, VCOUNTER__V1__EVENT_KIND__EVENT_KIND_MIGRATION_STEP);
	assert_int_equal(other.n_sent, 0);
	fake_session.step = STEP_DONE;
	control_on_migration(&vcd, &ev);
	assert_int_equal(all.last_sent_kind,
			 VCOUNTER__V1__EVENT_KIND__EVENT_KIND_MIGRATION_OUTCOME);
	/* vm-2 registers: both hear it. */
	vm = vm_entry_new("vm-2", 1, NULL, 0);
	assert_non_null(vm);
	vm_registry_add(&vcd.vms, vm);
	control_on_vm(&vcd, VM_EVENT_REGISTERED, vm);
	assert_int_equal(all.n_sent, 3);
	assert_int_equal(other.n_sent, 1);
	assert_int_equal(other.last_sent_kind, VCOUNTER__V1__EVENT_KIND__EVENT_KIND_VM_REGISTERED);
	/* A watcher whose stream ends is gone, and makes room. */
	other.cancel(&other, other.cancel_userdata);
	assert_int_equal(control_watcher_count(&vcd), 1);
	control_on_vm(&vcd, VM_EVENT_UNREGISTERED, vm);
	assert_int_equal(other.n_sent, 1);
	assert_int_equal(all.n_sent, 4);
	call("WatchEvents", &third, &req.base);
	assert_false(third.finished);
	assert_int_equal(control_watcher_count(&vcd), 2);
	all.cancel(&all, all.cancel_userdata);
	third.cancel(&third, third.cancel_userdata);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_abort_answers_each_outcome_with_its_status,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_says_why_it_was_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_get_and_list_name_only_what_exists, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_watchers_hear_what_they_filter_for_up_to_the_limit, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
