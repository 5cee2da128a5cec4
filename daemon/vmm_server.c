/* vmm_server.c - the VMM socket: unix SOCK_SEQPACKET, one frame and its fds
 * per message. Checks who connects (SO_PEERCRED), what fds they pass
 * (fd_check), keeps registered VMs' fds, and runs KVM ops through the VMM's
 * libvcounter, since KVM only accepts VM ioctls from the VM's own mm. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cleanup.h"
#include "clockns.h"
#include "errmsg.h"
#include "fd_check.h"
#include "frame.h"
#include "listener.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "pidwatch.h"
#include "ratelimit.h"
#include "sync_source.h"
#include "unix_fd.h"
#include "vcd.h"
#include "vmm_server.h"
#include "wire.h"

#include "config.h"

struct vmm_conn;

struct pending_op {
	struct pending_op *next;
	uint64_t id;
	int kind;
	struct vmm_conn *conn;
	struct event *timer;
	vcd_kvm_op_cb cb;
	void *userdata;
};

struct vmm_conn {
	struct vmm_conn *next;
	struct vcd *vcd;
	uint64_t id;
	int fd;
	struct event *ev;
	struct ratelimit refusal_log; /* its refusals' log lines */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	struct pending_op *ops;
	size_t n_ops;
	/* A VM too large for one message, its fds arriving: not in the
	 * registry until whole, dropped at its deadline. */
	struct vm_entry *partial;
	struct event *partial_timer;
	/* The process that connected (SO_PEERCRED): when it exits the
	 * connection ends, whoever else holds the socket (a forked child). */
	struct event *exit_ev;
};

struct vmm_server {
	int listen_fd;
	struct listener *listener;
	struct ratelimit accept_refusal_log; /* connections refused at accept */
	size_t n_partials;		     /* registrations in several messages under way */
	struct vmm_conn *conns;
	size_t n_conns;
	uint64_t next_conn_id;
	uint64_t next_op_id;
	const struct vmm_migration_handlers *mh;
	uint8_t buf[FRAME_HEADER_BYTES + VC_MAX_FRAME_BYTES];
};

static struct vmm_conn *conn_find(struct vcd *vcd, uint64_t conn_id)
{
	for (struct vmm_conn *c = vcd->vmm ? vcd->vmm->conns : NULL; c; c = c->next)
		if (c->id == conn_id)
			return c;
	return NULL;
}

static void conn_close(struct vmm_conn *conn, const char *why);

static int conn_send(struct vmm_conn *conn, const Vcounter__V1__VmmMessage *msg)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	ssize_t n;
	int r;

	r = wire_vmm_pack_frame(msg, &buf, &len);
	if (r < 0)
		return r;
	n = send(conn->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	if ((size_t)n != len)
		return -EMSGSIZE;
	return 0;
}

/* A VMM that does not take its replies is dropped rather than buffered for. */
static void conn_send_or_drop(struct vmm_conn *conn, const Vcounter__V1__VmmMessage *msg)
{
	int r = conn_send(conn, msg);

	if (r < 0) {
		log_warning_errno(r, "vmm pid=%d: dropping connection, cannot send",
				  (int)conn->pid);
		conn_close(conn, "send failed");
	}
}

static int send_error(int fd, uint64_t request_id, int error, const char *text)
{
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__Error e = VCOUNTER__V1__ERROR__INIT;
	struct vmm_conn tmp = { .fd = fd };

	e.code = wire_error_code_from_errno(error);
	e.errno_value = error < 0 ? -error : error;
	e.message = (char *)text;
	msg.id = request_id;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR;
	msg.error = &e;
	return conn_send(&tmp, &msg);
}

/* A refusal on the VMM socket: counted by reason, and logged with who was
 * refused, at most VMM_REFUSAL_LOG_BURST lines per VMM_REFUSAL_LOG_INTERVAL_NS
 * from one connection (or from all refused at accept), the next line saying
 * how many were held back. */
static void refusal_note(struct ratelimit *rl, pid_t pid, uid_t uid, gid_t gid, uint64_t request_id,
			 int error, const char *text)
{
	vcd_metrics.vmm_refusals[metrics_refusal_from_errno(error)]++;
	log_ratelimited(rl, LOG_WARNING, error,
			"vmm pid=%d uid=%u gid=%u: request %" PRIu64 " refused: %s", (int)pid,
			(unsigned)uid, (unsigned)gid, request_id, text);
}

static void conn_send_error(struct vmm_conn *conn, uint64_t request_id, int error, const char *text)
{
	int r;

	refusal_note(&conn->refusal_log, conn->pid, conn->uid, conn->gid, request_id, error, text);
	r = send_error(conn->fd, request_id, error, text);

	if (r < 0) {
		log_warning_errno(r, "vmm pid=%d: dropping connection, cannot send",
				  (int)conn->pid);
		conn_close(conn, "send failed");
	}
}

void vmm_reply(struct vcd *vcd, uint64_t conn_id, Vcounter__V1__VmmMessage *msg)
{
	struct vmm_conn *conn = conn_find(vcd, conn_id);

	if (!conn) {
		log_debug("vmm conn=%llu gone, reply to request %llu dropped",
			  (unsigned long long)conn_id, (unsigned long long)msg->id);
		return;
	}
	conn_send_or_drop(conn, msg);
}

void vmm_notify(struct vcd *vcd, uint64_t conn_id, const Vcounter__V1__VmmMessage *msg)
{
	struct vmm_conn *conn = conn_find(vcd, conn_id);
	int r;

	if (!conn)
		return;
	r = conn_send(conn, msg);
	if (r < 0)
		log_warning_errno(r, "vmm pid=%d: notice not delivered (the VMM does not read)",
				  (int)conn->pid);
}

