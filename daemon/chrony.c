/* chrony.c - chronyd's tracking request and reply, encoded and decoded here
 * from the layout in chrony's candm.h (protocol version 6). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "byteorder.h"
#include "chrony.h"

#define PROTO_VERSION	   6
#define PKT_TYPE_REQUEST   1
#define PKT_TYPE_REPLY	   2
#define REQ_TRACKING	   33
#define RPY_TRACKING	   5
#define STT_SUCCESS	   0
#define STT_UNAUTH	   2
#define FLOAT_EXP_BITS	   7
#define FLOAT_COEF_BITS	   25
#define REPLY_HEADER_BYTES 28 /* version .. pad5 (CMD_Reply) */

/* Byte offsets of the fields read, in a reply. */
enum {
	OFF_VERSION = 0,
	OFF_PKT_TYPE = 1,
	OFF_COMMAND = 4,
	OFF_REPLY = 6,
	OFF_STATUS = 8,
	OFF_SEQUENCE = 16,
	/* RPY_Tracking: ref_id, IPAddr (16 + 2 + 2), stratum, leap_status,
	 * ref_time (3 x u32), then nine Floats. */
	OFF_REF_ID = REPLY_HEADER_BYTES,
	OFF_STRATUM = OFF_REF_ID + 4 + 20,
	OFF_LEAP = OFF_STRATUM + 2,
	OFF_FLOATS = OFF_LEAP + 2 + 12,
};

_Static_assert(OFF_FLOATS + 9 * 4 == CHRONY_TRACKING_LEN, "RPY_Tracking layout");

void chrony_tracking_request(uint32_t seq, uint8_t buf[CHRONY_TRACKING_LEN])
{
	/* CMD_Request: version, pkt_type, res1, res2, command, attempt,
	 * sequence, pad1, pad2; REQ_Null has no data; the rest is padding. */
	memset(buf, 0, CHRONY_TRACKING_LEN);
	buf[0] = PROTO_VERSION;
	buf[1] = PKT_TYPE_REQUEST;
	be16_put(buf + 4, REQ_TRACKING);
	be32_put(buf + 8, seq);
}

double chrony_float_decode(uint32_t x)
{
	int32_t exp = (int32_t)(x >> FLOAT_COEF_BITS);
	int32_t coef = (int32_t)(x & ((UINT32_C(1) << FLOAT_COEF_BITS) - 1));

	if (exp >= 1 << (FLOAT_EXP_BITS - 1))
		exp -= 1 << FLOAT_EXP_BITS;
	if (coef >= 1 << (FLOAT_COEF_BITS - 1))
		coef -= 1 << FLOAT_COEF_BITS;
	return ldexp(coef, exp - FLOAT_COEF_BITS);
}

int chrony_tracking_parse(const uint8_t *buf, size_t len, uint32_t seq, struct chrony_tracking *ret)
{
	double f[9];
	uint16_t status;

	/* A failure status comes in a reply with no data (RPY_NULL): check the
	 * header first, the length of the data only for a success. */
	if (len < REPLY_HEADER_BYTES || buf[OFF_VERSION] != PROTO_VERSION ||
	    buf[OFF_PKT_TYPE] != PKT_TYPE_REPLY || be16_get(buf + OFF_COMMAND) != REQ_TRACKING)
		return -EBADMSG;
	if (be32_get(buf + OFF_SEQUENCE) != seq)
		return -ESRCH;
	status = be16_get(buf + OFF_STATUS);
	if (status == STT_UNAUTH)
		return -EACCES;
	if (status != STT_SUCCESS)
		return -EPROTO;
	if (len < CHRONY_TRACKING_LEN || be16_get(buf + OFF_REPLY) != RPY_TRACKING)
		return -EBADMSG;

	for (int i = 0; i < 9; i++)
		f[i] = chrony_float_decode(be32_get(buf + OFF_FLOATS + 4 * i));
	*ret = (struct chrony_tracking){
		.ref_id = be32_get(buf + OFF_REF_ID),
		.stratum = be16_get(buf + OFF_STRATUM),
		.leap_status = be16_get(buf + OFF_LEAP),
		.current_correction = f[0],
		.last_offset = f[1],
		.rms_offset = f[2],
		.freq_ppm = f[3],
		.resid_freq_ppm = f[4],
		.skew_ppm = f[5],
		.root_delay = f[6],
		.root_dispersion = f[7],
		.last_update_interval = f[8],
	};
	return 0;
}

uint64_t chrony_tracking_bound_ns(const struct chrony_tracking *t, bool *ret_unsynced)
{
	double s = fabs(t->current_correction) + t->root_dispersion + t->root_delay / 2;

	*ret_unsynced = t->leap_status == CHRONY_LEAP_UNSYNCHRONISED ||
			!isfinite(t->root_dispersion) || !isfinite(t->root_delay) ||
			t->root_dispersion < 0 || t->root_delay < 0 || !isfinite(s);
	if (*ret_unsynced)
		return UINT64_MAX;
	/* 2^64 ns is 584 years: anything near it means nothing anyway. */
	if (s * 1e9 >= 18446744073709549568.0)
		return UINT64_MAX;
	return (uint64_t)ceil(s * 1e9);
}
