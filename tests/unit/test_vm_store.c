/* test_vm_store.c - the fd store's state record: round trip, and every
 * truncation, bad header field, checksum and seeded random garbage refused
 * without a crash. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vm_store.h"

static void fill(struct vm_store_entry *e, int k, uint32_t n_vcpus)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->vm_id, sizeof(e->vm_id), "vm-%d:a", k);
	snprintf(e->fd_name, sizeof(e->fd_name), "vm%d", k);
	e->role = k % 2 ? VM_ROLE_TARGET : VM_ROLE_SOURCE;
	e->n_vcpus = n_vcpus;
	e->pid = 1000 + k;
	e->uid = 77;
	e->backend = BACKEND_KVM_X86;
	e->arch = COUNTER_ARCH_X86_TSC;
	e->offset_control = k % 2 == 0;
	snprintf(e->probe_detail, sizeof(e->probe_detail), "probe %d", k);
	e->guest_tsc_khz = 2500000;
	e->tsc_scaling_ratio = 1ull << 48;
	e->tsc_scaling_frac_bits = 48;
	e->has_state = true;
	e->state.backend = BACKEND_KVM_X86;
	e->state.arch = COUNTER_ARCH_X86_TSC;
	e->state.guest_tsc_khz = 2500000;
	e->state.tsc_scaling_ratio = 1ull << 48;
	e->state.tsc_scaling_frac_bits = 48;
	e->state.n_vcpus = n_vcpus;
	for (uint32_t i = 0; i < n_vcpus; i++)
		e->state.offset_cycles[i] = (uint64_t)-1000 * (i + 1);
	e->state.anchor.source = ANCHOR_BRACKET;
	e->state.anchor.tai_ns = 123456789;
	e->state.anchor.host_tsc = 987654321;
	e->state.anchor.host_tsc_khz = 2500000;
	e->arrived = k % 2 == 1;
}

static uint8_t *encode3(size_t *ret_len, struct vm_store_entry **ret_in)
{
	struct vm_store_entry *in = calloc(3, sizeof(*in));
	uint8_t *buf;

	assert_non_null(in);
	fill(&in[0], 0, 1);
	fill(&in[1], 1, 4);
	fill(&in[2], 2, 2);
	in[2].has_state = false;
	assert_int_equal(vm_store_encode(in, 3, &buf, ret_len), 0);
	*ret_in = in;
	return buf;
}

static void test_round_trip_keeps_every_field(void **state)
{
	struct vm_store_entry *in, *out = NULL;
	size_t len, n = 0;
	char err[256];
	uint8_t *buf = encode3(&len, &in);

	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(out[i].vm_id, in[i].vm_id);
		assert_string_equal(out[i].fd_name, in[i].fd_name);
		assert_int_equal(out[i].role, in[i].role);
		assert_int_equal(out[i].n_vcpus, in[i].n_vcpus);
		assert_int_equal(out[i].pid, in[i].pid);
		assert_int_equal(out[i].uid, in[i].uid);
		assert_int_equal(out[i].backend, in[i].backend);
		assert_int_equal(out[i].arch, in[i].arch);
		assert_int_equal(out[i].offset_control, in[i].offset_control);
		assert_string_equal(out[i].probe_detail, in[i].probe_detail);
		assert_int_equal(out[i].guest_tsc_khz, in[i].guest_tsc_khz);
		assert_int_equal(out[i].tsc_scaling_ratio, in[i].tsc_scaling_ratio);
		assert_int_equal(out[i].tsc_scaling_frac_bits, in[i].tsc_scaling_frac_bits);
		assert_int_equal(out[i].has_state, in[i].has_state);
		assert_int_equal(out[i].arrived, in[i].arrived);
		if (in[i].has_state) {
			assert_int_equal(out[i].state.n_vcpus, in[i].state.n_vcpus);
			for (uint32_t v = 0; v < in[i].state.n_vcpus; v++)
				assert_int_equal(out[i].state.offset_cycles[v],
						 in[i].state.offset_cycles[v]);
			assert_int_equal(out[i].state.anchor.tai_ns, in[i].state.anchor.tai_ns);
			assert_int_equal(out[i].state.guest_tsc_khz, in[i].state.guest_tsc_khz);
		}
	}
	free(out);
	free(in);
	free(buf);
}

static void test_empty_record_round_trips(void **state)
{
	struct vm_store_entry *out = NULL;
	size_t len, n = 99;
	uint8_t *buf;

	assert_int_equal(vm_store_encode(NULL, 0, &buf, &len), 0);
	assert_int_equal(vm_store_decode(buf, len, &out, &n, NULL, 0), 0);
	assert_int_equal(n, 0);
	assert_null(out);
	free(buf);
}

static void test_every_truncation_is_refused(void **state)
{
	struct vm_store_entry *in, *out = NULL;
	size_t len, n;
	uint8_t *buf = encode3(&len, &in);

	for (size_t cut = 0; cut < len; cut++) {
		/* With the length field fixed up too, so the body parser sees it. */
		uint8_t *copy = malloc(len);

		memcpy(copy, buf, len);
		assert_int_equal(vm_store_decode(copy, cut, &out, &n, NULL, 0), -EBADMSG);
		if (cut >= VM_STORE_HEADER_BYTES + 4) {
			uint32_t crc = vm_store_crc32(copy + 16, cut - 16);

			copy[8] = (uint8_t)cut;
			copy[9] = (uint8_t)(cut >> 8);
			copy[10] = (uint8_t)(cut >> 16);
			copy[11] = (uint8_t)(cut >> 24);
			memcpy(copy + 12, &crc, 4); /* little-endian host (x86, arm64) */
			assert_int_equal(vm_store_decode(copy, cut, &out, &n, NULL, 0), -EBADMSG);
		}
		free(copy);
	}
	free(in);
	free(buf);
}

