/* test_wire.c - wire codecs: envelopes survive framing and unpacking, bad
 * bytes and bad fields are refused with the documented errors, errno and
 * ErrorCode map both ways. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "frame.h"
#include "macro.h"
#include "wire.h"

#define MIGRATION_ID "0123456789abcdef0123456789abcdef"

static void fill_state(struct counter_state *s, uint32_t n_vcpus)
{
	fixture_state(s, n_vcpus, UINT64_C(0xfffffff000000000));
}

static void assert_state_equal(const struct counter_state *a, const struct counter_state *b)
{
	assert_int_equal(a->backend, b->backend);
	assert_int_equal(a->guest_tsc_khz, b->guest_tsc_khz);
	assert_int_equal(a->tsc_scaling_ratio, b->tsc_scaling_ratio);
	assert_int_equal(a->tsc_scaling_frac_bits, b->tsc_scaling_frac_bits);
	assert_int_equal(a->n_vcpus, b->n_vcpus);
	for (uint32_t i = 0; i < a->n_vcpus; i++)
		assert_int_equal(a->offset_cycles[i], b->offset_cycles[i]);
	assert_int_equal(a->kvmclock.clock_ns, b->kvmclock.clock_ns);
	assert_int_equal(a->kvmclock.flags, b->kvmclock.flags);
	assert_int_equal(a->kvmclock.realtime_ns, b->kvmclock.realtime_ns);
	assert_int_equal(a->kvmclock.host_tsc, b->kvmclock.host_tsc);
	assert_int_equal(a->kvmclock.host_tsc_width, b->kvmclock.host_tsc_width);
	assert_int_equal(a->anchor.tai_ns, b->anchor.tai_ns);
	assert_int_equal(a->anchor.host_tsc, b->anchor.host_tsc);
	assert_int_equal(a->anchor.width_ns, b->anchor.width_ns);
	assert_int_equal(a->anchor.source, b->anchor.source);
	assert_int_equal(a->anchor.host_tsc_khz, b->anchor.host_tsc_khz);
	assert_int_equal(a->sync.maxerror_ns, b->sync.maxerror_ns);
	assert_int_equal(a->sync.esterror_ns, b->sync.esterror_ns);
	assert_int_equal(a->sync.unsynced, b->sync.unsynced);
	assert_int_equal(a->sync.tai_offset_s, b->sync.tai_offset_s);
	assert_int_equal(a->sync.leap, b->sync.leap);
	assert_int_equal(a->sync.source, b->sync.source);
}

static void assert_report_equal(const struct migration_report *a, const struct migration_report *b)
{
	assert_string_equal(a->migration_id, b->migration_id);
	assert_string_equal(a->vm_id, b->vm_id);
	assert_int_equal(a->backend, b->backend);
	assert_int_equal(a->generation, b->generation);
	assert_int_equal(a->n_vcpus, b->n_vcpus);
	for (uint32_t i = 0; i < a->n_vcpus; i++) {
		assert_int_equal(a->offsets_before[i], b->offsets_before[i]);
		assert_int_equal(a->offsets_after[i], b->offsets_after[i]);
	}
	assert_int_equal(a->elapsed_ns, b->elapsed_ns);
	assert_int_equal(a->delta_cycles, b->delta_cycles);
	assert_int_equal(a->error_bound_ns, b->error_bound_ns);
	assert_int_equal(a->apply_latency_ns, b->apply_latency_ns);
	assert_int_equal(a->guest_tsc_khz, b->guest_tsc_khz);
	assert_int_equal(a->error_bound_exceeded, b->error_bound_exceeded);
	assert_int_equal(a->clamped_ns, b->clamped_ns);
	assert_int_equal(a->timescale, b->timescale);
	assert_int_equal(a->kvmclock_verdict, b->kvmclock_verdict);
	assert_int_equal(a->kvmclock_flags_source, b->kvmclock_flags_source);
	assert_int_equal(a->kvmclock_flags_before, b->kvmclock_flags_before);
	assert_int_equal(a->kvmclock_flags_after, b->kvmclock_flags_after);
	assert_true(a->kvmclock_error_ns == b->kvmclock_error_ns);
	assert_int_equal(a->source_sync, b->source_sync);
	assert_true(a->source_maxerror_ns == b->source_maxerror_ns);
	assert_int_equal(a->target_sync, b->target_sync);
	assert_true(a->target_maxerror_ns == b->target_maxerror_ns);
}

/* ---- round trips ---- */

