/* counter_state.c - names of the enums that cross wires and logs, and the
 * shape of ids. */
#include <string.h>

#include "counter_state.h"
#include "macro.h"

static const char *const backend_kind_table[_BACKEND_KIND_MAX] = {
	[BACKEND_NONE] = "none",
	[BACKEND_KVM_X86] = "kvm-x86",
	[BACKEND_KVM_SYSCOUNTER] = "kvm-syscounter",
	[BACKEND_KVM_ARM64] = "kvm-arm64",
};

static const char *const counter_arch_table[_COUNTER_ARCH_MAX] = {
	[COUNTER_ARCH_NONE] = "none",
	[COUNTER_ARCH_X86_TSC] = "x86-tsc",
	[COUNTER_ARCH_ARM64_CNTVCT] = "arm64-cntvct",
};

static const char *const vm_role_table[_VM_ROLE_MAX] = {
	[VM_ROLE_NONE] = "none",
	[VM_ROLE_SOURCE] = "source",
	[VM_ROLE_TARGET] = "target",
};

static const char *const anchor_source_table[_ANCHOR_SOURCE_MAX] = {
	[ANCHOR_NONE] = "none",
	[ANCHOR_KVM_CLOCK] = "kvm-clock",
	[ANCHOR_BRACKET] = "bracket",
};

static int table_lookup(const char *const *table, size_t n, const char *s)
{
	if (!s)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (table[i] && strcmp(table[i], s) == 0)
			return (int)i;
	return -1;
}

const char *backend_kind_to_string(enum backend_kind kind)
{
	if (kind < 0 || kind >= _BACKEND_KIND_MAX)
		return NULL;
	return backend_kind_table[kind];
}

enum backend_kind backend_kind_from_string(const char *s)
{
	return (enum backend_kind)table_lookup(backend_kind_table, ELEMENTSOF(backend_kind_table),
					       s);
}

const char *counter_arch_to_string(enum counter_arch arch)
{
	if (arch < 0 || arch >= _COUNTER_ARCH_MAX)
		return NULL;
	return counter_arch_table[arch];
}

const char *vm_role_to_string(enum vm_role role)
{
	if (role < 0 || role >= _VM_ROLE_MAX)
		return NULL;
	return vm_role_table[role];
}

enum vm_role vm_role_from_string(const char *s)
{
	return (enum vm_role)table_lookup(vm_role_table, ELEMENTSOF(vm_role_table), s);
}

const char *anchor_source_to_string(enum anchor_source source)
{
	if (source < 0 || source >= _ANCHOR_SOURCE_MAX)
		return NULL;
	return anchor_source_table[source];
}

static const char *const sync_leap_table[_SYNC_LEAP_MAX] = {
	[SYNC_LEAP_NONE] = "none",
	[SYNC_LEAP_INSERT] = "insert",
	[SYNC_LEAP_DELETE] = "delete",
};

const char *sync_leap_to_string(enum sync_leap leap)
{
	if (leap < 0 || leap >= _SYNC_LEAP_MAX)
		return NULL;
	return sync_leap_table[leap];
}

static const char *const timescale_table[_TIMESCALE_MAX] = {
	[TIMESCALE_NONE] = "none",
	[TIMESCALE_TAI] = "tai",
	[TIMESCALE_UTC] = "utc",
};

const char *counter_timescale_to_string(enum counter_timescale timescale)
{
	if (timescale < 0 || timescale >= _TIMESCALE_MAX)
		return NULL;
	return timescale_table[timescale];
}

static const char *const kvmclock_verdict_table[_KVMCLOCK_VERDICT_MAX] = {
	[KVMCLOCK_UNCHECKED] = "unchecked",
	[KVMCLOCK_OK] = "ok",
	[KVMCLOCK_MASTER_CLOCK_LOST] = "master-clock-lost",
	[KVMCLOCK_DIVERGED] = "diverged",
};

const char *kvmclock_verdict_to_string(enum kvmclock_verdict verdict)
{
	if (verdict < 0 || verdict >= _KVMCLOCK_VERDICT_MAX)
		return NULL;
	return kvmclock_verdict_table[verdict];
}

static const char *const sync_source_table[_SYNC_SOURCE_MAX] = {
	[SYNC_SOURCE_ADJTIMEX] = "adjtimex",
	[SYNC_SOURCE_CHRONY] = "chrony",
	[SYNC_SOURCE_FIXED] = "fixed",
	[SYNC_SOURCE_LINUXPTP] = "linuxptp",
};

const char *sync_source_kind_to_string(enum sync_source_kind source)
{
	if (source < 0 || source >= _SYNC_SOURCE_MAX)
		return NULL;
	return sync_source_table[source];
}

bool vm_id_is_valid(const char *vm_id)
{
	size_t n;

	if (!vm_id)
		return false;
	n = strlen(vm_id);
	if (n == 0 || n > VC_VM_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = vm_id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

bool migration_id_is_valid(const char *migration_id)
{
	if (!migration_id || strlen(migration_id) != VC_MIGRATION_ID_LEN)
		return false;
	for (size_t i = 0; i < VC_MIGRATION_ID_LEN; i++) {
		char c = migration_id[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return true;
}

static const char *const migration_step_table[_STEP_MAX] = {
	[STEP_NONE] = "none",	      [STEP_PREPARING] = "preparing",
	[STEP_PREPARED] = "prepared", [STEP_FINALIZING] = "finalizing",
	[STEP_FINAL] = "final",	      [STEP_APPLYING] = "applying",
	[STEP_APPLIED] = "applied",   [STEP_DONE] = "done",
	[STEP_ABORTED] = "aborted",   [STEP_FAILED] = "failed",
};

const char *migration_step_to_string(enum migration_step step)
{
	if (step < 0 || step >= _STEP_MAX)
		return NULL;
	return migration_step_table[step];
}

enum migration_step migration_step_from_string(const char *s)
{
	if (!s)
		return _STEP_INVALID;
	for (size_t i = 0; i < ELEMENTSOF(migration_step_table); i++)
		if (strcmp(migration_step_table[i], s) == 0)
			return (enum migration_step)i;
	return _STEP_INVALID;
}

bool migration_step_is_terminal(enum migration_step step)
{
	return step == STEP_DONE || step == STEP_ABORTED || step == STEP_FAILED;
}
