/* test_service.c - service_listen_fds(): the sockets socket activation passes
 * (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; fds from 3, sd_listen_fds(3)),
 * taken by name and kind, anything else refused with every passed fd closed.
 * tests/integration/test_service.c runs the daemon under the real launcher. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <systemd/sd-daemon.h>

#include "service.h"

static char dir[256];

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* An AF_UNIX socket of type at dir/name, listening or not. */
static int unix_socket(const char *name, int type, bool listening)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(strlen(dir) + 1 + strlen(name) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, dir, strlen(dir));
	sa.sun_path[strlen(dir)] = '/';
	memcpy(sa.sun_path + strlen(dir) + 1, name, strlen(name) + 1);
	unlink(sa.sun_path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (listening)
		assert_int_equal(listen(fd, 4), 0);
	return fd;
}

/* Pass fds as the service manager does: at 3, 4, ... with the variables. */
static void pass(const int *fds, size_t n, const char *names)
{
	char value[32];

	int moved[8];

	/* The sockets may have been given 3, 4, ... themselves: out of the way
	 * first. */
	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++) {
		moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
		assert_true(moved[i] >= 100);
		close(fds[i]);
	}
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(dup2(moved[i], SD_LISTEN_FDS_START + (int)i),
				 SD_LISTEN_FDS_START + (int)i);
		close(moved[i]);
	}
	snprintf(value, sizeof(value), "%d", (int)getpid());
	setenv("LISTEN_PID", value, 1);
	snprintf(value, sizeof(value), "%zu", n);
	setenv("LISTEN_FDS", value, 1);
	if (names)
		setenv("LISTEN_FDNAMES", names, 1);
	else
		unsetenv("LISTEN_FDNAMES");
}

static void close_passed(size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(SD_LISTEN_FDS_START + (int)i);
}

