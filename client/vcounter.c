/* vcounter.c - libvcounter: the VMM side of the VMM socket. Requests are
 * synchronous; while one waits for its reply, the KVM ops the daemon asks
 * for are run here, on the VMM's own fds (backend.h says why). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "clockns.h"
#include "frame.h"
#include "macro.h"
#include "report.h"
#include "unix_fd.h"
#include "vcounter/vcounter.h"
#include "wire.h"

/* How long a call waits for the daemon (which has its own, shorter,
 * deadlines for peers and KVM ops). */
#define VCOUNTER_CALL_TIMEOUT_MS 60000

struct vc_vm {
	struct vc_vm *next;
	char vm_id[VC_VM_ID_MAX + 1];
	int vm_fd;
	uint32_t n_vcpus;
	int *vcpu_fds;
	/* As registered, until a target's migration is done: the VM then runs
	 * here and is registered again as a source if the daemon comes back
	 * without it (reconnect), as the daemon itself treats it (arrived). */
	enum vcounter_role role;
	bool registered; /* the daemon answered the registration */
};

/* APPLY ops the daemon sent ahead (at most one per VM: the newest), held
 * until vcounter_apply() names their migration. */
#define VCOUNTER_MAX_HELD_OPS 64

struct held_op {
	struct held_op *next;
	uint64_t id;
	Vcounter__V1__VmmMessage *msg;
};

/* MigrationNotices not yet taken by vcounter_next_notice(), oldest first. */
#define VCOUNTER_MAX_NOTICES 256

struct queued_notice {
	struct queued_notice *next;
	struct vcounter_notice notice;
};

struct vcounter {
	int fd;
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	bool daemon_gone;  /* the daemon closed the connection (or was killed) */
	bool reconnecting; /* inside reconnect(): no second attempt */
	uint64_t next_id;
	struct vc_vm *vms;
	struct held_op *held;
	size_t n_held;
	struct queued_notice *notices, **notices_tail;
	size_t n_notices;
	/* Set during vcounter_apply(): the APPLY ops it may run. */
	const char *applying_vm;
	const char *applying_migration;
	char last_error[512];
	uint8_t buf[FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES];
};

static int set_error(struct vcounter *vc, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int set_error(struct vcounter *vc, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(vc->last_error, sizeof(vc->last_error), fmt, ap);
	va_end(ap);
	return r;
}

const char *vcounter_last_error(const struct vcounter *vc)
{
	return vc ? vc->last_error : "no connection";
}

int vcounter_connect(const char *socket_path, struct vcounter **ret_vc)
{
	_cleanup_close_ int fd = -1;
	struct vcounter *vc;

	if (!socket_path)
		socket_path = VCOUNTER_DEFAULT_SOCKET;
	fd = unix_fd_connect(socket_path, SOCK_SEQPACKET);
	if (fd < 0)
		return fd;
	vc = calloc(1, sizeof(*vc));
	if (!vc)
		return -ENOMEM;
	vc->fd = TAKE_FD(fd);
	snprintf(vc->socket_path, sizeof(vc->socket_path), "%s", socket_path);
	vc->notices_tail = &vc->notices;
	*ret_vc = vc;
	return 0;
}

static struct vc_vm *vm_find(struct vcounter *vc, const char *vm_id)
{
	for (struct vc_vm *vm = vc->vms; vm; vm = vm->next)
		if (vm_id && strcmp(vm->vm_id, vm_id) == 0)
			return vm;
	return NULL;
}

static void vm_forget(struct vcounter *vc, const char *vm_id)
{
	for (struct vc_vm **p = &vc->vms; *p; p = &(*p)->next) {
		if (strcmp((*p)->vm_id, vm_id) == 0) {
			struct vc_vm *vm = *p;

			*p = vm->next;
			free(vm->vcpu_fds);
			free(vm);
			return;
		}
	}
}

void vcounter_close(struct vcounter *vc)
{
	if (!vc)
		return;
	while (vc->vms)
		vm_forget(vc, vc->vms->vm_id);
	while (vc->held) {
		struct held_op *h = vc->held;

		vc->held = h->next;
		wire_vmm_free(h->msg);
		free(h);
	}
	while (vc->notices) {
		struct queued_notice *q = vc->notices;

		vc->notices = q->next;
		free(q);
	}
	close(vc->fd);
	free(vc);
}

static int send_msg(struct vcounter *vc, const Vcounter__V1__VmmMessage *msg, const int *fds,
		    size_t n_fds)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	int r;

	r = wire_vmm_pack_frame(msg, &buf, &len);
	if (r < 0)
		return r;
	return unix_fd_send(vc->fd, buf, len, fds, n_fds);
}

/* ---- KVM ops on the daemon's behalf ---- */

