/* test_migration.c - the migration flow (daemon/migration.c) between two
 * daemons in one process, on one event loop: the real state machine, glue,
 * session journal, sync source and host clocks; the peer link and the VMM
 * are fakes at their ports (peer_conn.h, vmm_server.h), so the test decides
 * when each frame arrives and when each KVM op completes. The fake VMM
 * applies as libvcounter does (counter_math_plan on the final state). */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "counter_math.h"
#include "hostclock.h"
#include "log.h"
#include "migration.h"
#include "peer_conn.h"
#include "sync_source.h"
#include "vcd.h"
#include "vmm_server.h"

#define VM_ID	    "vm-flow"
#define ADDR_B	    "host-b.test:7420"
#define NAME_A	    "host-a.test"
#define NAME_B	    "host-b.test"
#define GUEST_KHZ   2500000u
#define MAX_EVENTS  256
#define MAX_OPS	    64
#define MAX_REPLIES 64

static struct event_base *base;
static struct vcd host_a, host_b;
static char state_a[64], state_b[64];
static uint32_t host_khz;

/* ---- the peer link, faked: frames queued, delivered when the test says ---- */

struct peer_conn {
	struct peer_conn *other;
	const struct peer_conn_ops *ops;
	void *userdata;
	bool freed;
	struct peer_conn *next_all;
};

struct peer_listener {
	char addr[64];
	const struct peer_conn_ops *ops;
	void *userdata;
	struct vcd *vcd;
};

enum link_event_kind {
	EV_ESTABLISHED,
	EV_FRAME,
	EV_CLOSE
};

struct link_event {
	enum link_event_kind kind;
	struct peer_conn *to;
	char identity[64];
	uint8_t *payload;
	size_t len;
	int error;
};

static struct link_event events[MAX_EVENTS];
static size_t n_events;
static struct peer_listener *listener_b;
static struct peer_conn *all_conns;

static void queue_event(struct link_event ev)
{
	assert_true(n_events < MAX_EVENTS);
	events[n_events++] = ev;
}

int peer_listener_new(struct event_base *b, SSL_CTX *ctx, const char *addr,
		      const struct peer_conn_ops *ops, void *userdata, struct peer_listener **ret)
{
	struct peer_listener *l = calloc(1, sizeof(*l));

	(void)b;
	(void)ctx;
	assert_non_null(l);
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	l->ops = ops;
	l->userdata = userdata;
	listener_b = l;
	*ret = l;
	return 0;
}

int peer_listener_port(const struct peer_listener *l)
{
	(void)l;
	return 7420;
}

void peer_listener_set_ctx(struct peer_listener *l, SSL_CTX *ctx)
{
	(void)l;
	(void)ctx;
}

struct peer_listener *peer_listener_free(struct peer_listener *l)
{
	if (l == listener_b)
		listener_b = NULL;
	free(l);
	return NULL;
}

static struct peer_conn *conn_new(const struct peer_conn_ops *ops, void *userdata)
{
	struct peer_conn *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->ops = ops;
	c->userdata = userdata;
	c->next_all = all_conns;
	all_conns = c;
	return c;
}

int peer_conn_connect(struct event_base *b, SSL_CTX *ctx, const char *host_port,
		      const char *expected_name, const struct peer_conn_ops *ops, void *userdata,
		      struct peer_conn **ret)
{
	struct vcd *from = userdata;
	struct peer_conn *client, *server;
	struct link_event ev = { .kind = EV_ESTABLISHED };

	(void)b;
	(void)ctx;
	if (!listener_b || strcmp(host_port, listener_b->addr) != 0)
		return -ECONNREFUSED;
	client = conn_new(ops, userdata);
	server = conn_new(listener_b->ops, listener_b->userdata);
	client->other = server;
	server->other = client;
	/* The server verifies first (its link exists before the client's
	 * first frame), then the client. */
	ev.to = server;
	snprintf(ev.identity, sizeof(ev.identity), "%s", from->config.host_name);
	queue_event(ev);
	ev.to = client;
	snprintf(ev.identity, sizeof(ev.identity), "%s", expected_name);
	queue_event(ev);
	*ret = client;
	return 0;
}