void vmm_on_migration(void *userdata, const struct migration_event *ev)
{
	struct vcd *vcd = userdata;
	const struct session *s = ev->view.s;
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__MigrationNotice n = VCOUNTER__V1__MIGRATION_NOTICE__INIT;
	struct vm_entry *vm = vm_registry_find(&vcd->vms, s->vm_id);

	/* The VM's VMM, in the role it holds the VM in here (a target that
	 * arrived may leave again as a source). */
	if (!vm || (vm->role != s->role && !(vm->arrived && s->role == VM_ROLE_SOURCE)))
		return;
	n.migration_id = (char *)s->migration_id;
	n.vm_id = (char *)s->vm_id;
	n.role = s->role == VM_ROLE_SOURCE ? VCOUNTER__V1__ROLE__ROLE_SOURCE
					   : VCOUNTER__V1__ROLE__ROLE_TARGET;
	n.step = (Vcounter__V1__MigrationStep)s->step;
	n.peer_identity = (char *)s->peer_identity;
	n.peer_address = (char *)ev->view.peer_address;
	n.reason = (char *)s->reason;
	n.generation = s->generation;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATION_NOTICE;
	msg.migration_notice = &n;
	vmm_notify(vcd, vm->conn_id, &msg);
}

void vmm_reply_ok(struct vcd *vcd, uint64_t conn_id, uint64_t request_id)
{
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;

	msg.id = request_id;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_OK;
	msg.ok = 1;
	vmm_reply(vcd, conn_id, &msg);
}

void vmm_reply_error(struct vcd *vcd, uint64_t conn_id, uint64_t request_id, int error,
		     const char *fmt, ...)
{
	struct vmm_conn *conn = conn_find(vcd, conn_id);
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (conn)
		conn_send_error(conn, request_id, error, text);
}

/* ---- KVM ops run by the VMM ---- */

static void pending_op_free(struct pending_op *op)
{
	op->timer = event_unref(op->timer);
	free(op);
}

static struct pending_op *conn_take_op(struct vmm_conn *conn, uint64_t id)
{
	for (struct pending_op **p = &conn->ops; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct pending_op *op = *p;

			*p = op->next;
			conn->n_ops--;
			return op;
		}
	}
	return NULL;
}

static void op_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pending_op *op = arg;
	struct vmm_conn *conn = op->conn;
	struct vcd *vcd = conn->vcd;

	conn_take_op(conn, op->id);
	op->cb(vcd, -ETIMEDOUT, "the VMM did not answer the KVM op in time", NULL, op->userdata);
	pending_op_free(op);
}

static void op_arm(struct vcd *vcd, struct pending_op *op)
{
	struct timeval tv = {
		.tv_sec = vcd->config.kvm_op_timeout_ms / 1000,
		.tv_usec = (vcd->config.kvm_op_timeout_ms % 1000) * 1000,
	};

	evtimer_add(op->timer, &tv);
}

int vmm_kvm_op(struct vcd *vcd, const struct vm_entry *vm, const struct kvm_op_request *req,
	       vcd_kvm_op_cb cb, void *userdata, uint64_t *ret_op_id)
{
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__KvmOp op_pb = VCOUNTER__V1__KVM_OP__INIT;
	Vcounter__V1__ApplyPlan plan = VCOUNTER__V1__APPLY_PLAN__INIT;
	Vcounter__V1__Backend backends_pb[_BACKEND_KIND_MAX];
	struct wire_counter_state_pb state_pb;
	struct vmm_conn *conn = conn_find(vcd, vm->conn_id);
	struct pending_op *op;
	int r;

	if (!conn)
		return -ECONNRESET;
	if (conn->n_ops >= VCD_MAX_PENDING_OPS)
		return -EBUSY;
	op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->id = ++vcd->vmm->next_op_id;
	op->kind = req->kind;
	op->conn = conn;
	op->cb = cb;
	op->userdata = userdata;
	op->timer = evtimer_new(vcd->base, op_timeout_cb, op);
	if (!op->timer) {
		free(op);
		return -ENOMEM;
	}

	op_pb.kind = (Vcounter__V1__KvmOpKind)req->kind;
	op_pb.vm_id = (char *)vm->vm_id;
	/* PROBE picks among what the operator allows; every later op runs on
	 * the backend the probe picked. */
	if (req->kind == VCOUNTER__V1__KVM_OP_KIND__KVM_OP_PROBE) {
		for (size_t i = 0; i < vcd->config.n_backends; i++)
			backends_pb[i] = wire_backend_to_pb(vcd->config.backends[i]);
		op_pb.n_backends = vcd->config.n_backends;
		op_pb.backends = backends_pb;
	} else {
		op_pb.backend = wire_backend_to_pb(vm->backend);
	}
	if (req->plan_source) {
		wire_counter_state_to_pb(req->plan_source, &state_pb);
		plan.source = &state_pb.state;
		plan.max_abs_elapsed_ns = vcd->config.max_abs_elapsed_ns;
		plan.tsc_khz_tolerance_ppm = vcd->config.tsc_tolerance_ppm;
		op_pb.plan = &plan;
		op_pb.migration_id = (char *)(req->migration_id ? req->migration_id : "");
		op_pb.generation = req->generation;
	}
	msg.id = op->id;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP;
	msg.kvm_op = &op_pb;
	r = conn_send(conn, &msg);
	if (r < 0) {
		pending_op_free(op);
		return r;
	}
	if (!req->deferred)
		op_arm(vcd, op);
	op->next = conn->ops;
	conn->ops = op;
	conn->n_ops++;
	if (ret_op_id)
		*ret_op_id = op->id;
	return 0;
}

