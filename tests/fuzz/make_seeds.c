/* make_seeds - writes the seed corpora of tests/fuzz/corpus/<target>/ with
 * the project's own packers, so that every seed is a valid input that gets
 * past the framing, checksums and unpacking. Run by tests/fuzz/make-seeds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fixture.h"
#include "flow_fakes.h"
#include "frame.h"
#include "grpc_wire.h"
#include "journal.h"
#include "vm_store.h"
#include "wire.h"

static const char *out_dir;

static void put(const char *target, const char *name, const void *prefix, size_t prefix_len,
		const void *data, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", out_dir, target);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/%s/%s", out_dir, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(prefix, 1, prefix_len, f) != prefix_len ||
	    fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

static void vmm_seed(const char *name, const uint8_t *fd_prefix, size_t fd_prefix_len,
		     const Vcounter__V1__VmmMessage *msg)
{
	uint8_t *buf;
	size_t len;

	if (wire_vmm_pack_frame(msg, &buf, &len) < 0)
		exit(1);
	put("fuzz_vmm_frame", name, fd_prefix, fd_prefix_len, buf, len);
	free(buf);
}

static void vmm_seeds(void)
{
	static struct counter_state s;
	static struct migration_report r;
	struct wire_counter_state_pb spb;
	struct wire_report_pb rpb;
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__RegisterVm reg = VCOUNTER__V1__REGISTER_VM__INIT;
	Vcounter__V1__KvmOpResult res = VCOUNTER__V1__KVM_OP_RESULT__INIT;
	Vcounter__V1__ApplyReply reply = VCOUNTER__V1__APPLY_REPLY__INIT;
	Vcounter__V1__Error error = VCOUNTER__V1__ERROR__INIT;

	msg.id = 1;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM;
	msg.register_vm = &reg;
	reg.vm_id = "vm-1";
	reg.role = VCOUNTER__V1__ROLE__ROLE_SOURCE;
	reg.vcpu_count = 2;
	vmm_seed("register-3fds", (const uint8_t[]){ 3, 2, 3, 0 }, 4, &msg);
	vmm_seed("register-nofd", (const uint8_t[]){ 0 }, 1, &msg);

	fixture_state(&s, 4, (uint64_t)-1000);
	wire_counter_state_to_pb(&s, &spb);
	res.state = &spb.state;
	res.backend = VCOUNTER__V1__BACKEND__BACKEND_KVM_X86;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP_RESULT;
	msg.kvm_op_result = &res;
	vmm_seed("kvm-op-result", (const uint8_t[]){ 0 }, 1, &msg);

	fixture_report(&r, 2);
	wire_report_to_pb(&r, &rpb);
	reply.report = &rpb.report;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY_REPLY;
	msg.apply_reply = &reply;
	vmm_seed("apply-reply", (const uint8_t[]){ 0 }, 1, &msg);

	error.code = VCOUNTER__V1__ERROR_CODE__ERROR_NOT_FOUND;
	error.message = "no such VM";
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR;
	msg.error = &error;
	vmm_seed("error", (const uint8_t[]){ 1, 4 }, 2, &msg);
}

/* fuzz_vmm_server: datagrams, each a 2-byte big-endian length and a frame. */
struct datagrams {
	uint8_t buf[8192];
	size_t len;
};

/* A 2-byte big-endian length, then len bytes. */
static void datagram_put(struct datagrams *d, const uint8_t *bytes, size_t len)
{
	if (len > 0xffff || d->len + 2 + len > sizeof(d->buf))
		exit(1);
	d->buf[d->len++] = (uint8_t)(len >> 8);
	d->buf[d->len++] = (uint8_t)len;
	if (len)
		memcpy(d->buf + d->len, bytes, len);
	d->len += len;
}

static void datagram_add(struct datagrams *d, const Vcounter__V1__VmmMessage *msg)
{
	uint8_t *frame;
	size_t len;

	if (wire_vmm_pack_frame(msg, &frame, &len) < 0)
		exit(1);
	datagram_put(d, frame, len);
	free(frame);
}

