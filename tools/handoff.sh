#!/bin/sh
# handoff.sh [OPTIONS] BINDIR CERTDIR WORKDIR [VCPUS] - by-offset handoffs between two
# vcounterd on loopback (host-a -> host-b, mutual TLS), driven by two minivmm; or, with
# --modes, also the by-value baseline (minivmm --by-value, no daemon).
# POSIX sh: it runs on the host (tools/demo) and as the payload inside the
# nested-KVM rig (busybox). Prints both minivmms' output; exit 0 when every
# handoff completed, 2 when the target refused for lack of offset control,
# 1 otherwise (with the daemons' logs).
#
# Options (the defaults give one by-offset handoff, as tools/demo and
# tests/integration/handoff-test expect):
#   --runs K          K rounds (default 1), one pair of daemons for all of them
#   --modes LIST      what each round does, in order: offset, by-value, or
#                     offset,by-value (default offset)
#   --seconds S       how long the source's guest runs before it moves (default 0.5)
#   --vcpu-skew C     vCPU i's offset starts i * C cycles after vCPU 0's (default 1000003)
#   --guest-uptime S  the guest's TSC starts as if it had run S seconds (default 0)
#   --results-only    print only the targets' "result ..." lines (and failures)
#   --backends-a LIST, --backends-b LIST
#                     vcounterd --backends for host-a (source) / host-b (target), e.g.
#                     kvm-x86 to make one side act as an unpatched host on a patched kernel
#   --controlled      a fleet controller starts each by-offset handoff: the source minivmm
#                     runs with --controlled and BINDIR/vcounterctl migrates it through
#                     host-a's control API (gRPC), watching it to the outcome
#   --register-late   the source minivmm registers its VM after the guest has run
#                     (minivmm source --register-late: pause, register, resume)
set -eu

usage="usage: handoff.sh [--runs K] [--modes LIST] [--seconds S] [--vcpu-skew C] [--guest-uptime S] [--results-only] [--backends-a LIST] [--backends-b LIST] [--controlled] [--register-late] BINDIR CERTDIR WORKDIR [VCPUS]"
runs=1
modes=offset
seconds=0.5
skew=1000003
uptime=0
results_only=
backends_a=
backends_b=
controlled=
register_late=
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=${2:?--runs needs a count}; shift 2 ;;
	--modes) modes=${2:?--modes needs a list}; shift 2 ;;
	--seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
	--vcpu-skew) skew=${2:?--vcpu-skew needs cycles}; shift 2 ;;
	--guest-uptime) uptime=${2:?--guest-uptime needs seconds}; shift 2 ;;
	--results-only) results_only=1; shift ;;
	--backends-a) backends_a=${2:?--backends-a needs a list}; shift 2 ;;
	--backends-b) backends_b=${2:?--backends-b needs a list}; shift 2 ;;
	--controlled) controlled=1; shift ;;
	--register-late) register_late=1; shift ;;
	--) shift; break ;;
	-*) echo "$usage" >&2; exit 1 ;;
	*) break ;;
	esac
done
modes=$(echo "$modes" | tr ',' ' ')
need_daemons=
n_modes=0
for m in $modes; do
	n_modes=$((n_modes + 1))
	case $m in
	offset) need_daemons=1 ;;
	by-value) ;;
	*) echo "handoff: unknown mode '$m' (offset, by-value)" >&2; exit 1 ;;
	esac
done

bin=${1:?$usage}
certs=${2:?certificate directory}
dir=${3:?work directory}
vcpus=${4:-2}
mkdir -p "$dir"

wait_for() {
	i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1))
		if [ "$i" -gt 1000 ]; then
			echo "handoff: $1 did not appear" >&2
			return 1
		fi
		sleep 0.01
	done
}

daemon_a=
daemon_b=
trap 'kill $daemon_a $daemon_b 2>/dev/null || true' EXIT
if [ -n "$need_daemons" ]; then
	set --
	[ -z "$backends_a" ] || set -- --backends "$backends_a"
	"$bin/vcounterd" "$@" --vmm-socket "$dir/a.sock" --control-socket "$dir/a.ctl" \
		--host-name host-a.test \
		--ca "$certs/ca.pem" --cert "$certs/host-a.pem" --key "$certs/host-a.key" \
		--allow-peer host-b.test 2>"$dir/host-a.log" &
	daemon_a=$!
	set --
	[ -z "$backends_b" ] || set -- --backends "$backends_b"
	"$bin/vcounterd" "$@" --vmm-socket "$dir/b.sock" --control-socket "$dir/b.ctl" \
		--host-name host-b.test \
		--listen 127.0.0.1:0 --port-file "$dir/b.port" \
		--ca "$certs/ca.pem" --cert "$certs/host-b.pem" --key "$certs/host-b.key" \
		--allow-peer host-a.test 2>"$dir/host-b.log" &
	daemon_b=$!
	wait_for "$dir/a.sock"
	wait_for "$dir/b.port"
