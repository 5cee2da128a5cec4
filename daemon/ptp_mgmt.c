/* ptp_mgmt.c - PTP management GETs and their answers, encoded and decoded
 * here from IEEE 1588-2008 (common header 13.3, management message 15.4,
 * management TLV 15.5) and linuxptp's TIME_STATUS_NP and PORT_PROPERTIES_NP
 * (tlv.h). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "byteorder.h"
#include "ptp_mgmt.h"

#define MSG_MANAGEMENT		    0x0d
#define PTP_VERSION		    2
#define CTL_MANAGEMENT		    0x04
#define ACTION_GET		    0
#define ACTION_RESPONSE		    2
#define TLV_MANAGEMENT		    0x0001
#define TLV_MANAGEMENT_ERROR_STATUS 0x0002
#define HEADER_BYTES		    34
#define TLV_AT			    (HEADER_BYTES + 14) /* after the management body */
#define DATA_AT			    (TLV_AT + 6)	/* type, length, managementId */
#define TIME_STATUS_NP_BYTES	    50
#define CURRENT_DATA_SET_BYTES	    18
#define PORT_PROPERTIES_NP_BYTES    13 /* before the interface's name */

static int64_t get_s64(const uint8_t *p)
{
	uint64_t v = be64_get(p);

	return v <= INT64_MAX ? (int64_t)v : -(int64_t)~v - 1;
}

void ptp_mgmt_get(uint16_t id, uint16_t port, uint16_t seq, uint8_t buf[PTP_MGMT_GET_LEN])
{
	memset(buf, 0, PTP_MGMT_GET_LEN);
	buf[0] = MSG_MANAGEMENT;
	buf[1] = PTP_VERSION;
	be16_put(buf + 2, PTP_MGMT_GET_LEN);
	/* domainNumber 0, flags 0, correction 0; sourcePortIdentity: a zero
	 * clockIdentity (not a clock) and the caller's port number. */
	be16_put(buf + 28, port);
	be16_put(buf + 30, seq);
	buf[32] = CTL_MANAGEMENT;
	buf[33] = 0x7f;
	/* targetPortIdentity: every clock, every port; boundary hops 0. */
	memset(buf + HEADER_BYTES, 0xff, 10);
	buf[HEADER_BYTES + 12] = ACTION_GET;
	be16_put(buf + TLV_AT, TLV_MANAGEMENT);
	be16_put(buf + TLV_AT + 2, 2); /* an empty GET: the id alone */
	be16_put(buf + TLV_AT + 4, id);
}

int ptp_mgmt_reply_id(const uint8_t *buf, size_t len, uint16_t *ret_id, uint16_t *ret_seq)
{
	uint16_t tlv_type, tlv_len;

	if (len < DATA_AT || (buf[0] & 0x0f) != MSG_MANAGEMENT || (buf[1] & 0x0f) != PTP_VERSION ||
	    be16_get(buf + 2) > len || be16_get(buf + 2) < DATA_AT ||
	    (buf[HEADER_BYTES + 12] & 0x0f) != ACTION_RESPONSE)
		return -EBADMSG;
	tlv_type = be16_get(buf + TLV_AT);
	tlv_len = be16_get(buf + TLV_AT + 2);
	if (tlv_len < 2 || TLV_AT + 4 + (size_t)tlv_len > be16_get(buf + 2))
		return -EBADMSG;
	*ret_seq = be16_get(buf + 30);
	if (tlv_type == TLV_MANAGEMENT_ERROR_STATUS) {
		/* managementErrorId, then the managementId it is about. */
		if (tlv_len < 4)
			return -EBADMSG;
		*ret_id = be16_get(buf + TLV_AT + 6);
		return -EPROTO;
	}
	if (tlv_type != TLV_MANAGEMENT)
		return -EBADMSG;
	*ret_id = be16_get(buf + TLV_AT + 4);
	return 0;
}