static void anchor_to_pb(const struct host_anchor *a, Vcounter__V1__HostAnchor *pb)
{
	vcounter__v1__host_anchor__init(pb);
	pb->tai_ns = a->tai_ns;
	pb->host_tsc = a->host_tsc;
	pb->width_ns = a->width_ns;
	pb->source = (Vcounter__V1__AnchorSource)a->source;
	pb->host_tsc_khz = a->host_tsc_khz;
}

static void op_error(Vcounter__V1__KvmOpResult *res, Vcounter__V1__Error *e, int r,
		     const char *text)
{
	e->code = wire_error_code_from_errno(r);
	e->errno_value = r < 0 ? -r : r;
	e->message = (char *)text;
	res->error = e;
}

/* PROBE: the first of the daemon's allowed backends (all when it names
 * none) this VM's KVM offers; NULL with the reasons when none. Other ops:
 * the backend the VM registered with, or an error; never another one, whose
 * state the daemon has not seen. */
static int op_backend(const Vcounter__V1__KvmOp *op, const struct kvm_vm_fds *fds,
		      const struct backend_ops **ret, char *detail, size_t detail_size)
{
	enum backend_kind allowed[_BACKEND_KIND_MAX], kind;
	const struct backend_ops *b;
	size_t n = 0;
	int r;

	*ret = NULL;
	if (op->kind == VCOUNTER__V1__KVM_OP_KIND__KVM_OP_PROBE) {
		for (size_t i = 0; i < op->n_backends; i++) {
			if (wire_backend_from_pb(op->backends[i], &kind) < 0 ||
			    kind == BACKEND_NONE || n >= ELEMENTSOF(allowed)) {
				snprintf(detail, detail_size, "allowed backend %d unknown",
					 (int)op->backends[i]);
				return -EINVAL;
			}
			allowed[n++] = kind;
		}
		*ret = backend_select_from(fds, allowed, n, detail, detail_size);
		return 0;
	}
	if (op->backend == VCOUNTER__V1__BACKEND__BACKEND_NONE) {
		*ret = backend_select(fds, detail, detail_size);
		return 0;
	}
	if (wire_backend_from_pb(op->backend, &kind) < 0 || !(b = backend_by_kind(kind))) {
		snprintf(detail, detail_size, "backend %d is not built into this libvcounter",
			 (int)op->backend);
		return -EOPNOTSUPP;
	}
	r = b->detect(fds, detail, detail_size);
	if (r < 0)
		return r;
	*ret = b;
	return 0;
}

