/* conf.c - vcounterd's settings from /etc/vcounterd/vcounterd.conf and the command line: one
 * table (keys[]) lists every setting with its section, key, flag, type, range, default and field,
 * as linuxptp's config.c and systemd's gperf tables do. The parser works on a buffer; only
 * conf_load() and conf_system_ops touch the system. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "conf.h"
#include "counter_math.h"
#include "log.h"
#include "macro.h"
#include "sync_source_spec.h"

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* What a message shows of a value: enough to find it, never a whole line. */
#define SHOW_MAX	200
/* A unix socket path must fit sockaddr_un.sun_path (108 bytes with its NUL). */
#define SOCKET_PATH_MAX 107
/* "[" host "]:" port, host as peer_conn.c allows it (256 bytes). */
#define ADDRESS_MAX	264
#define FILE_PATH_MAX	4095

struct conf_string {
	struct conf_string *next;
	char s[];
};

enum conf_type {
	CONF_STRING,   /* printable ASCII, no whitespace: names, addresses */
	CONF_PATH,     /* a file name: anything but control characters */
	CONF_U64,      /* decimal, min..max, into an unsigned field */
	CONF_ENUM,     /* one of values[], into an int or a bool */
	CONF_NAMES,    /* list of CONF_STRING */
	CONF_IDS,      /* list of uids or gids: a number or a name */
	CONF_BACKENDS, /* list of counter backends, each once; "a,b" too, as --backends */
};

enum {
	CONF_RESTART = 1 << 0, /* a running daemon keeps its value until restarted */
	CONF_NONE = 1 << 1,    /* "none" unsets it */
	CONF_GROUP = 1 << 2,   /* CONF_IDS: gids */
};

struct conf_enum_value {
	const char *name;
	int value;
};

struct conf_key {
	const char *section;
	const char *name;
	const char *flag; /* the command line's --flag */
	const char *def;  /* default, as a value in the file would be; NULL: unset/empty */
	enum conf_type type;
	unsigned flags;
	size_t offset;		       /* into struct conf */
	size_t size;		       /* of the field, or of one list element */
	size_t count_offset, capacity; /* lists */
	uint64_t min, max;	       /* CONF_U64: range; strings and names: max bytes */
	const struct conf_enum_value *values;
};

#define FIELD(f) .offset = offsetof(struct conf, f), .size = sizeof(((struct conf *)0)->f)
#define LIST(f, n)                                                                    \
	.offset = offsetof(struct conf, f), .size = sizeof(((struct conf *)0)->f[0]), \
	.count_offset = offsetof(struct conf, n), .capacity = ELEMENTSOF(((struct conf *)0)->f)

static const struct conf_enum_value log_levels[] = {
	{ "error", LOG_ERR }, { "warning", LOG_WARNING },
	{ "info", LOG_INFO }, { "debug", LOG_DEBUG },
	{ NULL, 0 },
};

static const struct conf_enum_value log_targets[] = {
	{ "auto", LOG_TARGET_AUTO },
	{ "journal", LOG_TARGET_JOURNAL },
	{ "stderr", LOG_TARGET_STDERR },
	{ NULL, 0 },
};

static const struct conf_enum_value bound_policies[] = {
	{ "warn", 0 },
	{ "refuse", 1 },
	{ NULL, 0 },
};

static const char *const sections[] = { "daemon", "vmm",   "peer",   "control",
					"policy", "clock", "metrics" };

