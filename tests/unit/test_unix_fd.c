/* test_unix_fd.c - message + fd passing over real SOCK_SEQPACKET socket
 * pairs with real fds (pipe, eventfd, memfd, /dev/null), and every error
 * path closing what arrived. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "macro.h"
#include "unix_fd.h"

struct pair {
	int tx, rx;
};

static int setup_pair(void **state)
{
	static struct pair p;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	p.tx = sv[0];
	p.rx = sv[1];
	*state = &p;
	return 0;
}

static int teardown_pair(void **state)
{
	struct pair *p = *state;

	close_nointr(p->tx);
	close_nointr(p->rx);
	return 0;
}

static int count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Four fds of different kinds: pipe read end, eventfd, memfd, /dev/null. */
static void open_sample_fds(int fds[4])
{
	int pfd[2];

	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	close(pfd[1]);
	fds[0] = pfd[0];
	fds[1] = eventfd(0, EFD_CLOEXEC);
	fds[2] = memfd_create("unix_fd_test", MFD_CLOEXEC);
	fds[3] = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int i = 0; i < 4; i++)
		assert_true(fds[i] >= 0);
}

static void assert_same_file(int a, int b)
{
	struct stat sa, sb;

	assert_int_equal(fstat(a, &sa), 0);
	assert_int_equal(fstat(b, &sb), 0);
	assert_int_equal(sa.st_dev, sb.st_dev);
	assert_int_equal(sa.st_ino, sb.st_ino);
}

static void test_round_trip_delivers_message_and_same_files(void **state)
{
	struct pair *p = *state;
	int fds[4], got[UNIX_FD_MAX_FDS];
	char buf[64];
	size_t n_got = 99;
	ssize_t n;

	open_sample_fds(fds);
	assert_int_equal(unix_fd_send(p->tx, "register", 8, fds, 4), 0);
	n = unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got);
	assert_int_equal(n, 8);
	assert_memory_equal(buf, "register", 8);
	assert_int_equal(n_got, 4);
	for (int i = 0; i < 4; i++) {
		/* New numbers, same open files, close-on-exec. */
		for (int j = 0; j < 4; j++)
			assert_int_not_equal(got[i], fds[j]);
		assert_same_file(got[i], fds[i]);
		assert_true(fcntl(got[i], F_GETFD) & FD_CLOEXEC);
	}
	/* Writes through one are seen through the other: it is the same memfd. */
	assert_int_equal(write(got[2], "x", 1), 1);
	assert_int_equal(lseek(fds[2], 0, SEEK_CUR), 1);

	unix_fd_close_all(got, n_got);
	for (int i = 0; i < 4; i++)
		assert_int_equal(got[i], -1);
	unix_fd_close_all(fds, 4);
}

static void test_message_without_fds_reports_zero_fds(void **state)
{
	struct pair *p = *state;
	int got[UNIX_FD_MAX_FDS];
	char buf[16];
	size_t n_got = 99;

	assert_int_equal(unix_fd_send(p->tx, "status", 6, NULL, 0), 0);
	assert_int_equal(unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got), 6);
	assert_int_equal(n_got, 0);
}

static void test_oversize_message_is_emsgsize_and_closes_fds(void **state)
{
	struct pair *p = *state;
	int fds[4], got[UNIX_FD_MAX_FDS];
	char buf[4];
	size_t n_got = 99;
	int before;

	open_sample_fds(fds);
	before = count_open_fds();
	assert_int_equal(unix_fd_send(p->tx, "too long for buf", 16, fds, 4), 0);
	assert_int_equal(unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got), -EMSGSIZE);
	assert_int_equal(n_got, 0);
	assert_int_equal(count_open_fds(), before);
	unix_fd_close_all(fds, 4);
}

