/* log.c - stderr or journald-prefixed log lines, filtered by priority. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int max_priority = LOG_INFO;
static int use_prefix; /* stderr is connected to the journal */

static int stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	/* systemd.exec(5): JOURNAL_STREAM is "device:inode" of stderr's stream. */
	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

void log_setup(int priority)
{
	max_priority = priority;
	use_prefix = stderr_is_journal();
}

int log_get_max_priority(void)
{
	return max_priority;
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

static void log_va(int priority, const char *fmt, va_list ap)
{
	char line[2048];

	if (priority > max_priority)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (use_prefix) {
		fprintf(stderr, "<%d>%s\n", priority, line);
	} else {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		fprintf(stderr, "vcounterd[%ld.%06ld] %s: %s\n", (long)ts.tv_sec,
			(long)(ts.tv_nsec / 1000), priority_name(priority), line);
	}
}

void log_msg(int priority, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_va(priority, fmt, ap);
	va_end(ap);
	errno = saved;
}

int log_errno(int priority, int err, const char *fmt, ...)
{
	char text[1536];
	va_list ap;
	int e = err < 0 ? -err : err;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	log_msg(priority, "%s: %s", text, strerror(e));
	return -e;
}
