/* pidwatch.c - see pidwatch.h. */
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "pidwatch.h"

int pidwatch_new(struct event_base *base, pid_t pid, event_callback_fn cb, void *arg,
		 struct event **ret)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct event *ev;

	if (fd < 0)
		return -errno;
	ev = event_new(base, fd, EV_READ, cb, arg);
	if (!ev || event_add(ev, NULL) < 0) {
		event_unref(ev);
		close_nointr(fd);
		return -ENOMEM;
	}
	*ret = ev;
	return 0;
}

struct event *pidwatch_unref(struct event *ev)
{
	if (ev) {
		close_nointr(event_get_fd(ev));
		event_free(ev);
	}
	return NULL;
}
