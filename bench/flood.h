/* flood.h - strangers on a daemon's TCP ports, for load_bench --flood: from
 * many loopback addresses (other hosts, as far as the daemon can tell) they
 * connect and never say a word, and connect again as soon as the daemon
 * closes them: what holds the slots of connections not yet authenticated
 * (daemon/admission.h) as a slowloris or a SYN-less handshake flood would. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define FLOOD_MAX_PORTS 4
#define FLOOD_ONE_HOST	200 /* connections from 127.0.0.2, per port */
#define FLOOD_HOSTS	40  /* and 8 from each of 127.0.9.1 .. .40, per port */
#define FLOOD_PER_HOST	8
#define FLOOD_PER_PORT	(FLOOD_ONE_HOST + FLOOD_HOSTS * FLOOD_PER_HOST)
#define FLOOD_ROUND_MS	50 /* how often closed connections are opened again */

struct flood {
	int ports[FLOOD_MAX_PORTS];
	const char *names[FLOOD_MAX_PORTS];
	unsigned n_ports;
	pthread_t thread;
	atomic_bool stop;
	atomic_uint rounds; /* rounds done: after the first, every slot is taken */
	bool running;
	int *fds; /* n_ports * FLOOD_PER_PORT */
	/* Per port: connections opened, and closed by the daemon. */
	uint64_t opened[FLOOD_MAX_PORTS], closed_by_daemon[FLOOD_MAX_PORTS];
	uint64_t connect_failed[FLOOD_MAX_PORTS];
};

/* The fds a flood of n_ports ports holds at most. */
#define FLOOD_FDS(n_ports) ((n_ports)*FLOOD_PER_PORT)

/* Start flooding f->ports[0..n_ports) (named for the report) and wait, up
 * to timeout_ms, until every connection of the first round is open: 0,
 * -ETIMEDOUT, or -errno. */
int flood_start(struct flood *f, unsigned timeout_ms);
/* Stop, close every connection, join. */
void flood_stop(struct flood *f);
