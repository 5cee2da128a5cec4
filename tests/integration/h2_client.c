/* h2_client.c - a small blocking HTTP/2 client for the tests (h2_client.h). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "daemon_harness.h"
#include "grpc_wire.h"
#include "h2_client.h"
#include "unix_fd.h"

int h2_write_all(struct h2 *h, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t n;

		if (h->ssl) {
			size_t written = 0;

			if (SSL_write_ex(h->ssl, data, len, &written) != 1) {
				ERR_clear_error();
				return -EPIPE;
			}
			n = (ssize_t)written;
		} else {
			n = send(h->fd, data, len, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -errno;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int h2_flush(struct h2 *h)
{
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(h->session, &data);
		int r;

		if (n < 0)
			return (int)n;
		if (n == 0)
			return 0;
		r = h2_write_all(h, data, (size_t)n);
		if (r < 0)
			return r;
	}
}

/* Read what arrives within timeout_ms and feed it to nghttp2: 1 if
 * something was read, 0 on timeout, -errno at the end of the connection. */
int h2_pump(struct h2 *h, int timeout_ms)
{
	struct pollfd pfd = { .fd = h->fd, .events = POLLIN };
	uint8_t buf[16384];
	ssize_t n;

	if (h->eof)
		return -ECONNRESET;
	if (!(h->ssl && SSL_pending(h->ssl)) && poll(&pfd, 1, timeout_ms) == 0)
		return 0;
	if (h->ssl) {
		size_t got = 0;

		if (SSL_read_ex(h->ssl, buf, sizeof(buf), &got) != 1) {
			if (SSL_get_error(h->ssl, 0) == SSL_ERROR_WANT_READ)
				return 1; /* a session ticket only */
			ERR_clear_error();
			h->eof = true;
			return -ECONNRESET;
		}
		n = (ssize_t)got;
	} else {
		n = recv(h->fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			return 1;
		if (n <= 0) {
			h->eof = true;
			return -ECONNRESET;
		}
	}
	if (nghttp2_session_mem_recv(h->session, buf, (size_t)n) != n)
		return -EPROTO;
	(void)h2_flush(h);
	return 1;
}

struct h2_stream *h2_stream_of(struct h2 *h, int32_t stream_id)
{
	for (size_t i = 0; i < h->n_streams; i++)
		if (h->streams[i].id == stream_id)
			return &h->streams[i];
	return NULL;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	struct h2_stream *s = h2_stream_of(user_data, frame->hd.stream_id);
	char v[32];

	if (!s)
		return 0;
	snprintf(v, sizeof(v), "%.*s", (int)(valuelen < 31 ? valuelen : 31), (const char *)value);
	if (namelen == 7 && memcmp(name, ":status", 7) == 0)
		s->http_status = atoi(v);
	else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
		s->grpc_status = atoi(v);
	else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0)
		grpc_wire_percent_decode((const char *)value, valuelen, s->grpc_message,
					 sizeof(s->grpc_message));
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct h2 *h = user_data;
	struct h2_stream *s = h2_stream_of(h, frame->hd.stream_id);

	h->n_frames++;
	if (frame->hd.type == NGHTTP2_GOAWAY)
		h->goaway = true;
	if (frame->hd.type == NGHTTP2_HEADERS && s)
		s->n_header_blocks++;
	return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			      const uint8_t *data, size_t len, void *user_data)
{
	struct h2_stream *s = h2_stream_of(user_data, stream_id);
	uint8_t *grown;

	if (!s || s->data_len + len > H2_MAX_DATA)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	grown = realloc(s->data, s->data_len + len);
	if (!grown)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	memcpy(grown + s->data_len, data, len);
	s->data = grown;
	s->data_len += len;
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user_data)
{
	struct h2_stream *s = h2_stream_of(user_data, stream_id);

	if (s) {
		s->closed = true;
		s->error_code = error_code;
	}
	return 0;
}

