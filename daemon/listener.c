/* listener.c - see listener.h. Over libevent's evconnlistener, which
 * accepts in a loop until EAGAIN and hands any other error to its error
 * callback, here the start of a pause. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include <event2/listener.h>

#include "cleanup.h"
#include "clockns.h"
#include "listener.h"
#include "log.h"
#include "macro.h"

enum pause_state {
	PAUSE_NONE,	/* no episode */
	PAUSE_PAUSED,	/* not accepting; the timer resumes */
	PAUSE_WATCHING, /* accepting again; the timer ends the episode if nothing fails */
};

struct listener {
	struct evconnlistener *evl;
	struct event *timer;
	enum metrics_socket socket;
	listener_accept_fn cb;
	void *userdata;
	enum pause_state state;
	uint64_t episode_start_ns;
	uint64_t episode_failures;
};

static void arm(struct listener *l, unsigned ms)
{
	const struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	evtimer_add(l->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	uint64_t span_ms;

	switch (l->state) {
	case PAUSE_PAUSED:
		evconnlistener_enable(l->evl);
		l->state = PAUSE_WATCHING;
		arm(l, LISTENER_QUIET_MS);
		break;
	case PAUSE_WATCHING:
		span_ms = (clock_ns(CLOCK_MONOTONIC) - l->episode_start_ns) / NSEC_PER_MSEC;
		log_info("accepting on the %s socket again: %" PRIu64
			 " accepts failed over %" PRIu64 " ms",
			 metrics_socket_to_string(l->socket), l->episode_failures, span_ms);
		l->state = PAUSE_NONE;
		l->episode_failures = 0;
		break;
	case PAUSE_NONE:
		break;
	}
}

static void error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();

	vcd_metrics.accept_failures[l->socket]++;
	if (l->state == PAUSE_NONE) {
		l->episode_start_ns = clock_ns(CLOCK_MONOTONIC);
		log_warning_errno(-err,
				  "accept on the %s socket failed; pausing it %d ms at a time, its "
				  "connections waiting, until accepts succeed again",
				  metrics_socket_to_string(l->socket), LISTENER_PAUSE_MS);
	}
	l->episode_failures++;
	l->state = PAUSE_PAUSED;
	evconnlistener_disable(evl);
	arm(l, LISTENER_PAUSE_MS);
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
		      int sa_len, void *arg)
{
	struct listener *l = arg;

	l->cb(fd, sa, sa_len, l->userdata);
}

static struct listener *listener_alloc(struct event_base *base, enum metrics_socket socket,
				       listener_accept_fn cb, void *userdata)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->timer = evtimer_new(base, timer_cb, l);
	if (!l->timer) {
		free(l);
		return NULL;
	}
	l->socket = socket;
	l->cb = cb;
	l->userdata = userdata;
	return l;
}

static int listener_finish(struct listener *l, struct listener **ret)
{
	if (!l->evl) {
		int r = errno > 0 ? -errno : -ENOMEM;

		listener_free(l);
		return r;
	}
	evconnlistener_set_error_cb(l->evl, error_cb);
	*ret = l;
	return 0;
}

int listener_new(struct event_base *base, enum metrics_socket socket, evutil_socket_t fd,
		 bool close_on_free, listener_accept_fn cb, void *userdata, struct listener **ret)
{
	struct listener *l;

	if (!base || fd < 0 || !cb || !ret || !metrics_socket_to_string(socket))
		return -EINVAL;
	l = listener_alloc(base, socket, cb, userdata);
	if (!l)
		return -ENOMEM;
	/* backlog 0: the socket is listening already. */
	errno = 0;
	l->evl = evconnlistener_new(
		base, accept_cb, l,
		LEV_OPT_CLOSE_ON_EXEC | (close_on_free ? LEV_OPT_CLOSE_ON_FREE : 0), 0, fd);
	return listener_finish(l, ret);
}

int listener_new_bind(struct event_base *base, enum metrics_socket socket,
		      const struct sockaddr *sa, socklen_t sa_len, int backlog,
		      listener_accept_fn cb, void *userdata, struct listener **ret)
{
	struct listener *l;

	if (!base || !sa || !cb || !ret || !metrics_socket_to_string(socket))
		return -EINVAL;
	l = listener_alloc(base, socket, cb, userdata);
	if (!l)
		return -ENOMEM;
	errno = 0;
	l->evl = evconnlistener_new_bind(base, accept_cb, l,
					 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
						 LEV_OPT_REUSEABLE,
					 backlog, sa, (int)sa_len);
	if (!l->evl && errno == 0)
		errno = EADDRNOTAVAIL;
	return listener_finish(l, ret);
}

struct listener *listener_free(struct listener *l)
{
	if (!l)
		return NULL;
	if (l->evl)
		evconnlistener_free(l->evl);
	event_unref(l->timer);
	free(l);
	return NULL;
}

evutil_socket_t listener_fd(const struct listener *l)
{
	return l && l->evl ? evconnlistener_get_fd(l->evl) : -1;
}

uint64_t listener_episode_failures(const struct listener *l)
{
	return l && l->state != PAUSE_NONE ? l->episode_failures : 0;
}
