/* vcounterctl.c - command-line controller of a vcounterd: its gRPC service
 * Control through libvcounter's public API (vcounter/control.h), as tables
 * for people or JSON for programs. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vcounter/control.h>

/* Exit codes; --help lists them too. */
enum vctl_exit {
	VCTL_EXIT_OK = 0,
	VCTL_EXIT_DAEMON_ERROR = 1, /* the daemon answered an error; migrate --wait: the
				       migration ended aborted or failed */
	VCTL_EXIT_USAGE = 2,
	VCTL_EXIT_TRANSPORT = 3, /* cannot connect, TLS, transport failure */
	VCTL_EXIT_NOT_FOUND = 4,
	VCTL_EXIT_PERMISSION = 5,
};

/* Unary calls wait this long unless --timeout says otherwise; watch and
 * migrate --wait wait for as long as it takes unless --timeout is given. */
#define VCTL_DEFAULT_TIMEOUT_MS 30000
#define VCTL_MAX_COLUMNS	12
#define VCTL_NSEC_PER_SEC	UINT64_C(1000000000)

/* Options a command may take (struct command.options). */
enum {
	OPT_VM = 1 << 0,
	OPT_RUNNING = 1 << 1,
	OPT_TO = 1 << 2,
	OPT_PEER_NAME = 1 << 3,
	OPT_WAIT = 1 << 4,
	OPT_REASON = 1 << 5,
	OPT_MIGRATION = 1 << 6,
	OPT_COUNT = 1 << 7,
};

struct args {
	struct vcounter_ctl_options connect;
	bool timeout_given;
	bool json;
	const char *vm_id;
	bool running;
	const char *to;
	const char *peer_name;
	bool wait;
	const char *reason;
	const char *migration_id;
	unsigned long count;
	unsigned used; /* OPT_* seen */
	const char *positional[4];
	size_t n_positional;
};

struct command {
	const char *name;
	const char *summary;
	const char *synopsis;
	size_t min_args, max_args;
	unsigned options;
	const char *help;
	int (*run)(const struct args *a);
};

static const char *program = "vcounterctl";

static void error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void error(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout); /* what was said before comes before, also when piped */
	fprintf(stderr, "%s: ", program);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- JSON (compact, one document per line) ---- */

struct json {
	FILE *f;
	bool need_comma;
};

/* Strings are escaped per RFC 8259 section 7; bytes that are not UTF-8
 * become U+FFFD so the document stays valid whatever the daemon sent. */
static void json_string(struct json *j, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");

	fputc('"', j->f);
	while (*p) {
		size_t n = 0;

		if (*p == '"' || *p == '\\') {
			fprintf(j->f, "\\%c", *p++);
			continue;
		}
		if (*p < 0x20) {
			const char *short_escape = strchr("\bb\ff\nn\rr\tt", *p);

			if (short_escape)
				fprintf(j->f, "\\%c", short_escape[1]);
			else
				fprintf(j->f, "\\u%04x", *p);
			p++;
			continue;
		}
		if (*p < 0x80) {
			fputc(*p++, j->f);
			continue;
		}
		/* Length of a well-formed UTF-8 sequence (RFC 3629 section 4). */
		if (p[0] >= 0xc2 && p[0] <= 0xdf)
			n = 2;
		else if (p[0] >= 0xe0 && p[0] <= 0xef)
			n = 3;
		else if (p[0] >= 0xf0 && p[0] <= 0xf4)
			n = 4;
		for (size_t i = 1; i < n; i++)
			if ((p[i] & 0xc0) != 0x80)
				n = 0;
		if (n == 3 && ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0)))
			n = 0; /* overlong, or a surrogate */
		if (n == 4 && ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90)))
			n = 0;
		if (n == 0) {
			fputs("\\ufffd", j->f);
			p++;
			continue;
		}
		fwrite(p, 1, n, j->f);
		p += n;
	}
	fputc('"', j->f);
}

static void json_key(struct json *j, const char *key)
{
	if (j->need_comma)
		fputc(',', j->f);
	j->need_comma = true;
	if (key) {
		json_string(j, key);
		fputc(':', j->f);
	}
}

static void json_open(struct json *j, const char *key, char bracket)
{
	json_key(j, key);
	fputc(bracket, j->f);
	j->need_comma = false;
}

static void json_close(struct json *j, char bracket)
{
	fputc(bracket, j->f);
	j->need_comma = true;
}

static void json_str(struct json *j, const char *key, const char *value)
{
	json_key(j, key);
	json_string(j, value);
}

static void json_u64(struct json *j, const char *key, uint64_t value)
{
	json_key(j, key);
	fprintf(j->f, "%" PRIu64, value);
}

static void json_i64(struct json *j, const char *key, int64_t value)
{
	json_key(j, key);
	fprintf(j->f, "%" PRId64, value);
}

static void json_bool(struct json *j, const char *key, bool value)
{
	json_key(j, key);
	fputs(value ? "true" : "false", j->f);
}

static void json_null(struct json *j, const char *key)
{
	json_key(j, key);
	fputs("null", j->f);
}

static void json_end(struct json *j)
{
	fputc('\n', j->f);
	fflush(j->f);
}

/* Key names are the proto fields' (proto/vcounter.proto); enums are the
 * names the daemon logs ("kvm-x86", "source", "preparing"). */
static void json_vm(struct json *j, const char *key, const struct vcounter_ctl_vm *vm)
{
	json_open(j, key, '{');
	json_str(j, "vm_id", vm->vm_id);
	json_str(j, "role", vm->role);
	json_u64(j, "vcpu_count", vm->vcpu_count);
	json_str(j, "backend", vm->backend);
	json_bool(j, "offset_control", vm->offset_control);
	json_str(j, "probe_detail", vm->probe_detail);
	json_u64(j, "guest_tsc_khz", vm->guest_tsc_khz);
	json_i64(j, "registered_by_pid", vm->registered_by_pid);
	json_u64(j, "registered_by_uid", vm->registered_by_uid);
	json_bool(j, "registration_complete", vm->registration_complete);
	json_str(j, "arch", vm->arch);
	json_close(j, '}');
}

