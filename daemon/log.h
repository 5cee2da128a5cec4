/* log.h - the one place that decides where daemon log lines go: journald
 * with structured fields (sd_journal_sendv) when stderr is the journal or
 * --log-target journal says so, stderr lines otherwise. One line per event
 * with the ids people grep for: "vm=vm-42 migration=7f3c... step=apply: ...";
 * the journal fields are read from those ids (log.c says how and why). */
#pragma once

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>
#include <syslog.h>

#include "clockns.h"
#include "ratelimit.h"

/* MESSAGE_ID of the events a person or a tool looks up in the journal
 * (`journalctl MESSAGE_ID=...`, systemd.journal-fields(7)). Generated once
 * with `systemd-id128 new`; never change one. systemd/vcounterd.catalog
 * explains each (`journalctl -x`). The first five follow from a line's
 * step= id (log_message_id_for()); the others are given by their call site
 * with log_info_id(). */
#define LOG_MESSAGE_MIGRATION_DONE    "aaa5697f0fe440d7aa3b1e58684ee9f7" /* step=done */
#define LOG_MESSAGE_MIGRATION_FAILED  "9825eeebad6f405090471253fc8cfc44" /* step=failed */
#define LOG_MESSAGE_MIGRATION_ABORTED "adab1fc171b844e18f67b005661ac223" /* step=aborted */
#define LOG_MESSAGE_VM_REGISTERED     "5c75271fa4814929b628d5fbab4ca09e" /* step=register */
#define LOG_MESSAGE_VM_UNREGISTERED   "84c50426db0b4776a1413e076297c946" /* step=unregister */
#define LOG_MESSAGE_DAEMON_STARTED    "8d37f79148754c5a932ac68dce75e8f9"
#define LOG_MESSAGE_DAEMON_STOPPING   "56bffb2295c040389cc31049b9c017d8"
#define LOG_MESSAGE_CONFIG_RELOADED   "b6191f8548de4f65a478fc423020af77"

/* Bytes of one formatted message; longer ones are cut (with "..."). */
#define LOG_LINE_MAX 4096

enum log_target {
	LOG_TARGET_AUTO,    /* the journal when stderr is connected to it, else stderr */
	LOG_TARGET_JOURNAL, /* sd_journal_sendv(); stderr only when that fails */
	LOG_TARGET_STDERR,  /* stderr, with <N> priority prefixes if it is the journal */
	_LOG_TARGET_MAX,
	_LOG_TARGET_INVALID = -EINVAL,
};

const char *log_target_to_string(enum log_target t);
enum log_target log_target_from_string(const char *s); /* or _LOG_TARGET_INVALID */

/* Choose the target (before log_setup(); default auto). */
void log_set_target(enum log_target t);
/* Set the level and decide where lines go, once. */
void log_setup(int max_priority);
int log_get_max_priority(void);
bool log_to_journal(void);	    /* what log_setup() decided */
int log_parse_level(const char *s); /* "error" "warning" "info" "debug" or -EINVAL */

/* Log one event. err != 0 appends ": strerror(|err|)" and the ERRNO= field;
 * message_id (a LOG_MESSAGE_*) or NULL, then the one its step= implies.
 * Returns -|err|, for "return log_error_errno(r, ...);". errno is kept. */
int log_internal(int priority, int err, const char *message_id, const char *file, int line,
		 const char *func, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

#define log_full_errno_id(priority, err, message_id, ...) \
	log_internal(priority, err, message_id, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_msg(priority, ...)	      log_full_errno_id(priority, 0, NULL, __VA_ARGS__)
#define log_errno(priority, err, ...) log_full_errno_id(priority, err, NULL, __VA_ARGS__)

/* One event within a rate limit (ratelimit.h) that a peer, a VMM or a
 * stranger can make happen at will: dropped beyond it, and the first line
 * let through after some were held back says how many. */
#define log_ratelimited(limit, priority, err, fmt, ...)                                         \
	do {                                                                                    \
		uint64_t held_back_;                                                            \
		if (!ratelimit_pass((limit), clock_ns(CLOCK_MONOTONIC), &held_back_))           \
			break;                                                                  \
		if (held_back_)                                                                 \
			log_errno((priority), (err),                                            \
				  fmt " (%" PRIu64 " more such lines not logged)", __VA_ARGS__, \
				  held_back_);                                                  \
		else                                                                            \
			log_errno((priority), (err), fmt, __VA_ARGS__);                         \
	} while (0)

#define log_error(...)		     log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...)	     log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)		     log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)		     log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_error_errno(err, ...)    log_errno(LOG_ERR, err, __VA_ARGS__)
#define log_warning_errno(err, ...)  log_errno(LOG_WARNING, err, __VA_ARGS__)
#define log_debug_errno(err, ...)    log_errno(LOG_DEBUG, err, __VA_ARGS__)
/* An event with its own MESSAGE_ID, e.g.
 * log_info_id(LOG_MESSAGE_CONFIG_RELOADED, "configuration reloaded from %s", path); */
#define log_info_id(message_id, ...) log_full_errno_id(LOG_INFO, 0, message_id, __VA_ARGS__)

/* ---- the pure parts, exposed for tests/unit/test_log.c ---- */

struct log_span {
	const char *s; /* into the message; NULL when absent */
	size_t len;
};

/* The ids a line names; each becomes a VCOUNTERD_<KEY>= field. */
struct log_ids {
	struct log_span vm, migration, peer, step, role, backend;
};

/* Read the ids from a formatted message: key=value tokens from its start,
 * separated by single spaces; a token ending in ':' closes the prefix, and
 * key=value tokens right after it (the detail, "step=done: backend=kvm-x86")
 * are read up to the next token that is not one or that ends in ':'. The
 * first value of a key wins. Returns the number of ids found. */
int log_parse_ids(const char *message, struct log_ids *ret_ids);

/* The MESSAGE_ID a line's step implies, or NULL (log.h's table above; a
 * register line at error level is a refusal, not a registration). */
const char *log_message_id_for(const struct log_ids *ids, int priority);

/* Replace control characters (newlines included) by '?': one event stays
 * one line, and text from a peer cannot forge another. Returns s. */
char *log_sanitize(char *s);

/* The fields of one journal entry as "KEY=value" iovecs, built in buf:
 * MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE/LINE/FUNC, MESSAGE_ID,
 * ERRNO, VCOUNTERD_* ids. Returns the number of iovecs used (at most
 * LOG_JOURNAL_FIELDS_MAX); fields that do not fit buf are left out, all of
 * them (0) when MESSAGE does not. */
#define LOG_JOURNAL_FIELDS_MAX 16
size_t log_journal_fields(int priority, int err, const char *message_id, const char *file, int line,
			  const char *func, const char *message, struct iovec *iov, char *buf,
			  size_t buf_size);
