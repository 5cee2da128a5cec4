/* test_vmm_server.c - the VMM socket (daemon/vmm_server.c) alone, on a real
 * listening socket and a real event loop: the migrations are not linked
 * in; their requests reach a handler table this test fakes (struct
 * vmm_migration_handlers), which answers through the VMM socket's own
 * replies, as migration.c does. Registration with real KVM fds, the
 * limits and hostile input are the integration tests' (test_vmm_socket,
 * test_limits). */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "sync_source.h"
#include "vcd.h"
#include "vmm_raw.h"
#include "vmm_server.h"
#include "wire.h"

static struct vcd vcd;
static char dir[64], path[96];

/* What the fake migrations were asked, last. */
static struct {
	int calls;
	const char *what;
	uint64_t conn_id, request_id;
	char vm_id[64], peer_address[64], peer_name[64], migration_id[64];
} asked;

static void remember(const char *what, uint64_t conn_id, uint64_t request_id, const char *vm_id)
{
	asked.calls++;
	asked.what = what;
	asked.conn_id = conn_id;
	asked.request_id = request_id;
	snprintf(asked.vm_id, sizeof(asked.vm_id), "%s", vm_id ? vm_id : "(null)");
}

static void fake_migrate_out(struct vcd *v, uint64_t conn_id, uint64_t request_id,
			     const char *vm_id, const char *peer_address, const char *peer_name)
{
	remember("migrate_out", conn_id, request_id, vm_id);
	snprintf(asked.peer_address, sizeof(asked.peer_address), "%s", peer_address);
	snprintf(asked.peer_name, sizeof(asked.peer_name), "%s", peer_name);
	vmm_reply_error(v, conn_id, request_id, -ENOENT, "no such VM here");
}

static void fake_report_paused(struct vcd *v, uint64_t conn_id, uint64_t request_id,
			       const char *vm_id, const char *migration_id)
{
	remember("report_paused", conn_id, request_id, vm_id);
	snprintf(asked.migration_id, sizeof(asked.migration_id), "%s", migration_id);
	vmm_reply_ok(v, conn_id, request_id);
}

static void fake_apply(struct vcd *v, uint64_t conn_id, uint64_t request_id, const char *vm_id,
		       const char *migration_id)
{
	remember("apply", conn_id, request_id, vm_id);
	snprintf(asked.migration_id, sizeof(asked.migration_id), "%s", migration_id);
	vmm_reply_ok(v, conn_id, request_id);
}

static size_t fake_count(struct vcd *v)
{
	(void)v;
	return 7;
}

static const struct vmm_migration_handlers fake_migrations = {
	.migrate_out = fake_migrate_out,
	.report_paused = fake_report_paused,
	.apply = fake_apply,
	.count = fake_count,
};

/* Run the daemon's loop until fd has something to read (or 5 s pass). */
static void pump_until_readable(int fd)
{
	for (int i = 0; i < 500; i++) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		event_base_loop(vcd.base, EVLOOP_NONBLOCK);
		if (poll(&pfd, 1, 10) == 1)
			return;
	}
	fail_msg("the VMM socket did not answer within 5 s");
}

