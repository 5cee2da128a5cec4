/* wire.c - protobuf-c envelopes in and out, and the validating conversions
 * between protobuf-c messages and the daemon's typed structs (wire.h). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "frame.h"
#include "macro.h"
#include "wire.h"

/* The highest guest TSC frequency we believe: 10 GHz. Nothing real runs a
 * TSC that fast; a larger value is corruption and would make the offset
 * arithmetic (cycles = ns * kHz / 1e6) overflow faster than it needs to. */
#define WIRE_MAX_GUEST_TSC_KHZ UINT32_C(10000000)

/* Fractional bits of KVM's TSC scaling ratio: 48 on Intel VMX, 32 on AMD SVM
 * (kvm_caps.tsc_scaling_ratio_frac_bits, arch/x86/kvm/{vmx/vmx.c,svm/svm.c}). */
#define WIRE_TSC_FRAC_BITS_AMD	 32
#define WIRE_TSC_FRAC_BITS_INTEL 48
#define WIRE_TSC_FRAC_BITS_MAX	 63

/* Linux errno values are below MAX_ERRNO (include/linux/err.h). */
#define WIRE_MAX_ERRNO 4095

/* ---- envelopes ---- */

/* Whatever frame.h let through is bounded already; checking again here keeps
 * this function safe for a caller that forgot, at no cost. */
static int unpack_len_ok(const uint8_t *buf, size_t len)
{
	if (!buf && len > 0)
		return -EINVAL;
	if (len > VC_MAX_FRAME_BYTES)
		return -EMSGSIZE;
	return 0;
}

int wire_vmm_unpack(const uint8_t *buf, size_t len, Vcounter__V1__VmmMessage **ret_msg,
		    uint64_t *ret_id)
{
	Vcounter__V1__VmmMessage *msg;
	int r;

	r = unpack_len_ok(buf, len);
	if (r < 0)
		return r;
	/* NULL allocator: protobuf-c's default (malloc). Unknown fields are kept in
	 * base.unknown_fields and freed with the message; an unknown oneof member
	 * is one of them, so it leaves body_case at NOT_SET. */
	msg = vcounter__v1__vmm_message__unpack(NULL, len, buf);
	if (!msg)
		return -EBADMSG;
	if (ret_id)
		*ret_id = msg->id;
	if (msg->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY__NOT_SET) {
		vcounter__v1__vmm_message__free_unpacked(msg, NULL);
		return -ENOMSG;
	}
	*ret_msg = msg;
	return 0;
}

int wire_peer_unpack(const uint8_t *buf, size_t len, Vcounter__V1__PeerMessage **ret_msg,
		     uint64_t *ret_id)
{
	Vcounter__V1__PeerMessage *msg;
	int r;

	r = unpack_len_ok(buf, len);
	if (r < 0)
		return r;
	msg = vcounter__v1__peer_message__unpack(NULL, len, buf);
	if (!msg)
		return -EBADMSG;
	if (ret_id)
		*ret_id = msg->id;
	if (msg->body_case == VCOUNTER__V1__PEER_MESSAGE__BODY__NOT_SET) {
		vcounter__v1__peer_message__free_unpacked(msg, NULL);
		return -ENOMSG;
	}
	*ret_msg = msg;
	return 0;
}

Vcounter__V1__VmmMessage *wire_vmm_free(Vcounter__V1__VmmMessage *msg)
{
	if (msg)
		vcounter__v1__vmm_message__free_unpacked(msg, NULL);
	return NULL;
}

Vcounter__V1__PeerMessage *wire_peer_free(Vcounter__V1__PeerMessage *msg)
{
	if (msg)
		vcounter__v1__peer_message__free_unpacked(msg, NULL);
	return NULL;
}

/* get_packed_size and pack are the generic protobuf-c calls behind the
 * generated per-type wrappers; going through ProtobufCMessage lets both
 * envelopes share one path. */
static int pack_frame(const ProtobufCMessage *msg, uint8_t **ret_buf, size_t *ret_len)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t payload_len, packed;
	int r;

	if (!msg || !ret_buf || !ret_len)
		return -EINVAL;
	payload_len = protobuf_c_message_get_packed_size(msg);
	if (payload_len > VC_MAX_FRAME_BYTES)
		return -EMSGSIZE;
	buf = malloc(FRAME_HEADER_BYTES + payload_len);
	if (!buf)
		return -ENOMEM;
	r = frame_header_encode(payload_len, buf);
	if (r < 0)
		return r;
	packed = protobuf_c_message_pack(msg, buf + FRAME_HEADER_BYTES);
	if (packed != payload_len)
		return -EIO; /* protobuf-c disagrees with itself: never seen */
	*ret_buf = TAKE_PTR(buf);
	*ret_len = FRAME_HEADER_BYTES + payload_len;
	return 0;
}

