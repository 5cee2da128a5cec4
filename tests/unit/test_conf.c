/* test_conf.c - vcounterd.conf and the command line through conf.c's table: every key lands in
 * its field, every error names file, line, key and value exactly, flags override the file, and
 * random text never crashes the parser. */
#include <errno.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "macro.h"

#define FILE_NAME "/etc/vcounterd/test.conf"

/* A user database of our own: the tests must not depend on the host's. */
static int fake_user_id(const char *name, uint32_t *ret)
{
	if (strcmp(name, "alice") == 0) {
		*ret = 1001;
		return 0;
	}
	if (strcmp(name, "root") == 0) {
		*ret = 0;
		return 0;
	}
	return -ENOENT;
}

static int fake_group_id(const char *name, uint32_t *ret)
{
	if (strcmp(name, "kvm") == 0) {
		*ret = 106;
		return 0;
	}
	return -ENOENT;
}

static const struct conf_ops fake_ops = {
	.user_id = fake_user_id,
	.group_id = fake_group_id,
};

static char err[CONF_ERROR_MAX];

/* Parse text into a fresh conf: 0 and *ret, or the error (err holds the message). */
static int parse(const char *text, struct conf **ret)
{
	struct conf *conf = conf_new();
	int r;

	assert_non_null(conf);
	err[0] = '\0';
	r = conf_parse(conf, FILE_NAME, text, strlen(text), &fake_ops, err, sizeof(err));
	if (r < 0) {
		conf_free(conf);
		*ret = NULL;
		return r;
	}
	*ret = conf;
	return 0;
}

static struct conf *parse_ok(const char *text)
{
	struct conf *conf;

	if (parse(text, &conf) < 0)
		fail_msg("unexpected error: %s", err);
	return conf;
}

/* The text fails with exactly this message. */
static void parse_fails(const char *text, const char *message)
{
	struct conf *conf;

	assert_true(parse(text, &conf) < 0);
	assert_string_equal(err, message);
}

static void count_diff(const char *section, const char *key, bool needs_restart,
		       const char *old_value, const char *new_value, void *userdata)
{
	(*(int *)userdata)++;
	fprintf(stderr, "differs: [%s] %s: '%s' -> '%s'\n", section, key, old_value, new_value);
}

/* ---- every key ---- */

static void test_defaults_are_the_documented_ones(void **state)
{
	struct conf *conf = conf_new();
	const struct vcd_config *c = &conf->config;

	assert_string_equal(c->vmm_socket, "/run/vcounterd/vmm.sock");
	assert_string_equal(c->control_socket, "/run/vcounterd/control.sock");
	assert_null(c->listen_addr);
	assert_null(c->control_listen);
	assert_null(c->host_name);
	assert_null(c->tls.ca_file);
	assert_null(c->tls.cert_file);
	assert_null(c->tls.key_file);
	assert_null(conf->port_file);
	assert_null(conf->control_port_file);
	assert_null(c->metrics_listen);
	assert_null(conf->metrics_port_file);
	assert_int_equal(conf->log_level, LOG_INFO);
	assert_int_equal(c->error_bound_limit_ns, 1000000);
	assert_false(c->error_bound_refuse);
	assert_int_equal(c->max_abs_elapsed_ns, UINT64_C(3600000000000));
	assert_int_equal(c->tsc_tolerance_ppm, 250);
	assert_int_equal(c->kvm_op_timeout_ms, 10000);
	assert_int_equal(c->peer_timeout_ms, 30000);
	assert_int_equal(c->max_vms, VCD_MAX_VMS);
	assert_int_equal(c->max_vmm_conns, VCD_MAX_VMM_CONNS);
	assert_int_equal(c->max_migrations, VCD_MAX_MIGRATIONS);
	assert_int_equal(c->max_watchers, VCD_MAX_WATCHERS);
	assert_int_equal(c->n_backends, 0);
	assert_int_equal(c->n_allowed_uids, 0);
	assert_int_equal(c->tls.n_allowed_peers, 0);
	assert_ptr_equal(c->tls.allowed_peers, c->allowed_peers);
	for (size_t i = 0; i < CONF_MAX_KEYS; i++)
		assert_int_equal(conf->origin[i], CONF_ORIGIN_DEFAULT);
	conf_free(conf);
}

static const char every_key[] = "[daemon]\n"
				"host-name = host-b.test\n"
				"log-level = debug\n"
				"backends = kvm-x86 kvm-syscounter\n"
				"[vmm]\n"
				"socket = /run/v/vmm.sock\n"
				"allow-uid = 0 alice 4294967294\n"
				"allow-gid = kvm 7\n"
				"[peer]\n"
				"listen = 0.0.0.0:7420\n"
				"port-file = /run/v/port\n"
				"ca = /etc/v/ca.pem\n"
				"cert = /etc/v/host-b.pem\n"
				"key = /etc/v/host-b.key\n"
				"allow-peer = host-a.test spiffe://fleet.test/host-u\n"
				"timeout-ms = 1234\n"
				"[control]\n"
				"socket = /run/v/control.sock\n"
				"listen = [::1]:7430\n"
				"port-file = /run/v/control-port\n"
				"operator = ctl-operator.test\n"
				"reader = ctl-reader.test ctl-reader2.test\n"
				"operator-uid = 1001\n"
				"operator-gid = kvm\n"
				"reader-uid = alice 5\n"
				"reader-gid = 9\n"
				"[policy]\n"
				"error-bound-limit-ns = 2500000\n"
				"error-bound-policy = refuse\n"
				"max-elapsed-ns = 60000000000\n"
				"tsc-tolerance-ppm = 0\n"
				"kvm-op-timeout-ms = 500\n"
				"[metrics]\n"
				"listen = 9100\n"
				"port-file = /run/v/metrics-port\n";