static void vmm_server_seeds(void)
{
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__StatusRequest st = VCOUNTER__V1__STATUS_REQUEST__INIT;
	Vcounter__V1__RegisterVm reg = VCOUNTER__V1__REGISTER_VM__INIT;
	Vcounter__V1__MigrateOut mo = VCOUNTER__V1__MIGRATE_OUT__INIT;
	Vcounter__V1__ReportPaused rp = VCOUNTER__V1__REPORT_PAUSED__INIT;
	Vcounter__V1__ApplyRequest ap = VCOUNTER__V1__APPLY_REQUEST__INIT;
	Vcounter__V1__UnregisterVm un = VCOUNTER__V1__UNREGISTER_VM__INIT;
	struct datagrams d = { .len = 0 };

	msg.id = 1;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS;
	msg.status = &st;
	datagram_add(&d, &msg);
	put("fuzz_vmm_server", "status", "", 0, d.buf, d.len);

	d.len = 0;
	msg.id = 2;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM;
	msg.register_vm = &reg;
	reg.vm_id = "vm-1";
	reg.role = VCOUNTER__V1__ROLE__ROLE_SOURCE;
	reg.vcpu_count = 1;
	datagram_add(&d, &msg); /* without its fds: refused */
	msg.id = 3;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_UNREGISTER_VM;
	msg.unregister_vm = &un;
	un.vm_id = "vm-1";
	datagram_add(&d, &msg);
	put("fuzz_vmm_server", "register-unregister", "", 0, d.buf, d.len);

	d.len = 0;
	msg.id = 4;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT;
	msg.migrate_out = &mo;
	mo.vm_id = "vm-1";
	mo.peer_address = "192.0.2.7:7420";
	mo.peer_name = "host-b.test";
	datagram_add(&d, &msg);
	msg.id = 5;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED;
	msg.report_paused = &rp;
	rp.vm_id = "vm-1";
	rp.migration_id = "00112233445566778899aabbccddeeff";
	datagram_add(&d, &msg);
	msg.id = 6;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY;
	msg.apply = &ap;
	ap.vm_id = "vm-1";
	ap.migration_id = "00112233445566778899aabbccddeeff";
	datagram_add(&d, &msg);
	put("fuzz_vmm_server", "migrate-paused-apply", "", 0, d.buf, d.len);
}

static void peer_seed(const char *name, const Vcounter__V1__PeerMessage *msg)
{
	uint8_t *buf;
	size_t len;

	if (wire_peer_pack_frame(msg, &buf, &len) < 0)
		exit(1);
	/* The target takes the payload: the frame without its header. */
	put("fuzz_peer_frame", name, NULL, 0, buf + FRAME_HEADER_BYTES, len - FRAME_HEADER_BYTES);
	free(buf);
}

static void peer_seeds(void)
{
	static struct counter_state s;
	static struct migration_report r;
	struct wire_counter_state_pb spb;
	struct wire_report_pb rpb;
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Prepare prepare = VCOUNTER__V1__PREPARE__INIT;
	Vcounter__V1__FinalState final = VCOUNTER__V1__FINAL_STATE__INIT;
	Vcounter__V1__Applied applied = VCOUNTER__V1__APPLIED__INIT;

	fixture_state(&s, 2, (uint64_t)-1000);
	wire_counter_state_to_pb(&s, &spb);
	msg.id = 7;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE;
	msg.prepare = &prepare;
	prepare.migration_id = "0123456789abcdef0123456789abcdef";
	prepare.vm_id = "vm-1";
	prepare.state = &spb.state;
	peer_seed("prepare", &msg);

	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE;
	msg.final_state = &final;
	final.migration_id = prepare.migration_id;
	final.generation = 3;
	final.state = &spb.state;
	peer_seed("final-state", &msg);

	fixture_report(&r, 2);
	wire_report_to_pb(&r, &rpb);
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED;
	msg.applied = &applied;
	applied.report = &rpb.report;
	peer_seed("applied", &msg);
}

/* fuzz_peer_link: records of a 2-byte big-endian length and a frame's
 * payload (0: the target's VMM applies), on one link from host-a.test to
 * a target holding "vm-flow" (1 vCPU, 2.5 GHz; tests/unit/flow_fakes.h). */
static void record_add(struct datagrams *d, const Vcounter__V1__PeerMessage *msg)
{
	uint8_t *frame;
	size_t len;

	if (!msg) {
		datagram_put(d, NULL, 0);
		return;
	}
	if (wire_peer_pack_frame(msg, &frame, &len) < 0)
		exit(1);
	datagram_put(d, frame + FRAME_HEADER_BYTES, len - FRAME_HEADER_BYTES);
	free(frame);
}

