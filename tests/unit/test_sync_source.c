/* test_sync_source.c - the sync source's spec (--sync-source), chrony's bound
 * grown with the age of its answer, and what each source puts into a
 * sync_error (daemon/sync_source.c). Polling the real chronyd is shown in the
 * two-host rig (vm_two_host_chrony). */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chrony.h"
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_parses_each_source),
		cmocka_unit_test(test_spec_refuses_what_is_no_source),
		cmocka_unit_test(test_chrony_bound_grows_with_the_age_of_the_answer),
		cmocka_unit_test(test_apply_replaces_only_the_estimate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
