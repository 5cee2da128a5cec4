/* test_session_journal.c - the session journal: its codec (round trip at the
 * largest size, every truncation and every flipped bit refused, content
 * that contradicts itself refused), and its files (atomic replace, an
 * interrupted write's leftovers removed, corrupt and foreign files set
 * aside, never loaded, and failed writes - through the fail points -
 * leaving the previous record in place). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "failpoint.h"
#include "fixture.h"
#include "journal.h"
#include "vm_store.h"

static struct journal_entry *applied_entry(uint32_t n_vcpus)
{
	struct journal_entry *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	fixture_applied_entry(e, n_vcpus);
	return e;
}

static void assert_same_entry(const struct journal_entry *a, const struct journal_entry *b)
{
	uint32_t n = a->s.prepared.n_vcpus;

	assert_int_equal(a->sequence, b->sequence);
	assert_string_equal(a->s.migration_id, b->s.migration_id);
	assert_string_equal(a->s.vm_id, b->s.vm_id);
	assert_int_equal(a->s.role, b->s.role);
	assert_string_equal(a->s.peer_identity, b->s.peer_identity);
	assert_int_equal(a->s.step, b->s.step);
	assert_int_equal(a->s.generation, b->s.generation);
	assert_int_equal(a->s.has_final, b->s.has_final);
	assert_int_equal(a->s.has_report, b->s.has_report);
	assert_int_equal(b->s.prepared.n_vcpus, n);
	assert_memory_equal(a->s.prepared.offset_cycles, b->s.prepared.offset_cycles,
			    n * sizeof(uint64_t));
	assert_memory_equal(&a->s.prepared.anchor, &b->s.prepared.anchor,
			    sizeof(a->s.prepared.anchor));
	assert_memory_equal(&a->s.prepared.kvmclock, &b->s.prepared.kvmclock,
			    sizeof(a->s.prepared.kvmclock));
	assert_int_equal(a->s.prepared.guest_tsc_khz, b->s.prepared.guest_tsc_khz);
	assert_int_equal(a->s.prepared.tsc_scaling_ratio, b->s.prepared.tsc_scaling_ratio);
	if (a->s.has_final)
		assert_memory_equal(a->s.final.offset_cycles, b->s.final.offset_cycles,
				    n * sizeof(uint64_t));
	if (a->s.has_report) {
		assert_memory_equal(a->s.report.offsets_after, b->s.report.offsets_after,
				    n * sizeof(uint64_t));
		assert_int_equal(a->s.report.elapsed_ns, b->s.report.elapsed_ns);
		assert_int_equal(a->s.report.delta_cycles, b->s.report.delta_cycles);
		assert_int_equal(a->s.report.error_bound_ns, b->s.report.error_bound_ns);
		assert_int_equal(a->s.report.error_bound_exceeded,
				 b->s.report.error_bound_exceeded);
	}
	assert_string_equal(a->s.reason, b->s.reason);
	assert_string_equal(a->peer_address, b->peer_address);
	assert_int_equal(a->by_controller, b->by_controller);
	assert_int_equal(a->planned_delta_cycles, b->planned_delta_cycles);
	assert_int_equal(a->planned_error_bound_ns, b->planned_error_bound_ns);
	assert_int_equal(a->realtime_ns, b->realtime_ns);
	assert_int_equal(a->awaiting_source, b->awaiting_source);
}

static void test_round_trip_at_the_largest_vm(void **state)
{
	struct journal_entry *in = applied_entry(VC_MAX_VCPUS);
	struct journal_entry *out = calloc(1, sizeof(*out));
	uint8_t *buf;
	size_t len;
	char err[256];

	assert_int_equal(journal_encode(in, &buf, &len), 0);
	assert_true(len <= JOURNAL_MAX_BYTES);
	assert_int_equal(journal_decode(buf, len, out, err, sizeof(err)), 0);
	assert_same_entry(in, out);
	free(buf);
	free(in);
	free(out);
}

static void test_every_truncation_and_flipped_bit_is_refused(void **state)
{
	struct journal_entry *in = applied_entry(3);
	struct journal_entry *out = calloc(1, sizeof(*out));
	uint8_t *buf;
	size_t len;
	char err[256];

	assert_int_equal(journal_encode(in, &buf, &len), 0);
	for (size_t n = 0; n < len; n++) {
		err[0] = '\0';
		assert_int_equal(journal_decode(buf, n, out, err, sizeof(err)), -EBADMSG);
		assert_true(err[0] != '\0');
	}
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			int r;

			buf[i] ^= (uint8_t)(1u << bit);
			r = journal_decode(buf, len, out, err, sizeof(err));
			assert_true(r == -EBADMSG || r == -EPROTONOSUPPORT);
			buf[i] ^= (uint8_t)(1u << bit);
		}
	}
	assert_int_equal(journal_decode(buf, len, out, err, sizeof(err)), 0);
	free(buf);
	free(in);
	free(out);
}

static void store32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void test_header_version_size_and_garbage_with_a_good_checksum(void **state)
{
	struct journal_entry *out = calloc(1, sizeof(*out));
	uint8_t *big = calloc(1, JOURNAL_MAX_BYTES + 1);
	uint8_t buf[JOURNAL_HEADER_BYTES + 8];
	char err[256];

	/* Another version: not ours to read. */
	memcpy(buf, JOURNAL_MAGIC, 4);
	store32(buf + 4, JOURNAL_VERSION + 1);
	store32(buf + 8, 0);
	store32(buf + 12, 0);
	assert_int_equal(journal_decode(buf, JOURNAL_HEADER_BYTES, out, err, sizeof(err)),
			 -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "version"));

	/* Bytes that are not a record, under a checksum that matches them. */
	memcpy(buf + JOURNAL_HEADER_BYTES, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
	store32(buf + 4, JOURNAL_VERSION);
	store32(buf + 8, 8);
	store32(buf + 12, vm_store_crc32(buf + JOURNAL_HEADER_BYTES, 8));
	assert_int_equal(journal_decode(buf, sizeof(buf), out, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "JournalRecord"));

	/* An empty record decodes as protobuf, and is refused for what it lacks. */
	store32(buf + 8, 0);
	store32(buf + 12, vm_store_crc32(buf, 0));
	assert_int_equal(journal_decode(buf, JOURNAL_HEADER_BYTES, out, err, sizeof(err)),
			 -EBADMSG);
	assert_non_null(strstr(err, "migration_id"));

	assert_non_null(big);
	assert_int_equal(journal_decode(big, JOURNAL_MAX_BYTES + 1, out, err, sizeof(err)), -E2BIG);
	free(big);
	free(out);
}