static void test_counter_state_round_trips_through_peer_frame(void **unused)
{
	static struct counter_state in, out;
	struct wire_counter_state_pb pb;
	Vcounter__V1__FinalState final = VCOUNTER__V1__FINAL_STATE__INIT;
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__PeerMessage *got = NULL;
	_cleanup_free_ uint8_t *frame = NULL;
	const uint8_t *payload;
	size_t frame_len, payload_len;
	char err[128] = "";

	fill_state(&in, VC_MAX_VCPUS);
	wire_counter_state_to_pb(&in, &pb);
	final.migration_id = (char *)MIGRATION_ID;
	final.generation = 7;
	final.state = &pb.state;
	msg.id = 99;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE;
	msg.final_state = &final;

	assert_int_equal(wire_peer_pack_frame(&msg, &frame, &frame_len), 0);
	assert_true(frame_len <= FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES);
	assert_int_equal(
		frame_parse_datagram(frame, frame_len, VC_MAX_FRAME_BYTES, &payload, &payload_len),
		0);
	assert_int_equal(payload_len, frame_len - FRAME_HEADER_BYTES);
	assert_int_equal(wire_peer_unpack(payload, payload_len, &got, NULL), 0);
	assert_int_equal(got->id, 99);
	assert_int_equal(got->body_case, VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE);
	assert_string_equal(got->final_state->migration_id, MIGRATION_ID);
	assert_int_equal(got->final_state->generation, 7);
	memset(&out, 0xa5, sizeof(out));
	assert_int_equal(
		wire_counter_state_from_pb(got->final_state->state, &out, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_state_equal(&in, &out);
	wire_peer_free(got);
}

static void test_counter_state_round_trips_through_vmm_frame(void **unused)
{
	static struct counter_state in, out;
	struct wire_counter_state_pb pb;
	Vcounter__V1__KvmOpResult result = VCOUNTER__V1__KVM_OP_RESULT__INIT;
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__VmmMessage *got = NULL;
	_cleanup_free_ uint8_t *frame = NULL;
	const uint8_t *payload;
	size_t frame_len, payload_len;

	/* One vCPU, no scaling, a negative TAI offset: the other end of the
	 * ranges. */
	fill_state(&in, 1);
	in.backend = BACKEND_KVM_ARM64;
	in.tsc_scaling_ratio = 0;
	in.tsc_scaling_frac_bits = 0;
	in.anchor.source = ANCHOR_KVM_CLOCK;
	in.sync.unsynced = false;
	wire_counter_state_to_pb(&in, &pb);
	result.state = &pb.state;
	result.backend = wire_backend_to_pb(in.backend);
	msg.id = 5;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP_RESULT;
	msg.kvm_op_result = &result;

	assert_int_equal(wire_vmm_pack_frame(&msg, &frame, &frame_len), 0);
	assert_int_equal(
		frame_parse_datagram(frame, frame_len, VC_MAX_FRAME_BYTES, &payload, &payload_len),
		0);
	assert_int_equal(wire_vmm_unpack(payload, payload_len, &got, NULL), 0);
	assert_int_equal(got->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP_RESULT);
	assert_int_equal(got->kvm_op_result->backend, VCOUNTER__V1__BACKEND__BACKEND_KVM_ARM64);
	assert_int_equal(wire_counter_state_from_pb(got->kvm_op_result->state, &out, NULL, 0), 0);
	assert_state_equal(&in, &out);
	wire_vmm_free(got);
}

static void test_report_round_trips_through_peer_frame(void **unused)
{
	static struct migration_report in, out;
	struct wire_report_pb pb;
	Vcounter__V1__Applied applied = VCOUNTER__V1__APPLIED__INIT;
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__PeerMessage *got = NULL;
	_cleanup_free_ uint8_t *frame = NULL;
	const uint8_t *payload;
	size_t frame_len, payload_len;
	char err[128] = "";

	/* VC_MAX_VCPUS offsets twice, every one a ten-byte varint: the largest
	 * report there can be (~20 KiB) must fit a frame. */
	fixture_report(&in, VC_MAX_VCPUS);
	wire_report_to_pb(&in, &pb);
	applied.report = &pb.report;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED;
	msg.applied = &applied;

	assert_int_equal(wire_peer_pack_frame(&msg, &frame, &frame_len), 0);
	assert_true(frame_len > 2 * 10 * VC_MAX_VCPUS);
	assert_int_equal(
		frame_parse_datagram(frame, frame_len, VC_MAX_FRAME_BYTES, &payload, &payload_len),
		0);
	assert_int_equal(wire_peer_unpack(payload, payload_len, &got, NULL), 0);
	assert_int_equal(got->body_case, VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED);
	assert_int_equal(wire_report_from_pb(got->applied->report, &out, err, sizeof(err)), 0);
	assert_report_equal(&in, &out);
	wire_peer_free(got);
}

static void test_to_pb_points_into_source_struct(void **unused)
{
	static struct counter_state s;
	static struct migration_report r;
	struct wire_counter_state_pb spb;
	struct wire_report_pb rpb;

	fill_state(&s, 4);
	fixture_report(&r, 4);
	wire_counter_state_to_pb(&s, &spb);
	wire_report_to_pb(&r, &rpb);
	assert_ptr_equal(spb.state.offset_cycles, s.offset_cycles);
	assert_int_equal(spb.state.n_offset_cycles, 4);
	assert_ptr_equal(spb.state.anchor, &spb.anchor);
	assert_ptr_equal(spb.state.kvmclock, &spb.kvmclock);
	assert_ptr_equal(spb.state.sync, &spb.sync);
	assert_ptr_equal(rpb.report.offsets_before, r.offsets_before);
	assert_ptr_equal(rpb.report.offsets_after, r.offsets_after);
	assert_ptr_equal(rpb.report.migration_id, r.migration_id);
	assert_int_equal(rpb.report.n_offsets_after, 4);
}

/* ---- envelopes ---- */

static void test_unpack_refuses_garbage_with_ebadmsg(void **unused)
{
	/* A varint that never ends; field 10 (register_vm) claiming 50 bytes
	 * with 2 present; wire type 7, which does not exist. */
	static const uint8_t endless_varint[] = { 0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
						  0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t truncated[] = { 0x52, 50, 0x0a, 0x00 };
	static const uint8_t bad_wire_type[] = { 0x0f, 0x01 };
	const struct {
		const uint8_t *buf;
		size_t len;
	} cases[] = {
		{ endless_varint, sizeof(endless_varint) },
		{ truncated, sizeof(truncated) },
		{ bad_wire_type, sizeof(bad_wire_type) },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		Vcounter__V1__VmmMessage *vmm = (void *)0x1;
		Vcounter__V1__PeerMessage *peer = (void *)0x1;

		print_message("garbage case %zu\n", i);
		assert_int_equal(wire_vmm_unpack(cases[i].buf, cases[i].len, &vmm, NULL), -EBADMSG);
		assert_ptr_equal(vmm, (void *)0x1);
		assert_int_equal(wire_peer_unpack(cases[i].buf, cases[i].len, &peer, NULL),
				 -EBADMSG);
		assert_ptr_equal(peer, (void *)0x1);
	}
}

static void test_unpack_refuses_empty_envelope_with_enomsg(void **unused)
{
	/* Nothing at all, and an envelope with only its id (field 1 = 7). */
	static const uint8_t only_id[] = { 0x08, 0x07 };
	Vcounter__V1__VmmMessage *vmm = NULL;
	Vcounter__V1__PeerMessage *peer = NULL;
	uint64_t id = 0;

	assert_int_equal(wire_vmm_unpack((const uint8_t *)"", 0, &vmm, NULL), -ENOMSG);
	assert_int_equal(wire_peer_unpack((const uint8_t *)"", 0, &peer, NULL), -ENOMSG);
	assert_int_equal(wire_vmm_unpack(only_id, sizeof(only_id), &vmm, &id), -ENOMSG);
	assert_true(id == 7);
	id = 0;
	assert_int_equal(wire_peer_unpack(only_id, sizeof(only_id), &peer, &id), -ENOMSG);
	assert_true(id == 7);
	assert_null(vmm);
	assert_null(peer);
}

static void test_unpack_ignores_unknown_field(void **unused)
{
	/* id = 3; field 99 (tag 99<<3|0 = 792 = 0x98 0x06) varint 1; then
	 * VmmMessage.ok (field 40, tag 320 = 0xc0 0x02) = true. */
	static const uint8_t vmm_bytes[] = { 0x08, 0x03, 0x98, 0x06, 0x01, 0xc0, 0x02, 0x01 };
	/* PeerMessage: field 99 first, then ack (field 16, tag 0x82 0x01) with
	 * migration_id "ab" (field 1, tag 0x0a). */
	static const uint8_t peer_bytes[] = { 0x98, 0x06, 0x01, 0x82, 0x01,
					      0x04, 0x0a, 0x02, 'a',  'b' };
	Vcounter__V1__VmmMessage *vmm = NULL;
	Vcounter__V1__PeerMessage *peer = NULL;

	assert_int_equal(wire_vmm_unpack(vmm_bytes, sizeof(vmm_bytes), &vmm, NULL), 0);
	assert_int_equal(vmm->id, 3);
	assert_int_equal(vmm->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_OK);
	assert_true(vmm->ok);
	wire_vmm_free(vmm);

	assert_int_equal(wire_peer_unpack(peer_bytes, sizeof(peer_bytes), &peer, NULL), 0);
	assert_int_equal(peer->body_case, VCOUNTER__V1__PEER_MESSAGE__BODY_ACK);
	assert_string_equal(peer->ack->migration_id, "ab");
	wire_peer_free(peer);
}

static void test_unpack_refuses_unknown_body_with_enomsg(void **unused)
{
	/* id = 4, then field 50 (tag 50<<3|2 = 402 = 0x92 0x03) as an empty
	 * sub-message: a oneof member a newer peer might add. */
	static const uint8_t bytes[] = { 0x08, 0x04, 0x92, 0x03, 0x00 };
	Vcounter__V1__VmmMessage *vmm = NULL;
	Vcounter__V1__PeerMessage *peer = NULL;
	uint64_t id = 0;

	/* The id still comes back: the sender is answered "unknown type". */
	assert_int_equal(wire_vmm_unpack(bytes, sizeof(bytes), &vmm, &id), -ENOMSG);
	assert_true(id == 4);
	id = 0;
	assert_int_equal(wire_peer_unpack(bytes, sizeof(bytes), &peer, &id), -ENOMSG);
	assert_true(id == 4);
	assert_null(vmm);
	assert_null(peer);
}

static void test_unpack_refuses_payload_over_limit(void **unused)
{
	_cleanup_free_ uint8_t *buf = calloc(1, VC_MAX_FRAME_BYTES + 1);
	Vcounter__V1__VmmMessage *vmm = NULL;
	Vcounter__V1__PeerMessage *peer = NULL;

	assert_non_null(buf);
	assert_int_equal(wire_vmm_unpack(buf, VC_MAX_FRAME_BYTES + 1, &vmm, NULL), -EMSGSIZE);
	assert_int_equal(wire_peer_unpack(buf, VC_MAX_FRAME_BYTES + 1, &peer, NULL), -EMSGSIZE);
	assert_null(vmm);
	assert_null(peer);
}

/* An Error envelope whose message is msg_len bytes. */
static int pack_error_frame(size_t msg_len, uint8_t **ret_buf, size_t *ret_len)
{
	_cleanup_free_ char *text = malloc(msg_len + 1);
	Vcounter__V1__Error error = VCOUNTER__V1__ERROR__INIT;
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;

	assert_non_null(text);
	memset(text, 'x', msg_len);
	text[msg_len] = '\0';
	error.code = VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL;
	error.message = text;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR;
	msg.error = &error;
	return wire_vmm_pack_frame(&msg, ret_buf, ret_len);
}

static void test_pack_frame_refuses_message_over_limit(void **unused)
{
	uint8_t *buf = (void *)0x1;
	size_t len = 12345;

	assert_int_equal(pack_error_frame(70 * 1024, &buf, &len), -EMSGSIZE);
	assert_ptr_equal(buf, (void *)0x1);
	assert_int_equal(len, 12345);
}

static void test_pack_frame_accepts_message_exactly_at_limit(void **unused)
{
	/* envelope: tag(1) + len(3) + Error{ code(2) + tag(1) + len(3) + text },
	 * so a text of VC_MAX_FRAME_BYTES - 10 bytes makes the payload exactly
	 * the limit, and one byte more is over it. */
	const size_t text_len = VC_MAX_FRAME_BYTES - 10;
	_cleanup_free_ uint8_t *buf = NULL;
	uint8_t *over = (void *)0x1;
	Vcounter__V1__VmmMessage *got = NULL;
	const uint8_t *payload;
	size_t len, payload_len;

	assert_int_equal(pack_error_frame(text_len, &buf, &len), 0);
	assert_int_equal(len, FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES);
	assert_int_equal(frame_parse_datagram(buf, len, VC_MAX_FRAME_BYTES, &payload, &payload_len),
			 0);
	assert_int_equal(wire_vmm_unpack(payload, payload_len, &got, NULL), 0);
	assert_int_equal(got->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR);
	assert_int_equal(strlen(got->error->message), text_len);
	wire_vmm_free(got);

	assert_int_equal(pack_error_frame(text_len + 1, &over, &len), -EMSGSIZE);
	assert_ptr_equal(over, (void *)0x1);
}

static void test_pack_frame_refuses_null_message(void **unused)
{
	uint8_t *buf = NULL;
	size_t len = 0;

	assert_int_equal(wire_vmm_pack_frame(NULL, &buf, &len), -EINVAL);
	assert_int_equal(wire_peer_pack_frame(NULL, &buf, &len), -EINVAL);
	assert_null(buf);
}

/* ---- counter state validation ---- */

/* A valid CounterState in protobuf-c form, with room for one entry more than
 * the limit so that a case can claim VC_MAX_VCPUS + 1 offsets. */
struct pb_fixture {
	struct counter_state src;
	struct wire_counter_state_pb pb;
	uint64_t offsets[VC_MAX_VCPUS + 1];
};

static void pb_fixture_init(struct pb_fixture *f)
{
	fill_state(&f->src, 8);
	wire_counter_state_to_pb(&f->src, &f->pb);
	memcpy(f->offsets, f->src.offset_cycles, sizeof(f->src.offset_cycles));
	f->pb.state.offset_cycles = f->offsets;
}

static void mut_backend_unknown(struct pb_fixture *f)
{
	f->pb.state.backend = (Vcounter__V1__Backend)9;
}
static void mut_backend_negative(struct pb_fixture *f)
{
	f->pb.state.backend = (Vcounter__V1__Backend)-1;
}
static void mut_backend_none(struct pb_fixture *f)
{
	f->pb.state.backend = VCOUNTER__V1__BACKEND__BACKEND_NONE;
}
static void mut_arch_none(struct pb_fixture *f)
{
	f->pb.state.arch = VCOUNTER__V1__COUNTER_ARCH__COUNTER_ARCH_NONE;
}
static void mut_arch_unknown(struct pb_fixture *f)
{
	f->pb.state.arch = (Vcounter__V1__CounterArch)3;
}
static void mut_arm64_with_ratio(struct pb_fixture *f)
{
	f->pb.state.arch = VCOUNTER__V1__COUNTER_ARCH__COUNTER_ARCH_ARM64_CNTVCT;
}
static void mut_khz_zero(struct pb_fixture *f)
{
	f->pb.state.guest_tsc_khz = 0;
}
static void mut_khz_over_10ghz(struct pb_fixture *f)
{
	f->pb.state.guest_tsc_khz = 10000001;
}
static void mut_frac_bits_64(struct pb_fixture *f)
{
	f->pb.state.tsc_scaling_ratio = 0;
	f->pb.state.tsc_scaling_frac_bits = 64;
}
static void mut_frac_bits_40_with_ratio(struct pb_fixture *f)
{
	f->pb.state.tsc_scaling_frac_bits = 40;
}
static void mut_frac_bits_0_with_ratio(struct pb_fixture *f)
{
	f->pb.state.tsc_scaling_frac_bits = 0;
}
static void mut_no_offsets(struct pb_fixture *f)
{
	f->pb.state.n_offset_cycles = 0;
}
static void mut_too_many_offsets(struct pb_fixture *f)
{
	f->pb.state.n_offset_cycles = VC_MAX_VCPUS + 1;
}
static void mut_offsets_without_data(struct pb_fixture *f)
{
	f->pb.state.offset_cycles = NULL;
}
static void mut_anchor_missing(struct pb_fixture *f)
{
	f->pb.state.anchor = NULL;
}
static void mut_anchor_source_unknown(struct pb_fixture *f)
{
	f->pb.anchor.source = (Vcounter__V1__AnchorSource)7;
}
static void mut_anchor_source_none(struct pb_fixture *f)
{
	f->pb.anchor.source = VCOUNTER__V1__ANCHOR_SOURCE__ANCHOR_SOURCE_NONE;
}
static void mut_kvmclock_missing(struct pb_fixture *f)
{
	f->pb.state.kvmclock = NULL;
}
static void mut_sync_missing(struct pb_fixture *f)
{
	f->pb.state.sync = NULL;
}

static void mut_sync_leap_unknown(struct pb_fixture *f)
{
	f->pb.sync.leap = (Vcounter__V1__Leap)3;
}
static void mut_sync_source_unknown(struct pb_fixture *f)
{
	f->pb.sync.source = (Vcounter__V1__SyncSource)4;
}

static void test_counter_state_from_pb_refuses_each_invalid_field(void **unused)
{
	static const struct {
		const char *name;
		void (*mutate)(struct pb_fixture *f);
		const char *err;
	} cases[] = {
		{ "backend 9", mut_backend_unknown, "backend 9 unknown" },
		{ "backend -1", mut_backend_negative, "backend -1 unknown" },
		{ "backend none", mut_backend_none, "backend is none" },
		{ "arch none", mut_arch_none, "counter arch missing" },
		{ "arch 3", mut_arch_unknown, "counter arch 3 unknown" },
		{ "arm64 with a TSC ratio", mut_arm64_with_ratio,
		  "arm64-cntvct state with a TSC scaling ratio" },
		{ "khz 0", mut_khz_zero, "guest_tsc_khz is 0" },
		{ "khz > 10 GHz", mut_khz_over_10ghz,
		  "guest_tsc_khz 10000001 above limit 10000000" },
		{ "frac bits 64", mut_frac_bits_64, "tsc_scaling_frac_bits 64 above 63" },
		{ "frac bits 40 with ratio", mut_frac_bits_40_with_ratio,
		  "tsc_scaling_frac_bits 40 with tsc_scaling_ratio 281474976710656" },
		{ "frac bits 0 with ratio", mut_frac_bits_0_with_ratio,
		  "tsc_scaling_frac_bits 0 with tsc_scaling_ratio" },
		{ "no offsets", mut_no_offsets, "offset_cycles has no entries" },
		{ "1025 offsets", mut_too_many_offsets,
		  "offset_cycles has 1025 entries, limit 1024" },
		{ "offsets without data", mut_offsets_without_data,
		  "offset_cycles has 8 entries but no data" },
		{ "anchor missing", mut_anchor_missing, "anchor missing" },
		{ "anchor source 7", mut_anchor_source_unknown, "anchor source 7 unknown" },
		{ "anchor source none", mut_anchor_source_none, "anchor source is none" },
		{ "kvmclock missing", mut_kvmclock_missing, "kvmclock missing" },
		{ "sync missing", mut_sync_missing, "sync missing" },
		{ "sync leap 3", mut_sync_leap_unknown, "sync leap 3 unknown" },
		{ "sync source 4", mut_sync_source_unknown, "sync source 4 unknown" },
	};
	static struct pb_fixture f;
	static struct counter_state ret, untouched;

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char err[160] = "";

		print_message("case: %s\n", cases[i].name);
		pb_fixture_init(&f);
		/* Unmutated, the fixture is accepted: the refusal below is the
		 * mutation's doing. */
		assert_int_equal(wire_counter_state_from_pb(&f.pb.state, &ret, err, sizeof(err)),
				 0);
		cases[i].mutate(&f);
		memset(&ret, 0x5a, sizeof(ret));
		memcpy(&untouched, &ret, sizeof(ret));
		assert_int_equal(wire_counter_state_from_pb(&f.pb.state, &ret, err, sizeof(err)),
				 -EINVAL);
		if (!strstr(err, cases[i].err))
			fail_msg("err \"%s\" lacks \"%s\"", err, cases[i].err);
		assert_memory_equal(&ret, &untouched, sizeof(ret));
		/* Without an err buffer the answer is the same. */
		assert_int_equal(wire_counter_state_from_pb(&f.pb.state, &ret, NULL, 0), -EINVAL);
	}
}

static void test_counter_state_from_pb_refuses_null(void **unused)
{
	static struct counter_state ret;
	char err[64] = "";

	assert_int_equal(wire_counter_state_from_pb(NULL, &ret, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "counter state missing");
}

static void test_counter_state_from_pb_truncates_err_safely(void **unused)
{
	static struct pb_fixture f;
	static struct counter_state ret;
	char err[8];

	memset(err, 'z', sizeof(err));
	pb_fixture_init(&f);
	mut_too_many_offsets(&f);
	assert_int_equal(wire_counter_state_from_pb(&f.pb.state, &ret, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "offset_");
}

static void test_counter_state_from_pb_accepts_limits(void **unused)
{
	static struct pb_fixture f;
	static struct counter_state ret;
	char err[160] = "";

	pb_fixture_init(&f);
	f.pb.state.guest_tsc_khz = 10000000;
	f.pb.state.n_offset_cycles = VC_MAX_VCPUS;
	f.pb.state.tsc_scaling_frac_bits = 32;
	f.pb.kvmclock.flags = UINT32_MAX; /* whatever KVM said */
	assert_int_equal(wire_counter_state_from_pb(&f.pb.state, &ret, err, sizeof(err)), 0);
	assert_int_equal(ret.n_vcpus, VC_MAX_VCPUS);
	assert_int_equal(ret.guest_tsc_khz, 10000000);
	assert_int_equal(ret.tsc_scaling_frac_bits, 32);
	assert_int_equal(ret.kvmclock.flags, UINT32_MAX);

	/* No scaling: the frac bits are not a ratio format, anything <= 63. */
	f.pb.state.tsc_scaling_ratio = 0;
	f.pb.state.tsc_scaling_frac_bits = 63;
	f.pb.state.n_offset_cycles = 1;
	f.pb.state.guest_tsc_khz = 1;
	assert_int_equal(wire_counter_state_from_pb(&f.pb.state, &ret, err, sizeof(err)), 0);
	assert_int_equal(ret.n_vcpus, 1);
	assert_int_equal(ret.tsc_scaling_ratio, 0);
}

static void test_counter_state_from_pb_refuses_unknown_enum_after_unpack(void **unused)
{
	/* proto3 enums are open: a peer's unknown backend number survives unpack
	 * and must be caught by validation. */
	static struct counter_state in, ret;
	struct wire_counter_state_pb pb;
	Vcounter__V1__Prepare prepare = VCOUNTER__V1__PREPARE__INIT;
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__PeerMessage *got = NULL;
	_cleanup_free_ uint8_t *frame = NULL;
	size_t frame_len;
	char err[128] = "";

	fill_state(&in, 2);
	wire_counter_state_to_pb(&in, &pb);
	pb.state.backend = (Vcounter__V1__Backend)9;
	prepare.state = &pb.state;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE;
	msg.prepare = &prepare;
	assert_int_equal(wire_peer_pack_frame(&msg, &frame, &frame_len), 0);
	assert_int_equal(wire_peer_unpack(frame + FRAME_HEADER_BYTES,
					  frame_len - FRAME_HEADER_BYTES, &got, NULL),
			 0);
	assert_int_equal(wire_counter_state_from_pb(got->prepare->state, &ret, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "backend 9 unknown");
	wire_peer_free(got);
}

/* ---- report validation ---- */

struct report_fixture {
	struct migration_report src;
	struct wire_report_pb pb;
	uint64_t before[VC_MAX_VCPUS + 1];
	uint64_t after[VC_MAX_VCPUS + 1];
};

static void report_fixture_init(struct report_fixture *f)
{
	fixture_report(&f->src, 3);
	wire_report_to_pb(&f->src, &f->pb);
	f->pb.report.offsets_before = f->before;
	f->pb.report.offsets_after = f->after;
}

static void rmut_migration_id_empty(struct report_fixture *f)
{
	f->pb.report.migration_id = (char *)"";
}
static void rmut_migration_id_upper(struct report_fixture *f)
{
	f->pb.report.migration_id = (char *)"0123456789ABCDEF0123456789abcdef";
}
static void rmut_migration_id_null(struct report_fixture *f)
{
	f->pb.report.migration_id = NULL;
}
static void rmut_vm_id_space(struct report_fixture *f)
{
	f->pb.report.vm_id = (char *)"vm 42";
}
static void rmut_vm_id_too_long(struct report_fixture *f)
{
	f->pb.report.vm_id =
		(char *)"a123456789b123456789c123456789d123456789e123456789f123456789g123";
}
static void rmut_backend_unknown(struct report_fixture *f)
{
	f->pb.report.backend = (Vcounter__V1__Backend)4;
}
static void rmut_backend_none(struct report_fixture *f)
{
	f->pb.report.backend = VCOUNTER__V1__BACKEND__BACKEND_NONE;
}
static void rmut_no_before(struct report_fixture *f)
{
	f->pb.report.n_offsets_before = 0;
}
static void rmut_too_many_after(struct report_fixture *f)
{
	f->pb.report.n_offsets_after = VC_MAX_VCPUS + 1;
}
static void rmut_counts_differ(struct report_fixture *f)
{
	f->pb.report.n_offsets_after = 2;
}
static void rmut_khz_zero(struct report_fixture *f)
{
	f->pb.report.guest_tsc_khz = 0;
}

static void rmut_timescale_unknown(struct report_fixture *f)
{
	f->pb.report.timescale = (Vcounter__V1__Timescale)3;
}
static void rmut_target_sync_unknown(struct report_fixture *f)
{
	f->pb.report.target_sync = (Vcounter__V1__SyncSource)9;
}
static void rmut_kvmclock_verdict_unknown(struct report_fixture *f)
{
	f->pb.report.kvmclock_verdict = (Vcounter__V1__KvmclockVerdict)4;
}

static void test_report_from_pb_refuses_each_invalid_field(void **unused)
{
	static const struct {
		const char *name;
		void (*mutate)(struct report_fixture *f);
		const char *err;
	} cases[] = {
		{ "migration id empty", rmut_migration_id_empty, "migration_id \"\" invalid" },
		{ "migration id upper case", rmut_migration_id_upper,
		  "migration_id \"0123456789ABCDEF0123456789abcdef\" invalid" },
		{ "migration id NULL", rmut_migration_id_null, "migration_id \"\" invalid" },
		{ "vm id with space", rmut_vm_id_space, "vm_id \"vm 42\" invalid" },
		{ "vm id 64 bytes", rmut_vm_id_too_long, "vm_id \"a123456789" },
		{ "backend 4", rmut_backend_unknown, "backend 4 unknown" },
		{ "backend none", rmut_backend_none, "backend is none" },
		{ "no offsets before", rmut_no_before, "offsets_before has no entries" },
		{ "1025 offsets after", rmut_too_many_after,
		  "offsets_after has 1025 entries, limit 1024" },
		{ "counts differ", rmut_counts_differ,
		  "offsets_before has 3 entries, offsets_after 2" },
		{ "khz 0", rmut_khz_zero, "guest_tsc_khz is 0" },
		{ "timescale 3", rmut_timescale_unknown, "timescale 3 unknown" },
		{ "kvmclock verdict 4", rmut_kvmclock_verdict_unknown,
		  "kvmclock verdict 4 unknown" },
		{ "target sync 9", rmut_target_sync_unknown, "sync source 1/9 unknown" },
	};
	static struct report_fixture f;
	static struct migration_report ret, untouched;

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char err[160] = "";

		print_message("case: %s\n", cases[i].name);
		report_fixture_init(&f);
		assert_int_equal(wire_report_from_pb(&f.pb.report, &ret, err, sizeof(err)), 0);
		cases[i].mutate(&f);
		memset(&ret, 0x5a, sizeof(ret));
		memcpy(&untouched, &ret, sizeof(ret));
		assert_int_equal(wire_report_from_pb(&f.pb.report, &ret, err, sizeof(err)),
				 -EINVAL);
		if (!strstr(err, cases[i].err))
			fail_msg("err \"%s\" lacks \"%s\"", err, cases[i].err);
		assert_memory_equal(&ret, &untouched, sizeof(ret));
	}
}

static void test_report_from_pb_refuses_null(void **unused)
{
	static struct migration_report ret;
	char err[64] = "";

	assert_int_equal(wire_report_from_pb(NULL, &ret, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "report missing");
}

/* ---- enums ---- */

static void test_enum_conversions_refuse_unknown_values(void **unused)
{
	enum backend_kind kind = _BACKEND_KIND_INVALID;
	enum vm_role role = _VM_ROLE_INVALID;

	assert_int_equal(wire_backend_from_pb(VCOUNTER__V1__BACKEND__BACKEND_KVM_SYSCOUNTER, &kind),
			 0);
	assert_int_equal(kind, BACKEND_KVM_SYSCOUNTER);
	assert_int_equal(wire_backend_from_pb(VCOUNTER__V1__BACKEND__BACKEND_NONE, &kind), 0);
	assert_int_equal(kind, BACKEND_NONE);
	assert_int_equal(wire_backend_from_pb((Vcounter__V1__Backend)4, &kind), -EINVAL);
	assert_int_equal(kind, BACKEND_NONE);

	assert_int_equal(wire_role_from_pb(VCOUNTER__V1__ROLE__ROLE_TARGET, &role), 0);
	assert_int_equal(role, VM_ROLE_TARGET);
	assert_int_equal(wire_role_from_pb(VCOUNTER__V1__ROLE__ROLE_SOURCE, &role), 0);
	assert_int_equal(role, VM_ROLE_SOURCE);
	assert_int_equal(wire_role_from_pb(VCOUNTER__V1__ROLE__ROLE_UNSPECIFIED, &role), 0);
	assert_int_equal(role, VM_ROLE_NONE);
	assert_int_equal(wire_role_from_pb((Vcounter__V1__Role)3, &role), -EINVAL);
	assert_int_equal(role, VM_ROLE_NONE);

	for (int k = 0; k < _BACKEND_KIND_MAX; k++) {
		assert_int_equal(
			wire_backend_from_pb(wire_backend_to_pb((enum backend_kind)k), &kind), 0);
		assert_int_equal(kind, k);
	}
	assert_int_equal(wire_backend_to_pb(_BACKEND_KIND_INVALID),
			 VCOUNTER__V1__BACKEND__BACKEND_NONE);
}

/* ---- errors ---- */

static void test_error_code_from_errno_follows_table(void **unused)
{
	static const struct {
		int err;
		Vcounter__V1__ErrorCode code;
	} cases[] = {
		{ 0, VCOUNTER__V1__ERROR_CODE__ERROR_NONE },
		{ -EINVAL, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT },
		{ -EBADMSG, VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT },
		{ -ENOENT, VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND },
		{ -EPERM, VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED },
		{ -EACCES, VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED },
		{ -EPROTO, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION },
		{ -ESTALE, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION },
		{ -EXDEV, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION },
		{ -EEXIST, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION },
		{ -EALREADY, VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION },
		{ -EOPNOTSUPP, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE },
		{ -ECONNREFUSED, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE },
		{ -EBUSY, VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE },
		{ -EADDRINUSE, VCOUNTER__V1__ERROR_CODE__ERROR_ALREADY_EXISTS },
		{ -ENOMEM, VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED },
		{ -EMSGSIZE, VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED },
		{ -EMFILE, VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED },
		{ -ECANCELED, VCOUNTER__V1__ERROR_CODE__ERROR_ABORTED },
		{ -ENOMSG, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED },
		{ -ENOSYS, VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED },
		{ -EIO, VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL },
		{ -EFAULT, VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL },
		{ -9999, VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL },
		{ INT32_MIN, VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL },
		/* Either sign is accepted. */
		{ EPERM, VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		print_message("errno %d\n", cases[i].err);
		assert_int_equal(wire_error_code_from_errno(cases[i].err), cases[i].code);
	}
}

static void test_errno_from_error_falls_back_on_code(void **unused)
{
	static const struct {
		Vcounter__V1__ErrorCode code;
		int err;
	} cases[] = {
		{ VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT, -EINVAL },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND, -ENOENT },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_PERMISSION_DENIED, -EPERM },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION, -EPROTO },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_UNAVAILABLE, -EOPNOTSUPP },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_ALREADY_EXISTS, -EEXIST },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_RESOURCE_EXHAUSTED, -ENOSPC },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_INTERNAL, -EIO },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_ABORTED, -ECANCELED },
		{ VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED, -ENOMSG },
		/* An Error body is a failure even when it names none. */
		{ VCOUNTER__V1__ERROR_CODE__ERROR_NONE, -EIO },
		{ (Vcounter__V1__ErrorCode)77, -EIO },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		Vcounter__V1__Error e = VCOUNTER__V1__ERROR__INIT;

		print_message("code %d\n", (int)cases[i].code);
		e.code = cases[i].code;
		assert_int_equal(wire_errno_from_error(&e), cases[i].err);
		/* Every code the table produces maps back to itself. */
		if (cases[i].code >= VCOUNTER__V1__ERROR_CODE__ERROR_INVALID_ARGUMENT &&
		    cases[i].code <= VCOUNTER__V1__ERROR_CODE__ERROR_UNIMPLEMENTED &&
		    cases[i].code != VCOUNTER__V1__ERROR_CODE__ERROR_ALREADY_EXISTS)
			assert_int_equal(wire_error_code_from_errno(cases[i].err), cases[i].code);
	}
	assert_int_equal(wire_errno_from_error(NULL), -EIO);
}