static struct pending_op *op_find(struct vcd *vcd, uint64_t conn_id, uint64_t op_id)
{
	struct vmm_conn *conn = conn_find(vcd, conn_id);

	if (!conn)
		return NULL;
	for (struct pending_op *op = conn->ops; op; op = op->next)
		if (op->id == op_id)
			return op;
	return NULL;
}

int vmm_kvm_op_arm(struct vcd *vcd, uint64_t conn_id, uint64_t op_id)
{
	struct pending_op *op = op_find(vcd, conn_id, op_id);

	if (!op)
		return -ENOENT;
	op_arm(vcd, op);
	return 0;
}

void vmm_kvm_op_cancel(struct vcd *vcd, uint64_t conn_id, uint64_t op_id)
{
	Vcounter__V1__VmmMessage msg = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__KvmOp op_pb = VCOUNTER__V1__KVM_OP__INIT;
	struct pending_op *op = op_find(vcd, conn_id, op_id);

	if (!op)
		return;
	/* The VMM may hold it unrun (sent ahead): tell it the op is void. */
	op_pb.kind = VCOUNTER__V1__KVM_OP_KIND__KVM_OP_WITHDRAW;
	msg.id = op_id;
	msg.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP;
	msg.kvm_op = &op_pb;
	(void)conn_send(op->conn, &msg);
	conn_take_op(op->conn, op_id);
	op->cb(vcd, -ECANCELED, "superseded", NULL, op->userdata);
	pending_op_free(op);
}

static int anchor_from_pb(const Vcounter__V1__HostAnchor *pb, struct host_anchor *ret)
{
	if (!pb || pb->source == VCOUNTER__V1__ANCHOR_SOURCE__ANCHOR_SOURCE_NONE ||
	    (int)pb->source >= (int)_ANCHOR_SOURCE_MAX)
		return -EINVAL;
	ret->tai_ns = pb->tai_ns;
	ret->host_tsc = pb->host_tsc;
	ret->width_ns = pb->width_ns;
	ret->source = (enum anchor_source)pb->source;
	ret->host_tsc_khz = pb->host_tsc_khz;
	return 0;
}

static void handle_kvm_op_result(struct vmm_conn *conn, const Vcounter__V1__VmmMessage *msg)
{
	const Vcounter__V1__KvmOpResult *res = msg->kvm_op_result;
	struct vcd *vcd = conn->vcd;
	_cleanup_free_ struct kvm_op_outcome *out = NULL;
	struct pending_op *op;
	char err[256] = "";
	int r = 0;

	op = conn_take_op(conn, msg->id);
	if (!op) {
		log_warning("vmm pid=%d: result for unknown KVM op %llu ignored", (int)conn->pid,
			    (unsigned long long)msg->id);
		return;
	}
	out = calloc(1, sizeof(*out));
	if (!out) {
		r = -ENOMEM;
		snprintf(err, sizeof(err), "out of memory");
		goto done;
	}
	if (res->error) {
		r = wire_errno_from_error(res->error);
		snprintf(err, sizeof(err), "%s", res->error->message ? res->error->message : "");
		goto done;
	}
	if (wire_backend_from_pb(res->backend, &out->backend) < 0) {
		r = -EINVAL;
		snprintf(err, sizeof(err), "KVM op result names unknown backend %d",
			 (int)res->backend);
		goto done;
	}
	out->offset_control = res->offset_control;
	snprintf(out->detail, sizeof(out->detail), "%s",
		 res->probe_detail ? res->probe_detail : "");
	if (res->state) {
		r = wire_counter_state_from_pb(res->state, &out->state, err, sizeof(err));
		if (r < 0)
			goto done;
		out->has_state = true;
	}
	if (res->apply_anchor) {
		r = anchor_from_pb(res->apply_anchor, &out->apply_anchor);
		if (r < 0) {
			snprintf(err, sizeof(err), "KVM op result has an invalid apply anchor");
			goto done;
		}
		out->has_apply_anchor = true;
	}
	out->apply_ns = res->apply_ns;
	if (res->clock_before) {
		wire_kvmclock_from_pb(res->clock_before, &out->clock_before);
		out->has_clock_before = true;
	}
done:
	op->cb(vcd, r, err, r < 0 ? NULL : out, op->userdata);
	pending_op_free(op);
}

/* ---- registration ---- */

struct register_ctx {
	uint64_t conn_id;
	uint64_t request_id;
	char vm_id[VC_VM_ID_MAX + 1];
};

