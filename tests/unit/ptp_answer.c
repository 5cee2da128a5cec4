/* ptp_answer.c - ptp4l's management answers, built for the tests. */
#include <arpa/inet.h>
#include <string.h>

#include "ptp_answer.h"

#define MGMT_DATA_AT 54 /* header, management body, TLV type, length, id */

void ptp_answer_be16(uint8_t *p, uint16_t v)
{
	uint16_t n = htons(v);

	memcpy(p, &n, sizeof(n));
}

void ptp_answer_be64(uint8_t *p, int64_t v)
{
	uint32_t hi = htonl((uint32_t)((uint64_t)v >> 32)), lo = htonl((uint32_t)v);

	memcpy(p, &hi, 4);
	memcpy(p + 4, &lo, 4);
}

size_t ptp_answer_response(uint8_t *buf, uint16_t id, uint16_t seq, size_t data_len)
{
	size_t len = MGMT_DATA_AT + data_len;

	memset(buf, 0, len);
	buf[0] = 0x0d;
	buf[1] = 0x02;
	ptp_answer_be16(buf + 2, (uint16_t)len);
	ptp_answer_be16(buf + 30, seq);
	buf[32] = 0x04;
	buf[46] = 0x02; /* RESPONSE */
	ptp_answer_be16(buf + 48, 0x0001);
	ptp_answer_be16(buf + 50, (uint16_t)(2 + data_len));
	ptp_answer_be16(buf + 52, id);
	return len;
}

size_t ptp_answer_time_status(uint8_t *buf, uint16_t seq, int64_t offset, int64_t ingress,
			      int32_t gm_present)
{
	size_t len = ptp_answer_response(buf, 0xC000, seq, 50);
	uint32_t gm = htonl((uint32_t)gm_present);

	ptp_answer_be64(buf + MGMT_DATA_AT, offset);
	ptp_answer_be64(buf + MGMT_DATA_AT + 8, ingress);
	memcpy(buf + MGMT_DATA_AT + 38, &gm, 4);
	memcpy(buf + MGMT_DATA_AT + 42, "\x52\x54\x00\xff\xfe\x12\x34\x56", 8);
	return len;
}

size_t ptp_answer_current_ds(uint8_t *buf, uint16_t seq, int64_t offset_ns, int64_t delay_ns)
{
	size_t len = ptp_answer_response(buf, 0x2001, seq, 18);

	ptp_answer_be16(buf + MGMT_DATA_AT, 1);
	/* TimeInterval: ns scaled by 2^16. */
	ptp_answer_be64(buf + MGMT_DATA_AT + 2, offset_ns * 65536);
	ptp_answer_be64(buf + MGMT_DATA_AT + 10, delay_ns * 65536);
	return len;
}

size_t ptp_answer_port_props(uint8_t *buf, uint16_t seq, uint8_t timestamping, const char *iface)
{
	size_t name_len = strlen(iface), data_len = 13 + name_len + ((13 + name_len) % 2);
	size_t len = ptp_answer_response(buf, 0xC004, seq, data_len);
	uint8_t *d = buf + MGMT_DATA_AT;

	memcpy(d, "\x52\x54\x00\xff\xfe\xab\xcd\xef", 8); /* clockIdentity */
	ptp_answer_be16(d + 8, 1);
	d[10] = 9; /* SLAVE */
	d[11] = timestamping;
	d[12] = (uint8_t)name_len;
	memcpy(d + 13, iface, name_len);
	return len;
}
