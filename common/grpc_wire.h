/* grpc_wire.h - the pure parts of gRPC over HTTP/2, shared by the daemon's
 * server (daemon/grpc.c) and libvcounter's client (client/control.c): the
 * length-prefixed message framing, grpc-timeout, and grpc-message's
 * percent-encoding. No I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GRPC_WIRE_PREFIX_BYTES 5 /* compressed flag + 4-byte big-endian length */

/* Write the 5-byte prefix of a message of len bytes (uncompressed). */
void grpc_wire_prefix(uint8_t out[GRPC_WIRE_PREFIX_BYTES], uint32_t len);

/* Incremental decoder of the message stream of one HTTP/2 stream: DATA
 * chunks go in as they arrive, whole messages come out. */
struct grpc_wire_decoder {
	uint32_t max_len; /* messages above this are refused */
	uint8_t prefix[GRPC_WIRE_PREFIX_BYTES];
	size_t prefix_have;
	bool compressed; /* after -EBADMSG: true if the flag byte was 1 */
	uint8_t *buf;	 /* current message, malloc'd */
	uint32_t len;
	uint32_t have;
	int error; /* sticky once set */
};

void grpc_wire_decoder_init(struct grpc_wire_decoder *d, uint32_t max_len);
void grpc_wire_decoder_free(struct grpc_wire_decoder *d);

/* Feed len bytes; for each complete message call on_message(msg, msg_len,
 * userdata) (msg valid and non-NULL during the call, also for an empty
 * message; a nonzero return stops feeding, the rest of data is dropped, and
 * is returned, not sticky). Returns 0, the callback's nonzero value, or a
 * sticky error:
 *   -EMSGSIZE  a prefix announces more than max_len (nothing allocated)
 *   -EBADMSG   the compressed flag is set (this project offers no
 *              compression), or the flag byte is neither 0 nor 1
 *   -ENOMEM
 */
int grpc_wire_decoder_feed(struct grpc_wire_decoder *d, const uint8_t *data, size_t len,
			   int (*on_message)(const uint8_t *msg, size_t msg_len, void *userdata),
			   void *userdata);
/* At end of stream: true when a message is cut short (prefix or body). */
bool grpc_wire_decoder_partial(const struct grpc_wire_decoder *d);

/* grpc-timeout: 1 to 8 ASCII digits then one unit of H M S m u n. Sets
 * *ret_ns (saturating at UINT64_MAX); -EINVAL for anything else. */
int grpc_wire_parse_timeout(const char *value, size_t len, uint64_t *ret_ns);
/* Format ns as a grpc-timeout value (at most 8 digits, coarsest unit that
 * keeps it exact or rounds up): out needs 10 bytes. */
void grpc_wire_format_timeout(uint64_t ns, char out[10]);

/* grpc-message: percent-encode every byte outside 0x20..0x7e and '%'.
 * Writes at most size - 1 bytes and a NUL (truncating at a whole escape);
 * returns the length written (strlen(out)). */
size_t grpc_wire_percent_encode(const char *in, char *out, size_t size);
/* Decode into out (NUL-terminated, truncated to size - 1); malformed
 * escapes are kept literally. Returns the decoded length. */
size_t grpc_wire_percent_decode(const char *in, size_t in_len, char *out, size_t size);
