/* /init of the arm64 rig's initramfs (build-and-test-arm64): mounts the pseudo file systems, runs
 * the programs listed in /tests, prints each one's exit status and a verdict, and powers off.
 *
 * /tests holds one program a line: `req|info SECONDS PATH [ARG...]`. A `req` program must exit 0
 * (a kselftest's 4, "skip", is not a pass); an `info` program only has its status printed. Each
 * runs with an alarm of SECONDS. The verdict line is `VERDICT: PASS ...` or `VERDICT: FAIL ...`;
 * build-and-test-arm64 looks for it, so that a guest that dies early is not taken for a pass.
 * The kernel boots with `quiet`; the kernel log lines that say how KVM came up are repeated as
 * `dmesg: ...` lines.
 * Build static with aarch64-linux-gnu-gcc. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 32

static void mount_or_say(const char *src, const char *dir, const char *type)
{
	mkdir(dir, 0755);
	if (mount(src, dir, type, 0, NULL) && errno != EBUSY)
		printf("init: mount %s on %s: %s\n", type, dir, strerror(errno));
}

/* Repeats the kernel log records that mention KVM or the kernel version. */
static void print_kvm_log(void)
{
	char rec[1024];
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	ssize_t n;

	if (fd < 0)
		return;
	while ((n = read(fd, rec, sizeof(rec) - 1)) > 0 || (n < 0 && errno == EPIPE)) {
		char *text;

		if (n <= 0)
			continue; /* EPIPE: records overwritten, read on */
		rec[n] = '\0';
		text = strchr(rec, ';'); /* "prio,seq,usec,flags;text\n" */
		if (text && (strstr(text, "kvm") || strstr(text, "KVM") ||
			     strstr(text, "Linux version") || strstr(text, "started at EL")))
			printf("dmesg: %s", text + 1);
	}
	close(fd);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs one /tests line; returns 1 if it counts as passed. */
static int run_line(char *line, int *required)
{
	char *argv[MAX_ARGS + 1], *kind, *secs, *save = NULL;
	int argc = 0, status;
	double start;
	pid_t pid;

	kind = strtok_r(line, " \t\n", &save);
	secs = strtok_r(NULL, " \t\n", &save);
	if (!kind || kind[0] == '#' || !secs)
		return -1;
	while (argc < MAX_ARGS && (argv[argc] = strtok_r(NULL, " \t\n", &save)))
		argc++;
	argv[argc] = NULL;
	if (!argc)
		return -1;
	*required = strcmp(kind, "req") == 0;

	printf("=== RUN %s", argv[0]);
	for (int i = 1; i < argc; i++)
		printf(" %s", argv[i]);
	printf(" (%s, %ss)\n", kind, secs);
	fflush(stdout);
	start = now();
	pid = fork();
	if (pid == 0) {
		alarm((unsigned int)atoi(secs));
		execv(argv[0], argv);
		printf("init: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0) {
		printf("=== END %s: fork/wait failed: %s\n", argv[0], strerror(errno));
		return 0;
	}
	if (WIFEXITED(status)) {
		printf("=== END %s: exit %d (%.1fs)\n", argv[0], WEXITSTATUS(status),
		       now() - start);
		return WEXITSTATUS(status) == 0;
	}
	printf("=== END %s: signal %d%s (%.1fs)\n", argv[0], WTERMSIG(status),
	       WTERMSIG(status) == SIGALRM ? ", timed out" : "", now() - start);
	return 0;
}

int main(void)
{
	int req_total = 0, req_passed = 0, info_total = 0, info_passed = 0;
	struct utsname u;
	char line[1024];
	FILE *tests;

	setvbuf(stdout, NULL, _IOLBF, 0);
	mount_or_say("devtmpfs", "/dev", "devtmpfs");
	mount_or_say("proc", "/proc", "proc");
	mount_or_say("sysfs", "/sys", "sysfs");
	mount_or_say("tmpfs", "/tmp", "tmpfs");
	if (uname(&u) == 0)
		printf("init: %s %s %s, /dev/kvm %s\n", u.sysname, u.release, u.machine,
		       access("/dev/kvm", R_OK | W_OK) ? "missing" : "present");
	print_kvm_log();

	tests = fopen("/tests", "r");
	if (!tests) {
		printf("VERDICT: FAIL no /tests: %s\n", strerror(errno));
	} else {
		while (fgets(line, sizeof(line), tests)) {
			int required = 0, ok = run_line(line, &required);

			if (ok < 0)
				continue;
			if (required) {
				req_total++;
				req_passed += ok;
			} else {
				info_total++;
				info_passed += ok;
			}
		}
		fclose(tests);
		printf("VERDICT: %s required %d/%d passed, informational %d/%d exited 0\n",
		       req_total && req_passed == req_total ? "PASS" : "FAIL", req_passed,
		       req_total, info_passed, info_total);
	}
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