fi

# One handoff: handoff_once RUN MODE VM_ID; outputs in $dir/{source,target}.RUN.MODE.out.
handoff_once() {
	run=$1
	mode=$2
	vm_id=$3
	tag=$run.$mode
	if [ "$mode" = by-value ]; then
		set -- --by-value
	else
		set -- --vcounterd "$dir/b.sock"
	fi
	"$bin/minivmm" target "$@" --vcpus "$vcpus" --listen 127.0.0.1:0 \
		--port-file "$dir/t.$tag.port" --vm-id "$vm_id" >"$dir/target.$tag.out" 2>&1 &
	target=$!
	wait_for "$dir/t.$tag.port"
	if [ "$mode" = by-value ]; then
		set -- --by-value
	elif [ -n "$controlled" ]; then
		set -- --vcounterd "$dir/a.sock" --controlled
	else
		set -- --vcounterd "$dir/a.sock" --peer "127.0.0.1:$(cat "$dir/b.port")" \
			--peer-name host-b.test
	fi
	[ "$mode" = by-value ] || [ -z "$register_late" ] || set -- "$@" --register-late
	set +e
	"$bin/minivmm" source "$@" --vcpus "$vcpus" --seconds "$seconds" \
		--to "127.0.0.1:$(cat "$dir/t.$tag.port")" --vm-id "$vm_id" \
		--vcpu-skew "$skew" --guest-uptime "$uptime" >"$dir/source.$tag.out" 2>&1 &
	source=$!
	ctl_rc=0
	if [ "$mode" = offset ] && [ -n "$controlled" ]; then
		# The controller: once the source waits, migrate it and watch to the end.
		i=0
		while ! grep -q "waiting for a controller" "$dir/source.$tag.out"; do
			i=$((i + 1))
			if [ "$i" -gt 3000 ] || ! kill -0 "$source" 2>/dev/null; then
				echo "handoff: the source never waited for a controller" >&2
				break
			fi
			sleep 0.01
		done
		"$bin/vcounterctl" --socket "$dir/a.ctl" migrate "$vm_id" \
			--to "127.0.0.1:$(cat "$dir/b.port")" --peer-name host-b.test --wait \
			>"$dir/ctl.$tag.out" 2>&1
		ctl_rc=$?
		sed 's/^/controller: /' "$dir/ctl.$tag.out" >>"$dir/source.$tag.out"
	fi
	wait "$source"
	source_rc=$?
	wait "$target"
	target_rc=$?
	set -e
	[ "$source_rc" = 0 ] && [ "$target_rc" = 0 ] && [ "$ctl_rc" = 0 ]
}

single=
[ "$runs" = 1 ] && [ "$n_modes" = 1 ] && single=1
run=1
while [ "$run" -le "$runs" ]; do
	for mode in $modes; do
		if [ -n "$single" ]; then
			vm_id=demo-vm
		else
			vm_id=demo-vm-$run-$mode
		fi
		tag=$run.$mode
		ok=1
		handoff_once "$run" "$mode" "$vm_id" || ok=
		if [ -n "$results_only" ] && [ -n "$ok" ]; then
			grep -h "^result " "$dir/target.$tag.out" | sed "s/^result /result run=$run /"
		elif [ -z "$results_only" ]; then
			[ -n "$single" ] || echo "==== run=$run mode=$mode"
			cat "$dir/source.$tag.out" "$dir/target.$tag.out"
		fi
		if [ -z "$ok" ]; then
			[ -z "$results_only" ] ||
				cat "$dir/source.$tag.out" "$dir/target.$tag.out"
			if grep -q "offset control unavailable" "$dir/target.$tag.out"; then
				exit 2
			fi
			for host in a b; do
				if [ -f "$dir/host-$host.log" ]; then
					echo "---- host-$host log" >&2
					cat "$dir/host-$host.log" >&2
				fi
			done
			exit 1
		fi
	done
	run=$((run + 1))
done

if [ -n "$need_daemons" ] && [ -z "$results_only" ]; then
	grep -h "step=done" "$dir/host-a.log" "$dir/host-b.log" | sed 's/^vcounterd\[[0-9.]*\] /log: /'
fi
exit 0
