/* tls_client.c - the tests' TLS client of the daemon's listeners. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "daemon_harness.h"
#include "frame.h"
#include "tls_client.h"
#include "wire.h"

void tls_client_save_error(char *buf, size_t size)
{
	unsigned long e = ERR_peek_last_error();

	if (e)
		ERR_error_string_n(e, buf, size);
	ERR_clear_error();
}

int tls_client_tcp_connect(int port, int timeout_ms, int *ret_local_port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000 };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	/* Blocking, but never for longer than the timeout. */
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*ret_local_port = ntohs(sa.sin_port);
	return fd;
}

bool tls_client_open(struct tls_client *c, const struct tls_client_opts *o)
{
	int version = o->version ? o->version : TLS1_3_VERSION;
	char cert[320], key[320], ca[320];
	unsigned char protos[16];

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->timeout_ms = o->timeout_ms;
	harness_cert_path(cert, sizeof(cert), o->certs_dir, o->cert_name, "pem");
	harness_cert_path(key, sizeof(key), o->certs_dir, o->cert_name, "key");
	harness_cert_path(ca, sizeof(ca), o->certs_dir, "ca", "pem");
	c->ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(c->ctx);
	assert_int_equal(SSL_CTX_set_min_proto_version(c->ctx, version), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(c->ctx, version), 1);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(c->ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_load_verify_locations(c->ctx, ca, NULL), 1);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if (o->alpn) {
		size_t n = strlen(o->alpn);

		assert_true(n > 0 && n < sizeof(protos));
		protos[0] = (unsigned char)n;
		memcpy(protos + 1, o->alpn, n);
		/* 0 is success for this one */
		assert_int_equal(SSL_CTX_set_alpn_protos(c->ctx, protos, (unsigned)(1 + n)), 0);
	}

	c->fd = tls_client_tcp_connect(o->port, o->timeout_ms, &c->local_port);
	c->ssl = SSL_new(c->ctx);
	assert_non_null(c->ssl);
	assert_int_equal(SSL_set1_host(c->ssl, o->server_name), 1);
	assert_int_equal(SSL_set_tlsext_host_name(c->ssl, o->server_name), 1);
	assert_int_equal(SSL_set_fd(c->ssl, c->fd), 1);
	if (SSL_connect(c->ssl) == 1)
		return true;
	tls_client_save_error(c->error, sizeof(c->error));
	return false;
}

void tls_client_close(struct tls_client *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl); /* close_notify: an orderly goodbye */
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	ERR_clear_error();
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

int tls_client_read(struct tls_client *c, uint8_t *buf, size_t n)
{
	int64_t deadline = harness_now_ms() + c->timeout_ms;
	size_t got = 0;

	while (got < n) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int64_t left = deadline - harness_now_ms();
		size_t chunk = 0;
		unsigned long e;

		if (left <= 0)
			return -ETIMEDOUT;
		if (!SSL_pending(c->ssl) && poll(&pfd, 1, (int)left) == 0)
			return -ETIMEDOUT;
		if (SSL_read_ex(c->ssl, buf + got, n - got, &chunk) == 1) {
			got += chunk;
			continue;
		}
		switch (SSL_get_error(c->ssl, 0)) {
		case SSL_ERROR_ZERO_RETURN:
			ERR_clear_error();
			return got ? -ECONNRESET : TLS_CLIENT_CLOSED;
		case SSL_ERROR_WANT_READ:
			continue; /* a post-handshake message (session ticket) only */
		case SSL_ERROR_SYSCALL:
			ERR_clear_error();
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return errno == 0 && !got ? TLS_CLIENT_CLOSED : -ECONNRESET;
		default:
			/* OpenSSL 3 reports a FIN without close_notify as an error. */
			e = ERR_peek_last_error();
			if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
			    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
				ERR_clear_error();
				return got ? -ECONNRESET : TLS_CLIENT_CLOSED;
			}
			tls_client_save_error(c->error, sizeof(c->error));
			return -EPROTO;
		}
	}
	return 1;
}

bool tls_client_write(struct tls_client *c, const void *buf, size_t len)
{
	size_t written = 0;
	bool ok = SSL_write_ex(c->ssl, buf, len, &written) == 1 && written == len;

	if (!ok)
		tls_client_save_error(c->error, sizeof(c->error));
	return ok;
}

int tls_client_recv_peer(struct tls_client *c, Vcounter__V1__PeerMessage **ret_msg)
{
	static uint8_t payload[VC_MAX_FRAME_BYTES];
	uint8_t header[FRAME_HEADER_BYTES];
	uint32_t len;
	int r;

	r = tls_client_read(c, header, sizeof(header));
	if (r != 1)
		return r;
	assert_int_equal(frame_header_decode(header, VC_MAX_FRAME_BYTES, &len), 0);
	r = tls_client_read(c, payload, len);
	if (r != 1)
		return r < 0 ? r : -ECONNRESET;
	assert_int_equal(wire_peer_unpack(payload, len, ret_msg, NULL), 0);
	return 1;
}

Vcounter__V1__PeerMessage *tls_client_next_peer(struct tls_client *c)
{
	Vcounter__V1__PeerMessage *msg = NULL;
	int r = tls_client_recv_peer(c, &msg);

	assert_int_not_equal(r, -ETIMEDOUT);
	return r == 1 ? msg : NULL;
}

bool tls_cert_is(X509 *cert, const char *certs_dir, const char *cert_name)
{
	char path[320];
	X509 *want;
	FILE *f;
	bool same;

	harness_cert_path(path, sizeof(path), certs_dir, cert_name, "pem");
	f = fopen(path, "re");
	assert_non_null(f);
	want = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(want);
	same = cert && X509_cmp(cert, want) == 0;
	X509_free(want);
	return same;
}

bool tls_client_server_is(struct tls_client *c, const char *certs_dir, const char *cert_name)
{
	X509 *peer = SSL_get1_peer_certificate(c->ssl);
	bool same = tls_cert_is(peer, certs_dir, cert_name);

	X509_free(peer);
	return same;
}
