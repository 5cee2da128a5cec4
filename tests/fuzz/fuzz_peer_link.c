/* fuzz_peer_link - libFuzzer target: the daemon's own peer-link handlers
 * (migration.c) as the target host, fed a sequence of frames in-process on
 * one link from an allowed peer: Prepare, FinalState, Applied, Abort,
 * replies to requests it never made, garbage. The peer link's transport and
 * the VMMs are tests/unit/flow_fakes.c's, the state machine, the session
 * journal and the plans are the daemon's own.
 *
 * Input: records of a 2-byte big-endian length and that many bytes, each
 * one frame's payload; a record of length 0 is the target's VMM asking to
 * apply every migration the target holds. Between records the flow
 * settles (frames delivered, KVM ops completed). After the last, a new
 * link's Prepare of an unknown VM must still be refused with an Error: a
 * crash, a leak, a hang or a daemon that stopped answering fails the
 * input. The source never writes its VM (nothing here asks it to). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "flow_fakes.h"
#include "frame.h"
#include "log.h"
#include "migration.h"
#include "vmm_server.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the fuzzer's end of the link heard. */
struct peer_end {
	uint64_t last_id;
	int last_body;
	bool closed;
};

static void end_established(struct peer_conn *conn, const char *identity, void *userdata)
{
	(void)conn;
	(void)identity;
	(void)userdata;
}

static void end_frame(struct peer_conn *conn, const uint8_t *payload, size_t len, void *userdata)
{
	struct peer_end *end = userdata;
	Vcounter__V1__PeerMessage *msg;
	uint64_t id;

	(void)conn;
	/* The daemon sends only what its own decoder takes. */
	FLOW_CHECK(wire_peer_unpack(payload, len, &msg, &id) == 0);
	end->last_id = msg->id;
	end->last_body = (int)msg->body_case;
	wire_peer_free(msg);
}

static void end_close(struct peer_conn *conn, int error, const char *reason, void *userdata)
{
	struct peer_end *end = userdata;

	(void)conn;
	(void)error;
	(void)reason;
	end->closed = true;
}

static const struct peer_conn_ops end_ops = {
	.on_established = end_established,
	.on_frame = end_frame,
	.on_close = end_close,
};

static uint64_t next_request = 1000;

static void apply_each(const struct migration_view *v, void *userdata)
{
	char(*ids)[VC_MIGRATION_ID_LEN + 1] = userdata;

	for (size_t i = 0; i < 16; i++)
		if (!ids[i][0]) {
			snprintf(ids[i], sizeof(ids[i]), "%s", v->s->migration_id);
			return;
		}
}

/* The target's VMM asks to apply each migration host B holds (collected
 * first: an apply may end one). */
static void vmm_applies(void)
{
	char ids[16][VC_MIGRATION_ID_LEN + 1] = { { 0 } };

	migrations_foreach(&host_b, apply_each, ids);
	for (size_t i = 0; i < 16 && ids[i][0]; i++)
		migration_vmm_handlers.apply(&host_b, 22, next_request++, VM_ID, ids[i]);
}

/* A new link's Prepare of a VM host B does not have: an Error answers it. */
static void still_serving(void)
{
	Vcounter__V1__PeerMessage msg = VCOUNTER__V1__PEER_MESSAGE__INIT;
	Vcounter__V1__Prepare prep = VCOUNTER__V1__PREPARE__INIT;
	struct peer_end end = { 0 };
	struct peer_conn *conn;
	uint8_t *frame;
	size_t len;

	FLOW_CHECK(flow_connect_to_b(NAME_A, &end_ops, &end, &conn) == 0);
	msg.id = 424242;
	msg.body_case = VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE;
	msg.prepare = &prep;
	prep.migration_id = "00000000000000000000000000000001";
	prep.vm_id = "no-such-vm";
	FLOW_CHECK(wire_peer_pack_frame(&msg, &frame, &len) == 0);
	settle();
	FLOW_CHECK(peer_conn_send(conn, frame + FRAME_HEADER_BYTES, len - FRAME_HEADER_BYTES) == 0);
	free(frame);
	settle();
	if (end.last_id != 424242 || end.last_body != VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR)
		flow_fail("the target no longer answers a new link (last reply %llu, body %d)",
			  (unsigned long long)end.last_id, end.last_body);
	peer_conn_free(conn);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peer_end end = { 0 };
	struct peer_conn *conn;

	flow_setup();
	log_setup(LOG_CRIT); /* quiet: every refusal would be a line */
	/* Any elapsed time: the seeds' anchors are decades old. */
	host_b.config.max_abs_elapsed_ns = UINT64_MAX;
	FLOW_CHECK(flow_connect_to_b(NAME_A, &end_ops, &end, &conn) == 0);
	settle();
	while (size >= 2 && !end.closed) {
		size_t len = (size_t)data[0] << 8 | data[1];

		data += 2;
		size -= 2;
		if (len > size)
			len = size;
		if (len == 0)
			vmm_applies();
		else if (peer_conn_send(conn, data, len) < 0)
			break;
		data += len;
		size -= len;
		settle();
	}
	FLOW_CHECK(source_writes == 0);
	peer_conn_free(conn);
	settle();
	still_serving();
	flow_teardown();
	return 0;
}
