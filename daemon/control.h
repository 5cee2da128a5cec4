/* control.h - service Control: the fleet controllers' API
 * (gRPC over HTTP/2, grpc.h) and its WatchEvents streams. */
#pragma once

#include <stddef.h>

#include <openssl/ssl.h>

#include "migration_view.h"
#include "vcd_config.h"
#include "vm_registry.h"

struct vcd;

int control_start(struct vcd *vcd, int listen_unix_fd);
/* The TLS server context of the control API's TCP listener for cfg: the
 * fleet CA, this host's certificate, the controllers' names as allow-list. */
int control_tls_new(const struct vcd_config *cfg, SSL_CTX **ret, char *err, size_t err_size);
/* A reload: cfg's role lists, and tls (when the TCP listener is on), for
 * connections from now on. -errno with a sentence in err: nothing changed. */
int control_reconfigure(struct vcd *vcd, const struct vcd_config *cfg, SSL_CTX *tls, char *err,
			size_t err_size);
void control_stop(struct vcd *vcd);
int control_tcp_port(struct vcd *vcd);	       /* -ENOTCONN without TCP */
size_t control_watcher_count(struct vcd *vcd); /* open WatchEvents streams */
/* The VM registry's observer (vcd): WatchEvents hear a VM registered and
 * unregistered. */
void control_on_vm(void *vcd, enum vm_event event, struct vm_entry *vm);
/* The migrations' observer (vcd): WatchEvents hear each step. */
void control_on_migration(void *vcd, const struct migration_event *ev);
