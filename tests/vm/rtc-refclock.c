/* rtc-refclock: a reference clock for chronyd ("refclock SOCK PATH") read from a second MC146818 RTC
 * that QEMU runs off the host's clock, so the two-host rig's time server is disciplined by a real
 * reference. One sample per RTC second: the RTC's new second minus the system time of its edge.
 *
 * Usage: rtc-refclock SOCKET IOPORT   (e.g. 0x250; runs until killed)
 *
 * Why a second RTC, polled: chronyd clears the kernel's STA_UNSYNC only with "rtcsync" (chrony
 * sys_timex.c set_sync_status), which turns on the kernel's 11-minute mode; the kernel then writes
 * the system time into its own RTC (kernel/time/ntp.c sync_hw_clock), half a second off under QEMU
 * (the AMD register-A path of mc146818_set_time does no divider reset, so QEMU starts the new
 * second at the write), which would shift a reference read from that RTC. The kernel has no
 * driver for this one (it is not in the ACPI tables), so nothing but this program touches it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../../common/clockns.h"

/* chrony's refclock_sock.c: one datagram per sample, native byte order. */
#define SOCK_MAGIC 0x534f434b

struct sock_sample {
	struct timeval tv; /* system time of the measurement */
	double offset;	   /* true time - system time at tv, seconds */
	int pulse;	   /* 0: the sample carries whole seconds too */
	int leap;	   /* 0: no leap second pending */
	int _pad;
	int magic;
};

/* MC146818 registers (datasheet; QEMU hw/rtc/mc146818rtc.c). */
#define REG_SEC	     0x00
#define REG_MIN	     0x02
#define REG_HOUR     0x04
#define REG_MDAY     0x07
#define REG_MON	     0x08
#define REG_YEAR     0x09
#define REG_B	     0x0b
#define REG_CENTURY  0x32
#define REG_B_BINARY 0x04

/* Samples whose edge is known less precisely than this are not sent: run-two-vms declares 1 ms of
 * delay for this refclock, so every sample chronyd gets is within +-0.5 ms of the edge. */
#define MAX_EDGE_WIDTH_NS 1000000

static unsigned int port;
static int binary_mode;

static unsigned int rtc_read(unsigned int reg)
{
	outb(reg, port);
	return inb(port + 1);
}

static unsigned int rtc_field(unsigned int reg)
{
	unsigned int v = rtc_read(reg);

	return binary_mode ? v : (v >> 4) * 10 + (v & 0x0f);
}

/* The RTC's date and time as seconds since the epoch (QEMU's RTC runs in UTC: -rtc base=utc). Read
 * right after a seconds edge, so no update can come between the fields. */
static time_t rtc_time(void)
{
	struct tm tm = { 0 };

	tm.tm_sec = (int)rtc_field(REG_SEC);
	tm.tm_min = (int)rtc_field(REG_MIN);
	tm.tm_hour = (int)rtc_field(REG_HOUR);
	tm.tm_mday = (int)rtc_field(REG_MDAY);
	tm.tm_mon = (int)rtc_field(REG_MON) - 1;
	tm.tm_year = (int)(rtc_field(REG_CENTURY) * 100 + rtc_field(REG_YEAR)) - 1900;
	return timegm(&tm);
}

/* Polls the seconds register every step_us until it changes, at most limit_ns. The edge lies
 * between the start of the last read that saw the old second and the end of the first read that
 * saw the new one: *ret_edge_ns is the middle (CLOCK_REALTIME), *ret_width_ns that span,
 * *ret_edge_mono_ns the same middle on CLOCK_MONOTONIC (not stepped by chronyd, so the next edge
 * can be scheduled on it). -ETIMEDOUT if no edge. */