static void test_every_key_parses_into_its_field(void **state)
{
	struct conf *conf = parse_ok(every_key);
	const struct vcd_config *c = &conf->config;

	assert_string_equal(c->host_name, "host-b.test");
	assert_int_equal(conf->log_level, LOG_DEBUG);
	assert_int_equal(c->n_backends, 2);
	assert_int_equal(c->backends[0], BACKEND_KVM_X86);
	assert_int_equal(c->backends[1], BACKEND_KVM_SYSCOUNTER);

	assert_string_equal(c->vmm_socket, "/run/v/vmm.sock");
	assert_int_equal(c->n_allowed_uids, 3);
	assert_int_equal(c->allowed_uids[0], 0);
	assert_int_equal(c->allowed_uids[1], 1001);
	assert_int_equal(c->allowed_uids[2], 4294967294u);
	assert_int_equal(c->n_allowed_gids, 2);
	assert_int_equal(c->allowed_gids[0], 106);
	assert_int_equal(c->allowed_gids[1], 7);

	assert_string_equal(c->listen_addr, "0.0.0.0:7420");
	assert_string_equal(conf->port_file, "/run/v/port");
	assert_string_equal(c->tls.ca_file, "/etc/v/ca.pem");
	assert_string_equal(c->tls.cert_file, "/etc/v/host-b.pem");
	assert_string_equal(c->tls.key_file, "/etc/v/host-b.key");
	assert_int_equal(c->tls.n_allowed_peers, 2);
	assert_ptr_equal(c->tls.allowed_peers, c->allowed_peers);
	assert_string_equal(c->allowed_peers[0], "host-a.test");
	assert_string_equal(c->allowed_peers[1], "spiffe://fleet.test/host-u");
	assert_int_equal(c->peer_timeout_ms, 1234);

	assert_string_equal(c->control_socket, "/run/v/control.sock");
	assert_string_equal(c->control_listen, "[::1]:7430");
	assert_string_equal(conf->control_port_file, "/run/v/control-port");
	assert_int_equal(c->n_control_operators, 1);
	assert_string_equal(c->control_operators[0], "ctl-operator.test");
	assert_int_equal(c->n_control_readers, 2);
	assert_string_equal(c->control_readers[0], "ctl-reader.test");
	assert_string_equal(c->control_readers[1], "ctl-reader2.test");
	assert_int_equal(c->n_control_operator_uids, 1);
	assert_int_equal(c->control_operator_uids[0], 1001);
	assert_int_equal(c->n_control_operator_gids, 1);
	assert_int_equal(c->control_operator_gids[0], 106);
	assert_int_equal(c->n_control_reader_uids, 2);
	assert_int_equal(c->control_reader_uids[0], 1001);
	assert_int_equal(c->control_reader_uids[1], 5);
	assert_int_equal(c->n_control_reader_gids, 1);
	assert_int_equal(c->control_reader_gids[0], 9);

	assert_int_equal(c->error_bound_limit_ns, 2500000);
	assert_true(c->error_bound_refuse);
	assert_int_equal(c->max_abs_elapsed_ns, UINT64_C(60000000000));
	assert_int_equal(c->tsc_tolerance_ppm, 0);
	assert_int_equal(c->kvm_op_timeout_ms, 500);

	assert_string_equal(c->metrics_listen, "9100");
	assert_string_equal(conf->metrics_port_file, "/run/v/metrics-port");
	assert_int_equal(conf_validate(conf, err, sizeof(err)), 0);
	conf_free(conf);
}

static void test_origin_is_the_line_that_set_the_key(void **state)
{
	struct conf *conf = parse_ok("[policy]\n"
				     "\n"
				     "error-bound-policy = refuse\n"
				     "[peer]\n"
				     "listen = 127.0.0.1:1\n");

	/* Through conf_validate's message, which names the line. */
	assert_int_equal(conf_validate(conf, err, sizeof(err)), -EINVAL);
	assert_string_equal(err,
			    "(config):5: key 'listen' = '127.0.0.1:1': needs ca, cert and key: "
			    "the peer link is mutual TLS only");
	conf_free(conf);
}

static void test_none_unsets_the_sockets_and_listen_addresses(void **state)
{
	struct conf *conf = parse_ok("[control]\nsocket = none\nlisten = none\n"
				     "[peer]\nlisten = none\n");

	assert_null(conf->config.control_socket);
	assert_null(conf->config.control_listen);
	assert_null(conf->config.listen_addr);
	conf_free(conf);
	/* Not where the table does not say so: a VMM socket is required. */
	conf = parse_ok("[vmm]\nsocket = none\n");
	assert_string_equal(conf->config.vmm_socket, "none");
	conf_free(conf);
}

/* ---- errors: file, line, key, value, reason ---- */

static void test_unknown_section_is_an_error(void **state)
{
	parse_fails("[daemon]\nlog-level = info\n[deamon]\n",
		    FILE_NAME ":3: section '[deamon]': unknown section (daemon, vmm, peer, "
			      "control, policy, metrics)");
}

static void test_unknown_key_is_an_error(void **state)
{
	parse_fails("[peer]\nallow-peers = host-a.test\n",
		    FILE_NAME ":2: key 'allow-peers' = 'host-a.test': unknown key in [peer]");
	/* A key of another section is unknown here. */
	parse_fails("[vmm]\nlisten = 0.0.0.0:1\n",
		    FILE_NAME ":2: key 'listen' = '0.0.0.0:1': unknown key in [vmm]");
	/* Keys are case-sensitive, as the flags are. */
	parse_fails("[daemon]\nLog-Level = info\n",
		    FILE_NAME ":2: key 'Log-Level' = 'info': unknown key in [daemon]");
}

static void test_key_outside_any_section_is_an_error(void **state)
{
	parse_fails("# no section yet\nlog-level = info\n",
		    FILE_NAME ":2: key 'log-level' = 'info': outside any section (a [section] "
			      "line comes first)");
}

static void test_line_without_equals_is_an_error(void **state)
{
	parse_fails("[daemon]\nlog-level info\n",
		    FILE_NAME ":2: 'log-level info': missing '=' (key = value)");
	parse_fails("[daemon]\n = info\n", FILE_NAME ":2: key '' = 'info': empty key");
}

static void test_bad_values_are_errors(void **state)
{
	parse_fails("[policy]\ntsc-tolerance-ppm = 12ppm\n",
		    FILE_NAME ":2: key 'tsc-tolerance-ppm' = '12ppm': not a decimal number "
			      "(0..10000)");
	parse_fails("[policy]\ntsc-tolerance-ppm = -1\n",
		    FILE_NAME ":2: key 'tsc-tolerance-ppm' = '-1': not a decimal number "
			      "(0..10000)");
	parse_fails("[policy]\nerror-bound-policy = reject\n",
		    FILE_NAME ":2: key 'error-bound-policy' = 'reject': not one of warn, refuse");
	parse_fails("[daemon]\nlog-level = verbose\n",
		    FILE_NAME ":2: key 'log-level' = 'verbose': not one of error, warning, info, "
			      "debug");
	parse_fails("[daemon]\nbackends = kvm-arm64\n",
		    FILE_NAME ":2: key 'backends' = 'kvm-arm64': 'kvm-arm64' is not a backend of "
			      "this build (kvm-syscounter, kvm-x86)");
	parse_fails("[daemon]\nbackends = ,\n",
		    FILE_NAME ":2: key 'backends' = ',': needs at least one backend");
	parse_fails("[daemon]\nbackends = kvm-x86,kvm-x86\n",
		    FILE_NAME ":2: key 'backends' = 'kvm-x86,kvm-x86': 'kvm-x86' twice");
	parse_fails("[vmm]\nallow-uid = 0 bob\n",
		    FILE_NAME ":2: key 'allow-uid' = '0 bob': no such user 'bob'");
	parse_fails("[vmm]\nallow-gid = wheel\n",
		    FILE_NAME ":2: key 'allow-gid' = 'wheel': no such group 'wheel'");
	parse_fails("[vmm]\nallow-uid = 4294967295\n",
		    FILE_NAME ":2: key 'allow-uid' = '4294967295': out of range (0..4294967294)");
	parse_fails("[peer]\nallow-peer = \"host a.test\"\n",
		    FILE_NAME ":2: key 'allow-peer' = '\"host a.test\"': contains a space or a "
			      "byte that is not ASCII");
	parse_fails("[peer]\nca = /etc/\x01"
		    "ca.pem\n",
		    FILE_NAME ":2: key 'ca' = '/etc/\\x01ca.pem': contains a control character");
	parse_fails("[vmm]\nsocket = /run/"
		    "0123456789012345678901234567890123456789012345678901234567890123456789"
		    "0123456789012345678901234567890123456789/vmm.sock\n",
		    FILE_NAME
		    ":2: key 'socket' = '/run/"
		    "0123456789012345678901234567890123456789012345678901234567890123456789"
		    "0123456789012345678901234567890123456789/vmm.sock': longer than 107 "
		    "bytes");
	parse_fails("[daemon]\nhost-name =\n", FILE_NAME ":2: key 'host-name' = '': empty value");
	parse_fails("[daemon]\nhost-name = # only a comment\n",
		    FILE_NAME ":2: key 'host-name' = '': empty value");
	parse_fails("[peer]\nallow-peer = a.test \"\"\n",
		    FILE_NAME ":2: key 'allow-peer' = 'a.test \"\"': empty value");
}

