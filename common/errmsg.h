/* errmsg.h - the one way a decoder or a check says why it refused: a
 * sentence into the caller's buffer, and its error code back. */
#pragma once

#include <stddef.h>

/* Writes the sentence into err (when err is not NULL and err_size is not 0,
 * truncated to fit) and returns r, so that a check is one line:
 * return errmsg(err, err_size, -EINVAL, "...", ...). */
int errmsg(char *err, size_t err_size, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
