/* test_grpc_wire.c - gRPC's message framing, grpc-timeout and grpc-message
 * percent-encoding (common/grpc_wire.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc_wire.h"
#include "macro.h"

#define MAX_COLLECT 16

struct collected {
	size_t n;
	size_t len[MAX_COLLECT];
	uint8_t *msg[MAX_COLLECT];
	int stop_after; /* return 1 after this many messages; 0: never */
};

static int collect(const uint8_t *msg, size_t msg_len, void *userdata)
{
	struct collected *c = userdata;

	assert_non_null(msg);
	assert_true(c->n < MAX_COLLECT);
	c->msg[c->n] = malloc(msg_len + 1);
	assert_non_null(c->msg[c->n]);
	memcpy(c->msg[c->n], msg, msg_len);
	c->len[c->n] = msg_len;
	c->n++;
	if (c->stop_after && (int)c->n == c->stop_after)
		return 1;
	return 0;
}

static void collected_free(struct collected *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->msg[i]);
}

/* Append one framed message to buf at *pos. */
static void put_message(uint8_t *buf, size_t *pos, const char *body, uint32_t len)
{
	grpc_wire_prefix(buf + *pos, len);
	memcpy(buf + *pos + GRPC_WIRE_PREFIX_BYTES, body, len);
	*pos += GRPC_WIRE_PREFIX_BYTES + len;
}

static void test_prefix_is_flag_zero_then_big_endian_length(void **state)
{
	uint8_t p[GRPC_WIRE_PREFIX_BYTES];

	grpc_wire_prefix(p, 0x01020304);
	assert_int_equal(p[0], 0);
	assert_int_equal(p[1], 0x01);
	assert_int_equal(p[2], 0x02);
	assert_int_equal(p[3], 0x03);
	assert_int_equal(p[4], 0x04);
	grpc_wire_prefix(p, 0);
	assert_memory_equal(p, "\0\0\0\0\0", 5);
}

static void test_decoder_round_trips_prefix(void **state)
{
	uint8_t buf[64];
	size_t pos = 0;
	struct collected c = { 0 };
	struct grpc_wire_decoder d;

	put_message(buf, &pos, "hello", 5);
	grpc_wire_decoder_init(&d, 1024);
	assert_int_equal(grpc_wire_decoder_feed(&d, buf, pos, collect, &c), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.len[0], 5);
	assert_memory_equal(c.msg[0], "hello", 5);
	assert_false(grpc_wire_decoder_partial(&d));
	grpc_wire_decoder_free(&d);
	collected_free(&c);
}

/* Three messages (one empty) fed in every chunk size from 1 byte up: the same
 * messages come out whatever the splits. */
static void test_decoder_is_independent_of_chunk_splits(void **state)
{
	uint8_t buf[128];
	size_t pos = 0;

	put_message(buf, &pos, "first message", 13);
	put_message(buf, &pos, "", 0);
	put_message(buf, &pos, "third", 5);

	for (size_t chunk = 1; chunk <= pos; chunk++) {
		struct collected c = { 0 };
		struct grpc_wire_decoder d;

		grpc_wire_decoder_init(&d, 64);
		for (size_t off = 0; off < pos; off += chunk) {
			size_t n = pos - off < chunk ? pos - off : chunk;

			assert_int_equal(grpc_wire_decoder_feed(&d, buf + off, n, collect, &c), 0);
			/* partial exactly while inside a message */
			assert_int_equal(grpc_wire_decoder_partial(&d),
					 off + n != 18 && off + n != 23 && off + n != pos);
		}
		assert_int_equal(c.n, 3);
		assert_int_equal(c.len[0], 13);
		assert_memory_equal(c.msg[0], "first message", 13);
		assert_int_equal(c.len[1], 0);
		assert_int_equal(c.len[2], 5);
		assert_memory_equal(c.msg[2], "third", 5);
		assert_null(d.buf);
		grpc_wire_decoder_free(&d);
		collected_free(&c);
	}
}

