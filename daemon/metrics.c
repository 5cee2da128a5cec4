/* metrics.c - counting and the Prometheus text exposition, format 0.0.4
 * (prometheus.io/docs/instrumenting/exposition_formats/#text-based-format).
 * Values are rendered from integer nanoseconds as exact decimals, so the
 * unit test can compare the text byte for byte. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "metrics.h"

struct metrics vcd_metrics;

static const char *const listener_table[_METRICS_LISTENER_MAX] = {
	[METRICS_LISTENER_PEER] = "peer",
	[METRICS_LISTENER_CONTROL] = "control",
};

static const char *const socket_table[_METRICS_SOCKET_MAX] = {
	[METRICS_SOCKET_VMM] = "vmm",
	[METRICS_SOCKET_PEER] = "peer",
	[METRICS_SOCKET_CONTROL_UNIX] = "control-unix",
	[METRICS_SOCKET_CONTROL_TCP] = "control-tcp",
	[METRICS_SOCKET_METRICS] = "metrics",
};

static const char *const refusal_table[_METRICS_REFUSAL_MAX] = {
	[METRICS_REFUSAL_MALFORMED] = "malformed",   [METRICS_REFUSAL_TOO_LARGE] = "too-large",
	[METRICS_REFUSAL_INVALID] = "invalid",	     [METRICS_REFUSAL_NOT_ALLOWED] = "not-allowed",
	[METRICS_REFUSAL_LIMIT] = "limit",	     [METRICS_REFUSAL_EXISTS] = "exists",
	[METRICS_REFUSAL_UNKNOWN_VM] = "unknown-vm", [METRICS_REFUSAL_OUT_OF_FDS] = "out-of-fds",
	[METRICS_REFUSAL_OTHER] = "other",
};

static const char *const shed_table[_METRICS_SHED_MAX] = {
	[METRICS_SHED_PER_SOURCE] = "per-source",
	[METRICS_SHED_EVICTED] = "evicted",
	[METRICS_SHED_DEADLINE] = "deadline",
	[METRICS_SHED_FULL] = "full",
};

static const char *const outcome_table[_METRICS_OUTCOME_MAX] = {
	[METRICS_OUTCOME_DONE] = "done",
	[METRICS_OUTCOME_ABORTED] = "aborted",
	[METRICS_OUTCOME_FAILED] = "failed",
};

static const uint64_t apply_latency_le_ns[METRICS_APPLY_LATENCY_BUCKETS] = {
	10 * NSEC_PER_USEC,   25 * NSEC_PER_USEC,  50 * NSEC_PER_USEC,	100 * NSEC_PER_USEC,
	250 * NSEC_PER_USEC,  500 * NSEC_PER_USEC, 1 * NSEC_PER_MSEC,	2500 * NSEC_PER_USEC,
	5 * NSEC_PER_MSEC,    10 * NSEC_PER_MSEC,  25 * NSEC_PER_MSEC,	50 * NSEC_PER_MSEC,
	100 * NSEC_PER_MSEC,  250 * NSEC_PER_MSEC, 500 * NSEC_PER_MSEC, 1 * NSEC_PER_SEC,
	2500 * NSEC_PER_MSEC, 5 * NSEC_PER_SEC,	   10 * NSEC_PER_SEC,
};

const char *metrics_listener_to_string(enum metrics_listener listener)
{
	if (listener < 0 || listener >= _METRICS_LISTENER_MAX)
		return NULL;
	return listener_table[listener];
}

const char *metrics_socket_to_string(enum metrics_socket socket)
{
	if (socket < 0 || socket >= _METRICS_SOCKET_MAX)
		return NULL;
	return socket_table[socket];
}

const char *metrics_refusal_to_string(enum metrics_refusal refusal)
{
	if (refusal < 0 || refusal >= _METRICS_REFUSAL_MAX)
		return NULL;
	return refusal_table[refusal];
}

const char *metrics_shed_to_string(enum metrics_shed shed)
{
	if (shed < 0 || shed >= _METRICS_SHED_MAX)
		return NULL;
	return shed_table[shed];
}

void metrics_shed(struct metrics *m, enum metrics_socket socket, enum metrics_shed shed)
{
	if (socket >= 0 && socket < _METRICS_SOCKET_MAX && shed >= 0 && shed < _METRICS_SHED_MAX)
		m->connections_shed[socket][shed]++;
}

enum metrics_refusal metrics_refusal_from_errno(int error)
{
	switch (error < 0 ? -error : error) {
	case EBADMSG:
	case ENOMSG:
		return METRICS_REFUSAL_MALFORMED;
	case EMSGSIZE:
	case E2BIG:
		return METRICS_REFUSAL_TOO_LARGE;
	case EINVAL:
		return METRICS_REFUSAL_INVALID;
	case EPERM:
	case EACCES:
		return METRICS_REFUSAL_NOT_ALLOWED;
	case ENOSPC:
	case EBUSY:
		return METRICS_REFUSAL_LIMIT;
	case EEXIST:
		return METRICS_REFUSAL_EXISTS;
	case ENOENT:
		return METRICS_REFUSAL_UNKNOWN_VM;
	case EMFILE:
	case ENFILE:
		return METRICS_REFUSAL_OUT_OF_FDS;
	default:
		return METRICS_REFUSAL_OTHER;
	}
}

const char *metrics_outcome_to_string(enum metrics_outcome outcome)
{
	if (outcome < 0 || outcome >= _METRICS_OUTCOME_MAX)
		return NULL;
	return outcome_table[outcome];
}

/* ---- counting ---- */