static void register_probe_done(struct vcd *vcd, int error, const char *msg,
				const struct kvm_op_outcome *out, void *userdata)
{
	_cleanup_free_ struct register_ctx *ctx = userdata;
	Vcounter__V1__VmmMessage reply = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__RegisterVmReply r = VCOUNTER__V1__REGISTER_VM_REPLY__INIT;
	struct vm_entry *vm = vm_registry_find(&vcd->vms, ctx->vm_id);

	if (!vm || vm->conn_id != ctx->conn_id)
		return; /* VMM went away meanwhile; its VMs are gone */
	if (error < 0) {
		log_error("vm=%s step=register: probe failed: %s", vm->vm_id, msg);
		vmm_reply_error(vcd, ctx->conn_id, ctx->request_id, error, "probe failed: %s", msg);
		vm_registry_remove(&vcd->vms, vm);
		return;
	}
	vm->probed = true;
	vm->backend = out->backend;
	vm->offset_control = out->offset_control;
	snprintf(vm->probe_detail, sizeof(vm->probe_detail), "%s", out->detail);
	if (out->has_state) {
		vm->registered_state = malloc(sizeof(*vm->registered_state));
		if (vm->registered_state)
			*vm->registered_state = out->state;
		vm->arch = out->state.arch;
		vm->guest_tsc_khz = out->state.guest_tsc_khz;
		vm->tsc_scaling_ratio = out->state.tsc_scaling_ratio;
		vm->tsc_scaling_frac_bits = out->state.tsc_scaling_frac_bits;
	}
	if (vm->offset_control)
		log_info("vm=%s role=%s vcpus=%u pid=%d step=register: backend=%s guest_tsc_khz=%u",
			 vm->vm_id, vm_role_to_string(vm->role), vm->n_vcpus, (int)vm->pid,
			 backend_kind_to_string(vm->backend), vm->guest_tsc_khz);
	else
		log_warning("vm=%s role=%s vcpus=%u pid=%d step=register: backend=%s: %s",
			    vm->vm_id, vm_role_to_string(vm->role), vm->n_vcpus, (int)vm->pid,
			    backend_kind_to_string(vm->backend), vm->probe_detail);

	r.backend = wire_backend_to_pb(vm->backend);
	r.offset_control = vm->offset_control;
	r.probe_detail = vm->probe_detail;
	r.guest_tsc_khz = vm->guest_tsc_khz;
	reply.id = ctx->request_id;
	reply.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM_REPLY;
	reply.register_vm_reply = &r;
	/* Before the reply: a restart right after it still knows the VM. */
	vm_registry_announce(&vcd->vms, vm);
	vmm_reply(vcd, ctx->conn_id, &reply);
}

/* The fds have all arrived: check them as a whole and probe. */
static void register_complete(struct vmm_conn *conn, uint64_t request_id, struct vm_entry *vm)
{
	struct vcd *vcd = conn->vcd;
	struct register_ctx *ctx;
	char err[256];
	int r;

	vm->complete = true;
	r = fd_check_registration(vm->fds, vm->n_fds, vm->n_vcpus, err, sizeof(err));
	if (r < 0) {
		vm_registry_remove(&vcd->vms, vm);
		conn_send_error(conn, request_id, r, err);
		return;
	}
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		vm_registry_remove(&vcd->vms, vm);
		conn_send_error(conn, request_id, -ENOMEM, "out of memory");
		return;
	}
	ctx->conn_id = conn->id;
	ctx->request_id = request_id;
	snprintf(ctx->vm_id, sizeof(ctx->vm_id), "%s", vm->vm_id);
	r = vmm_kvm_op(vcd, vm,
		       &(struct kvm_op_request){ .kind = VCOUNTER__V1__KVM_OP_KIND__KVM_OP_PROBE },
		       register_probe_done, ctx, NULL);
	if (r < 0) {
		free(ctx);
		vm_registry_remove(&vcd->vms, vm);
		conn_send_error(conn, request_id, r, "cannot ask the VMM to probe its VM");
	}
}

/* How many of `remaining` fds the next RegisterVm must carry: all, or a
 * full message. */
static size_t chunk_fds(size_t remaining)
{
	return remaining < UNIX_FD_MAX_FDS ? remaining : UNIX_FD_MAX_FDS;
}

/* The registration under way on conn, off the connection and its slot (NULL
 * when there is none). */
static struct vm_entry *partial_take(struct vmm_conn *conn)
{
	struct vm_entry *vm = conn->partial;

	if (!vm)
		return NULL;
	conn->partial = NULL;
	conn->partial_timer = event_unref(conn->partial_timer);
	conn->vcd->vmm->n_partials--;
	return vm;
}

static void partial_drop(struct vmm_conn *conn)
{
	vm_entry_free(partial_take(conn));
}

static void partial_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vmm_conn *conn = arg;

	refusal_note(&conn->refusal_log, conn->pid, conn->uid, conn->gid, 0, -ETIMEDOUT,
		     "registration in several messages not finished within its deadline; "
		     "dropped, its fds closed");
	partial_drop(conn);
}

/* Is there a reason a VM with this id and VM fd cannot join the registry? */
static int admissible(struct vmm_conn *conn, const char *vm_id, int vm_fd, char *err,
		      size_t err_size)
{
	struct vcd *vcd = conn->vcd;

	if (vm_registry_find(&vcd->vms, vm_id))
		return errmsg(err, err_size, -EEXIST, "vm_id is already registered");
	/* One KVM VM under two ids would be two handoffs of one counter. */
	for (struct vm_entry *other = vm_registry_first(&vcd->vms); other; other = other->next)
		if (other->n_fds > 0 && fd_check_same_file(vm_fd, other->fds[0]) == 1)
			return errmsg(err, err_size, -EEXIST,
				      "this KVM VM is already registered, as vm_id '%s' (the same "
				      "VM fd)",
				      other->vm_id);
	if (vm_registry_count(&vcd->vms) >= vcd->config.max_vms)
		return errmsg(err, err_size, -ENOSPC,
			      "too many registered VMs (limit %" PRIu32 ", max-vms)",
			      vcd->config.max_vms);
	return 0;
}

/* The last message of a VM in several arrived: into the registry, probed. */
static void partial_finish(struct vmm_conn *conn, uint64_t request_id)
{
	struct vm_entry *vm = partial_take(conn);
	char err[256];
	int r;

	r = admissible(conn, vm->vm_id, vm->fds[0], err, sizeof(err));
	if (r < 0) {
		vm_entry_free(vm);
		conn_send_error(conn, request_id, r, err);
		return;
	}
	vm_registry_add(&conn->vcd->vms, vm);
	register_complete(conn, request_id, vm);
}

