/* journal.c - the session journal (journal.h has the format and the
 * promises). Everything read is checked before use: a file may be
 * truncated by a full disk, corrupted, or not ours. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "errmsg.h"
#include "failpoint.h"
#include "journal.h"
#include "macro.h"
#include "vm_store.h"
#include "wire.h"

struct journal {
	int dir_fd;
	char *path;
};

static void store_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t load_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Which steps carry which parts: a final state from the source's
 * FINALIZING and the target's FINAL on, a report once applied. */
static bool step_has_final(enum vm_role role, enum migration_step step)
{
	switch (step) {
	case STEP_FINALIZING:
		return role == VM_ROLE_SOURCE;
	case STEP_FINAL:
	case STEP_APPLYING:
	case STEP_APPLIED:
	case STEP_DONE:
		return true;
	default:
		return false;
	}
}

static bool step_has_report(enum vm_role role, enum migration_step step)
{
	return step == STEP_DONE || (role == VM_ROLE_TARGET && step == STEP_APPLIED);
}

static int check_entry(const struct journal_entry *e, char *err, size_t err_size)
{
	const struct session *s = &e->s;
	size_t peer_len = strnlen(s->peer_identity, sizeof(s->peer_identity));

	if (!migration_id_is_valid(s->migration_id))
		return errmsg(err, err_size, -EBADMSG, "migration_id invalid");
	if (!vm_id_is_valid(s->vm_id))
		return errmsg(err, err_size, -EBADMSG, "vm_id invalid");
	if (s->role != VM_ROLE_SOURCE && s->role != VM_ROLE_TARGET)
		return errmsg(err, err_size, -EBADMSG, "role %d is neither source nor target",
			      (int)s->role);
	if (peer_len == 0 || peer_len > SESSION_PEER_NAME_MAX)
		return errmsg(err, err_size, -EBADMSG, "peer identity empty or too long");
	if (s->step <= STEP_NONE || s->step >= _STEP_MAX)
		return errmsg(err, err_size, -EBADMSG, "step %d out of range", (int)s->step);
	if (step_has_final(s->role, s->step) && (!s->has_final || s->generation == 0))
		return errmsg(err, err_size, -EBADMSG, "step %s without a final state",
			      migration_step_to_string(s->step));
	if (s->has_final && s->final.n_vcpus != s->prepared.n_vcpus)
		return errmsg(err, err_size, -EBADMSG, "final state of %u vCPUs, prepared %u",
			      s->final.n_vcpus, s->prepared.n_vcpus);
	if (step_has_report(s->role, s->step) && !s->has_report)
		return errmsg(err, err_size, -EBADMSG, "step %s without a report",
			      migration_step_to_string(s->step));
	if (s->has_report &&
	    (strcmp(s->report.migration_id, s->migration_id) != 0 ||
	     strcmp(s->report.vm_id, s->vm_id) != 0 || s->report.generation != s->generation))
		return errmsg(err, err_size, -EBADMSG, "report of another migration or generation");
	if (e->awaiting_source && (s->role != VM_ROLE_TARGET || s->step != STEP_FINAL))
		return errmsg(err, err_size, -EBADMSG,
			      "awaiting_source outside a target's final step");
	return 0;
}

