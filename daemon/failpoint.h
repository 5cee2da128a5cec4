/* failpoint.h - fail points for the fault-injection tests (libfiu). Built
 * in only with meson -Dfailpoints=enabled (or auto and libfiu-dev present):
 * otherwise every point is a constant 0 and costs nothing.
 *
 * VCOUNTERD_FAILPOINTS (read once at start-up) enables points by name,
 * separated by commas: "journal/fsync/target/final=EIO" makes that fsync
 * fail with EIO; "crash/target/final" kills the daemon (SIGKILL) right
 * after it journaled that step, before the step takes effect. A point
 * fires once unless its name ends in "*" (every time). The names are
 * listed in doc/vcounterd.8 (FAULT INJECTION). */
#pragma once

#include <stdbool.h>

/* Parse VCOUNTERD_FAILPOINTS: 0, or -EINVAL (logged) for a bad list, or
 * -EOPNOTSUPP when it is set but this build has no fail points. */
int failpoints_init(void);
bool failpoints_built_in(void);

/* -errno configured for point "<prefix>/<tag>", or 0. */
int failpoint_errno(const char *prefix, const char *tag);
/* SIGKILL this process if "crash/<tag>" is enabled. */
void failpoint_crash(const char *tag);
