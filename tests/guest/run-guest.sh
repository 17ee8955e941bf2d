#!/usr/bin/env bash
# run-guest.sh — boot scanway's virtio-gpu test guest in QEMU against a
# vhost-user-gpu backend socket (scanway, or QEMU's C backend).  See README.md.
#
#   run-guest.sh --socket PATH [--test NAME] [--mode WxH] [--frames N] [--hold S]
#                [--outputs N [--no-force-heads] [--head-mode WxH]]
#                [--reconnect-ms MS] [--socket-wait S] [--timeout S]
#                [--workdir DIR] [--serial LOG] [--qmp PATH] [--quiet]
#                [--mem 512M] [--smp N] [--accel auto|kvm|tcg] [--cpu MODEL]
#                [--args "..."] [--append "..."] [--qemu-arg ARG]...
#                [--out DIR | --kernel F --initrd F] [--dry-run]
#                [--start-backend [--backend-bin PATH] [--backend-args "..."]]
#                [--screendump [HEAD:]FILE]... [--check] [--settle S] [--ready REGEX]
#                [--rootfs IMG] [--builtin DEVICE] [--display SPEC] [--xvfb [--xvfb-size WxH]]
#
# --rootfs IMG: the 3D tests' root filesystem (build-rootfs-3d.sh), read-only on
# virtio-blk, guest.root=/dev/vda.  --builtin DEVICE: no vhost-user, QEMU's own DEVICE
# instead (virtio-gpu-gl-pci: QEMU's virglrenderer, the 3D reference); --socket is then
# not needed.  --display SPEC: QEMU's -display (default none; sdl,gl=on with --builtin
# virtio-gpu-gl-pci).  --xvfb: a private Xvfb (--xvfb-size, 1920x1200) for that display,
# ended afterwards.  --screendump x:FILE: screenshot of the whole X screen (ImageMagick
# import; QMP screendump has no surface for a GL scanout), --check finds the picture
# in it (check-pattern.py --locate).
#
# QEMU is the vhost-user client: the backend listens on --socket; run-guest
# waits up to --socket-wait seconds (10) for it to appear.  --reconnect-ms MS
# adds reconnect-ms=MS to the socket chardev.  Caveat (QEMU 10.0.2): such a
# chardev connects asynchronously, and vhost-user-gpu-pci does not wait for it
# at realize, so QEMU then fails at start with "Failed to set msg fds" /
# "vhost_backend_init failed: Protocol error" (nor does the device reconnect
# after a lost connection).  A new VM on the same socket needs a new QEMU.
# --start-backend starts QEMU's C backend (/usr/lib/qemu/vhost-user-gpu) on
# --socket first and ends it afterwards.
# The guest's serial console goes to WORKDIR/serial.log (GUEST-... lines are
# echoed unless --quiet), QMP listens on WORKDIR/qmp.sock, QEMU's pid is
# written to WORKDIR/qemu.pid.
#
# Without --screendump: runs until the guest powers off (the test ends and
# --hold expires), QEMU exits (the caller quits it over QMP or kills it), or
# --timeout passes (rc 124).  rc 0 when the test exited 0, or reached its
# READY/DONE line without a GUEST-ERROR.
# With --screendump (QMP screendump; only meaningful with a backend that
# forwards scanouts to QEMU, like the C backend): waits for the READY/DONE
# line, takes the screenshot(s), checks them with --check, then quits QEMU.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SOCKET= TEST=pattern OUTPUTS=1 MEM=512M SERIAL= QMP= MODE= FRAMES= HOLD= GARGS= APPEND=
# TCG's "max" CPU reports AuthenticAMD family 6, which LLVM-based guest code
# mistakes for a 32-bit Athlon; an Intel family/model avoids that.
TCG_CPU=max,vendor=GenuineIntel,family=6,model=85
ACCEL=auto CPU= SMP=1 OUTDIR=${CARGO_TARGET_DIR:-$REPO/target}/guest KERNEL= INITRD=
START_BACKEND=0 BACKEND_BIN=/usr/lib/qemu/vhost-user-gpu BACKEND_ARGS=
DUMPS=() CHECK=0 SETTLE=0.5 TIMEOUT=300 WORKDIR= QUIET=0 EXTRA_QEMU=() DRY_RUN=0
FORCE_HEADS=1 HEAD_MODE=1024x768 READY_RE= RECONNECT_MS= SOCKET_WAIT=10
DISPLAY_SPEC=none BUILTIN= XVFB=0 XVFB_SIZE=1920x1200