static int wait_edge(int64_t step_us, int64_t limit_ns, int64_t *ret_edge_ns, int64_t *ret_width_ns,
		     int64_t *ret_edge_mono_ns)
{
	int64_t start = (int64_t)clock_ns(CLOCK_REALTIME), before_prev, before, after;
	unsigned int sec, prev;

	before_prev = (int64_t)clock_ns(CLOCK_REALTIME);
	prev = rtc_read(REG_SEC);
	for (;;) {
		usleep((useconds_t)step_us);
		before = (int64_t)clock_ns(CLOCK_REALTIME);
		sec = rtc_read(REG_SEC);
		after = (int64_t)clock_ns(CLOCK_REALTIME);
		if (sec != prev)
			break;
		before_prev = before;
		if (after - start > limit_ns)
			return -ETIMEDOUT;
	}
	*ret_edge_mono_ns = (int64_t)clock_ns(CLOCK_MONOTONIC) - (after - before_prev) / 2;
	*ret_edge_ns = before_prev + (after - before_prev) / 2;
	*ret_width_ns = after - before_prev;
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int64_t edge_ns, width_ns, edge_mono_ns;
	int sock_fd;

	if (argc != 3 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "usage: rtc-refclock SOCKET IOPORT\n");
		return 2;
	}
	strcpy(addr.sun_path, argv[1]);
	port = (unsigned int)strtoul(argv[2], NULL, 0);
	if (ioperm(port, 2, 1) < 0) {
		fprintf(stderr, "rtc-refclock: ioperm 0x%x: %s\n", port, strerror(errno));
		return 1;
	}
	/* A missing device reads as 0xff everywhere. */
	if (rtc_read(REG_B) == 0xff) {
		fprintf(stderr, "rtc-refclock: no RTC at port 0x%x\n", port);
		return 1;
	}
	binary_mode = !!(rtc_read(REG_B) & REG_B_BINARY);
	sock_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock_fd < 0) {
		fprintf(stderr, "rtc-refclock: socket: %s\n", strerror(errno));
		return 1;
	}

	/* The first edge: poll every ms for up to 2 s. */
	while (wait_edge(1000, 2000000000, &edge_ns, &width_ns, &edge_mono_ns) < 0)
		;
	for (;;) {
		struct sock_sample s = { .magic = SOCK_MAGIC };
		time_t rtc_s = rtc_time();
		int64_t sleep_ns;

		if (rtc_s != (time_t)-1 && width_ns <= MAX_EDGE_WIDTH_NS) {
			s.tv.tv_sec = edge_ns / 1000000000;
			s.tv.tv_usec = (edge_ns % 1000000000) / 1000;
			s.offset = (double)(rtc_s - s.tv.tv_sec) - s.tv.tv_usec / 1e6;
			/* chronyd may not be listening yet: drop the sample, keep going. */
			(void)!sendto(sock_fd, &s, sizeof(s), 0, (struct sockaddr *)&addr,
				      sizeof(addr));
		}
		/* One line per edge, for the record (init sends it to a file). */
		printf("rtc=%lld edge_ns=%lld edge_width_ns=%lld%s\n", (long long)rtc_s,
		       (long long)edge_ns, (long long)width_ns,
		       width_ns <= MAX_EDGE_WIDTH_NS ? "" : " (not sent: too wide)");
		fflush(stdout);
		/* Sleep to 2 ms before the next edge (the clock runs at about the RTC's rate), then
		 * poll every 100 us; if the edge is not within 50 ms of where it was expected (the
		 * sleep overran it), look for it the slow way: 1 ms steps, a sample too wide to send. */
		sleep_ns = edge_mono_ns + 1000000000 - 2000000 - (int64_t)clock_ns(CLOCK_MONOTONIC);
		if (sleep_ns > 0 && sleep_ns < 1000000000)
			usleep((useconds_t)(sleep_ns / 1000));
		if (wait_edge(100, 50000000, &edge_ns, &width_ns, &edge_mono_ns) < 0) {
			printf("edge not where expected, slow search\n");
			while (wait_edge(1000, 2000000000, &edge_ns, &width_ns, &edge_mono_ns) < 0)
				printf("no edge in 2 s\n");
		}
	}
}