int wire_vmm_pack_frame(const Vcounter__V1__VmmMessage *msg, uint8_t **ret_buf, size_t *ret_len)
{
	return pack_frame(msg ? &msg->base : NULL, ret_buf, ret_len);
}

int wire_peer_pack_frame(const Vcounter__V1__PeerMessage *msg, uint8_t **ret_buf, size_t *ret_len)
{
	return pack_frame(msg ? &msg->base : NULL, ret_buf, ret_len);
}

/* ---- enums ---- */

/* The wire enums and ours have the same numbers on purpose, but the mapping is
 * spelled out so that renumbering either side cannot silently pass. proto3
 * enums are open: protobuf-c stores whatever number arrived, so every switch
 * has a refusing default. */
int wire_backend_from_pb(Vcounter__V1__Backend pb, enum backend_kind *ret)
{
	enum backend_kind kind;

	switch (pb) {
	case VCOUNTER__V1__BACKEND__BACKEND_NONE:
		kind = BACKEND_NONE;
		break;
	case VCOUNTER__V1__BACKEND__BACKEND_KVM_X86:
		kind = BACKEND_KVM_X86;
		break;
	case VCOUNTER__V1__BACKEND__BACKEND_KVM_SYSCOUNTER:
		kind = BACKEND_KVM_SYSCOUNTER;
		break;
	case VCOUNTER__V1__BACKEND__BACKEND_KVM_ARM64:
		kind = BACKEND_KVM_ARM64;
		break;
	default:
		return -EINVAL;
	}
	*ret = kind;
	return 0;
}

int wire_counter_arch_from_pb(Vcounter__V1__CounterArch pb, enum counter_arch *ret)
{
	enum counter_arch arch;

	switch (pb) {
	case VCOUNTER__V1__COUNTER_ARCH__COUNTER_ARCH_NONE:
		arch = COUNTER_ARCH_NONE;
		break;
	case VCOUNTER__V1__COUNTER_ARCH__COUNTER_ARCH_X86_TSC:
		arch = COUNTER_ARCH_X86_TSC;
		break;
	case VCOUNTER__V1__COUNTER_ARCH__COUNTER_ARCH_ARM64_CNTVCT:
		arch = COUNTER_ARCH_ARM64_CNTVCT;
		break;
	default:
		return -EINVAL;
	}
	*ret = arch;
	return 0;
}

Vcounter__V1__CounterArch wire_counter_arch_to_pb(enum counter_arch arch)
{
	switch (arch) {
	case COUNTER_ARCH_X86_TSC:
		return VCOUNTER__V1__COUNTER_ARCH__COUNTER_ARCH_X86_TSC;
	case COUNTER_ARCH_ARM64_CNTVCT:
		return VCOUNTER__V1__COUNTER_ARCH__COUNTER_ARCH_ARM64_CNTVCT;
	case COUNTER_ARCH_NONE:
	default:
		return VCOUNTER__V1__COUNTER_ARCH__COUNTER_ARCH_NONE;
	}
}

Vcounter__V1__Backend wire_backend_to_pb(enum backend_kind kind)
{
	switch (kind) {
	case BACKEND_KVM_X86:
		return VCOUNTER__V1__BACKEND__BACKEND_KVM_X86;
	case BACKEND_KVM_SYSCOUNTER:
		return VCOUNTER__V1__BACKEND__BACKEND_KVM_SYSCOUNTER;
	case BACKEND_KVM_ARM64:
		return VCOUNTER__V1__BACKEND__BACKEND_KVM_ARM64;
	case BACKEND_NONE:
	default:
		return VCOUNTER__V1__BACKEND__BACKEND_NONE;
	}
}

int wire_role_from_pb(Vcounter__V1__Role pb, enum vm_role *ret)
{
	enum vm_role role;

	switch (pb) {
	case VCOUNTER__V1__ROLE__ROLE_UNSPECIFIED:
		role = VM_ROLE_NONE;
		break;
	case VCOUNTER__V1__ROLE__ROLE_SOURCE:
		role = VM_ROLE_SOURCE;
		break;
	case VCOUNTER__V1__ROLE__ROLE_TARGET:
		role = VM_ROLE_TARGET;
		break;
	default:
		return -EINVAL;
	}
	*ret = role;
	return 0;
}

static int anchor_source_from_pb(Vcounter__V1__AnchorSource pb, enum anchor_source *ret)
{
	enum anchor_source source;

	switch (pb) {
	case VCOUNTER__V1__ANCHOR_SOURCE__ANCHOR_SOURCE_NONE:
		source = ANCHOR_NONE;
		break;
	case VCOUNTER__V1__ANCHOR_SOURCE__ANCHOR_SOURCE_KVM_CLOCK:
		source = ANCHOR_KVM_CLOCK;
		break;
	case VCOUNTER__V1__ANCHOR_SOURCE__ANCHOR_SOURCE_BRACKET:
		source = ANCHOR_BRACKET;
		break;
	default:
		return -EINVAL;
	}
	*ret = source;
	return 0;
}