/* Seeded random splits over many messages of random lengths. */
static void test_decoder_random_splits_deliver_every_message(void **state)
{
	srand(20240511);
	for (int round = 0; round < 1000; round++) {
		uint8_t buf[8 * (GRPC_WIRE_PREFIX_BYTES + 40)];
		char body[40];
		size_t pos = 0, n_msgs = 1 + (size_t)rand() % 8, lens[8];
		struct collected c = { 0 };
		struct grpc_wire_decoder d;

		for (size_t i = 0; i < n_msgs; i++) {
			lens[i] = (size_t)rand() % sizeof(body);
			memset(body, (int)('a' + i), lens[i]);
			put_message(buf, &pos, body, (uint32_t)lens[i]);
		}
		grpc_wire_decoder_init(&d, sizeof(body));
		for (size_t off = 0; off < pos;) {
			size_t n = 1 + (size_t)rand() % 12;

			if (n > pos - off)
				n = pos - off;
			assert_int_equal(grpc_wire_decoder_feed(&d, buf + off, n, collect, &c), 0);
			off += n;
		}
		assert_false(grpc_wire_decoder_partial(&d));
		assert_int_equal(c.n, n_msgs);
		for (size_t i = 0; i < n_msgs; i++) {
			assert_int_equal(c.len[i], lens[i]);
			for (size_t k = 0; k < lens[i]; k++)
				assert_int_equal(c.msg[i][k], 'a' + i);
		}
		grpc_wire_decoder_free(&d);
		collected_free(&c);
	}
}

static void test_decoder_refuses_oversize_length_without_allocating(void **state)
{
	const uint8_t prefix[] = { 0, 0, 0, 0x04, 0x01 }; /* 1025 */
	uint8_t ok[GRPC_WIRE_PREFIX_BYTES];
	struct collected c = { 0 };
	struct grpc_wire_decoder d;

	grpc_wire_decoder_init(&d, 1024);
	assert_int_equal(grpc_wire_decoder_feed(&d, prefix, sizeof(prefix), collect, &c),
			 -EMSGSIZE);
	assert_null(d.buf);
	assert_false(d.compressed);
	/* sticky: nothing more is decoded on this stream */
	grpc_wire_prefix(ok, 0);
	assert_int_equal(grpc_wire_decoder_feed(&d, ok, sizeof(ok), collect, &c), -EMSGSIZE);
	assert_int_equal(c.n, 0);
	grpc_wire_decoder_free(&d);

	/* exactly max_len is fine */
	grpc_wire_decoder_init(&d, 1025);
	assert_int_equal(grpc_wire_decoder_feed(&d, prefix, sizeof(prefix), collect, &c), 0);
	assert_true(grpc_wire_decoder_partial(&d));
	grpc_wire_decoder_free(&d);
}

static void test_decoder_refuses_oversize_length_of_4_gib(void **state)
{
	const uint8_t prefix[] = { 0, 0xff, 0xff, 0xff, 0xff };
	struct collected c = { 0 };
	struct grpc_wire_decoder d;

	grpc_wire_decoder_init(&d, 1u << 20);
	for (size_t i = 0; i < sizeof(prefix) - 1; i++)
		assert_int_equal(grpc_wire_decoder_feed(&d, prefix + i, 1, collect, &c), 0);
	assert_int_equal(grpc_wire_decoder_feed(&d, prefix + 4, 1, collect, &c), -EMSGSIZE);
	assert_null(d.buf);
	grpc_wire_decoder_free(&d);
}

static void test_decoder_refuses_compressed_flag(void **state)
{
	const uint8_t msg[] = { 1, 0, 0, 0, 1, 'x' };
	struct collected c = { 0 };
	struct grpc_wire_decoder d;

	grpc_wire_decoder_init(&d, 1024);
	assert_int_equal(grpc_wire_decoder_feed(&d, msg, sizeof(msg), collect, &c), -EBADMSG);
	assert_true(d.compressed); /* tells the server INTERNAL from UNIMPLEMENTED */
	assert_int_equal(c.n, 0);
	assert_int_equal(grpc_wire_decoder_feed(&d, msg, sizeof(msg), collect, &c), -EBADMSG);
	grpc_wire_decoder_free(&d);
}

static void test_decoder_refuses_flag_byte_2(void **state)
{
	const uint8_t msg[] = { 2, 0, 0, 0, 0 };
	struct collected c = { 0 };
	struct grpc_wire_decoder d;

	grpc_wire_decoder_init(&d, 1024);
	assert_int_equal(grpc_wire_decoder_feed(&d, msg, sizeof(msg), collect, &c), -EBADMSG);
	assert_false(d.compressed);
	assert_int_equal(c.n, 0);
	grpc_wire_decoder_free(&d);
}