int journal_encode(const struct journal_entry *e, uint8_t **ret_buf, size_t *ret_len)
{
	Vcounter__V1__JournalRecord rec = VCOUNTER__V1__JOURNAL_RECORD__INIT;
	_cleanup_free_ struct wire_counter_state_pb *prepared = calloc(1, sizeof(*prepared));
	_cleanup_free_ struct wire_counter_state_pb *final = calloc(1, sizeof(*final));
	struct wire_report_pb report;
	uint8_t *buf;
	size_t n;

	if (!prepared || !final)
		return -ENOMEM;
	if (check_entry(e, NULL, 0) < 0)
		return -EINVAL;
	rec.sequence = e->sequence;
	rec.migration_id = (char *)e->s.migration_id;
	rec.vm_id = (char *)e->s.vm_id;
	rec.role = e->s.role == VM_ROLE_SOURCE ? VCOUNTER__V1__ROLE__ROLE_SOURCE
					       : VCOUNTER__V1__ROLE__ROLE_TARGET;
	rec.peer_identity = (char *)e->s.peer_identity;
	rec.peer_address = (char *)e->peer_address;
	rec.step = (Vcounter__V1__MigrationStep)e->s.step;
	rec.generation = e->s.generation;
	wire_counter_state_to_pb(&e->s.prepared, prepared);
	rec.prepared = &prepared->state;
	if (e->s.has_final) {
		wire_counter_state_to_pb(&e->s.final, final);
		rec.final = &final->state;
	}
	if (e->s.has_report) {
		wire_report_to_pb(&e->s.report, &report);
		rec.report = &report.report;
	}
	rec.reason = (char *)e->s.reason;
	rec.started_by_controller = e->by_controller;
	rec.planned_delta_cycles = e->planned_delta_cycles;
	rec.planned_error_bound_ns = e->planned_error_bound_ns;
	rec.realtime_ns = e->realtime_ns;
	rec.awaiting_source = e->awaiting_source;

	n = vcounter__v1__journal_record__get_packed_size(&rec);
	if (n > JOURNAL_MAX_BYTES - JOURNAL_HEADER_BYTES)
		return -E2BIG;
	buf = malloc(JOURNAL_HEADER_BYTES + n);
	if (!buf)
		return -ENOMEM;
	vcounter__v1__journal_record__pack(&rec, buf + JOURNAL_HEADER_BYTES);
	memcpy(buf, JOURNAL_MAGIC, 4);
	store_u32(buf + 4, JOURNAL_VERSION);
	store_u32(buf + 8, (uint32_t)n);
	store_u32(buf + 12, vm_store_crc32(buf + JOURNAL_HEADER_BYTES, n));
	*ret_buf = buf;
	*ret_len = JOURNAL_HEADER_BYTES + n;
	return 0;
}

/* A string field: present, NUL-free by protobuf-c, and fits. */
static int copy_str(char *dst, size_t size, const char *src, const char *what, bool required,
		    char *err, size_t err_size)
{
	size_t len = src ? strlen(src) : 0;

	if (required && len == 0)
		return errmsg(err, err_size, -EBADMSG, "%s missing", what);
	if (len >= size)
		return errmsg(err, err_size, -EBADMSG, "%s longer than %zu bytes", what, size - 1);
	memcpy(dst, src ? src : "", len + 1);
	return 0;
}

