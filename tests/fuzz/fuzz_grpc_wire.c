/* fuzz_grpc_wire - libFuzzer target: the control API's decoders. The gRPC
 * length-prefixed message stream (grpc_wire_decoder_feed, fed in chunks the
 * input chooses), every whole message unpacked as each Control request type,
 * and the grpc-timeout and grpc-message header parsers.
 *
 * Input: byte 0 = chunk-size seed, byte 1 = max_len selector, the rest is
 * the stream; the stream also goes to the header parsers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_wire.h"
#include "vcounter.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *const requests[] = {
	&vcounter__v1__list_vms_request__descriptor,
	&vcounter__v1__get_host_status_request__descriptor,
	&vcounter__v1__start_migration_request__descriptor,
	&vcounter__v1__get_migration_request__descriptor,
	&vcounter__v1__list_migrations_request__descriptor,
	&vcounter__v1__abort_migration_request__descriptor,
	&vcounter__v1__watch_events_request__descriptor,
};

static int on_message(const uint8_t *msg, size_t msg_len, void *userdata)
{
	size_t *count = userdata;

	for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
		ProtobufCMessage *m = protobuf_c_message_unpack(requests[i], NULL, msg_len, msg);

		if (m)
			protobuf_c_message_free_unpacked(m, NULL);
	}
	/* Stop after a few messages now and then, as the server does when a
	 * unary call sends a second one. */
	return ++*count >= 64 ? 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t max_lens[] = { 0, 5, 64, 4096, 1u << 20 };
	struct grpc_wire_decoder d;
	size_t count = 0, at;
	unsigned chunk_seed;
	uint64_t ns;
	char *text;

	if (size < 2)
		return 0;
	chunk_seed = data[0];
	grpc_wire_decoder_init(&d, max_lens[data[1] % 5]);
	data += 2;
	size -= 2;

	for (at = 0; at < size;) {
		/* Chunks of 1..16 bytes, or the rest when the seed says so. */
		size_t chunk = chunk_seed & 0x80 ? size - at : 1 + (chunk_seed + at) % 16;

		if (chunk > size - at)
			chunk = size - at;
		if (grpc_wire_decoder_feed(&d, data + at, chunk, on_message, &count) != 0)
			break;
		at += chunk;
	}
	(void)grpc_wire_decoder_partial(&d);
	grpc_wire_decoder_free(&d);

	/* Header values: the parsers take (pointer, length); give them a copy
	 * of exactly that length so that ASan sees any read past it. */
	text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	if (grpc_wire_parse_timeout(text, size, &ns) == 0) {
		char out[10];

		grpc_wire_format_timeout(ns, out);
	}
	{
		char out[256];
		char *big = malloc(3 * size + 1);

		(void)grpc_wire_percent_decode(text, size, out, sizeof(out));
		if (big) {
			(void)grpc_wire_percent_decode(text, size, big, 3 * size + 1);
			free(big);
		}
	}
	free(text);
	return 0;
}
