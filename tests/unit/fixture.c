/* fixture.c - see fixture.h. */
#include <stdio.h>
#include <string.h>

#include "fixture.h"

#define FIXTURE_MIGRATION_ID "0123456789abcdef0123456789abcdef"

void fixture_state(struct counter_state *s, uint32_t n_vcpus, uint64_t first_offset)
{
	memset(s, 0, sizeof(*s));
	s->backend = BACKEND_KVM_X86;
	s->arch = COUNTER_ARCH_X86_TSC;
	s->guest_tsc_khz = 2995200;
	s->tsc_scaling_ratio = UINT64_C(1) << 48;
	s->tsc_scaling_frac_bits = 48;
	s->n_vcpus = n_vcpus;
	for (uint32_t i = 0; i < n_vcpus; i++)
		s->offset_cycles[i] = first_offset - (uint64_t)i * 1000003;
	s->kvmclock = (struct kvmclock_state){
		.clock_ns = UINT64_C(123456789012),
		.flags = 0xe,
		.realtime_ns = UINT64_C(1700000000123456789),
		.host_tsc = UINT64_C(987654321098765),
	};
	s->anchor = (struct host_anchor){
		.tai_ns = UINT64_C(1700000037123456789),
		.host_tsc = UINT64_C(987654321099999),
		.width_ns = 41,
		.source = ANCHOR_BRACKET,
		.host_tsc_khz = 2995200,
	};
	s->sync = (struct sync_error){
		.maxerror_ns = 16000000,
		.esterror_ns = 2000,
		.unsynced = true,
		.tai_offset_s = -37,
		.leap = SYNC_LEAP_DELETE,
		.source = SYNC_SOURCE_CHRONY,
	};
}

void fixture_report(struct migration_report *r, uint32_t n_vcpus)
{
	memset(r, 0, sizeof(*r));
	strcpy(r->migration_id, FIXTURE_MIGRATION_ID);
	strcpy(r->vm_id, "vm-42.prod:a_b");
	r->backend = BACKEND_KVM_SYSCOUNTER;
	r->generation = 3;
	r->n_vcpus = n_vcpus;
	for (uint32_t i = 0; i < n_vcpus; i++) {
		r->offsets_before[i] = UINT64_MAX - i;
		r->offsets_after[i] = UINT64_C(0x8000000000000000) + i;
	}
	r->elapsed_ns = -1234567;
	r->delta_cycles = INT64_MIN + 5;
	r->error_bound_ns = 250000;
	r->apply_latency_ns = 88000;
	r->guest_tsc_khz = 1000000;
	r->error_bound_exceeded = true;
	r->clamped_ns = 7;
	r->timescale = TIMESCALE_UTC;
	r->kvmclock_verdict = KVMCLOCK_MASTER_CLOCK_LOST;
	r->kvmclock_flags_source = 0xe;
	r->kvmclock_flags_before = 0xc;
	r->kvmclock_flags_after = 0x8;
	r->kvmclock_error_ns = -37000000000;
	r->source_sync = SYNC_SOURCE_CHRONY;
	r->source_maxerror_ns = 1173000;
	r->target_sync = SYNC_SOURCE_FIXED;
	r->target_maxerror_ns = UINT64_MAX;
}

void fixture_applied_entry(struct journal_entry *e, uint32_t n_vcpus)
{
	struct session *s = &e->s;

	memset(e, 0, sizeof(*e));
	e->sequence = 7;
	snprintf(s->migration_id, sizeof(s->migration_id), FIXTURE_MIGRATION_ID);
	snprintf(s->vm_id, sizeof(s->vm_id), "vm-42");
	s->role = VM_ROLE_TARGET;
	snprintf(s->peer_identity, sizeof(s->peer_identity), "host-a.example");
	s->step = STEP_APPLIED;
	s->generation = 3;
	fixture_state(&s->prepared, n_vcpus, (uint64_t)-5000000000ll);
	s->has_final = true;
	fixture_state(&s->final, n_vcpus, (uint64_t)-5000004242ll);
	s->has_report = true;
	memcpy(s->report.migration_id, s->migration_id, sizeof(s->migration_id));
	memcpy(s->report.vm_id, s->vm_id, sizeof(s->vm_id));
	s->report.backend = BACKEND_KVM_X86;
	s->report.generation = 3;
	s->report.n_vcpus = n_vcpus;
	for (uint32_t i = 0; i < n_vcpus; i++) {
		s->report.offsets_before[i] = s->final.offset_cycles[i];
		s->report.offsets_after[i] = s->final.offset_cycles[i] + 91583770;
	}
	s->report.elapsed_ns = 60520739;
	s->report.delta_cycles = 91583770;
	s->report.error_bound_ns = 2306357;
	s->report.apply_latency_ns = 15365000;
	s->report.guest_tsc_khz = 2995200;
	s->report.error_bound_exceeded = true;
	snprintf(e->peer_address, sizeof(e->peer_address), "[2001:db8::1]:7420");
	e->by_controller = true;
	e->planned_delta_cycles = -12345;
	e->planned_error_bound_ns = 99;
	e->realtime_ns = 1760000000123456789ull;
}