int journal_decode(const uint8_t *buf, size_t len, struct journal_entry *ret, char *err,
		   size_t err_size)
{
	_cleanup_protobuf_ Vcounter__V1__JournalRecord *rec = NULL;
	struct journal_entry *e = ret;
	uint32_t n;
	char why[256];
	int r;

	if (len > JOURNAL_MAX_BYTES) {
		errmsg(err, err_size, -EBADMSG, "file of over %u bytes", JOURNAL_MAX_BYTES);
		return -E2BIG;
	}
	if (len < JOURNAL_HEADER_BYTES)
		return errmsg(err, err_size, -EBADMSG, "truncated: %zu bytes, header is %d", len,
			      JOURNAL_HEADER_BYTES);
	if (memcmp(buf, JOURNAL_MAGIC, 4) != 0)
		return errmsg(err, err_size, -EBADMSG, "bad magic (not a vcounterd journal file)");
	if (load_u32(buf + 4) != JOURNAL_VERSION) {
		errmsg(err, err_size, -EBADMSG, "version %u, this vcounterd reads %d",
		       load_u32(buf + 4), JOURNAL_VERSION);
		return -EPROTONOSUPPORT;
	}
	n = load_u32(buf + 8);
	if (n != len - JOURNAL_HEADER_BYTES)
		return errmsg(err, err_size, -EBADMSG,
			      "record length %u, file holds %zu (truncated?)", n,
			      len - JOURNAL_HEADER_BYTES);
	if (load_u32(buf + 12) != vm_store_crc32(buf + JOURNAL_HEADER_BYTES, n))
		return errmsg(err, err_size, -EBADMSG, "checksum mismatch");
	rec = vcounter__v1__journal_record__unpack(NULL, n, buf + JOURNAL_HEADER_BYTES);
	if (!rec)
		return errmsg(err, err_size, -EBADMSG, "record is not a valid JournalRecord");

	memset(e, 0, sizeof(*e));
	r = copy_str(e->s.migration_id, sizeof(e->s.migration_id), rec->migration_id,
		     "migration_id", true, err, err_size);
	if (r == 0)
		r = copy_str(e->s.vm_id, sizeof(e->s.vm_id), rec->vm_id, "vm_id", true, err,
			     err_size);
	if (r == 0)
		r = copy_str(e->s.peer_identity, sizeof(e->s.peer_identity), rec->peer_identity,
			     "peer_identity", true, err, err_size);
	if (r == 0)
		r = copy_str(e->peer_address, sizeof(e->peer_address), rec->peer_address,
			     "peer_address", false, err, err_size);
	if (r == 0)
		r = copy_str(e->s.reason, sizeof(e->s.reason), rec->reason, "reason", false, err,
			     err_size);
	if (r < 0)
		return r;
	if (wire_role_from_pb(rec->role, &e->s.role) < 0)
		return errmsg(err, err_size, -EBADMSG, "role %d unknown", (int)rec->role);
	e->s.step = (enum migration_step)rec->step;
	e->s.generation = rec->generation;
	e->sequence = rec->sequence;
	e->by_controller = rec->started_by_controller;
	e->planned_delta_cycles = rec->planned_delta_cycles;
	e->planned_error_bound_ns = rec->planned_error_bound_ns;
	e->realtime_ns = rec->realtime_ns;
	e->awaiting_source = rec->awaiting_source;
	if (wire_counter_state_from_pb(rec->prepared, &e->s.prepared, why, sizeof(why)) < 0)
		return errmsg(err, err_size, -EBADMSG, "prepared state: %s", why);
	if (rec->final) {
		if (wire_counter_state_from_pb(rec->final, &e->s.final, why, sizeof(why)) < 0)
			return errmsg(err, err_size, -EBADMSG, "final state: %s", why);
		e->s.has_final = true;
	}
	if (rec->report) {
		if (wire_report_from_pb(rec->report, &e->s.report, why, sizeof(why)) < 0)
			return errmsg(err, err_size, -EBADMSG, "report: %s", why);
		e->s.has_report = true;
	}
	return check_entry(e, err, err_size);
}

/* ---- files ---- */

int journal_open(const char *dir, struct journal **ret)
{
	struct journal *j;
	int fd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	j = calloc(1, sizeof(*j));
	if (!j || !(j->path = strdup(dir))) {
		free(j);
		close(fd);
		return -ENOMEM;
	}
	j->dir_fd = fd;
	*ret = j;
	return 0;
}

struct journal *journal_close(struct journal *j)
{
	if (!j)
		return NULL;
	close(j->dir_fd);
	free(j->path);
	free(j);
	return NULL;
}

const char *journal_dir(const struct journal *j)
{
	return j->path;
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int journal_write(struct journal *j, const struct journal_entry *e, const char *tag)
{
	_cleanup_free_ uint8_t *buf = NULL;
	_cleanup_close_ int fd = -1;
	char name[VC_MIGRATION_ID_LEN + sizeof(JOURNAL_SUFFIX)];
	char tmp[sizeof(name) + 8];
	size_t len;
	int r;

	r = journal_encode(e, &buf, &len);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "%s" JOURNAL_SUFFIX, e->s.migration_id);
	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);

	r = failpoint_errno("journal/open", tag);
	if (r == 0) {
		fd = openat(j->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
			    0600);
		r = fd < 0 ? -errno : 0;
	}
	if (r < 0)
		return r;
	r = failpoint_errno("journal/write", tag);
	if (r == 0)
		r = write_all(fd, buf, len);
	if (r == 0) {
		r = failpoint_errno("journal/fsync", tag);
		if (r == 0 && fsync(fd) < 0)
			r = -errno;
	}
	if (r == 0) {
		r = failpoint_errno("journal/rename", tag);
		if (r == 0 && renameat(j->dir_fd, tmp, j->dir_fd, name) < 0)
			r = -errno;
	}
	if (r < 0) {
		(void)unlinkat(j->dir_fd, tmp, 0);
		return r;
	}
	/* The rename is durable once the directory is. */
	r = failpoint_errno("journal/dirsync", tag);
	if (r == 0 && fsync(j->dir_fd) < 0)
		r = -errno;
	return r;
}

