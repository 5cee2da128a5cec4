/* journal.h - the session journal: one small file per migration, written
 * before the step it records takes effect (DESIGN.md section 3: a restart
 * resumes or aborts each migration from it, and never applies state whose
 * generation it cannot prove current).
 *
 * File <dir>/<migration_id>.journal, integers little-endian: magic "VCDJ",
 * u32 version, u32 length of the record, u32 CRC-32 (IEEE, zlib's) of the
 * record, then the record: a packed JournalRecord (proto/vcounter.proto).
 * A write goes to a temporary file, is fsync'd, renamed over the old file,
 * and the directory is fsync'd: a crash leaves the old record or the new
 * one, never a mix. A file that fails its checks is renamed to
 * <name>.corrupt and reported, never trusted.
 *
 * The codec is pure; journal_write/_load/_remove do the I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

#define JOURNAL_MAGIC		 "VCDJ"
#define JOURNAL_VERSION		 1
#define JOURNAL_HEADER_BYTES	 16
/* One record at its largest: two counter states and a report of
 * VC_MAX_VCPUS vCPUs (about 50 KiB packed). Bigger files are refused. */
#define JOURNAL_MAX_BYTES	 (128u << 10)
#define JOURNAL_SUFFIX		 ".journal"
#define JOURNAL_CORRUPT		 ".corrupt"
#define JOURNAL_PEER_ADDRESS_MAX 255

struct journal_entry {
	uint64_t sequence; /* +1 every write of this migration */
	struct session s;  /* started_ns/updated_ns are not stored */
	char peer_address[JOURNAL_PEER_ADDRESS_MAX + 1];
	bool by_controller;
	int64_t planned_delta_cycles;
	uint64_t planned_error_bound_ns;
	uint64_t realtime_ns; /* CLOCK_REALTIME of the write */
	bool awaiting_source;
};

/* Encode e (header included) into a malloc'd buffer: 0, -EINVAL (an entry
 * that would not decode), -E2BIG, -ENOMEM. */
int journal_encode(const struct journal_entry *e, uint8_t **ret_buf, size_t *ret_len);
/* Decode and validate: 0, -EBADMSG (truncated, bad magic, length, checksum
 * or content; err says which), -EPROTONOSUPPORT (another version), -E2BIG. */
int journal_decode(const uint8_t *buf, size_t len, struct journal_entry *ret, char *err,
		   size_t err_size);

struct journal;

/* Open (creating, 0700) the directory dir: 0 or -errno. */
int journal_open(const char *dir, struct journal **ret);
struct journal *journal_close(struct journal *j); /* NULL-safe; NULL */
const char *journal_dir(const struct journal *j);

/* Record e durably. tag names the step for fail points ("target/final"):
 * journal/{open,write,fsync,rename,dirsync}/<tag> (failpoint.h). On error
 * (-errno) the previous record of the migration is what is on disk. */
int journal_write(struct journal *j, const struct journal_entry *e, const char *tag);
/* Forget a migration: 0, or -errno (-ENOENT is not an error worth logging). */
int journal_remove(struct journal *j, const char *migration_id);

/* Read every record: ok() for each that passes its checks (e valid only
 * during the call), bad() for each that does not, after it was renamed to
 * <name>.corrupt (renamed is false if even that failed). Leftover
 * temporary files of interrupted writes are removed. Returns the number of
 * good records, or -errno if the directory cannot be read. */
typedef void (*journal_ok_cb)(const struct journal_entry *e, void *userdata);
typedef void (*journal_bad_cb)(const char *file, const char *reason, bool renamed, void *userdata);
int journal_load(struct journal *j, journal_ok_cb ok, journal_bad_cb bad, void *userdata);
