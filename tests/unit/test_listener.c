/* test_listener.c - a listening socket (daemon/listener.c) at this process's
 * own file descriptor limit, on a real unix socket and a real event loop:
 * accept() fails with EMFILE while connections wait in the backlog. The
 * listener must pause rather than spin, say so once per episode, count every
 * failure, and serve the waiting connections once fds are free again. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "listener.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"

#define CLIENTS 8

static struct event_base *base;
static int accepted_fds[CLIENTS + 1];
static size_t n_accepted;

static void accept_cb(evutil_socket_t fd, struct sockaddr *sa, int sa_len, void *userdata)
{
	assert_ptr_equal(userdata, &n_accepted);
	assert_true(n_accepted < ELEMENTSOF(accepted_fds));
	accepted_fds[n_accepted++] = fd;
}

static void run_for_ms(unsigned ms)
{
	const struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* A listening unix stream socket in the abstract namespace, and its address. */
static int listen_abstract(struct sockaddr_un *sa, socklen_t *len)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	assert_true(fd >= 0);
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			   (size_t)snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1,
					    "vc-test-listener-%d", (int)getpid()));
	assert_int_equal(bind(fd, (struct sockaddr *)sa, *len), 0);
	assert_int_equal(listen(fd, 64), 0);
	return fd;
}

/* The lowest fd number free now: with RLIMIT_NOFILE at it, every new fd fails EMFILE. */
static int lowest_free_fd(void)
{
	int fd = fcntl(0, F_DUPFD, 0);

	assert_true(fd >= 0);
	close(fd);
	return fd;
}

/* Lines of the log file (stderr here) that contain needle. */
static int count_lines(FILE *f, const char *needle)
{
	char line[1024];
	int n = 0;

	fflush(stderr);
	rewind(f);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	return n;
}

static void test_out_of_fds_pauses_counts_once_and_serves_the_backlog_after(void **state)
{
	struct sockaddr_un sa;
	struct listener *l = NULL;
	struct rlimit saved, tight;
	int clients[CLIENTS], lfd, stderr_saved, probe, restored, warned, emfile;
	size_t at_limit;
	uint64_t episode;
	size_t served;
	uint64_t failures;
	socklen_t len;
	FILE *log;

	/* valgrind keeps its own file table: it emulates RLIMIT_NOFILE, and
	 * accept() does not come back from it when the limit is raised. */
	if (getenv("LD_PRELOAD") && strstr(getenv("LD_PRELOAD"), "vgpreload")) {
		print_message("skipped: under valgrind, whose file table does not follow "
			      "RLIMIT_NOFILE\n");
		skip();
	}
	/* The log goes to stderr, and stderr to a file this test reads back. */
	log = tmpfile();
	assert_non_null(log);
	stderr_saved = dup(STDERR_FILENO);
	assert_true(stderr_saved >= 0);
	assert_true(dup2(fileno(log), STDERR_FILENO) >= 0);

	lfd = listen_abstract(&sa, &len);
	assert_int_equal(
		listener_new(base, METRICS_SOCKET_VMM, lfd, true, accept_cb, &n_accepted, &l), 0);
	for (int i = 0; i < CLIENTS; i++) {
		clients[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(clients[i] >= 0);
		assert_int_equal(connect(clients[i], (struct sockaddr *)&sa, len), 0);
	}

	/* No fd to accept into: one second at the limit. A listener that
	 * retries at once fails millions of times here, and logs each. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	tight = saved;
	tight.rlim_cur = (rlim_t)lowest_free_fd();
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
	probe = fcntl(0, F_DUPFD_CLOEXEC, 0);
	run_for_ms(1000);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
	restored = fcntl(0, F_DUPFD_CLOEXEC, 0);
	if (probe >= 0 || restored < 0) {
		/* valgrind keeps its own file table and emulates the limit,
		 * and does not raise it again. */
		if (probe >= 0)
			close(probe);
		if (restored >= 0)
			close(restored);
		dup2(stderr_saved, STDERR_FILENO);
		close(stderr_saved);
		fclose(log);
		for (int i = 0; i < CLIENTS; i++)
			close(clients[i]);
		listener_free(l);
		print_message("skipped: setrlimit(RLIMIT_NOFILE) did not reach the kernel, or "
			      "did not come back (valgrind emulates it)\n");
		skip();
	}
	close(restored);

	failures = vcd_metrics.accept_failures[METRICS_SOCKET_VMM];
	at_limit = n_accepted;
	episode = listener_episode_failures(l);
	warned = count_lines(log, "accept on the vmm socket failed");
	emfile = count_lines(log, "Too many open files");
	/* Fds free again: the next resume serves every waiting connection,
	 * and a quiet second ends the episode with one line. */
	for (int i = 0; i < 40 && n_accepted < CLIENTS; i++)
		run_for_ms(LISTENER_PAUSE_MS);
	served = n_accepted;
	for (int i = 0; i < 30 && listener_episode_failures(l) > 0; i++)
		run_for_ms(LISTENER_QUIET_MS / 4);
	/* stderr back before any assertion, so that a failure can be read. */
	dup2(stderr_saved, STDERR_FILENO);
	close(stderr_saved);
	fprintf(stdout, "accept failures in 1 s at the limit: %llu\n",
		(unsigned long long)failures);
	assert_int_equal(at_limit, 0);
	assert_true(failures >= 2);
	assert_true(failures <= 1000 / LISTENER_PAUSE_MS + 2);
	assert_int_equal(episode, failures);
	assert_int_equal(vcd_metrics.accept_failures[METRICS_SOCKET_PEER], 0);
	assert_int_equal(warned, 1);
	assert_int_equal(emfile, 1);
	assert_int_equal(served, CLIENTS);
	assert_int_equal(listener_episode_failures(l), 0);
	assert_int_equal(vcd_metrics.accept_failures[METRICS_SOCKET_VMM], failures);
	assert_int_equal(count_lines(log, "accepting on the vmm socket again"), 1);
	assert_int_equal(count_lines(log, "accept on the vmm socket failed"), 1);

	fclose(log);
	for (size_t i = 0; i < n_accepted; i++)
		close(accepted_fds[i]);
	for (int i = 0; i < CLIENTS; i++)
		close(clients[i]);
	listener_free(l);
}