usage() { sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
	case "$1" in
	--socket) SOCKET=$2; shift ;;
	--test) TEST=$2; shift ;;
	--outputs) OUTPUTS=$2; shift ;;
	--no-force-heads) FORCE_HEADS=0 ;;
	--head-mode) HEAD_MODE=$2; shift ;;
	--mem) MEM=$2; shift ;;
	--serial) SERIAL=$2; shift ;;
	--qmp) QMP=$2; shift ;;
	--mode) MODE=$2; shift ;;
	--frames) FRAMES=$2; shift ;;
	--hold) HOLD=$2; shift ;;
	--args) GARGS=$2; shift ;;
	--append) APPEND=$2; shift ;;
	--accel) ACCEL=$2; shift ;;
	--cpu) CPU=$2; shift ;;
	--smp) SMP=$2; shift ;;
	--out) OUTDIR=$2; shift ;;
	--kernel) KERNEL=$2; shift ;;
	--initrd) INITRD=$2; shift ;;
	--reconnect-ms) RECONNECT_MS=$2; shift ;;
	--socket-wait) SOCKET_WAIT=$2; shift ;;
	--start-backend) START_BACKEND=1 ;;
	--backend-bin) BACKEND_BIN=$2; shift ;;
	--backend-args) BACKEND_ARGS=$2; shift ;;
	--screendump) DUMPS+=("$2"); shift ;;
	--check) CHECK=1 ;;
	--settle) SETTLE=$2; shift ;;
	--ready) READY_RE=$2; shift ;;
	--timeout) TIMEOUT=$2; shift ;;
	--workdir) WORKDIR=$2; shift ;;
	--quiet) QUIET=1 ;;
	--qemu-arg) EXTRA_QEMU+=("$2"); shift ;;
	--rootfs) ROOTFS=$2; shift ;;
	--builtin) BUILTIN=$2; shift ;;
	--display) DISPLAY_SPEC=$2; shift ;;
	--xvfb) XVFB=1 ;;
	--xvfb-size) XVFB_SIZE=$2; shift ;;
	--dry-run) DRY_RUN=1 ;;
	-h | --help) usage 0 ;;
	*) echo "run-guest: unknown option $1" >&2; usage ;;
	esac
	shift
done

log() { printf '[run-guest] %s\n' "$*" >&2; }
die() { printf '[run-guest] ERROR: %s\n' "$*" >&2; exit 2; }

[ -n "$SOCKET" ] || [ -n "$BUILTIN" ] || die "--socket PATH is required (or --builtin DEVICE)"
[ -z "$BUILTIN" ] || START_BACKEND=0
[[ "$OUTPUTS" =~ ^[1-9][0-9]*$ ]] || die "--outputs must be a positive number"
[ -z "$RECONNECT_MS" ] || [[ "$RECONNECT_MS" =~ ^[0-9]+$ ]] || die "--reconnect-ms must be a number"
KERNEL=${KERNEL:-$OUTDIR/vmlinuz}
INITRD=${INITRD:-$OUTDIR/initramfs.cpio.gz}
[ -r "$KERNEL" ] && [ -r "$INITRD" ] || die "no guest in $OUTDIR (run tests/guest/build-guest.sh first)"
if [ -z "$WORKDIR" ]; then WORKDIR=$(mktemp -d /tmp/scanway-guest.XXXXXX); fi
mkdir -p "$WORKDIR"
SERIAL=${SERIAL:-$WORKDIR/serial.log}
QMP=${QMP:-$WORKDIR/qmp.sock}

