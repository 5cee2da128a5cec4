/* fuzz_vmm_frame - libFuzzer target: one VMM socket datagram as vmm_server
 * takes it. frame_parse_datagram, wire_vmm_unpack, the validating
 * conversions of every CounterState and MigrationReport a VmmMessage can
 * carry, and the fd checks on the fds "attached" to it.
 *
 * Fds: the first input byte picks 0-7 fds from a fixed set of real ones of
 * different kinds (pipe ends, /dev/null, an eventfd, a socket, a memfd; no
 * KVM fd, so the checks' accepting paths stay unreached), the next bytes
 * pick which; they go through fd_check_classify and, for a RegisterVm,
 * fd_check_registration with the message's vcpu_count. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd_check.h"
#include "frame.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_POOL 7
static int pool[N_POOL];

static void pool_open(void)
{
	int p[2], sv[2];

	if (pool[0])
		return;
	if (pipe2(p, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		__builtin_trap();
	pool[0] = p[0];
	pool[1] = p[1];
	pool[2] = open("/dev/null", O_RDWR | O_CLOEXEC);
	pool[3] = eventfd(0, EFD_CLOEXEC);
	pool[4] = sv[0];
	pool[5] = memfd_create("fuzz", MFD_CLOEXEC);
	pool[6] = dup(pool[2]); /* the same open file twice */
				/* Kept open for the life of the process: libFuzzer's leak check is
	 * about memory, and every input sees the same fds. */
}

static void check_state(const Vcounter__V1__CounterState *pb)
{
	struct counter_state state;
	char err[256];

	if (pb)
		(void)wire_counter_state_from_pb(pb, &state, err, sizeof(err));
}

static void check_report(const Vcounter__V1__MigrationReport *pb)
{
	struct migration_report report;
	char err[256];

	if (pb)
		(void)wire_report_from_pb(pb, &report, err, sizeof(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Vcounter__V1__VmmMessage *msg = NULL;
	const uint8_t *payload;
	size_t payload_len, n_fds;
	int fds[8];
	char err[512];

	pool_open();
	if (size < 1)
		return 0;
	n_fds = data[0] & 7;
	data++;
	size--;
	if (size < n_fds)
		return 0;
	for (size_t i = 0; i < n_fds; i++) {
		enum fd_kind kind;
		uint32_t vcpu;

		fds[i] = pool[data[i] % N_POOL];
		(void)fd_check_classify(fds[i], &kind, &vcpu);
	}
	data += n_fds;
	size -= n_fds;

	if (frame_parse_datagram(data, size, VC_MAX_FRAME_BYTES, &payload, &payload_len) < 0)
		return 0;
	if (wire_vmm_unpack(payload, payload_len, &msg, NULL) < 0)
		return 0;
	switch (msg->body_case) {
	case VCOUNTER__V1__VMM_MESSAGE__BODY_REGISTER_VM:
		(void)fd_check_registration(fds, n_fds, msg->register_vm->vcpu_count, err,
					    sizeof(err));
		break;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP:
		if (msg->kvm_op->plan)
			check_state(msg->kvm_op->plan->source);
		break;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_KVM_OP_RESULT:
		check_state(msg->kvm_op_result->state);
		(void)wire_errno_from_error(msg->kvm_op_result->error);
		break;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_APPLY_REPLY:
		check_report(msg->apply_reply->report);
		break;
	case VCOUNTER__V1__VMM_MESSAGE__BODY_ERROR:
		(void)wire_errno_from_error(msg->error);
		break;
	default:
		break;
	}
	wire_vmm_free(msg);
	return 0;
}
