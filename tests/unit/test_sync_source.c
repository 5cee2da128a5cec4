/* test_sync_source.c - the sync source's spec (--sync-source), chrony's bound
 * grown with the age of its answer, what each source puts into a sync_error,
 * and a linuxptp source's verdict on what ptp4l answers on its socket
 * (daemon/sync_source.c). Polling the real chronyd and ptp4l is shown in the
 * two-host rig (vm_two_host_chrony, vm_two_host_ptp). */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "chrony.h"
#include "clockns.h"
#include "ptp_answer.h"
#include "ptp_mgmt.h"
#include "sync_source.h"

static void test_spec_parses_each_source(void **state)
{
	struct sync_source_spec s;
	char err[160] = "";

	(void)state;
	assert_int_equal(sync_source_spec_parse("adjtimex", &s, err, sizeof(err)), 0);
	assert_int_equal(s.kind, SYNC_SOURCE_ADJTIMEX);
	assert_int_equal(sync_source_spec_parse(NULL, &s, err, sizeof(err)), 0);
	assert_int_equal(s.kind, SYNC_SOURCE_ADJTIMEX);

	assert_int_equal(sync_source_spec_parse("chrony", &s, err, sizeof(err)), 0);
	assert_int_equal(s.kind, SYNC_SOURCE_CHRONY);
	assert_string_equal(s.text, "chrony (127.0.0.1:323)");
	assert_int_equal(s.addr.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&s.addr)->sin_port), 323);

	assert_int_equal(sync_source_spec_parse("chrony@[::1]:1323", &s, err, sizeof(err)), 0);
	assert_int_equal(s.addr.ss_family, AF_INET6);
	assert_string_equal(s.text, "chrony ([::1]:1323)");
	assert_int_equal(sync_source_spec_parse("chrony@4323", &s, err, sizeof(err)), 0);
	assert_string_equal(s.text, "chrony (4323)");

	assert_int_equal(sync_source_spec_parse("linuxptp", &s, err, sizeof(err)), 0);
	assert_int_equal(s.kind, SYNC_SOURCE_LINUXPTP);
	assert_string_equal(s.text, "linuxptp (/var/run/ptp4l)");
	assert_int_equal(s.addr.ss_family, AF_UNIX);
	assert_string_equal(((struct sockaddr_un *)&s.addr)->sun_path, "/var/run/ptp4l");
	assert_int_equal(sync_source_spec_parse("linuxptp@/run/ptp4l-eth1", &s, err, sizeof(err)),
			 0);
	assert_string_equal(((struct sockaddr_un *)&s.addr)->sun_path, "/run/ptp4l-eth1");

	assert_int_equal(sync_source_spec_parse("fixed:250000", &s, err, sizeof(err)), 0);
	assert_int_equal(s.kind, SYNC_SOURCE_FIXED);
	assert_true(s.fixed_ns == 250000);
	assert_int_equal(sync_source_spec_parse("fixed:1000000000000", &s, err, sizeof(err)), 0);
}

static void test_spec_refuses_what_is_no_source(void **state)
{
	static const char *const bad[] = {
		"",
		"ntpd",
		"ADJTIMEX",
		"chrony@",
		"chrony@localhost:323",
		"chrony@127.0.0.1:99999",
		"chrony:323",
		"fixed:",
		"fixed:0",
		"linuxptp@",
		"linuxptp@ptp4l",
		"linuxptp:/var/run/ptp4l",
		"linuxptp@/a/path/to/a/socket/that/does/not/fit/in/the/one/hundred/and/eight/bytes/"
		"of/sun_path/not/at/all/no/matter/how/one/counts",
		"fixed:-5",
		"fixed:+5",
		"fixed:1e6",
		"fixed:12 ",
		"fixed:1000000000001",
		"fixed:18446744073709551616",
	};
	struct sync_source_spec s, untouched;
	char err[160];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("case: \"%s\"\n", bad[i]);
		memset(&s, 0x5a, sizeof(s));
		untouched = s;
		err[0] = '\0';
		assert_int_equal(sync_source_spec_parse(bad[i], &s, err, sizeof(err)), -EINVAL);
		assert_memory_equal(&s, &untouched, sizeof(s));
		assert_non_null(strstr(err, "sync source"));
	}
	sync_source_spec_parse("ntpd", &s, err, sizeof(err));
	assert_string_equal(err, "sync source \"ntpd\": expected adjtimex, chrony, "
				 "chrony@ADDR:PORT, linuxptp, linuxptp@PATH or fixed:NS");
}