/* Every setting; doc/vcounterd.conf.5 and systemd/vcounterd.conf.example describe each. */
static const struct conf_key keys[] = {
	{ "daemon", "host-name", "host-name", NULL, CONF_STRING, CONF_RESTART,
	  FIELD(config.host_name), .max = TLS_PEER_NAME_MAX },
	{ "daemon", "log-level", "log-level", "info", CONF_ENUM, 0, FIELD(log_level),
	  .values = log_levels },
	{ "daemon", "log-target", "log-target", "auto", CONF_ENUM, 0, FIELD(log_target),
	  .values = log_targets },
	{ "daemon", "backends", "backends", NULL, CONF_BACKENDS, 0,
	  LIST(config.backends, config.n_backends) },
	{ "daemon", "state-directory", "state-directory", NULL, CONF_PATH, CONF_RESTART,
	  FIELD(config.state_dir), .max = FILE_PATH_MAX },

	{ "vmm", "socket", "vmm-socket", VCD_DEFAULT_VMM_SOCKET, CONF_PATH, CONF_RESTART,
	  FIELD(config.vmm_socket), .max = SOCKET_PATH_MAX },
	{ "vmm", "allow-uid", "allow-uid", NULL, CONF_IDS, 0,
	  LIST(config.allowed_uids, config.n_allowed_uids) },
	{ "vmm", "allow-gid", "allow-gid", NULL, CONF_IDS, CONF_GROUP,
	  LIST(config.allowed_gids, config.n_allowed_gids) },
	{ "vmm", "max-vms", "max-vms", STRINGIFY(VCD_MAX_VMS), CONF_U64, 0, FIELD(config.max_vms),
	  .min = 1, .max = VCD_MAX_VMS },
	{ "vmm", "max-connections", "max-vmm-connections", STRINGIFY(VCD_MAX_VMM_CONNS), CONF_U64,
	  0, FIELD(config.max_vmm_conns), .min = 1, .max = VCD_MAX_VMM_CONNS },

	{ "peer", "listen", "listen", NULL, CONF_STRING, CONF_RESTART | CONF_NONE,
	  FIELD(config.listen_addr), .max = ADDRESS_MAX },
	{ "peer", "port-file", "port-file", NULL, CONF_PATH, CONF_RESTART, FIELD(port_file),
	  .max = FILE_PATH_MAX },
	{ "peer", "ca", "ca", NULL, CONF_PATH, 0, FIELD(config.tls.ca_file), .max = FILE_PATH_MAX },
	{ "peer", "cert", "cert", NULL, CONF_PATH, 0, FIELD(config.tls.cert_file),
	  .max = FILE_PATH_MAX },
	{ "peer", "key", "key", NULL, CONF_PATH, 0, FIELD(config.tls.key_file),
	  .max = FILE_PATH_MAX },
	{ "peer", "allow-peer", "allow-peer", NULL, CONF_NAMES, 0,
	  LIST(config.allowed_peers, config.tls.n_allowed_peers), .max = TLS_PEER_NAME_MAX },
	{ "peer", "timeout-ms", "peer-timeout", "30000", CONF_U64, 0, FIELD(config.peer_timeout_ms),
	  .min = 1, .max = 3600000 },
	{ "peer", "max-migrations", "max-migrations", STRINGIFY(VCD_MAX_MIGRATIONS), CONF_U64, 0,
	  FIELD(config.max_migrations), .min = 1, .max = VCD_MAX_MIGRATIONS },

	{ "control", "socket", "control-socket", VCD_DEFAULT_CONTROL_SOCKET, CONF_PATH,
	  CONF_RESTART | CONF_NONE, FIELD(config.control_socket), .max = SOCKET_PATH_MAX },
	{ "control", "listen", "control-listen", NULL, CONF_STRING, CONF_RESTART | CONF_NONE,
	  FIELD(config.control_listen), .max = ADDRESS_MAX },
	{ "control", "port-file", "control-port-file", NULL, CONF_PATH, CONF_RESTART,
	  FIELD(control_port_file), .max = FILE_PATH_MAX },
	{ "control", "operator", "control-operator", NULL, CONF_NAMES, 0,
	  LIST(config.control_operators, config.n_control_operators),
	  .max = VCD_CONTROL_IDENTITY_MAX },
	{ "control", "reader", "control-reader", NULL, CONF_NAMES, 0,
	  LIST(config.control_readers, config.n_control_readers), .max = VCD_CONTROL_IDENTITY_MAX },
	{ "control", "operator-uid", "control-operator-uid", NULL, CONF_IDS, 0,
	  LIST(config.control_operator_uids, config.n_control_operator_uids) },
	{ "control", "operator-gid", "control-operator-gid", NULL, CONF_IDS, CONF_GROUP,
	  LIST(config.control_operator_gids, config.n_control_operator_gids) },
	{ "control", "reader-uid", "control-reader-uid", NULL, CONF_IDS, 0,
	  LIST(config.control_reader_uids, config.n_control_reader_uids) },
	{ "control", "reader-gid", "control-reader-gid", NULL, CONF_IDS, CONF_GROUP,
	  LIST(config.control_reader_gids, config.n_control_reader_gids) },
	{ "control", "max-watchers", "max-watchers", STRINGIFY(VCD_MAX_WATCHERS), CONF_U64, 0,
	  FIELD(config.max_watchers), .min = 1, .max = VCD_MAX_WATCHERS },

	{ "policy", "error-bound-limit-ns", "error-bound-limit", "1000000", CONF_U64, 0,
	  FIELD(config.error_bound_limit_ns), .min = 0, .max = UINT64_MAX },
	{ "policy", "error-bound-policy", "error-bound-policy", "warn", CONF_ENUM, 0,
	  FIELD(config.error_bound_refuse), .values = bound_policies },
	{ "policy", "max-elapsed-ns", "max-elapsed", "3600000000000", CONF_U64, 0,
	  FIELD(config.max_abs_elapsed_ns), .min = 0, .max = UINT64_MAX },
	/* 1000000 ppm would call any two rates equal. */
	{ "policy", "tsc-tolerance-ppm", "tsc-tolerance",
	  STRINGIFY(COUNTER_MATH_DEFAULT_TSC_TOLERANCE_PPM), CONF_U64, 0,
	  FIELD(config.tsc_tolerance_ppm), .min = 0, .max = 10000 },
	{ "policy", "kvm-op-timeout-ms", "kvm-op-timeout", "10000", CONF_U64, 0,
	  FIELD(config.kvm_op_timeout_ms), .min = 1, .max = 3600000 },

	/* sync_source.h: adjtimex, chrony, chrony@ADDR:PORT, linuxptp, linuxptp@PATH, fixed:NS. */
	{ "clock", "sync-source", "sync-source", "adjtimex", CONF_STRING, 0,
	  FIELD(config.sync_source), .max = 80 },

	/* metrics_http.c: "ADDR:PORT" or a bare port (on 127.0.0.1). */
	{ "metrics", "listen", "metrics-listen", NULL, CONF_STRING, CONF_RESTART | CONF_NONE,
	  FIELD(config.metrics_listen), .max = ADDRESS_MAX },
	{ "metrics", "port-file", "metrics-port-file", NULL, CONF_PATH, CONF_RESTART,
	  FIELD(metrics_port_file), .max = FILE_PATH_MAX },
};

_Static_assert(ELEMENTSOF(keys) <= CONF_MAX_KEYS, "raise CONF_MAX_KEYS");

/* ---- the store ---- */

static const char *store_strndup(struct conf *conf, const char *s, size_t len)
{
	struct conf_string *str = malloc(sizeof(*str) + len + 1);

	if (!str)
		return NULL;
	memcpy(str->s, s, len);
	str->s[len] = '\0';
	str->next = conf->strings;
	conf->strings = str;
	return str->s;
}

static const char *store_strdup(struct conf *conf, const char *s)
{
	return store_strndup(conf, s, strlen(s));
}

/* ---- the table ---- */

static void *field_of(struct conf *conf, const struct conf_key *k)
{
	return (char *)conf + k->offset;
}

static const void *cfield_of(const struct conf *conf, const struct conf_key *k)
{
	return (const char *)conf + k->offset;
}

static size_t *count_of(struct conf *conf, const struct conf_key *k)
{
	return (size_t *)((char *)conf + k->count_offset);
}

static size_t ccount_of(const struct conf *conf, const struct conf_key *k)
{
	return *(const size_t *)((const char *)conf + k->count_offset);
}

static bool is_list(const struct conf_key *k)
{
	return k->type == CONF_NAMES || k->type == CONF_IDS || k->type == CONF_BACKENDS;
}

static size_t key_index(const struct conf_key *k)
{
	return (size_t)(k - keys);
}

