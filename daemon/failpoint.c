/* failpoint.c - VCOUNTERD_FAILPOINTS over libfiu (failpoint.h). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failpoint.h"
#include "log.h"

#ifdef VCD_FAILPOINTS
#include <fiu-control.h>
#include <fiu.h>

static const struct {
	const char *name;
	int value;
} errno_names[] = {
	{ "EIO", EIO },	      { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT }, { "EROFS", EROFS },
	{ "EACCES", EACCES }, { "EMFILE", EMFILE }, { "ENOMEM", ENOMEM },
};

static int parse_errno(const char *s)
{
	char *end;
	long v;

	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
		if (strcmp(s, errno_names[i].name) == 0)
			return errno_names[i].value;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v <= 0 || v > 4095)
		return -EINVAL;
	return (int)v;
}

bool failpoints_built_in(void)
{
	return true;
}

int failpoints_init(void)
{
	const char *env = getenv("VCOUNTERD_FAILPOINTS");
	char *list, *save = NULL;
	int r = 0;

	if (fiu_init(0) < 0)
		return -EIO;
	if (!env || !*env)
		return 0;
	list = strdup(env);
	if (!list)
		return -ENOMEM;
	for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');
		unsigned flags = FIU_ONETIME;
		size_t len;
		int value = EIO;

		if (eq) {
			*eq = '\0';
			value = parse_errno(eq + 1);
		}
		len = strlen(item);
		if (len && item[len - 1] == '*') {
			item[--len] = '\0';
			flags = 0;
		}
		if (value < 0 || len == 0 ||
		    (strncmp(item, "journal/", 8) != 0 && strncmp(item, "crash/", 6) != 0)) {
			log_error("VCOUNTERD_FAILPOINTS: \"%s\" is not NAME[*][=ERRNO] with NAME "
				  "journal/... or crash/...",
				  item);
			r = -EINVAL;
			break;
		}
		if (fiu_enable(item, value, NULL, flags) < 0) {
			r = -ENOMEM;
			break;
		}
		log_warning("fail point %s enabled (%s)", item, flags ? "once" : "every time");
	}
	free(list);
	return r;
}

int failpoint_errno(const char *prefix, const char *tag)
{
	char name[128];
	int v;

	snprintf(name, sizeof(name), "%s/%s", prefix, tag);
	v = fiu_fail(name);
	if (v)
		log_warning("fail point %s: failing with %s", name, strerror(v));
	return v ? -v : 0;
}

void failpoint_crash(const char *tag)
{
	char name[128];

	snprintf(name, sizeof(name), "crash/%s", tag);
	if (fiu_fail(name)) {
		log_warning("fail point %s: SIGKILL", name);
		raise(SIGKILL);
	}
}

#else

bool failpoints_built_in(void)
{
	return false;
}

int failpoints_init(void)
{
	const char *env = getenv("VCOUNTERD_FAILPOINTS");

	if (env && *env) {
		log_error("VCOUNTERD_FAILPOINTS is set, but this vcounterd was built without "
			  "fail points (meson -Dfailpoints=enabled, libfiu-dev)");
		return -EOPNOTSUPP;
	}
	return 0;
}

int failpoint_errno(const char *prefix, const char *tag)
{
	(void)prefix;
	(void)tag;
	return 0;
}

void failpoint_crash(const char *tag)
{
	(void)tag;
}

#endif