static int run_kvm_op(struct vcounter *vc, uint64_t id, const Vcounter__V1__KvmOp *op)
{
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__KvmOpResult res = VCOUNTER__V1__KVM_OP_RESULT__INIT;
	Vcounter__V1__Error e = VCOUNTER__V1__ERROR__INIT;
	Vcounter__V1__HostAnchor anchor_pb;
	Vcounter__V1__KvmClock clock_before_pb;
	struct wire_counter_state_pb state_pb;
	_cleanup_free_ struct counter_state *state = calloc(1, sizeof(*state));
	_cleanup_free_ struct counter_state *src = NULL;
	_cleanup_free_ struct backend_apply_result *applied = NULL;
	const struct backend_ops *backend;
	struct vc_vm *vm = vm_find(vc, op->vm_id);
	struct kvm_vm_fds fds;
	char detail[BACKEND_DETAIL_MAX] = "";
	bool control = false;
	int r;

	msg.id = id;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP_RESULT;
	msg.kvm_op_result = &res;
	if (!state) {
		op_error(&res, &e, -ENOMEM, "out of memory");
		goto send;
	}
	if (!vm) {
		op_error(&res, &e, -ENOENT, "this VMM has no such VM registered");
		goto send;
	}
	fds.vm_fd = vm->vm_fd;
	fds.n_vcpus = vm->n_vcpus;
	fds.vcpu_fds = vm->vcpu_fds;
	r = op_backend(op, &fds, &backend, detail, sizeof(detail));
	if (r < 0) {
		op_error(&res, &e, r, detail);
		goto send;
	}
	if (!backend) {
		if (op->kind == VCOUNTER__V1__KVM_OP_KIND__KVM_OP_PROBE) {
			res.backend = VCOUNTER__V1__BACKEND__BACKEND_NONE;
			res.offset_control = false;
			res.probe_detail = detail;
		} else {
			op_error(&res, &e, -EOPNOTSUPP, detail);
		}
		goto send;
	}
	res.backend = wire_backend_to_pb(backend->kind);

	switch (op->kind) {
	case VCOUNTER__V1__KVM_OP_KIND__KVM_OP_PROBE:
		r = backend->probe(&fds, &control, detail, sizeof(detail));
		if (r < 0) {
			op_error(&res, &e, r, detail[0] ? detail : "probe failed");
			break;
		}
		res.offset_control = control;
		res.probe_detail = detail;
		/* The frequency and scaling the target will be planned with. */
		r = backend->read_state(&fds, state);
		if (r < 0) {
			snprintf(detail, sizeof(detail),
				 "reading counter state after the probe failed: %s", strerror(-r));
			op_error(&res, &e, r, detail);
			break;
		}
		wire_counter_state_to_pb(state, &state_pb);
		res.state = &state_pb.state;
		break;
	case VCOUNTER__V1__KVM_OP_KIND__KVM_OP_READ_STATE:
		r = backend->read_state(&fds, state);
		if (r < 0) {
			snprintf(detail, sizeof(detail), "reading counter state failed: %s",
				 strerror(-r));
			op_error(&res, &e, r, detail);
			break;
		}
		wire_counter_state_to_pb(state, &state_pb);
		res.state = &state_pb.state;
		break;
	case VCOUNTER__V1__KVM_OP_KIND__KVM_OP_APPLY: {
		struct counter_policy policy = { 0 };

		src = calloc(1, sizeof(*src));
		applied = calloc(1, sizeof(*applied));
		if (!src || !applied) {
			op_error(&res, &e, -ENOMEM, "out of memory");
			break;
		}
		if (!op->plan) {
			op_error(&res, &e, -EINVAL, "apply without a plan");
			break;
		}
		r = wire_counter_state_from_pb(op->plan->source, src, detail, sizeof(detail));
		if (r < 0) {
			op_error(&res, &e, r, detail);
			break;
		}
		policy.max_abs_elapsed_ns = op->plan->max_abs_elapsed_ns;
		policy.tsc_khz_tolerance_ppm = op->plan->tsc_khz_tolerance_ppm;
		r = backend->apply(&fds, src, &policy, applied);
		if (r < 0) {
			snprintf(detail, sizeof(detail), "apply failed: %s", strerror(-r));
			op_error(&res, &e, r, detail);
			break;
		}
		applied->readback.sync = applied->sync;
		wire_counter_state_to_pb(&applied->readback, &state_pb);
		res.state = &state_pb.state;
		anchor_to_pb(&applied->anchor, &anchor_pb);
		res.apply_anchor = &anchor_pb;
		res.apply_ns = applied->apply_ns;
		wire_kvmclock_to_pb(&applied->clock_before, &clock_before_pb);
		res.clock_before = &clock_before_pb;
		break;
	}
	default:
		op_error(&res, &e, -EOPNOTSUPP, "unknown KVM op");
		break;
	}
send:
	return send_msg(vc, &msg, NULL, 0);
}

static bool op_is_apply_for(const Vcounter__V1__KvmOp *op, const char *vm_id,
			    const char *migration_id)
{
	return op->kind == VCOUNTER__V1__KVM_OP_KIND__KVM_OP_APPLY && vm_id && migration_id &&
	       op->vm_id && op->migration_id && strcmp(op->vm_id, vm_id) == 0 &&
	       strcmp(op->migration_id, migration_id) == 0;
}

/* Remove and return the held op that matches, or the one with this id. */
static struct held_op *held_take(struct vcounter *vc, const char *vm_id, uint64_t id)
{
	for (struct held_op **p = &vc->held; *p; p = &(*p)->next) {
		struct held_op *h = *p;

		if ((vm_id && strcmp(h->msg->kvm_op->vm_id, vm_id) == 0) ||
		    (!vm_id && h->id == id)) {
			*p = h->next;
			vc->n_held--;
			return h;
		}
	}
	return NULL;
}

static void held_drop(struct held_op *h)
{
	if (h) {
		wire_vmm_free(h->msg);
		free(h);
	}
}

/* Keep an APPLY op sent ahead; a newer one for the same VM replaces it. */
static void hold(struct vcounter *vc, Vcounter__V1__VmmMessage *msg)
{
	struct held_op *h;

	held_drop(held_take(vc, msg->kvm_op->vm_id, 0));
	if (vc->n_held >= VCOUNTER_MAX_HELD_OPS || !(h = calloc(1, sizeof(*h)))) {
		wire_vmm_free(msg); /* the daemon sends it again on request */
		return;
	}
	h->id = msg->id;
	h->msg = msg;
	h->next = vc->held;
	vc->held = h;
	vc->n_held++;
}

