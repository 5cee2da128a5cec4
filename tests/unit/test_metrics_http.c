/* test_metrics_http.c - the metrics endpoint (daemon/metrics_http.c) alone,
 * on a real listening socket and a real event loop. What it reports of the
 * migrations, the control API and the sync source comes from fakes defined
 * here (the linker takes them before libvcdaemon's), so each number in the
 * text is one this test chose; the VMs are a real registry's. The daemon's
 * own endpoint, under load and hostile clients, is test_metrics's. */
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
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <netinet/in.h>

#include "clockns.h"
#include "control.h"
#include "metrics_http.h"
#include "migration.h"
#include "sync_source.h"
#include "vcd.h"

static struct vcd vcd;

/* ---- fakes: what the endpoint asks the rest of the daemon ---- */

static size_t fake_running, fake_watchers, fake_established, fake_connecting;
static int fake_sync_error; /* < 0: the sync source does not answer */
static struct sync_error fake_sync;
static const struct sync_source_spec fake_spec = { .kind = SYNC_SOURCE_FIXED };

size_t migrations_running(struct vcd *v)
{
	assert_ptr_equal(v, &vcd);
	return fake_running;
}

void migrations_link_counts(struct vcd *v, size_t *ret_established, size_t *ret_connecting)
{
	assert_ptr_equal(v, &vcd);
	*ret_established = fake_established;
	*ret_connecting = fake_connecting;
}

size_t control_watcher_count(struct vcd *v)
{
	assert_ptr_equal(v, &vcd);
	return fake_watchers;
}

const struct sync_source_spec *sync_source_spec(const struct sync_source *ss)
{
	return &fake_spec;
}

int sync_source_read(const struct sync_source *ss, struct sync_error *ret, char *err,
		     size_t err_size)
{
	if (fake_sync_error < 0) {
		snprintf(err, err_size, "no answer");
		return fake_sync_error;
	}
	*ret = fake_sync;
	return 0;
}

/* ---- a client ---- */

/* Send req to the endpoint and run the loop until it closes: the whole
 * response in buf (NUL-terminated), its status, or -1. */
static int exchange(const char *req, char *buf, size_t size)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int64_t deadline = (int64_t)(clock_ns(CLOCK_MONOTONIC) / 1000000) + 5000;
	size_t len = 0;
	int fd, status = -1;

	sa.sin_port = htons((uint16_t)metrics_http_port(&vcd));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	assert_true(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EINPROGRESS);
	while (event_base_loop(vcd.base, EVLOOP_NONBLOCK) >= 0 &&
	       (int64_t)(clock_ns(CLOCK_MONOTONIC) / 1000000) < deadline) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLOUT };
		ssize_t n;

		if (poll(&pfd, 1, 5) <= 0)
			continue;
		if (req && (pfd.revents & POLLOUT)) {
			assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL),
					 (ssize_t)strlen(req));
			req = NULL;
		}
		if (!(pfd.revents & (POLLIN | POLLHUP)))
			continue;
		n = recv(fd, buf + len, size - 1 - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	if (sscanf(buf, "HTTP/1.1 %d ", &status) != 1)
		return -1;
	return status;
}

static char response[256 * 1024];

static void assert_line(const char *line)
{
	char want[256];

	snprintf(want, sizeof(want), "\n%s\n", line);
	if (!strstr(response, want))
		fail_msg("no line '%s' in:\n%s", line, response);
}

/* ---- tests ---- */

static int setup(void **state)
{
	memset(&vcd, 0, sizeof(vcd));
	vcd.base = event_base_new();
	assert_non_null(vcd.base);
	vcd.config.metrics_listen = "127.0.0.1:0";
	fake_running = fake_watchers = fake_established = fake_connecting = 0;
	fake_sync_error = 0;
	fake_sync = (struct sync_error){ .maxerror_ns = 1500000 };
	assert_int_equal(metrics_http_start(&vcd), 0);
	assert_true(metrics_http_port(&vcd) > 0);
	return 0;
}

