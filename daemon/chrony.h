/* chrony.h - the one request vcounterd makes of chronyd: "tracking" over its
 * command protocol (chrony's candm.h, protocol version 6; the same as
 * `chronyc tracking`), and what its answer says about this host's clock
 * error. Pure: bytes in, numbers out; sync_source.c does the I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A tracking request and its reply are both this long: chronyd pads requests
 * to the reply's size (no amplification) and drops any other length. */
#define CHRONY_TRACKING_LEN 104

/* chronyd's command port, where monitoring commands such as tracking are
 * answered to local callers without authentication (chrony.conf cmdport). */
#define CHRONY_DEFAULT_ADDRESS "127.0.0.1:323"

/* chronyd's leap status (RPY_Tracking.leap_status). */
enum chrony_leap {
	CHRONY_LEAP_NORMAL = 0,
	CHRONY_LEAP_INSERT = 1,
	CHRONY_LEAP_DELETE = 2,
	CHRONY_LEAP_UNSYNCHRONISED = 3,
};

struct chrony_tracking {
	uint32_t ref_id;
	uint16_t stratum;
	uint16_t leap_status;	   /* enum chrony_leap */
	double current_correction; /* s: system time minus true time, being slewed out */
	double last_offset;	   /* s */
	double rms_offset;	   /* s */
	double freq_ppm;
	double resid_freq_ppm;
	double skew_ppm;
	double root_delay;	/* s: to the stratum-1 reference */
	double root_dispersion; /* s: accumulated to the stratum-1, grown to now */
	double last_update_interval;
};

/* The request for sequence number seq into buf. */
void chrony_tracking_request(uint32_t seq, uint8_t buf[CHRONY_TRACKING_LEN]);

/* A reply to the request with sequence number seq. -EBADMSG: not a tracking
 * reply of protocol 6 (length, version, packet type, command or reply code);
 * -ESRCH: a reply to another request (a late one: ignore it); -EACCES:
 * chronyd refused (STT_UNAUTH: cmdallow, or a non-local caller); -EPROTO:
 * any other failure status. ret is written only on success. */
int chrony_tracking_parse(const uint8_t *buf, size_t len, uint32_t seq,
			  struct chrony_tracking *ret);

/* chrony's 32-bit network float: a 7-bit signed exponent and a 25-bit signed
 * coefficient, value = coefficient * 2^(exponent - 25), big-endian. */
double chrony_float_decode(uint32_t network_order);

/* chrony's own bound on this host's clock error (chronyc(1), tracking):
 * |current correction| + root dispersion + root delay / 2, in ns rounded up,
 * saturating. *ret_unsynced when chronyd says it is not synchronised (leap
 * status 3), or a value is not a finite non-negative number. */
uint64_t chrony_tracking_bound_ns(const struct chrony_tracking *t, bool *ret_unsynced);
