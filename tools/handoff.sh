#!/bin/sh
# handoff.sh BINDIR CERTDIR WORKDIR [VCPUS] - one by-offset handoff between two
# vcounterd on loopback (host-a -> host-b, mutual TLS), driven by two minivmm.
# POSIX sh: it runs on the host (tools/demo) and as the payload inside the
# nested-KVM rig (busybox). Prints both minivmms' output; exit 0 when the
# handoff completed, 2 when the target refused for lack of offset control,
# 1 otherwise (with the daemons' logs).
set -eu

bin=${1:?usage: handoff.sh BINDIR CERTDIR WORKDIR [VCPUS]}
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

"$bin/vcounterd" --vmm-socket "$dir/a.sock" --host-name host-a.test \
	--ca "$certs/ca.pem" --cert "$certs/host-a.pem" --key "$certs/host-a.key" \
	--allow-peer host-b.test 2>"$dir/host-a.log" &
daemon_a=$!
"$bin/vcounterd" --vmm-socket "$dir/b.sock" --host-name host-b.test \
	--listen 127.0.0.1:0 --port-file "$dir/b.port" \
	--ca "$certs/ca.pem" --cert "$certs/host-b.pem" --key "$certs/host-b.key" \
	--allow-peer host-a.test 2>"$dir/host-b.log" &
daemon_b=$!
trap 'kill $daemon_a $daemon_b 2>/dev/null || true' EXIT
wait_for "$dir/a.sock"
wait_for "$dir/b.port"

"$bin/minivmm" target --vcounterd "$dir/b.sock" --vcpus "$vcpus" \
	--listen 127.0.0.1:0 --port-file "$dir/t.port" --vm-id demo-vm >"$dir/target.out" 2>&1 &
target=$!
wait_for "$dir/t.port"

set +e
"$bin/minivmm" source --vcounterd "$dir/a.sock" --vcpus "$vcpus" --seconds 0.5 \
	--to "127.0.0.1:$(cat "$dir/t.port")" --peer "127.0.0.1:$(cat "$dir/b.port")" \
	--peer-name host-b.test --vm-id demo-vm --vcpu-skew 1000003 >"$dir/source.out" 2>&1
source_rc=$?
wait "$target"
target_rc=$?
set -e

cat "$dir/source.out" "$dir/target.out"
if [ "$source_rc" = 0 ] && [ "$target_rc" = 0 ]; then
	grep -h "step=done" "$dir/host-a.log" "$dir/host-b.log" | sed 's/^vcounterd\[[0-9.]*\] /log: /'
	exit 0
fi
if grep -q "offset control unavailable" "$dir/target.out"; then
	exit 2
fi
echo "---- host-a log" >&2
cat "$dir/host-a.log" >&2
echo "---- host-b log" >&2
cat "$dir/host-b.log" >&2
exit 1