# ---------------------------------------------------------------- accel
# /dev/kvm may exist but be unusable for a normal kernel: nested "kvm-pvm"
# only runs PVM-enabled guests ("KVM internal error", "failed to set MSR
# 0x10a" with a stock Debian kernel), so auto picks TCG there.
if [ "$ACCEL" = auto ]; then
	if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case "$ACCEL" in
kvm) ACCEL_ARGS=(-accel kvm -cpu "${CPU:-host}") ;;
tcg) ACCEL_ARGS=(-accel tcg -cpu "${CPU:-$TCG_CPU}") ;;
*) die "--accel must be auto, kvm or tcg" ;;
esac

# ------------------------------------------------------------ command line
CMDLINE="console=ttyS0 panic=-1 loglevel=4 vt.global_cursor_default=0 guest.test=$TEST"
[ -n "$MODE" ] && CMDLINE+=" guest.mode=$MODE"
[ -n "$FRAMES" ] && CMDLINE+=" guest.frames=$FRAMES"
[ -n "$HOLD" ] && CMDLINE+=" guest.hold=$HOLD"
[ -n "$GARGS" ] && CMDLINE+=" guest.args=${GARGS// /_}"
# A backend that asks QEMU's UI which outputs are enabled (the C backend with
# -display none) enables only output 0, so by default heads 2..N are
# force-connected from the guest side (video=Virtual-K:WxHe).  A backend that
# answers GET_DISPLAY_INFO itself (scanway) is tested with --no-force-heads.
if [ "$OUTPUTS" -gt 1 ] && [ "$FORCE_HEADS" = 1 ]; then
	for ((k = 2; k <= OUTPUTS; k++)); do CMDLINE+=" video=Virtual-$k:${HEAD_MODE}e"; done
fi
[ -n "$APPEND" ] && CMDLINE+=" $APPEND"
if [ -n "${ROOTFS:-}" ]; then
	# the 3D tests' root filesystem (build-rootfs-3d.sh), read-only on virtio-blk
	EXTRA_QEMU+=(-drive "file=$ROOTFS,if=virtio,format=raw,readonly=on")
	CMDLINE+=" guest.root=/dev/vda"
fi

CHARDEV="socket,id=vgpu0,path=$SOCKET"
[ -n "$RECONNECT_MS" ] && CHARDEV+=",reconnect-ms=$RECONNECT_MS"
# vhost-user needs the guest RAM in shared memory (memfd, share=on)
QEMU=(qemu-system-x86_64 "${ACCEL_ARGS[@]}" -machine "q35,memory-backend=mem0" -m "$MEM" -smp "$SMP"
	-object "memory-backend-memfd,id=mem0,size=$MEM,share=on"
	-kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE"
	-nodefaults -vga none -display "$DISPLAY_SPEC" -no-reboot
	-chardev "file,id=ser0,path=$SERIAL" -serial chardev:ser0
	-qmp "unix:$QMP,server=on,wait=off")
if [ -n "$BUILTIN" ]; then
	QEMU+=(-device "$BUILTIN,id=gpu0,max_outputs=$OUTPUTS")
else
	QEMU+=(-chardev "$CHARDEV" -device "vhost-user-gpu-pci,chardev=vgpu0,id=gpu0,max_outputs=$OUTPUTS")
fi
QEMU+=("${EXTRA_QEMU[@]}")

shq() { # quote an argument for display only where the shell needs it
	if [[ "$1" =~ ^[A-Za-z0-9_,.=:/+@%-]+$ ]]; then printf ' %s' "$1"; else printf " '%s'" "${1//\'/\'\\\'\'}"; fi
}
{ printf '[run-guest] QEMU command:'; for a in "${QEMU[@]}"; do shq "$a"; done; printf '\n'; } >&2
[ "$DRY_RUN" = 1 ] && exit 0

: >"$SERIAL"
rm -f "$QMP" "$WORKDIR/qemu.pid"