static void test_numbers_at_and_beyond_their_limits(void **state)
{
	struct conf *conf;

	conf = parse_ok("[policy]\ntsc-tolerance-ppm = 10000\nkvm-op-timeout-ms = 1\n"
			"[peer]\ntimeout-ms = 3600000\n");
	assert_int_equal(conf->config.tsc_tolerance_ppm, 10000);
	assert_int_equal(conf->config.kvm_op_timeout_ms, 1);
	assert_int_equal(conf->config.peer_timeout_ms, 3600000);
	conf_free(conf);
	conf = parse_ok("[policy]\nerror-bound-limit-ns = 18446744073709551615\n"
			"max-elapsed-ns = 0\n");
	assert_int_equal(conf->config.error_bound_limit_ns, UINT64_MAX);
	assert_int_equal(conf->config.max_abs_elapsed_ns, 0);
	conf_free(conf);
	/* Leading zeros are still decimal. */
	conf = parse_ok("[policy]\nkvm-op-timeout-ms = 0010\n");
	assert_int_equal(conf->config.kvm_op_timeout_ms, 10);
	conf_free(conf);

	parse_fails("[policy]\ntsc-tolerance-ppm = 10001\n",
		    FILE_NAME ":2: key 'tsc-tolerance-ppm' = '10001': out of range (0..10000)");
	parse_fails("[policy]\nkvm-op-timeout-ms = 0\n",
		    FILE_NAME ":2: key 'kvm-op-timeout-ms' = '0': out of range (1..3600000)");
	parse_fails("[peer]\ntimeout-ms = 3600001\n",
		    FILE_NAME ":2: key 'timeout-ms' = '3600001': out of range (1..3600000)");
	parse_fails("[policy]\nerror-bound-limit-ns = 18446744073709551616\n",
		    FILE_NAME ":2: key 'error-bound-limit-ns' = '18446744073709551616': out of "
			      "range (0..18446744073709551615)");
	/* Past 32 bits in a 32-bit field: caught by the range, never truncated. */
	parse_fails("[policy]\nkvm-op-timeout-ms = 4294967297\n",
		    FILE_NAME ":2: key 'kvm-op-timeout-ms' = '4294967297': out of range "
			      "(1..3600000)");
}

/* The limits that are settings: 1 up to the compiled-in cap, which stays
 * the hard one (vcounterd(8), LIMITS). */
static void test_limits_are_settings_up_to_their_compiled_cap(void **state)
{
	struct conf *conf;

	conf = parse_ok("[vmm]\nmax-vms = 4096\nmax-connections = 1024\n"
			"[peer]\nmax-migrations = 1024\n[control]\nmax-watchers = 1024\n");
	assert_int_equal(conf->config.max_vms, VCD_MAX_VMS);
	assert_int_equal(conf->config.max_vmm_conns, VCD_MAX_VMM_CONNS);
	assert_int_equal(conf->config.max_migrations, VCD_MAX_MIGRATIONS);
	assert_int_equal(conf->config.max_watchers, VCD_MAX_WATCHERS);
	conf_free(conf);
	conf = parse_ok("[vmm]\nmax-vms = 1\nmax-connections = 1\n"
			"[peer]\nmax-migrations = 1\n[control]\nmax-watchers = 1\n");
	assert_int_equal(conf->config.max_vms, 1);
	assert_int_equal(conf->config.max_vmm_conns, 1);
	assert_int_equal(conf->config.max_migrations, 1);
	assert_int_equal(conf->config.max_watchers, 1);
	conf_free(conf);

	parse_fails("[vmm]\nmax-vms = 4097\n",
		    FILE_NAME ":2: key 'max-vms' = '4097': out of range (1..4096)");
	parse_fails("[vmm]\nmax-vms = 0\n",
		    FILE_NAME ":2: key 'max-vms' = '0': out of range (1..4096)");
	parse_fails("[vmm]\nmax-connections = 1025\n",
		    FILE_NAME ":2: key 'max-connections' = '1025': out of range (1..1024)");
	parse_fails("[peer]\nmax-migrations = 1025\n",
		    FILE_NAME ":2: key 'max-migrations' = '1025': out of range (1..1024)");
	parse_fails("[control]\nmax-watchers = 1025\n",
		    FILE_NAME ":2: key 'max-watchers' = '1025': out of range (1..1024)");
}

static void test_duplicate_scalar_key_is_an_error(void **state)
{
	parse_fails("[policy]\nerror-bound-policy = warn\n# changed my mind\n"
		    "error-bound-policy = refuse\n",
		    FILE_NAME ":4: key 'error-bound-policy' = 'refuse': duplicate key (first on "
			      "line 2)");
	/* Also when the section is opened again. */
	parse_fails("[daemon]\nhost-name = a.test\n[vmm]\n[daemon]\nhost-name = b.test\n",
		    FILE_NAME ":5: key 'host-name' = 'b.test': duplicate key (first on line 2)");
}

static void test_too_long_line_is_an_error(void **state)
{
	static char text[CONF_MAX_LINE_BYTES + 64];
	struct conf *conf;
	size_t n;

	/* Exactly the maximum is fine (the comment runs to the limit). */
	n = (size_t)sprintf(text, "[daemon]\n#");
	memset(text + n, 'x', CONF_MAX_LINE_BYTES - 1);
	strcpy(text + n + CONF_MAX_LINE_BYTES - 1, "\nlog-level = warning\n");
	conf = parse_ok(text);
	assert_int_equal(conf->log_level, LOG_WARNING);
	conf_free(conf);

	memset(text + n, 'x', CONF_MAX_LINE_BYTES);
	strcpy(text + n + CONF_MAX_LINE_BYTES, "\n");
	parse_fails(text, FILE_NAME ":2: line longer than 4096 bytes");
}

static void test_malformed_lines_are_errors(void **state)
{
	parse_fails("[daemon\n", FILE_NAME ":1: '[daemon': section header without ']'");
	parse_fails("[daemon] log-level = info\n",
		    FILE_NAME ":1: '[daemon] log-level = info': text after the section header");
	parse_fails("[daemon]\nhost-name = \"a.test\n",
		    FILE_NAME ":2: key 'host-name' = '\"a.test': unterminated quote");
	parse_fails("[daemon]\nhost-name = \"a.test\"b\n",
		    FILE_NAME ":2: key 'host-name' = '\"a.test\"b': text after the closing quote");
	parse_fails("[peer]\nallow-peer = 'a.test'b c.test\n",
		    FILE_NAME ":2: key 'allow-peer' = ''a.test'b c.test': text after the closing "
			      "quote");
	{
		static const char nul[] = "[daemon]\nlog-level = info\0\n";
		struct conf *conf = conf_new();

		assert_int_equal(conf_parse(conf, FILE_NAME, nul, sizeof(nul) - 1, &fake_ops, err,
					    sizeof(err)),
				 -EINVAL);
		assert_string_equal(err, FILE_NAME ":2: NUL byte in the line");
		conf_free(conf);
	}
}