static void json_report(struct json *j, const char *key, const struct vcounter_report *r)
{
	json_open(j, key, '{');
	json_str(j, "migration_id", r->migration_id);
	json_str(j, "vm_id", r->vm_id);
	json_str(j, "backend", r->backend);
	json_u64(j, "generation", r->generation);
	json_open(j, "offsets_before", '[');
	for (uint32_t i = 0; i < r->n_vcpus; i++)
		json_u64(j, NULL, r->offsets_before[i]);
	json_close(j, ']');
	json_open(j, "offsets_after", '[');
	for (uint32_t i = 0; i < r->n_vcpus; i++)
		json_u64(j, NULL, r->offsets_after[i]);
	json_close(j, ']');
	json_i64(j, "elapsed_ns", r->elapsed_ns);
	json_i64(j, "delta_cycles", r->delta_cycles);
	json_u64(j, "error_bound_ns", r->error_bound_ns);
	json_u64(j, "apply_latency_ns", r->apply_latency_ns);
	json_u64(j, "guest_tsc_khz", r->guest_tsc_khz);
	json_bool(j, "error_bound_exceeded", r->error_bound_exceeded);
	json_u64(j, "clamped_ns", r->clamped_ns);
	json_str(j, "timescale", r->timescale);
	json_str(j, "kvmclock_check", r->kvmclock_check);
	json_u64(j, "kvmclock_flags_source", r->kvmclock_flags_source);
	json_u64(j, "kvmclock_flags_before", r->kvmclock_flags_before);
	json_u64(j, "kvmclock_flags_after", r->kvmclock_flags_after);
	json_i64(j, "kvmclock_error_ns", r->kvmclock_error_ns);
	json_str(j, "source_sync", r->source_sync);
	json_u64(j, "source_maxerror_ns", r->source_maxerror_ns);
	json_str(j, "target_sync", r->target_sync);
	json_u64(j, "target_maxerror_ns", r->target_maxerror_ns);
	json_close(j, '}');
}

static void json_migration(struct json *j, const char *key, const struct vcounter_ctl_migration *m)
{
	json_open(j, key, '{');
	json_str(j, "migration_id", m->migration_id);
	json_str(j, "vm_id", m->vm_id);
	json_str(j, "role", m->role);
	json_str(j, "step", m->step);
	json_str(j, "peer_identity", m->peer_identity);
	json_str(j, "peer_address", m->peer_address);
	json_u64(j, "generation", m->generation);
	json_bool(j, "started_by_controller", m->started_by_controller);
	json_bool(j, "recovered", m->recovered);
	json_bool(j, "awaiting_source", m->awaiting_source);
	json_u64(j, "age_ns", m->age_ns);
	json_u64(j, "step_age_ns", m->step_age_ns);
	json_i64(j, "planned_delta_cycles", m->planned_delta_cycles);
	json_u64(j, "planned_error_bound_ns", m->planned_error_bound_ns);
	if (m->has_report)
		json_report(j, "report", &m->report);
	else
		json_null(j, "report");
	json_str(j, "failure_reason", m->failure_reason);
	json_close(j, '}');
}

/* ---- human output ---- */

/* "1.50 s", "2.3 ms", "1h 02min": three significant digits, the unit that
 * reads best. */
static const char *format_ns(char *buf, size_t size, uint64_t ns)
{
	if (ns < 1000)
		snprintf(buf, size, "%" PRIu64 " ns", ns);
	else if (ns < 1000000)
		snprintf(buf, size, "%.3g us", (double)ns / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, size, "%.3g ms", (double)ns / 1e6);
	else if (ns < UINT64_C(60000000000))
		snprintf(buf, size, "%.3g s", (double)ns / 1e9);
	else if (ns < UINT64_C(3600000000000))
		snprintf(buf, size, "%" PRIu64 "min %02" PRIu64 "s", ns / UINT64_C(60000000000),
			 ns / UINT64_C(1000000000) % 60);
	else if (ns < UINT64_C(86400000000000))
		snprintf(buf, size, "%" PRIu64 "h %02" PRIu64 "min", ns / UINT64_C(3600000000000),
			 ns / UINT64_C(60000000000) % 60);
	else
		snprintf(buf, size, "%" PRIu64 "d %02" PRIu64 "h", ns / UINT64_C(86400000000000),
			 ns / UINT64_C(3600000000000) % 24);
	return buf;
}

static const char *format_signed_ns(char *buf, size_t size, int64_t ns)
{
	char tmp[32];

	format_ns(tmp, sizeof(tmp), ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns);
	snprintf(buf, size, "%s%s", ns < 0 ? "-" : "", tmp);
	return buf;
}

static const char *format_bound(char *buf, size_t size, uint64_t ns)
{
	if (ns == UINT64_MAX)
		return snprintf(buf, size, "unbounded (a clock is unsynchronised)"), buf;
	return format_ns(buf, size, ns);
}

static const char *format_time(char *buf, size_t size, uint64_t realtime_ns)
{
	time_t sec = (time_t)(realtime_ns / VCTL_NSEC_PER_SEC);
	struct tm tm;
	size_t n;

	if (!localtime_r(&sec, &tm) || (n = strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm)) == 0)
		return snprintf(buf, size, "%" PRIu64, realtime_ns), buf;
	snprintf(buf + n, size - n, ".%03u", (unsigned)(realtime_ns / 1000000 % 1000));
	return buf;
}

/* Text from the daemon on a terminal: no control characters. */
static char *printable(const char *s)
{
	char *out = strdup(s && *s ? s : "-");

	if (!out) {
		error("out of memory");
		exit(VCTL_EXIT_TRANSPORT);
	}
	size_t len;

	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	len = strlen(out);
	while (len > 1 && out[len - 1] == ' ')
		out[--len] = '\0';
	return out;
}

/* A table printed with aligned columns, as `systemctl list-units` does:
 * headers upper case, two spaces between columns, numbers right aligned,
 * "-" for empty cells. */
struct table {
	size_t n_columns;
	const char *headers[VCTL_MAX_COLUMNS];
	bool right[VCTL_MAX_COLUMNS];
	char **cells; /* n_rows * n_columns */
	size_t n_rows;
};

static void table_add(struct table *t, ...)
{
	char **cells = realloc(t->cells, (t->n_rows + 1) * t->n_columns * sizeof(char *));
	va_list ap;

	if (!cells) {
		error("out of memory");
		exit(VCTL_EXIT_TRANSPORT);
	}
	t->cells = cells;
	va_start(ap, t);
	for (size_t c = 0; c < t->n_columns; c++)
		cells[t->n_rows * t->n_columns + c] = printable(va_arg(ap, const char *));
	va_end(ap);
	t->n_rows++;
}