/* Receive one message; timeout_ms 0 polls. 0 with *ret_msg NULL: nothing. */
static int receive(struct vcounter *vc, int timeout_ms, Vcounter__V1__VmmMessage **ret_msg)
{
	struct pollfd pfd = { .fd = vc->fd, .events = POLLIN };
	int got[UNIX_FD_MAX_FDS];
	size_t n_got = 0, payload_len;
	const uint8_t *payload;
	ssize_t n;
	int r;

	*ret_msg = NULL;
	r = poll(&pfd, 1, timeout_ms);
	if (r < 0)
		return errno == EINTR ? 0 : set_error(vc, -errno, "poll: %s", strerror(errno));
	if (r == 0)
		return 0;
	n = unix_fd_recv(vc->fd, vc->buf, sizeof(vc->buf), got, &n_got);
	unix_fd_close_all(got, n_got); /* the daemon never sends fds */
	if (n == 0 || n == -ECONNRESET) {
		vc->daemon_gone = true;
		return set_error(vc, -ECONNRESET, "vcounterd closed the connection");
	}
	if (n < 0)
		return set_error(vc, (int)n, "receive from vcounterd: %s", strerror((int)-n));
	r = frame_parse_datagram(vc->buf, (size_t)n, VC_MAX_FRAME_BYTES, &payload, &payload_len);
	if (r < 0)
		return set_error(vc, r, "malformed frame from vcounterd");
	if (wire_vmm_unpack(payload, payload_len, ret_msg, NULL) < 0)
		*ret_msg = NULL; /* a newer daemon's message type: not ours to answer */
	return 0;
}

/* Serve a KVM op. APPLY ops run only inside vcounter_apply() for their own
 * migration (and not while draining: the newest held one runs after);
 * others are held. Takes msg. */
static int serve_kvm_op(struct vcounter *vc, Vcounter__V1__VmmMessage *msg, bool draining)
{
	const Vcounter__V1__KvmOp *op = msg->kvm_op;
	int r = 0;

	if (op->kind == VCOUNTER__V1__KVM_OP_KIND__KVM_OP_WITHDRAW) {
		held_drop(held_take(vc, NULL, msg->id));
		wire_vmm_free(msg);
		return 0;
	}
	if (op->kind == VCOUNTER__V1__KVM_OP_KIND__KVM_OP_APPLY &&
	    (draining || !op_is_apply_for(op, vc->applying_vm, vc->applying_migration))) {
		hold(vc, msg);
		return 0;
	}
	r = run_kvm_op(vc, msg->id, op);
	wire_vmm_free(msg);
	if (r < 0)
		return set_error(vc, r, "cannot answer vcounterd: %s", strerror(-r));
	return 0;
}

static struct queued_notice *notice_pop(struct vcounter *vc)
{
	struct queued_notice *q = vc->notices;

	if (!q)
		return NULL;
	vc->notices = q->next;
	if (!vc->notices)
		vc->notices_tail = &vc->notices;
	vc->n_notices--;
	return q;
}

/* Keep a MigrationNotice for vcounter_next_notice(); true if msg was one
 * (then it is taken). */
static bool absorb_notice(struct vcounter *vc, Vcounter__V1__VmmMessage *msg)
{
	const Vcounter__V1__MigrationNotice *n = msg->migration_notice;
	struct queued_notice *q;
	const char *step;

	if (msg->body_case != VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATION_NOTICE)
		return false;
	if (n->role == VCOUNTER__V1__ROLE__ROLE_TARGET &&
	    n->step == VCOUNTER__V1__MIGRATION_STEP__MIGRATION_STEP_DONE) {
		struct vc_vm *vm = vm_find(vc, n->vm_id);

		if (vm)
			vm->role = VCOUNTER_ROLE_SOURCE;
	}
	if (vc->n_notices >= VCOUNTER_MAX_NOTICES)
		free(notice_pop(vc));
	q = calloc(1, sizeof(*q));
	if (q) {
		step = migration_step_to_string((enum migration_step)n->step);
		snprintf(q->notice.migration_id, sizeof(q->notice.migration_id), "%s",
			 n->migration_id);
		snprintf(q->notice.vm_id, sizeof(q->notice.vm_id), "%s", n->vm_id);
		q->notice.role = n->role == VCOUNTER__V1__ROLE__ROLE_TARGET ? VCOUNTER_ROLE_TARGET
									    : VCOUNTER_ROLE_SOURCE;
		snprintf(q->notice.step, sizeof(q->notice.step), "%s", step ? step : "unknown");
		q->notice.terminal = migration_step_is_terminal((enum migration_step)n->step);
		q->notice.generation = n->generation;
		snprintf(q->notice.peer_identity, sizeof(q->notice.peer_identity), "%s",
			 n->peer_identity);
		snprintf(q->notice.peer_address, sizeof(q->notice.peer_address), "%s",
			 n->peer_address);
		snprintf(q->notice.reason, sizeof(q->notice.reason), "%s", n->reason);
		*vc->notices_tail = q;
		vc->notices_tail = &q->next;
		vc->n_notices++;
	}
	wire_vmm_free(msg);
	return true;
}