static void observe_apply_latency(struct metrics *m, uint64_t latency_ns)
{
	size_t i = 0;

	while (i < METRICS_APPLY_LATENCY_BUCKETS && latency_ns > apply_latency_le_ns[i])
		i++;
	m->apply_latency_buckets[i]++;
	m->apply_latency_count++;
	/* 2^64 ns is 584 years of latency: saturate rather than wrap. */
	m->apply_latency_sum_ns = latency_ns > UINT64_MAX - m->apply_latency_sum_ns
					  ? UINT64_MAX
					  : m->apply_latency_sum_ns + latency_ns;
}

void metrics_migration_changed(struct metrics *m, const struct session *s, bool *counted)
{
	enum metrics_outcome outcome;

	if (*counted || (s->role != VM_ROLE_SOURCE && s->role != VM_ROLE_TARGET))
		return;
	switch (s->step) {
	case STEP_APPLIED:
		if (s->role != VM_ROLE_TARGET)
			return;
		outcome = METRICS_OUTCOME_DONE;
		break;
	case STEP_DONE:
		outcome = METRICS_OUTCOME_DONE;
		break;
	case STEP_ABORTED:
		outcome = METRICS_OUTCOME_ABORTED;
		break;
	case STEP_FAILED:
		outcome = METRICS_OUTCOME_FAILED;
		break;
	default:
		return;
	}
	*counted = true;
	m->migrations[s->role][outcome]++;
	if (outcome != METRICS_OUTCOME_DONE || !s->has_report)
		return;
	if (s->role == VM_ROLE_TARGET)
		observe_apply_latency(m, s->report.apply_latency_ns);
	m->has_last = true;
	m->last_error_bound_ns = s->report.error_bound_ns;
	m->last_elapsed_ns = s->report.elapsed_ns;
	m->last_clamped_ns = s->report.clamped_ns;
	if (s->report.clamped_ns)
		m->counter_held++;
	/* The target checked kvmclock; the source only holds its report. */
	if (s->role == VM_ROLE_TARGET && s->report.kvmclock_verdict >= 0 &&
	    s->report.kvmclock_verdict < _KVMCLOCK_VERDICT_MAX) {
		m->kvmclock_checks[s->report.kvmclock_verdict]++;
		if (s->report.kvmclock_verdict != KVMCLOCK_UNCHECKED) {
			m->has_last_kvmclock = true;
			m->last_kvmclock_error_ns = s->report.kvmclock_error_ns;
		}
	}
}

void metrics_on_migration(void *metrics, const struct migration_event *ev)
{
	metrics_migration_changed(metrics, ev->view.s, ev->outcome_counted);
}

void metrics_tls_handshake_failed(struct metrics *m, enum metrics_listener listener)
{
	if (listener >= 0 && listener < _METRICS_LISTENER_MAX)
		m->tls_handshake_failures[listener]++;
}

void metrics_peer_link_closed(struct metrics *m, int error)
{
	if (error < 0)
		m->peer_link_failures++;
}

