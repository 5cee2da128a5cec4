/* reload.c - a new configuration for a running vcounterd (SIGHUP, systemctl reload): the file
 * and the command line are read again and all of it is checked, TLS contexts included, before
 * anything changes; then it is swapped in at once, or the old one stays whole. Registered VMs,
 * links and migrations are never touched: what changes applies from the next connection,
 * registration or migration step on. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/ssl.h>

#include "cleanup.h"
#include "conf.h"
#include "control.h"
#include "log.h"
#include "macro.h"
#include "migration.h"
#include "reload.h"
#include "sync_source.h"
#include "tls.h"
#include "vcd.h"

struct vcd_tls {
	SSL_CTX *server;  /* peer link, incoming */
	SSL_CTX *client;  /* peer link, outgoing */
	SSL_CTX *control; /* the control API's TCP listener */
};

static void vcd_tls_done(struct vcd_tls *t)
{
	t->server = ssl_ctx_unref(t->server);
	t->client = ssl_ctx_unref(t->client);
	t->control = ssl_ctx_unref(t->control);
	*t = (struct vcd_tls){ 0 };
}

/* tls_ctx_new names the file it could not use: say which key set it, and where. */
static void tls_error(const struct conf *conf, const char *why, char *err, size_t err_size)
{
	static const char *const names[] = { "ca", "cert", "key" };
	const struct tls_config *t = &conf->config.tls;
	const char *files[] = { t->ca_file, t->cert_file, t->key_file };
	const char *name = NULL;
	size_t best = 0;
	char at[CONF_ERROR_MAX];

	/* The longest path found in the message (one may be a prefix of another). */
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		if (files[i] && strstr(why, files[i]) && strlen(files[i]) > best) {
			best = strlen(files[i]);
			name = names[i];
		}
	}
	if (name && conf_where(conf, "peer", name, at, sizeof(at)) == 0)
		snprintf(err, err_size, "%s: %s", at, why);
	else
		snprintf(err, err_size, "TLS: %s", why);
}

/* The contexts conf's configuration asks for (none without ca, cert and key; conf_validate
 * made sure they come together), all or none. */
static int vcd_tls_new(const struct conf *conf, struct vcd_tls *ret, char *err, size_t err_size)
{
	const struct vcd_config *cfg = &conf->config;
	struct vcd_tls t = { 0 };
	char why[512];
	int r;

	if (!cfg->tls.ca_file) {
		*ret = t;
		return 0;
	}
	r = tls_ctx_new(&cfg->tls, true, &t.server, why, sizeof(why));
	if (r == 0)
		r = tls_ctx_new(&cfg->tls, false, &t.client, why, sizeof(why));
	/* A certificate no peer would accept (another CA, expired) is refused here, at start and
	 * on reload, while the previous one still serves; the control listener's context is
	 * made from the same files. */
	if (r == 0)
		r = tls_ctx_check_own_certificate(&cfg->tls, t.server, true, why, sizeof(why));
	if (r == 0)
		r = tls_ctx_check_own_certificate(&cfg->tls, t.client, false, why, sizeof(why));
	if (r == 0 && cfg->control_listen)
		r = control_tls_new(cfg, &t.control, why, sizeof(why));
	if (r < 0) {
		tls_error(conf, why, err, err_size);
		vcd_tls_done(&t);
		return r;
	}
	*ret = t;
	return 0;
}

int vcd_check_tls(const struct conf *conf, char *err, size_t err_size)
{
	struct vcd_tls t;
	int r = vcd_tls_new(conf, &t, err, err_size);

	if (r == 0)
		vcd_tls_done(&t);
	return r;
}

static void restart_needed(const char *section, const char *key, bool needs_restart,
			   const char *old_value, const char *new_value, void *userdata)
{
	log_warning("reload: [%s] %s changed from '%s' to '%s': that takes a restart; keeping "
		    "'%s'",
		    section, key, old_value, new_value, old_value);
}

static void changed(const char *section, const char *key, bool needs_restart, const char *old_value,
		    const char *new_value, void *userdata)
{
	(*(unsigned *)userdata)++;
	log_info("reload: [%s] %s = '%s' (was '%s')", section, key, new_value, old_value);
}

int vcd_reload(struct vcd *vcd)
{
	struct conf *old_conf = vcd->conf, *conf = NULL;
	struct sync_source *sync = NULL;
	struct vcd_tls tls = { 0 };
	char err[CONF_ERROR_MAX];
	unsigned n_changed = 0;
	int r;

	if (!old_conf)
		return log_error_errno(-ENOENT, "reload: no configuration to reload");
	/* A default file that was there and is gone now is an accident, not "use the defaults". */
	r = conf_load(old_conf->path_explicit || old_conf->file_found ? old_conf->path : NULL,
		      old_conf->argc, old_conf->argv, &conf_system_ops, &conf, err, sizeof(err));
	if (r < 0)
		goto fail;
	conf->path_explicit = old_conf->path_explicit;
	r = conf_keep_restart_settings(conf, old_conf, restart_needed, NULL);
	if (r < 0) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	/* Again: the kept values must go with the new ones (a peer link stays, so TLS must). */
	r = conf_validate(conf, err, sizeof(err));
	if (r < 0)
		goto fail;
	r = vcd_tls_new(conf, &tls, err, sizeof(err));
	if (r < 0)
		goto fail;
	/* A new sync source only when it changed: chrony's readings carry over. */
	if (strcmp(conf->config.sync_source, vcd->config.sync_source) != 0) {
		r = sync_source_open(vcd->base, conf->config.sync_source, &sync, err, sizeof(err));
		if (r < 0)
			goto fail;
	}
	/* The last step that can fail; it changes nothing when it does. */
	r = control_reconfigure(vcd, &conf->config, tls.control, err, sizeof(err));
	if (r < 0)
		goto fail;

	/* From here nothing fails: the new configuration, all at once. */
	r = conf_diff(old_conf, conf, changed, &n_changed);
	if (r < 0)
		log_warning("reload: cannot list the changes (out of memory)");
	ssl_ctx_unref(vcd->tls_server);
	ssl_ctx_unref(vcd->tls_client);
	vcd->tls_server = TAKE_PTR(tls.server);
	vcd->tls_client = TAKE_PTR(tls.client);
	migrations_tls_changed(vcd);
	if (sync) {
		sync_source_free(vcd->sync);
		vcd->sync = TAKE_PTR(sync);
	}
	conf_apply(conf, old_conf, &vcd->config);
	log_set_target(conf->log_target);
	log_setup(conf->log_level);
	vcd->conf = conf;
	conf_free(old_conf);
	vcd_tls_done(&tls); /* the control server took its own reference */
	log_info_id(LOG_MESSAGE_CONFIG_RELOADED,
		    "reload: configuration %s%s applied, %u setting%s changed", vcd->conf->path,
		    vcd->conf->path_explicit ? "" : " (if present) and the command line", n_changed,
		    n_changed == 1 ? "" : "s");
	return 0;

fail:
	sync_source_free(sync);
	vcd_tls_done(&tls);
	conf_free(conf);
	log_error("reload: %s; keeping the previous configuration", err);
	return r;
}
