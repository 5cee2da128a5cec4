/* tls_client.h - the tests' TLS client of the daemon's listeners (the peer
 * link, the control port): a blocking TCP connection to 127.0.0.1, a
 * certificate from the test fleet (harness_certs), and reads with a
 * deadline that tell an orderly end from a reset and a TLS alert. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "vcounter.pb-c.h"

struct tls_client {
	int fd;
	int local_port;
	SSL_CTX *ctx;
	SSL *ssl;
	int timeout_ms;	 /* the socket's, and each tls_client_read's */
	char error[256]; /* OpenSSL's reason for the last failure */
};

struct tls_client_opts {
	const char *certs_dir;	 /* as harness_certs made it */
	const char *cert_name;	 /* certs_dir/cert_name.pem and .key: who we are */
	const char *server_name; /* what the daemon's certificate must name */
	int port;		 /* on 127.0.0.1 */
	int version;		 /* the only TLS version offered; 0: TLS 1.3 */
	const char *alpn;	 /* the one ALPN protocol offered; NULL: none */
	int timeout_ms;
};

/* tls_client_read: the link ended before the first byte (close_notify, or
 * an EOF without it). */
#define TLS_CLIENT_CLOSED 0

/* OpenSSL's reason for the last failure into buf (unchanged when there is
 * none), and its error queue cleared. */
void tls_client_save_error(char *buf, size_t size);

/* A blocking TCP connection to 127.0.0.1:port whose sends and receives
 * give up after timeout_ms; *ret_local_port is ours (the daemon logs it). */
int tls_client_tcp_connect(int port, int timeout_ms, int *ret_local_port);

/* Connect and run the handshake, checking the daemon as a peer does (the
 * fleet CA, certs_dir/ca.pem, and server_name). True when our side of the
 * handshake completed: with TLS 1.3 that is before the daemon judged our
 * certificate, so its refusal may only show on the first read. c->error
 * says why not. tls_client_close() either way. */
bool tls_client_open(struct tls_client *c, const struct tls_client_opts *o);
void tls_client_close(struct tls_client *c);

/* Read exactly n bytes within c->timeout_ms: 1, TLS_CLIENT_CLOSED,
 * -ETIMEDOUT, -ECONNRESET (ended mid-way, or reset), -EPROTO (a TLS alert,
 * e.g. the daemon refused our certificate; c->error says which). */
int tls_client_read(struct tls_client *c, uint8_t *buf, size_t n);
bool tls_client_write(struct tls_client *c, const void *buf, size_t len);

/* One peer-link frame, unpacked into *ret_msg: 1, or what tls_client_read
 * said (a link that ends inside a frame: -ECONNRESET). */
int tls_client_recv_peer(struct tls_client *c, Vcounter__V1__PeerMessage **ret_msg);
/* The next peer-link frame, unpacked; NULL when the link ended (closed,
 * reset or refused with an alert); a timeout fails the test. */
Vcounter__V1__PeerMessage *tls_client_next_peer(struct tls_client *c);

/* Is cert (NULL: no) the one in certs_dir/cert_name.pem? */
bool tls_cert_is(X509 *cert, const char *certs_dir, const char *cert_name);
/* Is the certificate the daemon presented certs_dir/cert_name.pem? */
bool tls_client_server_is(struct tls_client *c, const char *certs_dir, const char *cert_name);
