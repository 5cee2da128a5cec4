/* frame.c - length-prefixed framing shared by daemon and client. */
#include <errno.h>

#include "byteorder.h"
#include "frame.h"

int frame_header_encode(size_t len, uint8_t out[FRAME_HEADER_BYTES])
{
	if (len > VC_MAX_FRAME_BYTES)
		return -EMSGSIZE;
	be32_put(out, (uint32_t)len);
	return 0;
}

int frame_header_decode(const uint8_t in[FRAME_HEADER_BYTES], size_t max_payload_bytes,
			uint32_t *ret_len)
{
	uint32_t len = be32_get(in);

	if (len > max_payload_bytes)
		return -EMSGSIZE;
	*ret_len = len;
	return 0;
}

int frame_parse(const uint8_t *buf, size_t len, size_t max_payload_bytes,
		const uint8_t **ret_payload, size_t *ret_len)
{
	uint32_t payload_len;
	int r;

	if (len < FRAME_HEADER_BYTES)
		return 0;
	r = frame_header_decode(buf, max_payload_bytes, &payload_len);
	if (r < 0)
		return r;
	if (len - FRAME_HEADER_BYTES < payload_len)
		return 0;
	*ret_payload = buf + FRAME_HEADER_BYTES;
	*ret_len = payload_len;
	return (int)(FRAME_HEADER_BYTES + payload_len);
}

int frame_parse_datagram(const uint8_t *buf, size_t len, size_t max_payload_bytes,
			 const uint8_t **ret_payload, size_t *ret_len)
{
	const uint8_t *payload;
	size_t payload_len;
	int r;

	r = frame_parse(buf, len, max_payload_bytes, &payload, &payload_len);
	if (r < 0)
		return r;
	if (r == 0 || (size_t)r != len)
		return -EBADMSG;
	*ret_payload = payload;
	*ret_len = payload_len;
	return 0;
}