static void test_more_fds_than_receiver_accepts_is_echrng_and_closes_fds(void **state)
{
	struct pair *p = *state;
	int fds[4], got[2];
	char buf[16];
	size_t n_got = 99;
	int before;

	open_sample_fds(fds);
	before = count_open_fds();

	/* The kernel installs the 2 that fit and flags MSG_CTRUNC. */
	assert_int_equal(unix_fd_send(p->tx, "four", 4, fds, 4), 0);
	assert_int_equal(unix_fd_recv_max(p->rx, buf, sizeof(buf), 2, got, &n_got), -ECHRNG);
	assert_int_equal(n_got, 0);
	assert_int_equal(count_open_fds(), before);

	/* A message that must carry none. */
	n_got = 99;
	assert_int_equal(unix_fd_send(p->tx, "one", 3, fds, 1), 0);
	assert_int_equal(unix_fd_recv_max(p->rx, buf, sizeof(buf), 0, NULL, &n_got), -ECHRNG);
	assert_int_equal(n_got, 0);
	assert_int_equal(count_open_fds(), before);

	/* And the socket goes on working. */
	assert_int_equal(unix_fd_send(p->tx, "two", 3, fds, 2), 0);
	assert_int_equal(unix_fd_recv_max(p->rx, buf, sizeof(buf), 2, got, &n_got), 3);
	assert_int_equal(n_got, 2);
	unix_fd_close_all(got, n_got);
	unix_fd_close_all(fds, 4);
}

static long proc_limits_nofile_soft(void)
{
	FILE *f = fopen("/proc/self/limits", "re");
	char line[256];
	long soft = -1;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Max open files %ld", &soft) == 1)
			break;
	fclose(f);
	return soft;
}

/* RLIMIT_NOFILE caps fd numbers; when the receiver runs out while the
 * kernel installs fds it stops and sets MSG_CTRUNC (net/core/scm.c). That
 * is -EMFILE, not the -ECHRNG of a sender that sent too many: the daemon
 * tells a VMM it is out of fds, not that the VMM sent too many. */
static void test_receiver_out_of_fd_slots_is_emfile_and_closes_fds(void **state)
{
	struct pair *p = *state;
	int fds[4], got[UNIX_FD_MAX_FDS];
	struct rlimit old, lim;
	char buf[16];
	size_t n_got = 99;
	int before, limit, free_slots = 0;
	ssize_t n;

	open_sample_fds(fds);
	before = count_open_fds();
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);

	/* Lowest limit that leaves exactly 2 free fd numbers. */
	for (limit = 0; free_slots < 2; limit++)
		if (fcntl(limit, F_GETFD) < 0)
			free_slots++;
	lim = old;
	lim.rlim_cur = (rlim_t)limit;
	assert_int_equal(unix_fd_send(p->tx, "four", 4, fds, 4), 0);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	if (proc_limits_nofile_soft() != limit) {
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
		unix_fd_close_all(fds, 4);
		print_message("skipped: setrlimit(RLIMIT_NOFILE) did not reach the kernel "
			      "(valgrind emulates it)\n");
		skip();
	}
	n = unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

	assert_int_equal(n, -EMFILE);
	assert_int_equal(n_got, 0);
	assert_int_equal(count_open_fds(), before);
	unix_fd_close_all(fds, 4);
}

static void test_credentials_cmsg_is_ebadmsg_and_closes_fds(void **state)
{
	struct pair *p = *state;
	int fds[4], got[UNIX_FD_MAX_FDS];
	int one = 1;
	char buf[16];
	size_t n_got = 99;
	int before;

	open_sample_fds(fds);
	assert_int_equal(setsockopt(p->rx, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	before = count_open_fds();
	assert_int_equal(unix_fd_send(p->tx, "creds", 5, fds, 4), 0);
	assert_int_equal(unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got), -EBADMSG);
	assert_int_equal(n_got, 0);
	assert_int_equal(count_open_fds(), before);
	unix_fd_close_all(fds, 4);
}

static void send_raw(int sock, const void *data, size_t len, const int *fds, size_t n_fds,
		     int expect_errno)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(300 * sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cmsg;
	ssize_t n;

	assert_true(n_fds > 0 && n_fds <= 300);
	memset(&control, 0, sizeof(control));
	msg.msg_control = control.buf;
	msg.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
	memcpy(CMSG_DATA(cmsg), fds, n_fds * sizeof(int));
	n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	if (expect_errno) {
		assert_int_equal(n, -1);
		assert_int_equal(errno, expect_errno);
	} else {
		assert_int_equal(n, (ssize_t)len);
	}
}

static void test_fds_on_empty_message_are_ebadmsg_and_closed(void **state)
{
	struct pair *p = *state;
	int fds[4], got[UNIX_FD_MAX_FDS];
	char buf[16];
	size_t n_got = 99;
	int before;

	open_sample_fds(fds);
	before = count_open_fds();
	send_raw(p->tx, "", 0, fds, 4, 0);
	assert_int_equal(unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got), -EBADMSG);
	assert_int_equal(n_got, 0);
	assert_int_equal(count_open_fds(), before);
	unix_fd_close_all(fds, 4);
}

