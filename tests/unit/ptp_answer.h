/* ptp_answer.h - ptp4l's answers to management GETs, byte by byte as
 * linuxptp 3.1 sends them (tlv.c, port.c), for the tests of the decoder
 * (test_ptp_mgmt) and of the source that polls ptp4l (test_sync_source).
 * Network byte order through the C library, not the daemon's own helpers. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Big enough for every answer below. */
#define PTP_ANSWER_MAX 160

void ptp_answer_be16(uint8_t *p, uint16_t v);
void ptp_answer_be64(uint8_t *p, int64_t v);

/* A RESPONSE to GET id with seq, data_len bytes of data (zeroed); returns
 * its length. */
size_t ptp_answer_response(uint8_t *buf, uint16_t id, uint16_t seq, size_t data_len);

/* TIME_STATUS_NP: master offset, ingress time (ns), gmPresent. */
size_t ptp_answer_time_status(uint8_t *buf, uint16_t seq, int64_t offset, int64_t ingress,
			      int32_t gm_present);

/* CURRENT_DATA_SET: stepsRemoved 1, offset and mean path delay in ns. */
size_t ptp_answer_current_ds(uint8_t *buf, uint16_t seq, int64_t offset_ns, int64_t delay_ns);

/* PORT_PROPERTIES_NP of port 1 in state 9 (SLAVE), stamping as
 * timestamping says (0 software, 1 hardware), on interface iface. An odd
 * length is padded with a zero, as ptp4l pads it. */
size_t ptp_answer_port_props(uint8_t *buf, uint16_t seq, uint8_t timestamping, const char *iface);