/* Is msg the reply to request_id (or a connection-level Error, id 0)? Then
 * 0 with *ret_reply set, or -errno for an Error (last_error set). 1: not
 * ours (a late reply to an abandoned request), dropped. Takes msg. */
static int take_reply(struct vcounter *vc, Vcounter__V1__VmmMessage *msg, uint64_t request_id,
		      Vcounter__V1__VmmMessage **ret_reply)
{
	int r;

	if (msg->id != request_id &&
	    !(msg->id == 0 && msg->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR)) {
		wire_vmm_free(msg);
		return 1;
	}
	if (msg->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR) {
		r = wire_errno_from_error(msg->error);
		set_error(vc, r < 0 ? r : -EIO, "%s",
			  msg->error->message ? msg->error->message : "error");
		wire_vmm_free(msg);
		return r < 0 ? r : -EIO;
	}
	*ret_reply = msg;
	return 0;
}

/* Wait for the reply naming request_id, serving KVM ops meanwhile. An Error
 * reply becomes -errno with last_error set. */
static int wait_reply(struct vcounter *vc, uint64_t request_id,
		      Vcounter__V1__VmmMessage **ret_reply)
{
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	int r;

	for (;;) {
		Vcounter__V1__VmmMessage *msg;
		long elapsed_ms = (long)((clock_ns(CLOCK_MONOTONIC) - start) / NSEC_PER_MSEC);

		if (elapsed_ms >= VCOUNTER_CALL_TIMEOUT_MS)
			return set_error(vc, -ETIMEDOUT, "vcounterd did not answer in time");
		r = receive(vc, (int)(VCOUNTER_CALL_TIMEOUT_MS - elapsed_ms), &msg);
		if (r < 0)
			return r;
		if (!msg)
			continue;
		if (msg->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP) {
			r = serve_kvm_op(vc, msg, false);
			if (r < 0)
				return r;
			continue;
		}
		if (absorb_notice(vc, msg))
			continue;
		r = take_reply(vc, msg, request_id, ret_reply);
		if (r != 1)
			return r;
	}
}

static int send_request(struct vcounter *vc, Vcounter__V1__VmmMessage *req, const int *fds,
			size_t n_fds)
{
	int r;

	req->id = ++vc->next_id;
	vc->last_error[0] = '\0';
	r = send_msg(vc, req, fds, n_fds);
	if (r < 0)
		return set_error(vc, r, "cannot send to vcounterd: %s", strerror(-r));
	return 0;
}

static int reconnect(struct vcounter *vc);

/* A send that failed because the daemon is gone (killed, restarted). */
static bool daemon_is_gone(struct vcounter *vc, int r)
{
	return r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN || vc->daemon_gone;
}

/* Send req; if the daemon is gone, reconnect once and send it again: it
 * never reached the old daemon. */
static int send_or_reconnect(struct vcounter *vc, Vcounter__V1__VmmMessage *req, const int *fds,
			     size_t n_fds)
{
	int r = send_request(vc, req, fds, n_fds);

	if (r < 0 && !vc->reconnecting && daemon_is_gone(vc, r)) {
		r = reconnect(vc);
		if (r < 0)
			return r;
		r = send_request(vc, req, fds, n_fds);
	}
	return r;
}

/* The daemon went away after req reached it: whether it acted on req is
 * unknown, so the call fails; the connection is back for the next one. */
static int gone_during_call(struct vcounter *vc, int r)
{
	if (r != -ECONNRESET || vc->reconnecting || !vc->daemon_gone)
		return r;
	r = reconnect(vc);
	if (r < 0)
		return r;
	return set_error(vc, -ECONNRESET,
			 "vcounterd restarted during the call; whether it took effect is unknown "
			 "(reconnected: the next call goes to the new daemon)");
}

static int call(struct vcounter *vc, Vcounter__V1__VmmMessage *req, const int *fds, size_t n_fds,
		Vcounter__V1__VmmMessage **ret_reply)
{
	int r = send_or_reconnect(vc, req, fds, n_fds);

	if (r < 0)
		return r;
	return gone_during_call(vc, wait_reply(vc, req->id, ret_reply));
}

static int expect(struct vcounter *vc, Vcounter__V1__VmmMessage *reply,
		  Vcounter__V1__VmmMessage__BodyCase body)
{
	if (reply->body_case == body)
		return 0;
	wire_vmm_free(reply);
	return set_error(vc, -EPROTO, "unexpected reply type %d from vcounterd",
			 (int)reply->body_case);
}

static void info_from_reply(const Vcounter__V1__RegisterVmReply *rr,
			    struct vcounter_vm_info *ret_info)
{
	const char *name = NULL;
	enum backend_kind kind;

