/* admission.c - see admission.h. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "admission.h"

enum admission_verdict admission_judge(const struct admission_limits *lim, unsigned n_total,
				       unsigned n_same)
{
	if (n_same >= lim->max_per_source)
		return ADMISSION_REFUSE_SOURCE;
	if (n_total >= lim->max_total)
		return ADMISSION_EVICT_OLDEST;
	return ADMISSION_ADMIT;
}

unsigned admission_deadline_ms(const struct admission_limits *lim, unsigned n_total)
{
	unsigned half = lim->max_total / 2, span = lim->max_total - half;

	if (n_total <= half || lim->pressed_ms >= lim->normal_ms || span == 0)
		return lim->normal_ms;
	if (n_total >= lim->max_total)
		return lim->pressed_ms;
	/* From normal at half full down to pressed at full, in a straight line. */
	return lim->normal_ms - (unsigned)((unsigned long long)(lim->normal_ms - lim->pressed_ms) *
					   (n_total - half) / span);
}

void admission_source(const struct sockaddr *sa, size_t sa_len, char ret[ADMISSION_SOURCE_MAX])
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
	const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

	snprintf(ret, ADMISSION_SOURCE_MAX, "?");
	if (!sa)
		return;
	if (sa->sa_family == AF_INET && sa_len >= sizeof(*in)) {
		inet_ntop(AF_INET, &in->sin_addr, ret, ADMISSION_SOURCE_MAX);
	} else if (sa->sa_family == AF_INET6 && sa_len >= sizeof(*in6)) {
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ret, ADMISSION_SOURCE_MAX);
		else
			inet_ntop(AF_INET6, &in6->sin6_addr, ret, ADMISSION_SOURCE_MAX);
	}
}
