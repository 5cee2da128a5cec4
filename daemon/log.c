/* log.c - where daemon log lines go: the journal with structured fields, or
 * stderr; one line per event either way.
 *
 * The journal fields are read from the message's own ids (log_parse_ids),
 * not passed beside it. Every call site already writes its ids as
 * "vm=%s migration=%s role=%s step=%s: ..." or "peer=%s: ...", so they stay
 * as they are, and VCOUNTERD_VM= and the text cannot disagree: both come
 * from one formatted string. Explicit fields would need a second argument
 * list at ~100 call sites and could drift from the text. This is safe
 * because every id value is checked where it enters and has no space:
 * vm ids are [A-Za-z0-9._:-] (counter_state.c), migration ids hex, peers a
 * certificate's dNSName or URI, role/step/backend enum strings. The prefix
 * ends at its first token ending in ':'; the detail after it is read up to
 * the next such token, so text a peer sent ("peer %s refused: %s") is never
 * read as ids. A VM id that itself ends in ':' ("vm=a:: ...") is cut at that
 * ':' in the field (pinned in test_log.c); the text is ambiguous there too.
 *
 * MESSAGE_ID follows from step= for the migration outcomes and
 * (un)registration, and is given by the call site (log_info_id) for the
 * daemon's own lifecycle, which has no step. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Our CODE_FILE/CODE_LINE/CODE_FUNC are the caller's, not this file's. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "log.h"

#define SYSLOG_IDENTIFIER "vcounterd"
/* Where sd_journal_sendv() sends, always (libsystemd's journal-send.c). */
#define JOURNAL_SOCKET	  "/run/systemd/journal/socket"

static int max_priority = LOG_INFO;
static enum log_target target = LOG_TARGET_AUTO;
static bool to_journal;	     /* log_setup() decided: sd_journal_sendv() */
static bool stderr_prefix;   /* stderr is the journal: "<N>" prefixes */
static bool journal_failing; /* the last send failed: said so on stderr */

static const char *const target_names[_LOG_TARGET_MAX] = {
	[LOG_TARGET_AUTO] = "auto",
	[LOG_TARGET_JOURNAL] = "journal",
	[LOG_TARGET_STDERR] = "stderr",
};

const char *log_target_to_string(enum log_target t)
{
	return t >= 0 && t < _LOG_TARGET_MAX ? target_names[t] : NULL;
}

enum log_target log_target_from_string(const char *s)
{
	for (int t = 0; s && t < _LOG_TARGET_MAX; t++)
		if (strcmp(s, target_names[t]) == 0)
			return (enum log_target)t;
	return _LOG_TARGET_INVALID;
}

static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	/* systemd.exec(5): JOURNAL_STREAM is "device:inode" of the stream
	 * stdout/stderr were connected to; it is inherited, so it counts
	 * only while stderr still is that stream. */
	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

void log_set_target(enum log_target t)
{
	if (t >= 0 && t < _LOG_TARGET_MAX)
		target = t;
}

void log_setup(int priority)
{
	max_priority = priority;
	stderr_prefix = stderr_is_journal();
	to_journal = target == LOG_TARGET_JOURNAL || (target == LOG_TARGET_AUTO && stderr_prefix);
	journal_failing = false;
}

int log_get_max_priority(void)
{
	return max_priority;
}

bool log_to_journal(void)
{
	return to_journal;
}

