/* flow_fakes.h - two daemons' migrations in one process, on one event
 * loop, with the peer link and the VMMs faked at their ports (peer_conn.h,
 * vmm_server.h): frames are queued and delivered when the caller says, KVM
 * ops complete when it says, the fake VMM applies as libvcounter does
 * (counter_math_plan on the final state). Linked into test_migration (the
 * flow and its seeded walks) and fuzz_peer_link (the target's handlers fed
 * hostile frames). The fakes' own checks abort: they are not cmocka's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "counter_state.h"
#include "peer_conn.h"
#include "session.h"
#include "vcd.h"

#define VM_ID	    "vm-flow"
#define ADDR_B	    "host-b.test:7420"
#define NAME_A	    "host-a.test"
#define NAME_B	    "host-b.test"
#define GUEST_KHZ   2500000u
#define MAX_EVENTS  256
#define MAX_OPS	    64
#define MAX_REPLIES 64

void flow_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define FLOW_CHECK(x)                                                   \
	do {                                                            \
		if (!(x))                                               \
			flow_fail("%s:%d: %s", __FILE__, __LINE__, #x); \
	} while (0)

/* The loop, host A (the source, VM_ID registered on VMM connection 11) and
 * host B (the target, listening at ADDR_B, VM_ID on connection 22), each
 * with its own session journal. flow_setup() builds them, flow_teardown()
 * frees everything, the journals too. */
extern struct event_base *base;
extern struct vcd host_a, host_b;
/* The source VM written (never allowed), and applies the fake VMM ran. */
extern unsigned source_writes, applies;

void flow_setup(void);
void flow_teardown(void);

/* ---- the peer link ---- */

/* Deliver the oldest queued link event: false when none is queued. */
bool deliver_one(void);
/* Deliver one of the first events of each link, chosen by pick: a frame of
 * one link may overtake another link's; within a link the order stays. */
bool deliver_any(unsigned pick);
/* Queue a copy of a queued frame (chosen by pick) right after it. */
void duplicate_frame(unsigned pick);
/* The links fail: queued frames are lost, both ends hear a reset. */
void link_loss(void);
/* vcounterd on one host stops and starts again (VMs kept, as systemd's fd
 * store keeps them; the VMM connection's ops end). */
void restart(struct vcd *vcd);
/* A link to host B as host `from` would open it; its frames and events go
 * to ops with userdata. */
int flow_connect_to_b(const char *from, const struct peer_conn_ops *ops, void *userdata,
		      struct peer_conn **ret);

/* ---- the VMMs ---- */

struct reply {
	struct vcd *vcd;
	uint64_t conn_id, request_id;
	int body_case; /* VCOUNTER__V1__VMM_MESSAGE__BODY_*, or -errno for an error */
	char migration_id[VC_MIGRATION_ID_LEN + 1];
};

/* Complete the first KVM op that may run: false when none may. */
bool complete_one(void);
/* The daemon's reply to a VMM request, or NULL. */
const struct reply *reply_to(struct vcd *vcd, uint64_t request_id);

/* ---- both ---- */

/* Deliver frames and complete ops until nothing is left to do. */
void settle(void);
/* The session of a migration on a host (must exist). */
const struct session *session_of(struct vcd *vcd, const char *migration_id);
