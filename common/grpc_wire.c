/* grpc_wire.c - gRPC's length-prefixed message framing, grpc-timeout and
 * grpc-message percent-encoding, as in
 * https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md. Pure. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "byteorder.h"
#include "grpc_wire.h"
#include "macro.h"

#define TIMEOUT_MAX_DIGITS 8
#define TIMEOUT_MAX_VALUE  UINT64_C(99999999)

void grpc_wire_prefix(uint8_t out[GRPC_WIRE_PREFIX_BYTES], uint32_t len)
{
	out[0] = 0; /* Compressed-Flag: never set, no compression is offered */
	be32_put(out + 1, len);
}

void grpc_wire_decoder_init(struct grpc_wire_decoder *d, uint32_t max_len)
{
	*d = (struct grpc_wire_decoder){ .max_len = max_len };
}

void grpc_wire_decoder_free(struct grpc_wire_decoder *d)
{
	free(d->buf);
	d->buf = NULL;
}

/* The prefix is complete: check it before anything of the body is kept. */
static int decoder_take_prefix(struct grpc_wire_decoder *d)
{
	const uint8_t *p = d->prefix;

	/* The flag byte is 0 or 1 (PROTOCOL-HTTP2.md, Length-Prefixed-Message);
	 * compressed tells the caller which of the two -EBADMSG cases this is. */
	d->compressed = p[0] == 1;
	if (p[0] != 0)
		return -EBADMSG;
	d->len = be32_get(p + 1);
	if (d->len > d->max_len)
		return -EMSGSIZE;
	d->have = 0;
	return 0;
}

int grpc_wire_decoder_feed(struct grpc_wire_decoder *d, const uint8_t *data, size_t len,
			   int (*on_message)(const uint8_t *msg, size_t msg_len, void *userdata),
			   void *userdata)
{
	static const uint8_t empty[1];

	if (d->error)
		return d->error;

	while (len > 0 || (d->prefix_have == GRPC_WIRE_PREFIX_BYTES && d->have == d->len)) {
		const uint8_t *msg;
		int r;

		if (d->prefix_have < GRPC_WIRE_PREFIX_BYTES) {
			size_t n = GRPC_WIRE_PREFIX_BYTES - d->prefix_have;

			if (n > len)
				n = len;
			memcpy(d->prefix + d->prefix_have, data, n);
			d->prefix_have += n;
			data += n;
			len -= n;
			if (d->prefix_have < GRPC_WIRE_PREFIX_BYTES)
				break;
			r = decoder_take_prefix(d);
			if (r < 0)
				return d->error = r;
			continue;
		}

		if (d->have == 0 && len >= d->len) {
			/* The whole body is in this chunk: no copy. */
			msg = d->len ? data : empty;
			data += d->len;
			len -= d->len;
		} else {
			size_t n = d->len - d->have;

			if (!d->buf) {
				d->buf = malloc(d->len);
				if (!d->buf)
					return d->error = -ENOMEM;
			}
			if (n > len)
				n = len;
			memcpy(d->buf + d->have, data, n);
			d->have += n;
			data += n;
			len -= n;
			if (d->have < d->len)
				break;
			msg = d->buf;
		}

		/* Reset before the callback so that the decoder is consistent
		 * whatever it does; buf is freed after it. */
		uint8_t *owned = d->buf;
		uint32_t msg_len = d->len;

		d->buf = NULL;
		d->prefix_have = 0;
		d->len = d->have = 0;
		r = on_message(msg, msg_len, userdata);
		free(owned);
		if (r)
			return r;
	}
	return 0;
}

bool grpc_wire_decoder_partial(const struct grpc_wire_decoder *d)
{
	return d->prefix_have > 0;
}

