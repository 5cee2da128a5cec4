/* metrics_http.h - the optional metrics endpoint: GET /metrics over
 * HTTP/1.1 on --metrics-listen, answering metrics.h's text. Off unless
 * configured, loopback unless told otherwise. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define METRICS_HTTP_MAX_CONNECTIONS	64   /* beyond: 503 and close */
#define METRICS_HTTP_MAX_LINE_BYTES	2048 /* request line; beyond: 414 */
#define METRICS_HTTP_MAX_REQUEST_BYTES	8192 /* request line + headers; beyond: 431 */
#define METRICS_HTTP_REQUEST_TIMEOUT_MS 5000 /* accept to whole request; then 408 */
/* Of the connections, from one address; and the deadline to send the
 * request when all are taken (admission.h: it shrinks from the one above
 * at half full, and the oldest still sending makes room for a new one). */
#define METRICS_HTTP_MAX_PER_SOURCE	8
#define METRICS_HTTP_PRESSED_MS		1000
#define METRICS_HTTP_WRITE_TIMEOUT_MS	10000 /* response queued to sent; then close */
/* After the response: read and drop what the client still sends (so the close
 * is a FIN, not an RST that could destroy the response in flight), this long
 * and this much at most. */
#define METRICS_HTTP_LINGER_MS		1000
#define METRICS_HTTP_LINGER_MAX_BYTES	(64u * 1024)

struct vcd;

/* Listen on vcd->config.metrics_listen (NULL: nothing to do, 0). A
 * non-loopback address is served, with a warning. -errno (logged) when the
 * address is invalid or cannot be bound. */
int metrics_http_start(struct vcd *vcd);
/* The port bound (for --metrics-port-file), -ENOTCONN when off. */
int metrics_http_port(const struct vcd *vcd);
void metrics_http_stop(struct vcd *vcd);

/* Judge the start of a request (what arrived so far, len bytes, not
 * NUL-terminated): 0 while it may still become valid and nothing is decided,
 * else the status to answer:
 *   200 GET /metrics (a query string is ignored), 404 GET of another path,
 *   both once the headers have ended;
 *   400 not a request line (RFC 9112 section 3) or a malformed header line,
 *   405 a method other than GET, 505 an HTTP version other than 1.x, decided
 *   on the request line alone; 414 a request line over
 *   METRICS_HTTP_MAX_LINE_BYTES; 431 a request head over
 *   METRICS_HTTP_MAX_REQUEST_BYTES. */
int metrics_http_judge_request(const char *data, size_t len);