static void test_errno_from_error_prefers_errno_value_in_range(void **unused)
{
	Vcounter__V1__Error e = VCOUNTER__V1__ERROR__INIT;

	e.code = VCOUNTER__V1__ERROR_CODE__ERROR_FAILED_PRECONDITION;
	e.errno_value = ESTALE;
	assert_int_equal(wire_errno_from_error(&e), -ESTALE);
	e.errno_value = 4095;
	assert_int_equal(wire_errno_from_error(&e), -4095);
	/* Out of Linux's errno range: a peer's garbage, the code decides. */
	e.errno_value = 4096;
	assert_int_equal(wire_errno_from_error(&e), -EPROTO);
	e.errno_value = -EPERM;
	assert_int_equal(wire_errno_from_error(&e), -EPROTO);
	e.errno_value = INT32_MIN;
	assert_int_equal(wire_errno_from_error(&e), -EPROTO);
}

static void test_errno_round_trips_through_error_reply(void **unused)
{
	static const int errs[] = { EINVAL,   ENOENT,	 EPERM,	   EACCES,     EPROTO, ESTALE,
				    EXDEV,    EEXIST,	 EALREADY, EOPNOTSUPP, EBUSY,  ENOMEM,
				    EMSGSIZE, ECANCELED, ENOMSG,   EIO,	       EFAULT, EBADMSG };

	for (size_t i = 0; i < ELEMENTSOF(errs); i++) {
		Vcounter__V1__Error e = VCOUNTER__V1__ERROR__INIT;

		e.code = wire_error_code_from_errno(-errs[i]);
		e.errno_value = errs[i];
		assert_int_equal(wire_errno_from_error(&e), -errs[i]);
	}
}

