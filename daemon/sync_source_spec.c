/* sync_source_spec.c - the sync source's name, parsed into what to poll. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "chrony.h"
#include "netaddr.h"
#include "ptp_mgmt.h"
#include "sync_source_spec.h"

#define FIXED_MAX_NS UINT64_C(1000000000000) /* 1000 s: more is no bound */

int sync_source_spec_parse(const char *s, struct sync_source_spec *ret, char *err, size_t err_size)
{
	struct sync_source_spec spec = { .kind = SYNC_SOURCE_ADJTIMEX };
	const char *addr = CHRONY_DEFAULT_ADDRESS;

	if (!s || strcmp(s, "adjtimex") == 0) {
		snprintf(spec.text, sizeof(spec.text), "adjtimex");
	} else if (strncmp(s, "fixed:", 6) == 0) {
		char *end;

		errno = 0;
		spec.kind = SYNC_SOURCE_FIXED;
		if (s[6] < '0' || s[6] > '9')
			goto bad_fixed;
		spec.fixed_ns = strtoull(s + 6, &end, 10);
		if (errno || *end || spec.fixed_ns == 0 || spec.fixed_ns > FIXED_MAX_NS)
			goto bad_fixed;
		snprintf(spec.text, sizeof(spec.text), "fixed (%" PRIu64 " ns)", spec.fixed_ns);
	} else if (strcmp(s, "chrony") == 0 || strncmp(s, "chrony@", 7) == 0) {
		spec.kind = SYNC_SOURCE_CHRONY;
		if (s[6] == '@')
			addr = s + 7;
		if (netaddr_parse(addr, &spec.addr, &spec.addr_len) < 0 || strlen(addr) > 60) {
			snprintf(err, err_size,
				 "sync source chrony@%.60s: not a numeric ADDR:PORT or port", addr);
			return -EINVAL;
		}
		snprintf(spec.text, sizeof(spec.text), "chrony (%s)", addr);
	} else if (strcmp(s, "linuxptp") == 0 || strncmp(s, "linuxptp@", 9) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&spec.addr;
		const char *path = s[8] == '@' ? s + 9 : PTP_MGMT_DEFAULT_PATH;

		spec.kind = SYNC_SOURCE_LINUXPTP;
		if (path[0] != '/' || strlen(path) >= sizeof(sun->sun_path) || strlen(path) > 100) {
			snprintf(err, err_size,
				 "sync source linuxptp@%.60s: ptp4l's socket must be an absolute "
				 "path of at most 100 bytes",
				 path);
			return -EINVAL;
		}
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, path, strlen(path) + 1);
		spec.addr_len =
			(socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
		snprintf(spec.text, sizeof(spec.text), "linuxptp (%s)", path);
	} else {
		snprintf(err, err_size,
			 "sync source \"%.60s\": expected adjtimex, chrony, chrony@ADDR:PORT, "
			 "linuxptp, linuxptp@PATH or fixed:NS",
			 s);
		return -EINVAL;
	}
	*ret = spec;
	return 0;

bad_fixed:
	snprintf(err, err_size, "sync source \"%.60s\": fixed:NS wants 1 to %" PRIu64 " ns", s,
		 FIXED_MAX_NS);
	return -EINVAL;
}