static void test_too_many_list_values_is_an_error(void **state)
{
	char text[4096] = "[control]\noperator-uid =";
	struct conf *conf;

	for (int i = 0; i < VCD_MAX_ALLOWED_IDS; i++)
		sprintf(text + strlen(text), " %d", i);
	strcat(text, "\n");
	conf = parse_ok(text);
	assert_int_equal(conf->config.n_control_operator_uids, VCD_MAX_ALLOWED_IDS);
	conf_free(conf);
	strcat(text, "operator-uid = 64\n");
	assert_int_equal(parse(text, &conf), -E2BIG);
	assert_string_equal(err, FILE_NAME ":3: key 'operator-uid' = '64': too many values "
					   "(limit 64)");
}

static void test_long_values_are_shortened_in_messages(void **state)
{
	char text[1024] = "[daemon]\nhost-name = ";
	char want[1024] = FILE_NAME ":2: key 'host-name' = '";

	for (int i = 0; i < 30; i++)
		strcat(text, "0123456789");
	strcat(text, "\n");
	for (int i = 0; i < 20; i++)
		strcat(want, "0123456789");
	strcat(want, "...': longer than 255 bytes");
	parse_fails(text, want);
}

/* ---- lists, comments, whitespace, quotes ---- */

static void test_lists_take_repeated_keys_and_words(void **state)
{
	struct conf *conf = parse_ok("[peer]\n"
				     "allow-peer = a.test\n"
				     "allow-peer = b.test c.test\n"
				     "allow-peer = \"d.test\"   'e.test'\t f.test\n"
				     "[daemon]\n"
				     "backends = kvm-syscounter, kvm-x86\n");
	const struct vcd_config *c = &conf->config;
	static const char *const want[] = { "a.test", "b.test", "c.test",
					    "d.test", "e.test", "f.test" };

	assert_int_equal(c->tls.n_allowed_peers, ELEMENTSOF(want));
	for (size_t i = 0; i < ELEMENTSOF(want); i++)
		assert_string_equal(c->allowed_peers[i], want[i]);
	assert_int_equal(c->n_backends, 2);
	assert_int_equal(c->backends[0], BACKEND_KVM_SYSCOUNTER);
	assert_int_equal(c->backends[1], BACKEND_KVM_X86);
	conf_free(conf);
}

/* A '#' that does not follow a blank is part of the value. */
static void test_hash_inside_a_value_is_the_values(void **state)
{
	parse_fails("[daemon]\nlog-level = warning#x\n",
		    FILE_NAME ":2: key 'log-level' = 'warning#x': not one of error, warning, "
			      "info, debug");
}

static void test_comments_whitespace_and_quotes_parse(void **state)
{
	struct conf *conf =
		parse_ok("# vcounterd.conf\r\n"
			 "; also a comment\n"
			 "   \t\n"
			 "  [ peer ]  # the peer link\r\n"
			 "\tca=/etc/v/ca.pem\r\n"
			 "cert = \"/etc/my certs/host #1.pem\"   ; quoted: # and ; kept\n"
			 "key = /etc/my keys/host.key   # blanks inside a plain value\n"
			 "allow-peer = spiffe://fleet.test/a#b   ; '#' inside a word\n"
			 "[daemon]\n"
			 "host-name='host-b.test'\n"
			 "log-level = warning");
	const struct vcd_config *c = &conf->config;

	assert_string_equal(c->tls.ca_file, "/etc/v/ca.pem");
	assert_string_equal(c->tls.cert_file, "/etc/my certs/host #1.pem");
	assert_string_equal(c->tls.key_file, "/etc/my keys/host.key");
	assert_int_equal(c->tls.n_allowed_peers, 1);
	assert_string_equal(c->allowed_peers[0], "spiffe://fleet.test/a#b");
	assert_string_equal(c->host_name, "host-b.test");
	/* The last line has no newline. */
	assert_int_equal(conf->log_level, LOG_WARNING);
	conf_free(conf);
}

static void test_empty_file_keeps_the_defaults(void **state)
{
	struct conf *conf = parse_ok("");

	assert_int_equal(conf->log_level, LOG_INFO);
	conf_free(conf);
	conf = parse_ok("\n\n# nothing\n[daemon]\n[policy]\n");
	assert_int_equal(conf->config.tsc_tolerance_ppm, 250);
	conf_free(conf);
}

/* ---- the command line ---- */

#define ARGV(...)                                            \
	char *argv[] = { (char *)"vcounterd", __VA_ARGS__ }; \
	int argc = (int)ELEMENTSOF(argv)

static void test_flags_override_the_file(void **state)
{
	struct conf *conf = parse_ok("[daemon]\nlog-level = debug\nhost-name = file.test\n"
				     "[peer]\nallow-peer = a.test b.test\ntimeout-ms = 5\n"
				     "[vmm]\nallow-gid = 7\n");
	ARGV("--log-level", "error", "--allow-peer", "c.test", "--allow-peer=d.test",
	     "--peer-timeout=6", "--peer-timeout", "7", "--backends", "kvm-x86");

	assert_int_equal(conf_apply_argv(conf, argc, argv, &fake_ops, err, sizeof(err)), 0);
	assert_int_equal(conf->log_level, LOG_ERR);
	/* Not on the command line: the file's. */
	assert_string_equal(conf->config.host_name, "file.test");
	assert_int_equal(conf->config.n_allowed_gids, 1);
	/* A list on the command line replaces the file's; the flag repeats to add. */
	assert_int_equal(conf->config.tls.n_allowed_peers, 2);
	assert_string_equal(conf->config.allowed_peers[0], "c.test");
	assert_string_equal(conf->config.allowed_peers[1], "d.test");
	/* A scalar twice: the last. */
	assert_int_equal(conf->config.peer_timeout_ms, 7);
	assert_int_equal(conf->config.n_backends, 1);
	assert_int_equal(conf->config.backends[0], BACKEND_KVM_X86);
	/* Applying again (a reload) gives the same. */
	assert_int_equal(conf_apply_argv(conf, argc, argv, &fake_ops, err, sizeof(err)), 0);
	assert_int_equal(conf->config.tls.n_allowed_peers, 2);
	conf_free(conf);
}