	if (!ret_info)
		return;
	if (wire_backend_from_pb(rr->backend, &kind) == 0)
		name = backend_kind_to_string(kind);
	memset(ret_info, 0, sizeof(*ret_info));
	snprintf(ret_info->backend, sizeof(ret_info->backend), "%s", name ? name : "unknown");
	ret_info->offset_control = rr->offset_control;
	snprintf(ret_info->probe_detail, sizeof(ret_info->probe_detail), "%s",
		 rr->probe_detail ? rr->probe_detail : "");
	ret_info->guest_tsc_khz = rr->guest_tsc_khz;
}

/* Send vm's RegisterVm messages (its fds) and wait for the probe's reply. */
static int register_send(struct vcounter *vc, struct vc_vm *vm, struct vcounter_vm_info *ret_info)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__RegisterVm reg = VCOUNTER__V1__REGISTER_VM__INIT;
	_cleanup_free_ int *fds = calloc((size_t)vm->n_vcpus + 1, sizeof(int));
	int r;

	if (!fds)
		return set_error(vc, -ENOMEM, "out of memory");
	fds[0] = vm->vm_fd;
	memcpy(fds + 1, vm->vcpu_fds, vm->n_vcpus * sizeof(int));
	reg.vm_id = vm->vm_id;
	reg.role = vm->role == VCOUNTER_ROLE_SOURCE ? VCOUNTER__V1__ROLE__ROLE_SOURCE
						    : VCOUNTER__V1__ROLE__ROLE_TARGET;
	reg.vcpu_count = vm->n_vcpus;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM;
	req.register_vm = &reg;
	/* One message carries at most UNIX_FD_MAX_FDS fds (SCM_MAX_FD): a larger
	 * VM goes in full messages, each answered with ok, the last one with the
	 * registration's reply (vcounter.proto, RegisterVm). */
	for (size_t sent = 0, total = (size_t)vm->n_vcpus + 1;;) {
		size_t n = total - sent < UNIX_FD_MAX_FDS ? total - sent : UNIX_FD_MAX_FDS;

		reg.first_vcpu = sent == 0 ? 0 : (uint32_t)(sent - 1);
		r = call(vc, &req, fds + sent, n, &reply);
		sent += n;
		if (r < 0 || sent == total)
			break;
		r = expect(vc, reply, VCOUNTER__V1__VMM_MESSAGE__BODY_OK);
		if (r < 0)
			break;
		wire_vmm_free(reply);
	}
	if (r == 0)
		r = expect(vc, reply, VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM_REPLY);
	if (r < 0)
		return r;
	info_from_reply(reply->register_vm_reply, ret_info);
	wire_vmm_free(reply);
	vm->registered = true;
	return 0;
}

/* AttachVm: 0 (the restarted daemon recovered vm from its fd store), or
 * -ENOENT (it did not: register again), or another -errno. */
static int attach_send(struct vcounter *vc, struct vc_vm *vm)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__AttachVm at = VCOUNTER__V1__ATTACH_VM__INIT;
	int r;

	at.vm_id = vm->vm_id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_ATTACH_VM;
	req.attach_vm = &at;
	r = call(vc, &req, NULL, 0, &reply);
	if (r == 0)
		r = expect(vc, reply, VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM_REPLY);
	if (r == 0)
		wire_vmm_free(reply);
	return r;
}

/* The daemon went away: connect again (once) to the same path and give it
 * back every VM this connection registered, by AttachVm when it kept them
 * (systemd's fd store), else by registering them again with the fds held
 * here (the probe runs again then; a VM that arrived here by a migration
 * since it registered comes back as a source). The new socket takes the old one's fd
 * number, so vcounter_fd() stays valid. 0 when connected again, whatever
 * became of each VM (a call on a VM that could not be given back fails
 * with the daemon's error). */
static int reconnect(struct vcounter *vc)
{
	int fd = unix_fd_connect(vc->socket_path, SOCK_SEQPACKET);
	int r;

	if (fd < 0)
		return set_error(vc, fd, "vcounterd went away and cannot be reached at %s: %s",
				 vc->socket_path, strerror(-fd));
	if (dup3(fd, vc->fd, O_CLOEXEC) < 0) {
		r = -errno;
		close(fd);
		return set_error(vc, r, "cannot reconnect to vcounterd: %s", strerror(-r));
	}
	close(fd);
	vc->daemon_gone = false;
	while (vc->held) { /* ops of the daemon that went away */
		struct held_op *h = vc->held;

		vc->held = h->next;
		vc->n_held--;
		held_drop(h);
	}
	vc->reconnecting = true;
	for (struct vc_vm *vm = vc->vms; vm && !vc->daemon_gone; vm = vm->next) {
		if (!vm->registered)
			continue; /* its registration is the call being retried */
		r = attach_send(vc, vm);
		if (r == -ENOENT)
			r = register_send(vc, vm, NULL);
		if (r < 0)
			vm->registered = false; /* the daemon does not have it */
	}
	vc->reconnecting = false;
	return vc->daemon_gone ? set_error(vc, -ECONNRESET, "vcounterd went away again") : 0;
}

