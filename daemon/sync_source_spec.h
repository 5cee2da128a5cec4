/* sync_source_spec.h - --sync-source and [clock] sync-source, parsed: which
 * source this host's clock-error estimate comes from (sync_source.h polls
 * it). Pure, and apart from the polling so that the configuration parser
 * (conf.c) takes it without libevent. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "counter_state.h"

/* --sync-source, parsed: "adjtimex", "chrony" (CHRONY_DEFAULT_ADDRESS),
 * "chrony@ADDR:PORT" (numeric, netaddr.h), "linuxptp"
 * (PTP_MGMT_DEFAULT_PATH), "linuxptp@/PATH" (ptp4l's uds_address), or
 * "fixed:NS" (1..10^12 ns). */
struct sync_source_spec {
	enum sync_source_kind kind;
	uint64_t fixed_ns;
	struct sockaddr_storage addr; /* chrony: UDP; linuxptp: AF_UNIX */
	socklen_t addr_len;
	char text[136]; /* for logs and errors: "chrony (127.0.0.1:323)" */
};

/* -EINVAL with a sentence in err when s is none of the above. Pure. */
int sync_source_spec_parse(const char *s, struct sync_source_spec *ret, char *err, size_t err_size);
