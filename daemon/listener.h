/* listener.h - a listening socket served on the event loop, and what it
 * does when accept() fails for want of file descriptors or memory (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM).
 *
 * Such a connection stays in the kernel's backlog and the socket stays
 * readable, so a level-triggered listener would call accept() again at
 * once, for ever: a core spinning and a log line per failure. Instead the
 * listener pauses for LISTENER_PAUSE_MS and a timer resumes it; the
 * connections wait in the backlog and are served once fds are free. One
 * episode (failures less than LISTENER_QUIET_MS apart) gives two log lines:
 * when it starts, and when the socket has gone LISTENER_QUIET_MS without a
 * failure, with the count and the span. Every failure is counted in
 * vcounterd_accept_failures_total{socket}. The VMM socket, the peer link,
 * both control sockets and the metrics endpoint all listen through it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "metrics.h"

#define LISTENER_PAUSE_MS 100
#define LISTENER_QUIET_MS 1000

struct listener;

/* A connection accepted: fd is the callee's (non-blocking, close-on-exec). */
typedef void (*listener_accept_fn)(evutil_socket_t fd, struct sockaddr *sa, int sa_len,
				   void *userdata);

/* Serve fd, a socket listening already. With close_on_free the listener
 * closes it when freed (else its owner does, after). */
int listener_new(struct event_base *base, enum metrics_socket socket, evutil_socket_t fd,
		 bool close_on_free, listener_accept_fn cb, void *userdata, struct listener **ret);
/* Bind a TCP socket to sa (SO_REUSEADDR), listen with backlog and serve it. */
int listener_new_bind(struct event_base *base, enum metrics_socket socket,
		      const struct sockaddr *sa, socklen_t sa_len, int backlog,
		      listener_accept_fn cb, void *userdata, struct listener **ret);
struct listener *listener_free(struct listener *l);

evutil_socket_t listener_fd(const struct listener *l);
/* Failures in the running episode, 0 when none runs. */
uint64_t listener_episode_failures(const struct listener *l);