static void table_print(struct table *t)
{
	size_t width[VCTL_MAX_COLUMNS] = { 0 };

	for (size_t c = 0; c < t->n_columns; c++) {
		width[c] = strlen(t->headers[c]);
		for (size_t r = 0; r < t->n_rows; r++) {
			size_t w = strlen(t->cells[r * t->n_columns + c]);

			if (w > width[c])
				width[c] = w;
		}
	}
	for (size_t r = 0; r <= t->n_rows; r++) {
		for (size_t c = 0; c < t->n_columns; c++) {
			const char *cell =
				r == 0 ? t->headers[c] : t->cells[(r - 1) * t->n_columns + c];
			bool last = c + 1 == t->n_columns;

			if (t->right[c])
				printf("%*s", (int)width[c], cell);
			else if (last)
				printf("%s", cell);
			else
				printf("%-*s", (int)width[c], cell);
			if (!last)
				fputs("  ", stdout);
		}
		fputc('\n', stdout);
	}
	for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->n_rows = 0;
}

/* "key   value" lines, keys padded to one width. */
static void field(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void field(const char *key, const char *fmt, ...)
{
	char value[1024];
	char *clean;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	clean = printable(value);
	printf("%-22s%s\n", key, clean);
	free(clean);
}

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

/* ---- errors to exit codes ---- */

static int fail(struct vcounter_ctl *ctl, const char *what)
{
	int status = vcounter_ctl_status(ctl);

	error("%s: %s", what, vcounter_ctl_last_error(ctl));
	switch (status) {
	case VCOUNTER_CTL_STATUS_LOCAL:
		return VCTL_EXIT_TRANSPORT;
	case VCOUNTER_CTL_STATUS_NOT_FOUND:
		return VCTL_EXIT_NOT_FOUND;
	case VCOUNTER_CTL_STATUS_PERMISSION_DENIED:
	case VCOUNTER_CTL_STATUS_UNAUTHENTICATED:
		return VCTL_EXIT_PERMISSION;
	default:
		return VCTL_EXIT_DAEMON_ERROR;
	}
}

static int connect_or_fail(const struct args *a, struct vcounter_ctl **ret)
{
	if (vcounter_ctl_connect(&a->connect, ret) < 0) {
		error("%s", vcounter_ctl_last_error(NULL));
		return VCTL_EXIT_TRANSPORT;
	}
	return VCTL_EXIT_OK;
}

/* ---- commands ---- */

static int cmd_status(const struct args *a)
{
	struct vcounter_ctl *ctl;
	struct vcounter_ctl_host h;
	char b1[64], b2[64], b3[64];
	int r;

	r = connect_or_fail(a, &ctl);
	if (r)
		return r;
	if (vcounter_ctl_host_status(ctl, &h) < 0) {
		r = fail(ctl, "status");
		vcounter_ctl_close(ctl);
		return r;
	}
	vcounter_ctl_close(ctl);

	if (a->json) {
		struct json j = { stdout, false };

		json_open(&j, NULL, '{');
		json_str(&j, "version", h.version);
		json_str(&j, "host_name", h.host_name);
		json_open(&j, "backends", '[');
		for (size_t i = 0; i < h.n_backends; i++) {
			json_open(&j, NULL, '{');
			json_str(&j, "backend", h.backends[i].name);
			json_bool(&j, "allowed", h.backends[i].allowed);
			json_bool(&j, "kernel_support", h.backends[i].kernel_support);
			json_str(&j, "detail", h.backends[i].detail);
			json_u64(&j, "vm_count", h.backends[i].vm_count);
			json_close(&j, '}');
		}
		json_close(&j, ']');
		json_open(&j, "sync", '{');
		json_u64(&j, "maxerror_ns", h.maxerror_ns);
		json_u64(&j, "esterror_ns", h.esterror_ns);
		json_bool(&j, "unsynced", !h.clock_synced);
		json_i64(&j, "tai_offset_s", h.tai_offset_s);
		json_str(&j, "source", h.sync_source);
		json_str(&j, "problem", h.sync_problem);
		json_close(&j, '}');
		json_u64(&j, "error_bound_ns", h.error_bound_ns);
		json_u64(&j, "vm_count", h.vm_count);
		json_u64(&j, "migrations_running", h.migrations_running);
		json_u64(&j, "migrations_kept", h.migrations_kept);
		json_str(&j, "peer_listen_address", h.peer_listen_address);
		json_u64(&j, "uptime_ns", h.uptime_ns);
		json_u64(&j, "host_tsc_khz", h.host_tsc_khz);
		json_u64(&j, "watchers", h.watchers);
		json_close(&j, '}');
		json_end(&j);
		return VCTL_EXIT_OK;
	}

	field("host", "%s", h.host_name);
	field("version", "%s", h.version);
	field("uptime", "%s", format_ns(b1, sizeof(b1), h.uptime_ns));
	field("peer listen", "%s", h.peer_listen_address[0] ? h.peer_listen_address : "-");
	if (h.sync_problem[0])
		field("clock", "error unknown: %s", h.sync_problem);
	else if (h.clock_synced)
		field("clock", "synchronised, maxerror %s (%s), esterror %s, TAI offset %d s",
		      format_ns(b1, sizeof(b1), h.maxerror_ns), h.sync_source,
		      format_ns(b2, sizeof(b2), h.esterror_ns), h.tai_offset_s);
	else
		field("clock", "NOT synchronised (maxerror %s, %s)",
		      format_ns(b1, sizeof(b1), h.maxerror_ns), h.sync_source);
	field("error bound", "%s", format_bound(b3, sizeof(b3), h.error_bound_ns));
	if (h.host_tsc_khz)
		field("host TSC", "%" PRIu32 " kHz", h.host_tsc_khz);
	else
		field("host TSC", "-");
	field("VMs", "%" PRIu32, h.vm_count);
	field("migrations", "%" PRIu32 " running, %" PRIu32 " kept", h.migrations_running,
	      h.migrations_kept);
	field("watchers", "%" PRIu32, h.watchers);
	if (h.n_backends) {
		struct table t = { .n_columns = 5,
				   .headers = { "BACKEND", "ALLOWED", "KERNEL", "VMS", "DETAIL" } };

		t.right[3] = true;
		fputc('\n', stdout);
		for (size_t i = 0; i < h.n_backends; i++) {
			snprintf(b1, sizeof(b1), "%" PRIu32, h.backends[i].vm_count);
			table_add(&t, h.backends[i].name, yes_no(h.backends[i].allowed),
				  yes_no(h.backends[i].kernel_support), b1, h.backends[i].detail);
		}
		table_print(&t);
	}
	return VCTL_EXIT_OK;
}

static int cmd_vms(const struct args *a)
{
	struct vcounter_ctl *ctl;
	struct vcounter_ctl_vm *vms;
	size_t n;
	int r;

	r = connect_or_fail(a, &ctl);
	if (r)
		return r;
	if (vcounter_ctl_list_vms(ctl, &vms, &n) < 0) {
		r = fail(ctl, "vms");
		vcounter_ctl_close(ctl);
		return r;
	}
	vcounter_ctl_close(ctl);

	if (a->json) {
		struct json j = { stdout, false };

		json_open(&j, NULL, '{');
		json_open(&j, "vms", '[');
		for (size_t i = 0; i < n; i++)
			json_vm(&j, NULL, &vms[i]);
		json_close(&j, ']');
		json_close(&j, '}');
		json_end(&j);
	} else if (n == 0) {
		printf("No VMs registered.\n");
	} else {
		struct table t = { .n_columns = 10,
				   .headers = { "VM", "ROLE", "BACKEND", "ARCH", "VCPUS", "OFFSETS",
						"TSC KHZ", "PID", "UID", "DETAIL" } };
		char vcpus[16], khz[16], pid[16], uid[16];
		bool incomplete = false;

		t.right[4] = t.right[6] = t.right[7] = t.right[8] = true;
		for (size_t i = 0; i < n; i++) {
			const struct vcounter_ctl_vm *vm = &vms[i];

			snprintf(vcpus, sizeof(vcpus), "%" PRIu32 "%s", vm->vcpu_count,
				 vm->registration_complete ? "" : "+");
			incomplete |= !vm->registration_complete;
			snprintf(khz, sizeof(khz), "%" PRIu32, vm->guest_tsc_khz);
			snprintf(pid, sizeof(pid), "%" PRId32, vm->registered_by_pid);
			snprintf(uid, sizeof(uid), "%" PRIu32, vm->registered_by_uid);
			table_add(&t, vm->vm_id, vm->role, vm->backend, vm->arch, vcpus,
				  vm->offset_control ? "honoured" : "ignored",
				  vm->guest_tsc_khz ? khz : "", pid, uid, vm->probe_detail);
		}
		table_print(&t);
		printf("\n%zu VM%s.%s\n", n, n == 1 ? "" : "s",
		       incomplete ? " VCPUS n+: registration incomplete (more vCPUs to come)."
				  : "");
	}
	free(vms);
	return VCTL_EXIT_OK;
}

static void migrations_table(const struct vcounter_ctl_migration *ms, size_t n)
{
	struct table t = { .n_columns = 8,
			   .headers = { "MIGRATION", "VM", "ROLE", "STEP", "AGE", "GEN", "PEER",
					"DETAIL" } };
	char age[32], gen[32];

	t.right[4] = t.right[5] = true;
	for (size_t i = 0; i < n; i++) {
		const struct vcounter_ctl_migration *m = &ms[i];

		format_ns(age, sizeof(age), m->age_ns);
		snprintf(gen, sizeof(gen), "%" PRIu64, m->generation);
		table_add(&t, m->migration_id, m->vm_id, m->role, m->step, age, gen,
			  m->peer_identity, m->failure_reason);
	}
	table_print(&t);
}

static int cmd_migrations(const struct args *a)
{
	struct vcounter_ctl *ctl;
	struct vcounter_ctl_migration *ms;
	size_t n;
	int r;

	r = connect_or_fail(a, &ctl);
	if (r)
		return r;
	if (vcounter_ctl_list_migrations(ctl, a->vm_id, a->running, &ms, &n) < 0) {
		r = fail(ctl, "migrations");
		vcounter_ctl_close(ctl);
		return r;
	}
	vcounter_ctl_close(ctl);

	if (a->json) {
		struct json j = { stdout, false };

		json_open(&j, NULL, '{');
		json_open(&j, "migrations", '[');
		for (size_t i = 0; i < n; i++)
			json_migration(&j, NULL, &ms[i]);
		json_close(&j, ']');
		json_close(&j, '}');
		json_end(&j);
	} else if (n == 0) {
		printf("No %smigrations%s%s.\n", a->running ? "running " : "",
		       a->vm_id ? " of VM " : "", a->vm_id ? a->vm_id : "");
	} else {
		migrations_table(ms, n);
		printf("\n%zu migration%s.\n", n, n == 1 ? "" : "s");
	}
	vcounter_ctl_migrations_free(ms, n);
	return VCTL_EXIT_OK;
}

static void print_migration(const struct vcounter_ctl_migration *m)
{
	char b1[64], b2[64], b3[64];

	field("migration", "%s", m->migration_id);
	field("vm", "%s", m->vm_id);
	field("role", "%s", m->role);
	field("step", "%s%s", m->step, m->terminal ? " (final)" : "");
	if (m->peer_address[0])
		field("peer", "%s at %s", m->peer_identity[0] ? m->peer_identity : "-",
		      m->peer_address);
	else
		field("peer", "%s", m->peer_identity[0] ? m->peer_identity : "-");
	field("started by", "%s", m->started_by_controller ? "a controller" : "the VMM");
	if (m->recovered)
		field("recovered", "%s",
		      m->awaiting_source
			      ? "from the session journal; apply waits for the source's replay"
			      : "from the session journal after a restart");
	field("age", "%s (this step for %s)", format_ns(b1, sizeof(b1), m->age_ns),
	      format_ns(b2, sizeof(b2), m->step_age_ns));
	field("generation", "%" PRIu64, m->generation);
	field("planned delta", "%+" PRId64 " cycles", m->planned_delta_cycles);
	field("planned error bound", "%s", format_bound(b1, sizeof(b1), m->planned_error_bound_ns));
	field("failure", "%s", m->failure_reason[0] ? m->failure_reason : "-");
	if (m->has_report) {
		const struct vcounter_report *r = &m->report;
		struct table t = { .n_columns = 4,
				   .headers = { "VCPU", "OFFSET BEFORE", "OFFSET AFTER",
						"CHANGE" } };
		char v[16], before[32], after[32], change[32];

		printf("\napplied on the target:\n");
		field("  backend", "%s", r->backend);
		field("  elapsed accounted", "%s (%+" PRId64 " cycles added to every offset)",
		      format_signed_ns(b1, sizeof(b1), r->elapsed_ns), r->delta_cycles);
		if (r->clamped_ns)
			field("  counter held",
			      "the target's clock read %s behind the source's "
			      "anchor: the guest's counter was held, not moved back (in the bound)",
			      format_ns(b1, sizeof(b1), r->clamped_ns));
		field("  time scale", "%s", r->timescale);
		field("  error bound", "%s%s", format_bound(b2, sizeof(b2), r->error_bound_ns),
		      r->error_bound_exceeded ? " (over the configured limit)" : "");
		field("  clock errors", "source host %s (%s), target host %s (%s)",
		      format_bound(b1, sizeof(b1), r->source_maxerror_ns), r->source_sync,
		      format_bound(b3, sizeof(b3), r->target_maxerror_ns), r->target_sync);
		field("  kvmclock",
		      "%s (%s off the guest's TSC; flags %#x at the source, %#x "
		      "before the apply, %#x after)",
		      r->kvmclock_check, format_signed_ns(b1, sizeof(b1), r->kvmclock_error_ns),
		      r->kvmclock_flags_source, r->kvmclock_flags_before, r->kvmclock_flags_after);
		field("  apply latency", "%s", format_ns(b1, sizeof(b1), r->apply_latency_ns));
		field("  guest TSC", "%" PRIu32 " kHz", r->guest_tsc_khz);
		putchar('\n');
		t.right[0] = t.right[1] = t.right[2] = t.right[3] = true;
		for (uint32_t i = 0; i < r->n_vcpus; i++) {
			/* Offsets are two's complement (KVM_VCPU_TSC_OFFSET is a
			 * u64 holding a signed offset): shown signed, as the
			 * daemon logs them. */
			snprintf(v, sizeof(v), "%" PRIu32, i);
			snprintf(before, sizeof(before), "%" PRId64, (int64_t)r->offsets_before[i]);
			snprintf(after, sizeof(after), "%" PRId64, (int64_t)r->offsets_after[i]);
			snprintf(change, sizeof(change), "%+" PRId64,
				 (int64_t)(r->offsets_after[i] - r->offsets_before[i]));
			table_add(&t, v, before, after, change);
		}
		table_print(&t);
	}
}

static void output_migration(const struct args *a, const struct vcounter_ctl_migration *m)
{
	if (a->json) {
		struct json j = { stdout, false };

		json_migration(&j, NULL, m);
		json_end(&j);
	} else {
		print_migration(m);
	}
}

static int cmd_migration(const struct args *a)
{
	struct vcounter_ctl *ctl;
	struct vcounter_ctl_migration m;
	int r;

	r = connect_or_fail(a, &ctl);
	if (r)
		return r;
	if (vcounter_ctl_get_migration(ctl, a->positional[0], &m) < 0) {
		char what[128];

		snprintf(what, sizeof(what), "migration %s", a->positional[0]);
		r = fail(ctl, what);
		vcounter_ctl_close(ctl);
		return r;
	}
	vcounter_ctl_close(ctl);
	output_migration(a, &m);
	vcounter_ctl_migration_clear(&m);
	return VCTL_EXIT_OK;
}

static int cmd_abort(const struct args *a)
{
	struct vcounter_ctl *ctl;
	struct vcounter_ctl_migration m;
	int r;

	r = connect_or_fail(a, &ctl);
	if (r)
		return r;
	if (vcounter_ctl_abort_migration(ctl, a->positional[0], a->reason, &m) < 0) {
		char what[128];

		snprintf(what, sizeof(what), "abort %s", a->positional[0]);
		r = fail(ctl, what);
		vcounter_ctl_close(ctl);
		return r;
	}
	vcounter_ctl_close(ctl);
	output_migration(a, &m);
	vcounter_ctl_migration_clear(&m);
	return VCTL_EXIT_OK;
}

static const char *event_kind_name(enum vcounter_ctl_event_kind kind)
{
	switch (kind) {
	case VCOUNTER_CTL_EVENT_VM_REGISTERED:
		return "vm-registered";
	case VCOUNTER_CTL_EVENT_VM_UNREGISTERED:
		return "vm-unregistered";
	case VCOUNTER_CTL_EVENT_MIGRATION_STEP:
		return "migration-step";
	case VCOUNTER_CTL_EVENT_MIGRATION_OUTCOME:
		return "migration-outcome";
	}
	return "unknown";
}

static bool is_migration_event(const struct vcounter_ctl_event *ev)
{
	return ev->kind == VCOUNTER_CTL_EVENT_MIGRATION_STEP ||
	       ev->kind == VCOUNTER_CTL_EVENT_MIGRATION_OUTCOME;
}

/* One line per event: what journalctl shows for a log line. */
static void print_event(const struct args *a, const struct vcounter_ctl_event *ev)
{
	char when[64], b1[64], b2[64], line[1024];
	char *clean;

	if (a->json) {
		struct json j = { stdout, false };

		json_open(&j, NULL, '{');
		json_u64(&j, "seq", ev->seq);
		json_u64(&j, "realtime_ns", ev->realtime_ns);
		json_str(&j, "kind", event_kind_name(ev->kind));
		if (is_migration_event(ev)) {
			json_null(&j, "vm");
			json_migration(&j, "migration", &ev->migration);
		} else {
			json_vm(&j, "vm", &ev->vm);
			json_null(&j, "migration");
		}
		json_close(&j, '}');
		json_end(&j);
		return;
	}
	if (is_migration_event(ev)) {
		const struct vcounter_ctl_migration *m = &ev->migration;
		int n = snprintf(line, sizeof(line), "vm=%s migration=%s role=%s step=%s", m->vm_id,
				 m->migration_id, m->role, m->step);

		if (m->has_report && n > 0 && (size_t)n < sizeof(line))
			n += snprintf(line + n, sizeof(line) - (size_t)n,
				      " elapsed=%s error-bound=%s",
				      format_signed_ns(b1, sizeof(b1), m->report.elapsed_ns),
				      format_bound(b2, sizeof(b2), m->report.error_bound_ns));
		if (m->has_report && m->report.clamped_ns && n > 0 && (size_t)n < sizeof(line))
			n += snprintf(line + n, sizeof(line) - (size_t)n, " held=%s",
				      format_ns(b1, sizeof(b1), m->report.clamped_ns));
		if (m->has_report && strcmp(m->report.kvmclock_check, "ok") != 0 &&
		    strcmp(m->report.kvmclock_check, "unchecked") != 0 && n > 0 &&
		    (size_t)n < sizeof(line))
			n += snprintf(line + n, sizeof(line) - (size_t)n, " kvmclock=%s",
				      m->report.kvmclock_check);
		if (m->failure_reason[0] && n > 0 && (size_t)n < sizeof(line))
			snprintf(line + n, sizeof(line) - (size_t)n, " reason=\"%s\"",
				 m->failure_reason);
	} else {
		snprintf(line, sizeof(line), "vm=%s role=%s backend=%s vcpus=%" PRIu32,
			 ev->vm.vm_id, ev->vm.role, ev->vm.backend, ev->vm.vcpu_count);
	}
	clean = printable(line);
	printf("%s  #%-5" PRIu64 " %-17s  %s\n", format_time(when, sizeof(when), ev->realtime_ns),
	       ev->seq, event_kind_name(ev->kind), clean);
	free(clean);
	fflush(stdout);
}

struct watch_state {
	const struct args *a;
	unsigned long seen;
};

#define WATCH_COUNT_REACHED 1

static int watch_event(const struct vcounter_ctl_event *ev, void *userdata)
{
	struct watch_state *w = userdata;

	if (!ev)
		return 0; /* accepted: nothing to show */
	print_event(w->a, ev);
	w->seen++;
	return w->a->count && w->seen >= w->a->count ? WATCH_COUNT_REACHED : 0;
}

static int cmd_watch(const struct args *a)
{
	struct watch_state w = { .a = a };
	struct vcounter_ctl *ctl;
	int r;

	r = connect_or_fail(a, &ctl);
	if (r)
		return r;
	vcounter_ctl_set_timeout(ctl, a->timeout_given ? a->connect.timeout_ms : 0);
	r = vcounter_ctl_watch(ctl, a->vm_id, a->migration_id, watch_event, &w);
	if (r == WATCH_COUNT_REACHED) {
		r = VCTL_EXIT_OK;
	} else if (r == -ETIME &&
		   vcounter_ctl_status(ctl) == VCOUNTER_CTL_STATUS_DEADLINE_EXCEEDED) {
		/* --timeout without --count: watch for that long. */
		if (a->count) {
			error("watch: %lu of %lu events before the deadline (%u ms)", w.seen,
			      a->count, a->connect.timeout_ms);
			r = VCTL_EXIT_DAEMON_ERROR;
		} else {
			r = VCTL_EXIT_OK;
		}
	} else {
		r = fail(ctl, "watch");
	}
	vcounter_ctl_close(ctl);
	return r;
}

/* migrate --wait: watch the VM first, start the migration (on a second
 * connection) once the watch is accepted, so that no step can pass
 * unseen; then follow that migration to its outcome. */
struct migrate_state {
	const struct args *a;
	bool started;
	int start_exit; /* exit code when starting failed */
	struct vcounter_ctl_migration outcome;
	bool has_outcome;
	char migration_id[VCOUNTER_MIGRATION_ID_SIZE];
};

#define MIGRATE_STOP 1

static int copy_report(const struct vcounter_report *from, struct vcounter_report *to)
{
	size_t bytes = from->n_vcpus * sizeof(uint64_t);

	*to = *from;
	to->offsets_before = malloc(bytes ? bytes : 1);
	to->offsets_after = malloc(bytes ? bytes : 1);
	if (!to->offsets_before || !to->offsets_after) {
		free(to->offsets_before);
		free(to->offsets_after);
		to->offsets_before = to->offsets_after = NULL;
		return -ENOMEM;
	}
	memcpy(to->offsets_before, from->offsets_before, bytes);
	memcpy(to->offsets_after, from->offsets_after, bytes);
	return 0;
}

static int migrate_event(const struct vcounter_ctl_event *ev, void *userdata)
{
	struct migrate_state *s = userdata;

	if (!ev) {
		struct vcounter_ctl *ctl;
		struct vcounter_ctl_migration m;
		int r;

		if (s->started)
			return 0;
		s->start_exit = connect_or_fail(s->a, &ctl);
		if (s->start_exit)
			return MIGRATE_STOP;
		r = vcounter_ctl_start_migration(ctl, s->a->positional[0], s->a->to,
						 s->a->peer_name, &m);
		if (r < 0) {
			s->start_exit = fail(ctl, "migrate");
			vcounter_ctl_close(ctl);
			return MIGRATE_STOP;
		}
		vcounter_ctl_close(ctl);
		s->started = true;
		snprintf(s->migration_id, sizeof(s->migration_id), "%s", m.migration_id);
		if (!s->a->json)
			printf("migration %s of VM %s to %s (%s) started\n", m.migration_id,
			       m.vm_id, s->a->peer_name, s->a->to);
		fflush(stdout);
		vcounter_ctl_migration_clear(&m);
		return 0;
	}
	if (!is_migration_event(ev) || strcmp(ev->migration.migration_id, s->migration_id) != 0)
		return 0;
	if (!s->a->json)
		print_event(s->a, ev);
	if (ev->kind != VCOUNTER_CTL_EVENT_MIGRATION_OUTCOME && !ev->migration.terminal)
		return 0;
	/* Keep the outcome: the event is the library's during this call only. */
	s->outcome = ev->migration;
	if (ev->migration.has_report && copy_report(&ev->migration.report, &s->outcome.report) < 0)
		s->outcome.has_report = false; /* out of memory: the outcome without it */
	s->has_outcome = true;
	return MIGRATE_STOP;
}

static int cmd_migrate(const struct args *a)
{
	struct migrate_state s = { .a = a };
	struct vcounter_ctl *ctl;
	struct vcounter_ctl_migration m;
	int r;

	r = connect_or_fail(a, &ctl);
	if (r)
		return r;
	if (!a->wait) {
		if (vcounter_ctl_start_migration(ctl, a->positional[0], a->to, a->peer_name, &m) <
		    0) {
			r = fail(ctl, "migrate");
			vcounter_ctl_close(ctl);
			return r;
		}
		vcounter_ctl_close(ctl);
		output_migration(a, &m);
		vcounter_ctl_migration_clear(&m);
		return VCTL_EXIT_OK;
	}

	vcounter_ctl_set_timeout(ctl, a->timeout_given ? a->connect.timeout_ms : 0);
	r = vcounter_ctl_watch(ctl, a->positional[0], NULL, migrate_event, &s);
	if (r == MIGRATE_STOP && !s.has_outcome) {
		r = s.start_exit;
	} else if (r == MIGRATE_STOP) {
		bool done = strcmp(s.outcome.step, "done") == 0;

		if (a->json) {
			output_migration(a, &s.outcome);
		} else {
			printf("\n");
			print_migration(&s.outcome);
		}
		if (!done)
			error("migration %s %s%s%s", s.outcome.migration_id, s.outcome.step,
			      s.outcome.failure_reason[0] ? ": " : "", s.outcome.failure_reason);
		r = done ? VCTL_EXIT_OK : VCTL_EXIT_DAEMON_ERROR;
		vcounter_ctl_migration_clear(&s.outcome);
	} else {
		r = fail(ctl, s.started ? "migrate: watching the migration" : "migrate: watch");
	}
	vcounter_ctl_close(ctl);
	return r;
}

/* ---- command line ---- */

static const struct command commands[] = {
	{ "status", "the daemon's host: clock, error bound, backends, counts", "", 0, 0, 0,
	  "The daemon's host: version, clock synchronisation and the error bound it\n"
	  "contributes now, backends this host's KVM offers, counts of VMs, migrations and\n"
	  "watchers.\n",
	  cmd_status },
	{ "vms", "registered VMs", "", 0, 0, 0,
	  "Registered VMs: role, counter backend, whether KVM honours offset writes, vCPUs,\n"
	  "guest TSC rate, the VMM process that registered it.\n",
	  cmd_vms },
	{ "migrations", "migrations running and kept", "[--vm ID] [--running]", 0, 0,
	  OPT_VM | OPT_RUNNING,
	  "Migrations the daemon knows: running ones and the last kept outcomes.\n"
	  "  --vm ID       only this VM's\n"
	  "  --running     only those not yet done, aborted or failed\n",
	  cmd_migrations },
	{ "migration", "one migration in full, with what the target applied", "ID", 1, 1, 0,
	  "One migration in full: step, peer, plan, and from APPLIED on what the target\n"
	  "applied (offsets before and after for every vCPU, elapsed time accounted, error\n"
	  "bound, apply latency).\n",
	  cmd_migration },
	{ "migrate", "start migrating a VM to another daemon (and follow it)",
	  "VM --to HOST:PORT --peer-name NAME [--wait]", 1, 1, OPT_TO | OPT_PEER_NAME | OPT_WAIT,
	  "Start migrating VM (registered here as a source) to the daemon at HOST:PORT whose\n"
	  "certificate carries NAME. The VMMs do their parts (pause, apply) as they would\n"
	  "for a migration they started.\n"
	  "  --to HOST:PORT     the target daemon's peer-link address\n"
	  "  --peer-name NAME   the identity its certificate must carry\n"
	  "  --wait             follow it to its outcome: exit 0 when done, 1 when aborted\n"
	  "                     or failed (--timeout bounds the wait; default: none)\n",
	  cmd_migrate },
	{ "abort", "abort a running migration", "ID [--reason TEXT]", 1, 1, OPT_REASON,
	  "Abort a running migration; both daemons and both VMMs stop it.\n"
	  "  --reason TEXT   recorded as the migration's failure reason\n",
	  cmd_abort },
	{ "watch", "stream events: VMs, migration steps and outcomes",
	  "[--vm ID] [--migration ID] [--count N]", 0, 0, OPT_VM | OPT_MIGRATION | OPT_COUNT,
	  "Stream events as they happen: VMs registering and leaving, each migration step and\n"
	  "outcome. --json prints one JSON object per line.\n"
	  "  --vm ID          only this VM's events\n"
	  "  --migration ID   only this migration's events\n"
	  "  --count N        stop after N events (exit 1 if --timeout passes first)\n"
	  "With --timeout and no --count: watch for that long, then exit 0.\n",
	  cmd_watch },
};

static const char global_help[] =
	"Global options:\n"
	"  --socket PATH        the daemon's control socket "
	"(default " VCOUNTER_DEFAULT_CONTROL_SOCKET ")\n"
	"  --address HOST:PORT  a remote daemon's control API, over TLS 1.3 with a client\n"
	"                       certificate (needs --ca, --cert, --key)\n"
	"  --ca FILE            fleet CA that signed the daemon's certificate\n"
	"  --cert FILE          this controller's certificate\n"
	"  --key FILE           its private key\n"
	"  --server-name NAME   identity the daemon's certificate must carry (default: the\n"
	"                       host of --address)\n"
	"  --timeout MS         deadline of each call (default 30000; watch and migrate\n"
	"                       --wait: none)\n"
	"  --json               JSON output (watch: one event per line)\n"
	"  --help, --version\n"
	"\n"
	"Exit status:\n"
	"  0  success\n"
	"  1  the daemon answered an error (migrate --wait: the migration was aborted or\n"
	"     failed; watch --count: the deadline passed first)\n"
	"  2  usage error\n"
	"  3  cannot connect, TLS or transport failure\n"
	"  4  not found (unknown VM or migration)\n"
	"  5  permission denied (this caller's role may not)\n";

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [OPTIONS] COMMAND [ARGS]\n\nDrive and watch a vcounterd.\n\n"
		"Commands:\n",
		program);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n%s\n'%s COMMAND --help' describes a command.\n", global_help, program);
}

