/* pidwatch.h - an event that fires once when a process exits, over a pidfd
 * (pidfd_open(2), Linux 5.3): how the VMM socket and the fd store learn that
 * a VMM has gone. The event owns its pidfd: pidwatch_unref() closes it. */
#pragma once

#include <sys/types.h>

#include <event2/event.h>

/* 0 with *ret armed, -ESRCH when pid has exited already, or another -errno
 * (-ENOSYS where pidfds are missing, valgrind 3.19 among them). */
int pidwatch_new(struct event_base *base, pid_t pid, event_callback_fn cb, void *arg,
		 struct event **ret);
/* Takes NULL; returns NULL. */
struct event *pidwatch_unref(struct event *ev);