static Vcounter__V1__AnchorSource anchor_source_to_pb(enum anchor_source source)
{
	switch (source) {
	case ANCHOR_KVM_CLOCK:
		return VCOUNTER__V1__ANCHOR_SOURCE__ANCHOR_SOURCE_KVM_CLOCK;
	case ANCHOR_BRACKET:
		return VCOUNTER__V1__ANCHOR_SOURCE__ANCHOR_SOURCE_BRACKET;
	case ANCHOR_NONE:
	default:
		return VCOUNTER__V1__ANCHOR_SOURCE__ANCHOR_SOURCE_NONE;
	}
}

/* ---- validating conversions ---- */

static int leap_from_pb(Vcounter__V1__Leap pb, enum sync_leap *ret)
{
	switch (pb) {
	case VCOUNTER__V1__LEAP__LEAP_NONE:
		*ret = SYNC_LEAP_NONE;
		return 0;
	case VCOUNTER__V1__LEAP__LEAP_INSERT:
		*ret = SYNC_LEAP_INSERT;
		return 0;
	case VCOUNTER__V1__LEAP__LEAP_DELETE:
		*ret = SYNC_LEAP_DELETE;
		return 0;
	default:
		return -EINVAL;
	}
}

int wire_sync_source_from_pb(Vcounter__V1__SyncSource pb, enum sync_source_kind *ret)
{
	switch (pb) {
	case VCOUNTER__V1__SYNC_SOURCE__SYNC_SOURCE_ADJTIMEX:
		*ret = SYNC_SOURCE_ADJTIMEX;
		return 0;
	case VCOUNTER__V1__SYNC_SOURCE__SYNC_SOURCE_CHRONY:
		*ret = SYNC_SOURCE_CHRONY;
		return 0;
	case VCOUNTER__V1__SYNC_SOURCE__SYNC_SOURCE_FIXED:
		*ret = SYNC_SOURCE_FIXED;
		return 0;
	case VCOUNTER__V1__SYNC_SOURCE__SYNC_SOURCE_LINUXPTP:
		*ret = SYNC_SOURCE_LINUXPTP;
		return 0;
	default:
		return -EINVAL;
	}
}

static Vcounter__V1__SyncSource sync_source_to_pb(enum sync_source_kind source)
{
	switch (source) {
	case SYNC_SOURCE_CHRONY:
		return VCOUNTER__V1__SYNC_SOURCE__SYNC_SOURCE_CHRONY;
	case SYNC_SOURCE_FIXED:
		return VCOUNTER__V1__SYNC_SOURCE__SYNC_SOURCE_FIXED;
	case SYNC_SOURCE_LINUXPTP:
		return VCOUNTER__V1__SYNC_SOURCE__SYNC_SOURCE_LINUXPTP;
	default:
		return VCOUNTER__V1__SYNC_SOURCE__SYNC_SOURCE_ADJTIMEX;
	}
}

static Vcounter__V1__Leap leap_to_pb(enum sync_leap leap)
{
	switch (leap) {
	case SYNC_LEAP_INSERT:
		return VCOUNTER__V1__LEAP__LEAP_INSERT;
	case SYNC_LEAP_DELETE:
		return VCOUNTER__V1__LEAP__LEAP_DELETE;
	default:
		return VCOUNTER__V1__LEAP__LEAP_NONE;
	}
}

static int timescale_from_pb(Vcounter__V1__Timescale pb, enum counter_timescale *ret)
{
	switch (pb) {
	case VCOUNTER__V1__TIMESCALE__TIMESCALE_NONE:
		*ret = TIMESCALE_NONE;
		return 0;
	case VCOUNTER__V1__TIMESCALE__TIMESCALE_TAI:
		*ret = TIMESCALE_TAI;
		return 0;
	case VCOUNTER__V1__TIMESCALE__TIMESCALE_UTC:
		*ret = TIMESCALE_UTC;
		return 0;
	default:
		return -EINVAL;
	}
}

static Vcounter__V1__Timescale timescale_to_pb(enum counter_timescale timescale)
{
	switch (timescale) {
	case TIMESCALE_TAI:
		return VCOUNTER__V1__TIMESCALE__TIMESCALE_TAI;
	case TIMESCALE_UTC:
		return VCOUNTER__V1__TIMESCALE__TIMESCALE_UTC;
	default:
		return VCOUNTER__V1__TIMESCALE__TIMESCALE_NONE;
	}
}

