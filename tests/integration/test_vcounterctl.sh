#!/bin/sh
# test_vcounterctl.sh BUILD_ROOT - the real vcounterctl against a real vcounterd on a temporary
# control socket and TCP port (TLS with the controller certificates of tests/gen-certs.sh): output,
# JSON, exit codes, roles, deadlines. With a usable /dev/kvm, a minivmm target VM adds an event to
# watch and a VM to list.
#
# VC_CTL_WRAPPER (e.g. "valgrind --error-exitcode=97 --leak-check=full") runs every vcounterctl
# under a tool; VC_DAEMON_WRAPPER does the same for the daemon (tools/test), whose exit status
# then tells.
set -eu

build=${1:?usage: test_vcounterctl.sh BUILD_ROOT}
build=$(cd "$build" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
ctl_bin=$build/client/vcounterctl
daemon_bin=$build/daemon/vcounterd
minivmm_bin=$build/client/minivmm

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vcounterctl-test.XXXXXX")
daemon_pid=
vmm_pid=
watch_pid=
failures=0

cleanup() {
	for pid in $watch_pid $vmm_pid; do
		kill "$pid" 2>/dev/null || :
		wait "$pid" 2>/dev/null || :
	done
	if [ -n "$daemon_pid" ]; then
		kill "$daemon_pid" 2>/dev/null || :
		wait "$daemon_pid" 2>/dev/null || :
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

# run EXPECTED_EXIT DESCRIPTION ARGS...: vcounterctl ARGS, stdout in $tmp/out, stderr in $tmp/err.
run() {
	want=$1
	what=$2
	shift 2
	set +e
	# shellcheck disable=SC2086 # the wrapper is a command line
	${VC_CTL_WRAPPER:-} "$ctl_bin" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	set -e
	if [ "$rc" -ne "$want" ]; then
		fail "$what: exit $rc, expected $want (vcounterctl $*)"
		sed 's/^/  stdout: /' "$tmp/out"
		sed 's/^/  stderr: /' "$tmp/err"
		return 0
	fi
	echo "ok: $what (exit $rc)"
}

# contains FILE TEXT DESCRIPTION
contains() {
	if ! grep -qF -- "$2" "$1"; then
		fail "$3: \"$2\" not in $(basename "$1")"
		sed 's/^/  | /' "$1"
	fi
}

# json DESCRIPTION PYTHON-EXPRESSION: evaluated with d = the JSON document in $tmp/out (or, for
# JSON Lines, lines = every line's document); must be true.
json() {
	if ! python3 - "$tmp/out" "$2" <<'EOF'; then
import json, sys
text = open(sys.argv[1]).read()
lines = [json.loads(l) for l in text.splitlines() if l.strip()]
d = lines[0] if len(lines) == 1 else None
if not eval("(" + sys.argv[2] + ")"):
    print("  json: " + text.strip())
    sys.exit(1)
EOF
		fail "$1: $2"
	fi
}

wait_for() { # FILE-TEST PATH ROUNDS(x10ms)
	i=0
	while [ "$i" -lt "$3" ]; do
		if test "$1" "$2"; then
			return 0
		fi
		if [ -n "$daemon_pid" ] && ! kill -0 "$daemon_pid" 2>/dev/null; then
			return 1
		fi
		sleep 0.01
		i=$((i + 1))
	done
	return 1
}

# ---- one daemon: control socket and TLS control port, reader and operator identities

certs=$tmp/certs
sh "${VC_TEST_CERTS:-$src/tests/gen-certs.sh}" "$certs"
rounds=500
[ -n "${VC_DAEMON_WRAPPER:-}" ] && rounds=3000
# shellcheck disable=SC2086
${VC_DAEMON_WRAPPER:-} "$daemon_bin" --vmm-socket "$tmp/vmm.sock" \
	--control-socket "$tmp/control.sock" --host-name host-a.test \
	--ca "$certs/ca.pem" --cert "$certs/host-a.pem" --key "$certs/host-a.key" \
	--control-listen 127.0.0.1:0 --control-port-file "$tmp/control-port" \
	--control-operator ctl-operator.test --control-reader ctl-reader.test \
	--log-level debug >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
if ! wait_for -s "$tmp/control-port" "$rounds" || ! wait_for -S "$tmp/control.sock" "$rounds"; then
	cat "$tmp/daemon.log"
	echo "FAIL: vcounterd did not start"
	exit 1
fi
port=$(cat "$tmp/control-port")
sock="--socket $tmp/control.sock"
tls="--address 127.0.0.1:$port --ca $certs/ca.pem --server-name host-a.test"
reader="$tls --cert $certs/ctl-reader.pem --key $certs/ctl-reader.key"
operator="$tls --cert $certs/ctl-operator.pem --key $certs/ctl-operator.key"
unknown_id=0123456789abcdef0123456789abcdef

# ---- the unix socket (uid 0 / the daemon's own uid: operator)

# shellcheck disable=SC2086 # option lists
{
	run 0 "status" $sock status
	contains "$tmp/out" "host-a.test" "status names the host"
	contains "$tmp/out" "BACKEND" "status has the backend table"
	contains "$tmp/out" "kvm-x86" "status lists kvm-x86"

	run 0 "status --json" $sock --json status
	json "status --json" 'd["host_name"] == "host-a.test" and d["vm_count"] == 0 and
		isinstance(d["uptime_ns"], int) and d["uptime_ns"] > 0 and
		"kvm-x86" in [b["backend"] for b in d["backends"]] and
		set(d["sync"]) == {"maxerror_ns", "esterror_ns", "unsynced", "tai_offset_s", "source",
			"problem"} and d["sync"]["source"] == "adjtimex" and d["sync"]["problem"] == "" and
		d["migrations_running"] == 0 and isinstance(d["error_bound_ns"], int)'

	run 0 "vms, none" $sock vms
	contains "$tmp/out" "No VMs registered." "vms says there are none"
	run 0 "vms --json, none" $sock vms --json
	json "vms --json" 'd == {"vms": []}'
	run 0 "migrations --json, none" $sock migrations --json --running --vm some-vm
	json "migrations --json" 'd == {"migrations": []}'

	run 4 "migration of an unknown id" $sock migration $unknown_id
	contains "$tmp/err" "NOT_FOUND" "unknown migration: the status"
	contains "$tmp/err" "$unknown_id" "unknown migration: the id"
	run 1 "migration of a malformed id (INVALID_ARGUMENT)" $sock migration not-an-id
	contains "$tmp/err" "INVALID_ARGUMENT" "malformed id: the status"
	run 4 "migrate an unknown VM" $sock migrate no-such-vm --to 127.0.0.1:1 \
		--peer-name host-b.test
	contains "$tmp/err" "NOT_FOUND" "migrate unknown VM: the status"
	run 4 "migrate --wait an unknown VM" $sock --timeout 5000 migrate no-such-vm \
		--to 127.0.0.1:1 --peer-name host-b.test --wait
	run 4 "abort an unknown migration" $sock abort $unknown_id --reason "test"

	# A watch with a deadline: with --count, not reaching it is an error; without, the
	# deadline is how long to watch.
	run 1 "watch --count 1 --timeout 300, no events" $sock --timeout 300 watch --count 1
	contains "$tmp/err" "0 of 1 events" "watch --count: what was missing"
	run 0 "watch --timeout 300, no events" $sock --timeout 300 watch --json
	run 0 "the watches have ended" $sock --json status
	json "no watchers left" 'd["watchers"] == 0'
}

# ---- usage errors (exit 2) and help (exit 0)

run 2 "no command"
run 2 "unknown command" frobnicate
run 2 "unknown option" --frobnicate status
run 2 "status takes no argument" status extra
run 2 "vms does not take --running" vms --running
run 2 "migrate without --to" migrate vm-1 --peer-name host-b.test
run 2 "migration without an id" migration
run 2 "--timeout not a number" --timeout soon status
run 2 "--count 0" watch --count 0
run 2 "--socket with --address" --socket /x --address 127.0.0.1:1 --ca a --cert b --key c status
run 2 "--address without certificates" --address 127.0.0.1:1 status
run 0 "--help" --help
contains "$tmp/out" "Exit status" "--help lists the exit codes"
for c in status vms migrations migration migrate abort watch; do
	run 0 "$c --help" "$c" --help
	contains "$tmp/out" "Usage: vcounterctl [OPTIONS] $c" "$c --help"
done
run 0 "help migrate" help migrate
run 0 "--version" --version

# ---- transport failures (exit 3)

run 3 "a socket nobody listens on" --socket "$tmp/nobody.sock" status
contains "$tmp/err" "cannot connect" "unreachable socket: why"
run 3 "a port nobody listens on" --address 127.0.0.1:1 --ca "$certs/ca.pem" \
	--cert "$certs/ctl-reader.pem" --key "$certs/ctl-reader.key" status

# ---- TLS: the reader may look, not act; the operator may act; other CAs are refused

# shellcheck disable=SC2086
{
	run 0 "TLS reader: status" $reader status
	contains "$tmp/out" "host-a.test" "TLS status names the host"
	run 0 "TLS reader: vms --json" $reader --json vms
	json "TLS vms --json" 'd == {"vms": []}'
	run 5 "TLS reader: migrate (PERMISSION_DENIED)" $reader migrate no-such-vm \
		--to 127.0.0.1:1 --peer-name host-b.test
	contains "$tmp/err" "PERMISSION_DENIED" "reader migrate: the status"
	run 5 "TLS reader: abort (PERMISSION_DENIED)" $reader abort $unknown_id
	run 4 "TLS operator: migrate an unknown VM" $operator migrate no-such-vm \
		--to 127.0.0.1:1 --peer-name host-b.test
	run 3 "TLS: a controller certificate from another CA" $tls \
		--cert "$certs/ctl-other.pem" --key "$certs/ctl-other.key" status
	run 3 "TLS: the daemon is not who --server-name says" --address "127.0.0.1:$port" \
		--ca "$certs/ca.pem" --server-name host-b.test \
		--cert "$certs/ctl-operator.pem" --key "$certs/ctl-operator.key" status
	contains "$tmp/err" "certificate" "wrong server name: why"
	run 3 "TLS: a CA that did not sign the daemon" --address "127.0.0.1:$port" \
		--ca "$certs/other-ca.pem" --server-name host-a.test \
		--cert "$certs/ctl-operator.pem" --key "$certs/ctl-operator.key" status
}

# ---- a real VM (minivmm target, /dev/kvm): an event to watch, a VM to list

if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ -x "$minivmm_bin" ]; then
	# The watch must be accepted before the VM registers: wait until the daemon counts it.
	# shellcheck disable=SC2086
	${VC_CTL_WRAPPER:-} "$ctl_bin" $sock --timeout 20000 --json watch --vm ctl-vm --count 1 \
		>"$tmp/watch.out" 2>"$tmp/watch.err" &
	watch_pid=$!
	i=0
	while [ "$i" -lt 1000 ]; do
		# shellcheck disable=SC2086
		"$ctl_bin" $sock --json status >"$tmp/out" 2>/dev/null || :
		if python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["watchers"] < 1)' \
			"$tmp/out" 2>/dev/null; then
			break
		fi
		sleep 0.02
		i=$((i + 1))
	done
	"$minivmm_bin" target --listen 127.0.0.1:0 --port-file "$tmp/vmm-port" --vm-id ctl-vm \
		--vcounterd "$tmp/vmm.sock" --vcpus 2 >"$tmp/minivmm.log" 2>&1 &
	vmm_pid=$!
	set +e
	wait "$watch_pid"
	rc=$?
	set -e
	watch_pid=
	cp "$tmp/watch.out" "$tmp/out"
	if [ "$rc" -ne 0 ]; then
		fail "watch --count 1 of a registering VM: exit $rc"
		cat "$tmp/watch.err" "$tmp/minivmm.log"
	else
		echo "ok: watch --count 1 saw the VM register"
		json "watch --json: the event" 'len(lines) == 1 and
			lines[0]["kind"] == "vm-registered" and lines[0]["vm"]["vm_id"] == "ctl-vm" and
			lines[0]["migration"] is None and lines[0]["seq"] >= 1'
	fi
	wait_for -s "$tmp/vmm-port" 1000 || :
	# shellcheck disable=SC2086
	{
		run 0 "vms --json, one VM" $sock --json vms
		json "vms lists the VM" 'len(d["vms"]) == 1 and d["vms"][0]["vm_id"] == "ctl-vm" and
			d["vms"][0]["role"] == "target" and d["vms"][0]["vcpu_count"] == 2'
		run 0 "vms, one VM" $sock vms
		contains "$tmp/out" "ctl-vm" "vms table"
		run 1 "migrate a target VM (FAILED_PRECONDITION)" $sock migrate ctl-vm \
			--to 127.0.0.1:1 --peer-name host-b.test
		contains "$tmp/err" "FAILED_PRECONDITION" "migrate a target: the status"
	}
	kill "$vmm_pid" 2>/dev/null || :
	wait "$vmm_pid" 2>/dev/null || :
	vmm_pid=