static void test_bad_header_fields_are_refused(void **state)
{
	struct vm_store_entry *in, *out = NULL;
	size_t len, n;
	char err[256];
	uint8_t *buf = encode3(&len, &in);

	buf[0] ^= 1;
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "magic"));
	buf[0] ^= 1;
	buf[4] = VM_STORE_VERSION + 1;
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "version 3"));
	buf[4] = VM_STORE_VERSION_MIN - 1;
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), -EPROTONOSUPPORT);
	buf[4] = VM_STORE_VERSION;
	buf[8] ^= 1;
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "length"));
	buf[8] ^= 1;
	buf[11] = 0x10; /* 256 MiB */
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), -E2BIG);
	buf[11] = 0;
	/* Every single flipped body byte is caught by the checksum. */
	for (size_t i = VM_STORE_HEADER_BYTES; i < len; i++) {
		buf[i] ^= 0x20;
		assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), -EBADMSG);
		assert_non_null(strstr(err, "checksum"));
		buf[i] ^= 0x20;
	}
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), 0);
	free(out);
	free(in);
	free(buf);
}

static void set_header(uint8_t *buf, uint32_t version, size_t len)
{
	uint32_t crc = vm_store_crc32(buf + VM_STORE_HEADER_BYTES, len - VM_STORE_HEADER_BYTES);

	for (int b = 0; b < 4; b++) {
		buf[4 + b] = (uint8_t)(version >> (8 * b));
		buf[8 + b] = (uint8_t)(len >> (8 * b));
		buf[12 + b] = (uint8_t)(crc >> (8 * b));
	}
}

/* A version 1 record, as the daemon before "arrived" wrote it (the same
 * bytes without each entry's last): read after an upgrade, its VMs did not
 * arrive. A version 2 record relabelled 1 has a byte too many, refused. */