static ssize_t body_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
			    size_t length, uint32_t *data_flags, nghttp2_data_source *source,
			    void *user_data)
{
	struct h2_stream *s = source->ptr;
	size_t n = s->body_len - s->body_off;

	if (n > length)
		n = length;
	memcpy(buf, s->body + s->body_off, n);
	s->body_off += n;
	if (s->body_off == s->body_len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* Start the session on a connected fd (and ssl): preface and an empty
 * SETTINGS (RFC 9113 section 3.4). */
int h2_start(struct h2 *h, int fd, SSL *ssl)
{
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;
	int r;

	memset(h, 0, sizeof(*h));
	h->fd = fd;
	h->ssl = ssl;
	if (nghttp2_session_callbacks_new(&cb) != 0)
		return -ENOMEM;
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	/* Until the daemon's SETTINGS arrive, nghttp2 assumes 100 concurrent
	 * streams and holds back more: assume as many as this client has, so
	 * that a test can send more than the daemon allows. */
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cb);
		return -ENOMEM;
	}
	nghttp2_option_set_peer_max_concurrent_streams(opt, H2_MAX_STREAMS);
	r = nghttp2_session_client_new2(&h->session, cb, h, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	if (r != 0)
		return -ENOMEM;
	r = nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, NULL, 0);
	if (r != 0)
		return -ENOMEM;
	return h2_flush(h);
}

int h2_open_unix(struct h2 *h, const char *path)
{
	int fd = unix_fd_connect(path, SOCK_STREAM);

	if (fd < 0)
		return fd;
	return h2_start(h, fd, NULL);
}

void h2_close(struct h2 *h)
{
	nghttp2_session_del(h->session);
	for (size_t i = 0; i < h->n_streams; i++)
		free(h->streams[i].data);
	if (h->ssl) {
		SSL_free(h->ssl);
		ERR_clear_error();
	}
	if (h->fd >= 0)
		close(h->fd);
	memset(h, 0, sizeof(*h));
	h->fd = -1;
}

/* Submit a POST to path with body (NULL: HEADERS with END_STREAM and no
 * DATA) and extra headers (name, value, ..., NULL). Returns the stream or
 * NULL. */
struct h2_stream *h2_submit(struct h2 *h, const char *path, const uint8_t *body, size_t body_len,
			    const char *const *extra)
{
	nghttp2_nv nva[16];
	size_t n = 0;
	struct h2_stream *s;
	nghttp2_data_provider provider = { .read_callback = body_read_cb };
	int32_t id;

#define H2_NV(name, value)                                                            \
	nva[n++] = (nghttp2_nv){ (uint8_t *)(name), (uint8_t *)(value), strlen(name), \
				 strlen(value), NGHTTP2_NV_FLAG_NONE }
	H2_NV(":method", "POST");
	H2_NV(":scheme", h->ssl ? "https" : "http");
	H2_NV(":path", path);
	H2_NV(":authority", "localhost");
	H2_NV("te", "trailers");
	if (!(extra && extra[0] && strcmp(extra[0], "content-type") == 0))
		H2_NV("content-type", "application/grpc");
	for (size_t i = 0; extra && extra[i] && extra[i + 1] && n < 14; i += 2)
		H2_NV(extra[i], extra[i + 1]);
#undef H2_NV
	if (h->n_streams == H2_MAX_STREAMS)
		return NULL;
	s = &h->streams[h->n_streams];
	memset(s, 0, sizeof(*s));
	s->grpc_status = -1;
	s->body = body;
	s->body_len = body_len;
	provider.source.ptr = s;
	id = nghttp2_submit_request(h->session, NULL, nva, n, body ? &provider : NULL, s);
	if (id < 0)
		return NULL;
	s->id = id;
	h->n_streams++;
	if (h2_flush(h) < 0)
		return NULL;
	return s;
}

/* Run until s closes (or the connection ends, or H2_IO_TIMEOUT_MS). */
bool h2_wait_closed(struct h2 *h, struct h2_stream *s)
{
	int64_t deadline = harness_now_ms() + H2_IO_TIMEOUT_MS;

	while (!s->closed && harness_now_ms() < deadline)
		if (h2_pump(h, (int)(deadline - harness_now_ms())) < 0)
			break;
	return s->closed;
}