static void test_every_flag_reaches_the_same_field_as_its_key(void **state)
{
	struct conf *from_file = parse_ok(every_key);
	struct conf *from_argv = conf_new();
	ARGV("--host-name", "host-b.test", "--log-level", "debug", "--backends",
	     "kvm-x86,kvm-syscounter", "--vmm-socket", "/run/v/vmm.sock", "--allow-uid", "0",
	     "--allow-uid", "alice", "--allow-uid", "4294967294", "--allow-gid", "kvm",
	     "--allow-gid", "7", "--listen", "0.0.0.0:7420", "--port-file", "/run/v/port", "--ca",
	     "/etc/v/ca.pem", "--cert", "/etc/v/host-b.pem", "--key", "/etc/v/host-b.key",
	     "--allow-peer", "host-a.test", "--allow-peer", "spiffe://fleet.test/host-u",
	     "--peer-timeout", "1234", "--control-socket", "/run/v/control.sock",
	     "--control-listen", "[::1]:7430", "--control-port-file", "/run/v/control-port",
	     "--control-operator", "ctl-operator.test", "--control-reader", "ctl-reader.test",
	     "--control-reader", "ctl-reader2.test", "--control-operator-uid", "1001",
	     "--control-operator-gid", "kvm", "--control-reader-uid", "alice",
	     "--control-reader-uid", "5", "--control-reader-gid", "9", "--error-bound-limit",
	     "2500000", "--error-bound-policy", "refuse", "--max-elapsed", "60000000000",
	     "--tsc-tolerance", "0", "--kvm-op-timeout", "500", "--metrics-listen", "9100",
	     "--metrics-port-file", "/run/v/metrics-port");
	int n = 0;

	assert_int_equal(conf_apply_argv(from_argv, argc, argv, &fake_ops, err, sizeof(err)), 0);
	/* conf_diff compares every key of the table. */
	assert_int_equal(conf_diff(from_file, from_argv, count_diff, &n), 0);
	assert_int_equal(n, 0);
	conf_free(from_file);
	conf_free(from_argv);
}

static void apply_fails(int argc, char **argv, const char *message)
{
	struct conf *conf = conf_new();

	assert_true(conf_apply_argv(conf, argc, argv, &fake_ops, err, sizeof(err)) < 0);
	assert_string_equal(err, message);
	conf_free(conf);
}

static void test_flag_errors_name_the_flag_and_value(void **state)
{
	{
		ARGV("--tsc-tolerance", "20000");
		apply_fails(argc, argv, "--tsc-tolerance '20000': out of range (0..10000)");
	}
	{
		ARGV("--error-bound-policy=maybe");
		apply_fails(argc, argv, "--error-bound-policy 'maybe': not one of warn, refuse");
	}
	{
		ARGV("--allow-uid", "bob");
		apply_fails(argc, argv, "--allow-uid 'bob': no such user 'bob'");
	}
	{
		ARGV("--ca", "");
		apply_fails(argc, argv, "--ca '': empty value");
	}
	{
		ARGV("--allow-peers", "a.test");
		apply_fails(argc, argv, "unknown option '--allow-peers' (--help lists them)");
	}
	{
		ARGV("--ca");
		apply_fails(argc, argv, "option '--ca' needs a value");
	}
	{
		ARGV("--check-config=yes");
		apply_fails(argc, argv, "option '--check-config' takes no value");
	}
	{
		ARGV("extra");
		apply_fails(argc, argv, "unexpected argument 'extra'");
	}
}

static void test_cmdline_finds_its_own_options(void **state)
{
	struct conf_cmdline cmd;

	{
		ARGV("--log-level", "debug", "--config", "/tmp/x.conf", "--check-config");

		assert_int_equal(conf_parse_cmdline(argc, argv, &cmd, err, sizeof(err)), 0);
		assert_string_equal(cmd.config_path, "/tmp/x.conf");
		assert_true(cmd.check_config);
		assert_false(cmd.help);
		assert_false(cmd.version);
	}
	{
		/* A value that looks like an option is still the value. */
		ARGV("--host-name", "--config", "-h");

		assert_int_equal(conf_parse_cmdline(argc, argv, &cmd, err, sizeof(err)), 0);
		assert_null(cmd.config_path);
		assert_true(cmd.help);
	}
	{
		ARGV("--version", "--config=");

		assert_int_equal(conf_parse_cmdline(argc, argv, &cmd, err, sizeof(err)), -EINVAL);
		assert_string_equal(err, "--config needs a file name");
	}
	{
		/* The settings' flags are checked for syntax only. */
		ARGV("--tsc-tolerance", "20000", "--nope");

		assert_int_equal(conf_parse_cmdline(argc, argv, &cmd, err, sizeof(err)), -EINVAL);
		assert_string_equal(err, "unknown option '--nope' (--help lists them)");
	}
	{
		/* --config and the others are no settings: conf_apply_argv skips them. */
		ARGV("--config", "/x", "--check-config", "--version", "--help", "-h");
		struct conf *conf = conf_new();

		assert_int_equal(conf_apply_argv(conf, argc, argv, &fake_ops, err, sizeof(err)), 0);
		conf_free(conf);
	}
}

/* ---- after the file and argv ---- */

static void test_finish_fills_in_uids_and_host_name(void **state)
{
	struct conf *conf = conf_new();

	assert_int_equal(conf_finish(conf, 1000, "box.example"), 0);
	assert_int_equal(conf->config.n_allowed_uids, 2);
	assert_int_equal(conf->config.allowed_uids[0], 0);
	assert_int_equal(conf->config.allowed_uids[1], 1000);
	assert_string_equal(conf->config.host_name, "box.example");
	conf_free(conf);

	conf = parse_ok("[vmm]\nallow-uid = 5\n[daemon]\nhost-name = mine.test\n");
	assert_int_equal(conf_finish(conf, 0, "box.example"), 0);
	assert_int_equal(conf->config.n_allowed_uids, 1);
	assert_int_equal(conf->config.allowed_uids[0], 5);
	assert_string_equal(conf->config.host_name, "mine.test");
	conf_free(conf);

	conf = conf_new();
	assert_int_equal(conf_finish(conf, 0, ""), 0);
	assert_int_equal(conf->config.n_allowed_uids, 1);
	assert_string_equal(conf->config.host_name, "localhost");
	conf_free(conf);
}

static void validate_fails(const char *text, int argc, char **argv, const char *message)
{
	struct conf *conf = parse_ok(text);

	conf->path = FILE_NAME;
	assert_int_equal(conf_apply_argv(conf, argc, argv, &fake_ops, err, sizeof(err)), 0);
	assert_int_equal(conf_validate(conf, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, message);
	conf_free(conf);
}

static void test_validate_names_where_the_keys_were_set(void **state)
{
	{
		ARGV("--log-level", "info");
		validate_fails("[peer]\nca = /ca.pem\nkey = /k.pem\n", argc, argv,
			       FILE_NAME ":2: key 'ca' = '/ca.pem': ca, cert and key go together "
					 "(in [peer], or --ca, --cert and --key)");
	}
	{
		ARGV("--cert", "/c.pem");
		validate_fails("", argc, argv, "--ca, --cert and --key go together");
	}
	{
		/* Set on the command line: in the flags' words, as always. */
		ARGV("--listen", "0.0.0.0:7420");
		validate_fails("", argc, argv,
			       "--listen needs --ca, --cert and --key: the peer link is mutual TLS "
			       "only");
	}
	{
		ARGV("--log-level", "info");
		validate_fails("[peer]\nlisten = 0.0.0.0:7420\n", argc, argv,
			       FILE_NAME
			       ":2: key 'listen' = '0.0.0.0:7420': needs ca, cert and key: "
			       "the peer link is mutual TLS only");
	}
	{
		ARGV("--control-listen", "127.0.0.1:0");
		validate_fails("[peer]\nca = /a\ncert = /b\nkey = /c\n", argc, argv,
			       "--control-listen needs --ca, --cert, --key and at least one "
			       "--control-operator or --control-reader: TCP callers are known by "
			       "certificate only");
	}
	{
		ARGV("--log-level", "info");
		validate_fails("[control]\nlisten = 127.0.0.1:0\nreader = r.test\n", argc, argv,
			       FILE_NAME
			       ":2: key 'listen' = '127.0.0.1:0': needs ca, cert and key "
			       "([peer]) and at least one operator or reader: TCP callers "
			       "are known by certificate only");
	}
	{
		ARGV("--control-port-file", "/tmp/p");
		validate_fails("", argc, argv, "--control-port-file needs --control-listen");
	}
	{
		ARGV("--log-level", "info");
		validate_fails("[metrics]\nport-file = /tmp/m\n", argc, argv,
			       FILE_NAME ":2: key 'port-file' = '/tmp/m': needs [metrics] listen");
	}
	{
		ARGV("--metrics-port-file", "/tmp/m");
		validate_fails("", argc, argv, "--metrics-port-file needs --metrics-listen");
	}
}

/* ---- printing, comparing ---- */

static char *print_to_string(const struct conf *conf)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	assert_non_null(f);
	conf_print(conf, f);
	assert_int_equal(fclose(f), 0);
	return text;
}

