/* ptp_mgmt.h - the three questions vcounterd asks linuxptp's ptp4l on its UNIX
 * socket (as `pmc -u -b 0 'GET TIME_STATUS_NP'` does): PTP management
 * messages (IEEE 1588-2008 section 15) GET TIME_STATUS_NP, GET
 * CURRENT_DATA_SET and GET PORT_PROPERTIES_NP, and what their answers say
 * about this host's clock error.
 * Pure: bytes in, numbers out; sync_source.c does the I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ptp4l's management socket (ptp4l -> uds_address). */
#define PTP_MGMT_DEFAULT_PATH "/var/run/ptp4l"

/* managementId values (linuxptp tlv.h). */
#define PTP_MGMT_CURRENT_DATA_SET   0x2001
#define PTP_MGMT_TIME_STATUS_NP	    0xC000
#define PTP_MGMT_PORT_PROPERTIES_NP 0xC004

/* PORT_PROPERTIES_NP's timestamping (linuxptp's enum timestamp_type): only
 * with software timestamps is the clock ptp4l disciplines CLOCK_REALTIME.
 * Any other value: a NIC's PTP hardware clock, which phc2sys then copies
 * into the system clock with an error no management message reports. */
#define PTP_MGMT_TS_SOFTWARE 0

/* A GET request is this long: header, management body, an empty TLV. */
#define PTP_MGMT_GET_LEN (34 + 14 + 6)

struct ptp_time_status {
	int64_t master_offset_ns; /* this clock minus the grandmaster's, last measured */
	int64_t ingress_time_ns;  /* when that Sync arrived (this clock) */
	bool gm_present;	  /* false: this clock is its own grandmaster */
	uint8_t gm_identity[8];
};

struct ptp_current_ds {
	uint16_t steps_removed;
	int64_t offset_from_master_ns; /* TimeInterval, 2^-16 ns, truncated */
	int64_t mean_path_delay_ns;
};

struct ptp_port_props {
	uint16_t port_number;
	uint8_t port_state;   /* linuxptp's enum port_state: 9 SLAVE */
	uint8_t timestamping; /* PTP_MGMT_TS_SOFTWARE, or hardware */
	char interface[33];   /* the port's network interface, NUL-terminated */
};

/* GET id, from port (portNumber: the caller's pid, say) with seq, into buf.
 * The target is every clock (wildcard) and boundaryHops 0: ptp4l answers
 * for itself and forwards nothing to the network. */
void ptp_mgmt_get(uint16_t id, uint16_t port, uint16_t seq, uint8_t buf[PTP_MGMT_GET_LEN]);

/* Which management id and sequence number a reply carries: 0, or -EBADMSG
 * when it is not a PTP v2 management RESPONSE with one management TLV (a
 * MANAGEMENT_ERROR_STATUS answer: -EPROTO, its id still given). */
int ptp_mgmt_reply_id(const uint8_t *buf, size_t len, uint16_t *ret_id, uint16_t *ret_seq);

/* The data of a TIME_STATUS_NP / CURRENT_DATA_SET reply; -EBADMSG when the
 * reply is not one, or its data is short. ret is written only on success. */
int ptp_mgmt_time_status(const uint8_t *buf, size_t len, struct ptp_time_status *ret);
int ptp_mgmt_current_ds(const uint8_t *buf, size_t len, struct ptp_current_ds *ret);
/* A PORT_PROPERTIES_NP reply (one per port to a wildcard GET); the interface
 * name is cut at 32 bytes, and a name longer than the data is -EBADMSG. */
int ptp_mgmt_port_props(const uint8_t *buf, size_t len, struct ptp_port_props *ret);

/* This host's clock error against the grandmaster now (now_ns: this host's
 * CLOCK_REALTIME, the clock ptp4l disciplines with software timestamping):
 * |last offset| + mean path delay (a path's asymmetry can hide up to all of
 * it) + what the clock may have drifted since that Sync at drift_ppm.
 * *ret_unsynced when there is no grandmaster but this clock, or the
 * numbers are not numbers (a negative delay). Saturating. */
uint64_t ptp_mgmt_bound_ns(const struct ptp_time_status *ts, const struct ptp_current_ds *ds,
			   int64_t now_ns, double drift_ppm, bool *ret_unsynced);
