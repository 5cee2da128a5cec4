/* fuzz_peer_frame - libFuzzer target: a peer-link payload through
 * wire_peer_unpack and the validating conversion of every body that carries
 * a CounterState or a MigrationReport (Prepare, FinalState, Applied). */
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Vcounter__V1__PeerMessage *msg = NULL;
	struct counter_state state;
	struct migration_report report;
	char err[256];

	if (wire_peer_unpack(data, size, &msg, NULL) < 0)
		return 0;
	switch (msg->body_case) {
	case VCOUNTER__V1__PEER_MESSAGE__BODY_PREPARE:
		if (msg->prepare->state)
			(void)wire_counter_state_from_pb(msg->prepare->state, &state, err,
							 sizeof(err));
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_FINAL_STATE:
		if (msg->final_state->state)
			(void)wire_counter_state_from_pb(msg->final_state->state, &state, err,
							 sizeof(err));
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_APPLIED:
		if (msg->applied->report)
			(void)wire_report_from_pb(msg->applied->report, &report, err, sizeof(err));
		break;
	case VCOUNTER__V1__PEER_MESSAGE__BODY_ERROR:
		(void)wire_errno_from_error(msg->error);
		break;
	default:
		break;
	}
	wire_peer_free(msg);
	return 0;
}
