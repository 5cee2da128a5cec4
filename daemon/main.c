/* main.c - vcounterd: argv and the configuration file into a checked
 * configuration (conf.c), handed to the manager (manager.h). */
#include <stdio.h>
#include <stdlib.h>

#include "conf.h"
#include "counter_math.h"
#include "failpoint.h"
#include "log.h"
#include "manager.h"
#include "reload.h"
#include "vcd_config.h"

#include "config.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vcounterd [OPTIONS]\n"
		"Hand KVM guests' system counters between hosts by offset.\n\n"
		"  --config FILE            configuration file, vcounterd.conf(5) (default\n"
		"                           %s,\n"
		"                           fine when missing); the options below win\n"
		"  --check-config           check the configuration (TLS files too), print\n"
		"                           it as in effect, exit 0; or say why not, exit 1\n"
		"  --vmm-socket PATH        VMM socket (default %s)\n"
		"  --state-directory DIR    keep the session journal in DIR/journal (default:\n"
		"                           $STATE_DIRECTORY, set by systemd; else none)\n"
		"  --listen ADDR:PORT       accept migrations from peers here (port 0: any)\n"
		"  --port-file FILE         write the peer port actually bound to FILE\n"
		"  --host-name NAME         this host's identity (its certificate SAN)\n"
		"  --ca FILE                fleet CA bundle (PEM)\n"
		"  --cert FILE              this host's certificate chain (PEM)\n"
		"  --key FILE               its private key (PEM)\n"
		"  --allow-peer NAME        peer identity (SAN) allowed on the peer link; "
		"repeatable\n"
		"  --allow-uid UID          VMM uid allowed on the VMM socket; repeatable\n"
		"                           (default: root and the daemon's own uid)\n"
		"  --allow-gid GID          VMM gid allowed on the VMM socket; repeatable\n"
		"  --error-bound-limit NS   error bound limit per migration (default 1000000)\n"
		"  --error-bound-policy P   'warn' (default) or 'refuse' above the limit\n"
		"  --max-elapsed NS         refuse |elapsed| above this (default 3600000000000)\n"
		"  --tsc-tolerance PPM      guest TSC rates this close count as equal (default "
		"%d,\n"
		"                           KVM's tsc_tolerance_ppm); 0 demands equal kHz\n"
		"  --backends LIST          counter backends allowed, in preference order\n"
		"                           (comma-separated: kvm-syscounter, kvm-x86;\n"
		"                           default: both, in that order)\n"
		"  --control-socket PATH    control API (gRPC, h2c) socket (default %s;\n"
		"                           'none': no socket)\n"
		"  --control-listen ADDR:PORT  control API on TCP, TLS 1.3 with client\n"
		"                           certificates of the fleet CA (--ca/--cert/--key)\n"
		"  --control-port-file FILE write the control TCP port actually bound to FILE\n"
		"  --metrics-listen ADDR:PORT  Prometheus metrics over HTTP (GET /metrics); a\n"
		"                           bare port is on 127.0.0.1 (default: off)\n"
		"  --metrics-port-file FILE write the metrics TCP port actually bound to FILE\n"
		"  --control-operator NAME  controller identity (SAN) that may start and\n"
		"                           abort migrations; repeatable\n"
		"  --control-reader NAME    controller identity that may list and watch;\n"
		"                           repeatable\n"
		"  --control-operator-uid UID, --control-operator-gid GID\n"
		"  --control-reader-uid UID, --control-reader-gid GID\n"
		"                           local callers on the control socket, by\n"
		"                           SO_PEERCRED (root and the daemon's uid are\n"
		"                           operators); repeatable\n"
		"  --kvm-op-timeout MS      VMM answer deadline (default 10000)\n"
		"  --sync-source SOURCE     this host's clock error: adjtimex (default),\n"
		"                           chrony, chrony@ADDR:PORT, linuxptp,\n"
		"                           linuxptp@PATH or fixed:NS\n"
		"  --peer-timeout MS        peer answer deadline (default 30000)\n"
		"  --max-vms N, --max-vmm-connections N, --max-migrations N, --max-watchers N\n"
		"                           limits, 1..their default (vcounterd(8), LIMITS)\n"
		"  --log-level LEVEL        error, warning, info (default), debug\n"
		"  --log-target TARGET      journal, stderr, or auto (default): the journal\n"
		"                           when stderr is connected to it\n"
		"  --version                print the version\n"
		"  --help                   this text\n",
		CONF_DEFAULT_PATH, VCD_DEFAULT_VMM_SOCKET, COUNTER_MATH_DEFAULT_TSC_TOLERANCE_PPM,
		VCD_DEFAULT_CONTROL_SOCKET);
}

/* --check-config, once the configuration (TLS files included) checked out: print it. */
static int check_config(struct conf *conf)
{
	conf_print(conf, stdout);
	conf_free(conf);
	return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	struct conf_cmdline cmd;
	struct conf *conf = NULL;
	char conf_err[CONF_ERROR_MAX];
	struct vcd *vcd;
	int r;

	/* The file, then the flags over it; checked whole (conf.h). */
	r = conf_parse_cmdline(argc, argv, &cmd, conf_err, sizeof(conf_err));
	if (r < 0) {
		fprintf(stderr, "vcounterd: %s\n", conf_err);
		return EXIT_FAILURE;
	}
	if (cmd.help) {
		usage(stdout);
		return EXIT_SUCCESS;
	}
	if (cmd.version) {
		printf("vcounterd %s\n", VCOUNTER_VERSION);
		return EXIT_SUCCESS;
	}
	r = conf_load(cmd.config_path, argc, argv, &conf_system_ops, &conf, conf_err,
		      sizeof(conf_err));
	if (r < 0) {
		fprintf(stderr, "vcounterd: %s\n", conf_err);
		return EXIT_FAILURE;
	}
	/* The TLS files too, so that a bad one is named by its key and line, as on reload. */
	r = vcd_check_tls(conf, conf_err, sizeof(conf_err));
	if (r < 0) {
		fprintf(stderr, "vcounterd: %s\n", conf_err);
		conf_free(conf);
		return EXIT_FAILURE;
	}
	if (cmd.check_config)
		return check_config(conf);
	log_set_target(conf->log_target);
	log_setup(conf->log_level);
	if (failpoints_init() < 0) {
		conf_free(conf);
		return EXIT_FAILURE;
	}
	/* The manager takes conf, also when it fails (it said why). */
	if (vcd_new(conf, &vcd) < 0)
		return EXIT_FAILURE;
	r = vcd_run(vcd);
	vcd_free(vcd);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