int peer_conn_send(struct peer_conn *c, const uint8_t *payload, size_t len)
{
	struct link_event ev = { .kind = EV_FRAME, .to = c->other, .len = len };

	if (c->freed || !c->other)
		return -ENOTCONN;
	ev.payload = malloc(len ? len : 1);
	assert_non_null(ev.payload);
	memcpy(ev.payload, payload, len);
	queue_event(ev);
	return 0;
}

struct peer_conn *peer_conn_free(struct peer_conn *c)
{
	if (!c || c->freed)
		return NULL;
	c->freed = true;
	if (c->other && !c->other->freed)
		queue_event((struct link_event){ .kind = EV_CLOSE, .to = c->other, .error = 0 });
	return NULL;
}

/* Deliver the oldest queued event: true if there was one. */
static bool deliver_one(void)
{
	struct link_event ev;
	struct peer_conn *to;

	if (n_events == 0)
		return false;
	ev = events[0];
	memmove(events, events + 1, --n_events * sizeof(events[0]));
	to = ev.to;
	if (!to->freed) {
		switch (ev.kind) {
		case EV_ESTABLISHED:
			to->ops->on_established(to, ev.identity, to->userdata);
			break;
		case EV_FRAME:
			to->ops->on_frame(to, ev.payload, ev.len, to->userdata);
			break;
		case EV_CLOSE:
			to->freed = true; /* on_close: the conn is gone after it */
			to->ops->on_close(to, ev.error, "closed by the peer", to->userdata);
			break;
		}
	}
	free(ev.payload);
	return true;
}

/* Deliver a queued event other than the oldest: links are independent
 * (each its own TCP connection), so a frame of one may overtake another
 * link's; within a link the order stays. False if nothing is queued. */
static bool deliver_any(unsigned pick)
{
	struct link_event ev;
	size_t i, n_first = 0, first[MAX_EVENTS];

	/* The oldest event of each connection: the ones that may go next. */
	for (i = 0; i < n_events; i++) {
		bool seen = false;

		for (size_t j = 0; j < i && !seen; j++)
			seen = events[j].to == events[i].to;
		if (!seen)
			first[n_first++] = i;
	}
	if (n_first == 0)
		return false;
	i = first[pick % n_first];
	ev = events[i];
	memmove(events + i, events + i + 1, (n_events - i - 1) * sizeof(events[0]));
	n_events--;
	/* Put it first and deliver it as the oldest. */
	memmove(events + 1, events, n_events * sizeof(events[0]));
	events[0] = ev;
	n_events++;
	return deliver_one();
}

/* A frame arrives twice (a replay on the wire, a peer that resends): the
 * copy goes right after it, on the same link. */
static void duplicate_frame(unsigned pick)
{
	size_t n_frames = 0, i;
	struct link_event copy;

	for (i = 0; i < n_events; i++)
		n_frames += events[i].kind == EV_FRAME;
	if (n_frames == 0 || n_events == MAX_EVENTS)
		return;
	pick %= n_frames;
	for (i = 0; events[i].kind != EV_FRAME || pick--; i++)
		;
	copy = events[i];
	copy.payload = malloc(copy.len ? copy.len : 1);
	assert_non_null(copy.payload);
	memcpy(copy.payload, events[i].payload, copy.len);
	memmove(events + i + 2, events + i + 1, (n_events - i - 1) * sizeof(events[0]));
	events[i + 1] = copy;
	n_events++;
}

/* ---- the VMMs, faked: KVM ops complete when the test says ---- */

struct fake_op {
	struct vcd *vcd;
	uint64_t conn_id, op_id;
	int kind;
	bool deferred, armed, done;
	vcd_kvm_op_cb cb;
	void *userdata;
	struct counter_state plan_source;
	bool has_plan_source;
	const struct vm_entry *vm;
};