static const char *known_section(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(sections); i++)
		if (strcmp(sections[i], name) == 0)
			return sections[i];
	return NULL;
}

static const struct conf_key *find_key(const char *section, const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(keys); i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static const struct conf_key *find_flag(const char *flag, size_t len)
{
	for (size_t i = 0; i < ELEMENTSOF(keys); i++)
		if (strlen(keys[i].flag) == len && memcmp(keys[i].flag, flag, len) == 0)
			return &keys[i];
	return NULL;
}

/* Unsigned numbers into fields of their own width: bool, unsigned/uint32_t/int, uint64_t. */
static void store_uint(void *p, size_t size, uint64_t v)
{
	if (size == 1) {
		bool b = v != 0;

		memcpy(p, &b, 1);
	} else if (size == sizeof(uint32_t)) {
		uint32_t u = (uint32_t)v;

		memcpy(p, &u, sizeof(u));
	} else {
		memcpy(p, &v, sizeof(v));
	}
}

static uint64_t load_uint(const void *p, size_t size)
{
	if (size == 1) {
		bool b;

		memcpy(&b, p, 1);
		return b;
	} else if (size == sizeof(uint32_t)) {
		uint32_t u;

		memcpy(&u, p, sizeof(u));
		return u;
	} else {
		uint64_t v;

		memcpy(&v, p, sizeof(v));
		return v;
	}
}

/* ---- values ---- */

/* Strict decimal: digits only, no sign, no base prefix. -EINVAL, -ERANGE past UINT64_MAX. */
static int parse_decimal(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (*p < '0' || *p > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

static int check_text(const char *s, bool allow_space, uint64_t max, char *reason, size_t size)
{
	size_t len = strlen(s);

	if (len == 0) {
		snprintf(reason, size, "empty value");
		return -EINVAL;
	}
	if (len > max) {
		snprintf(reason, size, "longer than %" PRIu64 " bytes", max);
		return -EINVAL;
	}
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			snprintf(reason, size, "contains a control character");
			return -EINVAL;
		}
		if (!allow_space && (*p == ' ' || *p > 0x7f)) {
			snprintf(reason, size, "contains a space or a byte that is not ASCII");
			return -EINVAL;
		}
	}
	return 0;
}

static int set_backends(struct conf *conf, const struct conf_key *k, const char *item, char *reason,
			size_t size)
{
	enum backend_kind *list = field_of(conf, k);
	size_t *n = count_of(conf, k);
	const char *p = item;

	/* "kvm-syscounter,kvm-x86" as --backends takes it; empty elements are skipped, but one
	 * backend at least is named (an empty list would mean all of them). */
	if (!item[strspn(item, ",")]) {
		snprintf(reason, size, "needs at least one backend");
		return -EINVAL;
	}
	while (*p) {
		const char *end = strchrnul(p, ',');
		size_t len = (size_t)(end - p);
		char name[32];
		enum backend_kind kind = _BACKEND_KIND_INVALID;

		if (len > 0 && len < sizeof(name)) {
			memcpy(name, p, len);
			name[len] = '\0';
			kind = backend_kind_from_string(name);
		} else if (len >= sizeof(name)) {
			snprintf(name, sizeof(name), "%.*s...", 20, p);
		}
		if (len > 0) {
			if (kind != BACKEND_KVM_SYSCOUNTER && kind != BACKEND_KVM_X86) {
				snprintf(reason, size,
					 "'%s' is not a backend of this build (kvm-syscounter, "
					 "kvm-x86)",
					 name);
				return -EINVAL;
			}
			for (size_t i = 0; i < *n; i++) {
				if (list[i] == kind) {
					snprintf(reason, size, "'%s' twice", name);
					return -EINVAL;
				}
			}
			if (*n >= k->capacity) {
				snprintf(reason, size, "too many values (limit %zu)", k->capacity);
				return -E2BIG;
			}
			list[(*n)++] = kind;
		}
		p = *end ? end + 1 : end;
	}
	return 0;
}

static int set_id(struct conf *conf, const struct conf_key *k, const char *item,
		  const struct conf_ops *ops, char *reason, size_t size)
{
	bool group = k->flags & CONF_GROUP;
	uint32_t *list = field_of(conf, k);
	size_t *n = count_of(conf, k);
	uint64_t v;
	uint32_t id;
	int r;

	_Static_assert(sizeof(uid_t) == sizeof(uint32_t) && sizeof(gid_t) == sizeof(uint32_t),
		       "uid_t and gid_t are 32 bits on Linux");
	r = parse_decimal(item, &v);
	if (r == -ERANGE || (r == 0 && v > UINT32_MAX - 1)) {
		/* (uid_t)-1 means "no change" to chown(2): never an identity. */
		snprintf(reason, size, "out of range (0..%" PRIu32 ")", UINT32_MAX - 1);
		return -EINVAL;
	}
	if (r == 0) {
		id = (uint32_t)v;
	} else {
		r = check_text(item, false, 255, reason, size);
		if (r < 0)
			return r;
		r = group ? (ops->group_id ? ops->group_id(item, &id) : -ENOENT)
			  : (ops->user_id ? ops->user_id(item, &id) : -ENOENT);
		if (r < 0) {
			snprintf(reason, size, "no such %s '%s'", group ? "group" : "user", item);
			return -EINVAL;
		}
	}
	if (*n >= k->capacity) {
		snprintf(reason, size, "too many values (limit %zu)", k->capacity);
		return -E2BIG;
	}
	list[(*n)++] = id;
	return 0;
}

/* One value of k (for a list: one item) into conf. -errno with a reason. */
static int set_value(struct conf *conf, const struct conf_key *k, const char *value,
		     const struct conf_ops *ops, char *reason, size_t size)
{
	const char *s;
	uint64_t v;
	int r;

	switch (k->type) {
	case CONF_STRING:
	case CONF_PATH:
		if ((k->flags & CONF_NONE) && strcmp(value, "none") == 0) {
			*(const char **)field_of(conf, k) = NULL;
			return 0;
		}
		r = check_text(value, k->type == CONF_PATH, k->max, reason, size);
		if (r < 0)
			return r;
		s = store_strdup(conf, value);
		if (!s) {
			snprintf(reason, size, "out of memory");
			return -ENOMEM;
		}
		*(const char **)field_of(conf, k) = s;
		return 0;
	case CONF_U64:
		r = parse_decimal(value, &v);
		if (r == -EINVAL) {
			snprintf(reason, size, "not a decimal number (%" PRIu64 "..%" PRIu64 ")",
				 k->min, k->max);
			return -EINVAL;
		}
		if (r < 0 || v < k->min || v > k->max) {
			snprintf(reason, size, "out of range (%" PRIu64 "..%" PRIu64 ")", k->min,
				 k->max);
			return -EINVAL;
		}
		store_uint(field_of(conf, k), k->size, v);
		return 0;
	case CONF_ENUM:
		for (const struct conf_enum_value *e = k->values; e->name; e++) {
			if (strcmp(e->name, value) == 0) {
				store_uint(field_of(conf, k), k->size, (uint64_t)e->value);
				return 0;
			}
		}
		r = snprintf(reason, size, "not one of");
		for (const struct conf_enum_value *e = k->values; e->name && r >= 0; e++)
			if ((size_t)r < size)
				r += snprintf(reason + r, size - (size_t)r, "%s %s",
					      e == k->values ? "" : ",", e->name);
		return -EINVAL;
	case CONF_NAMES:
		r = check_text(value, false, k->max, reason, size);
		if (r < 0)
			return r;
		if (*count_of(conf, k) >= k->capacity) {
			snprintf(reason, size, "too many values (limit %zu)", k->capacity);
			return -E2BIG;
		}
		s = store_strdup(conf, value);
		if (!s) {
			snprintf(reason, size, "out of memory");
			return -ENOMEM;
		}
		((const char **)field_of(conf, k))[(*count_of(conf, k))++] = s;
		return 0;
	case CONF_IDS:
		return set_id(conf, k, value, ops, reason, size);
	case CONF_BACKENDS:
		return set_backends(conf, k, value, reason, size);
	}
	snprintf(reason, size, "unknown type");
	return -EINVAL;
}

/* ---- a conf ---- */

struct conf *conf_new(void)
{
	struct conf *conf = calloc(1, sizeof(*conf));
	char reason[256];

	if (!conf)
		return NULL;
	conf->config.tls.allowed_peers = conf->config.allowed_peers;
	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		if (!keys[i].def)
			continue;
		/* Only memory can fail here: the defaults are this table's own. */
		if (set_value(conf, &keys[i], keys[i].def, NULL, reason, sizeof(reason)) < 0)
			return conf_free(conf);
	}
	return conf;
}