int vcounter_register_vm(struct vcounter *vc, const char *vm_id, enum vcounter_role role, int vm_fd,
			 const int *vcpu_fds, unsigned n_vcpus, struct vcounter_vm_info *ret_info)
{
	struct vc_vm *vm;
	int r;

	if (!vc || !vm_id_is_valid(vm_id) || n_vcpus == 0 || n_vcpus > VC_MAX_VCPUS ||
	    (role != VCOUNTER_ROLE_SOURCE && role != VCOUNTER_ROLE_TARGET))
		return vc ? set_error(vc, -EINVAL, "invalid VM id, role or vCPU count") : -EINVAL;
	if (vm_find(vc, vm_id))
		return set_error(vc, -EEXIST, "VM %s is already registered here", vm_id);
	vm = calloc(1, sizeof(*vm));
	if (!vm || !(vm->vcpu_fds = calloc(n_vcpus, sizeof(int)))) {
		free(vm);
		return set_error(vc, -ENOMEM, "out of memory");
	}
	memcpy(vm->vcpu_fds, vcpu_fds, n_vcpus * sizeof(int));
	snprintf(vm->vm_id, sizeof(vm->vm_id), "%s", vm_id);
	vm->vm_fd = vm_fd;
	vm->n_vcpus = n_vcpus;
	vm->role = role;
	/* Known before the request goes out: the daemon probes during it. */
	vm->next = vc->vms;
	vc->vms = vm;
	r = register_send(vc, vm, ret_info);
	if (r < 0)
		vm_forget(vc, vm_id);
	return r;
}

int vcounter_unregister_vm(struct vcounter *vc, const char *vm_id)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__UnregisterVm un = VCOUNTER__V1__UNREGISTER_VM__INIT;
	int r;

	if (!vc || !vm_id)
		return -EINVAL;
	un.vm_id = (char *)vm_id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_UNREGISTER_VM;
	req.unregister_vm = &un;
	r = call(vc, &req, NULL, 0, &reply);
	if (r == 0)
		r = expect(vc, reply, VCOUNTER__V1__VMM_MESSAGE__BODY_OK);
	if (r < 0)
		return r;
	wire_vmm_free(reply);
	vm_forget(vc, vm_id);
	return 0;
}

int vcounter_migrate_out(struct vcounter *vc, const char *vm_id, const char *peer_address,
			 const char *peer_name, char ret_migration_id[VCOUNTER_MIGRATION_ID_SIZE])
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__MigrateOut mo = VCOUNTER__V1__MIGRATE_OUT__INIT;
	int r;

	if (!vc || !vm_id || !peer_address || !peer_name)
		return -EINVAL;
	mo.vm_id = (char *)vm_id;
	mo.peer_address = (char *)peer_address;
	mo.peer_name = (char *)peer_name;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT;
	req.migrate_out = &mo;
	r = call(vc, &req, NULL, 0, &reply);
	if (r == 0)
		r = expect(vc, reply, VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT_REPLY);
	if (r < 0)
		return r;
	if (!migration_id_is_valid(reply->migrate_out_reply->migration_id)) {
		wire_vmm_free(reply);
		return set_error(vc, -EPROTO, "vcounterd sent an invalid migration id");
	}
	snprintf(ret_migration_id, VCOUNTER_MIGRATION_ID_SIZE, "%s",
		 reply->migrate_out_reply->migration_id);
	wire_vmm_free(reply);
	return 0;
}

int vcounter_report_paused(struct vcounter *vc, const char *vm_id, const char *migration_id,
			   uint64_t *ret_generation)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__ReportPaused rp = VCOUNTER__V1__REPORT_PAUSED__INIT;
	int r;

	if (!vc || !vm_id || !migration_id)
		return -EINVAL;
	rp.vm_id = (char *)vm_id;
	rp.migration_id = (char *)migration_id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED;
	req.report_paused = &rp;
	r = call(vc, &req, NULL, 0, &reply);
	if (r == 0)
		r = expect(vc, reply, VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED_REPLY);
	if (r < 0)
		return r;
	if (ret_generation)
		*ret_generation = reply->report_paused_reply->generation;
	wire_vmm_free(reply);
	return 0;
}

