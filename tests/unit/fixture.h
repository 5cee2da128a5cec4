/* fixture.h - the records the unit tests, fuzz seeds and benchmarks fill:
 * a counter state, a migration report and a target's applied journal entry,
 * each with every field set and valid, in values awkward on the wire. */
#pragma once

#include <stdint.h>

#include "counter_state.h"
#include "journal.h"

/* An x86 state of n_vcpus whose offsets step down from first_offset
 * (negative ones exercise two's complement, the top bit ten-byte varints),
 * with kvmclock, a bracketed anchor and an unsynchronised source clock. */
void fixture_state(struct counter_state *s, uint32_t n_vcpus, uint64_t first_offset);

/* A report of n_vcpus with every field away from its default. */
void fixture_report(struct migration_report *r, uint32_t n_vcpus);

/* What a target journals before it answers its VMM: applied, with its
 * prepared and final states and the report of the apply. */
void fixture_applied_entry(struct journal_entry *e, uint32_t n_vcpus);
