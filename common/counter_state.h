/* counter_state.h - the typed, validated internal view of a VM's system
 * counter state. Wire messages are converted to these structs where they
 * enter (common/wire.h); nothing past that point sees protobuf-c types. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Limits the daemon enforces on everything a peer or VMM can send. */
#define VC_MAX_VCPUS	    1024 /* vCPUs per VM (KVM_MAX_VCPUS is 1024..4096) */
#define VC_VM_ID_MAX	    63	 /* bytes in a VM id, [A-Za-z0-9._:-] */
#define VC_MIGRATION_ID_LEN 32	 /* 128 random bits, lower-case hex */

enum backend_kind {
	BACKEND_NONE = 0,
	BACKEND_KVM_X86 = 1,	    /* upstream KVM_VCPU_TSC_OFFSET + KVM_SET_CLOCK */
	BACKEND_KVM_SYSCOUNTER = 2, /* KVM_GET/SET_SYSTEM_COUNTER_STATE (patch) */
	BACKEND_KVM_ARM64 = 3,	    /* KVM_ARM_SET_COUNTER_OFFSET */
	_BACKEND_KIND_MAX,
	_BACKEND_KIND_INVALID = -1,
};

const char *backend_kind_to_string(enum backend_kind kind);
enum backend_kind backend_kind_from_string(const char *s);

/* Which counter a state describes (see vcounter.proto CounterArch): state
 * moves between backends of one architecture, never across. */
enum counter_arch {
	COUNTER_ARCH_NONE = 0,
	COUNTER_ARCH_X86_TSC = 1,
	COUNTER_ARCH_ARM64_CNTVCT = 2,
	_COUNTER_ARCH_MAX,
	_COUNTER_ARCH_INVALID = -1,
};

const char *counter_arch_to_string(enum counter_arch arch);

enum vm_role {
	VM_ROLE_NONE = 0,
	VM_ROLE_SOURCE = 1,
	VM_ROLE_TARGET = 2,
	_VM_ROLE_MAX,
	_VM_ROLE_INVALID = -1,
};

const char *vm_role_to_string(enum vm_role role);
enum vm_role vm_role_from_string(const char *s);

enum anchor_source {
	ANCHOR_NONE = 0,
	ANCHOR_KVM_CLOCK = 1, /* KVM_GET_CLOCK, KVM_CLOCK_HOST_TSC|REALTIME */
	ANCHOR_BRACKET = 2,   /* narrowest rdtsc; clock_gettime; rdtsc */
	_ANCHOR_SOURCE_MAX,
	_ANCHOR_SOURCE_INVALID = -1,
};

const char *anchor_source_to_string(enum anchor_source source);

/* A leap second the kernel will apply at the next UTC midnight, as the
 * host's time daemon announced it (adjtimex(2) STA_INS, STA_DEL). */
enum sync_leap {
	SYNC_LEAP_NONE = 0,
	SYNC_LEAP_INSERT = 1,
	SYNC_LEAP_DELETE = 2,
	_SYNC_LEAP_MAX,
	_SYNC_LEAP_INVALID = -1,
};

const char *sync_leap_to_string(enum sync_leap leap);

/* What produced a host's clock-error estimate (sync_error.maxerror_ns): the
 * operator picks one per host (vcounterd --sync-source). */
enum sync_source_kind {
	SYNC_SOURCE_ADJTIMEX = 0, /* the kernel's maxerror, as the time daemon wrote it */
	SYNC_SOURCE_CHRONY = 1,	  /* chronyd's tracking: |correction| + dispersion + delay/2 */
	SYNC_SOURCE_FIXED = 2,	  /* a bound the operator configured */
	SYNC_SOURCE_LINUXPTP = 3, /* ptp4l's TIME_STATUS_NP: |offset| + path delay */
	_SYNC_SOURCE_MAX,
	_SYNC_SOURCE_INVALID = -1,
};

const char *sync_source_kind_to_string(enum sync_source_kind source);

/* The time scale a handoff's elapsed time was counted in (counter_plan). */
enum counter_timescale {
	TIMESCALE_NONE = 0,
	TIMESCALE_TAI = 1, /* both hosts keep a TAI offset: CLOCK_TAI, leap-proof */
	TIMESCALE_UTC = 2, /* a host has none: CLOCK_REALTIME, leaps from STA_INS/DEL */
	_TIMESCALE_MAX,
	_TIMESCALE_INVALID = -1,
};

const char *counter_timescale_to_string(enum counter_timescale timescale);

/* A (host clock, host TSC) pair. tai_ns is CLOCK_TAI so that a leap second
 * between the two hosts' readings cannot corrupt the elapsed time. */
struct host_anchor {
	uint64_t tai_ns;
	uint64_t host_tsc;
	uint64_t width_ns; /* how far apart the two readings may be */
	enum anchor_source source;
	uint32_t host_tsc_khz;
};