static int kvmclock_verdict_from_pb(Vcounter__V1__KvmclockVerdict pb, enum kvmclock_verdict *ret)
{
	switch (pb) {
	case VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_UNCHECKED:
		*ret = KVMCLOCK_UNCHECKED;
		return 0;
	case VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_OK:
		*ret = KVMCLOCK_OK;
		return 0;
	case VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_MASTER_CLOCK_LOST:
		*ret = KVMCLOCK_MASTER_CLOCK_LOST;
		return 0;
	case VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_DIVERGED:
		*ret = KVMCLOCK_DIVERGED;
		return 0;
	default:
		return -EINVAL;
	}
}

static Vcounter__V1__KvmclockVerdict kvmclock_verdict_to_pb(enum kvmclock_verdict verdict)
{
	switch (verdict) {
	case KVMCLOCK_OK:
		return VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_OK;
	case KVMCLOCK_MASTER_CLOCK_LOST:
		return VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_MASTER_CLOCK_LOST;
	case KVMCLOCK_DIVERGED:
		return VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_DIVERGED;
	default:
		return VCOUNTER__V1__KVMCLOCK_VERDICT__KVMCLOCK_UNCHECKED;
	}
}

static int check_backend(Vcounter__V1__Backend pb, enum backend_kind *ret, char *err,
			 size_t err_size)
{
	enum backend_kind kind;

	if (wire_backend_from_pb(pb, &kind) < 0)
		return errmsg(err, err_size, -EINVAL, "backend %d unknown", (int)pb);
	/* State and reports are produced by a backend; "none" means nothing
	 * could read or write the counter, so such a message is meaningless. */
	if (kind == BACKEND_NONE)
		return errmsg(err, err_size, -EINVAL, "backend is none");
	*ret = kind;
	return 0;
}

static int check_guest_tsc_khz(uint32_t khz, char *err, size_t err_size)
{
	if (khz == 0)
		return errmsg(err, err_size, -EINVAL, "guest_tsc_khz is 0");
	if (khz > WIRE_MAX_GUEST_TSC_KHZ)
		return errmsg(err, err_size, -EINVAL,
			      "guest_tsc_khz %" PRIu32 " above limit %" PRIu32, khz,
			      WIRE_MAX_GUEST_TSC_KHZ);
	return 0;
}

static int check_offsets(const char *name, size_t n, const uint64_t *offsets, char *err,
			 size_t err_size)
{
	if (n == 0)
		return errmsg(err, err_size, -EINVAL, "%s has no entries", name);
	if (n > VC_MAX_VCPUS)
		return errmsg(err, err_size, -EINVAL, "%s has %zu entries, limit %d", name, n,
			      VC_MAX_VCPUS);
	/* Only a hand-built message can have this; unpack never does. */
	if (!offsets)
		return errmsg(err, err_size, -EINVAL, "%s has %zu entries but no data", name, n);
	return 0;
}

