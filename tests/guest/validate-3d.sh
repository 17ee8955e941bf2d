#!/usr/bin/env bash
# validate-3d.sh [OUTDIR] [RESULTS_DIR] — the 3D guest against QEMU's *built-in*
# virtio-gpu-gl-pci (QEMU's own virglrenderer), shown with -display sdl,gl=on in a
# private Xvfb (host Mesa, llvmpipe without a GPU). This is the reference the 3D
# tests through scanway are held to, and the baseline of the 3D benchmark.
#
#   pattern-2d            gpu-test's dumb-buffer picture (no Mesa): the X-screenshot
#                         path itself is exact
#   kmscube               guest Mesa -> virgl: GUEST-3D-DONE rc=0, renderer "virgl (...)";
#                         fps = kmscube's own last "Rendered N frames" report
#   gles-pattern          src/gles-pattern.c, preferred mode: renderer virgl, and the X
#                         screenshot holds the picture pixel-exactly (check-pattern --locate)
#   gles-pattern-1024x768 the same at guest.mode=1024x768
#   gles-bench            gles-pattern --frames N (N redraws + page flips): fps, and the
#                         picture left on screen is still exact
# Ends with "N passed, N failed" (exit 0 when none failed).
#
# Env: FRAMES (kmscube frames, 300), GLES_FRAMES (gles-bench, 300), ROOTFS (image; else
# OUTDIR/rootfs-3d.ext4, built/refreshed by build-rootfs-3d.sh), NO_BUILD=1 (use OUTDIR
# as it is), CASES="kmscube gles-pattern ..." (a subset), XVFB_SIZE (1920x1200),
# TRACE=1 (QEMU's virtio_gpu_* trace events into RESULTS_DIR/CASE/trace.log and a
# per-command count), TIMEOUT (s per boot, 300).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(realpath -m "${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/guest}")
RES=$(realpath -m "${2:-$(mktemp -d /tmp/scanway-validate3d.XXXXXX)}")
FRAMES=${FRAMES:-300}
GLES_FRAMES=${GLES_FRAMES:-300}
XVFB_SIZE=${XVFB_SIZE:-1920x1200}
TIMEOUT=${TIMEOUT:-300}
CASES=${CASES:-pattern-2d kmscube gles-pattern gles-pattern-1024x768 gles-bench}
mkdir -p "$RES"
log() { printf '[validate-3d] %s\n' "$*" >&2; }

for t in Xvfb import qemu-system-x86_64 python3; do
	command -v "$t" >/dev/null || { echo "missing $t (apt-get install xvfb imagemagick qemu-system-x86 qemu-system-gui)"; echo "0 passed, 1 failed"; exit 1; }
done
if [ "${NO_BUILD:-0}" != 1 ]; then
	"$HERE/build-guest.sh" "$OUT" >"$RES/build-guest.log" 2>&1 || { tail -n 20 "$RES/build-guest.log"; echo "0 passed, 1 failed"; exit 1; }
	if [ -z "${ROOTFS:-}" ]; then
		"$HERE/build-rootfs-3d.sh" "$OUT" >"$RES/build-rootfs-3d.log" 2>&1 || { tail -n 20 "$RES/build-rootfs-3d.log"; echo "0 passed, 1 failed"; exit 1; }
	fi
fi
ROOTFS=${ROOTFS:-$OUT/rootfs-3d.ext4}
for f in "$OUT/vmlinuz" "$OUT/initramfs.cpio.gz" "$ROOTFS"; do
	[ -r "$f" ] || { echo "missing $f"; echo "0 passed, 1 failed"; exit 1; }
done