/* Served as usual when nothing fails: no episode, nothing counted. */
static void test_accepts_without_failure_count_nothing(void **state)
{
	struct sockaddr_un sa;
	struct listener *l = NULL;
	uint64_t before = vcd_metrics.accept_failures[METRICS_SOCKET_PEER];
	socklen_t len;
	int lfd = listen_abstract(&sa, &len), c;

	n_accepted = 0;
	assert_int_equal(
		listener_new(base, METRICS_SOCKET_PEER, lfd, true, accept_cb, &n_accepted, &l), 0);
	assert_int_equal(listener_fd(l), lfd);
	c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(c, (struct sockaddr *)&sa, len), 0);
	run_for_ms(100);
	assert_int_equal(n_accepted, 1);
	assert_int_equal(listener_episode_failures(l), 0);
	assert_int_equal(vcd_metrics.accept_failures[METRICS_SOCKET_PEER], before);
	close(accepted_fds[0]);
	close(c);
	listener_free(l);
}

static void test_refuses_an_unknown_socket_kind(void **state)
{
	struct listener *l = NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_int_equal(
		listener_new(base, _METRICS_SOCKET_MAX, fd, false, accept_cb, &n_accepted, &l),
		-EINVAL);
	assert_null(l);
	assert_int_equal(
		listener_new(base, METRICS_SOCKET_VMM, -1, false, accept_cb, &n_accepted, &l),
		-EINVAL);
	close(fd);
}

static int group_setup(void **state)
{
	log_set_target(LOG_TARGET_STDERR);
	log_setup(LOG_INFO);
	base = event_base_new();
	return base ? 0 : -1;
}

static int group_teardown(void **state)
{
	event_base_free(base);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_out_of_fds_pauses_counts_once_and_serves_the_backlog_after),
		cmocka_unit_test(test_accepts_without_failure_count_nothing),
		cmocka_unit_test(test_refuses_an_unknown_socket_kind),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