static struct fake_op ops[MAX_OPS];
static size_t n_ops;
static uint64_t next_op_id = 1;
static unsigned source_writes, applies;

struct reply {
	struct vcd *vcd;
	uint64_t conn_id, request_id;
	int body_case; /* VCOUNTER__V1__VMM_MESSAGE__BODY_*, or -errno for an error */
	char migration_id[VC_MIGRATION_ID_LEN + 1];
};

static struct reply replies[MAX_REPLIES];
static size_t n_replies;

int vmm_kvm_op(struct vcd *vcd, const struct vm_entry *vm, const struct kvm_op_request *req,
	       vcd_kvm_op_cb cb, void *userdata, uint64_t *ret_op_id)
{
	struct fake_op *op;

	assert_true(n_ops < MAX_OPS);
	op = &ops[n_ops++];
	*op = (struct fake_op){ .vcd = vcd,
				.conn_id = vm->conn_id,
				.op_id = next_op_id++,
				.kind = req->kind,
				.deferred = req->deferred,
				.cb = cb,
				.userdata = userdata,
				.vm = vm };
	if (req->plan_source) {
		op->plan_source = *req->plan_source;
		op->has_plan_source = true;
	}
	/* The source VM is only ever read. */
	if (vm->role == VM_ROLE_SOURCE && req->kind != VCOUNTER__V1__KVM_OP_KIND__KVM_OP_READ_STATE)
		source_writes++;
	if (ret_op_id)
		*ret_op_id = op->op_id;
	return 0;
}

static struct fake_op *op_find(uint64_t conn_id, uint64_t op_id)
{
	for (size_t i = 0; i < n_ops; i++)
		if (ops[i].conn_id == conn_id && ops[i].op_id == op_id && !ops[i].done)
			return &ops[i];
	return NULL;
}

int vmm_kvm_op_arm(struct vcd *vcd, uint64_t conn_id, uint64_t op_id)
{
	struct fake_op *op = op_find(conn_id, op_id);

	(void)vcd;
	if (!op)
		return -ENOENT;
	op->armed = true;
	return 0;
}

void vmm_kvm_op_cancel(struct vcd *vcd, uint64_t conn_id, uint64_t op_id)
{
	struct fake_op *op = op_find(conn_id, op_id);

	if (!op)
		return;
	op->done = true;
	op->cb(vcd, -ECANCELED, "superseded", NULL, op->userdata);
}

static void record_reply(struct vcd *vcd, uint64_t conn_id, uint64_t request_id, int body,
			 const char *migration_id)
{
	struct reply *r;

	assert_true(n_replies < MAX_REPLIES);
	r = &replies[n_replies++];
	*r = (struct reply){
		.vcd = vcd, .conn_id = conn_id, .request_id = request_id, .body_case = body
	};
	if (migration_id)
		snprintf(r->migration_id, sizeof(r->migration_id), "%s", migration_id);
}

void vmm_reply(struct vcd *vcd, uint64_t conn_id, Vcounter__V1__VmmMessage *msg)
{
	record_reply(vcd, conn_id, msg->id, (int)msg->body_case,
		     msg->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY
			     ? msg->migrate_out_reply->migration_id
			     : NULL);
}

void vmm_reply_ok(struct vcd *vcd, uint64_t conn_id, uint64_t request_id)
{
	record_reply(vcd, conn_id, request_id, VCOUNTER__V1__VMM_MESSAGE__BODY_OK, NULL);
}