static void test_decoder_checks_prefix_of_second_message(void **state)
{
	uint8_t buf[32];
	size_t pos = 0;
	struct collected c = { 0 };
	struct grpc_wire_decoder d;

	put_message(buf, &pos, "ok", 2);
	buf[pos++] = 0xff; /* a bad flag after a good message */
	grpc_wire_decoder_init(&d, 1024);
	assert_int_equal(grpc_wire_decoder_feed(&d, buf, pos, collect, &c), 0);
	/* the prefix is incomplete: not judged yet */
	assert_true(grpc_wire_decoder_partial(&d));
	assert_int_equal(grpc_wire_decoder_feed(&d, (const uint8_t *)"\0\0\0\0", 4, collect, &c),
			 -EBADMSG);
	assert_int_equal(c.n, 1);
	grpc_wire_decoder_free(&d);
	collected_free(&c);
}

static void test_decoder_detects_partial_prefix_and_body(void **state)
{
	uint8_t buf[32];
	size_t pos = 0;
	struct collected c = { 0 };
	struct grpc_wire_decoder d;

	put_message(buf, &pos, "abcdef", 6);
	grpc_wire_decoder_init(&d, 1024);
	assert_false(grpc_wire_decoder_partial(&d)); /* nothing yet: no message cut */
	assert_int_equal(grpc_wire_decoder_feed(&d, buf, 3, collect, &c), 0);
	assert_true(grpc_wire_decoder_partial(&d)); /* inside the prefix */
	assert_int_equal(grpc_wire_decoder_feed(&d, buf + 3, 4, collect, &c), 0);
	assert_true(grpc_wire_decoder_partial(&d)); /* inside the body */
	assert_non_null(d.buf);
	assert_int_equal(c.n, 0);
	grpc_wire_decoder_free(&d); /* frees the half message */
	assert_null(d.buf);
}

static void test_decoder_delivers_zero_length_messages(void **state)
{
	const uint8_t two_empty[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
	struct collected c = { 0 };
	struct grpc_wire_decoder d;

	grpc_wire_decoder_init(&d, 0); /* max 0 still allows empty messages */
	assert_int_equal(grpc_wire_decoder_feed(&d, two_empty, sizeof(two_empty), collect, &c), 0);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.len[0], 0);
	assert_int_equal(c.len[1], 0);
	assert_false(grpc_wire_decoder_partial(&d));
	grpc_wire_decoder_free(&d);
	collected_free(&c);
}

static void test_decoder_callback_return_stops_feeding(void **state)
{
	uint8_t buf[32];
	size_t pos = 0;
	struct collected c = { .stop_after = 1 };
	struct grpc_wire_decoder d;

	put_message(buf, &pos, "one", 3);
	put_message(buf, &pos, "two", 3);
	grpc_wire_decoder_init(&d, 1024);
	assert_int_equal(grpc_wire_decoder_feed(&d, buf, pos, collect, &c), 1);
	assert_int_equal(c.n, 1);
	assert_memory_equal(c.msg[0], "one", 3);
	grpc_wire_decoder_free(&d);
	collected_free(&c);
}

static void test_timeout_parses_every_unit(void **state)
{
	static const struct {
		const char *value;
		uint64_t ns;
	} cases[] = {
		{ "1H", UINT64_C(3600000000000) },
		{ "2M", UINT64_C(120000000000) },
		{ "3S", UINT64_C(3000000000) },
		{ "4m", UINT64_C(4000000) },
		{ "5u", UINT64_C(5000) },
		{ "6n", UINT64_C(6) },
		{ "0n", 0 },
		{ "00000001S", UINT64_C(1000000000) },
		{ "99999999n", UINT64_C(99999999) },
		{ "99999999S", UINT64_C(99999999000000000) },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		uint64_t ns = 42;

		assert_int_equal(
			grpc_wire_parse_timeout(cases[i].value, strlen(cases[i].value), &ns), 0);
		assert_int_equal(ns, cases[i].ns);
	}
}

