/* test_pidwatch.c - daemon/pidwatch.c: an event that fires when a real
 * child process exits, and a process already gone. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "pidwatch.h"

static int fired;

static void exit_cb(evutil_socket_t fd, short what, void *arg)
{
	assert_ptr_equal(arg, &fired);
	fired++;
}

static void test_fires_when_the_process_exits(void **state)
{
	struct event_base *base = event_base_new();
	const struct timeval tick = { .tv_usec = 100000 };
	struct event *ev = NULL;
	int p[2], status, r;
	pid_t child;

	assert_non_null(base);
	assert_int_equal(pipe(p), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char c;

		close(p[1]);
		(void)!read(p[0], &c, 1); /* until the test closes its end */
		_exit(0);
	}
	close(p[0]);
	r = pidwatch_new(base, child, exit_cb, &fired, &ev);
	if (r == -ENOSYS) {
		close(p[1]);
		waitpid(child, &status, 0);
		event_base_free(base);
		print_message("skipped: no pidfd_open here (valgrind 3.19 lacks it)\n");
		skip();
	}
	assert_int_equal(r, 0);
	/* Alive: nothing fires. */
	event_base_loopexit(base, &tick);
	event_base_dispatch(base);
	assert_int_equal(fired, 0);
	close(p[1]);
	for (int i = 0; i < 50 && !fired; i++) {
		event_base_loopexit(base, &tick);
		event_base_dispatch(base);
	}
	assert_int_equal(fired, 1);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_null(pidwatch_unref(ev));
	assert_null(pidwatch_unref(NULL));
	event_base_free(base);
}

static void test_a_process_gone_already_is_esrch(void **state)
{
	struct event_base *base = event_base_new();
	struct event *ev = NULL;
	int status, r;
	pid_t child = fork();

	assert_true(child >= 0);
	if (child == 0)
		_exit(0);
	assert_int_equal(waitpid(child, &status, 0), child);
	r = pidwatch_new(base, child, exit_cb, &fired, &ev);
	assert_true(r == -ESRCH || r == -ENOSYS);
	assert_null(ev);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fires_when_the_process_exits),
		cmocka_unit_test(test_a_process_gone_already_is_esrch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