/* chronyd's bound was true when it answered; it grows since at chrony's own
 * rate: skew + |residual frequency| + maxclockerror (1 ppm). */
static void test_chrony_bound_grows_with_the_age_of_the_answer(void **state)
{
	struct chrony_tracking t = {
		.current_correction = 0.00001,
		.root_delay = 0.0002,
		.root_dispersion = 0.00003,
		.skew_ppm = 0.5,
		.resid_freq_ppm = -0.25,
	};
	bool unsynced = true;
	uint64_t now0, later;

	(void)state;
	now0 = sync_source_chrony_maxerror_ns(&t, 0, &unsynced);
	assert_false(unsynced);
	assert_true(now0 >= 140000 && now0 <= 140001); /* 10 + 30 + 100 us */
	/* 10 s at 1.75 ppm: 17.5 us more. */
	later = sync_source_chrony_maxerror_ns(&t, UINT64_C(10000000000), &unsynced);
	assert_true(later - now0 >= 17500 && later - now0 <= 17502);
	t.leap_status = CHRONY_LEAP_UNSYNCHRONISED;
	assert_true(sync_source_chrony_maxerror_ns(&t, 0, &unsynced) == UINT64_MAX && unsynced);
}

/* What each source puts into the kernel's view: only the estimate changes,
 * the TAI offset and leap stay the kernel's. */
static void test_apply_replaces_only_the_estimate(void **state)
{
	struct sync_source_spec spec;
	struct sync_source *ss = NULL;
	struct sync_error kernel = { .maxerror_ns = 0,
				     .esterror_ns = 5,
				     .unsynced = true,
				     .tai_offset_s = 37,
				     .leap = SYNC_LEAP_INSERT };
	struct sync_error e;
	char err[160] = "";

	(void)state;
	/* adjtimex: as the kernel said (linuxptp's maxerror 0 stays 0: the
	 * reason to pick another source on such a host). */
	assert_int_equal(sync_source_spec_parse("adjtimex", &spec, err, sizeof(err)), 0);
	assert_int_equal(sync_source_new(NULL, &spec, &ss, err, sizeof(err)), 0);
	e = kernel;
	assert_int_equal(sync_source_apply(ss, 1, &e, err, sizeof(err)), 0);
	assert_memory_equal(&e, &kernel, sizeof(e));
	sync_source_free(ss);

	assert_int_equal(sync_source_spec_parse("fixed:250000", &spec, err, sizeof(err)), 0);
	assert_int_equal(sync_source_new(NULL, &spec, &ss, err, sizeof(err)), 0);
	e = kernel;
	assert_int_equal(sync_source_apply(ss, 1, &e, err, sizeof(err)), 0);
	assert_true(e.maxerror_ns == 250000 && e.esterror_ns == 0 && !e.unsynced);
	assert_int_equal(e.source, SYNC_SOURCE_FIXED);
	assert_int_equal(e.tai_offset_s, 37);
	assert_int_equal(e.leap, SYNC_LEAP_INSERT);
	sync_source_free(ss);
}

/* Answer every GET waiting on fd as ptp4l does: a slave 800 ns off its
 * master, 30 us path delay, its last Sync just now, its port stamping as
 * timestamping says. The real ptp4l answers in the rig (vm_two_host_ptp),
 * but only with software timestamps: no NIC there or here has a PTP
 * hardware clock, so this stand-in is how a hardware-stamping ptp4l is
 * heard. Returns how many GETs it answered. */