int wire_counter_state_from_pb(const Vcounter__V1__CounterState *pb, struct counter_state *ret,
			       char *err, size_t err_size)
{
	enum backend_kind backend;
	enum anchor_source source;
	enum counter_arch arch;
	enum sync_source_kind sync_source;
	enum sync_leap leap;
	int r;

	if (!pb)
		return errmsg(err, err_size, -EINVAL, "counter state missing");
	if (!ret)
		return errmsg(err, err_size, -EINVAL, "no storage for counter state");

	r = check_backend(pb->backend, &backend, err, err_size);
	if (r < 0)
		return r;
	/* Without it the offsets could be TSC cycles or generic-timer ticks. */
	if (wire_counter_arch_from_pb(pb->arch, &arch) < 0)
		return errmsg(err, err_size, -EINVAL, "counter arch %d unknown", (int)pb->arch);
	if (arch == COUNTER_ARCH_NONE)
		return errmsg(err, err_size, -EINVAL, "counter arch missing");
	if (arch == COUNTER_ARCH_ARM64_CNTVCT &&
	    (pb->tsc_scaling_ratio || pb->tsc_scaling_frac_bits))
		return errmsg(err, err_size, -EINVAL,
			      "arm64-cntvct state with a TSC scaling ratio");
	r = check_guest_tsc_khz(pb->guest_tsc_khz, err, err_size);
	if (r < 0)
		return r;
	if (pb->tsc_scaling_frac_bits > WIRE_TSC_FRAC_BITS_MAX)
		return errmsg(err, err_size, -EINVAL, "tsc_scaling_frac_bits %" PRIu32 " above %d",
			      pb->tsc_scaling_frac_bits, WIRE_TSC_FRAC_BITS_MAX);
	/* With scaling in use the ratio is only meaningful in KVM's fixed-point
	 * format, which has 32 (AMD) or 48 (Intel) fractional bits. */
	if (pb->tsc_scaling_ratio != 0 && pb->tsc_scaling_frac_bits != WIRE_TSC_FRAC_BITS_AMD &&
	    pb->tsc_scaling_frac_bits != WIRE_TSC_FRAC_BITS_INTEL)
		return errmsg(err, err_size, -EINVAL,
			      "tsc_scaling_frac_bits %" PRIu32 " with tsc_scaling_ratio %" PRIu64
			      ", expected %d or %d",
			      pb->tsc_scaling_frac_bits, pb->tsc_scaling_ratio,
			      WIRE_TSC_FRAC_BITS_AMD, WIRE_TSC_FRAC_BITS_INTEL);
	r = check_offsets("offset_cycles", pb->n_offset_cycles, pb->offset_cycles, err, err_size);
	if (r < 0)
		return r;

	if (!pb->anchor)
		return errmsg(err, err_size, -EINVAL, "anchor missing");
	if (anchor_source_from_pb(pb->anchor->source, &source) < 0)
		return errmsg(err, err_size, -EINVAL, "anchor source %d unknown",
			      (int)pb->anchor->source);
	/* Without a (clock, TSC) pair there is nothing to compute elapsed time
	 * from (DESIGN.md section 7). */
	if (source == ANCHOR_NONE)
		return errmsg(err, err_size, -EINVAL, "anchor source is none");
	/* kvmclock flags are whatever KVM_GET_CLOCK said (0 on hosts out of
	 * master-clock mode, DESIGN.md section 7), so any value is accepted. */
	if (!pb->kvmclock)
		return errmsg(err, err_size, -EINVAL, "kvmclock missing");
	/* A missing sync would read as "synced, zero error" and shrink the error
	 * bound; refuse rather than guess. */
	if (!pb->sync)
		return errmsg(err, err_size, -EINVAL, "sync missing");
	/* An unknown leap would be read as none, and a second lost. */
	if (leap_from_pb(pb->sync->leap, &leap) < 0)
		return errmsg(err, err_size, -EINVAL, "sync leap %d unknown", (int)pb->sync->leap);
	if (wire_sync_source_from_pb(pb->sync->source, &sync_source) < 0)
		return errmsg(err, err_size, -EINVAL, "sync source %d unknown",
			      (int)pb->sync->source);

	memset(ret, 0, sizeof(*ret));
	ret->backend = backend;
	ret->arch = arch;
	ret->guest_tsc_khz = pb->guest_tsc_khz;
	ret->tsc_scaling_ratio = pb->tsc_scaling_ratio;
	ret->tsc_scaling_frac_bits = pb->tsc_scaling_frac_bits;
	ret->n_vcpus = (uint32_t)pb->n_offset_cycles;
	memcpy(ret->offset_cycles, pb->offset_cycles, pb->n_offset_cycles * sizeof(uint64_t));
	wire_kvmclock_from_pb(pb->kvmclock, &ret->kvmclock);
	ret->anchor = (struct host_anchor){
		.tai_ns = pb->anchor->tai_ns,
		.host_tsc = pb->anchor->host_tsc,
		.width_ns = pb->anchor->width_ns,
		.source = source,
		.host_tsc_khz = pb->anchor->host_tsc_khz,
	};
	ret->sync = (struct sync_error){
		.maxerror_ns = pb->sync->maxerror_ns,
		.esterror_ns = pb->sync->esterror_ns,
		.unsynced = pb->sync->unsynced != 0,
		.tai_offset_s = pb->sync->tai_offset_s,
		.leap = leap,
		.source = sync_source,
	};
	return 0;
}

/* err text quotes at most this much of a bad id: enough to recognise it,
 * short enough that a hostile peer cannot fill the log line. */
#define WIRE_ID_QUOTE_MAX 80