static void peer_link_seeds(void)
{
	static struct counter_state s;
	static struct migration_report r;
	struct wire_counter_state_pb spb;
	struct wire_report_pb rpb;
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Prepare prepare = VCOUNTER__V1__PREPARE__INIT;
	Vcounter__V1__FinalState final = VCOUNTER__V1__FINAL_STATE__INIT;
	Vcounter__V1__Applied applied = VCOUNTER__V1__APPLIED__INIT;
	Vcounter__V1__Abort abort_msg = VCOUNTER__V1__ABORT__INIT;
	Vcounter__V1__Ack ack = VCOUNTER__V1__ACK__INIT;
	const char *id = "0123456789abcdef0123456789abcdef";
	struct datagrams d = { .len = 0 };

	/* vm-flow's guest rate, and a source with no kvmclock to check. */
	fixture_state(&s, 1, (uint64_t)-1000);
	s.guest_tsc_khz = s.anchor.host_tsc_khz = GUEST_KHZ;
	s.kvmclock = (struct kvmclock_state){ 0 };
	s.sync = (struct sync_error){ 0 };
	wire_counter_state_to_pb(&s, &spb);
	msg.id = 1;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE;
	msg.prepare = &prepare;
	prepare.migration_id = (char *)id;
	prepare.vm_id = "vm-flow";
	prepare.state = &spb.state;
	record_add(&d, &msg);
	put("fuzz_peer_link", "prepare", "", 0, d.buf, d.len);

	msg.id = 2;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE;
	msg.final_state = &final;
	final.migration_id = (char *)id;
	final.generation = 1;
	final.state = &spb.state;
	record_add(&d, &msg);
	record_add(&d, &msg); /* again: a replay */
	record_add(&d, NULL); /* the target's VMM applies */
	msg.id = 3;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ACK;
	msg.ack = &ack;
	ack.migration_id = (char *)id;
	record_add(&d, &msg);
	put("fuzz_peer_link", "prepare-final-apply-ack", "", 0, d.buf, d.len);

	d.len = 0;
	msg.id = 1;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE;
	record_add(&d, &msg);
	msg.id = 4;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_ABORT;
	msg.abort = &abort_msg;
	abort_msg.migration_id = (char *)id;
	abort_msg.reason = "operator";
	record_add(&d, &msg);
	fixture_report(&r, 2);
	wire_report_to_pb(&r, &rpb);
	msg.id = 5;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED;
	msg.applied = &applied;
	applied.report = &rpb.report;
	record_add(&d, &msg);
	put("fuzz_peer_link", "prepare-abort-applied", "", 0, d.buf, d.len);
}

/* fuzz_grpc_wire's input: chunk seed, max_len selector, then the stream. */
static void grpc_seeds(void)
{
	Vcounter__V1__StartMigrationRequest start = VCOUNTER__V1__START_MIGRATION_REQUEST__INIT;
	Vcounter__V1__WatchEventsRequest watch = VCOUNTER__V1__WATCH_EVENTS_REQUEST__INIT;
	uint8_t stream[512];
	size_t len = 2, n;

	stream[0] = 3; /* small chunks */
	stream[1] = 3; /* max_len 4096 */
	start.vm_id = "vm-1";
	start.peer_address = "host-b:7070";
	start.peer_name = "host-b";
	n = protobuf_c_message_pack(&start.base, stream + len + GRPC_WIRE_PREFIX_BYTES);
	grpc_wire_prefix(stream + len, (uint32_t)n);
	len += GRPC_WIRE_PREFIX_BYTES + n;
	put("fuzz_grpc_wire", "start-migration", NULL, 0, stream, len);

	watch.vm_id = "vm-1";
	n = protobuf_c_message_pack(&watch.base, stream + len + GRPC_WIRE_PREFIX_BYTES);
	grpc_wire_prefix(stream + len, (uint32_t)n);
	len += GRPC_WIRE_PREFIX_BYTES + n;
	grpc_wire_prefix(stream + len, 0); /* and an empty message */
	len += GRPC_WIRE_PREFIX_BYTES;
	stream[0] = 0x80; /* one chunk */
	put("fuzz_grpc_wire", "two-messages", NULL, 0, stream, len);

	put("fuzz_grpc_wire", "timeout", NULL, 0,
	    "\x01\x01"
	    "1500m",
	    7);
	put("fuzz_grpc_wire", "percent", NULL, 0,
	    "\x01\x01"
	    "bad%20vm%0A%zz",
	    16);
}

