/* errmsg.c - see errmsg.h. */
#include <stdarg.h>
#include <stdio.h>

#include "errmsg.h"

int errmsg(char *err, size_t err_size, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && err_size > 0) {
		va_start(ap, fmt);
		vsnprintf(err, err_size, fmt, ap);
		va_end(ap);
	}
	return r;
}