/* The daemon sent the APPLY op when the final state reached it; it waits in
 * the socket or in vc->held. Ask, then run the newest op for this migration
 * at once: the apply costs one round trip. Ops that arrive later (a newer
 * generation, or the op sent on request) run as they come. */
static int apply_call(struct vcounter *vc, Vcounter__V1__VmmMessage *req, const char *vm_id,
		      const char *migration_id, Vcounter__V1__VmmMessage **ret_reply)
{
	struct held_op *h;
	int r;

	r = send_or_reconnect(vc, req, NULL, 0);
	if (r < 0)
		return r;
	vc->applying_vm = vm_id;
	vc->applying_migration = migration_id;
	for (;;) { /* drain what is already queued, holding APPLY ops */
		Vcounter__V1__VmmMessage *msg;

		r = receive(vc, 0, &msg);
		if (r < 0 || !msg)
			break;
		if (msg->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP) {
			r = serve_kvm_op(vc, msg, true);
			if (r < 0)
				break;
			continue;
		}
		if (absorb_notice(vc, msg))
			continue;
		/* A repeated apply is answered at once, with no op. */
		r = take_reply(vc, msg, req->id, ret_reply);
		if (r != 1)
			goto out;
		r = 0;
	}
	if (r == 0) {
		h = held_take(vc, vm_id, 0);
		if (h && op_is_apply_for(h->msg->kvm_op, vm_id, migration_id))
			r = run_kvm_op(vc, h->id, h->msg->kvm_op);
		held_drop(h);
	}
	if (r == 0)
		r = wait_reply(vc, req->id, ret_reply);
out:
	vc->applying_vm = vc->applying_migration = NULL;
	return gone_during_call(vc, r);
}

void vcounter_report_free(struct vcounter_report *report)
{
	report_clear(report);
	free(report);
}

int vcounter_apply(struct vcounter *vc, const char *vm_id, const char *migration_id,
		   struct vcounter_report **ret_report)
{
	Vcounter__V1__VmmMessage req = VCOUNTER__V1__VMM_MESSAGE__INIT, *reply;
	Vcounter__V1__ApplyRequest ap = VCOUNTER__V1__APPLY_REQUEST__INIT;
	_cleanup_free_ struct vcounter_report *out = NULL;
	char err[256];
	int r;

	if (!vc || !vm_id || !migration_id)
		return -EINVAL;
	ap.vm_id = (char *)vm_id;
	ap.migration_id = (char *)migration_id;
	req.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY;
	req.apply = &ap;
	r = apply_call(vc, &req, vm_id, migration_id, &reply);
	if (r == 0)
		r = expect(vc, reply, VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY_REPLY);
	if (r < 0)
		return r;
	out = calloc(1, sizeof(*out));
	if (!out) {
		wire_vmm_free(reply);
		return set_error(vc, -ENOMEM, "out of memory");
	}
	r = report_from_pb(reply->apply_reply->report, out, err, sizeof(err));
	wire_vmm_free(reply);
	if (r == -ENOMEM)
		return set_error(vc, r, "out of memory");
	if (r < 0)
		return set_error(vc, r, "invalid report from vcounterd: %s", err);
	if (ret_report)
		*ret_report = TAKE_PTR(out);
	else
		report_clear(out);
	return 0;
}

int vcounter_fd(const struct vcounter *vc)
{
	return vc ? vc->fd : -EINVAL;
}

int vcounter_next_notice(struct vcounter *vc, int timeout_ms, struct vcounter_notice *ret)
{
	uint64_t start;
	int r;

	if (!vc || !ret)
		return -EINVAL;
	start = clock_ns(CLOCK_MONOTONIC);
	for (;;) {
		struct queued_notice *q = notice_pop(vc);
		Vcounter__V1__VmmMessage *msg;
		long left = timeout_ms;

		if (q) {
			*ret = q->notice;
			free(q);
			return 1;
		}
		if (timeout_ms > 0) {
			left = timeout_ms -
			       (long)((clock_ns(CLOCK_MONOTONIC) - start) / NSEC_PER_MSEC);
			if (left <= 0)
				return 0;
		}
		r = receive(vc, (int)left, &msg);
		if (r < 0 && vc->daemon_gone && !vc->reconnecting) {
			/* Notices of the old daemon's migrations are lost with it. */
			r = reconnect(vc);
			if (r < 0)
				return r;
			continue;
		}
		if (r < 0)
			return r;
		if (!msg) {
			if (timeout_ms == 0)
				return 0;
			continue;
		}
		if (msg->body_case == VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP) {
			r = serve_kvm_op(vc, msg, false);
			if (r < 0)
				return r;
			continue;
		}
		if (!absorb_notice(vc, msg))
			wire_vmm_free(msg); /* a late reply to an abandoned request */
	}
}