# --------------------------------------------------------------- processes
BACKEND_PID= QEMU_PID= TAIL_PID= XVFB_PID=
cleanup() {
	local p
	for p in "$TAIL_PID" "$QEMU_PID" "$BACKEND_PID" "$XVFB_PID"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
	done
	rm -f "$QMP"
	[ "$START_BACKEND" = 1 ] && rm -f "$SOCKET"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$XVFB" = 1 ]; then
	command -v Xvfb >/dev/null || die "--xvfb needs Xvfb (apt-get install xvfb)"
	n=90
	while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
	Xvfb ":$n" -screen 0 "${XVFB_SIZE}x24" -nolisten tcp >"$WORKDIR/xvfb.log" 2>&1 &
	XVFB_PID=$!
	for _ in $(seq 100); do [ -e "/tmp/.X11-unix/X$n" ] && break; sleep 0.1; done
	[ -e "/tmp/.X11-unix/X$n" ] || die "Xvfb :$n did not start ($(tail -n 3 "$WORKDIR/xvfb.log"))"
	export DISPLAY=":$n"
	unset WAYLAND_DISPLAY
	log "Xvfb :$n (pid $XVFB_PID, ${XVFB_SIZE})"
fi
if [ "$START_BACKEND" = 1 ]; then
	rm -f "$SOCKET"
	# shellcheck disable=SC2086
	"$BACKEND_BIN" --socket-path="$SOCKET" $BACKEND_ARGS >"$WORKDIR/backend.log" 2>&1 &
	BACKEND_PID=$!
	log "backend: $BACKEND_BIN --socket-path=$SOCKET $BACKEND_ARGS (pid $BACKEND_PID, log $WORKDIR/backend.log)"
fi
if [ -z "$BUILTIN" ]; then
	n=$(awk "BEGIN{print int($SOCKET_WAIT * 10)}")
	for ((i = 0; i < n; i++)); do [ -S "$SOCKET" ] && break; sleep 0.1; done
	[ -S "$SOCKET" ] || die "no vhost-user socket at $SOCKET after ${SOCKET_WAIT}s"
fi

T0=$(date +%s.%N)
"${QEMU[@]}" >"$WORKDIR/qemu.log" 2>&1 </dev/null &
QEMU_PID=$!
echo "$QEMU_PID" >"$WORKDIR/qemu.pid"
log "QEMU pid $QEMU_PID, serial $SERIAL, QMP $QMP"
if [ "$QUIET" = 0 ]; then
	tail -n +1 -F --pid="$QEMU_PID" "$SERIAL" 2>/dev/null | grep --line-buffered -E '^GUEST-|Kernel panic|BUG:|WARNING:|\[drm\]' &
	TAIL_PID=$!
fi

elapsed() { awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$T0}"; }
alive() { kill -0 "$QEMU_PID" 2>/dev/null; }
deadline=$(($(date +%s) + TIMEOUT))
timed_out() { [ "$TIMEOUT" != 0 ] && [ "$(date +%s)" -ge "$deadline" ]; }

READY_RE=${READY_RE:-'^GUEST-(PATTERN-READY|MULTIHEAD-READY|ANIMATE-DONE|FBPATTERN-READY|EDID-DONE|CURSOR-READY|3D-DONE|GLES-READY)|^kmscube: +renderer:'}
rc=0
if [ ${#DUMPS[@]} -gt 0 ]; then
	while alive && ! grep -qE "$READY_RE|^GUEST-ERROR|^GUEST-TEST-EXIT" "$SERIAL" && ! timed_out; do sleep 0.2; done
	if ! grep -qE "$READY_RE" "$SERIAL"; then
		log "guest never got ready ($(elapsed)s); last serial lines:"
		tail -n 15 "$SERIAL" >&2
		alive || log "QEMU exited: $(tail -n 5 "$WORKDIR/qemu.log")"
		exit 1
	fi
	readyline=$(grep -m1 -E "$READY_RE" "$SERIAL")
	log "ready after $(elapsed)s: $readyline"
	sleep "$SETTLE"
	frame=$(sed -n 's/.* picture=\([0-9]*\).*/\1/p' <<<"$readyline")
	for d in "${DUMPS[@]}"; do
		alive || { log "QEMU already exited (the guest powered off): no screendump"; rc=1; break; }
		head=0 file=$d
		if [[ "$d" =~ ^x:(.*)$ ]]; then
			# the whole X screen (QEMU's window in Xvfb); the window may still be
			# settling (resize to the guest's mode), so up to 3 tries
			file=${BASH_REMATCH[1]} ok=0
			command -v import >/dev/null || { log "x: screenshots need ImageMagick's import"; rc=1; continue; }
			[ -n "${DISPLAY:-}" ] || { log "x: screenshots need an X display (--xvfb)"; rc=1; continue; }
			xfmt=ppm; [[ "$file" == *.png ]] && xfmt=png24
			size=$(sed -n 's/^GUEST-[A-Z-]* \([0-9]*x[0-9]*\).*/\1/p' <<<"$readyline")
			for try in 1 2 3; do
				[ "$try" = 1 ] || sleep 1
				import -window root -depth 8 "$xfmt:$file" || continue
				[ "$CHECK" = 1 ] || { ok=1; break; }
				python3 "$HERE/check-pattern.py" "$file" --locate --frame "${frame:-0}" ${size:+--size "$size"} >"$WORKDIR/check.log" 2>&1 && { ok=1; break; }
			done
			[ "$CHECK" = 1 ] && cat "$WORKDIR/check.log" >&2
			[ "$ok" = 1 ] && log "X screenshot ($DISPLAY) -> $file" || { log "X screenshot failed (or its check): $file"; rc=1; }
			continue
		fi
		if [[ "$d" =~ ^([0-9]+):(.*)$ ]]; then head=${BASH_REMATCH[1]} file=${BASH_REMATCH[2]}; fi
		fmt=ppm; [[ "$file" == *.png ]] && fmt=png
		python3 "$HERE/qmp.py" "$QMP" screendump "$file" --format "$fmt" --device gpu0 --head "$head" >/dev/null || rc=1
		if [ -s "$file" ]; then log "screendump head $head -> $file"; else log "screendump head $head failed"; rc=1; continue; fi
		if [ "$CHECK" = 1 ]; then
			python3 "$HERE/check-pattern.py" "$file" --head "$head" --frame "${frame:-0}" >&2 || rc=1
		fi
	done
	alive && { python3 "$HERE/qmp.py" "$QMP" quit >/dev/null 2>&1 || true; }
	for _ in $(seq 50); do alive || break; sleep 0.1; done
else
	while alive && ! timed_out; do sleep 0.2; done
	if alive; then
		log "timeout ${TIMEOUT}s: quitting QEMU"
		python3 "$HERE/qmp.py" "$QMP" quit >/dev/null 2>&1 || true
		rc=124
	fi
	# success: the test exited 0, or it reached READY/DONE (and the caller
	# quit QEMU while the guest was holding the picture) without an error
	if [ $rc = 0 ] && ! grep -qE '^GUEST-TEST-EXIT .* rc=0' "$SERIAL"; then
		if ! grep -qE "$READY_RE" "$SERIAL" || grep -qE '^GUEST-ERROR|^GUEST-TEST-EXIT' "$SERIAL"; then rc=1; fi
	fi
fi
if alive; then kill "$QEMU_PID" 2>/dev/null || true; fi
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
[ -n "$TAIL_PID" ] && { kill "$TAIL_PID" 2>/dev/null || true; wait "$TAIL_PID" 2>/dev/null || true; TAIL_PID=; }
grep -q . "$WORKDIR/qemu.log" && { log "QEMU stderr (last lines of $WORKDIR/qemu.log):"; tail -n 12 "$WORKDIR/qemu.log" | sed 's/^/    /' >&2; }
log "done in $(elapsed)s rc=$rc (serial log: $SERIAL)"
exit "$rc"