int wire_report_from_pb(const Vcounter__V1__MigrationReport *pb, struct migration_report *ret,
			char *err, size_t err_size)
{
	enum sync_source_kind source_sync, target_sync;
	enum counter_timescale timescale;
	enum kvmclock_verdict verdict;
	enum backend_kind backend;
	int r;

	if (!pb)
		return errmsg(err, err_size, -EINVAL, "report missing");
	if (!ret)
		return errmsg(err, err_size, -EINVAL, "no storage for report");
	/* %.*s and the validity check both stop early on garbage; the quote is
	 * for humans, the id itself never reaches a log unchecked. */
	if (!migration_id_is_valid(pb->migration_id))
		return errmsg(err, err_size, -EINVAL, "migration_id \"%.*s\" invalid",
			      WIRE_ID_QUOTE_MAX, pb->migration_id ? pb->migration_id : "");
	if (!vm_id_is_valid(pb->vm_id))
		return errmsg(err, err_size, -EINVAL, "vm_id \"%.*s\" invalid", WIRE_ID_QUOTE_MAX,
			      pb->vm_id ? pb->vm_id : "");
	r = check_backend(pb->backend, &backend, err, err_size);
	if (r < 0)
		return r;
	r = check_offsets("offsets_before", pb->n_offsets_before, pb->offsets_before, err,
			  err_size);
	if (r < 0)
		return r;
	r = check_offsets("offsets_after", pb->n_offsets_after, pb->offsets_after, err, err_size);
	if (r < 0)
		return r;
	if (pb->n_offsets_before != pb->n_offsets_after)
		return errmsg(err, err_size, -EINVAL,
			      "offsets_before has %zu entries, offsets_after %zu",
			      pb->n_offsets_before, pb->n_offsets_after);
	r = check_guest_tsc_khz(pb->guest_tsc_khz, err, err_size);
	if (r < 0)
		return r;
	if (timescale_from_pb(pb->timescale, &timescale) < 0)
		return errmsg(err, err_size, -EINVAL, "timescale %d unknown", (int)pb->timescale);
	if (kvmclock_verdict_from_pb(pb->kvmclock_verdict, &verdict) < 0)
		return errmsg(err, err_size, -EINVAL, "kvmclock verdict %d unknown",
			      (int)pb->kvmclock_verdict);
	if (wire_sync_source_from_pb(pb->source_sync, &source_sync) < 0 ||
	    wire_sync_source_from_pb(pb->target_sync, &target_sync) < 0)
		return errmsg(err, err_size, -EINVAL, "sync source %d/%d unknown",
			      (int)pb->source_sync, (int)pb->target_sync);

	memset(ret, 0, sizeof(*ret));
	/* Lengths were checked by the *_is_valid calls above. */
	memcpy(ret->migration_id, pb->migration_id, strlen(pb->migration_id) + 1);
	memcpy(ret->vm_id, pb->vm_id, strlen(pb->vm_id) + 1);
	ret->backend = backend;
	ret->generation = pb->generation;
	ret->n_vcpus = (uint32_t)pb->n_offsets_before;
	memcpy(ret->offsets_before, pb->offsets_before, pb->n_offsets_before * sizeof(uint64_t));
	memcpy(ret->offsets_after, pb->offsets_after, pb->n_offsets_after * sizeof(uint64_t));
	ret->elapsed_ns = pb->elapsed_ns;
	ret->delta_cycles = pb->delta_cycles;
	ret->error_bound_ns = pb->error_bound_ns;
	ret->apply_latency_ns = pb->apply_latency_ns;
	ret->guest_tsc_khz = pb->guest_tsc_khz;
	ret->error_bound_exceeded = pb->error_bound_exceeded != 0;
	ret->clamped_ns = pb->clamped_ns;
	ret->timescale = timescale;
	ret->kvmclock_verdict = verdict;
	ret->kvmclock_flags_source = pb->kvmclock_flags_source;
	ret->kvmclock_flags_before = pb->kvmclock_flags_before;
	ret->kvmclock_flags_after = pb->kvmclock_flags_after;
	ret->kvmclock_error_ns = pb->kvmclock_error_ns;
	ret->source_sync = source_sync;
	ret->source_maxerror_ns = pb->source_maxerror_ns;
	ret->target_sync = target_sync;
	ret->target_maxerror_ns = pb->target_maxerror_ns;
	return 0;
}

/* ---- outgoing conversions ---- */

void wire_counter_state_to_pb(const struct counter_state *s, struct wire_counter_state_pb *ret)
{
	uint32_t n = s->n_vcpus <= VC_MAX_VCPUS ? s->n_vcpus : VC_MAX_VCPUS;

	*ret = (struct wire_counter_state_pb){
		.state = VCOUNTER__V1__COUNTER_STATE__INIT,
		.kvmclock = VCOUNTER__V1__KVM_CLOCK__INIT,
		.anchor = VCOUNTER__V1__HOST_ANCHOR__INIT,
		.sync = VCOUNTER__V1__SYNC_ERROR__INIT,
	};

	ret->state.backend = wire_backend_to_pb(s->backend);
	ret->state.arch = wire_counter_arch_to_pb(s->arch);
	ret->state.guest_tsc_khz = s->guest_tsc_khz;
	ret->state.tsc_scaling_ratio = s->tsc_scaling_ratio;
	ret->state.tsc_scaling_frac_bits = s->tsc_scaling_frac_bits;
	ret->state.n_offset_cycles = n;
	/* protobuf-c's field is non-const because unpack fills it; pack only
	 * reads it, so pointing it at the caller's const array is safe. */
	ret->state.offset_cycles = (uint64_t *)s->offset_cycles;

	wire_kvmclock_to_pb(&s->kvmclock, &ret->kvmclock);
	ret->state.kvmclock = &ret->kvmclock;

	ret->anchor.tai_ns = s->anchor.tai_ns;
	ret->anchor.host_tsc = s->anchor.host_tsc;
	ret->anchor.width_ns = s->anchor.width_ns;
	ret->anchor.source = anchor_source_to_pb(s->anchor.source);
	ret->anchor.host_tsc_khz = s->anchor.host_tsc_khz;
	ret->state.anchor = &ret->anchor;

	wire_sync_error_to_pb(&s->sync, &ret->sync);
	ret->state.sync = &ret->sync;
}

