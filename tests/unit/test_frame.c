/* test_frame.c - the length-prefixed framing shared by every wire. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

static void test_header_round_trip_is_big_endian(void **state)
{
	uint8_t h[FRAME_HEADER_BYTES];
	uint32_t len = 0;

	assert_int_equal(frame_header_encode(0x1234, h), 0);
	assert_int_equal(h[0], 0x00);
	assert_int_equal(h[1], 0x00);
	assert_int_equal(h[2], 0x12);
	assert_int_equal(h[3], 0x34);
	assert_int_equal(frame_header_decode(h, VC_MAX_FRAME_BYTES, &len), 0);
	assert_int_equal(len, 0x1234);
}

static void test_encode_refuses_oversize_payload(void **state)
{
	uint8_t h[FRAME_HEADER_BYTES];

	assert_int_equal(frame_header_encode(VC_MAX_FRAME_BYTES, h), 0);
	assert_int_equal(frame_header_encode(VC_MAX_FRAME_BYTES + 1, h), -EMSGSIZE);
}

static void test_decode_refuses_length_over_maximum_before_buffering(void **state)
{
	const uint8_t h[] = { 0xff, 0xff, 0xff, 0xff };
	uint32_t len = 7;

	assert_int_equal(frame_header_decode(h, VC_MAX_FRAME_BYTES, &len), -EMSGSIZE);
	assert_int_equal(len, 7); /* untouched on failure */
}

static void test_parse_waits_for_whole_frame(void **state)
{
	uint8_t buf[FRAME_HEADER_BYTES + 5] = { 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o' };
	const uint8_t *payload = NULL;
	size_t len = 0;

	for (size_t have = 0; have < sizeof(buf); have++)
		assert_int_equal(frame_parse(buf, have, VC_MAX_FRAME_BYTES, &payload, &len), 0);
	assert_int_equal(frame_parse(buf, sizeof(buf), VC_MAX_FRAME_BYTES, &payload, &len),
			 (int)sizeof(buf));
	assert_ptr_equal(payload, buf + FRAME_HEADER_BYTES);
	assert_int_equal(len, 5);
	assert_memory_equal(payload, "hello", 5);
}

static void test_parse_consumes_one_frame_of_two(void **state)
{
	const uint8_t buf[] = { 0, 0, 0, 1, 'a', 0, 0, 0, 2, 'b', 'c' };
	const uint8_t *payload;
	size_t len;
	int r;

	r = frame_parse(buf, sizeof(buf), VC_MAX_FRAME_BYTES, &payload, &len);
	assert_int_equal(r, 5);
	assert_int_equal(len, 1);
	assert_int_equal(payload[0], 'a');
	r = frame_parse(buf + r, sizeof(buf) - 5, VC_MAX_FRAME_BYTES, &payload, &len);
	assert_int_equal(r, 6);
	assert_int_equal(len, 2);
	assert_memory_equal(payload, "bc", 2);
}

static void test_parse_honours_caller_maximum(void **state)
{
	const uint8_t buf[] = { 0, 0, 0, 3, 'x', 'y', 'z' };
	const uint8_t *payload;
	size_t len;

	assert_int_equal(frame_parse(buf, sizeof(buf), 2, &payload, &len), -EMSGSIZE);
	assert_int_equal(frame_parse(buf, sizeof(buf), 3, &payload, &len), 7);
}

static void test_datagram_must_be_exactly_one_frame(void **state)
{
	const uint8_t good[] = { 0, 0, 0, 2, 'o', 'k' };
	const uint8_t truncated[] = { 0, 0, 0, 3, 'o', 'k' };
	const uint8_t trailing[] = { 0, 0, 0, 1, 'o', 'k' };
	const uint8_t short_header[] = { 0, 0 };
	const uint8_t empty[] = { 0, 0, 0, 0 };
	const uint8_t *payload;
	size_t len;

	assert_int_equal(
		frame_parse_datagram(good, sizeof(good), VC_MAX_FRAME_BYTES, &payload, &len), 0);
	assert_int_equal(len, 2);
	assert_int_equal(frame_parse_datagram(truncated, sizeof(truncated), VC_MAX_FRAME_BYTES,
					      &payload, &len),
			 -EBADMSG);
	assert_int_equal(frame_parse_datagram(trailing, sizeof(trailing), VC_MAX_FRAME_BYTES,
					      &payload, &len),
			 -EBADMSG);
	assert_int_equal(frame_parse_datagram(short_header, sizeof(short_header),
					      VC_MAX_FRAME_BYTES, &payload, &len),
			 -EBADMSG);
	assert_int_equal(
		frame_parse_datagram(empty, sizeof(empty), VC_MAX_FRAME_BYTES, &payload, &len), 0);
	assert_int_equal(len, 0);
}

static void test_datagram_over_maximum_is_emsgsize(void **state)
{
	const uint8_t big[] = { 0, 1, 0, 1, 0 };
	const uint8_t *payload;
	size_t len;

	assert_int_equal(frame_parse_datagram(big, sizeof(big), VC_MAX_FRAME_BYTES, &payload, &len),
			 -EMSGSIZE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_round_trip_is_big_endian),
		cmocka_unit_test(test_encode_refuses_oversize_payload),
		cmocka_unit_test(test_decode_refuses_length_over_maximum_before_buffering),
		cmocka_unit_test(test_parse_waits_for_whole_frame),
		cmocka_unit_test(test_parse_consumes_one_frame_of_two),
		cmocka_unit_test(test_parse_honours_caller_maximum),
		cmocka_unit_test(test_datagram_must_be_exactly_one_frame),
		cmocka_unit_test(test_datagram_over_maximum_is_emsgsize),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
