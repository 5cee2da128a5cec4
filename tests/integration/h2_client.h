/* h2_client.h - a small blocking HTTP/2 client (nghttp2) for the tests of
 * the control API's gRPC transport: h2c over a unix socket or h2 over a
 * TLS connection the caller made, requests with any body and headers,
 * every response's status, trailers and data kept per stream. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

/* One more stream than daemon/grpc.h allows at once (GRPC_MAX_STREAMS, 128,
 * restated: a test pins it), data up to 4 MiB a stream, answers within. */
#define H2_MAX_STREAMS	 129
#define H2_MAX_DATA	 (4u << 20)
#define H2_IO_TIMEOUT_MS 5000

struct h2_stream {
	int32_t id;
	int http_status;
	int grpc_status; /* -1: none received */
	char grpc_message[512];
	unsigned n_header_blocks;
	uint8_t *data;
	size_t data_len;
	bool closed;
	uint32_t error_code;
	const uint8_t *body;
	size_t body_len, body_off;
};

struct h2 {
	int fd;
	SSL *ssl; /* NULL: h2c on a unix socket */
	nghttp2_session *session;
	struct h2_stream streams[H2_MAX_STREAMS];
	size_t n_streams;
	unsigned n_frames; /* any frame received */
	bool goaway;
	bool eof;
};

/* Start the session on a connected fd (and ssl, or NULL: h2c): preface and
 * an empty SETTINGS. 0 or -errno. */
int h2_start(struct h2 *h, int fd, SSL *ssl);
/* h2c to a unix socket path. */
int h2_open_unix(struct h2 *h, const char *path);
void h2_close(struct h2 *h);
/* Raw bytes on the connection, past nghttp2 (a test's own malformed
 * frames): 0 or -errno. */
int h2_write_all(struct h2 *h, const uint8_t *data, size_t len);
/* What nghttp2 has to send, written out: 0 or -errno. */
int h2_flush(struct h2 *h);
/* Read what arrives within timeout_ms and feed it to nghttp2: 1 if
 * something was read, 0 on timeout, -errno at the end of the connection. */
int h2_pump(struct h2 *h, int timeout_ms);
struct h2_stream *h2_stream_of(struct h2 *h, int32_t stream_id);
/* Submit a POST to path with body (NULL: HEADERS with END_STREAM and no
 * DATA) and extra headers (name, value, ..., NULL). Returns the stream or
 * NULL. */
struct h2_stream *h2_submit(struct h2 *h, const char *path, const uint8_t *body, size_t body_len,
			    const char *const *extra);
/* Run until s closes (or the connection ends, or H2_IO_TIMEOUT_MS). */
bool h2_wait_closed(struct h2 *h, struct h2_stream *s);