# ------------------------------------------------------------- processes
XVFB_PID= QEMU_PID=
cleanup() {
	[ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
	[ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null && wait "$XVFB_PID" 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

N=90
while [ -e "/tmp/.X11-unix/X$N" ] || [ -e "/tmp/.X$N-lock" ]; do N=$((N + 1)); done
Xvfb ":$N" -screen 0 "${XVFB_SIZE}x24" -nolisten tcp >"$RES/xvfb.log" 2>&1 &
XVFB_PID=$!
for _ in $(seq 100); do [ -e "/tmp/.X11-unix/X$N" ] && break; sleep 0.1; done
[ -e "/tmp/.X11-unix/X$N" ] || { echo "Xvfb :$N did not start: $(tail -n 3 "$RES/xvfb.log")"; echo "0 passed, 1 failed"; exit 1; }
export DISPLAY=:$N
unset WAYLAND_DISPLAY

# same accelerator choice as run-guest.sh (kvm_pvm cannot run a stock kernel)
if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=(-accel kvm -cpu host); else
	ACCEL=(-accel tcg -cpu max,vendor=GenuineIntel,family=6,model=85); fi

# boot CASE TEST WAIT_RE [cmdline words...]: starts QEMU, waits for WAIT_RE (or an
# error / the guest's exit / QEMU's exit / TIMEOUT) in the serial log. Sets BOOT_S.
boot() {
	local name=$1 test=$2 wait_re=$3
	shift 3
	local dir=$RES/$name
	rm -rf "$dir" && mkdir -p "$dir"
	local trace=()
	[ "${TRACE:-0}" = 1 ] && trace=(-trace 'virtio_gpu_*' -D "$dir/trace.log")
	local append="console=ttyS0 panic=-1 loglevel=4 vt.global_cursor_default=0 guest.test=$test guest.root=/dev/vda $*"
	QEMU=(qemu-system-x86_64 "${ACCEL[@]}" -machine q35 -m 1G -smp 1
		-kernel "$OUT/vmlinuz" -initrd "$OUT/initramfs.cpio.gz" -append "$append"
		-nodefaults -vga none -no-reboot -display sdl,gl=on
		-device virtio-gpu-gl-pci,id=gpu0
		-drive "file=$ROOTFS,if=virtio,format=raw,readonly=on"
		-serial "file:$dir/serial.log" -qmp "unix:$dir/qmp.sock,server=on,wait=off" "${trace[@]}")
	printf '%q ' "${QEMU[@]}" >"$dir/cmd"
	: >"$dir/serial.log"
	T0=$(date +%s.%N)
	"${QEMU[@]}" >"$dir/qemu.log" 2>&1 </dev/null &
	QEMU_PID=$!
	local deadline=$(($(date +%s) + TIMEOUT))
	while kill -0 "$QEMU_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ] &&
		! grep -aqE "$wait_re|^GUEST-ERROR|^GUEST-TEST-EXIT" "$dir/serial.log"; do sleep 0.2; done
	BOOT_S=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$T0}")
}
# stop QEMU: over QMP, then by PID
stop() {
	[ -n "$QEMU_PID" ] || return 0
	if kill -0 "$QEMU_PID" 2>/dev/null; then
		python3 "$HERE/qmp.py" "$1/qmp.sock" quit >/dev/null 2>&1 || true
		for _ in $(seq 50); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
		kill "$QEMU_PID" 2>/dev/null || true
	fi
	wait "$QEMU_PID" 2>/dev/null
	QEMU_PID=
	if [ -s "$1/trace.log" ]; then
		sed -n 's/^\([0-9]*@[0-9.]*:\)\{0,1\}\(virtio_gpu_[a-z0-9_]*\).*/\2/p' "$1/trace.log" | sort | uniq -c | sort -rn >"$1/trace-counts.txt"
	fi
}
# shot DIR WxH: X screenshot of the root window, checked pixel-exactly (--locate)
shot() {
	local dir=$1 size=$2 i
	for i in 1 2 3; do
		sleep 1
		import -window root -depth 8 "png24:$dir/x.png" 2>"$dir/import.log" || continue
		python3 "$HERE/check-pattern.py" "$dir/x.png" --locate --size "$size" --diff "$dir/diff.ppm" >"$dir/check.log" 2>&1 && return 0
	done
	return 1
}

pass=0 fail=0
result() { # name ok detail
	if [ "$2" = 1 ]; then pass=$((pass + 1)); r=PASS; else fail=$((fail + 1)); r=FAIL; fi
	printf '%-22s %-4s %6ss  %s\n' "$1" "$r" "$BOOT_S" "$3"
	if [ "$2" != 1 ]; then
		grep -aE '^GUEST-|^kmscube: .*(rror|fail)|Kernel panic' "$RES/$1/serial.log" 2>/dev/null | tail -n 8 | sed 's/^/    serial: /'
		tail -n 5 "$RES/$1/qemu.log" 2>/dev/null | sed 's/^/    qemu: /'
		[ -s "$RES/$1/check.log" ] && sed 's/^/    check: /' "$RES/$1/check.log" | head -n 8
	fi
}
drm_line() { grep -a -m1 '^GUEST-DRM' "$1/serial.log" | sed 's/^GUEST-DRM //; s/;$//'; }

case_pattern_2d() {
	local d=$RES/pattern-2d
	boot pattern-2d pattern '^GUEST-PATTERN-READY' guest.hold=0
	local line ok=0 size
	line=$(grep -a -m1 '^GUEST-PATTERN-READY' "$d/serial.log")
	size=$(sed -n 's/^GUEST-PATTERN-READY \([0-9]*x[0-9]*\).*/\1/p' <<<"$line")
	[ -n "$size" ] && shot "$d" "$size" && ok=1
	stop "$d"
	result pattern-2d $ok "${line:-no READY} | $(grep -a located "$d/check.log" 2>/dev/null) | $(drm_line "$d")"
}

case_kmscube() {
	local d=$RES/kmscube
	boot kmscube kmscube '^GUEST-3D-DONE' "guest.frames=$FRAMES" guest.hold=0
	for _ in $(seq 50); do grep -aq '^GUEST-TEST-EXIT' "$d/serial.log" && break; sleep 0.1; done
	stop "$d"
	local line fps ok=0
	line=$(grep -a -m1 '^GUEST-3D-DONE' "$d/serial.log")
	fps=$(grep -a -o 'Rendered [0-9]* frames in [0-9.]* sec ([0-9.]* fps)' "$d/serial.log" | tail -n1)
	grep -qE 'GUEST-3D-DONE kmscube rc=0 .*renderer="virgl' <<<"$line" && ok=1
	KMSCUBE_FPS=$(sed -n 's/.*(\([0-9.]*\) fps)/\1/p' <<<"$fps")
	result kmscube $ok "${line:-no 3D-DONE} | kmscube: ${fps:-no Rendered line} | $(grep -a -m1 '^GUEST-3D-ENV' "$d/serial.log" | cut -d' ' -f2-3)"
}

# case_gles NAME TEST [cmdline words]: GUEST-GLES-READY (virgl) + exact X screenshot
case_gles() {
	local name=$1 test=$2
	shift 2
	local d=$RES/$name
	boot "$name" "$test" '^GUEST-GLES-READY' guest.hold=0 "$@"
	local line done_line size ok=0
	line=$(grep -a -m1 '^GUEST-GLES-READY' "$d/serial.log")
	done_line=$(grep -a -m1 '^GUEST-GLES-DONE' "$d/serial.log")
	size=$(sed -n 's/^GUEST-GLES-READY \([0-9]*x[0-9]*\).*/\1/p' <<<"$line")
	if grep -q 'renderer="virgl' <<<"$line" && [ -n "$size" ]; then
		if [ "$test" = gles-bench ] && ! grep -q 'renderer="virgl' <<<"$done_line"; then :; else
			shot "$d" "$size" && ok=1
		fi
	fi
	if [ -n "${WANT_SIZE:-}" ] && [ "$size" != "$WANT_SIZE" ]; then ok=0; fi
	stop "$d"
	[ "$test" = gles-bench ] && GLES_FPS=$(sed -n 's/.* fps=\([0-9.]*\).*/\1/p' <<<"$done_line")
	result "$name" $ok "${done_line:+$done_line | }${line:-no GLES-READY} | $(grep -a located "$d/check.log" 2>/dev/null)$(grep -a -h '^OK\|^FAIL' "$d/check.log" 2>/dev/null | sed 's/^[A-Z]* [^:]*:/;/')"
}

log "results in $RES (Xvfb :$N ${XVFB_SIZE}, $(qemu-system-x86_64 --version | head -n1), ${ACCEL[*]})"
KMSCUBE_FPS= GLES_FPS=
for c in $CASES; do
	case "$c" in
	pattern-2d) case_pattern_2d ;;
	kmscube) case_kmscube ;;
	gles-pattern) case_gles gles-pattern gles-pattern ;;
	gles-pattern-1024x768)
		# the whole guest at 1024x768 (video=): QEMU's sdl,gl=on display in Xvfb loses the
		# picture when its window *shrinks* (fbcon's 1280x800 -> 1024x768) and nothing
		# more is flushed; an X Expose does not bring it back
		WANT_SIZE=1024x768 case_gles gles-pattern-1024x768 gles-pattern guest.mode=1024x768 video=Virtual-1:1024x768 ;;
	gles-bench) case_gles gles-bench gles-bench "guest.frames=$GLES_FRAMES" ;;
	*) echo "unknown case $c"; fail=$((fail + 1)) ;;
	esac
done
echo "baseline (QEMU virtio-gpu-gl-pci, sdl,gl=on in Xvfb): kmscube fps=${KMSCUBE_FPS:-?} gles-bench fps=${GLES_FPS:-?}"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