void wire_sync_error_to_pb(const struct sync_error *s, Vcounter__V1__SyncError *ret)
{
	*ret = (Vcounter__V1__SyncError)VCOUNTER__V1__SYNC_ERROR__INIT;
	ret->maxerror_ns = s->maxerror_ns;
	ret->esterror_ns = s->esterror_ns;
	ret->unsynced = s->unsynced;
	ret->tai_offset_s = s->tai_offset_s;
	ret->leap = leap_to_pb(s->leap);
	ret->source = sync_source_to_pb(s->source);
}

void wire_kvmclock_to_pb(const struct kvmclock_state *s, Vcounter__V1__KvmClock *ret)
{
	*ret = (Vcounter__V1__KvmClock)VCOUNTER__V1__KVM_CLOCK__INIT;
	ret->clock_ns = s->clock_ns;
	ret->flags = s->flags;
	ret->realtime_ns = s->realtime_ns;
	ret->host_tsc = s->host_tsc;
	ret->host_tsc_width = s->host_tsc_width;
}

void wire_kvmclock_from_pb(const Vcounter__V1__KvmClock *pb, struct kvmclock_state *ret)
{
	*ret = (struct kvmclock_state){
		.clock_ns = pb->clock_ns,
		.flags = pb->flags,
		.realtime_ns = pb->realtime_ns,
		.host_tsc = pb->host_tsc,
		.host_tsc_width = pb->host_tsc_width,
	};
}

void wire_report_to_pb(const struct migration_report *r, struct wire_report_pb *ret)
{
	uint32_t n = r->n_vcpus <= VC_MAX_VCPUS ? r->n_vcpus : VC_MAX_VCPUS;

	*ret = (struct wire_report_pb){
		.report = VCOUNTER__V1__MIGRATION_REPORT__INIT,
	};
	/* As in wire_counter_state_to_pb: pack only reads these, so casting
	 * away const to fit protobuf-c's non-const fields is safe. */
	ret->report.migration_id = (char *)r->migration_id;
	ret->report.vm_id = (char *)r->vm_id;
	ret->report.backend = wire_backend_to_pb(r->backend);
	ret->report.generation = r->generation;
	ret->report.n_offsets_before = n;
	ret->report.offsets_before = (uint64_t *)r->offsets_before;
	ret->report.n_offsets_after = n;
	ret->report.offsets_after = (uint64_t *)r->offsets_after;
	ret->report.elapsed_ns = r->elapsed_ns;
	ret->report.delta_cycles = r->delta_cycles;
	ret->report.error_bound_ns = r->error_bound_ns;
	ret->report.apply_latency_ns = r->apply_latency_ns;
	ret->report.guest_tsc_khz = r->guest_tsc_khz;
	ret->report.error_bound_exceeded = r->error_bound_exceeded;
	ret->report.clamped_ns = r->clamped_ns;
	ret->report.timescale = timescale_to_pb(r->timescale);
	ret->report.kvmclock_verdict = kvmclock_verdict_to_pb(r->kvmclock_verdict);
	ret->report.kvmclock_flags_source = r->kvmclock_flags_source;
	ret->report.kvmclock_flags_before = r->kvmclock_flags_before;
	ret->report.kvmclock_flags_after = r->kvmclock_flags_after;
	ret->report.kvmclock_error_ns = r->kvmclock_error_ns;
	ret->report.source_sync = sync_source_to_pb(r->source_sync);
	ret->report.source_maxerror_ns = r->source_maxerror_ns;
	ret->report.target_sync = sync_source_to_pb(r->target_sync);
	ret->report.target_maxerror_ns = r->target_maxerror_ns;
}