void vmm_reply_error(struct vcd *vcd, uint64_t conn_id, uint64_t request_id, int error,
		     const char *fmt, ...)
{
	char text[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	print_message("VMM error reply %d: %s\n", error, text);
	record_reply(vcd, conn_id, request_id, error < 0 ? error : -EIO, NULL);
}

/* The fake VMM runs op: the source reads its VM's state (offsets as
 * registered: the guest is paused), the target applies as libvcounter
 * does, the plan computed on the final state with a fresh anchor. */
static void complete(struct fake_op *op)
{
	struct kvm_op_outcome out = { .backend = BACKEND_KVM_X86, .offset_control = true };
	const struct vm_entry *vm = op->vm;

	op->done = true;
	out.has_state = true;
	out.state = *vm->registered_state;
	assert_int_equal(hostclock_bracket_anchor(host_khz, &out.state.anchor), 0);
	if (op->kind == VCOUNTER__V1__KVM_OP_KIND__KVM_OP_APPLY) {
		struct counter_policy policy = {
			.max_abs_elapsed_ns = op->vcd->config.max_abs_elapsed_ns,
			.tsc_khz_tolerance_ppm = op->vcd->config.tsc_tolerance_ppm,
		};
		struct counter_target dst = {
			.arch = out.state.arch,
			.guest_tsc_khz = out.state.guest_tsc_khz,
			.n_vcpus = out.state.n_vcpus,
			.anchor = out.state.anchor,
			.sync = out.state.sync,
		};
		struct counter_plan *plan = calloc(1, sizeof(*plan));

		assert_non_null(plan);
		assert_true(op->has_plan_source);
		assert_int_equal(counter_math_plan(&op->plan_source, &dst, &policy, plan), 0);
		memcpy(out.state.offset_cycles, plan->offset_cycles,
		       plan->n_vcpus * sizeof(plan->offset_cycles[0]));
		out.has_apply_anchor = true;
		out.apply_anchor = dst.anchor;
		out.apply_ns = 1000;
		free(plan);
		applies++;
	}
	op->cb(op->vcd, 0, NULL, &out, op->userdata);
}

/* Complete the first op that may run (not deferred, or armed). */
static bool complete_one(void)
{
	for (size_t i = 0; i < n_ops; i++)
		if (!ops[i].done && (!ops[i].deferred || ops[i].armed)) {
			complete(&ops[i]);
			return true;
		}
	return false;
}

/* ---- two daemons ---- */

static void vm_add(struct vcd *vcd, enum vm_role role, uint64_t conn_id, uint64_t offset)
{
	struct vm_entry *vm = vm_entry_new(VM_ID, 1, NULL, 0);

	assert_non_null(vm);
	vm->role = role;
	vm->conn_id = conn_id;
	vm->complete = vm->probed = vm->offset_control = true;
	vm->backend = BACKEND_KVM_X86;
	vm->arch = COUNTER_ARCH_X86_TSC;
	vm->guest_tsc_khz = GUEST_KHZ;
	vm->registered_state = calloc(1, sizeof(*vm->registered_state));
	assert_non_null(vm->registered_state);
	*vm->registered_state = (struct counter_state){
		.backend = BACKEND_KVM_X86,
		.arch = COUNTER_ARCH_X86_TSC,
		.guest_tsc_khz = GUEST_KHZ,
		.n_vcpus = 1,
		.offset_cycles = { offset },
	};
	assert_int_equal(hostclock_bracket_anchor(host_khz, &vm->registered_state->anchor), 0);
	vm_registry_add(&vcd->vms, vm);
}

static void daemon_up(struct vcd *vcd, const char *name, char *state_dir, bool listen)
{
	char err[256];

	memset(vcd, 0, sizeof(*vcd));
	vcd->base = base;
	vcd->config.host_name = name;
	vcd->config.listen_addr = listen ? ADDR_B : NULL;
	vcd->config.state_dir = state_dir;
	vcd->config.max_migrations = 16;
	vcd->config.peer_timeout_ms = 60000; /* the walks shorten it */
	vcd->config.kvm_op_timeout_ms = 60000;
	vcd->config.max_abs_elapsed_ns = UINT64_C(3600000000000);
	vcd->config.tsc_tolerance_ppm = COUNTER_MATH_DEFAULT_TSC_TOLERANCE_PPM;
	vcd->host_tsc_khz = host_khz;
	vcd->tls_server = SSL_CTX_new(TLS_method());
	vcd->tls_client = SSL_CTX_new(TLS_method());
	assert_true(vcd->tls_server && vcd->tls_client);
	assert_int_equal(sync_source_open(base, "fixed:100000", &vcd->sync, err, sizeof(err)), 0);
	assert_int_equal(migrations_start(vcd), 0);
	assert_int_equal(migrations_recover(vcd), 0);
	/* As main.c: a VM leaving ends its migrations. */
	assert_int_equal(vm_registry_observe(&vcd->vms, migration_on_vm, vcd), 0);
}

static void daemon_down(struct vcd *vcd)
{
	migrations_stop(vcd);
	vm_registry_clear(&vcd->vms);
	sync_source_free(vcd->sync);
	SSL_CTX_free(vcd->tls_server);
	SSL_CTX_free(vcd->tls_client);
}

static int setup(void **state)
{
	(void)state;
	n_events = n_ops = n_replies = 0;
	source_writes = applies = 0;
	if (!host_khz) {
		assert_int_equal(hostclock_tsc_khz(&host_khz), 0);
		log_set_target(LOG_TARGET_STDERR);
		log_setup(getenv("VC_TEST_VERBOSE") ? LOG_DEBUG : LOG_ERR);
	}
	base = event_base_new();
	assert_non_null(base);
	snprintf(state_a, sizeof(state_a), "/tmp/vc-flow-a-XXXXXX");
	snprintf(state_b, sizeof(state_b), "/tmp/vc-flow-b-XXXXXX");
	assert_non_null(mkdtemp(state_a));
	assert_non_null(mkdtemp(state_b));
	daemon_up(&host_a, NAME_A, state_a, false);
	daemon_up(&host_b, NAME_B, state_b, true);
	vm_add(&host_a, VM_ROLE_SOURCE, 11, UINT64_C(0xfffffff000000000));
	vm_add(&host_b, VM_ROLE_TARGET, 22, 0);
	return 0;
}

static int teardown(void **state)
{
	char cmd[200];

	(void)state;
	daemon_down(&host_a);
	daemon_down(&host_b);
	while (n_events)
		free(events[--n_events].payload);
	while (all_conns) {
		struct peer_conn *c = all_conns;

		all_conns = c->next_all;
		free(c);
	}
	event_base_free(base);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", state_a, state_b);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* Deliver frames and complete ops until nothing is left to do. */
static void settle(void)
{
	for (int i = 0; i < 1000; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (!deliver_one() && !complete_one())
			return;
	}
	fail_msg("the flow did not settle in 1000 steps");
}

static const struct reply *reply_to(struct vcd *vcd, uint64_t request_id)
{
	for (size_t i = 0; i < n_replies; i++)
		if (replies[i].vcd == vcd && replies[i].request_id == request_id)
			return &replies[i];
	return NULL;
}

static const struct session *session_of(struct vcd *vcd, const char *migration_id)
{
	static struct migration_view view;

	assert_int_equal(migration_get_view(vcd, migration_id, &view), 0);
	return view.s;
}

static void test_a_migration_from_start_to_done(void **state)
{
	const struct reply *r;
	char id[VC_MIGRATION_ID_LEN + 1];

	(void)state;
	migration_vmm_handlers.migrate_out(&host_a, 11, 1, VM_ID, ADDR_B, NAME_B);
	settle();
	r = reply_to(&host_a, 1);
	assert_non_null(r);
	assert_int_equal(r->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY);
	snprintf(id, sizeof(id), "%s", r->migration_id);
	assert_int_equal(session_of(&host_a, id)->step, STEP_PREPARED);
	assert_int_equal(session_of(&host_b, id)->step, STEP_PREPARED);

	/* The source's VMM paused its guest. */
	migration_vmm_handlers.report_paused(&host_a, 11, 2, VM_ID, id);
	settle();
	r = reply_to(&host_a, 2);
	assert_non_null(r);
	assert_int_equal(r->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED_REPLY);
	assert_int_equal(session_of(&host_b, id)->step, STEP_FINAL);

	/* The target's VMM applies. */
	migration_vmm_handlers.apply(&host_b, 22, 3, VM_ID, id);
	settle();
	r = reply_to(&host_b, 3);
	assert_non_null(r);
	assert_int_equal(r->body_case, VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY_REPLY);
	assert_int_equal(session_of(&host_a, id)->step, STEP_DONE);
	assert_int_equal(session_of(&host_b, id)->step, STEP_DONE);
	assert_int_equal(applies, 1);
	assert_int_equal(source_writes, 0);
}

/* A controller cannot abort a source whose final state may be applied
 * already: the target decides, and its abort ends both. */
static void test_a_source_at_final_is_aborted_on_the_target(void **state)
{
	struct migration_view v;
	const struct reply *r;
	char id[VC_MIGRATION_ID_LEN + 1];

	(void)state;
	migration_vmm_handlers.migrate_out(&host_a, 11, 1, VM_ID, ADDR_B, NAME_B);
	settle();
	r = reply_to(&host_a, 1);
	assert_non_null(r);
	snprintf(id, sizeof(id), "%s", r->migration_id);
	migration_vmm_handlers.report_paused(&host_a, 11, 2, VM_ID, id);
	settle();
	assert_int_equal(session_of(&host_a, id)->step, STEP_FINAL);
	assert_int_equal(session_of(&host_b, id)->step, STEP_FINAL);

	assert_int_equal(migration_abort(&host_a, id, "operator", &v), -EINPROGRESS);
	assert_int_equal(session_of(&host_a, id)->step, STEP_FINAL);
	assert_int_equal(migration_abort(&host_b, id, "operator", &v), 0);
	settle();
	assert_int_equal(session_of(&host_a, id)->step, STEP_ABORTED);
	assert_int_equal(session_of(&host_b, id)->step, STEP_ABORTED);
	/* The target's VMM is refused the apply it asks for now. */
	migration_vmm_handlers.apply(&host_b, 22, 3, VM_ID, id);
	settle();
	r = reply_to(&host_b, 3);
	assert_non_null(r);
	assert_int_equal(r->body_case, -ECANCELED);
	assert_int_equal(applies, 0);
	assert_int_equal(source_writes, 0);
}

/* ---- a seeded walk of interleavings ---- */

static uint64_t rng;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

/* The link between the daemons fails: what was in flight is lost, both
 * ends hear it reset. */
static void link_loss(void)
{
	for (struct peer_conn *c = all_conns; c; c = c->next_all)
		if (!c->freed)
			queue_event((struct link_event){
				.kind = EV_CLOSE, .to = c, .error = -ECONNRESET });
	/* Frames queued before the closes are dropped with the link. */
	for (size_t i = 0; i < n_events;) {
		if (events[i].kind == EV_FRAME) {
			free(events[i].payload);
			memmove(events + i, events + i + 1, (n_events - i - 1) * sizeof(events[0]));
			n_events--;
		} else {
			i++;
		}
	}
}

/* vcounterd on one host stops and starts again: its links close, its VMM
 * connection's ops are lost (they end with the connection, after the
 * restart, as a VMM that reconnects would see), the migrations come back
 * from the session journal. The VMs stay registered (systemd's fd store). */
static void restart(struct vcd *vcd)
{
	size_t first = n_ops;

	migrations_stop(vcd);
	assert_int_equal(migrations_start(vcd), 0);
	assert_int_equal(migrations_recover(vcd), 0);
	for (size_t i = 0; i < first; i++)
		if (ops[i].vcd == vcd && !ops[i].done) {
			ops[i].done = true;
			ops[i].cb(vcd, -ECONNRESET, "the VMM disconnected", NULL, ops[i].userdata);
		}
}

struct walk_stats {
	unsigned done, aborted, failed, restarts, losses, reorders, duplicates, aborts;
};

static void check_invariants(const char *id, unsigned seed)
{
	const struct session *a = session_of(&host_a, id);
	struct migration_view vb;
	bool target_known = migration_get_view(&host_b, id, &vb) == 0;
	const struct session *b = target_known ? vb.s : NULL;

	if (source_writes)
		fail_msg("seed %u: the source VM was written", seed);
	/* The target applies only a final state the source sent: never a
	 * generation newer than the source's newest. */
	if (b && b->has_report && (!a->has_final || b->report.generation > a->generation))
		fail_msg("seed %u: target applied generation %" PRIu64
			 ", source sent up to %" PRIu64,
			 seed, b->report.generation, a->generation);
	if (a->step == STEP_DONE) {
		/* Done: both hold the same report, of the source's newest state. */
		if (!b || !b->has_report)
			fail_msg("seed %u: source done, target has no report", seed);
		if (memcmp(&a->report, &b->report, sizeof(a->report)) != 0 ||
		    a->report.generation != a->generation)
			fail_msg("seed %u: source and target hold different reports", seed);
	}
	/* A source that gave up never did so on the state the target applied:
	 * only when its VMM paused again after that apply (a newer generation
	 * the target then refused). */
	if ((a->step == STEP_ABORTED || a->step == STEP_FAILED) && b && b->has_report &&
	    b->report.generation == a->generation)
		fail_msg("seed %u: source %s (%s), target applied its generation %" PRIu64, seed,
			 migration_step_to_string(a->step), a->reason, a->generation);
}

/* Both sides terminal (a target that never heard of it counts as ended). */
static bool ended(const char *id)
{
	struct migration_view vb;

	if (!migration_step_is_terminal(session_of(&host_a, id)->step))
		return false;
	return migration_get_view(&host_b, id, &vb) < 0 || migration_step_is_terminal(vb.s->step);
}

/* Was the source's pause request answered with its generation? */
static bool paused_ok(uint64_t request_id)
{
	const struct reply *r = request_id ? reply_to(&host_a, request_id) : NULL;

	return r && r->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED_REPLY;
}

static void walk(unsigned seed, struct walk_stats *st)
{
	char id[VC_MIGRATION_ID_LEN + 1] = "";
	uint64_t req = 100, paused_req = 0, apply_req = 0;
	bool applying = false;
	const struct reply *r;

	rng = UINT64_C(0x9e3779b97f4a7c15) ^ ((uint64_t)seed * UINT64_C(0x2545f4914f6cdd1d));
	if (rng == 0)
		rng = 1;
	migration_vmm_handlers.migrate_out(&host_a, 11, 1, VM_ID, ADDR_B, NAME_B);
	for (int step = 0; step < 80; step++) {
		unsigned what = rnd(100);

		event_base_loop(base, EVLOOP_NONBLOCK);
		if (!id[0] && (r = reply_to(&host_a, 1)) &&
		    r->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY)
			snprintf(id, sizeof(id), "%s", r->migration_id);
		if (what < 44) {
			(void)deliver_one();
		} else if (what < 50) {
			st->reorders += deliver_any(rnd(MAX_EVENTS));
		} else if (what < 53) {
			duplicate_frame(rnd(MAX_EVENTS));
			st->duplicates++;
		} else if (what < 77) {
			(void)complete_one();
		} else if (what < 86) {
			/* QEMU pauses (again, after a failed attempt) only
			 * before the target ran anything. */
			if (id[0] && !applying) {
				paused_req = req;
				migration_vmm_handlers.report_paused(&host_a, 11, req++, VM_ID, id);
			}
		} else if (what < 95) {
			/* The target applies once its QEMU has the device
			 * state, which the source sends only after its pause
			 * was answered. */
			if (id[0] && paused_ok(paused_req)) {
				applying = true;
				migration_vmm_handlers.apply(&host_b, 22, req++, VM_ID, id);
			}
		} else if (what < 98) {
			/* A controller aborts, on either host. */
			if (id[0]) {
				struct migration_view v;

				(void)migration_abort(rnd(2) ? &host_a : &host_b, id,
						      "aborted by the walk", &v);
				st->aborts++;
			}
		} else if (what < 99) {
			link_loss();
			st->losses++;
		} else {
			restart(rnd(2) ? &host_a : &host_b);
			st->restarts++;
		}
	}
	/* Healthy from here: every frame arrives, every op completes, the
	 * VMMs ask once more. */
	settle();
	if (!id[0]) {
		r = reply_to(&host_a, 1);
		if (!r || r->body_case != VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY) {
			st->failed++; /* refused or failed before it had an id */
			assert_int_equal(source_writes, 0);
			return;
		}
		snprintf(id, sizeof(id), "%s", r->migration_id);
	}
	if (!applying) {
		paused_req = req;
		migration_vmm_handlers.report_paused(&host_a, 11, req++, VM_ID, id);
		settle();
	}
	if (paused_ok(paused_req)) {
		apply_req = req;
		migration_vmm_handlers.apply(&host_b, 22, req++, VM_ID, id);
		settle();
	}
	/* A source's pause that was never answered (a restart, a lost link)
	 * means its QEMU never sent the device state: the target's incoming
	 * migration fails and its VMM lets the VM go. */
	if (!paused_ok(paused_req)) {
		struct vm_entry *vm = vm_registry_find(&host_b.vms, VM_ID);

		if (vm)
			vm_registry_remove(&host_b.vms, vm);
		settle();
	}
	/* The rest ends by the flow's own timers (a replay, a timeout); a
	 * target VMM told ESTALE (recovered, the source not yet confirmed
	 * its state) asks again, as libvcounter does. */
	for (int t = 0; t < 1000 && !ended(id); t++) {
		usleep(1000);
		settle();
		r = apply_req ? reply_to(&host_b, apply_req) : NULL;
		if (r && r->body_case == -ESTALE) {
			apply_req = req;
			migration_vmm_handlers.apply(&host_b, 22, req++, VM_ID, id);
		}
	}
	check_invariants(id, seed);
	if (!ended(id))
		fail_msg("seed %u: not ended after 1 s of timers: source %s, target %s", seed,
			 migration_step_to_string(session_of(&host_a, id)->step),
			 migration_get_view(&host_b, id, &(struct migration_view){ 0 }) == 0
				 ? migration_step_to_string(session_of(&host_b, id)->step)
				 : "none");
	switch (session_of(&host_a, id)->step) {
	case STEP_DONE:
		st->done++;
		break;
	case STEP_ABORTED:
		st->aborted++;
		break;
	case STEP_FAILED:
		st->failed++;
		break;
	default:
		break;
	}
}

/* 1,000 seeded interleavings of delivery (a link's frame overtaking
 * another link's, a frame arriving twice), KVM op completion, VMM requests
 * at any time (a pause reported again, an apply early or twice), a
 * controller's abort on either host, link losses and restarts of either
 * daemon; then a healthy end. Each keeps the
 * invariants the integration tests assert: the source never written, no
 * stale or foreign apply, the two sides' outcomes agree. */
static void test_seeded_interleavings_keep_the_invariants(void **state)
{
	const char *env = getenv("VC_MIGRATION_WALKS");
	unsigned n = env ? (unsigned)strtoul(env, NULL, 10) : 1000;
	struct walk_stats st = { 0 };

	(void)state;
	for (unsigned seed = 0; seed < n; seed++) {
		setup(NULL);
		/* Timeouts that fire within the walk and end it soon after. */
		host_a.config.peer_timeout_ms = host_b.config.peer_timeout_ms = 16;
		walk(seed, &st);
		teardown(NULL);
	}
	print_message("%u walks: %u done, %u aborted, %u failed; %u link losses, %u restarts, "
		      "%u frames overtaking another link's, %u duplicated, %u controller "
		      "aborts\n",
		      n, st.done, st.aborted, st.failed, st.losses, st.restarts, st.reorders,
		      st.duplicates, st.aborts);
	assert_int_equal(st.done + st.aborted + st.failed, n);
	assert_true(st.done > 0 && st.aborted + st.failed > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_a_migration_from_start_to_done, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_source_at_final_is_aborted_on_the_target,
						setup, teardown),
		cmocka_unit_test(test_seeded_interleavings_keep_the_invariants),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
