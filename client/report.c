/* report.c - a wire MigrationReport as the public struct vcounter_report
 * (report.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "report.h"
#include "wire.h"

int report_from_pb(const Vcounter__V1__MigrationReport *pb, struct vcounter_report *ret, char *err,
		   size_t err_size)
{
	_cleanup_free_ struct migration_report *rep = NULL;
	_cleanup_free_ uint64_t *before = NULL;
	_cleanup_free_ uint64_t *after = NULL;
	const char *name;
	int r;

	/* struct migration_report holds VC_MAX_VCPUS offsets twice (16 KiB):
	 * not on the stack of a library call. */
	rep = calloc(1, sizeof(*rep));
	if (!rep)
		return -ENOMEM;
	r = wire_report_from_pb(pb, rep, err, err_size);
	if (r < 0)
		return r;
	/* n_vcpus is 1..VC_MAX_VCPUS after validation. */
	before = calloc(rep->n_vcpus, sizeof(uint64_t));
	after = calloc(rep->n_vcpus, sizeof(uint64_t));
	if (!before || !after)
		return -ENOMEM;
	memcpy(before, rep->offsets_before, rep->n_vcpus * sizeof(uint64_t));
	memcpy(after, rep->offsets_after, rep->n_vcpus * sizeof(uint64_t));

	memset(ret, 0, sizeof(*ret));
	snprintf(ret->migration_id, sizeof(ret->migration_id), "%s", rep->migration_id);
	snprintf(ret->vm_id, sizeof(ret->vm_id), "%s", rep->vm_id);
	name = backend_kind_to_string(rep->backend);
	snprintf(ret->backend, sizeof(ret->backend), "%s", name ? name : "?");
	ret->generation = rep->generation;
	ret->n_vcpus = rep->n_vcpus;
	ret->offsets_before = TAKE_PTR(before);
	ret->offsets_after = TAKE_PTR(after);
	ret->elapsed_ns = rep->elapsed_ns;
	ret->delta_cycles = rep->delta_cycles;
	ret->error_bound_ns = rep->error_bound_ns;
	ret->apply_latency_ns = rep->apply_latency_ns;
	ret->guest_tsc_khz = rep->guest_tsc_khz;
	ret->error_bound_exceeded = rep->error_bound_exceeded;
	ret->clamped_ns = rep->clamped_ns;
	name = counter_timescale_to_string(rep->timescale);
	snprintf(ret->timescale, sizeof(ret->timescale), "%s", name ? name : "?");
	name = kvmclock_verdict_to_string(rep->kvmclock_verdict);
	snprintf(ret->kvmclock_check, sizeof(ret->kvmclock_check), "%s", name ? name : "?");
	ret->kvmclock_flags_source = rep->kvmclock_flags_source;
	ret->kvmclock_flags_before = rep->kvmclock_flags_before;
	ret->kvmclock_flags_after = rep->kvmclock_flags_after;
	ret->kvmclock_error_ns = rep->kvmclock_error_ns;
	name = sync_source_kind_to_string(rep->source_sync);
	snprintf(ret->source_sync, sizeof(ret->source_sync), "%s", name ? name : "?");
	ret->source_maxerror_ns = rep->source_maxerror_ns;
	name = sync_source_kind_to_string(rep->target_sync);
	snprintf(ret->target_sync, sizeof(ret->target_sync), "%s", name ? name : "?");
	ret->target_maxerror_ns = rep->target_maxerror_ns;
	return 0;
}

void report_clear(struct vcounter_report *report)
{
	if (!report)
		return;
	free(report->offsets_before);
	free(report->offsets_after);
	report->offsets_before = report->offsets_after = NULL;
}
