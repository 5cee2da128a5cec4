/* tls.h - mutual TLS 1.3 for the peer link: contexts that verify the other
 * side's chain against the fleet CA and its identity (subjectAltName) against
 * an allow-list. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "tls_config.h"

/* A TLS 1.3-only context (min and max protocol version TLS1_3_VERSION) that
 * requires and verifies a peer certificate (SSL_VERIFY_PEER |
 * SSL_VERIFY_FAIL_IF_NO_PEER_CERT) against ca_file, presents cert_file/key_file
 * (checked to match), and whose verify callback rejects a leaf whose SANs
 * are not in allowed_peers. Returns 0 or -errno (-ENOENT missing file,
 * -EKEYREJECTED key/cert mismatch, -EINVAL bad PEM); err gets a sentence
 * naming the file and OpenSSL's reason. The allow-list is copied. */
int tls_ctx_new(const struct tls_config *config, bool is_server, SSL_CTX **ret_ctx, char *err,
		size_t err_size);

/* Does the certificate ctx presents (config->cert_file, loaded by tls_ctx_new) chain to ctx's
 * CA, hold a validity period that includes now, and serve the purpose (TLS server or client)?
 * tls_ctx_new loads a certificate of another CA or an expired one without complaint, and every
 * peer would then refuse this host; this refuses it where the files are read (start, reload).
 * 0, or -EKEYEXPIRED (expired or not yet valid) / -EKEYREJECTED (anything else) with a sentence
 * in err naming cert_file and OpenSSL's reason. */
int tls_ctx_check_own_certificate(const struct tls_config *config, SSL_CTX *ctx, bool is_server,
				  char *err, size_t err_size);

/* After a completed handshake: the first SAN of the peer's leaf that is on
 * the allow-list, copied to ret_name. -EPERM if none, -ENOTCONN before the
 * handshake. */
int tls_peer_identity(SSL *ssl, char *ret_name, size_t name_size);

/* Does the peer's leaf carry SAN `name`? (client side: the migration names
 * the peer it expects). */
bool tls_peer_has_name(SSL *ssl, const char *name);
