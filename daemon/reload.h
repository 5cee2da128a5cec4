/* reload.h - a reload (SIGHUP, systemctl reload): the
 * configuration read again and swapped in whole, or kept. */
#pragma once

#include <stddef.h>

struct conf;
struct vcd;

/* Read the configuration file and the command line again and
 * swap the result in (certificates, allow-lists, roles, policy, timeouts,
 * log level, backends), or keep the old one whole and log why ("FILE:LINE:
 * key 'k' = 'v': reason"): 0 or -errno. Settings that need a restart
 * (sockets, listen addresses, host name, port files) keep their values,
 * with a warning when the file changed them. */
int vcd_reload(struct vcd *vcd);
/* Build (and free) the TLS contexts conf asks for: 0, or -errno with the
 * key, its file and line, and OpenSSL's reason in err. */
int vcd_check_tls(const struct conf *conf, char *err, size_t err_size);