static void test_printed_configuration_reads_back_the_same(void **state)
{
	struct conf *conf = parse_ok(every_key);
	struct conf *back;
	char *text;
	int n = 0;

	/* Values only quotes make exact. */
	conf->config.tls.ca_file = "/etc/my certs/\"ca\".pem";
	conf->config.tls.cert_file = "/etc/my certs/host #1.pem";
	conf->config.tls.key_file = "/etc/\"quoted\" ;2.key";
	conf->config.allowed_peers[0] = "#a.test";
	conf->config.allowed_peers[1] = "\"b.test";
	text = print_to_string(conf);
	assert_non_null(strstr(text, "\n[policy]\n"));
	assert_non_null(strstr(text, "error-bound-policy = refuse\t# line 29\n"));
	assert_non_null(strstr(text, "ca = /etc/my certs/\"ca\".pem\t# line 12\n"));
	assert_non_null(strstr(text, "cert = \"/etc/my certs/host #1.pem\"\t# line 13\n"));
	assert_non_null(strstr(text, "key = '/etc/\"quoted\" ;2.key'\t# line 14\n"));
	assert_non_null(strstr(text, "allow-peer = \"#a.test\" '\"b.test'\t# line 15\n"));
	back = parse_ok(text);
	assert_int_equal(conf_diff(conf, back, count_diff, &n), 0);
	assert_int_equal(n, 0);
	free(text);
	conf_free(back);
	conf_free(conf);

	/* Defaults: unset keys are commented out, so the output parses too. */
	conf = conf_new();
	text = print_to_string(conf);
	assert_non_null(strstr(text, "# port-file is not set\n"));
	assert_non_null(strstr(text, "\nlisten = none\t# default\n"));
	assert_non_null(strstr(text, "log-level = info\t# default\n"));
	back = parse_ok(text);
	assert_int_equal(conf_diff(conf, back, count_diff, &n), 0);
	assert_int_equal(n, 0);
	free(text);
	conf_free(back);
	conf_free(conf);
}

struct diff_log {
	int n;
	char lines[8][256];
};

static void log_diff(const char *section, const char *key, bool needs_restart,
		     const char *old_value, const char *new_value, void *userdata)
{
	struct diff_log *log = userdata;

	assert_true(log->n < 8);
	snprintf(log->lines[log->n++], sizeof(log->lines[0]), "%s[%s] %s: '%s' -> '%s'",
		 needs_restart ? "restart " : "", section, key, old_value, new_value);
}

static void test_diff_names_each_changed_key(void **state)
{
	struct conf *a = parse_ok("[peer]\nallow-peer = a.test\n[daemon]\nhost-name = h.test\n");
	struct conf *b = parse_ok("[peer]\nallow-peer = a.test b.test\n[daemon]\n"
				  "host-name = h.test\nlog-level = debug\n");
	struct diff_log log = { 0 };

	assert_int_equal(conf_diff(a, b, log_diff, &log), 0);
	assert_int_equal(log.n, 2);
	assert_string_equal(log.lines[0], "[daemon] log-level: 'info' -> 'debug'");
	assert_string_equal(log.lines[1], "[peer] allow-peer: 'a.test' -> 'a.test b.test'");
	conf_free(a);
	conf_free(b);
}

static void test_restart_settings_keep_their_old_values(void **state)
{
	struct conf *old_conf = parse_ok("[peer]\nlisten = 0.0.0.0:1\n[daemon]\nhost-name = a\n"
					 "[control]\nsocket = /run/c.sock\n");
	struct conf *new_conf = parse_ok("[peer]\nlisten = 0.0.0.0:2\n[daemon]\nhost-name = a\n"
					 "log-level = debug\n[control]\nsocket = none\n"
					 "port-file = /p\n");
	struct diff_log log = { 0 };
	const char *kept;

	assert_int_equal(conf_keep_restart_settings(new_conf, old_conf, log_diff, &log), 0);
	assert_int_equal(log.n, 3);
	assert_string_equal(log.lines[0], "restart [peer] listen: '0.0.0.0:1' -> '0.0.0.0:2'");
	assert_string_equal(log.lines[1], "restart [control] socket: '/run/c.sock' -> ''");
	assert_string_equal(log.lines[2], "restart [control] port-file: '' -> '/p'");
	kept = new_conf->config.listen_addr;
	assert_string_equal(kept, "0.0.0.0:1");
	/* A copy the new conf owns: the old one may go. */
	assert_ptr_not_equal(kept, old_conf->config.listen_addr);
	assert_string_equal(new_conf->config.control_socket, "/run/c.sock");
	assert_null(new_conf->control_port_file);
	/* What may change did. */
	assert_int_equal(new_conf->log_level, LOG_DEBUG);
	conf_free(old_conf);
	assert_string_equal(new_conf->config.listen_addr, "0.0.0.0:1");
	conf_free(new_conf);
}