static void vm_store_seeds(void)
{
	static struct vm_store_entry e[2];
	uint8_t *buf;
	size_t len;

	for (int k = 0; k < 2; k++) {
		strcpy(e[k].vm_id, k ? "vm-2" : "vm-1");
		strcpy(e[k].fd_name, k ? "vm2" : "vm1");
		e[k].role = k ? VM_ROLE_TARGET : VM_ROLE_SOURCE;
		e[k].n_vcpus = 2;
		e[k].pid = 1000 + k;
		e[k].uid = 77;
		e[k].backend = BACKEND_KVM_X86;
		e[k].arch = COUNTER_ARCH_X86_TSC;
		e[k].offset_control = k == 0;
		strcpy(e[k].probe_detail, "kvm-x86: TSC offset control");
		e[k].guest_tsc_khz = 2500000;
		e[k].has_state = k == 0;
		if (e[k].has_state)
			fixture_state(&e[k].state, 2, (uint64_t)-1000);
	}
	for (size_t n = 0; n <= 2; n++) {
		char name[16];

		if (vm_store_encode(e, n, &buf, &len) < 0)
			exit(1);
		snprintf(name, sizeof(name), "record-%zu", n);
		put("fuzz_vm_store", name, NULL, 0, buf, len);
		free(buf);
	}
}

/* Records a migration leaves on each side: prepared, final, applied with
 * its report, aborted with a reason. */
static void journal_seeds(void)
{
	static struct journal_entry e;
	static const struct {
		const char *name;
		enum vm_role role;
		enum migration_step step;
	} steps[] = {
		{ "source-preparing", VM_ROLE_SOURCE, STEP_PREPARING },
		{ "source-final", VM_ROLE_SOURCE, STEP_FINAL },
		{ "target-final", VM_ROLE_TARGET, STEP_FINAL },
		{ "target-applied", VM_ROLE_TARGET, STEP_APPLIED },
		{ "target-aborted", VM_ROLE_TARGET, STEP_ABORTED },
	};
	uint8_t *buf;
	size_t len;

	for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
		memset(&e, 0, sizeof(e));
		e.sequence = k + 1;
		strcpy(e.s.migration_id, "0123456789abcdef0123456789abcdef");
		strcpy(e.s.vm_id, "vm-1");
		strcpy(e.s.peer_identity, "host-b");
		strcpy(e.peer_address, "127.0.0.1:7420");
		e.s.role = steps[k].role;
		e.s.step = steps[k].step;
		fixture_state(&e.s.prepared, 2, (uint64_t)-1000);
		if (steps[k].step == STEP_FINAL || steps[k].step == STEP_APPLIED) {
			e.s.has_final = true;
			e.s.generation = 1;
			fixture_state(&e.s.final, 2, (uint64_t)-2000);
			e.awaiting_source = steps[k].role == VM_ROLE_TARGET;
		}
		if (steps[k].step == STEP_APPLIED) {
			e.awaiting_source = false;
			e.s.has_report = true;
			strcpy(e.s.report.migration_id, e.s.migration_id);
			strcpy(e.s.report.vm_id, e.s.vm_id);
			e.s.report.backend = BACKEND_KVM_X86;
			e.s.report.generation = 1;
			e.s.report.n_vcpus = 2;
			e.s.report.guest_tsc_khz = 2500000;
		}
		if (steps[k].step == STEP_ABORTED)
			strcpy(e.s.reason, "vcounterd restarted before the final state arrived");
		if (journal_encode(&e, &buf, &len) < 0)
			exit(1);
		put("fuzz_journal", steps[k].name, NULL, 0, buf, len);
		free(buf);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
		return 2;
	}
	out_dir = argv[1];
	vmm_seeds();
	vmm_server_seeds();
	peer_seeds();
	peer_link_seeds();
	grpc_seeds();
	vm_store_seeds();
	journal_seeds();
	return 0;
}