static int setup(void **state)
{
	/* The fds socket activation uses must be free in this process. */
	for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + 3; fd++) {
		if (fd_open(fd)) {
			fprintf(stderr, "fd %d is open in the test process\n", fd);
			return -1;
		}
	}
	snprintf(dir, sizeof(dir), "%s/vcounterd-unit-service.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_takes_vmm_and_control_by_name(void **state)
{
	int fds[] = { unix_socket("control.sock", SOCK_STREAM, true),
		      unix_socket("vmm.sock", SOCK_SEQPACKET, true) };
	struct service_sockets s;
	char err[256], want[300];

	pass(fds, 2, "control:vmm");
	assert_int_equal(service_listen_fds(&s, err, sizeof(err)), 0);
	assert_int_equal(s.control_fd, 3);
	assert_int_equal(s.vmm_fd, 4);
	snprintf(want, sizeof(want), "%s/vmm.sock", dir);
	assert_string_equal(s.vmm_path, want);
	snprintf(want, sizeof(want), "%s/control.sock", dir);
	assert_string_equal(s.control_path, want);
	/* Non-blocking for the event loop, close-on-exec, and the variables
	 * gone. */
	assert_true(fcntl(3, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(4, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(4, F_GETFD) & FD_CLOEXEC);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
	close_passed(2);
}

/* The fd store's fds come back by name, as they are: O_NONBLOCK is a flag
 * of the open file, which a VM fd shares with its VMM. */
static void test_takes_fd_store_names_and_leaves_them_blocking(void **state)
{
	int fds[] = { unix_socket("vmm.sock", SOCK_SEQPACKET, true),
		      memfd_create("state", MFD_CLOEXEC), memfd_create("vm", MFD_CLOEXEC) };
	struct service_sockets s;
	char err[256];

	assert_true(fds[1] >= 0 && fds[2] >= 0);
	pass(fds, 3, "vmm:state:vm12");
	assert_int_equal(service_listen_fds(&s, err, sizeof(err)), 0);
	assert_int_equal(s.vmm_fd, 3);
	assert_int_equal(s.n_stored, 2);
	assert_string_equal(s.stored[0].name, "state");
	assert_int_equal(s.stored[0].fd, 4);
	assert_string_equal(s.stored[1].name, "vm12");
	assert_int_equal(s.stored[1].fd, 5);
	assert_false(fcntl(4, F_GETFL) & O_NONBLOCK);
	assert_false(fcntl(5, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(5, F_GETFD) & FD_CLOEXEC);
	free(s.stored);
	close_passed(3);
}

static void test_nothing_passed_is_no_socket(void **state)
{
	struct service_sockets s;
	char err[256];

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	assert_int_equal(service_listen_fds(&s, err, sizeof(err)), 0);
	assert_int_equal(s.vmm_fd, -1);
	assert_int_equal(s.control_fd, -1);
}

static void test_another_process_fds_are_not_taken(void **state)
{
	struct service_sockets s;
	char err[256];

	setenv("LISTEN_PID", "1", 1);
	setenv("LISTEN_FDS", "2", 1);
	setenv("LISTEN_FDNAMES", "vmm:control", 1);
	assert_int_equal(service_listen_fds(&s, err, sizeof(err)), 0);
	assert_int_equal(s.vmm_fd, -1);
	assert_int_equal(s.control_fd, -1);
}

/* Refused: -EINVAL, err names the fd, every passed fd is closed. */
static void expect_refused(const int *fds, size_t n, const char *names, const char *why)
{
	struct service_sockets s;
	char err[256];

	pass(fds, n, names);
	assert_int_equal(service_listen_fds(&s, err, sizeof(err)), -EINVAL);
	if (!strstr(err, why))
		fprintf(stderr, "err: %s\n", err);
	assert_non_null(strstr(err, why));
	for (size_t i = 0; i < n; i++)
		assert_false(fd_open(SD_LISTEN_FDS_START + (int)i));
}

static void test_vm_name_without_digits_is_refused(void **state)
{
	int fds[] = { memfd_create("vm", MFD_CLOEXEC) };

	expect_refused(fds, 1, "vmx", "fd 3 is named 'vmx'");
}

static void test_unknown_name_is_refused(void **state)
{
	int fds[] = { unix_socket("vmm.sock", SOCK_SEQPACKET, true),
		      unix_socket("x.sock", SOCK_STREAM, true) };

	expect_refused(fds, 2, "vmm:vcounterd.socket",
		       "fd 4 is named 'vcounterd.socket': vcounterd takes 'vmm'");
}

static void test_unnamed_is_refused(void **state)
{
	int fds[] = { unix_socket("vmm.sock", SOCK_SEQPACKET, true) };

	expect_refused(fds, 1, NULL, "fd 3 is named 'unknown'");
}

static void test_a_name_twice_is_refused(void **state)
{
	int fds[] = { unix_socket("a.sock", SOCK_SEQPACKET, true),
		      unix_socket("b.sock", SOCK_SEQPACKET, true) };

	expect_refused(fds, 2, "vmm:vmm", "fds 3 and 4 are both named 'vmm'");
}

static void test_wrong_kinds_are_refused(void **state)
{
	int stream_vmm[] = { unix_socket("vmm.sock", SOCK_STREAM, true) };
	int seqpacket_control[] = { unix_socket("control.sock", SOCK_SEQPACKET, true) };
	int not_listening[] = { unix_socket("vmm.sock", SOCK_SEQPACKET, false) };
	int inet[] = { socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) };

	expect_refused(stream_vmm, 1, "vmm",
		       "fd 3 named 'vmm' is not a listening AF_UNIX SOCK_SEQPACKET socket");
	expect_refused(seqpacket_control, 1, "control",
		       "fd 3 named 'control' is not a listening AF_UNIX SOCK_STREAM socket");
	expect_refused(not_listening, 1, "vmm", "is not a listening");
	assert_true(inet[0] >= 0);
	assert_int_equal(listen(inet[0], 1), 0);
	expect_refused(inet, 1, "control", "is not a listening AF_UNIX");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_takes_vmm_and_control_by_name),
		cmocka_unit_test(test_nothing_passed_is_no_socket),
		cmocka_unit_test(test_another_process_fds_are_not_taken),
		cmocka_unit_test(test_takes_fd_store_names_and_leaves_them_blocking),
		cmocka_unit_test(test_vm_name_without_digits_is_refused),
		cmocka_unit_test(test_unknown_name_is_refused),
		cmocka_unit_test(test_unnamed_is_refused),
		cmocka_unit_test(test_a_name_twice_is_refused),
		cmocka_unit_test(test_wrong_kinds_are_refused),
	};

	return cmocka_run_group_tests_name("service", tests, setup, teardown);
}