static void test_records_that_contradict_themselves_are_not_written(void **state)
{
	struct journal_entry *e = applied_entry(2);
	uint8_t *buf = NULL;
	size_t len;

	e->s.has_report = false; /* applied without a report */
	assert_int_equal(journal_encode(e, &buf, &len), -EINVAL);
	e->s.has_report = true;
	e->s.report.generation = 2; /* a report of another generation */
	assert_int_equal(journal_encode(e, &buf, &len), -EINVAL);
	e->s.report.generation = 3;
	e->s.step = STEP_FINAL;
	e->s.has_final = false; /* final step without the state */
	assert_int_equal(journal_encode(e, &buf, &len), -EINVAL);
	e->s.has_final = true;
	e->s.has_report = false;
	e->s.role = VM_ROLE_SOURCE;
	e->awaiting_source = true; /* only a recovered target waits */
	assert_int_equal(journal_encode(e, &buf, &len), -EINVAL);
	e->s.role = VM_ROLE_TARGET;
	assert_int_equal(journal_encode(e, &buf, &len), 0);
	free(buf);
	e->s.step = _STEP_MAX;
	assert_int_equal(journal_encode(e, &buf, &len), -EINVAL);
	free(e);
}

/* ---- files ---- */

struct seen {
	int ok, bad;
	uint64_t last_sequence;
	enum migration_step last_step;
	char bad_file[256];
	char bad_reason[512];
	bool renamed;
};

static void seen_ok(const struct journal_entry *e, void *userdata)
{
	struct seen *s = userdata;

	s->ok++;
	s->last_sequence = e->sequence;
	s->last_step = e->s.step;
}

static void seen_bad(const char *file, const char *reason, bool renamed, void *userdata)
{
	struct seen *s = userdata;

	s->bad++;
	snprintf(s->bad_file, sizeof(s->bad_file), "%s", file);
	snprintf(s->bad_reason, sizeof(s->bad_reason), "%s", reason);
	s->renamed = renamed;
}

static char tmpdir[64];