/* A RegisterVm that continues a VM too large for one message. Its fds are
 * checked as they come. */
static void handle_register_more(struct vmm_conn *conn, uint64_t request_id,
				 const Vcounter__V1__RegisterVm *req, int *fds, size_t *n_fds)
{
	struct vm_entry *vm = conn->partial;
	char err[256];
	int r;

	if (!vm || strcmp(vm->vm_id, req->vm_id) != 0) {
		conn_send_error(conn, request_id, -ENOENT,
				"no registration of that VM in progress on this connection");
		return;
	}
	if ((int)req->role != (int)vm->role || req->vcpu_count != vm->n_vcpus ||
	    req->first_vcpu != vm->n_fds - 1 || *n_fds != chunk_fds(vm->n_vcpus + 1 - vm->n_fds)) {
		snprintf(err, sizeof(err),
			 "continuation does not fit: expected vCPU %zu onwards of %u, got %zu fds "
			 "from vCPU %u; registration dropped",
			 vm->n_fds - 1, vm->n_vcpus, *n_fds, req->first_vcpu);
		partial_drop(conn);
		conn_send_error(conn, request_id, -EINVAL, err);
		return;
	}
	/* Checked in place, but owned only once they pass. */
	memcpy(vm->fds + vm->n_fds, fds, *n_fds * sizeof(int));
	r = fd_check_slots(vm->fds, vm->n_fds, *n_fds, vm->n_vcpus, err, sizeof(err));
	if (r < 0) {
		partial_drop(conn);
		conn_send_error(conn, request_id, r, err);
		return;
	}
	vm->n_fds += *n_fds;
	*n_fds = 0; /* the VM entry owns them now */
	if (vm->n_fds == 1 + (size_t)vm->n_vcpus)
		partial_finish(conn, request_id);
	else
		vmm_reply_ok(conn->vcd, conn->id, request_id);
}

/* The first of several messages: held on the connection, with a deadline
 * and within the daemon's few slots for such registrations. */
static int partial_start(struct vmm_conn *conn, struct vm_entry *vm, char *err, size_t err_size)
{
	struct vmm_server *srv = conn->vcd->vmm;
	const struct timeval tv = {
		.tv_sec = VCD_PARTIAL_REGISTRATION_TIMEOUT_MS / 1000,
		.tv_usec = (VCD_PARTIAL_REGISTRATION_TIMEOUT_MS % 1000) * 1000,
	};

	if (conn->partial)
		return errmsg(err, err_size, -EBUSY,
			      "a registration in several messages is already under way on this "
			      "connection (vm_id '%s')",
			      conn->partial->vm_id);
	if (srv->n_partials >= VCD_MAX_PARTIAL_REGISTRATIONS)
		return errmsg(err, err_size, -EBUSY,
			      "too many registrations in several messages under way (limit %d)",
			      VCD_MAX_PARTIAL_REGISTRATIONS);
	conn->partial_timer = evtimer_new(conn->vcd->base, partial_timeout_cb, conn);
	if (!conn->partial_timer)
		return errmsg(err, err_size, -ENOMEM, "out of memory");
	evtimer_add(conn->partial_timer, &tv);
	conn->partial = vm;
	srv->n_partials++;
	return 0;
}

static void handle_register(struct vmm_conn *conn, uint64_t request_id,
			    const Vcounter__V1__RegisterVm *req, int *fds, size_t *n_fds)
{
	struct vcd *vcd = conn->vcd;
	struct vm_entry *vm;
	enum vm_role role;
	char err[256];
	int r;

	if (!vm_id_is_valid(req->vm_id)) {
		conn_send_error(conn, request_id, -EINVAL,
				"vm_id must be 1-63 characters of [A-Za-z0-9._:-]");
		return;
	}
	if (wire_role_from_pb(req->role, &role) < 0 || role == VM_ROLE_NONE) {
		conn_send_error(conn, request_id, -EINVAL, "role must be source or target");
		return;
	}
	if (req->vcpu_count == 0 || req->vcpu_count > VC_MAX_VCPUS) {
		snprintf(err, sizeof(err), "vcpu_count %u out of range 1..%u", req->vcpu_count,
			 VC_MAX_VCPUS);
		conn_send_error(conn, request_id, -EINVAL, err);
		return;
	}
	if (req->first_vcpu > 0) {
		handle_register_more(conn, request_id, req, fds, n_fds);
		return;
	}
	/* The first message carries the VM fd and as many vCPUs as fit: all of
	 * them, or a full message (anything shorter is fds missing). */
	if (*n_fds != chunk_fds(1 + (size_t)req->vcpu_count)) {
		snprintf(err, sizeof(err), "%zu fds for a VM with %u vCPUs (expected %zu)", *n_fds,
			 req->vcpu_count, chunk_fds(1 + (size_t)req->vcpu_count));
		conn_send_error(conn, request_id, -EINVAL, err);
		return;
	}
	r = admissible(conn, req->vm_id, fds[0], err, sizeof(err));
	if (r == 0 && *n_fds < 1 + (size_t)req->vcpu_count)
		r = fd_check_slots(fds, 0, *n_fds, req->vcpu_count, err, sizeof(err));
	if (r < 0) {
		conn_send_error(conn, request_id, r, err);
		return;
	}

	vm = vm_entry_new(req->vm_id, req->vcpu_count, fds, *n_fds);
	if (!vm) {
		conn_send_error(conn, request_id, -ENOMEM, "out of memory");
		return;
	}
	*n_fds = 0; /* the VM entry owns them now */
	vm->role = role;
	vm->conn_id = conn->id;
	vm->pid = conn->pid;
	vm->uid = conn->uid;
	if (vm->n_fds == 1 + (size_t)vm->n_vcpus) {
		vm_registry_add(&vcd->vms, vm);
		register_complete(conn, request_id, vm);
		return;
	}
	r = partial_start(conn, vm, err, sizeof(err));
	if (r < 0) {
		vm_entry_free(vm);
		conn_send_error(conn, request_id, r, err);
		return;
	}
	vmm_reply_ok(vcd, conn->id, request_id);
}