/* adjtimex(2): maxerror/esterror are in microseconds there, ns here. */
struct sync_error {
	uint64_t maxerror_ns;
	uint64_t esterror_ns;
	bool unsynced;
	int32_t tai_offset_s; /* 0: no time daemon set it (CLOCK_TAI == REALTIME) */
	enum sync_leap leap;  /* STA_INS/STA_DEL: a leap second at the next UTC midnight */
	/* Who estimated maxerror_ns, esterror_ns and unsynced; tai_offset_s
	 * and leap are always the kernel's. */
	enum sync_source_kind source;
};

/* struct kvm_clock_data, minus padding. */
struct kvmclock_state {
	uint64_t clock_ns;
	uint32_t flags;
	uint64_t realtime_ns;
	uint64_t host_tsc;
	/* host_tsc is KVM's (KVM_CLOCK_HOST_TSC): 0; else it is the midpoint
	 * of an rdtsc bracket around the ioctl, this many cycles wide. */
	uint64_t host_tsc_width;
};

struct counter_state {
	enum backend_kind backend; /* which backend read it (logs, reports) */
	enum counter_arch arch;	   /* what the numbers below mean */
	uint32_t guest_tsc_khz;
	/* guest_tsc = ((host_tsc * ratio) >> frac_bits) + offset; ratio 0
	 * means no scaling (ratio 1). frac_bits is 48 on Intel, 32 on AMD. */
	uint64_t tsc_scaling_ratio;
	uint32_t tsc_scaling_frac_bits;
	uint32_t n_vcpus;
	uint64_t offset_cycles[VC_MAX_VCPUS]; /* two's complement, mod 2^64 */
	struct kvmclock_state kvmclock;
	struct host_anchor anchor;
	struct sync_error sync;
};

/* What the guest's kvmclock showed after the apply (counter_math_kvmclock_check). */
enum kvmclock_verdict {
	KVMCLOCK_UNCHECKED = 0,		/* no kvmclock (arm64) or no TSC pairing */
	KVMCLOCK_OK = 1,		/* advanced with the TSC, master clock kept */
	KVMCLOCK_MASTER_CLOCK_LOST = 2, /* source had KVM_CLOCK_TSC_STABLE, target not */
	KVMCLOCK_DIVERGED = 3,		/* advanced by another time than the TSC */
	_KVMCLOCK_VERDICT_MAX,
	_KVMCLOCK_VERDICT_INVALID = -1,
};

const char *kvmclock_verdict_to_string(enum kvmclock_verdict verdict);

/* What one migration did on the target. */
struct migration_report {
	char migration_id[VC_MIGRATION_ID_LEN + 1];
	char vm_id[VC_VM_ID_MAX + 1];
	enum backend_kind backend;
	uint64_t generation;
	uint32_t n_vcpus;
	uint64_t offsets_before[VC_MAX_VCPUS];
	uint64_t offsets_after[VC_MAX_VCPUS];
	int64_t elapsed_ns; /* accounted, >= 0 (counter_plan) */
	int64_t delta_cycles;
	uint64_t error_bound_ns;
	uint64_t apply_latency_ns;
	uint32_t guest_tsc_khz;
	bool error_bound_exceeded;
	uint64_t clamped_ns;		  /* target clock behind: counter held (counter_plan) */
	enum counter_timescale timescale; /* what elapsed_ns was counted in */
	/* counter_math_kvmclock_check(): kvmclock flags at the source's final
	 * read, on the target before and after the apply, and kvmclock's
	 * advance minus the guest TSC's since the source's final read. */
	enum kvmclock_verdict kvmclock_verdict;
	uint32_t kvmclock_flags_source;
	uint32_t kvmclock_flags_before;
	uint32_t kvmclock_flags_after;
	int64_t kvmclock_error_ns;
	/* Each host's share of error_bound_ns, and who estimated it. */
	enum sync_source_kind source_sync;
	uint64_t source_maxerror_ns;
	enum sync_source_kind target_sync;
	uint64_t target_maxerror_ns;
};

/* VM ids are names operators grep for: printable, no spaces, bounded. */
bool vm_id_is_valid(const char *vm_id);
bool migration_id_is_valid(const char *migration_id);

/* The steps of a migration (daemon/session.h moves between them); the
 * numbers are the wire's MigrationStep. */
enum migration_step {
	STEP_NONE = 0,
	STEP_PREPARING,	 /* source: state read, Prepare sent, waiting PrepareAck */
	STEP_PREPARED,	 /* target validated Prepare / source got PrepareAck */
	STEP_FINALIZING, /* source: VMM paused, final state sent, waiting FinalAck */
	STEP_FINAL,	 /* final state delivered (source) / stored (target) */
	STEP_APPLYING,	 /* target: apply running in the VMM */
	STEP_APPLIED,	 /* target applied / source received Applied */
	STEP_DONE,	 /* target got the source's Ack / source sent it */
	STEP_ABORTED,
	STEP_FAILED,
	_STEP_MAX,
	_STEP_INVALID = -1,
};

const char *migration_step_to_string(enum migration_step step);
/* For the session journal: _STEP_INVALID for an unknown name. */
enum migration_step migration_step_from_string(const char *s);
/* DONE, ABORTED, FAILED: nothing moves a session out of these. */
bool migration_step_is_terminal(enum migration_step step);