int log_parse_level(const char *s)
{
	static const struct {
		const char *name;
		int priority;
	} levels[] = {
		{ "error", LOG_ERR },
		{ "warning", LOG_WARNING },
		{ "info", LOG_INFO },
		{ "debug", LOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (s && strcmp(s, levels[i].name) == 0)
			return levels[i].priority;
	return -EINVAL;
}

static const char *priority_name(int priority)
{
	switch (priority) {
	case LOG_EMERG:
	case LOG_ALERT:
	case LOG_CRIT:
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warning";
	case LOG_NOTICE:
	case LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

/* ---- ids ---- */

static bool is_key(const char *s, size_t len)
{
	if (len == 0 || !(s[0] >= 'a' && s[0] <= 'z'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

static struct log_span *ids_slot(struct log_ids *ids, const char *key, size_t len)
{
	static const struct {
		const char *key;
		size_t offset;
	} keys[] = {
		{ "vm", offsetof(struct log_ids, vm) },
		{ "migration", offsetof(struct log_ids, migration) },
		{ "peer", offsetof(struct log_ids, peer) },
		{ "step", offsetof(struct log_ids, step) },
		{ "role", offsetof(struct log_ids, role) },
		{ "backend", offsetof(struct log_ids, backend) },
	};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strlen(keys[i].key) == len && memcmp(keys[i].key, key, len) == 0)
			return (struct log_span *)((char *)ids + keys[i].offset);
	return NULL;
}

int log_parse_ids(const char *message, struct log_ids *ret_ids)
{
	struct log_ids ids = { 0 };
	const char *p = message;
	int n = 0, closed = 0;

	/* Two runs at most: the prefix, closed by its first token ending in
	 * ':', then the detail, closed the same way or by a non-id token. */
	while (p && *p && closed < 2) {
		size_t len = strcspn(p, " ");
		const char *eq = memchr(p, '=', len);
		const char *value;
		size_t value_len;
		struct log_span *slot;
		bool closes;

		if (!eq || !is_key(p, (size_t)(eq - p)))
			break;
		value = eq + 1;
		value_len = len - (size_t)(value - p);
		closes = value_len > 0 && value[value_len - 1] == ':';
		if (closes)
			value_len--;
		slot = ids_slot(&ids, p, (size_t)(eq - p));
		if (slot && !slot->s && value_len > 0) {
			*slot = (struct log_span){ value, value_len };
			n++;
		}
		if (closes)
			closed++;
		p += len;
		if (*p != ' ')
			break;
		p++;
	}
	*ret_ids = ids;
	return n;
}

static bool span_is(const struct log_span *s, const char *str)
{
	return s->s && s->len == strlen(str) && memcmp(s->s, str, s->len) == 0;
}

const char *log_message_id_for(const struct log_ids *ids, int priority)
{
	if (!ids->vm.s)
		return NULL;
	if (ids->migration.s) {
		if (span_is(&ids->step, "done"))
			return LOG_MESSAGE_MIGRATION_DONE;
		if (span_is(&ids->step, "failed"))
			return LOG_MESSAGE_MIGRATION_FAILED;
		if (span_is(&ids->step, "aborted"))
			return LOG_MESSAGE_MIGRATION_ABORTED;
	}
	/* "vm=%s step=register: probe failed: ..." (error) refuses the VM. */
	if (span_is(&ids->step, "register") && priority > LOG_ERR)
		return LOG_MESSAGE_VM_REGISTERED;
	if (span_is(&ids->step, "unregister"))
		return LOG_MESSAGE_VM_UNREGISTERED;
	return NULL;
}

char *log_sanitize(char *s)
{
	for (char *c = s; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return s;
}

/* ---- journal fields ---- */

struct field_buf {
	struct iovec *iov;
	size_t n;
	char *p;
	size_t left;
};

static void field_add(struct field_buf *f, const char *key, const char *value, size_t value_len)
{
	size_t key_len = strlen(key), len = key_len + 1 + value_len;

	if (f->n >= LOG_JOURNAL_FIELDS_MAX || len + 1 > f->left)
		return;
	memcpy(f->p, key, key_len);
	f->p[key_len] = '=';
	memcpy(f->p + key_len + 1, value, value_len);
	f->p[len] = '\0';
	f->iov[f->n++] = (struct iovec){ .iov_base = f->p, .iov_len = len };
	f->p += len + 1;
	f->left -= len + 1;
}

static void field_add_str(struct field_buf *f, const char *key, const char *value)
{
	field_add(f, key, value, strlen(value));
}

static void field_add_span(struct field_buf *f, const char *key, const struct log_span *s)
{
	if (s->s)
		field_add(f, key, s->s, s->len);
}

/* "../daemon/log.c" (meson's relative __FILE__) -> "daemon/log.c". */
static const char *source_path(const char *file)
{
	for (;;) {
		if (strncmp(file, "../", 3) == 0)
			file += 3;
		else if (strncmp(file, "./", 2) == 0)
			file += 2;
		else
			return file;
	}
}

size_t log_journal_fields(int priority, int err, const char *message_id, const char *file, int line,
			  const char *func, const char *message, struct iovec *iov, char *buf,
			  size_t buf_size)
{
	struct field_buf f = { .iov = iov, .p = buf, .left = buf_size };
	struct log_ids ids;
	char num[24];

	/* MESSAGE first: if anything is left out, not that. */
	field_add_str(&f, "MESSAGE", message);
	if (f.n == 0)
		return 0;
	snprintf(num, sizeof(num), "%d", priority);
	field_add_str(&f, "PRIORITY", num);
	field_add_str(&f, "SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER);
	log_parse_ids(message, &ids);
	if (!message_id)
		message_id = log_message_id_for(&ids, priority);
	if (message_id)
		field_add_str(&f, "MESSAGE_ID", message_id);
	if (err != 0) {
		snprintf(num, sizeof(num), "%d", err < 0 ? -err : err);
		field_add_str(&f, "ERRNO", num);
	}
	field_add_span(&f, "VCOUNTERD_VM", &ids.vm);
	field_add_span(&f, "VCOUNTERD_MIGRATION", &ids.migration);
	field_add_span(&f, "VCOUNTERD_PEER", &ids.peer);
	field_add_span(&f, "VCOUNTERD_STEP", &ids.step);
	field_add_span(&f, "VCOUNTERD_ROLE", &ids.role);
	field_add_span(&f, "VCOUNTERD_BACKEND", &ids.backend);
	if (file)
		field_add_str(&f, "CODE_FILE", source_path(file));
	if (line > 0) {
		snprintf(num, sizeof(num), "%d", line);
		field_add_str(&f, "CODE_LINE", num);
	}
	if (func)
		field_add_str(&f, "CODE_FUNC", func);
	return f.n;
}

/* ---- output ---- */

static void write_stderr(int priority, const char *message)
{
	if (stderr_prefix) {
		/* sd-daemon(3): journald reads the priority from "<N>". */
		fprintf(stderr, "<%d>%s\n", priority, message);
	} else {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		fprintf(stderr, SYSLOG_IDENTIFIER "[%ld.%06ld] %s: %s\n", (long)ts.tv_sec,
			(long)(ts.tv_nsec / 1000), priority_name(priority), message);
	}
}

static void write_journal(int priority, int err, const char *message_id, const char *file, int line,
			  const char *func, const char *message)
{
	char buf[2 * LOG_LINE_MAX + 1024];
	struct iovec iov[LOG_JOURNAL_FIELDS_MAX];
	size_t n;
	int r;

	n = log_journal_fields(priority, err, message_id, file, line, func, message, iov, buf,
			       sizeof(buf));
	/* sd_journal_sendv() returns 0 when the socket is missing ("fail
	 * silently if the journal is not available", libsystemd 252): look. */
	if (n == 0)
		r = -ENOBUFS;
	else if (access(JOURNAL_SOCKET, W_OK) < 0)
		r = -errno;
	else
		r = sd_journal_sendv(iov, (int)n);
	if (r >= 0) {
		journal_failing = false;
		return;
	}
	/* Degraded but working: the line still goes out, on stderr. */
	if (!journal_failing) {
		char note[160];

		snprintf(note, sizeof(note), "cannot log to the journal (%s); logging to stderr",
			 strerror(-r));
		write_stderr(LOG_WARNING, note);
		journal_failing = true;
	}
	write_stderr(priority, message);
}

/* message = fmt's text, cut with "..." so that ": strerror" still fits. */
static void format_message(char *message, size_t size, int err, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static void format_message(char *message, size_t size, int err, const char *fmt, va_list ap)
{
	char suffix[128] = "";
	size_t room;
	int n;

	if (err != 0)
		snprintf(suffix, sizeof(suffix), ": %s", strerror(err < 0 ? -err : err));
	room = size - strlen(suffix);
	n = vsnprintf(message, room, fmt, ap);
	if (n < 0) {
		snprintf(message, room, "(unformattable message %s)", fmt);
		n = (int)strlen(message);
	}
	if ((size_t)n >= room) {
		memcpy(message + room - 4, "...", 4);
		n = (int)room - 1;
	}
	memcpy(message + n, suffix, strlen(suffix) + 1);
}

int log_internal(int priority, int err, const char *message_id, const char *file, int line,
		 const char *func, const char *fmt, ...)
{
	char message[LOG_LINE_MAX];
	int saved = errno;
	va_list ap;

	if (priority <= max_priority) {
		va_start(ap, fmt);
		format_message(message, sizeof(message), err, fmt, ap);
		va_end(ap);
		log_sanitize(message);
		if (to_journal)
			write_journal(priority, err, message_id, file, line, func, message);
		else
			write_stderr(priority, message);
	}
	errno = saved;
	return err < 0 ? err : -err;
}