static void test_timeout_refuses_malformed_values(void **state)
{
	static const char *const bad[] = {
		"",	      /* empty */
		"S",	      /* no digits */
		"10",	      /* no unit */
		"10s",	      /* unit is case-sensitive: s is not a unit */
		"10x",	      /* bad unit */
		"123456789S", /* 9 digits */
		"-1S",	      /* sign */
		" 1S",	      /* space */
		"1 S",	      /* space */
		"1SS",	      /* trailing */
	};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		uint64_t ns = 42;

		assert_int_equal(grpc_wire_parse_timeout(bad[i], strlen(bad[i]), &ns), -EINVAL);
		assert_int_equal(ns, 42); /* untouched */
	}
}

static void test_timeout_parse_uses_len_not_nul(void **state)
{
	uint64_t ns = 0;

	/* A header value is not NUL-terminated: only len bytes count. */
	assert_int_equal(grpc_wire_parse_timeout("15Sjunk", 3, &ns), 0);
	assert_int_equal(ns, UINT64_C(15000000000));
}

static void test_timeout_saturates_at_uint64_max(void **state)
{
	uint64_t ns = 0;

	/* 99999999 hours = 3.6e20 ns, over UINT64_MAX (1.8e19) */
	assert_int_equal(grpc_wire_parse_timeout("99999999H", 9, &ns), 0);
	assert_true(ns == UINT64_MAX);
	/* 5124095 h fits, 5124096 h does not */
	assert_int_equal(grpc_wire_parse_timeout("5124095H", 8, &ns), 0);
	assert_true(ns == UINT64_C(5124095) * UINT64_C(3600000000000));
	assert_int_equal(grpc_wire_parse_timeout("5124096H", 8, &ns), 0);
	assert_true(ns == UINT64_MAX);
}