/* The fact UNIX_FD_MAX_FDS rests on: SCM_MAX_FD (253) per message. */
static void test_kernel_carries_at_most_scm_max_fd_fds(void **state)
{
	struct pair *p = *state;
	int fds[UNIX_FD_MAX_FDS + 1], got[UNIX_FD_MAX_FDS];
	char buf[16];
	size_t n_got = 0;
	int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	assert_true(null_fd >= 0);
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		fds[i] = null_fd;

	send_raw(p->tx, "x", 1, fds, UNIX_FD_MAX_FDS + 1, EINVAL);
	assert_int_equal(unix_fd_send(p->tx, "x", 1, fds, UNIX_FD_MAX_FDS + 1), -EINVAL);

	assert_int_equal(unix_fd_send(p->tx, "full", 4, fds, UNIX_FD_MAX_FDS), 0);
	assert_int_equal(unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got), 4);
	assert_int_equal(n_got, UNIX_FD_MAX_FDS);
	for (size_t i = 0; i < n_got; i++)
		assert_same_file(got[i], null_fd);
	unix_fd_close_all(got, n_got);
	close(null_fd);
}

static void test_send_rejects_bad_arguments(void **state)
{
	struct pair *p = *state;
	int fd = 0;

	assert_int_equal(unix_fd_send(p->tx, "", 0, NULL, 0), -EINVAL);
	assert_int_equal(unix_fd_send(p->tx, NULL, 1, NULL, 0), -EINVAL);
	assert_int_equal(unix_fd_send(p->tx, "x", 1, NULL, 1), -EINVAL);
	assert_int_equal(unix_fd_send(-1, "x", 1, &fd, 1), -EBADF);
}

static void test_orderly_shutdown_returns_zero(void **state)
{
	struct pair *p = *state;
	int got[UNIX_FD_MAX_FDS];
	char buf[16];
	size_t n_got = 99;

	close(p->tx);
	p->tx = -1;
	assert_int_equal(unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got), 0);
	assert_int_equal(n_got, 0);
}

static void test_send_to_closed_peer_is_epipe_without_signal(void **state)
{
	struct pair *p = *state;

	close(p->rx);
	p->rx = -1;
	/* With SIGPIPE at its default action the test process would die. */
	assert_int_equal(unix_fd_send(p->tx, "x", 1, NULL, 0), -EPIPE);
}

static int wake_fd = -1;

static void on_alarm(int sig)
{
	(void)!write(wake_fd, "w", 1);
}

/* The child sends only after the parent's signal handler ran, so the
 * parent's recvmsg is interrupted (unless the timer fired before it got
 * there) and must retry rather than return -EINTR. */
static void test_recv_retries_after_signal(void **state)
{
	struct pair *p = *state;
	struct sigaction sa = { .sa_handler = on_alarm }, old_sa;
	struct itimerval timer = { .it_value = { .tv_usec = 50000 } };
	int wake[2], got[UNIX_FD_MAX_FDS], status;
	char buf[16];
	size_t n_got = 99;
	pid_t child;

	assert_int_equal(pipe2(wake, O_CLOEXEC), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char c;

		close(wake[1]);
		if (read(wake[0], &c, 1) != 1)
			_exit(1);
		_exit(unix_fd_send(p->tx, "late", 4, NULL, 0) == 0 ? 0 : 1);
	}
	close(wake[0]);
	wake_fd = wake[1];
	/* No SA_RESTART: the kernel must hand EINTR to the caller. */
	assert_int_equal(sigaction(SIGALRM, &sa, &old_sa), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &timer, NULL), 0);

	assert_int_equal(unix_fd_recv(p->rx, buf, sizeof(buf), got, &n_got), 4);
	assert_memory_equal(buf, "late", 4);
	assert_int_equal(n_got, 0);

	assert_int_equal(sigaction(SIGALRM, &old_sa, NULL), 0);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(wake[1]);
	wake_fd = -1;
}

