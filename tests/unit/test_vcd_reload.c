/* test_vcd_reload.c - a reload (daemon/reload.c) alone: the real
 * configuration parser, TLS contexts (certificates from tests/gen-certs.sh)
 * and sync sources, with the control API and the migrations faked here (the
 * linker takes these before libvcdaemon's), so that the test sees what a
 * reload hands them and can make the control API refuse. The daemon's own
 * reload, by SIGHUP and over live links, is test_reload's. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "conf.h"
#include "cleanup.h"
#include "control.h"
#include "daemon_harness.h"
#include "migration.h"
#include "reload.h"
#include "sync_source.h"
#include "tls.h"
#include "vcd.h"

static struct vcd vcd;
static char dir[256], conf_path[300], certs[256];

/* ---- fakes: the control API and the migrations ---- */

static struct {
	int reconfigured, tls_new, tls_changed;
	int refuse; /* control_reconfigure's answer, when < 0 */
	uint64_t limit_seen;
	bool had_control_tls;
} fake;

int control_tls_new(const struct vcd_config *cfg, SSL_CTX **ret, char *err, size_t err_size)
{
	fake.tls_new++;
	*ret = SSL_CTX_new(TLS_server_method());
	return *ret ? 0 : -ENOMEM;
}

int control_reconfigure(struct vcd *v, const struct vcd_config *cfg, SSL_CTX *tls, char *err,
			size_t err_size)
{
	assert_ptr_equal(v, &vcd);
	fake.reconfigured++;
	fake.limit_seen = cfg->error_bound_limit_ns;
	fake.had_control_tls = tls != NULL;
	if (fake.refuse < 0) {
		snprintf(err, err_size, "control API: refused by the test");
		return fake.refuse;
	}
	return 0;
}

void migrations_tls_changed(struct vcd *v)
{
	assert_ptr_equal(v, &vcd);
	fake.tls_changed++;
}

/* ---- helpers ---- */

