# rig-prepare.sh - sourced by tests/qemu's drivers (live-migration-test on one rig host,
# two-host-migration-test on two): what both need before the rig boots, in one place.
#   rig_prepare: checks what must exist (else skip), builds the static L1 programs and the L2 guest
#     into $work, resolves the modes of $modes into run_modes (a vcounter mode whose QEMU lacks the
#     object, or without --build, is skipped alone: its reason in skipped) and fills files and bins
#     (run-in-vm / run-two-vms arguments) for every mode that runs.
# In: $me (the driver's name, for messages), $here $top $work $modes $build $qemu_vc $qemu_stock
# $firmware, and skip() (exit 77). Out: qemu_stock qemu_vc run_modes skipped files bins.
# shellcheck shell=bash
# shellcheck disable=SC2154 # the inputs above are the sourcing driver's variables

rig_prepare() {
	local m why bq f
	[ -n "$qemu_stock" ] || qemu_stock=$(command -v qemu-system-x86_64 || true)
	[ -x "$qemu_stock" ] || skip "no qemu-system-x86_64 (tests/vm/setup installs it)"
	command -v gcc >/dev/null || skip "no gcc for the static guest programs"
	for f in bios-microvm.bin pvh.bin linuxboot_dma.bin; do
		[ -e "$firmware/$f" ] || skip "no $firmware/$f (Debian package qemu-system-data)"
	done

	echo 'int main(void) { return 0; }' >"$work/t.c"
	gcc -static -o "$work/t" "$work/t.c" 2>/dev/null || skip "gcc cannot link static programs (libc6-dev)"
	local cflags=(-static -O2 -march=x86-64 -Wall -Wextra -Werror)
	gcc "${cflags[@]}" -pthread -o "$work/clock-probe" "$here/clock-probe.c"
	gcc "${cflags[@]}" -D_GNU_SOURCE -o "$work/clock-pair" "$here/clock-pair.c" "$here/../../common/unix_fd.c"
	gcc "${cflags[@]}" -o "$work/qmp" "$here/qmp.c"
	"$here/build-guest" "$work/l2" "$work/clock-probe" || {
		echo "$me: building the L2 guest failed" >&2
		exit 99
	}

	# --- the modes: what they need, in run order ----------------------------------------------
	run_modes=()
	skipped=()
	for m in ${modes//,/ }; do
		case $m in
		stock) run_modes+=(stock) ;;
		vcounter)
			why=
			if [ -z "$qemu_vc" ]; then
				# The patched QEMU, from qemu-patch/build-qemu's cache or built now (~2-6 min).
				bq=$("$top/qemu-patch/build-qemu") || {
					echo "$me: qemu-patch/build-qemu failed" >&2
					exit 99
				}
				qemu_vc=$(echo "$bq" | sed -n 's/^dir=//p')/bin/qemu-system-x86_64
			fi
			[ -n "$why" ] || [ -n "$build" ] || why="no --build (vcounterd, libvcounter.so)"
			[ -n "$why" ] || [ -x "$build/daemon/vcounterd" ] || why="no $build/daemon/vcounterd"
			if [ -z "$why" ] && ! LD_LIBRARY_PATH="$build/client" "$qemu_vc" -object help 2>/dev/null |
				grep -qw vcounter; then
				why="$qemu_vc has no vcounter object"
			fi
			if [ -n "$why" ]; then
				skipped+=("vcounter: $why")
			else
				run_modes+=(vcounter)
			fi
			;;
		*) echo "$me: unknown mode $m (stock, vcounter)" >&2; exit 2 ;;
		esac
	done
	for m in "${skipped[@]}"; do echo "$me: mode $m: skipped"; done
	[ ${#run_modes[@]} -gt 0 ] || skip "no mode can run: ${skipped[*]}"

	# --- what goes into L1 --------------------------------------------------------------------
	files=(--file "$work/l2/vmlinux:/l2/vmlinux" --file "$work/l2/initrd.gz:/l2/initrd.gz")
	for f in bios-microvm.bin pvh.bin linuxboot_dma.bin; do
		files+=(--file "$firmware/$f:/usr/share/qemu-fw/$f")
	done
	files+=(--file "$qemu_stock:/opt/qemu-stock/qemu-system-x86_64")
	bins=(--bin "$work/clock-pair" --bin "$work/qmp" --bin "$here/migrate-guest")
	case " ${run_modes[*]} " in
	*" vcounter "*)
		# Certificates made here: L1 has no openssl.
		sh "$top/tests/gen-certs.sh" "$work/certs"
		for f in ca.pem host-a.pem host-a.key host-b.pem host-b.key; do
			files+=(--file "$work/certs/$f:/certs/$f")
		done
		files+=(--file "$qemu_vc:/opt/qemu-vcounter/qemu-system-x86_64")
		bins+=(--bin "$build/daemon/vcounterd" --bin "$build/client/libvcounter.so"
			--bin "$build/client/vcounterctl")
		;;
	esac
}

# rig_qemu_of MODE: where that mode's QEMU is in L1.
rig_qemu_of() {
	case $1 in
	vcounter) echo /opt/qemu-vcounter/qemu-system-x86_64 ;;
	*) echo /opt/qemu-stock/qemu-system-x86_64 ;;
	esac
}
