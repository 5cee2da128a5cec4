/* log.h - the one place that decides where daemon log lines go: journald
 * (syslog priority prefix on stderr, sd-daemon(3) style) when stderr is the
 * journal, plain "level: message" lines otherwise. One line per event with
 * the ids people grep for: "vm=vm-42 migration=7f3c... step=apply: ...". */
#pragma once

#include <stdarg.h>
#include <syslog.h>

void log_setup(int max_priority);
int log_get_max_priority(void);
int log_parse_level(const char *s); /* "error" "warning" "info" "debug" or -EINVAL */

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Log "<message>: <strerror(err)>" and return -|err|, for
 * "return log_error_errno(r, ...);". */
int log_errno(int priority, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_error(...)		    log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...)	    log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)		    log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)		    log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_error_errno(err, ...)   log_errno(LOG_ERR, err, __VA_ARGS__)
#define log_warning_errno(err, ...) log_errno(LOG_WARNING, err, __VA_ARGS__)
#define log_debug_errno(err, ...)   log_errno(LOG_DEBUG, err, __VA_ARGS__)