static int setup_dir(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/vc-journal.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static bool exists(const char *dir, const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

static void write_raw(const char *dir, const char *name, const void *data, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(d);
	return n;
}

static void test_write_replaces_atomically_and_load_reads_it_back(void **state)
{
	char dir[128];
	struct journal *j;
	struct journal_entry *e = applied_entry(2);
	struct seen seen = { 0 };
	const char *name = "0123456789abcdef0123456789abcdef.journal";

	snprintf(dir, sizeof(dir), "%s/journal", tmpdir);
	assert_int_equal(journal_open(dir, &j), 0);
	assert_int_equal(journal_write(j, e, "target/applied"), 0);
	e->sequence = 8;
	e->s.step = STEP_DONE;
	assert_int_equal(journal_write(j, e, "target/done"), 0);
	assert_true(exists(dir, name));
	assert_int_equal(count_files(dir), 1); /* no temporary file left */

	/* An interrupted write leaves its temporary file: removed, and the
	 * record it would have replaced is what loads. Other files are left. */
	write_raw(dir,
		  "."
		  "0123456789abcdef0123456789abcdef.journal.tmp",
		  "VCDJ\1", 5);
	write_raw(dir, "README", "not a journal", 13);
	assert_int_equal(journal_load(j, seen_ok, seen_bad, &seen), 1);
	assert_int_equal(seen.ok, 1);
	assert_int_equal(seen.bad, 0);
	assert_int_equal(seen.last_sequence, 8);
	assert_int_equal(seen.last_step, STEP_DONE);
	assert_false(exists(dir, ".0123456789abcdef0123456789abcdef.journal.tmp"));
	assert_true(exists(dir, "README"));

	assert_int_equal(journal_remove(j, e->s.migration_id), 0);
	assert_int_equal(journal_remove(j, e->s.migration_id), -ENOENT);
	assert_false(exists(dir, name));
	journal_close(j);
	free(e);
}

static void test_corrupt_truncated_and_misnamed_files_are_set_aside(void **state)
{
	char dir[128];
	struct journal *j;
	struct journal_entry *e = applied_entry(2);
	struct seen seen = { 0 };
	uint8_t *buf;
	size_t len;

	snprintf(dir, sizeof(dir), "%s/journal", tmpdir);
	assert_int_equal(journal_open(dir, &j), 0);
	assert_int_equal(journal_encode(e, &buf, &len), 0);

	/* Truncated, as by a full disk under a non-atomic writer. */
	write_raw(dir, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.journal", buf, len / 2);
	assert_int_equal(journal_load(j, seen_ok, seen_bad, &seen), 0);
	assert_int_equal(seen.ok, 0);
	assert_int_equal(seen.bad, 1);
	assert_true(seen.renamed);
	assert_non_null(strstr(seen.bad_reason, "truncated"));
	assert_true(exists(dir, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.journal.corrupt"));
	assert_false(exists(dir, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.journal"));

	/* One flipped byte in the record. */
	memset(&seen, 0, sizeof(seen));
	buf[len - 3] ^= 0x20;
	write_raw(dir, "0123456789abcdef0123456789abcdef.journal", buf, len);
	assert_int_equal(journal_load(j, seen_ok, seen_bad, &seen), 0);
	assert_int_equal(seen.bad, 1);
	assert_non_null(strstr(seen.bad_reason, "checksum"));
	buf[len - 3] ^= 0x20;

	/* A good record under another migration's name: not trusted either. */
	memset(&seen, 0, sizeof(seen));
	write_raw(dir, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.journal", buf, len);
	assert_int_equal(journal_load(j, seen_ok, seen_bad, &seen), 0);
	assert_int_equal(seen.bad, 1);
	assert_non_null(strstr(seen.bad_reason, "file name"));

	/* Set-aside files are never loaded again. */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(journal_load(j, seen_ok, seen_bad, &seen), 0);
	assert_int_equal(seen.bad, 0);
	assert_int_equal(count_files(dir), 3);
	journal_close(j);
	free(buf);
	free(e);
}

static void test_failed_writes_leave_the_previous_record(void **state)
{
	static const char *const points[] = { "open", "write", "fsync", "rename" };
	static const int errors[] = { -EACCES, -ENOSPC, -EIO, -EROFS };
	char dir[128], env[512];
	struct journal *j;
	struct journal_entry *e = applied_entry(2);
	struct seen seen = { 0 };

	if (!failpoints_built_in()) {
		print_message("SKIP: built without fail points (libfiu-dev, -Dfailpoints)\n");
		skip();
	}
	snprintf(env, sizeof(env),
		 "journal/open/target/done=EACCES,journal/write/target/done=ENOSPC,"
		 "journal/fsync/target/done=EIO,journal/rename/target/done=EROFS");
	setenv("VCOUNTERD_FAILPOINTS", env, 1);
	assert_int_equal(failpoints_init(), 0);

	snprintf(dir, sizeof(dir), "%s/journal", tmpdir);
	assert_int_equal(journal_open(dir, &j), 0);
	assert_int_equal(journal_write(j, e, "target/applied"), 0);
	e->sequence = 8;
	e->s.step = STEP_DONE;
	/* Each point fires once, in the order a write meets them; after each
	 * failure the previous record is whole and alone on disk. */
	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		assert_int_equal(journal_write(j, e, "target/done"), errors[i]);
		assert_int_equal(count_files(dir), 1);
		memset(&seen, 0, sizeof(seen));
		assert_int_equal(journal_load(j, seen_ok, seen_bad, &seen), 1);
		assert_int_equal(seen.bad, 0);
		assert_int_equal(seen.last_sequence, 7);
		assert_int_equal(seen.last_step, STEP_APPLIED);
	}
	/* And the next write goes through. */
	assert_int_equal(journal_write(j, e, "target/done"), 0);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(journal_load(j, seen_ok, seen_bad, &seen), 1);
	assert_int_equal(seen.last_step, STEP_DONE);
	journal_close(j);
	free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_at_the_largest_vm),
		cmocka_unit_test(test_every_truncation_and_flipped_bit_is_refused),
		cmocka_unit_test(test_header_version_size_and_garbage_with_a_good_checksum),
		cmocka_unit_test(test_records_that_contradict_themselves_are_not_written),
		cmocka_unit_test_setup_teardown(
			test_write_replaces_atomically_and_load_reads_it_back, setup_dir,
			teardown_dir),
		cmocka_unit_test_setup_teardown(
			test_corrupt_truncated_and_misnamed_files_are_set_aside, setup_dir,
			teardown_dir),
		cmocka_unit_test_setup_teardown(test_failed_writes_leave_the_previous_record,
						setup_dir, teardown_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