static int ptp4l_answer(int fd, uint8_t timestamping)
{
	uint8_t req[128], ans[PTP_ANSWER_MAX];
	struct sockaddr_un from;
	socklen_t from_len;
	int answered = 0;

	for (;;) {
		ssize_t n;
		size_t len;
		uint16_t id, seq;

		from_len = sizeof(from);
		n = recvfrom(fd, req, sizeof(req), MSG_DONTWAIT, (struct sockaddr *)&from,
			     &from_len);
		if (n < 0)
			return answered;
		assert_int_equal(n, PTP_MGMT_GET_LEN);
		id = (uint16_t)(req[52] << 8 | req[53]);
		seq = (uint16_t)(req[30] << 8 | req[31]);
		if (id == PTP_MGMT_TIME_STATUS_NP)
			len = ptp_answer_time_status(ans, seq, -800,
						     (int64_t)clock_ns(CLOCK_REALTIME), 1);
		else if (id == PTP_MGMT_CURRENT_DATA_SET)
			len = ptp_answer_current_ds(ans, seq, -800, 30000);
		else if (id == PTP_MGMT_PORT_PROPERTIES_NP)
			len = ptp_answer_port_props(ans, seq, timestamping, "enp1s0f0");
		else
			fail_msg("a GET ptp4l was not asked: %#x", id);
		assert_int_equal(sendto(fd, ans, len, 0, (struct sockaddr *)&from, from_len),
				 (ssize_t)len);
		answered++;
	}
}

/* A linuxptp source polls ptp4l with three GETs; with software timestamps
 * its bound is |offset| + path delay (+ drift since the Sync); a ptp4l that
 * stamps in hardware disciplines a NIC's clock, and phc2sys's copy of it
 * into CLOCK_REALTIME has an error nothing reports: refused, saying so. */
static void test_linuxptp_source_hears_how_ptp4l_stamps(void **state)
{
	for (uint8_t timestamping = 0; timestamping <= 1; timestamping++) {
		char dir[] = "/tmp/vc-ptp4l-XXXXXX", spec_text[128], err[320] = "";
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		struct event_base *base = event_base_new();
		struct sync_source *ss = NULL;
		struct sync_error e = { .maxerror_ns = 0, .unsynced = false };
		int fd, r;

		(void)state;
		assert_non_null(base);
		assert_non_null(mkdtemp(dir));
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/ptp4l", dir);
		fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
		snprintf(spec_text, sizeof(spec_text), "linuxptp@%s", sun.sun_path);
		assert_int_equal(sync_source_open(base, spec_text, &ss, err, sizeof(err)), 0);

		/* Before any answer: refused, not guessed. */
		r = sync_source_apply(ss, clock_ns(CLOCK_MONOTONIC), &e, err, sizeof(err));
		assert_int_equal(r, -ENODATA);
		assert_non_null(strstr(err, "no answer yet"));

		assert_int_equal(ptp4l_answer(fd, timestamping), 3);
		assert_int_equal(event_base_loop(base, EVLOOP_NONBLOCK), 0);
		r = sync_source_apply(ss, clock_ns(CLOCK_MONOTONIC), &e, err, sizeof(err));
		if (timestamping == PTP_MGMT_TS_SOFTWARE) {
			assert_int_equal(r, 0);
			assert_int_equal(e.source, SYNC_SOURCE_LINUXPTP);
			assert_false(e.unsynced);
			/* 800 + 30000, and the drift since the Sync: < 1 ms at
			 * 10 ppm for anything under 100 s. */
			assert_true(e.maxerror_ns >= 30800 && e.maxerror_ns < 31800);
			assert_true(e.esterror_ns == 800);
		} else {
			print_message("refused: %s\n", err);
			assert_int_equal(r, -ENODATA);
			assert_true(e.maxerror_ns == 0 && !e.unsynced);
			assert_non_null(strstr(err, "timestamps in hardware on enp1s0f0"));
			assert_non_null(strstr(err, "phc2sys"));
		}
		sync_source_free(ss);
		event_base_free(base);
		close(fd);
		unlink(sun.sun_path);
		rmdir(dir);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_parses_each_source),
		cmocka_unit_test(test_spec_refuses_what_is_no_source),
		cmocka_unit_test(test_chrony_bound_grows_with_the_age_of_the_answer),
		cmocka_unit_test(test_apply_replaces_only_the_estimate),
		cmocka_unit_test(test_linuxptp_source_hears_how_ptp4l_stamps),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