int journal_remove(struct journal *j, const char *migration_id)
{
	char name[VC_MIGRATION_ID_LEN + sizeof(JOURNAL_SUFFIX)];

	if (!migration_id_is_valid(migration_id))
		return -EINVAL;
	snprintf(name, sizeof(name), "%s" JOURNAL_SUFFIX, migration_id);
	if (unlinkat(j->dir_fd, name, 0) < 0)
		return -errno;
	return fsync(j->dir_fd) < 0 ? -errno : 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Read name (a regular file, at most JOURNAL_MAX_BYTES + 1 bytes read). */
static int read_file(int dir_fd, const char *name, uint8_t **ret_buf, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	uint8_t *buf;
	size_t len = 0;
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EBADF;
	buf = malloc(JOURNAL_MAX_BYTES + 1);
	if (!buf)
		return -ENOMEM;
	while (len < JOURNAL_MAX_BYTES + 1) {
		ssize_t n = read(fd, buf + len, JOURNAL_MAX_BYTES + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;

			free(buf);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

static void set_aside(struct journal *j, const char *name, const char *reason, journal_bad_cb bad,
		      void *userdata)
{
	char corrupt[NAME_MAX + 1];
	bool renamed;

	snprintf(corrupt, sizeof(corrupt), "%s" JOURNAL_CORRUPT, name);
	renamed = renameat(j->dir_fd, name, j->dir_fd, corrupt) == 0;
	if (renamed)
		(void)fsync(j->dir_fd);
	if (bad)
		bad(name, reason, renamed, userdata);
}

int journal_load(struct journal *j, journal_ok_cb ok, journal_bad_cb bad, void *userdata)
{
	_cleanup_free_ struct journal_entry *e = calloc(1, sizeof(*e));
	int fd = dup(j->dir_fd);
	struct dirent *de;
	DIR *d;
	int n = 0;

	if (fd < 0)
		return -errno;
	if (!e) {
		close(fd);
		return -ENOMEM;
	}
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		_cleanup_free_ uint8_t *buf = NULL;
		char err[320], expect[VC_MIGRATION_ID_LEN + sizeof(JOURNAL_SUFFIX)];
		size_t len = 0;
		int r;

		if (de->d_name[0] == '.') {
			/* An interrupted write: the record it was to replace is
			 * still in place (or the step never took effect). */
			if (has_suffix(de->d_name, ".tmp"))
				(void)unlinkat(j->dir_fd, de->d_name, 0);
			continue;
		}
		if (!has_suffix(de->d_name, JOURNAL_SUFFIX))
			continue; /* *.corrupt, and what is not ours */
		r = read_file(j->dir_fd, de->d_name, &buf, &len);
		if (r < 0) {
			snprintf(err, sizeof(err), "cannot read: %s", strerror(-r));
			set_aside(j, de->d_name, err, bad, userdata);
			continue;
		}
		r = journal_decode(buf, len, e, err, sizeof(err));
		if (r == 0) {
			snprintf(expect, sizeof(expect), "%s" JOURNAL_SUFFIX, e->s.migration_id);
			if (strcmp(expect, de->d_name) != 0) {
				snprintf(err, sizeof(err),
					 "holds migration %s, not its file name's",
					 e->s.migration_id);
				r = -EBADMSG;
			}
		}
		if (r < 0) {
			set_aside(j, de->d_name, err, bad, userdata);
			continue;
		}
		if (ok)
			ok(e, userdata);
		n++;
	}
	closedir(d);
	return n;
}