/* The data of a reply to id, at least n bytes of it. */
static const uint8_t *reply_data(const uint8_t *buf, size_t len, uint16_t want, size_t n)
{
	uint16_t id, seq;

	if (ptp_mgmt_reply_id(buf, len, &id, &seq) < 0 || id != want ||
	    be16_get(buf + TLV_AT + 2) < 2 + n)
		return NULL;
	return buf + DATA_AT;
}

int ptp_mgmt_time_status(const uint8_t *buf, size_t len, struct ptp_time_status *ret)
{
	const uint8_t *d = reply_data(buf, len, PTP_MGMT_TIME_STATUS_NP, TIME_STATUS_NP_BYTES);

	if (!d)
		return -EBADMSG;
	/* master_offset, ingress_time, cumulativeScaledRateOffset,
	 * scaledLastGmPhaseChange, gmTimeBaseIndicator, lastGmPhaseChange
	 * (ScaledNs, 12 bytes), gmPresent, gmIdentity. */
	*ret = (struct ptp_time_status){
		.master_offset_ns = get_s64(d),
		.ingress_time_ns = get_s64(d + 8),
		.gm_present = be32_get(d + 38) != 0,
	};
	memcpy(ret->gm_identity, d + 42, sizeof(ret->gm_identity));
	return 0;
}

int ptp_mgmt_current_ds(const uint8_t *buf, size_t len, struct ptp_current_ds *ret)
{
	const uint8_t *d = reply_data(buf, len, PTP_MGMT_CURRENT_DATA_SET, CURRENT_DATA_SET_BYTES);

	if (!d)
		return -EBADMSG;
	/* TimeInterval: ns scaled by 2^16 (1588 section 5.3.2). */
	*ret = (struct ptp_current_ds){
		.steps_removed = be16_get(d),
		.offset_from_master_ns = get_s64(d + 2) / 65536,
		.mean_path_delay_ns = get_s64(d + 10) / 65536,
	};
	return 0;
}

int ptp_mgmt_port_props(const uint8_t *buf, size_t len, struct ptp_port_props *ret)
{
	const uint8_t *d =
		reply_data(buf, len, PTP_MGMT_PORT_PROPERTIES_NP, PORT_PROPERTIES_NP_BYTES);
	size_t name_len, data_len;

	if (!d)
		return -EBADMSG;
	/* portIdentity (clockIdentity, portNumber), port_state, timestamping,
	 * interface (PTPText: a length, then that many bytes). */
	data_len = (size_t)be16_get(buf + TLV_AT + 2) - 2;
	name_len = d[12];
	if (PORT_PROPERTIES_NP_BYTES + name_len > data_len)
		return -EBADMSG;
	*ret = (struct ptp_port_props){
		.port_number = be16_get(d + 8),
		.port_state = d[10],
		.timestamping = d[11],
	};
	if (name_len > sizeof(ret->interface) - 1)
		name_len = sizeof(ret->interface) - 1;
	/* It ends up in a log line: nothing that is not printable. */
	for (size_t i = 0; i < name_len; i++)
		ret->interface[i] = d[13 + i] >= 0x20 && d[13 + i] < 0x7f ? (char)d[13 + i] : '?';
	return 0;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

uint64_t ptp_mgmt_bound_ns(const struct ptp_time_status *ts, const struct ptp_current_ds *ds,
			   int64_t now_ns, double drift_ppm, bool *ret_unsynced)
{
	uint64_t offset, age;
	double growth_ns;

	*ret_unsynced = !ts->gm_present || ds->mean_path_delay_ns < 0;
	if (*ret_unsynced)
		return UINT64_MAX;
	offset = ts->master_offset_ns < 0 ? -(uint64_t)ts->master_offset_ns
					  : (uint64_t)ts->master_offset_ns;
	/* A Sync from the future (the clock stepped back since) ages nothing. */
	age = now_ns > ts->ingress_time_ns ? (uint64_t)now_ns - (uint64_t)ts->ingress_time_ns : 0;
	growth_ns = ceil((double)age * drift_ppm / 1e6);
	if (!(growth_ns < 18446744073709549568.0)) /* NaN too */
		return UINT64_MAX;
	return add_sat(add_sat(offset, (uint64_t)ds->mean_path_delay_ns), (uint64_t)growth_ns);
}