void metrics_journal_write_failed(struct metrics *m)
{
	m->journal_write_failures++;
}

/* ---- rendering ---- */

struct text {
	char *buf;
	size_t size;
	size_t len;
	bool full;
};

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, t->size - t->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= t->size - t->len) {
		t->full = true;
		return;
	}
	t->len += (size_t)n;
}

static void text_putc(struct text *t, char c)
{
	text_printf(t, "%c", c);
}

/* A label value: backslash, double quote and line feed are escaped; nothing
 * else is (the format takes any UTF-8). */
static void text_label_value(struct text *t, const char *value)
{
	text_putc(t, '"');
	for (const char *p = value; *p; p++) {
		if (*p == '\\')
			text_printf(t, "\\\\");
		else if (*p == '"')
			text_printf(t, "\\\"");
		else if (*p == '\n')
			text_printf(t, "\\n");
		else
			text_putc(t, *p);
	}
	text_putc(t, '"');
}

/* ns as exact decimal seconds: 10000 -> "0.00001", 2500000000 -> "2.5". */
static void text_seconds(struct text *t, bool negative, uint64_t ns)
{
	uint64_t frac = ns % NSEC_PER_SEC;
	char digits[10];
	int n;

	text_printf(t, "%s%" PRIu64, negative ? "-" : "", ns / NSEC_PER_SEC);
	if (frac == 0)
		return;
	n = snprintf(digits, sizeof(digits), "%09" PRIu64, frac);
	while (n > 0 && digits[n - 1] == '0')
		digits[--n] = '\0';
	text_printf(t, ".%s", digits);
}

static void text_signed_seconds(struct text *t, int64_t ns)
{
	/* |INT64_MIN| does not fit int64_t; it does uint64_t. */
	if (ns < 0)
		text_seconds(t, true, (uint64_t)(-(ns + 1)) + 1);
	else
		text_seconds(t, false, (uint64_t)ns);
}

