/* netaddr.c - the numeric socket addresses vcounterd's options take
 * ("ADDR:PORT", "[V6]:PORT", a bare port on loopback): the metrics listener
 * and the chrony sync source. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "netaddr.h"

static int parse_port(const char *s, uint16_t *ret)
{
	unsigned long v;
	char *end;

	if (!*s || *s < '0' || *s > '9' || strlen(s) > 5)
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535)
		return -EINVAL;
	*ret = (uint16_t)v;
	return 0;
}

int netaddr_parse(const char *s, struct sockaddr_storage *ret_addr, socklen_t *ret_len)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon, *port;
	struct sockaddr_storage ss = { 0 };
	uint16_t port_nr;
	size_t host_len;

	if (!s)
		return -EINVAL;
	if (strspn(s, "0123456789") == strlen(s)) {
		host_len = strlen(NETADDR_DEFAULT_HOST);
		memcpy(host, NETADDR_DEFAULT_HOST, host_len + 1);
		port = s;
	} else if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		host_len = (size_t)(close - s - 1);
		if (host_len == 0 || host_len >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, host_len);
		host[host_len] = '\0';
		port = close + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		host_len = (size_t)(colon - s);
		if (host_len == 0 || host_len >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, host_len);
		host[host_len] = '\0';
		port = colon + 1;
	}
	if (parse_port(port, &port_nr) < 0)
		return -EINVAL;
	if (s[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -EINVAL;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port_nr);
		*ret_len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -EINVAL;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port_nr);
		*ret_len = sizeof(*sin);
	}
	*ret_addr = ss;
	return 0;
}

bool netaddr_is_loopback(const struct sockaddr *addr)
{
	if (addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;

		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (addr->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)addr)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}
