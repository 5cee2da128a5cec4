/* macro.h - small helpers shared by every module: cleanup attributes,
 * ownership transfer and array sizes (after systemd's fd-util.h/macro.h). */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline int close_nointr(int fd)
{
	int saved = errno;

	if (fd >= 0)
		close(fd);
	errno = saved;
	return -1;
}

static inline void closep(int *fd)
{
	close_nointr(*fd);
}

static inline void freep(void *p)
{
	free(*(void **)p);
}

#define _cleanup_(f)	__attribute__((cleanup(f)))
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_free_	_cleanup_(freep)

/* Hand ownership on: return the value and leave the variable empty. */
#define TAKE_FD(fd)                 \
	__extension__({             \
		int *_pfd_ = &(fd); \
		int _fd_ = *_pfd_;  \
		*_pfd_ = -1;        \
		_fd_;               \
	})

#define TAKE_PTR(ptr)                             \
	__extension__({                           \
		__typeof__(ptr) *_pptr_ = &(ptr); \
		__typeof__(ptr) _p_ = *_pptr_;    \
		*_pptr_ = NULL;                   \
		_p_;                              \
	})

#define NSEC_PER_SEC  UINT64_C(1000000000)
#define NSEC_PER_MSEC UINT64_C(1000000)
#define NSEC_PER_USEC UINT64_C(1000)