static void text_family(struct text *t, const char *name, const char *type, const char *help)
{
	/* HELP text escapes backslash and line feed; ours are constants without. */
	text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A counter per value of one label: name{label="names[i]"} values[i]. */
static void text_counters(struct text *t, const char *name, const char *label,
			  const char *const *names, const uint64_t *values, int n)
{
	for (int i = 0; i < n; i++) {
		text_printf(t, "%s{%s=", name, label);
		text_label_value(t, names[i]);
		text_printf(t, "} %" PRIu64 "\n", values[i]);
	}
}

static void render_vms(struct text *t, const struct metrics_snapshot *snap)
{
	text_family(t, "vcounterd_vms_registered", "gauge",
		    "VMs registered here whose registration finished, by role and counter "
		    "backend.");
	for (int role = VM_ROLE_SOURCE; role <= VM_ROLE_TARGET; role++) {
		for (int kind = 0; kind < _BACKEND_KIND_MAX; kind++) {
			const char *backend = backend_kind_to_string((enum backend_kind)kind);

			if (!backend)
				continue;
			text_printf(t, "vcounterd_vms_registered{role=");
			text_label_value(t, vm_role_to_string((enum vm_role)role));
			text_printf(t, ",backend=");
			text_label_value(t, backend);
			text_printf(t, "} %" PRIu64 "\n", snap->vms[role][kind]);
		}
	}
}

static void render_migrations(struct text *t, const struct metrics *m,
			      const struct metrics_snapshot *snap)
{
	text_family(t, "vcounterd_migrations_total", "counter",
		    "Migrations that ended, by role and outcome (a target is done once it "
		    "applied).");
	for (int role = VM_ROLE_SOURCE; role <= VM_ROLE_TARGET; role++) {
		for (int o = 0; o < _METRICS_OUTCOME_MAX; o++) {
			text_printf(t, "vcounterd_migrations_total{role=");
			text_label_value(t, vm_role_to_string((enum vm_role)role));
			text_printf(t, ",outcome=");
			text_label_value(t, outcome_table[o]);
			text_printf(t, "} %" PRIu64 "\n", m->migrations[role][o]);
		}
	}
	text_family(t, "vcounterd_migrations_running", "gauge",
		    "Migrations not yet done, aborted or failed.");
	text_printf(t, "vcounterd_migrations_running %" PRIu64 "\n", snap->migrations_running);
}

static void render_apply_latency(struct text *t, const struct metrics *m)
{
	uint64_t cumulative = 0;

	text_family(t, "vcounterd_apply_latency_seconds", "histogram",
		    "Target side: from the VMM's apply request to the offsets written and "
		    "verified.");
	for (size_t i = 0; i < METRICS_APPLY_LATENCY_BUCKETS; i++) {
		cumulative += m->apply_latency_buckets[i];
		text_printf(t, "vcounterd_apply_latency_seconds_bucket{le=\"");
		text_seconds(t, false, apply_latency_le_ns[i]);
		text_printf(t, "\"} %" PRIu64 "\n", cumulative);
	}
	cumulative += m->apply_latency_buckets[METRICS_APPLY_LATENCY_BUCKETS];
	text_printf(t, "vcounterd_apply_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
		    cumulative);
	text_printf(t, "vcounterd_apply_latency_seconds_sum ");
	text_seconds(t, false, m->apply_latency_sum_ns);
	text_printf(t, "\nvcounterd_apply_latency_seconds_count %" PRIu64 "\n",
		    m->apply_latency_count);
}

static void render_last(struct text *t, const struct metrics *m)
{
	text_family(t, "vcounterd_last_error_bound_seconds", "gauge",
		    "Error bound of the last migration applied; +Inf when a host clock was not "
		    "synchronised.");
	if (m->has_last) {
		text_printf(t, "vcounterd_last_error_bound_seconds ");
		if (m->last_error_bound_ns == UINT64_MAX)
			text_printf(t, "+Inf");
		else
			text_seconds(t, false, m->last_error_bound_ns);
		text_putc(t, '\n');
	}
	text_family(t, "vcounterd_last_elapsed_seconds", "gauge",
		    "Host time the last migration applied accounted between source and target.");
	if (m->has_last) {
		text_printf(t, "vcounterd_last_elapsed_seconds ");
		text_signed_seconds(t, m->last_elapsed_ns);
		text_putc(t, '\n');
	}
	text_family(t, "vcounterd_last_clamped_seconds", "gauge",
		    "How far the last migration's target clock read behind the source's anchor "
		    "(0: it ran forward); the guest's counter was held by that, not moved back.");
	if (m->has_last) {
		text_printf(t, "vcounterd_last_clamped_seconds ");
		text_seconds(t, false, m->last_clamped_ns);
		text_putc(t, '\n');
	}
	text_family(
		t, "vcounterd_counter_held_total", "counter",
		"Migrations done whose target clock read behind the source's anchor: the "
		"guest's counter was held rather than moved back (check the hosts' time sync).");
	text_printf(t, "vcounterd_counter_held_total %" PRIu64 "\n", m->counter_held);
	text_family(t, "vcounterd_kvmclock_checks_total", "counter",
		    "Migrations applied here, by what the guest's kvmclock showed after the "
		    "apply: ok, master-clock-lost, diverged (from its TSC), unchecked.");
	for (int v = 0; v < _KVMCLOCK_VERDICT_MAX; v++)
		text_printf(t, "vcounterd_kvmclock_checks_total{verdict=\"%s\"} %" PRIu64 "\n",
			    kvmclock_verdict_to_string(v), m->kvmclock_checks[v]);
	text_family(t, "vcounterd_last_kvmclock_error_seconds", "gauge",
		    "kvmclock's advance minus the guest TSC's across the last checked migration "
		    "applied here.");
	if (m->has_last_kvmclock) {
		text_printf(t, "vcounterd_last_kvmclock_error_seconds ");
		text_signed_seconds(t, m->last_kvmclock_error_ns);
		text_putc(t, '\n');
	}
}

static void render_links(struct text *t, const struct metrics *m,
			 const struct metrics_snapshot *snap)
{
	text_family(t, "vcounterd_peer_links", "gauge",
		    "Peer links, by state (connecting: TCP connect or TLS handshake running).");
	text_printf(t, "vcounterd_peer_links{state=\"established\"} %" PRIu64 "\n",
		    snap->peer_links_established);
	text_printf(t, "vcounterd_peer_links{state=\"connecting\"} %" PRIu64 "\n",
		    snap->peer_links_connecting);
	text_family(t, "vcounterd_peer_link_failures_total", "counter",
		    "Peer links that ended in an error: connect or handshake failed, or the link "
		    "was lost.");
	text_printf(t, "vcounterd_peer_link_failures_total %" PRIu64 "\n", m->peer_link_failures);
	text_family(t, "vcounterd_tls_handshake_failures_total", "counter",
		    "Incoming TLS connections refused or lost before a verified handshake, by "
		    "listener.");
	text_counters(t, "vcounterd_tls_handshake_failures_total", "listener", listener_table,
		      m->tls_handshake_failures, _METRICS_LISTENER_MAX);
	text_family(t, "vcounterd_journal_write_failures_total", "counter",
		    "Session journal writes that failed (disk full, I/O error); the step each "
		    "was for did not take effect.");
	text_printf(t, "vcounterd_journal_write_failures_total %" PRIu64 "\n",
		    m->journal_write_failures);
	text_family(t, "vcounterd_accept_failures_total", "counter",
		    "accept() on a listening socket that failed for want of file descriptors or "
		    "memory; the socket then pauses, its connections wait in the backlog.");
	text_counters(t, "vcounterd_accept_failures_total", "socket", socket_table,
		      m->accept_failures, _METRICS_SOCKET_MAX);
	text_family(t, "vcounterd_vmm_refusals_total", "counter",
		    "Requests and connections the VMM socket refused, by reason.");
	text_counters(t, "vcounterd_vmm_refusals_total", "reason", refusal_table, m->vmm_refusals,
		      _METRICS_REFUSAL_MAX);
	text_family(t, "vcounterd_connections_shed_total", "counter",
		    "Connections closed before they were authenticated or served, by socket and "
		    "reason: per-source (its address held its share), evicted (the oldest waiting, "
		    "to make room), deadline, full.");
	for (int k = 0; k < _METRICS_SOCKET_MAX; k++)
		for (int r = 0; r < _METRICS_SHED_MAX; r++) {
			text_printf(t, "vcounterd_connections_shed_total{socket=");
			text_label_value(t, socket_table[k]);
			text_printf(t, ",reason=");
			text_label_value(t, shed_table[r]);
			text_printf(t, "} %" PRIu64 "\n", m->connections_shed[k][r]);
		}
}

int metrics_render(const struct metrics *m, const struct metrics_snapshot *snap, char *buf,
		   size_t size)
{
	struct text t = { .buf = buf, .size = size };

	if (size == 0)
		return -ENOBUFS;
	buf[0] = '\0';
	text_family(&t, "vcounterd_build_info", "gauge",
		    "The version of this vcounterd, as a label; always 1.");
	text_printf(&t, "vcounterd_build_info{version=");
	text_label_value(&t, snap->version ? snap->version : "");
	text_printf(&t, "} 1\n");
	text_family(&t, "vcounterd_start_time_seconds", "gauge",
		    "When this vcounterd started, in seconds since the Unix epoch.");
	text_printf(&t, "vcounterd_start_time_seconds ");
	text_seconds(&t, false, snap->start_time_ns);
	text_putc(&t, '\n');
	render_vms(&t, snap);
	render_migrations(&t, m, snap);
	render_apply_latency(&t, m);
	render_last(&t, m);
	render_links(&t, m, snap);
	text_family(&t, "vcounterd_control_watchers", "gauge",
		    "Open WatchEvents streams of the control API.");
	text_printf(&t, "vcounterd_control_watchers %" PRIu64 "\n", snap->control_watchers);
	text_family(&t, "vcounterd_clock_error_seconds", "gauge",
		    "This host's clock-error estimate now, its share of a migration's error "
		    "bound, by the sync source that made it; +Inf when unsynchronised or the "
		    "source does not answer.");
	text_printf(&t, "vcounterd_clock_error_seconds{source=");
	text_label_value(&t, sync_source_kind_to_string(snap->sync_source)
				     ? sync_source_kind_to_string(snap->sync_source)
				     : "?");
	text_printf(&t, "} ");
	if (snap->clock_error_ns == UINT64_MAX)
		text_printf(&t, "+Inf");
	else
		text_seconds(&t, false, snap->clock_error_ns);
	text_putc(&t, '\n');
	return t.full ? -ENOBUFS : (int)t.len;
}