static void command_help(const struct command *c)
{
	printf("Usage: %s [OPTIONS] %s %s\n\n%s\n%s", program, c->name, c->synopsis, c->help,
	       global_help);
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static bool parse_unsigned(const char *s, unsigned long max, unsigned long *ret)
{
	char *end;
	unsigned long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*ret = v;
	return true;
}

enum {
	ARG_SOCKET = 0x100,
	ARG_ADDRESS,
	ARG_CA,
	ARG_CERT,
	ARG_KEY,
	ARG_SERVER_NAME,
	ARG_TIMEOUT,
	ARG_JSON,
	ARG_HELP,
	ARG_VERSION,
	ARG_VM,
	ARG_RUNNING,
	ARG_TO,
	ARG_PEER_NAME,
	ARG_WAIT,
	ARG_REASON,
	ARG_MIGRATION,
	ARG_COUNT,
};

/* Every option is accepted anywhere (before or after the command); those a
 * command does not take are refused after parsing. */
static const struct option long_options[] = {
	{ "socket", required_argument, NULL, ARG_SOCKET },
	{ "address", required_argument, NULL, ARG_ADDRESS },
	{ "ca", required_argument, NULL, ARG_CA },
	{ "cert", required_argument, NULL, ARG_CERT },
	{ "key", required_argument, NULL, ARG_KEY },
	{ "server-name", required_argument, NULL, ARG_SERVER_NAME },
	{ "timeout", required_argument, NULL, ARG_TIMEOUT },
	{ "json", no_argument, NULL, ARG_JSON },
	{ "help", no_argument, NULL, ARG_HELP },
	{ "version", no_argument, NULL, ARG_VERSION },
	{ "vm", required_argument, NULL, ARG_VM },
	{ "running", no_argument, NULL, ARG_RUNNING },
	{ "to", required_argument, NULL, ARG_TO },
	{ "peer-name", required_argument, NULL, ARG_PEER_NAME },
	{ "wait", no_argument, NULL, ARG_WAIT },
	{ "reason", required_argument, NULL, ARG_REASON },
	{ "migration", required_argument, NULL, ARG_MIGRATION },
	{ "count", required_argument, NULL, ARG_COUNT },
	{ NULL, 0, NULL, 0 }
};

static const char *option_name(unsigned bit)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{ OPT_VM, "--vm" },
		{ OPT_RUNNING, "--running" },
		{ OPT_TO, "--to" },
		{ OPT_PEER_NAME, "--peer-name" },
		{ OPT_WAIT, "--wait" },
		{ OPT_REASON, "--reason" },
		{ OPT_MIGRATION, "--migration" },
		{ OPT_COUNT, "--count" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].bit == bit)
			return names[i].name;
	return "?";
}