static void unregister_vm(struct vcd *vcd, struct vm_entry *vm, const char *why)
{
	log_info("vm=%s step=unregister: %s", vm->vm_id, why);
	vm_registry_remove(&vcd->vms, vm);
}

void vmm_drop_vm(struct vcd *vcd, struct vm_entry *vm, const char *why)
{
	unregister_vm(vcd, vm, why);
}

static void handle_unregister(struct vmm_conn *conn, uint64_t request_id,
			      const Vcounter__V1__UnregisterVm *req)
{
	struct vm_entry *vm = req->vm_id ? vm_registry_find(&conn->vcd->vms, req->vm_id) : NULL;

	if (!vm) {
		conn_send_error(conn, request_id, -ENOENT, "no such VM registered");
		return;
	}
	if (vm->conn_id != conn->id) {
		conn_send_error(conn, request_id, -EPERM,
				"VM was registered by another connection");
		return;
	}
	unregister_vm(conn->vcd, vm, "unregistered by its VMM");
	vmm_reply_ok(conn->vcd, conn->id, request_id);
}

/* A VM recovered from the fd store (fdstore.h) goes back to the process
 * that registered it: the same pid and uid, so no other VMM of that user
 * can take over its fds. */
static void handle_attach(struct vmm_conn *conn, uint64_t request_id,
			  const Vcounter__V1__AttachVm *req)
{
	Vcounter__V1__VmmMessage reply = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__RegisterVmReply r = VCOUNTER__V1__REGISTER_VM_REPLY__INIT;
	struct vm_entry *vm = req->vm_id ? vm_registry_find(&conn->vcd->vms, req->vm_id) : NULL;

	if (!vm || !vm->probed) {
		conn_send_error(conn, request_id, -ENOENT, "no such VM registered");
		return;
	}
	if (vm->pid != conn->pid || vm->uid != conn->uid) {
		log_warning("vm=%s step=reattach: refused: pid=%d uid=%u, it was registered by "
			    "pid=%d uid=%u",
			    vm->vm_id, (int)conn->pid, (unsigned)conn->uid, (int)vm->pid,
			    (unsigned)vm->uid);
		conn_send_error(conn, request_id, -EPERM, "VM was registered by another process");
		return;
	}
	if (vm->conn_id != conn->id && conn_find(conn->vcd, vm->conn_id)) {
		conn_send_error(conn, request_id, -EBUSY,
				"VM is attached to another connection of this process");
		return;
	}
	if (vm->conn_id != conn->id)
		log_info("vm=%s pid=%d step=reattach: reattached to its VMM", vm->vm_id,
			 (int)conn->pid);
	vm->conn_id = conn->id;
	r.backend = wire_backend_to_pb(vm->backend);
	r.offset_control = vm->offset_control;
	r.probe_detail = vm->probe_detail;
	r.guest_tsc_khz = vm->guest_tsc_khz;
	reply.id = request_id;
	reply.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM_REPLY;
	reply.register_vm_reply = &r;
	conn_send_or_drop(conn, &reply);
}

static void handle_status(struct vmm_conn *conn, uint64_t request_id)
{
	Vcounter__V1__VmmMessage reply = VCOUNTER__V1__VMM_MESSAGE__INIT;
	Vcounter__V1__StatusReply st = VCOUNTER__V1__STATUS_REPLY__INIT;
	Vcounter__V1__SyncError sync_pb = VCOUNTER__V1__SYNC_ERROR__INIT;
	_cleanup_free_ Vcounter__V1__VmStatus *vms = NULL;
	_cleanup_free_ Vcounter__V1__VmStatus **vm_ptrs = NULL;
	struct sync_error sync;
	char why[256];
	size_t n = 0, n_vms;
	int r;

	r = sync_source_read(conn->vcd->sync, &sync, why, sizeof(why));
	if (r == 0 || r == -ENODATA) {
		/* A source that does not answer: unbounded. */
		sync.unsynced |= r == -ENODATA;
		wire_sync_error_to_pb(&sync, &sync_pb);
		st.sync = &sync_pb;
	}
	st.vm_count = (uint32_t)vm_registry_count(&conn->vcd->vms);
	st.migration_count = (uint32_t)conn->vcd->vmm->mh->count(conn->vcd);
	st.version = (char *)VCOUNTER_VERSION;
	/* Only VMs whose probe finished: before that there is no backend. A
	 * full daemon (VCD_MAX_VMS) stays well under VC_MAX_FRAME_BYTES. */
	n_vms = vm_registry_count(&conn->vcd->vms);
	vms = calloc(n_vms ? n_vms : 1, sizeof(*vms));
	vm_ptrs = calloc(n_vms ? n_vms : 1, sizeof(*vm_ptrs));
	if (vms && vm_ptrs) {
		for (struct vm_entry *vm = vm_registry_first(&conn->vcd->vms); vm && n < n_vms;
		     vm = vm->next) {
			if (!vm->probed)
				continue;
			vcounter__v1__vm_status__init(&vms[n]);
			vms[n].vm_id = vm->vm_id;
			vms[n].role = vm->role == VM_ROLE_SOURCE ? VCOUNTER__V1__ROLE__ROLE_SOURCE
								 : VCOUNTER__V1__ROLE__ROLE_TARGET;
			vms[n].vcpu_count = vm->n_vcpus;
			vms[n].backend = wire_backend_to_pb(vm->backend);
			vms[n].offset_control = vm->offset_control;
			vms[n].probe_detail = vm->probe_detail;
			vms[n].guest_tsc_khz = vm->guest_tsc_khz;
			vm_ptrs[n] = &vms[n];
			n++;
		}
		st.n_vms = n;
		st.vms = vm_ptrs;
	}
	reply.id = request_id;
	reply.body_case = VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS_REPLY;
	reply.status_reply = &st;
	conn_send_or_drop(conn, &reply);
}