/* ---- the file wrapper ---- */

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void test_load_reads_the_file_then_argv(void **state)
{
	char dir[] = "/tmp/test_conf.XXXXXX", path[64];
	struct conf *conf = NULL;
	ARGV("--config", path, "--log-level", "warning");

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/vcounterd.conf", dir);
	write_file(path, "[daemon]\nlog-level = debug\nhost-name = f.test\n");
	assert_int_equal(conf_load(path, argc, argv, &fake_ops, &conf, err, sizeof(err)), 0);
	assert_int_equal(conf->log_level, LOG_WARNING);
	assert_string_equal(conf->config.host_name, "f.test");
	assert_string_equal(conf->path, path);
	assert_true(conf->path_explicit);
	assert_true(conf->file_found);
	assert_int_equal(conf->argc, argc);
	assert_ptr_equal(conf->argv, argv);
	conf_free(conf);

	/* Errors name the file as given. */
	write_file(path, "[daemon]\nlog-level = loud\n");
	assert_int_equal(conf_load(path, argc, argv, &fake_ops, &conf, err, sizeof(err)), -EINVAL);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_string_equal(err + strlen(path),
			    ":2: key 'log-level' = 'loud': not one of error, warning, info, debug");

	/* A named file that is missing is an error. */
	unlink(path);
	assert_int_equal(conf_load(path, argc, argv, &fake_ops, &conf, err, sizeof(err)), -ENOENT);
	assert_string_equal(err + strlen(path), ": cannot read: No such file or directory");

	/* A directory is not a configuration file. */
	assert_int_equal(conf_load(dir, argc, argv, &fake_ops, &conf, err, sizeof(err)), -EINVAL);
	assert_string_equal(err + strlen(dir), ": not a regular file");

	/* Nor is a file over the cap. */
	{
		FILE *f = fopen(path, "w");

		assert_non_null(f);
		for (unsigned i = 0; i <= CONF_MAX_FILE_BYTES / 16; i++)
			fputs("# padding......\n", f);
		assert_int_equal(fclose(f), 0);
	}
	assert_int_equal(conf_load(path, argc, argv, &fake_ops, &conf, err, sizeof(err)), -EFBIG);
	assert_string_equal(err + strlen(path), ": larger than 1048576 bytes");
	unlink(path);
	rmdir(dir);
}

static void test_load_without_a_named_file_tolerates_a_missing_default(void **state)
{
	struct conf *conf = NULL;
	struct stat st;
	ARGV("--allow-uid", "77");

	if (stat(CONF_DEFAULT_PATH, &st) == 0) {
		fprintf(stderr, "SKIP: this host has %s\n", CONF_DEFAULT_PATH);
		skip();
	}
	assert_int_equal(conf_load(NULL, argc, argv, &fake_ops, &conf, err, sizeof(err)), 0);
	assert_string_equal(conf->path, CONF_DEFAULT_PATH);
	assert_false(conf->path_explicit);
	assert_false(conf->file_found);
	assert_int_equal(conf->config.n_allowed_uids, 1);
	assert_int_equal(conf->config.allowed_uids[0], 77);
	assert_non_null(conf->config.host_name);
	conf_free(conf);
}

/* ---- the documentation: every key of the table, and values that parse ---- */

static int any_id(const char *name, uint32_t *ret)
{
	*ret = 4242;
	return 0;
}

/* The source tree, from the test environment's VC_TEST_CERTS (SRC/tests/gen-certs.sh). */
static bool source_file(const char *rel, char *ret, size_t size)
{
	const char *certs = getenv("VC_TEST_CERTS");
	const char *tail = "/tests/gen-certs.sh";

	if (!certs || strlen(certs) < strlen(tail) ||
	    strcmp(certs + strlen(certs) - strlen(tail), tail) != 0)
		return false;
	snprintf(ret, size, "%.*s/%s", (int)(strlen(certs) - strlen(tail)), certs, rel);
	return true;
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "re");
	char *text = calloc(1, CONF_MAX_FILE_BYTES + 1);

	assert_non_null(f);
	assert_non_null(text);
	assert_true(fread(text, 1, CONF_MAX_FILE_BYTES, f) > 0);
	fclose(f);
	return text;
}

/* "section/key" of every key, in the table's order, from what conf_print writes. */
static size_t table_keys(char keys[][64], size_t max)
{
	struct conf *conf = conf_new();
	char *text = print_to_string(conf), *save = NULL, section[32] = "";
	size_t n = 0;

	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char key[48];

		if (sscanf(line, "[%31[a-z]]", section) == 1)
			continue;
		size_t len = strlen(line);
		bool unset = len > 11 && strcmp(line + len - 11, " is not set") == 0;

		if ((unset && sscanf(line, "# %47[a-z-]", key) == 1) ||
		    (!unset && sscanf(line, "%47[a-z-] = ", key) == 1)) {
			assert_true(n < max);
			snprintf(keys[n++], 64, "%s/%s", section, key);
		}
	}
	free(text);
	conf_free(conf);
	return n;
}

static void test_example_file_has_every_key_and_parses(void **state)
{
	char path[512], keys[CONF_MAX_KEYS][64], *text, *save = NULL, section[32] = "";
	static const struct conf_ops any_ops = { .user_id = any_id, .group_id = any_id };
	size_t n = table_keys(keys, CONF_MAX_KEYS), found = 0;
	struct conf *conf = conf_new(), *defaults = conf_new();
	int n_diff = 0;

	if (!source_file("systemd/vcounterd.conf.example", path, sizeof(path)))
		skip();
	text = read_text(path);
	/* As shipped, everything commented: the defaults. */
	assert_int_equal(conf_parse(conf, path, text, strlen(text), &any_ops, err, sizeof(err)), 0);
	assert_int_equal(conf_diff(defaults, conf, count_diff, &n_diff), 0);
	assert_int_equal(n_diff, 0);
	conf_free(conf);

	/* Every setting uncommented ("#key = value"): valid values, every key once. */
	for (char *p = text; (p = strstr(p, "\n#")); p++)
		if (p[2] >= 'a' && p[2] <= 'z')
			p[1] = ' ';
	conf = conf_new();
	if (conf_parse(conf, path, text, strlen(text), &any_ops, err, sizeof(err)) < 0)
		fail_msg("uncommented: %s", err);
	conf_free(conf);
	conf_free(defaults);
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char key[48], both[64];

		if (sscanf(line, "[%31[a-z]]", section) == 1 ||
		    sscanf(line, " %47[a-z-] =", key) != 1)
			continue;
		snprintf(both, sizeof(both), "%s/%s", section, key);
		for (size_t i = 0; i < n; i++)
			found += strcmp(keys[i], both) == 0;
	}
	assert_int_equal(found, n);
	free(text);
}

static void test_man_page_has_every_key(void **state)
{
	char path[512], keys[CONF_MAX_KEYS][64], *text, *save = NULL, section[32] = "";
	size_t n = table_keys(keys, CONF_MAX_KEYS);
	bool documented[CONF_MAX_KEYS] = { false };

	if (!source_file("doc/vcounterd.conf.5", path, sizeof(path)))
		skip();
	text = read_text(path);
	/* ".SS [peer]", then ".BI allow\-peer \" = NAME ...\"" (or .TQ'd) items. */
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char key[64] = "", both[128];
		size_t k = 0;

		if (sscanf(line, ".SS [%31[a-z]]", section) == 1)
			continue;
		if (strncmp(line, ".BI ", 4) != 0)
			continue;
		for (const char *p = line + 4; *p && *p != ' ' && k + 1 < sizeof(key); p++)
			if (*p != '\\')
				key[k++] = *p;
		key[k] = '\0';
		snprintf(both, sizeof(both), "%s/%s", section, key);
		for (size_t i = 0; i < n; i++)
			documented[i] |= strcmp(keys[i], both) == 0;
	}
	for (size_t i = 0; i < n; i++)
		if (!documented[i])
			fail_msg("doc/vcounterd.conf.5 has no item for %s", keys[i]);
	free(text);
}

/* ---- random text ---- */