/* VC_VM_ID_MAX (vcounterd(8), LIMITS): 63 bytes is a VM id, 64 is not;
 * every wire checks ids with this. */
static void test_vm_id_of_63_bytes_is_valid_64_is_not(void **state)
{
	char id[VC_VM_ID_MAX + 2];

	memset(id, 'a', sizeof(id) - 1);
	id[VC_VM_ID_MAX] = '\0';
	assert_int_equal(strlen(id), 63);
	assert_true(vm_id_is_valid(id));
	id[VC_VM_ID_MAX] = 'a';
	id[VC_VM_ID_MAX + 1] = '\0';
	assert_false(vm_id_is_valid(id));
	assert_false(vm_id_is_valid(""));
	assert_true(vm_id_is_valid("a"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter_state_round_trips_through_peer_frame),
		cmocka_unit_test(test_counter_state_round_trips_through_vmm_frame),
		cmocka_unit_test(test_report_round_trips_through_peer_frame),
		cmocka_unit_test(test_to_pb_points_into_source_struct),
		cmocka_unit_test(test_unpack_refuses_garbage_with_ebadmsg),
		cmocka_unit_test(test_unpack_refuses_empty_envelope_with_enomsg),
		cmocka_unit_test(test_unpack_ignores_unknown_field),
		cmocka_unit_test(test_unpack_refuses_unknown_body_with_enomsg),
		cmocka_unit_test(test_unpack_refuses_payload_over_limit),
		cmocka_unit_test(test_pack_frame_refuses_message_over_limit),
		cmocka_unit_test(test_pack_frame_accepts_message_exactly_at_limit),
		cmocka_unit_test(test_pack_frame_refuses_null_message),
		cmocka_unit_test(test_counter_state_from_pb_refuses_each_invalid_field),
		cmocka_unit_test(test_counter_state_from_pb_refuses_null),
		cmocka_unit_test(test_counter_state_from_pb_truncates_err_safely),
		cmocka_unit_test(test_counter_state_from_pb_accepts_limits),
		cmocka_unit_test(test_counter_state_from_pb_refuses_unknown_enum_after_unpack),
		cmocka_unit_test(test_report_from_pb_refuses_each_invalid_field),
		cmocka_unit_test(test_report_from_pb_refuses_null),
		cmocka_unit_test(test_enum_conversions_refuse_unknown_values),
		cmocka_unit_test(test_error_code_from_errno_follows_table),
		cmocka_unit_test(test_errno_from_error_falls_back_on_code),
		cmocka_unit_test(test_errno_from_error_prefers_errno_value_in_range),
		cmocka_unit_test(test_errno_round_trips_through_error_reply),
		cmocka_unit_test(test_vm_id_of_63_bytes_is_valid_64_is_not),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