struct conf *conf_free(struct conf *conf)
{
	if (!conf)
		return NULL;
	while (conf->strings) {
		struct conf_string *s = conf->strings;

		conf->strings = s->next;
		free(s);
	}
	free(conf);
	return NULL;
}

/* ---- messages ---- */

/* in, safe for a one-line message: control and non-ASCII bytes as \xNN, at most SHOW_MAX
 * characters of it. */
static void show(char *out, size_t size, const char *in)
{
	size_t o = 0, shown = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p && o + 8 < size; p++) {
		if (shown++ >= SHOW_MAX) {
			o += (size_t)snprintf(out + o, size - o, "...");
			break;
		}
		if (*p < 0x20 || *p >= 0x7f)
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", *p);
		else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
}

struct parse {
	struct conf *conf;
	const struct conf_ops *ops;
	const char *file_name;
	unsigned line;
	const char *section;
	char *err;
	size_t err_size;
};

static int __attribute__((format(printf, 3, 4)))
line_error(struct parse *p, int r, const char *fmt, ...)
{
	char file[SHOW_MAX * 4 + 8], reason[CONF_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	show(file, sizeof(file), p->file_name);
	snprintf(p->err, p->err_size, "%s:%u: %s", file, p->line, reason);
	return r;
}

static int key_error(struct parse *p, int r, const char *key, const char *value, const char *reason)
{
	char k[SHOW_MAX * 4 + 8], v[SHOW_MAX * 4 + 8];

	show(k, sizeof(k), key);
	show(v, sizeof(v), value);
	return line_error(p, r, "key '%s' = '%s': %s", k, v, reason);
}

/* ---- the file ---- */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static char *trim(char *s)
{
	char *end;

	while (is_blank(*s))
		s++;
	end = s + strlen(s);
	while (end > s && is_blank(end[-1]))
		*--end = '\0';
	return s;
}

/* Cut a comment off a value (leading blanks already trimmed) and trailing blanks: '#' or ';'
 * at the start or after a blank, outside quotes. A quote opens only at the start of a word, so
 * "a'b" is three plain characters. */
static int strip_comment(char *s, const char **ret_reason)
{
	char quote = 0;

	for (char *p = s; *p; p++) {
		bool word_start = p == s || is_blank(p[-1]);

		if (quote) {
			if (*p == quote)
				quote = 0;
		} else if (word_start && (*p == '"' || *p == '\'')) {
			quote = *p;
		} else if (word_start && (*p == '#' || *p == ';')) {
			*p = '\0';
			break;
		}
	}
	if (quote) {
		*ret_reason = "unterminated quote";
		return -EINVAL;
	}
	trim(s);
	return 0;
}

/* Next word of a list value: a quoted string (quotes removed) or a run of non-blanks. */
static int next_word(char **pos, char **ret_word, const char **ret_reason)
{
	char *p = *pos, *word, *end;

	while (is_blank(*p))
		p++;
	if (!*p) {
		*ret_word = NULL;
		return 0;
	}
	if (*p == '"' || *p == '\'') {
		word = p + 1;
		end = strchr(word, *p);
		if (!end) {
			*ret_reason = "unterminated quote";
			return -EINVAL;
		}
		if (end[1] && !is_blank(end[1])) {
			*ret_reason = "text after the closing quote";
			return -EINVAL;
		}
		*end = '\0';
		*pos = end + 1;
		if (!*word) {
			*ret_reason = "empty value";
			return -EINVAL;
		}
	} else {
		word = p;
		while (*p && !is_blank(*p))
			p++;
		*pos = *p ? p + 1 : p;
		*p = '\0';
	}
	*ret_word = word;
	return 0;
}

/* A scalar's value: all of it (inner blanks kept, for paths), or one quoted string. */
static int unquote(char *s, char **ret, const char **ret_reason)
{
	size_t len = strlen(s);
	char *close;

	if (s[0] != '"' && s[0] != '\'') {
		*ret = s;
		return 0;
	}
	close = strchr(s + 1, s[0]);
	if (!close) {
		*ret_reason = "unterminated quote";
		return -EINVAL;
	}
	if (close != s + len - 1) {
		*ret_reason = "text after the closing quote";
		return -EINVAL;
	}
	*close = '\0';
	*ret = s + 1;
	return 0;
}

static int parse_section(struct parse *p, char *line)
{
	char *close = strchr(line, ']'), *name, *rest;
	const char *reason = NULL, *section;
	char shown[SHOW_MAX * 4 + 8];

	show(shown, sizeof(shown), line);
	if (!close)
		return line_error(p, -EINVAL, "'%s': section header without ']'", shown);
	*close = '\0';
	rest = trim(close + 1);
	if (strip_comment(rest, &reason) < 0 || *rest)
		return line_error(p, -EINVAL, "'%s': text after the section header", shown);
	name = trim(line + 1);
	section = known_section(name);
	if (!section) {
		show(shown, sizeof(shown), name);
		return line_error(p, -EINVAL,
				  "section '[%s]': unknown section (daemon, vmm, peer, control, "
				  "policy, metrics)",
				  shown);
	}
	p->section = section;
	return 0;
}

static int parse_assignment(struct parse *p, char *line)
{
	char *eq = strchr(line, '='), *key, *value, *word, *pos;
	const char *reason = NULL;
	const struct conf_key *k;
	char why[512], shown[SHOW_MAX * 4 + 8], copy[CONF_MAX_LINE_BYTES + 1];
	uint32_t *origin;
	int r;

	if (!eq) {
		show(shown, sizeof(shown), line);
		return line_error(p, -EINVAL, "'%s': missing '=' (key = value)", shown);
	}
	*eq = '\0';
	key = trim(line);
	value = trim(eq + 1);
	r = strip_comment(value, &reason);
	if (!*key)
		return key_error(p, -EINVAL, key, value, "empty key");
	if (!p->section)
		return key_error(p, -EINVAL, key, value,
				 "outside any section (a [section] line comes first)");
	k = find_key(p->section, key);
	if (!k) {
		snprintf(why, sizeof(why), "unknown key in [%s]", p->section);
		return key_error(p, -EINVAL, key, value, why);
	}
	if (r < 0)
		return key_error(p, r, key, value, reason);
	if (!*value)
		return key_error(p, -EINVAL, key, value, "empty value");
	origin = &p->conf->origin[key_index(k)];
	/* value stays as written, for messages; the words are cut out of a copy. */
	snprintf(copy, sizeof(copy), "%s", value);
	if (!is_list(k)) {
		if (*origin != CONF_ORIGIN_DEFAULT) {
			snprintf(why, sizeof(why), "duplicate key (first on line %" PRIu32 ")",
				 *origin);
			return key_error(p, -EINVAL, key, value, why);
		}
		if (unquote(copy, &word, &reason) < 0)
			return key_error(p, -EINVAL, key, value, reason);
		r = set_value(p->conf, k, word, p->ops, why, sizeof(why));
		if (r < 0)
			return key_error(p, r, key, value, why);
	} else {
		pos = copy;
		for (;;) {
			if (next_word(&pos, &word, &reason) < 0)
				return key_error(p, -EINVAL, key, value, reason);
			if (!word)
				break;
			r = set_value(p->conf, k, word, p->ops, why, sizeof(why));
			if (r < 0)
				return key_error(p, r, key, value, why);
		}
	}
	if (*origin == CONF_ORIGIN_DEFAULT)
		*origin = p->line;
	return 0;
}

int conf_parse(struct conf *conf, const char *file_name, const char *text, size_t len,
	       const struct conf_ops *ops, char *err, size_t err_size)
{
	struct parse p = {
		.conf = conf,
		.ops = ops ? ops : &conf_system_ops,
		.file_name = file_name ? file_name : "(config)",
		.err = err,
		.err_size = err_size,
	};
	char line[CONF_MAX_LINE_BYTES + 1];
	size_t pos = 0;

	while (pos < len) {
		const char *start = text + pos;
		const char *nl = memchr(start, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - start) : len - pos;
		char *s;
		int r;

		pos += n + (nl ? 1 : 0);
		p.line++;
		if (n > CONF_MAX_LINE_BYTES)
			return line_error(&p, -EINVAL, "line longer than %d bytes",
					  CONF_MAX_LINE_BYTES);
		if (memchr(start, '\0', n))
			return line_error(&p, -EINVAL, "NUL byte in the line");
		memcpy(line, start, n);
		line[n] = '\0';
		s = trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		r = *s == '[' ? parse_section(&p, s) : parse_assignment(&p, s);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- the command line ---- */

enum cmd_option {
	CMD_SETTING, /* one of keys[] */
	CMD_CONFIG,
	CMD_CHECK_CONFIG,
	CMD_HELP,
	CMD_VERSION,
};

static const struct {
	const char *flag;
	enum cmd_option option;
	bool has_value;
} cmd_options[] = {
	{ "config", CMD_CONFIG, true },
	{ "check-config", CMD_CHECK_CONFIG, false },
	{ "help", CMD_HELP, false },
	{ "version", CMD_VERSION, false },
};

/* argv[*i]: "--flag VALUE", "--flag=VALUE", "--flag" or "-h". Advances *i past it. */
static int next_option(int argc, char *const *argv, int *i, enum cmd_option *ret_option,
		       const struct conf_key **ret_key, const char **ret_value, char *err,
		       size_t err_size)
{
	const char *arg = argv[*i], *name, *eq;
	const struct conf_key *k = NULL;
	enum cmd_option option = CMD_SETTING;
	bool has_value = true;
	char shown[SHOW_MAX * 4 + 8];
	size_t len;

	(*i)++;
	*ret_value = NULL;
	*ret_key = NULL;
	show(shown, sizeof(shown), arg);
	if (strcmp(arg, "-h") == 0) {
		*ret_option = CMD_HELP;
		return 0;
	}
	if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
		snprintf(err, err_size, "unexpected argument '%s'", shown);
		return -EINVAL;
	}
	name = arg + 2;
	eq = strchr(name, '=');
	len = eq ? (size_t)(eq - name) : strlen(name);
	k = find_flag(name, len);
	if (!k) {
		size_t j;

		for (j = 0; j < ELEMENTSOF(cmd_options); j++)
			if (strlen(cmd_options[j].flag) == len &&
			    memcmp(cmd_options[j].flag, name, len) == 0)
				break;
		if (j == ELEMENTSOF(cmd_options)) {
			snprintf(err, err_size, "unknown option '%s' (--help lists them)", shown);
			return -EINVAL;
		}
		option = cmd_options[j].option;
		has_value = cmd_options[j].has_value;
	}
	if (!has_value) {
		if (eq) {
			snprintf(err, err_size, "option '--%.*s' takes no value", (int)len, name);
			return -EINVAL;
		}
	} else if (eq) {
		*ret_value = eq + 1;
	} else if (*i < argc) {
		*ret_value = argv[(*i)++];
	} else {
		snprintf(err, err_size, "option '--%.*s' needs a value", (int)len, name);
		return -EINVAL;
	}
	*ret_option = option;
	*ret_key = k;
	return 0;
}

int conf_parse_cmdline(int argc, char *const *argv, struct conf_cmdline *ret, char *err,
		       size_t err_size)
{
	struct conf_cmdline cmd = { 0 };

	for (int i = 1; i < argc;) {
		const struct conf_key *k;
		enum cmd_option option;
		const char *value;
		int r;

		r = next_option(argc, argv, &i, &option, &k, &value, err, err_size);
		if (r < 0)
			return r;
		switch (option) {
		case CMD_CONFIG:
			if (!*value) {
				snprintf(err, err_size, "--config needs a file name");
				return -EINVAL;
			}
			cmd.config_path = value;
			break;
		case CMD_CHECK_CONFIG:
			cmd.check_config = true;
			break;
		case CMD_HELP:
			cmd.help = true;
			break;
		case CMD_VERSION:
			cmd.version = true;
			break;
		case CMD_SETTING:
			break;
		}
	}
	*ret = cmd;
	return 0;
}

int conf_apply_argv(struct conf *conf, int argc, char *const *argv, const struct conf_ops *ops,
		    char *err, size_t err_size)
{
	bool seen[ELEMENTSOF(keys)] = { false };

	if (!ops)
		ops = &conf_system_ops;
	for (int i = 1; i < argc;) {
		char reason[512], shown[SHOW_MAX * 4 + 8];
		const struct conf_key *k;
		enum cmd_option option;
		const char *value;
		size_t idx;
		int r;

		r = next_option(argc, argv, &i, &option, &k, &value, err, err_size);
		if (r < 0)
			return r;
		if (option != CMD_SETTING)
			continue;
		idx = key_index(k);
		/* The command line's list replaces the file's (flags override the file). */
		if (is_list(k) && !seen[idx])
			*count_of(conf, k) = 0;
		seen[idx] = true;
		r = set_value(conf, k, value, ops, reason, sizeof(reason));
		if (r < 0) {
			show(shown, sizeof(shown), value);
			snprintf(err, err_size, "--%s '%s': %s", k->flag, shown, reason);
			return r;
		}
		conf->origin[idx] = CONF_ORIGIN_ARGV;
	}
	return 0;
}

/* ---- after the file and argv ---- */

int conf_finish(struct conf *conf, uid_t self_uid, const char *host_name)
{
	struct vcd_config *cfg = &conf->config;

	if (cfg->n_allowed_uids == 0) {
		cfg->allowed_uids[cfg->n_allowed_uids++] = 0;
		if (self_uid != 0)
			cfg->allowed_uids[cfg->n_allowed_uids++] = self_uid;
	}
	if (!cfg->host_name) {
		cfg->host_name =
			store_strdup(conf, host_name && *host_name ? host_name : "localhost");
		if (!cfg->host_name)
			return -ENOMEM;
	}
	cfg->tls.allowed_peers = cfg->allowed_peers;
	return 0;
}

static const struct conf_key *key_of(const char *section, const char *name)
{
	const struct conf_key *k = find_key(section, name);

	assert(k); /* a name of this file's own table */
	return k;
}

/* "FILE:LINE: key 'k' = 'v'", "--flag 'v'" or "[section] k" (a default), for messages. */
static void where(const struct conf *conf, const struct conf_key *k, char *out, size_t size)
{
	uint32_t origin = conf->origin[key_index(k)];
	char file[SHOW_MAX * 4 + 8], value[SHOW_MAX * 4 + 8];
	const char *v = *(const char *const *)cfield_of(conf, k);

	show(value, sizeof(value), v ? v : "");
	if (origin == CONF_ORIGIN_ARGV) {
		snprintf(out, size, "--%s '%s'", k->flag, value);
	} else if (origin == CONF_ORIGIN_DEFAULT) {
		snprintf(out, size, "[%s] %s '%s'", k->section, k->name, value);
	} else {
		show(file, sizeof(file), conf->path ? conf->path : "(config)");
		snprintf(out, size, "%s:%" PRIu32 ": key '%s' = '%s'", file, origin, k->name,
			 value);
	}
}

/* A check across keys failed on k: said in the flags' words when the command line set it (as
 * vcounterd always has), else with where the file did. */
static int validate_error(const struct conf *conf, const struct conf_key *k, char *err,
			  size_t err_size, const char *file_reason, const char *argv_message)
{
	char at[SHOW_MAX * 8 + 64];

	if (conf->origin[key_index(k)] == CONF_ORIGIN_ARGV) {
		snprintf(err, err_size, "%s", argv_message);
	} else {
		where(conf, k, at, sizeof(at));
		snprintf(err, err_size, "%s: %s", at, file_reason);
	}
	return -EINVAL;
}

int conf_validate(const struct conf *conf, char *err, size_t err_size)
{
	const struct vcd_config *cfg = &conf->config;
	const struct tls_config *t = &cfg->tls;
	bool tls = t->ca_file && t->cert_file && t->key_file;
	struct sync_source_spec spec;
	char why[160];

	if (!tls && (t->ca_file || t->cert_file || t->key_file))
		return validate_error(
			conf,
			key_of("peer", t->ca_file     ? "ca"
				       : t->cert_file ? "cert"
						      : "key"),
			err, err_size,
			"ca, cert and key go together (in [peer], or --ca, --cert and "
			"--key)",
			"--ca, --cert and --key go together");
	if (cfg->listen_addr && !tls)
		return validate_error(conf, key_of("peer", "listen"), err, err_size,
				      "needs ca, cert and key: the peer link is mutual TLS only",
				      "--listen needs --ca, --cert and --key: the peer link is "
				      "mutual TLS only");
	if (cfg->control_listen && (!tls || cfg->n_control_operators + cfg->n_control_readers == 0))
		return validate_error(
			conf, key_of("control", "listen"), err, err_size,
			"needs ca, cert and key ([peer]) and at least one operator or "
			"reader: TCP callers are known by certificate only",
			"--control-listen needs --ca, --cert, --key and at least one "
			"--control-operator or --control-reader: TCP callers are "
			"known by certificate only");
	if (conf->control_port_file && !cfg->control_listen)
		return validate_error(conf, key_of("control", "port-file"), err, err_size,
				      "needs [control] listen",
				      "--control-port-file needs --control-listen");
	if (sync_source_spec_parse(cfg->sync_source, &spec, why, sizeof(why)) < 0)
		return validate_error(conf, key_of("clock", "sync-source"), err, err_size, why,
				      why);
	if (conf->metrics_port_file && !cfg->metrics_listen)
		return validate_error(conf, key_of("metrics", "port-file"), err, err_size,
				      "needs [metrics] listen",
				      "--metrics-port-file needs --metrics-listen");
	return 0;
}

int conf_where(const struct conf *conf, const char *section, const char *name, char *out,
	       size_t size)
{
	const struct conf_key *k = find_key(section, name);

	if (!k || (k->type != CONF_STRING && k->type != CONF_PATH))
		return -EINVAL;
	where(conf, k, out, size);
	return 0;
}

void conf_apply(const struct conf *new_conf, const struct conf *old_conf, struct vcd_config *live)
{
	const size_t base = offsetof(struct conf, config);
	const struct vcd_config was = *live;

	*live = new_conf->config;
	live->tls.allowed_peers = live->allowed_peers;
	if (!old_conf)
		return;
	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		const struct conf_key *k = &keys[i];
		size_t at = k->offset - base;
		const char *had, *loaded;

		if (!(k->flags & CONF_RESTART) || k->offset < base ||
		    k->offset >= base + sizeof(struct vcd_config))
			continue;
		memcpy(&had, (const char *)&was + at, sizeof(had));
		loaded = *(const char *const *)cfield_of(old_conf, k);
		/* Replaced after loading (socket activation's paths): the daemon's own. */
		if (had != loaded)
			memcpy((char *)live + at, &had, sizeof(had));
	}
}

/* ---- the wrapper that reads ---- */

static int read_file(const char *path, char **ret_text, size_t *ret_len, char *err, size_t err_size)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *text = NULL;
	char shown[SHOW_MAX * 4 + 8];
	struct stat st;
	size_t len = 0;

	show(shown, sizeof(shown), path);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = -errno;

		snprintf(err, err_size, "%s: cannot read: %s", shown, strerror(-r));
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, err_size, "%s: not a regular file", shown);
		return -EINVAL;
	}
	text = malloc(CONF_MAX_FILE_BYTES + 1);
	if (!text)
		return -ENOMEM;
	/* Read to the end rather than trust st_size: one byte past the cap tells it is too big. */
	for (;;) {
		ssize_t n = read(fd, text + len, CONF_MAX_FILE_BYTES + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;

			snprintf(err, err_size, "%s: cannot read: %s", shown, strerror(-r));
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CONF_MAX_FILE_BYTES) {
			snprintf(err, err_size, "%s: larger than %u bytes", shown,
				 CONF_MAX_FILE_BYTES);
			return -EFBIG;
		}
	}
	*ret_text = TAKE_PTR(text);
	*ret_len = len;
	return 0;
}