else
	echo "skip: no usable /dev/kvm: the watched VM registration is not tested"
fi

# ---- the daemon survived all of it, and exits cleanly

if ! kill -0 "$daemon_pid" 2>/dev/null; then
	fail "vcounterd died"
	cat "$tmp/daemon.log"
else
	kill "$daemon_pid"
	set +e
	wait "$daemon_pid"
	rc=$?
	set -e
	daemon_pid=
	if [ "$rc" -ne 0 ]; then
		fail "vcounterd exited $rc"
		tail -n 40 "$tmp/daemon.log"
	fi
fi

# ---- a daemon that cannot open /dev/kvm, as the hardened service runs (uid 65534 here): the
# backends' kernel support comes from the VMMs' probes instead

if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && [ -c /dev/kvm ] &&
	! setpriv --reuid=65534 --regid=65534 --clear-groups test -r /dev/kvm; then
	nokvm=$tmp/nokvm
	mkdir -p "$nokvm"
	chmod 0711 "$tmp" # uid 65534 must reach its own directory below
	chmod 0777 "$nokvm"
	: >"$nokvm/empty.conf"
	chmod 0644 "$nokvm/empty.conf"
	# shellcheck disable=SC2086
	setpriv --reuid=65534 --regid=65534 --clear-groups ${VC_DAEMON_WRAPPER:-} "$daemon_bin" \
		--config "$nokvm/empty.conf" --vmm-socket "$nokvm/vmm.sock" \
		--control-socket "$nokvm/control.sock" --allow-uid 0 --log-level debug \
		>"$nokvm/daemon.log" 2>&1 &
	daemon_pid=$!
	wait_for -S "$nokvm/control.sock" "$rounds" || cat "$nokvm/daemon.log"
	run 0 "status of a daemon without /dev/kvm" --socket "$nokvm/control.sock" --json status
	json "no /dev/kvm: no backend claimed before a VM shows one" 'all(
		not b["kernel_support"] and "no /dev/kvm here" in b["detail"] and
		"not seen in any registered VM" in b["detail"] for b in d["backends"])'
	if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ -x "$minivmm_bin" ]; then
		"$minivmm_bin" target --listen 127.0.0.1:0 --port-file "$nokvm/vmm-port" \
			--vm-id nokvm-vm --vcounterd "$nokvm/vmm.sock" --vcpus 1 \
			>"$nokvm/minivmm.log" 2>&1 &
		vmm_pid=$!
		i=0 # registered = probed: kvm-x86's VM count says so
		while [ "$i" -lt 500 ]; do
			"$ctl_bin" --socket "$nokvm/control.sock" --json status >"$tmp/out" 2>/dev/null || :
			python3 -c 'import json,sys; sys.exit(sum(b["vm_count"] for b in
				json.load(open(sys.argv[1]))["backends"]) < 1)' "$tmp/out" 2>/dev/null && break
			sleep 0.02
			i=$((i + 1))
		done
		run 0 "status once a VM registered" --socket "$nokvm/control.sock" --json status
		json "no /dev/kvm: the VM's probe shows what this KVM offers" '
			[b for b in d["backends"] if b["backend"] == "kvm-x86"][0]["kernel_support"] and
			"VMs registered with it" in
			[b for b in d["backends"] if b["backend"] == "kvm-x86"][0]["detail"]'
		kill "$vmm_pid" 2>/dev/null || :
		wait "$vmm_pid" 2>/dev/null || :
		vmm_pid=
	fi
	kill "$daemon_pid"
	set +e
	wait "$daemon_pid"
	rc=$?
	set -e
	daemon_pid=
	[ "$rc" -eq 0 ] || { fail "the daemon without /dev/kvm exited $rc"; cat "$nokvm/daemon.log"; }
else
	echo "skip: not root, no setpriv or /dev/kvm readable by uid 65534: the daemon without /dev/kvm"
fi

if [ "$failures" -ne 0 ]; then
	echo "$failures failure(s)"
	exit 1
fi
echo "all vcounterctl checks passed"