/* Pieces of a plausible file, for the half of the cases that are nearly right. */
static const char *const plausible_lines[] = {
	"# comment",
	"; comment",
	"",
	"[daemon]\nhost-name = a.test",
	"[daemon]\nlog-level = debug",
	"[daemon]\nbackends = kvm-x86",
	"[vmm]\nsocket = /run/x.sock",
	"[control]\nsocket = none",
	"[vmm]\nallow-uid = 0 alice",
	"[vmm]\nallow-gid = kvm",
	"[peer]\nlisten = 127.0.0.1:0",
	"[peer]\nport-file = /tmp/p",
	"[peer]\nca = \"/etc/c a.pem\"",
	"[peer]\ncert = /c.pem",
	"[peer]\nkey = /k.pem # key",
	"[peer]\nallow-peer = a.test 'b.test'",
	"[peer]\ntimeout-ms = 7",
	"[control]\noperator = o.test",
	"[control]\nreader = r.test",
	"[control]\noperator-uid = 1",
	"[control]\nreader-gid = kvm",
	"[policy]\nerror-bound-limit-ns = 0",
	"[policy]\nerror-bound-policy = refuse",
	"[policy]\nmax-elapsed-ns = 5",
	"[policy]\ntsc-tolerance-ppm = 10000",
	"[policy]\nkvm-op-timeout-ms = 1",
};

/* Fragments that reach deep into the parser, mixed with random bytes. */
static const char *const fragments[] = {
	"[daemon]",
	"[vmm]",
	"[peer]",
	"[control]",
	"[policy]",
	"[",
	"]",
	"=",
	" = ",
	"\n",
	"\r\n",
	"#",
	";",
	"\"",
	"'",
	" ",
	"\t",
	"host-name",
	"log-level",
	"backends",
	"socket",
	"allow-uid",
	"allow-gid",
	"listen",
	"port-file",
	"ca",
	"cert",
	"key",
	"allow-peer",
	"timeout-ms",
	"operator",
	"reader",
	"operator-gid",
	"reader-uid",
	"error-bound-limit-ns",
	"error-bound-policy",
	"max-elapsed-ns",
	"tsc-tolerance-ppm",
	"kvm-op-timeout-ms",
	"none",
	"debug",
	"refuse",
	"kvm-x86",
	"kvm-syscounter,",
	"0",
	"18446744073709551616",
	"10000",
	"alice",
	"kvm",
	"/etc/x.pem",
	"a.test",
};

static void test_random_text_never_crashes_and_errors_have_a_line(void **state)
{
	regex_t with_line;
	unsigned seed = 20261125;
	int n_ok = 0;

	assert_int_equal(regcomp(&with_line, "^" FILE_NAME ":[1-9][0-9]*: [^\n]+$",
				 REG_EXTENDED | REG_NOSUB),
			 0);
	for (int i = 0; i < 1000; i++) {
		size_t len = 0, cap = (size_t)(rand_r(&seed) % (i % 2 ? 200 : 600));
		char *text = malloc(cap + 128);
		struct conf *conf = conf_new();
		int r;

		assert_non_null(text);
		while (len < cap && i % 2 == 1) {
			const char *l =
				plausible_lines[rand_r(&seed) % ELEMENTSOF(plausible_lines)];

			memcpy(text + len, l, strlen(l));
			len += strlen(l);
			text[len++] = '\n';
			/* Now and then a byte goes wrong. */
			if (rand_r(&seed) % 8 == 0)
				text[rand_r(&seed) % len] = (char)(rand_r(&seed) % 256);
		}
		while (len < cap) {
			if (rand_r(&seed) % 4 == 0) {
				text[len++] = (char)(rand_r(&seed) % 256);
			} else {
				const char *f = fragments[rand_r(&seed) % ELEMENTSOF(fragments)];

				memcpy(text + len, f, strlen(f));
				len += strlen(f);
			}
		}
		/* Every 10th: one huge line. */
		if (i % 10 == 9) {
			text = realloc(text, len + CONF_MAX_LINE_BYTES + 2);
			assert_non_null(text);
			memset(text + len, 'a', CONF_MAX_LINE_BYTES + 1);
			len += CONF_MAX_LINE_BYTES + 1;
		}
		err[0] = '\0';
		r = conf_parse(conf, FILE_NAME, text, len, &fake_ops, err, sizeof(err));
		if (r == 0) {
			char *printed = print_to_string(conf);
			struct conf *back;

			/* What parsed prints, and what it prints parses back. */
			assert_int_equal(parse(printed, &back), 0);
			conf_free(back);
			free(printed);
			n_ok++;
		} else {
			assert_true(r == -EINVAL || r == -E2BIG);
			if (regexec(&with_line, err, 0, NULL, 0) != 0)
				fail_msg("case %d: message without a line: '%s'", i, err);
		}
		conf_free(conf);
		free(text);
	}
	/* Both outcomes were exercised. */
	fprintf(stderr, "%d of 1000 random files parsed\n", n_ok);
	assert_true(n_ok > 0 && n_ok < 1000);
	regfree(&with_line);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_are_the_documented_ones),
		cmocka_unit_test(test_every_key_parses_into_its_field),
		cmocka_unit_test(test_origin_is_the_line_that_set_the_key),
		cmocka_unit_test(test_none_unsets_the_sockets_and_listen_addresses),
		cmocka_unit_test(test_unknown_section_is_an_error),
		cmocka_unit_test(test_unknown_key_is_an_error),
		cmocka_unit_test(test_key_outside_any_section_is_an_error),
		cmocka_unit_test(test_line_without_equals_is_an_error),
		cmocka_unit_test(test_bad_values_are_errors),
		cmocka_unit_test(test_numbers_at_and_beyond_their_limits),
		cmocka_unit_test(test_limits_are_settings_up_to_their_compiled_cap),
		cmocka_unit_test(test_duplicate_scalar_key_is_an_error),
		cmocka_unit_test(test_too_long_line_is_an_error),
		cmocka_unit_test(test_malformed_lines_are_errors),
		cmocka_unit_test(test_too_many_list_values_is_an_error),
		cmocka_unit_test(test_long_values_are_shortened_in_messages),
		cmocka_unit_test(test_lists_take_repeated_keys_and_words),
		cmocka_unit_test(test_hash_inside_a_value_is_the_values),
		cmocka_unit_test(test_comments_whitespace_and_quotes_parse),
		cmocka_unit_test(test_empty_file_keeps_the_defaults),
		cmocka_unit_test(test_flags_override_the_file),
		cmocka_unit_test(test_every_flag_reaches_the_same_field_as_its_key),
		cmocka_unit_test(test_flag_errors_name_the_flag_and_value),
		cmocka_unit_test(test_cmdline_finds_its_own_options),
		cmocka_unit_test(test_finish_fills_in_uids_and_host_name),
		cmocka_unit_test(test_validate_names_where_the_keys_were_set),
		cmocka_unit_test(test_printed_configuration_reads_back_the_same),
		cmocka_unit_test(test_diff_names_each_changed_key),
		cmocka_unit_test(test_restart_settings_keep_their_old_values),
		cmocka_unit_test(test_load_reads_the_file_then_argv),
		cmocka_unit_test(test_load_without_a_named_file_tolerates_a_missing_default),
		cmocka_unit_test(test_example_file_has_every_key_and_parses),
		cmocka_unit_test(test_man_page_has_every_key),
		cmocka_unit_test(test_random_text_never_crashes_and_errors_have_a_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