static int teardown(void **state)
{
	metrics_http_stop(&vcd);
	vm_registry_clear(&vcd.vms);
	event_base_free(vcd.base);
	return 0;
}

static void test_metrics_say_what_the_daemon_holds(void **state)
{
	struct vm_entry *vm = vm_entry_new("vm-1", 2, NULL, 0);

	/* A target VM probed on kvm-x86, and one still probing: only the first
	 * counts, as the VMM status reply counts them. */
	assert_non_null(vm);
	vm->role = VM_ROLE_TARGET;
	vm->backend = BACKEND_KVM_X86;
	vm->probed = true;
	vm_registry_add(&vcd.vms, vm);
	vm = vm_entry_new("vm-2", 1, NULL, 0);
	assert_non_null(vm);
	vm->role = VM_ROLE_SOURCE;
	vm->backend = BACKEND_KVM_X86;
	vm_registry_add(&vcd.vms, vm);
	fake_running = 3;
	fake_watchers = 2;
	fake_established = 4;
	fake_connecting = 1;

	assert_int_equal(
		exchange("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", response, sizeof(response)),
		200);
	assert_non_null(strstr(response, "Content-Type: text/plain"));
	assert_line("vcounterd_migrations_running 3");
	assert_line("vcounterd_control_watchers 2");
	assert_line("vcounterd_peer_links{state=\"established\"} 4");
	assert_line("vcounterd_peer_links{state=\"connecting\"} 1");
	assert_line("vcounterd_vms_registered{role=\"target\",backend=\"kvm-x86\"} 1");
	assert_line("vcounterd_vms_registered{role=\"source\",backend=\"kvm-x86\"} 0");
	assert_line("vcounterd_clock_error_seconds{source=\"fixed\"} 0.0015");

	/* Each scrape asks again: the numbers follow. */
	fake_running = 0;
	fake_sync_error = -ETIMEDOUT;
	assert_int_equal(exchange("GET /metrics?x=1 HTTP/1.0\r\n\r\n", response, sizeof(response)),
			 200);
	assert_line("vcounterd_migrations_running 0");
	assert_line("vcounterd_clock_error_seconds{source=\"fixed\"} +Inf");
	fake_sync_error = 0;
	fake_sync.unsynced = true;
	assert_int_equal(exchange("GET /metrics HTTP/1.1\r\n\r\n", response, sizeof(response)),
			 200);
	assert_line("vcounterd_clock_error_seconds{source=\"fixed\"} +Inf");
}

static void test_anything_else_is_refused_with_its_status(void **state)
{
	fake_running = 3;
	assert_int_equal(exchange("GET / HTTP/1.1\r\n\r\n", response, sizeof(response)), 404);
	assert_int_equal(exchange("POST /metrics HTTP/1.1\r\n\r\n", response, sizeof(response)),
			 405);
	assert_int_equal(exchange("GET /metrics HTTP/2.0\r\n\r\n", response, sizeof(response)),
			 505);
	assert_int_equal(exchange("\x16\x03\x01\x02\x00\x01\r\n\r\n", response, sizeof(response)),
			 400);
	assert_null(strstr(response, "vcounterd_migrations_running"));
	/* The endpoint is still there. */
	assert_int_equal(exchange("GET /metrics HTTP/1.1\r\n\r\n", response, sizeof(response)),
			 200);
	assert_line("vcounterd_migrations_running 3");
}

static void test_off_unless_configured_and_bad_addresses_refused(void **state)
{
	struct vcd off = { .base = vcd.base };

	assert_int_equal(metrics_http_start(&off), 0);
	assert_int_equal(metrics_http_port(&off), -ENOTCONN);
	metrics_http_stop(&off);
	off.config.metrics_listen = "not an address";
	assert_true(metrics_http_start(&off) < 0);
	assert_int_equal(metrics_http_port(&off), -ENOTCONN);
	metrics_http_stop(&off);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_metrics_say_what_the_daemon_holds, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_anything_else_is_refused_with_its_status,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_off_unless_configured_and_bad_addresses_refused, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
