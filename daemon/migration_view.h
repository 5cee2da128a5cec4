/* migration_view.h - what a migration shows outside the flow that runs it
 * (migration.c): to the control API, the metrics and the VMM's notices,
 * which hear each change as observers. Plain: the session state and a few
 * of the glue's fields. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "session.h"

struct migration_view {
	const struct session *s;
	const char *peer_address; /* source: the target daemon's host:port */
	bool by_controller;	  /* started through service Control */
	int64_t planned_delta_cycles;
	uint64_t planned_error_bound_ns;
	bool recovered;	      /* resumed from the session journal */
	bool awaiting_source; /* target: recovered final state not yet confirmed */
};

/* One change of a migration, as its observers hear it. */
struct migration_event {
	struct migration_view view;
	/* The migration's own flag for an observer that counts outcomes
	 * (metrics): set once its outcome is counted, so it is counted once. */
	bool *outcome_counted;
};

/* At most this many observers (migrations_observe). */
#define MIGRATIONS_MAX_OBSERVERS 4
typedef void (*migration_observer_fn)(void *userdata, const struct migration_event *ev);
