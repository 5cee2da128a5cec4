/* test_ptp_mgmt.c - ptp4l's management GETs and answers (daemon/ptp_mgmt.c):
 * the request's bytes, every refusal of an answer, TIME_STATUS_NP,
 * CURRENT_DATA_SET and PORT_PROPERTIES_NP, and the clock-error bound. The real ptp4l answers them in
 * the two-host rig (vm_two_host_ptp). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ptp_answer.h"
#include "ptp_mgmt.h"

static void test_get_is_an_empty_management_get(void **state)
{
	uint8_t buf[PTP_MGMT_GET_LEN];

	(void)state;
	ptp_mgmt_get(PTP_MGMT_TIME_STATUS_NP, 0x1234, 7, buf);
	assert_int_equal(buf[0], 0x0d);		    /* messageType MANAGEMENT */
	assert_int_equal(buf[1], 0x02);		    /* versionPTP 2 */
	assert_int_equal(buf[2] << 8 | buf[3], 54); /* messageLength */
	assert_int_equal(buf[4], 0);		    /* domainNumber */
	assert_int_equal(buf[28] << 8 | buf[29], 0x1234);
	assert_int_equal(buf[30] << 8 | buf[31], 7);
	assert_int_equal(buf[32], 0x04); /* controlField: management */
	assert_int_equal(buf[33], 0x7f);
	for (int i = 34; i < 44; i++) /* targetPortIdentity: every clock and port */
		assert_int_equal(buf[i], 0xff);
	assert_int_equal(buf[44], 0);			  /* startingBoundaryHops */
	assert_int_equal(buf[45], 0);			  /* boundaryHops: ptp4l forwards nothing */
	assert_int_equal(buf[46], 0);			  /* GET */
	assert_int_equal(buf[48] << 8 | buf[49], 0x0001); /* TLV MANAGEMENT */
	assert_int_equal(buf[50] << 8 | buf[51], 2);	  /* the id alone */
	assert_int_equal(buf[52] << 8 | buf[53], 0xc000);
}

static void test_time_status_and_current_ds_are_read(void **state)
{
	uint8_t buf[PTP_ANSWER_MAX];
	size_t len = ptp_answer_time_status(buf, 9, -1234, INT64_C(1796650000123456789), 1);
	struct ptp_time_status ts;
	struct ptp_current_ds ds;
	uint16_t id, seq;

	(void)state;
	assert_int_equal(ptp_mgmt_reply_id(buf, len, &id, &seq), 0);
	assert_int_equal(id, PTP_MGMT_TIME_STATUS_NP);
	assert_int_equal(seq, 9);
	assert_int_equal(ptp_mgmt_time_status(buf, len, &ts), 0);
	assert_true(ts.master_offset_ns == -1234);
	assert_true(ts.ingress_time_ns == INT64_C(1796650000123456789));
	assert_true(ts.gm_present);
	assert_memory_equal(ts.gm_identity, "\x52\x54\x00\xff\xfe\x12\x34\x56", 8);
	/* Not the other one. */
	assert_int_equal(ptp_mgmt_current_ds(buf, len, &ds), -EBADMSG);

	len = ptp_answer_response(buf, PTP_MGMT_CURRENT_DATA_SET, 9, 18);
	ptp_answer_be16(buf + 54, 1);
	ptp_answer_be64(buf + 56, -5 * 65536 - 3); /* TimeInterval: ns << 16 */
	ptp_answer_be64(buf + 64, INT64_C(41500) * 65536 + 65535);
	assert_int_equal(ptp_mgmt_current_ds(buf, len, &ds), 0);
	assert_int_equal(ds.steps_removed, 1);
	assert_true(ds.offset_from_master_ns == -5);
	assert_true(ds.mean_path_delay_ns == 41500);
	assert_int_equal(ptp_mgmt_time_status(buf, len, &ts), -EBADMSG);
}

static void test_answers_refused(void **state)
{
	static const struct {
		const char *name;
		size_t at;
		uint8_t value;
		int cut; /* bytes cut off the end */
		int rc;
	} cases[] = {
		{ "truncated", 0, 0x0d, 60, -EBADMSG },
		{ "data cut short", 0, 0x0d, 1, -EBADMSG },
		{ "a Sync", 0, 0x00, 0, -EBADMSG },
		{ "PTP version 1", 1, 0x01, 0, -EBADMSG },
		{ "a GET, not a RESPONSE", 46, 0x00, 0, -EBADMSG },
		{ "an ACKNOWLEDGE", 46, 0x04, 0, -EBADMSG },
		{ "length beyond the message", 2, 0x7f, 0, -EBADMSG },
		{ "TLV longer than the message", 50, 0x7f, 0, -EBADMSG },
		{ "another TLV type", 49, 0x07, 0, -EBADMSG },
	};
	uint8_t buf[PTP_ANSWER_MAX];
	struct ptp_time_status ts, untouched;
	uint16_t id, seq;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = ptp_answer_time_status(buf, 9, 1, 2, 1);

		print_message("case: %s\n", cases[i].name);
		buf[cases[i].at] = cases[i].value;
		len -= (size_t)cases[i].cut;
		memset(&ts, 0x5a, sizeof(ts));
		untouched = ts;
		assert_int_equal(ptp_mgmt_time_status(buf, len, &ts), cases[i].rc);
		assert_memory_equal(&ts, &untouched, sizeof(ts));
	}
	/* MANAGEMENT_ERROR_STATUS names the id it is about. */
	ptp_answer_response(buf, 0, 9, 8);
	ptp_answer_be16(buf + 48, 0x0002);
	ptp_answer_be16(buf + 52, 0x0002); /* NO_SUCH_ID */
	ptp_answer_be16(buf + 54, PTP_MGMT_TIME_STATUS_NP);
	assert_int_equal(ptp_mgmt_reply_id(buf, 62, &id, &seq), -EPROTO);
	assert_int_equal(id, PTP_MGMT_TIME_STATUS_NP);
}

