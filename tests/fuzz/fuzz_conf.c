/* fuzz_conf - libFuzzer target: the configuration file parser on a buffer
 * (conf_parse, pure), then the cross-setting checks and the printer. Names
 * are looked up in a fake user database so that no input reaches NSS. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fake_id(const char *name, uint32_t *ret_id)
{
	if (strcmp(name, "root") == 0) {
		*ret_id = 0;
		return 0;
	}
	if (strcmp(name, "alice") == 0) {
		*ret_id = 1001;
		return 0;
	}
	return -ENOENT;
}

static const struct conf_ops fake_ops = {
	.user_id = fake_id,
	.group_id = fake_id,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf *conf;
	char err[512];

	if (size > CONF_MAX_FILE_BYTES)
		return 0;
	conf = conf_new();
	if (!conf)
		return 0;
	if (conf_parse(conf, "fuzz.conf", (const char *)data, size, &fake_ops, err, sizeof(err)) ==
		    0 &&
	    conf_finish(conf, 1000, "fuzz-host") == 0 &&
	    conf_validate(conf, err, sizeof(err)) == 0) {
		FILE *f = fopen("/dev/null", "w");

		if (f) {
			conf_print(conf, f);
			fclose(f);
		}
	}
	conf_free(conf);
	return 0;
}
