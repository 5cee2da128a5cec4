/* flow_fakes.c - two daemons with a fake peer link and fake VMMs
 * (flow_fakes.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "counter_math.h"
#include "flow_fakes.h"
#include "hostclock.h"
#include "log.h"
#include "migration.h"
#include "peer_conn.h"
#include "peer_link.h"
#include "sync_source.h"
#include "vcd.h"
#include "vmm_server.h"

struct event_base *base;
struct vcd host_a, host_b;
unsigned source_writes, applies;
static char state_a[64], state_b[64];
static uint32_t host_khz;

void flow_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("flow: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

/* ---- the peer link, faked: frames queued, delivered when the test says ---- */

struct peer_conn {
	struct peer_conn *other;
	const struct peer_conn_ops *ops;
	void *userdata;
	bool freed;
	/* Accepted by this listener, its handshake still running (not up). */
	struct peer_listener *listener;
	bool up;
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
	FLOW_CHECK(n_events < MAX_EVENTS);
	events[n_events++] = ev;
}

int peer_listener_new(struct event_base *b, SSL_CTX *ctx, const char *addr,
		      const struct peer_conn_ops *ops, void *userdata, struct peer_listener **ret)
{
	struct peer_listener *l = calloc(1, sizeof(*l));

	(void)b;
	(void)ctx;
	FLOW_CHECK(l != NULL);
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

/* As peer_conn.c's: handshakes still running die with the listener, without
 * on_close (their user never saw them). */
struct peer_listener *peer_listener_free(struct peer_listener *l)
{
	if (!l)
		return NULL;
	for (struct peer_conn *c = all_conns; c; c = c->next_all)
		if (c->listener == l && !c->up)
			peer_conn_free(c);
	for (struct peer_conn *c = all_conns; c; c = c->next_all)
		if (c->listener == l)
			c->listener = NULL;
	if (l == listener_b)
		listener_b = NULL;
	free(l);
	return NULL;
}

static struct peer_conn *conn_new(const struct peer_conn_ops *ops, void *userdata)
{
	struct peer_conn *c = calloc(1, sizeof(*c));

	FLOW_CHECK(c != NULL);
	c->ops = ops;
	c->userdata = userdata;
	c->next_all = all_conns;
	all_conns = c;
	return c;
}

/* A connection to host B's listener: its server end verifies first (its link
 * exists before the client's first frame), then the client. */
static struct peer_conn *connect_to_b(const char *from, const char *expected_name,
				      const struct peer_conn_ops *ops, void *userdata)
{
	struct peer_conn *client, *server;
	struct link_event ev = { .kind = EV_ESTABLISHED };

	client = conn_new(ops, userdata);
	server = conn_new(listener_b->ops, listener_b->userdata);
	server->listener = listener_b;
	client->other = server;
	server->other = client;
	ev.to = server;
	snprintf(ev.identity, sizeof(ev.identity), "%s", from);
	queue_event(ev);
	ev.to = client;
	snprintf(ev.identity, sizeof(ev.identity), "%s", expected_name);
	queue_event(ev);
	return client;
}

int peer_conn_connect(struct event_base *b, SSL_CTX *ctx, const char *host_port,
		      const char *expected_name, const struct peer_conn_ops *ops, void *userdata,
		      struct peer_conn **ret)
{
	/* The caller is peer_link.c, its userdata the links of a daemon. */
	const struct peer_links *from = userdata;

	(void)b;
	(void)ctx;
	if (!listener_b || strcmp(host_port, listener_b->addr) != 0)
		return -ECONNREFUSED;
	*ret = connect_to_b(from->vcd->config.host_name, expected_name, ops, userdata);
	return 0;
}

int flow_connect_to_b(const char *from, const struct peer_conn_ops *ops, void *userdata,
		      struct peer_conn **ret)
{
	if (!listener_b)
		return -ECONNREFUSED;
	*ret = connect_to_b(from, NAME_B, ops, userdata);
	return 0;
}

int peer_conn_send(struct peer_conn *c, const uint8_t *payload, size_t len)
{
	struct link_event ev = { .kind = EV_FRAME, .to = c->other, .len = len };

	if (c->freed || !c->other)
		return -ENOTCONN;
	ev.payload = malloc(len ? len : 1);
	FLOW_CHECK(ev.payload != NULL);
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
bool deliver_one(void)
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
			to->up = true;
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
bool deliver_any(unsigned pick)
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
void duplicate_frame(unsigned pick)
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
	FLOW_CHECK(copy.payload != NULL);
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

static struct reply replies[MAX_REPLIES];
static size_t n_replies;

int vmm_kvm_op(struct vcd *vcd, const struct vm_entry *vm, const struct kvm_op_request *req,
	       vcd_kvm_op_cb cb, void *userdata, uint64_t *ret_op_id)
{
	struct fake_op *op;

	/* Full: forget the ops that ended (a long fuzz input makes many). */
	if (n_ops == MAX_OPS) {
		size_t kept = 0;

		for (size_t i = 0; i < n_ops; i++)
			if (!ops[i].done)
				ops[kept++] = ops[i];
		n_ops = kept;
	}
	FLOW_CHECK(n_ops < MAX_OPS);
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

	/* Full: the oldest reply goes (a test asks for recent ones). */
	if (n_replies == MAX_REPLIES)
		memmove(replies, replies + 1, --n_replies * sizeof(replies[0]));
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
	if (getenv("VC_TEST_VERBOSE"))
		fprintf(stderr, "VMM error reply %d: %s\n", error, text);
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
	FLOW_CHECK(hostclock_bracket_anchor(host_khz, &out.state.anchor) == 0);
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

		int r;

		FLOW_CHECK(plan != NULL);
		FLOW_CHECK(op->has_plan_source);
		/* A plan libvcounter refuses (a final state a fuzzer made) is the
		 * VMM's error, as vcounter_apply() returns it; nothing written. */
		r = counter_math_plan(&op->plan_source, &dst, &policy, plan);
		if (r < 0) {
			free(plan);
			op->cb(op->vcd, r, "the plan was refused", NULL, op->userdata);
			return;
		}
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
bool complete_one(void)
{
	for (size_t i = 0; i < n_ops; i++)
		if (!ops[i].done && (!ops[i].deferred || ops[i].armed)) {
			complete(&ops[i]);
			return true;
		}
	return false;
}

/* ---- failures: a link lost, a daemon restarted ---- */

void link_loss(void)
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
/* vcd's VMM connection closes: its ops issued before op id `before` end as
 * a VMM's disconnection ends them. */
static void vmm_disconnect(struct vcd *vcd, uint64_t before)
{
	for (size_t i = 0; i < n_ops; i++)
		if (ops[i].vcd == vcd && ops[i].op_id < before && !ops[i].done) {
			ops[i].done = true;
			ops[i].cb(vcd, -ECONNRESET, "the VMM disconnected", NULL, ops[i].userdata);
		}
}

void restart(struct vcd *vcd)
{
	uint64_t before = next_op_id;

	migrations_stop(vcd);
	FLOW_CHECK(migrations_start(vcd) == 0);
	FLOW_CHECK(migrations_recover(vcd) == 0);
	vmm_disconnect(vcd, before);
}

/* ---- two daemons ---- */

static void vm_add(struct vcd *vcd, enum vm_role role, uint64_t conn_id, uint64_t offset)
{
	struct vm_entry *vm = vm_entry_new(VM_ID, 1, NULL, 0);

	FLOW_CHECK(vm != NULL);
	vm->role = role;
	vm->conn_id = conn_id;
	vm->complete = vm->probed = vm->offset_control = true;
	vm->backend = BACKEND_KVM_X86;
	vm->arch = COUNTER_ARCH_X86_TSC;
	vm->guest_tsc_khz = GUEST_KHZ;
	vm->registered_state = calloc(1, sizeof(*vm->registered_state));
	FLOW_CHECK(vm->registered_state != NULL);
	*vm->registered_state = (struct counter_state){
		.backend = BACKEND_KVM_X86,
		.arch = COUNTER_ARCH_X86_TSC,
		.guest_tsc_khz = GUEST_KHZ,
		.n_vcpus = 1,
		.offset_cycles = { offset },
	};
	FLOW_CHECK(hostclock_bracket_anchor(host_khz, &vm->registered_state->anchor) == 0);
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
	FLOW_CHECK(vcd->tls_server && vcd->tls_client);
	FLOW_CHECK(sync_source_open(base, "fixed:100000", &vcd->sync, err, sizeof(err)) == 0);
	FLOW_CHECK(migrations_start(vcd) == 0);
	FLOW_CHECK(migrations_recover(vcd) == 0);
	/* As main.c: a VM leaving ends its migrations. */
	FLOW_CHECK(vm_registry_observe(&vcd->vms, migration_on_vm, vcd) == 0);
}

/* As the manager stops a daemon: the migrations, then the VMM socket, whose
 * connections' ops end as a VMM's disconnection ends them. */
static void daemon_down(struct vcd *vcd)
{
	migrations_stop(vcd);
	vmm_disconnect(vcd, UINT64_MAX);
	vm_registry_clear(&vcd->vms);
	sync_source_free(vcd->sync);
	SSL_CTX_free(vcd->tls_server);
	SSL_CTX_free(vcd->tls_client);
}

void flow_setup(void)
{
	n_events = n_ops = n_replies = 0;
	source_writes = applies = 0;
	if (!host_khz) {
		FLOW_CHECK(hostclock_tsc_khz(&host_khz) == 0);
		log_set_target(LOG_TARGET_STDERR);
		log_setup(getenv("VC_TEST_VERBOSE") ? LOG_DEBUG : LOG_ERR);
	}
	base = event_base_new();
	FLOW_CHECK(base != NULL);
	snprintf(state_a, sizeof(state_a), "/tmp/vc-flow-a-XXXXXX");
	snprintf(state_b, sizeof(state_b), "/tmp/vc-flow-b-XXXXXX");
	FLOW_CHECK(mkdtemp(state_a) != NULL);
	FLOW_CHECK(mkdtemp(state_b) != NULL);
	daemon_up(&host_a, NAME_A, state_a, false);
	daemon_up(&host_b, NAME_B, state_b, true);
	vm_add(&host_a, VM_ROLE_SOURCE, 11, UINT64_C(0xfffffff000000000));
	vm_add(&host_b, VM_ROLE_TARGET, 22, 0);
}

void flow_teardown(void)
{
	char cmd[200];

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
	FLOW_CHECK(system(cmd) == 0);
}

/* Deliver frames and complete ops until nothing is left to do. */
void settle(void)
{
	for (int i = 0; i < 1000; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (!deliver_one() && !complete_one())
			return;
	}
	flow_fail("the flow did not settle in 1000 steps");
}

const struct reply *reply_to(struct vcd *vcd, uint64_t request_id)
{
	for (size_t i = 0; i < n_replies; i++)
		if (replies[i].vcd == vcd && replies[i].request_id == request_id)
			return &replies[i];
	return NULL;
}

const struct session *session_of(struct vcd *vcd, const char *migration_id)
{
	static struct migration_view view;

	FLOW_CHECK(migration_get_view(vcd, migration_id, &view) == 0);
	return view.s;
}
