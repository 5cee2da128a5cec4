/* report.h - MigrationReport (wire) to struct vcounter_report (public API),
 * shared by the VMM calls (vcounter.c: vcounter_apply) and the controller
 * calls (control.c: a migration's report). */
#pragma once

#include <stddef.h>

#include "vcounter.pb-c.h"
#include "vcounter/vcounter.h"

/* Validate pb (wire_report_from_pb's checks) and fill *ret, whose two
 * offsets arrays are malloc'd (report_clear frees them). -EINVAL with a
 * sentence in err for an invalid report, -ENOMEM; *ret is written only on
 * success. */
int report_from_pb(const Vcounter__V1__MigrationReport *pb, struct vcounter_report *ret, char *err,
		   size_t err_size);
/* Free the offsets arrays and zero them; the struct stays the caller's. */
void report_clear(struct vcounter_report *report);