/* Every message must be a request we serve, or a KVM op result. */
static void dispatch(struct vmm_conn *conn, const Vcounter__V1__VmmMessage *msg, int *fds,
		     size_t *n_fds)
{
	struct vcd *vcd = conn->vcd;
	uint64_t id = msg->id;

	if (*n_fds > 0 && msg->body_case != VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM) {
		conn_send_error(conn, id, -EINVAL,
				"file descriptors are only accepted with RegisterVm");
		return;
	}

	switch (msg->body_case) {
	case VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM:
		handle_register(conn, id, msg->register_vm, fds, n_fds);
		return;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_UNREGISTER_VM:
		handle_unregister(conn, id, msg->unregister_vm);
		return;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_MIGRATE_OUT:
		vcd->vmm->mh->migrate_out(vcd, conn->id, id, msg->migrate_out->vm_id,
					  msg->migrate_out->peer_address,
					  msg->migrate_out->peer_name);
		return;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_REPORT_PAUSED:
		vcd->vmm->mh->report_paused(vcd, conn->id, id, msg->report_paused->vm_id,
					    msg->report_paused->migration_id);
		return;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY:
		vcd->vmm->mh->apply(vcd, conn->id, id, msg->apply->vm_id, msg->apply->migration_id);
		return;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_STATUS:
		handle_status(conn, id);
		return;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_ATTACH_VM:
		handle_attach(conn, id, msg->attach_vm);
		return;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP_RESULT:
		handle_kvm_op_result(conn, msg);
		return;
	default: /* a reply; wire_vmm_unpack refused a body it does not know */
		conn_send_error(conn, id, -ENOMSG, "message type is a reply, not a request");
		return;
	}
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vmm_conn *conn = arg;
	struct vmm_server *srv = conn->vcd->vmm;
	Vcounter__V1__VmmMessage *msg;
	int fds[UNIX_FD_MAX_FDS];
	const uint8_t *payload;
	size_t n_fds = 0, payload_len;
	uint64_t id = 0;
	ssize_t n;
	int r;

	n = unix_fd_recv(conn->fd, srv->buf, sizeof(srv->buf), fds, &n_fds);
	if (n == 0) {
		conn_close(conn, "VMM closed the connection");
		return;
	}
	if (n == -EAGAIN || n == -EINTR)
		return;
	if (n == -EMSGSIZE) {
		conn_send_error(conn, 0, -EMSGSIZE, "message longer than the maximum frame size");
		return;
	}
	if (n == -EMFILE || n == -ENFILE) {
		conn_send_error(conn, 0, (int)n,
				n == -EMFILE
					? "vcounterd is out of file descriptors (its "
					  "RLIMIT_NOFILE): the ones sent were closed; try again "
					  "later"
					: "the system is out of file descriptors (fs.file-max): "
					  "the ones sent were closed; try again later");
		return;
	}
	if (n == -ECHRNG) {
		conn_send_error(conn, 0, -E2BIG,
				"too many file descriptors (control data truncated); "
				"all were closed");
		return;
	}
	if (n == -EBADMSG) {
		conn_send_error(conn, 0, -EBADMSG, "unexpected control message");
		return;
	}
	if (n < 0) {
		log_debug_errno((int)n, "vmm pid=%d: receive failed", (int)conn->pid);
		conn_close(conn, "receive failed");
		return;
	}

	r = frame_parse_datagram(srv->buf, (size_t)n, VC_MAX_FRAME_BYTES, &payload, &payload_len);
	if (r < 0) {
		unix_fd_close_all(fds, n_fds);
		conn_send_error(conn, 0, r,
				r == -EMSGSIZE ? "frame length over the maximum"
					       : "truncated or malformed frame");
		return;
	}
	r = wire_vmm_unpack(payload, payload_len, &msg, &id);
	if (r < 0) {
		unix_fd_close_all(fds, n_fds);
		if (r == -ENOMSG)
			conn_send_error(conn, id, r, "unknown or missing message type");
		else
			conn_send_error(conn, 0, -EBADMSG, "message is not a valid VmmMessage");
		return;
	}
	dispatch(conn, msg, fds, &n_fds);
	/* Whatever fds the handler did not take are closed here. */
	unix_fd_close_all(fds, n_fds);
	wire_vmm_free(msg);
}

