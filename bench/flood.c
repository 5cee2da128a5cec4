/* flood.c - see flood.h. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon_harness.h"
#include "flood.h"

static void source_of(unsigned slot, char *buf, size_t size)
{
	if (slot < FLOOD_ONE_HOST)
		snprintf(buf, size, "127.0.0.2");
	else
		snprintf(buf, size, "127.0.9.%u", 1 + (slot - FLOOD_ONE_HOST) / FLOOD_PER_HOST);
}

/* One round: every slot the daemon answered (503, 408) or closed, or that
 * never connected, is opened again. */
static void round_once(struct flood *f)
{
	char source[32];

	for (unsigned p = 0; p < f->n_ports && !atomic_load(&f->stop); p++)
		for (unsigned slot = 0; slot < FLOOD_PER_PORT; slot++) {
			int *fd = &f->fds[p * FLOOD_PER_PORT + slot];
			struct pollfd pfd = { .fd = *fd, .events = POLLIN };

			if (*fd >= 0) {
				if (poll(&pfd, 1, 0) != 1)
					continue;
				close(*fd);
				*fd = -1;
				f->closed_by_daemon[p]++;
			}
			source_of(slot, source, sizeof(source));
			*fd = harness_tcp_connect_from(source, f->ports[p]);
			if (*fd >= 0)
				f->opened[p]++;
			else
				f->connect_failed[p]++;
		}
}

static void *flood_main(void *arg)
{
	struct flood *f = arg;

	while (!atomic_load(&f->stop)) {
		round_once(f);
		atomic_fetch_add(&f->rounds, 1);
		usleep(FLOOD_ROUND_MS * 1000);
	}
	return NULL;
}

int flood_start(struct flood *f, unsigned timeout_ms)
{
	size_t n = FLOOD_FDS(f->n_ports);

	if (f->n_ports == 0 || f->n_ports > FLOOD_MAX_PORTS)
		return -EINVAL;
	f->fds = malloc(n * sizeof(int));
	if (!f->fds)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		f->fds[i] = -1;
	atomic_store(&f->stop, false);
	atomic_store(&f->rounds, 0);
	if (pthread_create(&f->thread, NULL, flood_main, f) != 0) {
		free(f->fds);
		f->fds = NULL;
		return -EAGAIN;
	}
	f->running = true;
	for (unsigned waited = 0; atomic_load(&f->rounds) == 0; waited += 10) {
		if (waited >= timeout_ms)
			return -ETIMEDOUT;
		usleep(10000);
	}
	return 0;
}

void flood_stop(struct flood *f)
{
	if (!f->running)
		return;
	atomic_store(&f->stop, true);
	pthread_join(f->thread, NULL);
	for (size_t i = 0; i < FLOOD_FDS(f->n_ports); i++)
		if (f->fds[i] >= 0)
			close(f->fds[i]);
	free(f->fds);
	f->fds = NULL;
	f->running = false;
}
