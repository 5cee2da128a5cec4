/* tls_config.h - what a TLS context of the peer link is made from (tls.h):
 * files and the allow-list, plain C, for the configuration that names them
 * (vcd_config.h) without OpenSSL. */
#pragma once

#include <stddef.h>

#define TLS_MAX_ALLOWED_PEERS 256
#define TLS_PEER_NAME_MAX     255

struct tls_config {
	const char *ca_file;   /* PEM bundle of the fleet CA */
	const char *cert_file; /* this host's chain, PEM */
	const char *key_file;  /* its private key, PEM */
	/* Identities (SAN dNSName or URI) allowed to talk to this daemon. */
	const char *const *allowed_peers;
	size_t n_allowed_peers;
};