int conf_load(const char *path, int argc, char **argv, const struct conf_ops *ops,
	      struct conf **ret, char *err, size_t err_size)
{
	struct conf *conf = conf_new();
	_cleanup_free_ char *text = NULL;
	char host[256] = "";
	size_t len = 0;
	int r;

	if (!conf)
		return -ENOMEM;
	conf->path_explicit = path != NULL;
	conf->path = store_strdup(conf, path ? path : CONF_DEFAULT_PATH);
	conf->argc = argc;
	conf->argv = argv;
	if (!conf->path) {
		r = -ENOMEM;
		goto fail;
	}
	r = read_file(conf->path, &text, &len, err, err_size);
	conf->file_found = r == 0;
	if (r == -ENOENT && !conf->path_explicit)
		r = 0; /* no file: defaults and the command line */
	else if (r == 0)
		r = conf_parse(conf, conf->path, text, len, ops, err, err_size);
	if (r == 0)
		r = conf_apply_argv(conf, argc, argv, ops, err, err_size);
	if (r == 0) {
		(void)gethostname(host, sizeof(host) - 1);
		r = conf_finish(conf, getuid(), host);
	}
	if (r == 0)
		r = conf_validate(conf, err, err_size);
	if (r < 0)
		goto fail;
	*ret = conf;
	return 0;
fail:
	if (r == -ENOMEM)
		snprintf(err, err_size, "out of memory");
	conf_free(conf);
	return r;
}