int main(int argc, char **argv)
{
	struct args a = { .connect.timeout_ms = VCTL_DEFAULT_TIMEOUT_MS };
	const struct command *cmd = NULL;
	bool help = false;
	unsigned long v;
	int opt;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
		switch (opt) {
		case ARG_SOCKET:
			a.connect.socket_path = optarg;
			break;
		case ARG_ADDRESS:
			a.connect.address = optarg;
			break;
		case ARG_CA:
			a.connect.ca_file = optarg;
			break;
		case ARG_CERT:
			a.connect.cert_file = optarg;
			break;
		case ARG_KEY:
			a.connect.key_file = optarg;
			break;
		case ARG_SERVER_NAME:
			a.connect.server_name = optarg;
			break;
		case ARG_TIMEOUT:
			if (!parse_unsigned(optarg, UINT_MAX, &v) || v == 0) {
				error("--timeout: \"%s\" is not a number of milliseconds >= 1",
				      optarg);
				return VCTL_EXIT_USAGE;
			}
			a.connect.timeout_ms = (unsigned)v;
			a.timeout_given = true;
			break;
		case ARG_JSON:
			a.json = true;
			break;
		case 'h':
		case ARG_HELP:
			help = true;
			break;
		case ARG_VERSION:
			printf("vcounterctl %s\n", VCOUNTERCTL_VERSION);
			return VCTL_EXIT_OK;
		case ARG_VM:
			a.vm_id = optarg;
			a.used |= OPT_VM;
			break;
		case ARG_RUNNING:
			a.running = true;
			a.used |= OPT_RUNNING;
			break;
		case ARG_TO:
			a.to = optarg;
			a.used |= OPT_TO;
			break;
		case ARG_PEER_NAME:
			a.peer_name = optarg;
			a.used |= OPT_PEER_NAME;
			break;
		case ARG_WAIT:
			a.wait = true;
			a.used |= OPT_WAIT;
			break;
		case ARG_REASON:
			a.reason = optarg;
			a.used |= OPT_REASON;
			break;
		case ARG_MIGRATION:
			a.migration_id = optarg;
			a.used |= OPT_MIGRATION;
			break;
		case ARG_COUNT:
			if (!parse_unsigned(optarg, ULONG_MAX, &a.count) || a.count == 0) {
				error("--count: \"%s\" is not a number >= 1", optarg);
				return VCTL_EXIT_USAGE;
			}
			a.used |= OPT_COUNT;
			break;
		case ':':
			error("%s needs a value", argv[optind - 1]);
			return VCTL_EXIT_USAGE;
		default:
			error("unknown option %s (see --help)", argv[optind - 1]);
			return VCTL_EXIT_USAGE;
		}
	}
	for (int i = optind; i < argc; i++) {
		if (!cmd && strcmp(argv[i], "help") == 0) { /* "help migrate" */
			help = true;
			continue;
		}
		if (!cmd) {
			cmd = find_command(argv[i]);
			if (!cmd) {
				error("unknown command \"%s\" (see --help)", argv[i]);
				return VCTL_EXIT_USAGE;
			}
			continue;
		}
		if (a.n_positional == sizeof(a.positional) / sizeof(a.positional[0])) {
			error("%s: too many arguments", cmd->name);
			return VCTL_EXIT_USAGE;
		}
		a.positional[a.n_positional++] = argv[i];
	}
	if (help) {
		if (cmd)
			command_help(cmd);
		else
			usage(stdout);
		return VCTL_EXIT_OK;
	}
	if (!cmd) {
		error("no command (see --help)");
		return VCTL_EXIT_USAGE;
	}
	if (a.n_positional < cmd->min_args || a.n_positional > cmd->max_args) {
		error("%s: expects %s%s (see %s %s --help)", cmd->name,
		      cmd->min_args ? "" : "no arguments", cmd->min_args ? cmd->synopsis : "",
		      program, cmd->name);
		return VCTL_EXIT_USAGE;
	}
	for (unsigned bit = 1; bit <= OPT_COUNT; bit <<= 1) {
		if ((a.used & bit) && !(cmd->options & bit)) {
			error("%s does not take %s (see %s %s --help)", cmd->name, option_name(bit),
			      program, cmd->name);
			return VCTL_EXIT_USAGE;
		}
	}
	if (cmd->run == cmd_migrate && (!a.to || !a.peer_name)) {
		error("migrate needs --to HOST:PORT and --peer-name NAME");
		return VCTL_EXIT_USAGE;
	}
	if (a.connect.socket_path && a.connect.address) {
		error("--socket and --address exclude each other");
		return VCTL_EXIT_USAGE;
	}
	if (!a.connect.address && (a.connect.ca_file || a.connect.cert_file || a.connect.key_file ||
				   a.connect.server_name)) {
		error("--ca, --cert, --key and --server-name are for --address (TLS)");
		return VCTL_EXIT_USAGE;
	}
	if (a.connect.address &&
	    (!a.connect.ca_file || !a.connect.cert_file || !a.connect.key_file)) {
		error("--address needs --ca, --cert and --key");
		return VCTL_EXIT_USAGE;
	}
	return cmd->run(&a);
}
