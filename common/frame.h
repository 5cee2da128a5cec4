/* frame.h - the one framing used on every wire: a 4-byte big-endian payload
 * length, then the payload (one protobuf envelope). The length is checked
 * against a hard maximum before anything is buffered or unpacked. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_BYTES 4
/* Largest payload accepted on any wire: a CounterState for VC_MAX_VCPUS
 * vCPUs is ~11 KiB packed; a report carries two offset arrays. */
#define VC_MAX_FRAME_BYTES (64u * 1024)

/* Write the header for a payload of len bytes. -EMSGSIZE if len > max. */
int frame_header_encode(size_t len, uint8_t out[FRAME_HEADER_BYTES]);

/* Parse a header: payload length, or -EMSGSIZE if over max_payload_bytes. */
int frame_header_decode(const uint8_t in[FRAME_HEADER_BYTES], size_t max_payload_bytes,
			uint32_t *ret_len);

/* Find one whole frame at the start of a stream buffer.
 *   > 0: bytes consumed (header + payload), with ret_payload and ret_len set
 *     0: need more bytes
 *   -EMSGSIZE: declared length over max_payload_bytes (connection is dead:
 *     there is no way to resynchronise a stream). */
int frame_parse(const uint8_t *buf, size_t len, size_t max_payload_bytes,
		const uint8_t **ret_payload, size_t *ret_len);

/* A datagram (SOCK_SEQPACKET message) must be exactly one whole frame:
 * 0 and payload on success, -EBADMSG if truncated or with trailing bytes,
 * -EMSGSIZE if over the maximum. */
int frame_parse_datagram(const uint8_t *buf, size_t len, size_t max_payload_bytes,
			 const uint8_t **ret_payload, size_t *ret_len);