static void write_conf(const char *text)
{
	FILE *f = fopen(conf_path, "we");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/* The daemon as the manager leaves it: the file loaded, applied. */
static void start(const char *text)
{
	/* The configuration keeps argv to read again, as main()'s lives on. */
	static char *argv[] = { "vcounterd", "--config", conf_path, NULL };
	char err[CONF_ERROR_MAX];
	struct conf *conf;

	write_conf(text);
	assert_int_equal(conf_load(conf_path, 3, argv, &conf_system_ops, &conf, err, sizeof(err)),
			 0);
	vcd.conf = conf;
	conf_apply(conf, NULL, &vcd.config);
	assert_int_equal(
		sync_source_open(vcd.base, vcd.config.sync_source, &vcd.sync, err, sizeof(err)), 0);
}

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	memset(&vcd, 0, sizeof(vcd));
	memset(&fake, 0, sizeof(fake));
	vcd.base = event_base_new();
	assert_non_null(vcd.base);
	snprintf(dir, sizeof(dir), "%s/vc-reload.XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(conf_path, sizeof(conf_path), "%s/vcounterd.conf", dir);
	return 0;
}

static int teardown(void **state)
{
	vcd.sync = sync_source_free(vcd.sync);
	vcd.tls_server = ssl_ctx_unref(vcd.tls_server);
	vcd.tls_client = ssl_ctx_unref(vcd.tls_client);
	vcd.conf = conf_free(vcd.conf);
	event_base_free(vcd.base);
	harness_remove_tree(dir);
	return 0;
}

/* ---- tests ---- */

static void test_a_good_file_is_swapped_in_whole(void **state)
{
	struct conf *before;

	start("[policy]\nerror-bound-limit-ns = 1000000\n[clock]\nsync-source = fixed:1000\n");
	before = vcd.conf;
	assert_int_equal(vcd.config.error_bound_limit_ns, 1000000);

	write_conf("[policy]\nerror-bound-limit-ns = 2500000\nerror-bound-policy = refuse\n"
		   "[clock]\nsync-source = fixed:2000\n");
	assert_int_equal(vcd_reload(&vcd), 0);
	/* The control API saw the new settings before they were in effect;
	 * the peer link heard of new TLS contexts. */
	assert_int_equal(fake.reconfigured, 1);
	assert_true(fake.limit_seen == 2500000);
	assert_false(fake.had_control_tls);
	assert_int_equal(fake.tls_changed, 1);
	assert_true(vcd.config.error_bound_limit_ns == 2500000);
	assert_true(vcd.config.error_bound_refuse);
	assert_ptr_not_equal(vcd.conf, before);
	assert_string_equal(sync_source_spec(vcd.sync)->text, "fixed (2000 ns)");
}

static void test_a_bad_file_changes_nothing(void **state)
{
	struct conf *before;
	struct sync_source *sync;

	start("[policy]\nerror-bound-limit-ns = 1000000\n[clock]\nsync-source = fixed:1000\n");
	before = vcd.conf;
	sync = vcd.sync;
	/* A key nobody knows, a value out of range, a sync source that is not
	 * one: each refused, the old configuration whole. */
	write_conf("[policy]\nerror-bound-limit-ns = 2500000\nno-such-key = 1\n");
	assert_true(vcd_reload(&vcd) < 0);
	write_conf("[policy]\nerror-bound-limit-ns = -1\n");
	assert_true(vcd_reload(&vcd) < 0);
	write_conf("[clock]\nsync-source = sundial\n");
	assert_true(vcd_reload(&vcd) < 0);
	assert_int_equal(fake.reconfigured, 0);
	assert_int_equal(fake.tls_changed, 0);
	assert_ptr_equal(vcd.conf, before);
	assert_ptr_equal(vcd.sync, sync);
	assert_true(vcd.config.error_bound_limit_ns == 1000000);
}

static void test_the_control_api_refusing_keeps_the_old_configuration(void **state)
{
	struct conf *before;

	start("[policy]\nerror-bound-limit-ns = 1000000\n");
	before = vcd.conf;
	write_conf("[policy]\nerror-bound-limit-ns = 2500000\n");
	fake.refuse = -EINVAL;
	assert_int_equal(vcd_reload(&vcd), -EINVAL);
	assert_int_equal(fake.reconfigured, 1);
	assert_int_equal(fake.tls_changed, 0);
	assert_ptr_equal(vcd.conf, before);
	assert_true(vcd.config.error_bound_limit_ns == 1000000);
	/* And once it agrees, the same file goes in. */
	fake.refuse = 0;
	assert_int_equal(vcd_reload(&vcd), 0);
	assert_true(vcd.config.error_bound_limit_ns == 2500000);
}

static void test_settings_that_need_a_restart_keep_their_values(void **state)
{
	char text[1024], other[320];

	snprintf(text, sizeof(text), "[vmm]\nsocket = %s/vmm.sock\n[policy]\nmax-elapsed-ns = 5\n",
		 dir);
	start(text);
	snprintf(other, sizeof(other), "%s/elsewhere.sock", dir);
	snprintf(text, sizeof(text), "[vmm]\nsocket = %s\n[policy]\nmax-elapsed-ns = 7\n", other);
	write_conf(text);
	assert_int_equal(vcd_reload(&vcd), 0);
	assert_true(strstr(vcd.config.vmm_socket, "/vmm.sock") != NULL);
	assert_true(vcd.config.max_abs_elapsed_ns == 7);
}

static void test_certificates_are_checked_before_anything_changes(void **state)
{
	char text[2048], ca[300], cert[300], key[300], other_key[300];
	SSL_CTX *server;

	if (harness_certs(certs, sizeof(certs)) < 0)
		fail_msg("cannot make test certificates (VC_TEST_CERTS unset?)");
	harness_cert_path(ca, sizeof(ca), certs, "ca", "pem");
	harness_cert_path(cert, sizeof(cert), certs, "host-a", "pem");
	harness_cert_path(key, sizeof(key), certs, "host-a", "key");
	harness_cert_path(other_key, sizeof(other_key), certs, "host-b", "key");
	snprintf(text, sizeof(text),
		 "[daemon]\nhost-name = host-a.test\n[peer]\nca = %s\ncert = %s\nkey = %s\n"
		 "allow-peer = host-b.test\n",
		 ca, cert, key);
	start(text);
	assert_int_equal(vcd_check_tls(vcd.conf, text, sizeof(text)), 0);
	/* The manager's contexts, as reload swaps them. */
	assert_int_equal(tls_ctx_new(&vcd.config.tls, true, &vcd.tls_server, text, sizeof(text)),
			 0);
	server = vcd.tls_server;

	/* Another host's key with this certificate: refused, naming the key. */
	snprintf(text, sizeof(text),
		 "[daemon]\nhost-name = host-a.test\n[peer]\nca = %s\ncert = %s\nkey = %s\n"
		 "allow-peer = host-b.test\n",
		 ca, cert, other_key);
	write_conf(text);
	assert_true(vcd_reload(&vcd) < 0);
	assert_ptr_equal(vcd.tls_server, server);
	assert_int_equal(fake.tls_changed, 0);

	/* The right key again, a new peer allowed: new contexts. */
	snprintf(text, sizeof(text),
		 "[daemon]\nhost-name = host-a.test\n[peer]\nca = %s\ncert = %s\nkey = %s\n"
		 "allow-peer = host-b.test host-c.test\n",
		 ca, cert, key);
	write_conf(text);
	assert_int_equal(vcd_reload(&vcd), 0);
	assert_ptr_not_equal(vcd.tls_server, server);
	assert_non_null(vcd.tls_client);
	assert_int_equal(fake.tls_changed, 1);
	harness_remove_tree(certs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_a_good_file_is_swapped_in_whole, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_bad_file_changes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_the_control_api_refusing_keeps_the_old_configuration, setup, teardown),
		cmocka_unit_test_setup_teardown(test_settings_that_need_a_restart_keep_their_values,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_certificates_are_checked_before_anything_changes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
