/* qmp - a minimal QMP client for the L1 payload (busybox has no python and no socat): connects to
 * QEMU's QMP unix socket, negotiates capabilities, sends each command and prints its answer line.
 *
 * Usage: qmp [--wait S] [--timeout S] SOCKET JSON...
 *   JSON: one command object, e.g. '{"execute":"query-migrate"}'; an "id" is added so that the
 *   answer is told apart from events (QMP sends every message on one line: events are skipped).
 *   --wait S     retry connecting for up to S seconds (QEMU may not have made the socket yet)
 *   --timeout S  per answer (default 30)
 * Prints each answer line ({"return": ...} or {"error": ...}). Exit 0 when all returned, 1 when
 * one answered an error (the rest are not sent), 3 when QEMU closed the socket before answering
 * (the "quit" command: its answer may or may not come first), 2 on usage or connection errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../../common/clockns.h"

static char rbuf[1 << 20];
static size_t rlen;

/* Next line into *line (NUL-terminated, in rbuf's storage until the next call). */
static int read_line(int fd, char **line, long long deadline_ms)
{
	static size_t consumed;

	if (consumed) {
		memmove(rbuf, rbuf + consumed, rlen - consumed);
		rlen -= consumed;
		consumed = 0;
	}
	for (;;) {
		char *nl = memchr(rbuf, '\n', rlen);
		if (nl) {
			*nl = 0;
			if (nl > rbuf && nl[-1] == '\r')
				nl[-1] = 0;
			*line = rbuf;
			consumed = (size_t)(nl - rbuf) + 1;
			return 0;
		}
		if (rlen == sizeof(rbuf) - 1)
			return -EMSGSIZE;
		long long left = deadline_ms - (long long)(clock_ns(CLOCK_MONOTONIC) / 1000000);
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		ssize_t got = read(fd, rbuf + rlen, sizeof(rbuf) - 1 - rlen);
		if (got == 0)
			return -EPIPE;
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		rlen += (size_t)got;
	}
}

/* Sends cmd with "id":"qmp-N" added after its opening brace; waits for the answer carrying it. */
static int command(int fd, const char *cmd, int n, int timeout_s, int print)
{
	char id[32], *msg, *line;
	const char *brace = strchr(cmd, '{');
	int r;

	if (!brace) {
		fprintf(stderr, "qmp: not a JSON object: %s\n", cmd);
		return 2;
	}
	snprintf(id, sizeof(id), "\"qmp-%d\"", n);
	if (asprintf(&msg, "%.*s{\"id\": %s, %s\n", (int)(brace - cmd), cmd, id, brace + 1) < 0)
		return 2;
	size_t len = strlen(msg);
	if (write(fd, msg, len) != (ssize_t)len) {
		fprintf(stderr, "qmp: write: %s\n", strerror(errno));
		free(msg);
		return 3;
	}
	free(msg);
	long long deadline = (long long)(clock_ns(CLOCK_MONOTONIC) / 1000000) + timeout_s * 1000LL;
	for (;;) {
		r = read_line(fd, &line, deadline);
		if (r < 0) {
			fprintf(stderr, "qmp: no answer to %s: %s\n", cmd, strerror(-r));
			return r == -EPIPE ? 3 : 2;
		}
		/* Events carry no id; answers carry ours ("id": "qmp-N"). */
		if (!strstr(line, id))
			continue;
		if (print)
			printf("%s\n", line);
		return strncmp(line, "{\"return\"", 9) == 0 ? 0 : 1;
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	double wait_s = 0;
	int timeout_s = 30, i, fd = -1, r;
	char *line;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--wait") && i + 1 < argc)
			wait_s = atof(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_s = atoi(argv[++i]);
		else
			break;
	}
	if (argc - i < 2 || strlen(argv[i]) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "usage: qmp [--wait S] [--timeout S] SOCKET JSON...\n");
		return 2;
	}
	strcpy(sa.sun_path, argv[i++]);
	long long deadline =
		(long long)(clock_ns(CLOCK_MONOTONIC) / 1000000) + (long long)(wait_s * 1000);
	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		r = errno;
		if (fd >= 0)
			close(fd);
		if ((long long)(clock_ns(CLOCK_MONOTONIC) / 1000000) >= deadline) {
			fprintf(stderr, "qmp: %s: %s\n", sa.sun_path, strerror(r));
			return 2;
		}
		usleep(50000);
	}
	/* The greeting ({"QMP": ...}), then capabilities negotiation. */
	r = read_line(fd, &line,
		      (long long)(clock_ns(CLOCK_MONOTONIC) / 1000000) + timeout_s * 1000LL);
	if (r < 0 || !strstr(line, "\"QMP\"")) {
		fprintf(stderr, "qmp: no QMP greeting on %s\n", sa.sun_path);
		return 2;
	}
	r = command(fd, "{\"execute\": \"qmp_capabilities\"}", 0, timeout_s, 0);
	if (r)
		return r;
	for (int n = 1; i < argc; i++, n++) {
		r = command(fd, argv[i], n, timeout_s, 1);
		if (r)
			return r;
	}
	close(fd);
	return 0;
}