int grpc_wire_parse_timeout(const char *value, size_t len, uint64_t *ret_ns)
{
	uint64_t amount = 0, unit_ns, ns;
	size_t digits = len - 1;

	/* TimeoutValue → {positive integer as ASCII string of at most 8 digits},
	 * TimeoutUnit → Hour / Minute / Second / Millisecond / Microsecond /
	 * Nanosecond (PROTOCOL-HTTP2.md, Requests). */
	if (len < 2 || digits > TIMEOUT_MAX_DIGITS)
		return -EINVAL;
	for (size_t i = 0; i < digits; i++) {
		if (value[i] < '0' || value[i] > '9')
			return -EINVAL;
		amount = amount * 10 + (uint64_t)(value[i] - '0');
	}
	switch (value[digits]) {
	case 'H':
		unit_ns = UINT64_C(3600) * 1000000000;
		break;
	case 'M':
		unit_ns = UINT64_C(60) * 1000000000;
		break;
	case 'S':
		unit_ns = 1000000000;
		break;
	case 'm':
		unit_ns = 1000000;
		break;
	case 'u':
		unit_ns = 1000;
		break;
	case 'n':
		unit_ns = 1;
		break;
	default:
		return -EINVAL;
	}
	if (__builtin_mul_overflow(amount, unit_ns, &ns))
		ns = UINT64_MAX;
	*ret_ns = ns;
	return 0;
}

void grpc_wire_format_timeout(uint64_t ns, char out[10])
{
	static const struct {
		uint64_t ns;
		char unit;
	} units[] = {
		{ 1, 'n' },
		{ 1000, 'u' },
		{ 1000000, 'm' },
		{ UINT64_C(1000000000), 'S' },
		{ UINT64_C(60) * 1000000000, 'M' },
		{ UINT64_C(3600) * 1000000000, 'H' },
	};
	size_t i;
	uint64_t amount;

	/* Exact in the coarsest unit that fits 8 digits, else the finest unit
	 * that fits, rounded up: a deadline is never shortened. Hours always fit:
	 * UINT64_MAX ns is about 5.1e6 h. */
	for (i = ELEMENTSOF(units); i-- > 0;) {
		if (ns % units[i].ns == 0 && ns / units[i].ns <= TIMEOUT_MAX_VALUE)
			goto found;
	}
	for (i = 0; i < ELEMENTSOF(units) - 1; i++) {
		if (ns / units[i].ns + (ns % units[i].ns != 0) <= TIMEOUT_MAX_VALUE)
			break;
	}
found:
	amount = ns / units[i].ns + (ns % units[i].ns != 0);
	/* snprintf would do, but -Wformat-truncation cannot see amount's bound. */
	char digits[TIMEOUT_MAX_DIGITS];
	size_t n = 0;

	do {
		digits[n++] = (char)('0' + amount % 10);
		amount /= 10;
	} while (amount > 0 && n < TIMEOUT_MAX_DIGITS);
	for (size_t k = 0; k < n; k++)
		out[k] = digits[n - 1 - k];
	out[n] = units[i].unit;
	out[n + 1] = '\0';
}

size_t grpc_wire_percent_encode(const char *in, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	if (size == 0)
		return 0;
	for (; *in; in++) {
		uint8_t c = (uint8_t)*in;

		/* Percent-Byte-Unencoded → 0x20-0x24 / 0x26-0x7E (PROTOCOL-HTTP2.md,
		 * Responses). */
		if (c >= 0x20 && c <= 0x7e && c != '%') {
			if (n + 1 > size - 1)
				break;
			out[n++] = (char)c;
		} else {
			if (n + 3 > size - 1)
				break;
			out[n++] = '%';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 0xf];
		}
	}
	out[n] = '\0';
	return n;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t grpc_wire_percent_decode(const char *in, size_t in_len, char *out, size_t size)
{
	size_t n = 0;

	if (size == 0)
		return 0;
	for (size_t i = 0; i < in_len && n < size - 1; i++) {
		int hi, lo;

		if (in[i] == '%' && i + 2 < in_len && (hi = hex_value(in[i + 1])) >= 0 &&
		    (lo = hex_value(in[i + 2])) >= 0) {
			out[n++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[n++] = in[i];
		}
	}
	out[n] = '\0';
	return n;
}