/* How the port stamps, and on which interface: what tells a software-stamping
 * ptp4l (it disciplines CLOCK_REALTIME) from a hardware one (a NIC's clock). */
static void test_port_properties_are_read(void **state)
{
	uint8_t buf[PTP_ANSWER_MAX];
	struct ptp_port_props p, untouched;
	size_t len;

	(void)state;
	len = ptp_answer_port_props(buf, 3, 0, "ens3");
	assert_int_equal(len % 2, 0); /* 13 + 4 bytes of data, padded */
	assert_int_equal(ptp_mgmt_port_props(buf, len, &p), 0);
	assert_int_equal(p.port_number, 1);
	assert_int_equal(p.port_state, 9);
	assert_int_equal(p.timestamping, PTP_MGMT_TS_SOFTWARE);
	assert_string_equal(p.interface, "ens3");

	len = ptp_answer_port_props(buf, 3, 1, "enp1s0f0");
	assert_int_equal(ptp_mgmt_port_props(buf, len, &p), 0);
	assert_int_equal(p.timestamping, 1);
	assert_string_equal(p.interface, "enp1s0f0");

	/* A name longer than the struct holds is cut; one with bytes that are
	 * not printable is made printable (it reaches the log). */
	len = ptp_answer_port_props(buf, 3, 0, "a-name-of-forty-bytes-from-a-peer-xxxxxx");
	assert_int_equal(ptp_mgmt_port_props(buf, len, &p), 0);
	assert_int_equal(strlen(p.interface), 32);
	assert_memory_equal(p.interface, "a-name-of-forty-bytes-from-a-pee", 32);
	len = ptp_answer_port_props(buf, 3, 0, "eth.[2J");
	buf[54 + 13 + 3] = 0x1b;
	assert_int_equal(ptp_mgmt_port_props(buf, len, &p), 0);
	assert_null(strchr(p.interface, 0x1b));

	/* Refused: a name longer than the data, data shorter than the fixed
	 * part, another id's answer; ret untouched. */
	memset(&p, 0x5a, sizeof(p));
	untouched = p;
	len = ptp_answer_port_props(buf, 3, 0, "ens3");
	buf[54 + 12] = 200;
	assert_int_equal(ptp_mgmt_port_props(buf, len, &p), -EBADMSG);
	len = ptp_answer_response(buf, PTP_MGMT_PORT_PROPERTIES_NP, 3, 12);
	assert_int_equal(ptp_mgmt_port_props(buf, len, &p), -EBADMSG);
	len = ptp_answer_time_status(buf, 3, 1, 2, 1);
	assert_int_equal(ptp_mgmt_port_props(buf, len, &p), -EBADMSG);
	assert_memory_equal(&p, &untouched, sizeof(p));
}

/* |offset| + mean path delay + drift since the Sync. */
static void test_bound(void **state)
{
	struct ptp_time_status ts = { .master_offset_ns = -1234,
				      .ingress_time_ns = 1000000000,
				      .gm_present = true };
	struct ptp_current_ds ds = { .mean_path_delay_ns = 41500 };
	bool unsynced = true;

	(void)state;
	assert_true(ptp_mgmt_bound_ns(&ts, &ds, 1000000000, 10, &unsynced) == 42734);
	assert_false(unsynced);
	/* 0.5 s after the Sync at 10 ppm: 5 us more. */
	assert_true(ptp_mgmt_bound_ns(&ts, &ds, 1500000000, 10, &unsynced) == 47734);
	/* A Sync stamped after now (the clock stepped back) ages nothing. */
	assert_true(ptp_mgmt_bound_ns(&ts, &ds, 900000000, 10, &unsynced) == 42734);
	/* This clock its own grandmaster: nothing to tell. */
	ts.gm_present = false;
	assert_true(ptp_mgmt_bound_ns(&ts, &ds, 1000000000, 10, &unsynced) == UINT64_MAX);
	assert_true(unsynced);
	ts.gm_present = true;
	ds.mean_path_delay_ns = -1;
	assert_true(ptp_mgmt_bound_ns(&ts, &ds, 1000000000, 10, &unsynced) == UINT64_MAX);
	assert_true(unsynced);
	ds.mean_path_delay_ns = 1;
	ts.master_offset_ns = INT64_MIN;
	assert_true(ptp_mgmt_bound_ns(&ts, &ds, INT64_MAX, 2e6, &unsynced) == UINT64_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_is_an_empty_management_get),
		cmocka_unit_test(test_time_status_and_current_ds_are_read),
		cmocka_unit_test(test_answers_refused),
		cmocka_unit_test(test_port_properties_are_read),
		cmocka_unit_test(test_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
