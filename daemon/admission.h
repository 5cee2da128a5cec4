/* admission.h - who gets one of a listener's slots for connections not yet
 * authenticated (a TLS handshake running, an HTTP request not yet read),
 * when strangers can open as many as they like. Pure: the listener counts,
 * this decides.
 *
 * As the kernel's SYN queue and the TLS servers that hold up under floods
 * do it: a source address may hold only max_per_source slots, so one host
 * cannot take them all; when every slot is taken the oldest waiting
 * connection makes room for the new one instead of the new one being
 * refused, so a stalled flood cannot keep a peer that completes its
 * handshake quickly out; and the deadline to finish shrinks as the slots
 * fill, from normal_ms at half full to pressed_ms when full. */
#pragma once

#include <stddef.h>
#include <sys/socket.h>

/* "192.0.2.1", "2001:db8::1": the source's address without its port (an
 * IPv4-mapped IPv6 address as IPv4), "?" for anything else. */
#define ADMISSION_SOURCE_MAX 46

struct admission_limits {
	unsigned max_total;	 /* slots */
	unsigned max_per_source; /* of those, from one address */
	unsigned normal_ms;	 /* the deadline up to half full */
	unsigned pressed_ms;	 /* the deadline when full */
};

enum admission_verdict {
	ADMISSION_ADMIT,
	ADMISSION_EVICT_OLDEST,	 /* full: close the oldest waiting, then admit */
	ADMISSION_REFUSE_SOURCE, /* its source holds max_per_source already */
};

/* A new connection, with n_total slots taken and n_same of them by its source. */
enum admission_verdict admission_judge(const struct admission_limits *lim, unsigned n_total,
				       unsigned n_same);

/* The deadline a new connection gets with n_total slots taken (itself not
 * counted). */
unsigned admission_deadline_ms(const struct admission_limits *lim, unsigned n_total);

void admission_source(const struct sockaddr *sa, size_t sa_len, char ret[ADMISSION_SOURCE_MAX]);