/* ---- writing it out ---- */

/* s as conf_parse reads it back: plain where that is exact, else quoted with a quote s lacks
 * (a value that starts with a quote came from one and cannot hold that one). A list's word is
 * cut at blanks, a scalar at a comment. */
static void print_text(FILE *f, const char *s, bool word)
{
	size_t len = strlen(s);
	bool plain = len > 0 && !strchr("\"'#;", s[0]) && !is_blank(s[0]) && !is_blank(s[len - 1]);
	char quote;

	if (plain && !word) {
		char *copy = strdup(s);
		const char *reason;

		plain = copy && strip_comment(copy, &reason) == 0 && strcmp(copy, s) == 0;
		free(copy);
	}
	if (plain) {
		fputs(s, f);
		return;
	}
	quote = strchr(s, '"') ? '\'' : '"';
	fprintf(f, "%c%s%c", quote, s, quote);
}

static const char *enum_name(const struct conf_key *k, int value)
{
	for (const struct conf_enum_value *e = k->values; e->name; e++)
		if (e->value == value)
			return e->name;
	return "?";
}

/* The value as a file would give it; nothing for unset (NULL) or an empty list. */
static void print_value(FILE *f, const struct conf *conf, const struct conf_key *k)
{
	const void *p = cfield_of(conf, k);
	size_t n = is_list(k) ? ccount_of(conf, k) : 0;

	switch (k->type) {
	case CONF_STRING:
	case CONF_PATH:
		if (*(const char *const *)p)
			print_text(f, *(const char *const *)p, false);
		else if (k->flags & CONF_NONE)
			fputs("none", f);
		break;
	case CONF_U64:
		fprintf(f, "%" PRIu64, load_uint(p, k->size));
		break;
	case CONF_ENUM:
		fputs(enum_name(k, (int)load_uint(p, k->size)), f);
		break;
	case CONF_NAMES:
		for (size_t i = 0; i < n; i++) {
			if (i)
				fputc(' ', f);
			print_text(f, ((const char *const *)p)[i], true);
		}
		break;
	case CONF_IDS:
		for (size_t i = 0; i < n; i++)
			fprintf(f, "%s%" PRIu32, i ? " " : "", ((const uint32_t *)p)[i]);
		break;
	case CONF_BACKENDS:
		for (size_t i = 0; i < n; i++)
			fprintf(f, "%s%s", i ? " " : "",
				backend_kind_to_string(((const enum backend_kind *)p)[i]));
		break;
	}
}