static void pump(void)
{
	for (int i = 0; i < 20; i++) {
		event_base_loop(vcd.base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
}

/* A VMM connected and accepted. */
static int vmm_open(void)
{
	int fd = vmm_raw_connect(path);

	pump();
	return fd;
}

static Vcounter__V1__VmmMessage *ask(int fd, Vcounter__V1__VmmMessage *req)
{
	Vcounter__V1__VmmMessage *reply;

	vmm_raw_send(fd, req, NULL, 0);
	pump_until_readable(fd);
	reply = vmm_raw_recv(fd);
	assert_non_null(reply);
	assert_int_equal(reply->id, req->id);
	return reply;
}

static int setup(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char err[256];
	int lfd;

	(void)state;
	memset(&vcd, 0, sizeof(vcd));
	memset(&asked, 0, sizeof(asked));
	vcd.base = event_base_new();
	assert_non_null(vcd.base);
	vcd.config.max_vms = 4;
	vcd.config.max_vmm_conns = 4;
	vcd.config.kvm_op_timeout_ms = 1000;
	vcd.config.allowed_uids[0] = getuid();
	vcd.config.n_allowed_uids = 1;
	assert_int_equal(sync_source_open(vcd.base, "fixed:250000", &vcd.sync, err, sizeof(err)),
			 0);
	snprintf(dir, sizeof(dir), "/tmp/vc-vmm-server-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/vmm.sock", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(vmm_server_start(&vcd, lfd, &fake_migrations), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	vmm_server_stop(&vcd);
	sync_source_free(vcd.sync);
	event_base_free(vcd.base);
	unlink(path);
	rmdir(dir);
	return 0;
}

static void test_migrate_out_goes_to_the_migrations_and_back(void **state)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__MigrateOut mo = VCOUNTER__V1__MIGRATE_OUT__INIT;
	int fd = vmm_open();

	(void)state;
	req.id = 41;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT;
	req.migrate_out = &mo;
	mo.vm_id = "vm-1";
	mo.peer_address = "192.0.2.7:7420";
	mo.peer_name = "host-b.test";
	reply = ask(fd, &req);
	assert_int_equal(asked.calls, 1);
	assert_string_equal(asked.what, "migrate_out");
	assert_true(asked.request_id == 41 && asked.conn_id != 0);
	assert_string_equal(asked.vm_id, "vm-1");
	assert_string_equal(asked.peer_address, "192.0.2.7:7420");
	assert_string_equal(asked.peer_name, "host-b.test");
	/* The migrations' answer, through the VMM socket's replies. */
	assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR);
	assert_non_null(strstr(reply->error->message, "no such VM here"));
	wire_vmm_free(reply);
	close(fd);
}

static void test_report_paused_and_apply_name_their_migration(void **state)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__ReportPaused rp = VCOUNTER__V1__REPORT_PAUSED__INIT;
	Vcounter__V1__ApplyRequest ap = VCOUNTER__V1__APPLY_REQUEST__INIT;
	int fd = vmm_open();
	uint64_t first_conn;

	(void)state;
	req.id = 5;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED;
	req.report_paused = &rp;
	rp.vm_id = "vm-2";
	rp.migration_id = "00112233445566778899aabbccddeeff";
	reply = ask(fd, &req);
	assert_string_equal(asked.what, "report_paused");
	assert_string_equal(asked.migration_id, "00112233445566778899aabbccddeeff");
	assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_OK);
	wire_vmm_free(reply);
	first_conn = asked.conn_id;

	req = (Vcounter__V1__VmmMessage)VCOUNTER__V1__VMM_MESSAGE__INIT;
	req.id = 6;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY;
	req.apply = &ap;
	ap.vm_id = "vm-2";
	ap.migration_id = "ffeeddccbbaa99887766554433221100";
	reply = ask(fd, &req);
	assert_int_equal(asked.calls, 2);
	assert_string_equal(asked.what, "apply");
	assert_string_equal(asked.vm_id, "vm-2");
	assert_string_equal(asked.migration_id, "ffeeddccbbaa99887766554433221100");
	assert_true(asked.conn_id == first_conn); /* the same connection */
	wire_vmm_free(reply);
	close(fd);
}

/* The status a VMM asks for: the migrations' count from their table, no
 * VMs, and the clock error of this host's sync source. */
static void test_status_counts_what_the_migrations_say(void **state)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;
	int fd = vmm_open();

	(void)state;
	req.id = 9;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	reply = ask(fd, &req);
	assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY);
	assert_int_equal(reply->status_reply->migration_count, 7);
	assert_int_equal(reply->status_reply->vm_count, 0);
	assert_non_null(reply->status_reply->sync);
	assert_true(reply->status_reply->sync->maxerror_ns == 250000);
	assert_int_equal(asked.calls, 0);
	wire_vmm_free(reply);
	close(fd);
}

/* A VMM that connects and leaves: the server forgets it, and serves the
 * next one. */
static void test_a_vmm_that_leaves_is_forgotten(void **state)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;

	(void)state;
	for (int i = 0; i < 8; i++) /* twice the connection limit */
		close(vmm_open());
	pump();
	req.id = 10;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	req.status = &st;
	{
		int fd = vmm_open();

		reply = ask(fd, &req);
		assert_int_equal(reply->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY);
		wire_vmm_free(reply);
		close(fd);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_migrate_out_goes_to_the_migrations_and_back,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_report_paused_and_apply_name_their_migration,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_counts_what_the_migrations_say, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_vmm_that_leaves_is_forgotten, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
