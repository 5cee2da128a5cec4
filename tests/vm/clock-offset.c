/* clock-offset: measures the offset between two hosts' CLOCK_REALTIME over UDP with NTP's
 * four-timestamp exchange, independently of the sync daemon, for the two-host rig's checks.
 *
 * Usage: clock-offset serve PORT TIMEOUT_S     answers until a client says "bye" or TIMEOUT_S pass;
 *                                              exit 0 after a bye, 1 on timeout
 *        clock-offset query HOST PORT [N]      N exchanges (default 32; retries until the server
 *                                              answers, up to 30 s), prints the one with the
 *                                              smallest round trip:
 *   peer_offset_ns = server clock - client clock, peer_bound_ns = half the round trip minus the
 *   server's turnaround: the true offset lies in peer_offset_ns +- peer_bound_ns (RFC 5905
 *   section 8). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../common/clockns.h"

#define MAGIC	 UINT32_C(0x76636f66) /* "vcof" */
#define OP_QUERY 1
#define OP_REPLY 2
#define OP_BYE	 3

struct packet {
	uint32_t magic;
	uint32_t op;
	uint64_t seq;
	int64_t t2_ns; /* server receive */
	int64_t t3_ns; /* server send */
};

static int serve(int port, int timeout_s)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int64_t deadline_ms =
		(int64_t)(clock_ns(CLOCK_MONOTONIC) / 1000000) + (int64_t)timeout_s * 1000;
	int fd;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "clock-offset: udp port %d: %s\n", port, strerror(errno));
		return 2;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		struct sockaddr_in peer;
		socklen_t peer_len = sizeof(peer);
		struct packet p;
		int64_t left_ms = deadline_ms - (int64_t)(clock_ns(CLOCK_MONOTONIC) / 1000000), t2;
		ssize_t n;

		if (left_ms <= 0)
			return 1;
		if (poll(&pfd, 1, (int)left_ms) <= 0)
			continue;
		n = recvfrom(fd, &p, sizeof(p), 0, (struct sockaddr *)&peer, &peer_len);
		t2 = (int64_t)clock_ns(CLOCK_REALTIME);
		if (n != (ssize_t)sizeof(p) || p.magic != MAGIC)
			continue;
		if (p.op == OP_BYE)
			return 0;
		if (p.op != OP_QUERY)
			continue;
		p.op = OP_REPLY;
		p.t2_ns = t2;
		p.t3_ns = (int64_t)clock_ns(CLOCK_REALTIME);
		(void)!sendto(fd, &p, sizeof(p), 0, (struct sockaddr *)&peer, peer_len);
	}
}

static int query(const char *host, int port, int count)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int64_t best_delay = INT64_MAX, best_offset = 0,
		give_up_ms = (int64_t)(clock_ns(CLOCK_MONOTONIC) / 1000000) + 30000;
	struct packet bye = { .magic = MAGIC, .op = OP_BYE };
	int fd, got = 0, i;
	uint64_t seq = 0;

	if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
		fprintf(stderr, "clock-offset: %s is not an IPv4 address\n", host);
		return 2;
	}
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "clock-offset: %s:%d: %s\n", host, port, strerror(errno));
		return 2;
	}
	while (got < count && (int64_t)(clock_ns(CLOCK_MONOTONIC) / 1000000) < give_up_ms) {
		struct packet q = { .magic = MAGIC, .op = OP_QUERY, .seq = ++seq }, r;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t t1, t4, delay, offset;
		ssize_t n;

		t1 = (int64_t)clock_ns(CLOCK_REALTIME);
		if (send(fd, &q, sizeof(q), 0) < 0) {
			/* ECONNREFUSED from an earlier query: the server is not up yet. */
			usleep(100000);
			continue;
		}
		if (poll(&pfd, 1, 200) <= 0)
			continue;
		n = recv(fd, &r, sizeof(r), 0);
		t4 = (int64_t)clock_ns(CLOCK_REALTIME);
		if (n != (ssize_t)sizeof(r) || r.magic != MAGIC || r.op != OP_REPLY ||
		    r.seq != q.seq)
			continue;
		got++;
		delay = (t4 - t1) - (r.t3_ns - r.t2_ns);
		offset = ((r.t2_ns - t1) + (r.t3_ns - t4)) / 2;
		if (delay < best_delay) {
			best_delay = delay;
			best_offset = offset;
		}
	}
	for (i = 0; i < 3; i++)
		(void)!send(fd, &bye, sizeof(bye), 0);
	if (got == 0) {
		fprintf(stderr, "clock-offset: no answer from %s:%d\n", host, port);
		return 1;
	}
	printf("peer_exchanges=%d\n", got);
	printf("peer_offset_ns=%" PRId64 "\n", best_offset);
	printf("peer_delay_ns=%" PRId64 "\n", best_delay);
	printf("peer_bound_ns=%" PRId64 "\n", (best_delay + 1) / 2);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "serve") == 0)
		return serve(atoi(argv[2]), atoi(argv[3]));
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "query") == 0)
		return query(argv[2], atoi(argv[3]), argc == 5 ? atoi(argv[4]) : 32);
	fprintf(stderr, "usage: clock-offset serve PORT TIMEOUT_S | query HOST PORT [N]\n");
	return 2;
}