static void conn_close(struct vmm_conn *conn, const char *why)
{
	struct vcd *vcd = conn->vcd;
	struct vmm_server *srv = vcd->vmm;
	struct vm_entry *vm, *next;
	struct pending_op *op;

	for (struct vmm_conn **p = &srv->conns; *p; p = &(*p)->next) {
		if (*p == conn) {
			*p = conn->next;
			srv->n_conns--;
			break;
		}
	}
	log_debug("vmm conn=%llu pid=%d closed: %s", (unsigned long long)conn->id, (int)conn->pid,
		  why);
	/* The conn is unlinked first, so callbacks find it gone. */
	while ((op = conn->ops)) {
		conn->ops = op->next;
		op->cb(vcd, -ECONNRESET, "the VMM disconnected", NULL, op->userdata);
		pending_op_free(op);
	}
	for (vm = vm_registry_first(&vcd->vms); vm; vm = next) {
		next = vm->next;
		if (vm->conn_id == conn->id) {
			unregister_vm(vcd, vm, "its VMM disconnected");
			next = vm_registry_first(&vcd->vms); /* the list changed under us */
		}
	}
	partial_drop(conn);
	conn->exit_ev = pidwatch_unref(conn->exit_ev);
	conn->ev = event_unref(conn->ev);
	close(conn->fd);
	free(conn);
}

/* The connecting process exited: its VMs cannot be run any more (KVM takes
 * VM ioctls only from their creator's mm), and the credentials the
 * connection carries are no longer anyone's. */
static void conn_exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vmm_conn *conn = arg;
	char why[96];

	snprintf(why, sizeof(why),
		 "its process (pid %d) exited; whoever else holds the socket "
		 "does not keep its VMs",
		 (int)conn->pid);
	log_info("vmm conn=%llu pid=%d: %s", (unsigned long long)conn->id, (int)conn->pid, why);
	conn_close(conn, why);
}

static bool conn_allowed(const struct vcd_config *cfg, uid_t uid, gid_t gid)
{
	for (size_t i = 0; i < cfg->n_allowed_uids; i++)
		if (cfg->allowed_uids[i] == uid)
			return true;
	for (size_t i = 0; i < cfg->n_allowed_gids; i++)
		if (cfg->allowed_gids[i] == gid)
			return true;
	return false;
}

static void accept_cb(evutil_socket_t fd, struct sockaddr *sa, int sa_len, void *arg)
{
	struct vcd *vcd = arg;
	struct vmm_server *srv = vcd->vmm;
	struct vmm_conn *conn;
	_cleanup_close_ int cfd = fd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int r;

	r = unix_fd_peer_cred(cfd, &pid, &uid, &gid);
	if (r < 0) {
		log_warning_errno(r, "VMM connection without credentials refused");
		return;
	}
	if (!conn_allowed(&vcd->config, uid, gid)) {
		refusal_note(&srv->accept_refusal_log, pid, uid, gid, 0, -EPERM,
			     "VMM connection refused: uid/gid not allowed to use vcounterd");
		send_error(cfd, 0, -EPERM, "uid/gid not allowed to use vcounterd");
		return;
	}
	if (srv->n_conns >= vcd->config.max_vmm_conns) {
		char text[96];

		snprintf(text, sizeof(text),
			 "too many VMM connections (limit %" PRIu32 ", max-connections)",
			 vcd->config.max_vmm_conns);
		refusal_note(&srv->accept_refusal_log, pid, uid, gid, 0, -ENOSPC, text);
		send_error(cfd, 0, -ENOSPC, text);
		return;
	}
	conn = calloc(1, sizeof(*conn));
	if (!conn)
		return;
	conn->vcd = vcd;
	conn->id = ++srv->next_conn_id;
	conn->refusal_log = RATELIMIT_INIT(VMM_REFUSAL_LOG_INTERVAL_NS, VMM_REFUSAL_LOG_BURST);
	conn->pid = pid;
	conn->uid = uid;
	conn->gid = gid;
	conn->ev = event_new(vcd->base, cfd, EV_READ | EV_PERSIST, conn_read_cb, conn);
	if (!conn->ev) {
		free(conn);
		return;
	}
	r = pidwatch_new(vcd->base, pid, conn_exit_cb, conn, &conn->exit_ev);
	if (r == -ESRCH) {
		log_info("VMM connection from pid=%d refused: that process has exited", (int)pid);
		conn->ev = event_unref(conn->ev);
		free(conn);
		return;
	}
	if (r < 0)
		log_debug_errno(r, "vmm pid=%d: cannot watch the process", (int)pid);
	conn->fd = TAKE_FD(cfd);
	event_add(conn->ev, NULL);
	conn->next = srv->conns;
	srv->conns = conn;
	srv->n_conns++;
	log_debug("vmm conn=%llu pid=%d uid=%u connected", (unsigned long long)conn->id, (int)pid,
		  (unsigned)uid);
}

int vmm_server_start(struct vcd *vcd, int listen_fd, const struct vmm_migration_handlers *mh)
{
	struct vmm_server *srv = calloc(1, sizeof(*srv));
	int r;

	if (!srv)
		return -ENOMEM;
	srv->listen_fd = listen_fd;
	srv->mh = mh;
	srv->accept_refusal_log =
		RATELIMIT_INIT(VMM_REFUSAL_LOG_INTERVAL_NS, VMM_REFUSAL_LOG_BURST);
	/* The fd stays the server's: the service manager may hold it too. */
	r = listener_new(vcd->base, METRICS_SOCKET_VMM, listen_fd, false, accept_cb, vcd,
			 &srv->listener);
	if (r < 0) {
		free(srv);
		return r;
	}
	vcd->vmm = srv;
	return 0;
}

void vmm_server_stop(struct vcd *vcd)
{
	struct vmm_server *srv = vcd->vmm;

	if (!srv)
		return;
	while (srv->conns)
		conn_close(srv->conns, "daemon stopping");
	/* Detached VMs (recovered, their VMMs not back yet): the fd store
	 * keeps them for the next run. */
	vm_registry_clear(&vcd->vms);
	srv->listener = listener_free(srv->listener);
	close(srv->listen_fd);
	free(srv);
	vcd->vmm = NULL;
}
