/* conf.h - vcounterd's settings: /etc/vcounterd/vcounterd.conf (INI: [section] and
 * key = value lines) and the command line, both through one table of every setting
 * (conf.c, after linuxptp's config.c). The parser is pure: text in, a checked
 * struct conf out; conf_load() is the thin wrapper that reads the file and argv. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "vcd_config.h"

#define CONF_DEFAULT_PATH   "/etc/vcounterd/vcounterd.conf"
#define CONF_MAX_LINE_BYTES 4096       /* one line, without its newline */
#define CONF_MAX_FILE_BYTES (1u << 20) /* a settings file, not a database */
#define CONF_MAX_KEYS	    40	       /* entries of the table (checked in conf.c) */
#define CONF_ERROR_MAX	    1024       /* err buffers: one line, with the file name */

/* Where a key's value came from (conf->origin[]). */
#define CONF_ORIGIN_DEFAULT 0u
#define CONF_ORIGIN_ARGV    UINT32_MAX /* else: the file's line number */

struct conf_string; /* the store: every string a struct conf points to */

/* Everything the file and the command line decide. Every string (those in
 * config included) belongs to the conf and is freed with it, as a whole. */
struct conf {
	struct vcd_config config;
	const char *port_file;	       /* [peer] port-file, --port-file */
	const char *control_port_file; /* [control] port-file, --control-port-file */
	const char *metrics_port_file; /* [metrics] port-file, --metrics-port-file */
	int log_level;		       /* LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
	int log_target;		       /* enum log_target (log.h) */

	/* What it was read from, for a reload: the file (NULL: none) and
	 * whether it was named (--config; a missing default file is fine), and
	 * argv (the caller's, never copied: main()'s lives long enough). */
	const char *path;
	bool path_explicit;
	bool file_found; /* path was there and read */
	int argc;
	char **argv;

	uint32_t origin[CONF_MAX_KEYS]; /* per table entry: CONF_ORIGIN_* or a line */
	struct conf_string *strings;
};

/* Name lookups (getpwnam/getgrnam), passed in so that the parser stays pure
 * and tests can fake the user database. 0 or -ENOENT. */
struct conf_ops {
	int (*user_id)(const char *name, uint32_t *ret_uid);
	int (*group_id)(const char *name, uint32_t *ret_gid);
};
extern const struct conf_ops conf_system_ops;

/* A conf holding the built-in defaults (the table's). NULL: out of memory. */
struct conf *conf_new(void);
/* Frees the conf and every string it holds. NULL ok; returns NULL. */
struct conf *conf_free(struct conf *conf);

/* Parse a configuration file's text on top of conf. file_name names it in
 * messages. 0, or -EINVAL (-E2BIG too many values, -ENOMEM) with
 * "FILE:LINE: key 'k' = 'v': reason" (or "FILE:LINE: reason" for a line
 * that has no key) in err. conf is then partly changed: throw it away. */
int conf_parse(struct conf *conf, const char *file_name, const char *text, size_t len,
	       const struct conf_ops *ops, char *err, size_t err_size);

/* The command line's own options, which are no setting. */
struct conf_cmdline {
	const char *config_path; /* --config FILE; NULL: CONF_DEFAULT_PATH */
	bool check_config;	 /* --check-config */
	bool help;		 /* --help, -h */
	bool version;		 /* --version */
};

/* Scan argv (argv[0] is the program): every option known, with its value
 * where it takes one ("--name VALUE" or "--name=VALUE"), no other argument.
 * Applies nothing. 0, or -EINVAL with a sentence in err. */
int conf_parse_cmdline(int argc, char *const *argv, struct conf_cmdline *ret, char *err,
		       size_t err_size);

/* Apply argv's settings on top of conf (after the file: flags win). A list
 * given on the command line replaces the file's list; a scalar given twice
 * takes the last. 0, or -EINVAL/-E2BIG/-ENOMEM with "--flag 'v': reason"
 * in err. */
int conf_apply_argv(struct conf *conf, int argc, char *const *argv, const struct conf_ops *ops,
		    char *err, size_t err_size);

/* Fill in what has no fixed default: the VMM socket's allowed uids (root
 * and self_uid) when none was given, the host name (host_name) when unset. */
int conf_finish(struct conf *conf, uid_t self_uid, const char *host_name);

/* The checks across settings ([peer] listen needs ca, cert and key, ...).
 * 0, or -EINVAL with a sentence naming where the keys were set in err. */
int conf_validate(const struct conf *conf, char *err, size_t err_size);

/* "FILE:LINE: key 'cert' = '/etc/x.pem'" (or "--cert '/etc/x.pem'", or
 * "[peer] cert '...'" for a default): where a string-valued key's value came
 * from, for messages about it found later (a certificate that does not
 * load). -EINVAL for a key that is no string. */
int conf_where(const struct conf *conf, const char *section, const char *name, char *out,
	       size_t size);

/* The whole of it, as a daemon starts or reloads: defaults, the file (path;
 * NULL: CONF_DEFAULT_PATH, and then a missing file is fine), argv, finish
 * (getuid(), gethostname()), validate. 0 and *ret, or -errno with the reason
 * in err (nothing allocated). */
int conf_load(const char *path, int argc, char **argv, const struct conf_ops *ops,
	      struct conf **ret, char *err, size_t err_size);

/* The effective configuration as a file conf_parse() reads back: every key
 * with a comment saying where its value came from ("# default", "# line 7",
 * "# --allow-peer"), unset ones commented out. */
void conf_print(const struct conf *conf, FILE *f);

/* Called for each key whose effective value differs between two confs.
 * Values are as conf_print writes them ("" for unset). */
typedef void (*conf_diff_cb)(const char *section, const char *key, bool needs_restart,
			     const char *old_value, const char *new_value, void *userdata);
/* Report every key that differs. 0 or -ENOMEM. */
int conf_diff(const struct conf *old_conf, const struct conf *new_conf, conf_diff_cb cb,
	      void *userdata);
/* Make live (the daemon's vcd->config) new_conf's configuration. Values the
 * daemon replaced after loading old_conf (live differs from old_conf:
 * socket activation's socket paths) stay live's: they need a restart
 * anyway. old_conf NULL: at start-up. */
void conf_apply(const struct conf *new_conf, const struct conf *old_conf, struct vcd_config *live);

/* Settings a running daemon cannot change (sockets, listen addresses, host
 * name, port files) that differ in new_conf get old_conf's value back, cb
 * told of each. 0 or -ENOMEM. */
int conf_keep_restart_settings(struct conf *new_conf, const struct conf *old_conf, conf_diff_cb cb,
			       void *userdata);