static char *value_string(const struct conf *conf, const struct conf_key *k)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	if (!f)
		return NULL;
	print_value(f, conf, k);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

void conf_print(const struct conf *conf, FILE *f)
{
	fprintf(f, "# vcounterd's effective configuration: built-in defaults, then ");
	if (conf->path)
		fprintf(f, "%s%s, then the command line\n", conf->path,
			conf->path_explicit ? "" : " (if present)");
	else
		fprintf(f, "the command line\n");
	for (size_t s = 0; s < ELEMENTSOF(sections); s++) {
		fprintf(f, "\n[%s]\n", sections[s]);
		for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
			const struct conf_key *k = &keys[i];
			uint32_t origin = conf->origin[i];
			_cleanup_free_ char *v = NULL;

			if (strcmp(k->section, sections[s]) != 0)
				continue;
			v = value_string(conf, k);
			if (!v || !*v) {
				fprintf(f, "# %s is not set\n", k->name);
				continue;
			}
			fprintf(f, "%s = %s\t# ", k->name, v);
			if (origin == CONF_ORIGIN_ARGV)
				fprintf(f, "--%s\n", k->flag);
			else if (origin == CONF_ORIGIN_DEFAULT)
				fprintf(f, "default\n");
			else
				fprintf(f, "line %" PRIu32 "\n", origin);
		}
	}
}

