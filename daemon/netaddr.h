/* netaddr.h - numeric socket addresses as vcounterd's options spell them. */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>

#define NETADDR_DEFAULT_HOST "127.0.0.1" /* for a bare port */

/* "9420" (NETADDR_DEFAULT_HOST), "127.0.0.1:9420", "[::1]:9420": numeric
 * addresses only, port 0..65535 (0: any). -EINVAL otherwise. */
int netaddr_parse(const char *s, struct sockaddr_storage *ret_addr, socklen_t *ret_len);
/* 127.0.0.0/8, ::1, and ::ffff:127.0.0.0/104. */
bool netaddr_is_loopback(const struct sockaddr *addr);