static void test_timeout_format_picks_exact_coarsest_unit(void **state)
{
	static const struct {
		uint64_t ns;
		const char *value;
	} cases[] = {
		{ 0, "0H" },
		{ 1, "1n" },
		{ 1000, "1u" },
		{ UINT64_C(1500000), "1500u" },
		{ UINT64_C(1000000000), "1S" },
		{ UINT64_C(60000000000), "1M" },
		{ UINT64_C(90000000000), "90S" },
		{ UINT64_C(3600000000000), "1H" },
		{ UINT64_C(99999999), "99999999n" },
		/* 100000001 ns: not exact in 8 digits of any unit; rounded up */
		{ UINT64_C(100000001), "100001u" },
		{ UINT64_MAX, "5124096H" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char out[10];

		memset(out, 'X', sizeof(out));
		grpc_wire_format_timeout(cases[i].ns, out);
		assert_string_equal(out, cases[i].value);
	}
}

/* Formatting then parsing never shortens a deadline, and is exact when the
 * value is exact in some unit within 8 digits; seeded random values. */
static void test_timeout_format_round_trips(void **state)
{
	srand(7);
	for (int i = 0; i < 1000; i++) {
		uint64_t ns = ((uint64_t)rand() << 31 | (uint64_t)rand()) >> (rand() % 62);
		uint64_t back = 0;
		char out[10];

		grpc_wire_format_timeout(ns, out);
		assert_true(strlen(out) <= 9);
		assert_int_equal(grpc_wire_parse_timeout(out, strlen(out), &back), 0);
		assert_true(back >= ns);
		if (ns <= UINT64_C(99999999))
			assert_true(back == ns);
		/* rounded up by less than one unit of the finest unit that fits,
		 * and a finer unit (at most 1000 times finer) overflowed 8 digits:
		 * relative error under 1e-5 */
		assert_true(back - ns <= ns / 100000 + 1);
	}
}

static void test_percent_encode_escapes_non_ascii_and_percent(void **state)
{
	char out[64];

	assert_int_equal(grpc_wire_percent_encode("plain text ~!", out, sizeof(out)), 13);
	assert_string_equal(out, "plain text ~!");
	assert_int_equal(grpc_wire_percent_encode("50% d\xc3\xa9j\xc3\xa0\n", out, sizeof(out)),
			 strlen("50%25 d%C3%A9j%C3%A0%0A"));
	assert_string_equal(out, "50%25 d%C3%A9j%C3%A0%0A");
	assert_int_equal(grpc_wire_percent_encode("\x7f\x1f", out, sizeof(out)), 6);
	assert_string_equal(out, "%7F%1F");
}

static void test_percent_encode_truncates_at_whole_escape(void **state)
{
	char out[6];

	/* "ab%C3%A9": room for 5 bytes: "ab" + "%C3" = 5 */
	assert_int_equal(grpc_wire_percent_encode("ab\xc3\xa9", out, sizeof(out)), 5);
	assert_string_equal(out, "ab%C3");
	/* "abc%C3": 6 bytes do not fit in 5: the escape is dropped whole */
	assert_int_equal(grpc_wire_percent_encode("abc\xc3", out, sizeof(out)), 3);
	assert_string_equal(out, "abc");
	assert_int_equal(grpc_wire_percent_encode("abcdefgh", out, sizeof(out)), 5);
	assert_string_equal(out, "abcde");
	assert_int_equal(grpc_wire_percent_encode("abc", out, 1), 0);
	assert_string_equal(out, "");
	assert_int_equal(grpc_wire_percent_encode("abc", out, 0), 0);
}

static void test_percent_decode_inverts_encode(void **state)
{
	const char *in = "50% d\xc3\xa9j\xc3\xa0\n \x01\x7f end";
	char enc[128], dec[64];
	size_t n;

	n = grpc_wire_percent_encode(in, enc, sizeof(enc));
	assert_int_equal(grpc_wire_percent_decode(enc, n, dec, sizeof(dec)), strlen(in));
	assert_string_equal(dec, in);
	/* lower-case hex is accepted */
	assert_int_equal(grpc_wire_percent_decode("%c3%a9", 6, dec, sizeof(dec)), 2);
	assert_string_equal(dec, "\xc3\xa9");
}

static void test_percent_decode_keeps_malformed_escapes(void **state)
{
	char dec[32];

	assert_int_equal(grpc_wire_percent_decode("100%", 4, dec, sizeof(dec)), 4);
	assert_string_equal(dec, "100%");
	assert_int_equal(grpc_wire_percent_decode("%4", 2, dec, sizeof(dec)), 2);
	assert_string_equal(dec, "%4");
	assert_int_equal(grpc_wire_percent_decode("%zz%41", 6, dec, sizeof(dec)), 4);
	assert_string_equal(dec, "%zzA");
	/* in_len bounds the input: "%41" cut to "%4" is kept literally */
	assert_int_equal(grpc_wire_percent_decode("%41", 2, dec, sizeof(dec)), 2);
	assert_string_equal(dec, "%4");
}

static void test_percent_decode_truncates_to_size(void **state)
{
	char dec[4];

	assert_int_equal(grpc_wire_percent_decode("%41%42%43%44", 12, dec, sizeof(dec)), 3);
	assert_string_equal(dec, "ABC");
	assert_int_equal(grpc_wire_percent_decode("x", 1, dec, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefix_is_flag_zero_then_big_endian_length),
		cmocka_unit_test(test_decoder_round_trips_prefix),
		cmocka_unit_test(test_decoder_is_independent_of_chunk_splits),
		cmocka_unit_test(test_decoder_random_splits_deliver_every_message),
		cmocka_unit_test(test_decoder_refuses_oversize_length_without_allocating),
		cmocka_unit_test(test_decoder_refuses_oversize_length_of_4_gib),
		cmocka_unit_test(test_decoder_refuses_compressed_flag),
		cmocka_unit_test(test_decoder_refuses_flag_byte_2),
		cmocka_unit_test(test_decoder_checks_prefix_of_second_message),
		cmocka_unit_test(test_decoder_detects_partial_prefix_and_body),
		cmocka_unit_test(test_decoder_delivers_zero_length_messages),
		cmocka_unit_test(test_decoder_callback_return_stops_feeding),
		cmocka_unit_test(test_timeout_parses_every_unit),
		cmocka_unit_test(test_timeout_refuses_malformed_values),
		cmocka_unit_test(test_timeout_parse_uses_len_not_nul),
		cmocka_unit_test(test_timeout_saturates_at_uint64_max),
		cmocka_unit_test(test_timeout_format_picks_exact_coarsest_unit),
		cmocka_unit_test(test_timeout_format_round_trips),
		cmocka_unit_test(test_percent_encode_escapes_non_ascii_and_percent),
		cmocka_unit_test(test_percent_encode_truncates_at_whole_escape),
		cmocka_unit_test(test_percent_decode_inverts_encode),
		cmocka_unit_test(test_percent_decode_keeps_malformed_escapes),
		cmocka_unit_test(test_percent_decode_truncates_to_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