int conf_diff(const struct conf *old_conf, const struct conf *new_conf, conf_diff_cb cb,
	      void *userdata)
{
	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		_cleanup_free_ char *a = value_string(old_conf, &keys[i]);
		_cleanup_free_ char *b = value_string(new_conf, &keys[i]);

		if (!a || !b)
			return -ENOMEM;
		if (strcmp(a, b) != 0)
			cb(keys[i].section, keys[i].name, keys[i].flags & CONF_RESTART, a, b,
			   userdata);
	}
	return 0;
}

int conf_keep_restart_settings(struct conf *new_conf, const struct conf *old_conf, conf_diff_cb cb,
			       void *userdata)
{
	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		const struct conf_key *k = &keys[i];
		const char *old_value, *new_value, *copy = NULL;

		if (!(k->flags & CONF_RESTART))
			continue;
		/* Only strings need a restart; a table entry that is not one is a bug. */
		assert(k->type == CONF_STRING || k->type == CONF_PATH);
		old_value = *(const char *const *)cfield_of(old_conf, k);
		new_value = *(const char *const *)cfield_of(new_conf, k);
		if (old_value == new_value ||
		    (old_value && new_value && strcmp(old_value, new_value) == 0))
			continue;
		if (old_value) {
			copy = store_strdup(new_conf, old_value);
			if (!copy)
				return -ENOMEM;
		}
		cb(k->section, k->name, true, old_value ? old_value : "",
		   new_value ? new_value : "", userdata);
		*(const char **)field_of(new_conf, k) = copy;
		new_conf->origin[i] = old_conf->origin[i];
	}
	return 0;
}

/* ---- the system's user database ---- */

static int system_user_id(const char *name, uint32_t *ret_uid)
{
	const struct passwd *pw = getpwnam(name);

	if (!pw)
		return -ENOENT;
	*ret_uid = pw->pw_uid;
	return 0;
}

static int system_group_id(const char *name, uint32_t *ret_gid)
{
	const struct group *gr = getgrnam(name);

	if (!gr)
		return -ENOENT;
	*ret_gid = gr->gr_gid;
	return 0;
}

const struct conf_ops conf_system_ops = {
	.user_id = system_user_id,
	.group_id = system_group_id,
};