static void test_peer_cred_matches_this_process(void **state)
{
	struct pair *p = *state;
	pid_t pid = 0;
	uid_t uid = 1;
	gid_t gid = 1;

	assert_int_equal(unix_fd_peer_cred(p->rx, &pid, &uid, &gid), 0);
	assert_int_equal(pid, getpid());
	assert_int_equal(uid, getuid());
	assert_int_equal(gid, getgid());
}

static void test_peer_cred_of_unconnected_socket_fails(void **state)
{
	_cleanup_close_ int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	pid_t pid = 42;

	assert_true(s >= 0);
	assert_int_equal(unix_fd_peer_cred(s, &pid, NULL, NULL), -ENOTCONN);
	assert_int_equal(pid, 42);
	assert_int_equal(unix_fd_peer_cred(-1, &pid, NULL, NULL), -EBADF);
}

static void test_address_takes_what_fits_sun_path(void **state)
{
	struct sockaddr_un sa;
	char path[sizeof(sa.sun_path) + 1];

	memset(path, 'a', sizeof(path));
	path[sizeof(sa.sun_path) - 1] = '\0'; /* 107 bytes and the NUL: fits */
	assert_int_equal(unix_fd_address(path, &sa), 0);
	assert_int_equal(sa.sun_family, AF_UNIX);
	assert_string_equal(sa.sun_path, path);
	path[sizeof(sa.sun_path) - 1] = 'a';
	path[sizeof(sa.sun_path)] = '\0'; /* 108: its NUL would not fit */
	assert_int_equal(unix_fd_address(path, &sa), -ENAMETOOLONG);
}

static void test_connect_reaches_a_listener_of_its_type(void **state)
{
	char dir[] = "/tmp/test_unix_fd.XXXXXX";
	char path[64];
	struct sockaddr_un sa;
	int listener, fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sock", dir);
	assert_int_equal(unix_fd_connect(path, SOCK_SEQPACKET), -ENOENT);
	listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(listener >= 0);
	assert_int_equal(unix_fd_address(path, &sa), 0);
	assert_int_equal(bind(listener, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(listener, 4), 0);

	fd = unix_fd_connect(path, SOCK_SEQPACKET);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(unix_fd_send(fd, "x", 1, NULL, 0), 0);
	close(fd);
	/* A stream socket cannot connect to a seqpacket listener. */
	assert_int_equal(unix_fd_connect(path, SOCK_STREAM), -EPROTOTYPE);
	close(listener);
	/* Nobody listens any more: the file is still there. */
	assert_int_equal(unix_fd_connect(path, SOCK_SEQPACKET), -ECONNREFUSED);
	unlink(path);
	rmdir(dir);
}

#define PAIR_TEST(f) cmocka_unit_test_setup_teardown(f, setup_pair, teardown_pair)

int main(void)
{
	const struct CMUnitTest tests[] = {
		PAIR_TEST(test_round_trip_delivers_message_and_same_files),
		PAIR_TEST(test_message_without_fds_reports_zero_fds),
		PAIR_TEST(test_oversize_message_is_emsgsize_and_closes_fds),
		PAIR_TEST(test_more_fds_than_receiver_accepts_is_echrng_and_closes_fds),
		PAIR_TEST(test_receiver_out_of_fd_slots_is_emfile_and_closes_fds),
		PAIR_TEST(test_credentials_cmsg_is_ebadmsg_and_closes_fds),
		PAIR_TEST(test_fds_on_empty_message_are_ebadmsg_and_closed),
		PAIR_TEST(test_kernel_carries_at_most_scm_max_fd_fds),
		PAIR_TEST(test_send_rejects_bad_arguments),
		PAIR_TEST(test_orderly_shutdown_returns_zero),
		PAIR_TEST(test_send_to_closed_peer_is_epipe_without_signal),
		PAIR_TEST(test_recv_retries_after_signal),
		PAIR_TEST(test_peer_cred_matches_this_process),
		PAIR_TEST(test_peer_cred_of_unconnected_socket_fails),
		cmocka_unit_test(test_address_takes_what_fits_sun_path),
		cmocka_unit_test(test_connect_reaches_a_listener_of_its_type),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
