/* wire.h - decode -> validate -> convert where messages enter, and the
 * reverse where they leave. protobuf-c types stop here: the rest of the code
 * sees struct counter_state, struct migration_report and plain strings. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "counter_state.h"
#include "vcounter.pb-c.h"

/* Unpack one envelope payload (already length-checked by frame.h): the one
 * decoder of the VMM socket and the peer link, in the daemon, libvcounter and
 * the fuzz targets alike. -EBADMSG: not a valid protobuf of that type.
 * -ENOMSG: no body set (unset or a body type this version does not know:
 * protobuf-c keeps an unknown oneof member as an unknown field); *ret_id
 * (may be NULL) then holds the envelope's id, so that the sender can be
 * answered. Unknown fields are ignored. -EMSGSIZE if len >
 * VC_MAX_FRAME_BYTES anyway. Free with wire_*_free. */
int wire_vmm_unpack(const uint8_t *buf, size_t len, Vcounter__V1__VmmMessage **ret_msg,
		    uint64_t *ret_id);
int wire_peer_unpack(const uint8_t *buf, size_t len, Vcounter__V1__PeerMessage **ret_msg,
		     uint64_t *ret_id);
Vcounter__V1__VmmMessage *wire_vmm_free(Vcounter__V1__VmmMessage *msg);
Vcounter__V1__PeerMessage *wire_peer_free(Vcounter__V1__PeerMessage *msg);

/* Pack an envelope into a new buffer holding header + payload, ready to
 * send. -EMSGSIZE if over VC_MAX_FRAME_BYTES. *ret_buf is malloc'd. */
int wire_vmm_pack_frame(const Vcounter__V1__VmmMessage *msg, uint8_t **ret_buf, size_t *ret_len);
int wire_peer_pack_frame(const Vcounter__V1__PeerMessage *msg, uint8_t **ret_buf, size_t *ret_len);

/* Validating conversions. Each returns 0 or -EINVAL with a sentence in err
 * naming the field ("offset_cycles has 1025 entries, limit 1024",
 * "backend 9 unknown", "anchor missing"). ret is written only on success;
 * err may be NULL.
 * CounterState: backend known and not none; arch known and not none (and
 * no scaling ratio for arm64-cntvct); guest_tsc_khz 1..10000000 (10
 * GHz); 1..VC_MAX_VCPUS offsets; tsc_scaling_frac_bits <= 63, and 32 or 48
 * when tsc_scaling_ratio != 0; anchor present with source kvm-clock or
 * bracket; kvmclock (any flags) and sync present.
 * MigrationReport: valid migration_id and vm_id; backend known and not none;
 * offsets_before/offsets_after the same count, 1..VC_MAX_VCPUS;
 * guest_tsc_khz as above.
 * wire_backend_from_pb/wire_role_from_pb map NONE/UNSPECIFIED to the _NONE
 * member and refuse only numbers this version does not know. */
int wire_counter_state_from_pb(const Vcounter__V1__CounterState *pb, struct counter_state *ret,
			       char *err, size_t err_size);
int wire_report_from_pb(const Vcounter__V1__MigrationReport *pb, struct migration_report *ret,
			char *err, size_t err_size);
int wire_backend_from_pb(Vcounter__V1__Backend pb, enum backend_kind *ret);
int wire_role_from_pb(Vcounter__V1__Role pb, enum vm_role *ret);
int wire_counter_arch_from_pb(Vcounter__V1__CounterArch pb, enum counter_arch *ret);
int wire_sync_source_from_pb(Vcounter__V1__SyncSource pb, enum sync_source_kind *ret);
Vcounter__V1__CounterArch wire_counter_arch_to_pb(enum counter_arch arch);

/* Outgoing conversions fill caller-owned storage; repeated fields point into
 * the source struct, which must outlive the packed use. */
struct wire_counter_state_pb {
	Vcounter__V1__CounterState state;
	Vcounter__V1__KvmClock kvmclock;
	Vcounter__V1__HostAnchor anchor;
	Vcounter__V1__SyncError sync;
};
void wire_counter_state_to_pb(const struct counter_state *s, struct wire_counter_state_pb *ret);
/* An adjtimex view for a message of its own (host status replies). */
void wire_sync_error_to_pb(const struct sync_error *s, Vcounter__V1__SyncError *ret);
/* A kvmclock reading (KvmOpResult.clock_before and CounterState.kvmclock). */
void wire_kvmclock_to_pb(const struct kvmclock_state *s, Vcounter__V1__KvmClock *ret);
void wire_kvmclock_from_pb(const Vcounter__V1__KvmClock *pb, struct kvmclock_state *ret);

struct wire_report_pb {
	Vcounter__V1__MigrationReport report;
};
void wire_report_to_pb(const struct migration_report *r, struct wire_report_pb *ret);

Vcounter__V1__Backend wire_backend_to_pb(enum backend_kind kind);

/* errno -> ErrorCode for Error replies (ENOENT->NOT_FOUND, EPERM/EACCES->
 * PERMISSION_DENIED, EPROTO/ESTALE/EXDEV/EEXIST->FAILED_PRECONDITION, ...;
 * the whole table is in wire.c). Either sign is accepted. */
Vcounter__V1__ErrorCode wire_error_code_from_errno(int negative_errno);
/* ErrorCode (and errno_value when set) -> -errno for callers. errno_value
 * wins when it is 1..4095; NULL, ERROR_NONE and unknown codes give -EIO
 * (an Error body always means failure). */
int wire_errno_from_error(const Vcounter__V1__Error *e);