/* ---- errors ----
 *
 * errno -> ErrorCode (for Error replies)
 *   0                                                      ERROR_NONE
 *   EINVAL EBADMSG ERANGE EDOM EOVERFLOW ENAMETOOLONG EBADF
 *   ENOTSOCK                                               ERROR_INVALID_ARGUMENT
 *   ENOENT ESRCH ENXIO                                     ERROR_NOT_FOUND
 *   EPERM EACCES                                           ERROR_PERMISSION_DENIED
 *   EPROTO ESTALE EXDEV ENOEXEC EEXIST EALREADY
 *   ENOTRECOVERABLE                                        ERROR_FAILED_PRECONDITION
 *   EOPNOTSUPP ENODEV EBUSY EAGAIN ENOTCONN ECONNREFUSED
 *   ECONNRESET ECONNABORTED EHOSTUNREACH ENETUNREACH
 *   ETIMEDOUT EPIPE ESHUTDOWN                               ERROR_UNAVAILABLE
 *   EADDRINUSE                                              ERROR_ALREADY_EXISTS
 *   ENOMEM ENOSPC ENOBUFS EMFILE ENFILE EMSGSIZE E2BIG
 *   EUSERS EDQUOT                                           ERROR_RESOURCE_EXHAUSTED
 *   ECANCELED                                               ERROR_ABORTED
 *   ENOMSG ENOSYS                                           ERROR_UNIMPLEMENTED
 *   anything else (EIO, EFAULT, ...)                        ERROR_INTERNAL
 *
 * EEXIST is a conflicting replay in session.h, hence FAILED_PRECONDITION
 * (wire.h's contract); ALREADY_EXISTS is left for EADDRINUSE-style "name
 * taken". The reply also carries errno_value, which the receiver prefers.
 *
 * ErrorCode -> errno (only when errno_value is absent or out of range)
 *   INVALID_ARGUMENT EINVAL, NOT_FOUND ENOENT, PERMISSION_DENIED EPERM,
 *   FAILED_PRECONDITION EPROTO, UNAVAILABLE EOPNOTSUPP, ALREADY_EXISTS EEXIST,
 *   RESOURCE_EXHAUSTED ENOSPC, INTERNAL EIO, ABORTED ECANCELED,
 *   UNIMPLEMENTED ENOMSG (what wire_*_unpack returns for an unknown body),
 *   NONE and unknown codes EIO: an Error body always means failure.
 */
Vcounter__V1__ErrorCode wire_error_code_from_errno(int negative_errno)
{
	/* Accept either sign, as systemd's errno helpers do; INT_MIN has no
	 * positive counterpart and is nothing but garbage. */
	int e = negative_errno == INT_MIN ? EIO : abs(negative_errno);

	switch (e) {
	case 0:
		return VCOUNTER__V1__ERROR_CODE__ERROR_NONE;
	case EINVAL:
	case EBADMSG:
	case ERANGE:
	case EDOM:
	case EOVERFLOW:
	case ENAMETOOLONG:
	case EBADF:
	case ENOTSOCK:
		return VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT;
	case ENOENT:
	case ESRCH:
	case ENXIO:
		return VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND;
	case EPERM:
	case EACCES:
		return VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED;
	case EPROTO:
	case ESTALE:
	case EXDEV:
	case ENOEXEC:
	case EEXIST:
	case EALREADY:
	case ENOTRECOVERABLE:
		return VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION;
	case EOPNOTSUPP:
	case ENODEV:
	case EBUSY:
	case EAGAIN:
	case ENOTCONN:
	case ECONNREFUSED:
	case ECONNRESET:
	case ECONNABORTED:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ETIMEDOUT:
	case EPIPE:
	case ESHUTDOWN:
		return VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE;
	case EADDRINUSE:
		return VCOUNTER__V1__ERROR_CODE__ERROR_ALREADY_EXISTS;
	case ENOMEM:
	case ENOSPC:
	case ENOBUFS:
	case EMFILE:
	case ENFILE:
	case EMSGSIZE:
	case E2BIG:
	case EUSERS:
	case EDQUOT:
		return VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED;
	case ECANCELED:
		return VCOUNTER__V1__ERROR_CODE__ERROR_ABORTED;
	case ENOMSG:
	case ENOSYS:
		return VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED;
	default:
		return VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL;
	}
}

int wire_errno_from_error(const Vcounter__V1__Error *e)
{
	if (!e)
		return -EIO;
	/* errno_value comes from a peer: trust it only inside Linux's range. */
	if (e->errno_value > 0 && e->errno_value <= WIRE_MAX_ERRNO)
		return -e->errno_value;

	switch (e->code) {
	case VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT:
		return -EINVAL;
	case VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND:
		return -ENOENT;
	case VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED:
		return -EPERM;
	case VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION:
		return -EPROTO;
	case VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE:
		return -EOPNOTSUPP;
	case VCOUNTER__V1__ERROR_CODE__ERROR_ALREADY_EXISTS:
		return -EEXIST;
	case VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED:
		return -ENOSPC;
	case VCOUNTER__V1__ERROR_CODE__ERROR_ABORTED:
		return -ECANCELED;
	case VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED:
		return -ENOMSG;
	case VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL:
	case VCOUNTER__V1__ERROR_CODE__ERROR_NONE:
	default:
		return -EIO;
	}
}