static void test_version_1_record_is_read_as_vms_that_did_not_arrive(void **state)
{
	struct vm_store_entry in, *out = NULL;
	uint8_t *buf;
	size_t len, n = 0;
	char err[256];

	fill(&in, 1, 2);
	assert_true(in.arrived);
	assert_int_equal(vm_store_encode(&in, 1, &buf, &len), 0);
	assert_int_equal(buf[len - 1], 1); /* the entry's arrived byte */

	set_header(buf, 1, len);
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "1 bytes after the last VM"));

	set_header(buf, 1, len - 1);
	assert_int_equal(vm_store_decode(buf, len - 1, &out, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_string_equal(out[0].vm_id, in.vm_id);
	assert_int_equal(out[0].role, VM_ROLE_TARGET);
	assert_true(out[0].has_state);
	assert_int_equal(out[0].state.n_vcpus, 2);
	assert_int_equal(out[0].state.offset_cycles[1], in.state.offset_cycles[1]);
	assert_false(out[0].arrived);
	free(out);
	free(buf);
}

static void test_crc32_matches_the_standard_check_value(void **state)
{
	/* CRC-32/ISO-HDLC check value of "123456789". */
	assert_int_equal(vm_store_crc32((const uint8_t *)"123456789", 9), 0xcbf43926u);
}

static void test_encode_refuses_invalid_entries(void **state)
{
	struct vm_store_entry e;
	uint8_t *buf;
	size_t len;

	fill(&e, 1, 1);
	snprintf(e.fd_name, sizeof(e.fd_name), "vm:1");
	assert_int_equal(vm_store_encode(&e, 1, &buf, &len), -EINVAL);
	fill(&e, 1, 1);
	e.n_vcpus = VC_MAX_VCPUS + 1;
	assert_int_equal(vm_store_encode(&e, 1, &buf, &len), -EINVAL);
	fill(&e, 1, 1);
	e.role = VM_ROLE_NONE;
	assert_int_equal(vm_store_encode(&e, 1, &buf, &len), -EINVAL);
	assert_true(vm_store_fd_name_is_valid("vm0"));
	assert_true(vm_store_fd_name_is_valid("vm1234567890123"));
	assert_false(vm_store_fd_name_is_valid("vm12345678901234"));
	assert_false(vm_store_fd_name_is_valid("vm"));
	assert_false(vm_store_fd_name_is_valid("state"));
	assert_false(vm_store_fd_name_is_valid("vm1a"));
}

/* Garbage with a valid header (so the body parser runs): refused or, if it
 * happens to decode, every entry valid; never a crash (ASan leg). */
static void test_seeded_random_garbage_never_crashes(void **state)
{
	uint8_t buf[512];
	unsigned seed = 42;

	for (int iter = 0; iter < 20000; iter++) {
		size_t len = 20 + (size_t)(rand_r(&seed) % (sizeof(buf) - 20));
		struct vm_store_entry *out = NULL;
		size_t n = 0;
		uint32_t crc;
		int r;

		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rand_r(&seed);
		if (iter % 2) /* small VM counts, so entries get parsed */
			buf[17] = buf[18] = buf[19] = 0, buf[16] &= 3;
		memcpy(buf, VM_STORE_MAGIC, 4);
		buf[4] = (uint8_t)(1 + iter / 2 % 2), buf[5] = buf[6] = buf[7] = 0;
		buf[8] = (uint8_t)len, buf[9] = (uint8_t)(len >> 8), buf[10] = buf[11] = 0;
		crc = vm_store_crc32(buf + 16, len - 16);
		memcpy(buf + 12, &crc, 4);
		r = vm_store_decode(buf, len, &out, &n, NULL, 0);
		assert_true(r == 0 || r == -EBADMSG);
		if (r == 0)
			for (size_t i = 0; i < n; i++)
				assert_true(vm_store_fd_name_is_valid(out[i].fd_name));
		free(out);
	}
}

/* VM_STORE_MAX_VMS (= VCD_MAX_VMS): a record of that many VMs round-trips;
 * one more is neither written nor read. */
static void test_record_of_the_most_vms_round_trips_one_more_is_refused(void **state)
{
	struct vm_store_entry *in = calloc(VM_STORE_MAX_VMS + 1, sizeof(*in)), *out = NULL;
	uint8_t *buf = NULL;
	size_t len, n = 0;
	char err[256];

	assert_non_null(in);
	for (int k = 0; k <= VM_STORE_MAX_VMS; k++)
		fill(&in[k], k, 1);
	assert_int_equal(vm_store_encode(in, VM_STORE_MAX_VMS + 1, &buf, &len), -E2BIG);
	assert_int_equal(vm_store_encode(in, VM_STORE_MAX_VMS, &buf, &len), 0);
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), 0);
	assert_int_equal(n, VM_STORE_MAX_VMS);
	assert_string_equal(out[VM_STORE_MAX_VMS - 1].vm_id, in[VM_STORE_MAX_VMS - 1].vm_id);
	free(out);

	/* A record that claims one more (checksum made to match): refused
	 * before any entry is read. */
	buf[VM_STORE_HEADER_BYTES] = (uint8_t)((VM_STORE_MAX_VMS + 1) & 0xff);
	buf[VM_STORE_HEADER_BYTES + 1] = (uint8_t)((VM_STORE_MAX_VMS + 1) >> 8);
	{
		uint32_t crc =
			vm_store_crc32(buf + VM_STORE_HEADER_BYTES, len - VM_STORE_HEADER_BYTES);

		for (int b = 0; b < 4; b++)
			buf[12 + b] = (uint8_t)(crc >> (8 * b));
	}
	out = NULL;
	assert_int_equal(vm_store_decode(buf, len, &out, &n, err, sizeof(err)), -EBADMSG);
	assert_string_equal(err, "4097 VMs, more than a daemon holds");
	assert_null(out);
	free(buf);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_keeps_every_field),
		cmocka_unit_test(test_empty_record_round_trips),
		cmocka_unit_test(test_record_of_the_most_vms_round_trips_one_more_is_refused),
		cmocka_unit_test(test_every_truncation_is_refused),
		cmocka_unit_test(test_bad_header_fields_are_refused),
		cmocka_unit_test(test_version_1_record_is_read_as_vms_that_did_not_arrive),
		cmocka_unit_test(test_crc32_matches_the_standard_check_value),
		cmocka_unit_test(test_encode_refuses_invalid_entries),
		cmocka_unit_test(test_seeded_random_garbage_never_crashes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
