#!/usr/bin/env bash
# bench-3d.sh — kmscube and glmark2-es2-drm in a guest through scanway's virgl vs
# QEMU's built-in virtio-gpu-gl-pci shown with -display sdl,gl=on under Xvfb (the
# same host Mesa), in one run on one machine. Prints kmscube's fps for each and their
# ratio, then glmark2's fps per scene and its score for each, and their ratios.
#
#   scripts/bench-3d.sh [--no-kmscube] [--no-glmark2] [--glmark2-duration S] [--isolated]
#                       [--no-qemu] [FRAMES]
#
# --isolated also runs each guest on scanway with 3d=isolated (virglrenderer in a worker
# process, scanouts read back): its fps, ratio to the shared (zero-copy) run, host CPU of
# scanway and the worker together, their resident memory, and read-backs. --no-qemu skips
# QEMU's runs.
# FRAMES: kmscube's frames (default 1500). kmscube reports "Rendered N frames in S sec
# (F fps)" every 2 s; the figure taken is its last report (frames since kmscube started
# rendering).
# glmark2: four scenes of S seconds each (default 5): build (VBOs), texture, shading
# (phong) and bump (normals), full screen in 1280x800 on both (the preferred mode).
# Every guest is a fresh VM (TCG, 1 vCPU) and, on scanway's side, a fresh headless scanway.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FRAMES=1500 KMSCUBE=1 GLMARK2=1 GM_DURATION=5 GM_MODE=1280x800 ISOLATED=0 QEMU=1
while [ $# -gt 0 ]; do
	case "$1" in
	--no-kmscube) KMSCUBE=0 ;;
	--no-glmark2) GLMARK2=0 ;;
	--glmark2-duration) GM_DURATION=$2; shift ;;
	--isolated) ISOLATED=1 ;;
	--no-qemu) QEMU=0 ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "bench-3d: unknown option $1" >&2; exit 2 ;;
	*) FRAMES=$1 ;;
	esac
	shift
done
OUT=target/bench3d
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -q
tests/guest/build-guest.sh >/dev/null
ROOTFS=$(tests/guest/build-rootfs-3d.sh 2>/dev/null | tail -n1)
G=target/guest
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# the figures (fps, CPU time) are read in one place: tests/e2e/harness.py (its command line)
figure() { python3 tests/e2e/harness.py "$@"; }
last_fps() { figure kmscube-fps "$1"; }
renderer() { grep -a -m1 'renderer:' "$1" | sed 's/.*renderer: *//'; }
ratio() { if [ -n "${1:-}" ] && [ -n "${2:-}" ]; then awk "BEGIN{printf \"%.2fx\", $1/$2}"; else echo "?"; fi; }
# glmark2's results in a serial log: "SCENE FPS" lines (SCENE like "[build] duration=5:use-vbo=true"),
# then "score N", "size WxH", "renderer R"
glmark2_results() { figure glmark2 "$1"; }

# ---- scanway (headless, virgl in the compositor's share group, or 3d=isolated): a fresh
# instance per guest. scanway_guest NAME MODE RUN-GUEST-ARGS... (MODE: on or isolated) boots
# the guest with run-guest.sh; the guest's serial log is then $OUT/NAME-guest/serial.log,
# SW_TICKS the CPU time (clock ticks) of scanway and its workers while the guest ran, SW_RSS
# their resident memory at the end (KiB) and SW_READBACKS the worker's read-backs.
export XDG_RUNTIME_DIR=$PWD/$OUT/xdg
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
scanway_guest() {
	local name=$1 mode=$2 pid t0 t1
	shift 2
	target/release/scanway run --backend headless --control "$OUT/$name-ctl.sock" \
		--guest "g0=$PWD/$OUT/$name.sock,3d=$mode" >"$OUT/$name-scanway.out" 2>"$OUT/$name-scanway.err" &
	pid=$!
	PIDS+=("$pid")
	for _ in $(seq 100); do [ -S "$OUT/$name.sock" ] && break; sleep 0.1; done
	t0=$(figure tree-cpu-ticks "$pid")
	tests/guest/run-guest.sh --socket "$PWD/$OUT/$name.sock" --rootfs "$ROOTFS" --mem 1G \
		--workdir "$OUT/$name-guest" --timeout 600 --quiet --ready '^GUEST-3D-DONE' "$@" \
		>"$OUT/$name-run-guest.log" 2>&1 || true
	t1=$(figure tree-cpu-ticks "$pid")
	SW_RSS=$(figure tree-rss-kib "$pid")
	SW_READBACKS=$(target/release/scanway --control "$OUT/$name-ctl.sock" list --json 2>/dev/null |
		python3 -c 'import json,sys; g=json.load(sys.stdin)["guests"][0]["3d"]; print(g.get("worker", {}).get("read_backs", 0) if isinstance(g, dict) else 0)' || echo '?')
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	SW_TICKS=$((t1 - t0))
}

# ---- QEMU's built-in virtio-gpu-gl-pci, -display sdl,gl=on, in Xvfb (one Xvfb for all).
# qemu_guest NAME KERNEL-CMDLINE-TAIL: the guest's serial log is $OUT/NAME-serial.log.
XVFB=
qemu_guest() {
	local name=$1 tail=$2
	if [ -z "$XVFB" ]; then
		XVFB=97
		while [ -e "/tmp/.X11-unix/X$XVFB" ]; do XVFB=$((XVFB + 1)); done
		Xvfb ":$XVFB" -screen 0 1920x1200x24 -nolisten tcp >"$OUT/xvfb.log" 2>&1 &
		PIDS+=($!)
		for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$XVFB" ] && break; sleep 0.1; done
	fi
	if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=(-accel kvm -cpu host); else
		ACCEL=(-accel tcg -cpu "max,vendor=GenuineIntel,family=6,model=85"); fi
	DISPLAY=:$XVFB timeout 600 qemu-system-x86_64 "${ACCEL[@]}" -machine q35 -m 1G -smp 1 \
		-kernel "$G/vmlinuz" -initrd "$G/initramfs.cpio.gz" \
		-append "console=ttyS0 panic=-1 loglevel=4 vt.global_cursor_default=0 $tail guest.root=/dev/vda" \
		-nodefaults -vga none -no-reboot -display sdl,gl=on -device virtio-gpu-gl-pci \
		-drive "file=$ROOTFS,if=virtio,format=raw,readonly=on,snapshot=on" \
		-serial "file:$OUT/$name-serial.log" >"$OUT/$name-qemu.log" 2>&1 || true
}
HOST_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)

if [ "$KMSCUBE" = 1 ]; then
	scanway_guest scanway on --test kmscube --frames "$FRAMES" --hold 1
	SW_FPS=$(last_fps "$OUT/scanway-guest/serial.log")
	SW_R=$(renderer "$OUT/scanway-guest/serial.log")
	SW_T=$SW_TICKS SW_M=$SW_RSS
	Q_FPS= Q_R=
	if [ "$QEMU" = 1 ]; then
		qemu_guest qemu "guest.test=kmscube guest.frames=$FRAMES guest.hold=1"
		Q_FPS=$(last_fps "$OUT/qemu-serial.log")
		Q_R=$(renderer "$OUT/qemu-serial.log")
	fi
	if [ "$ISOLATED" = 1 ]; then
		scanway_guest isolated isolated --test kmscube --frames "$FRAMES" --hold 1
		I_FPS=$(last_fps "$OUT/isolated-guest/serial.log")
		I_R=$(renderer "$OUT/isolated-guest/serial.log")
	fi

	printf '\nkmscube, %s frames, TCG guest (1 vCPU), host: %s\n' "$FRAMES" "$HOST_CPU"
	printf '%-44s %10s  %s\n' "path" "fps" "guest renderer"
	printf '%-44s %10s  %s\n' "scanway (virgl, zero-copy, headless)" "${SW_FPS:-?}" "${SW_R:-?}"
	[ "$QEMU" = 1 ] && printf '%-44s %10s  %s\n' "QEMU virtio-gpu-gl-pci, sdl,gl=on in Xvfb" "${Q_FPS:-?}" "${Q_R:-?}"
	if [ -n "${SW_FPS:-}" ] && [ -n "${Q_FPS:-}" ]; then
		printf 'ratio scanway/QEMU: %s\n' "$(ratio "$SW_FPS" "$Q_FPS")"
	fi
	printf 'scanway host CPU during the scanway run: %s ms per frame, resident %s MiB\n' \
		"$(figure cpu-ms-per-frame "$SW_T" "$FRAMES")" "$((SW_M / 1024))"
	if [ "$ISOLATED" = 1 ]; then
		printf '%-44s %10s  %s\n' "scanway 3d=isolated (worker, read back)" "${I_FPS:-?}" "${I_R:-?}"
		printf 'ratio isolated/shared: fps %s, host CPU per frame %s, resident %s; %s read-backs\n' \
			"$(ratio "${I_FPS:-}" "${SW_FPS:-}")" "$(ratio "$SW_TICKS" "$SW_T")" "$(ratio "$SW_RSS" "$SW_M")" "$SW_READBACKS"
		printf 'scanway + worker host CPU during the isolated run: %s ms per frame, resident %s MiB\n' \
			"$(figure cpu-ms-per-frame "$SW_TICKS" "$FRAMES")" "$((SW_RSS / 1024))"
	fi
fi

if [ "$GLMARK2" = 1 ]; then
	# the initramfs's /init hands 3d-info to guest-3d, whose --test runs glmark2 instead
	scanway_guest gm-scanway on --test 3d-info --args "--test glmark2 --duration $GM_DURATION" \
		--mode "$GM_MODE" --hold 1
	glmark2_results "$OUT/gm-scanway-guest/serial.log" >"$OUT/gm-scanway.results"
	qemu_guest gm-qemu "guest.test=3d-info guest.mode=$GM_MODE guest.hold=1 guest.args=--test_glmark2_--duration_$GM_DURATION"
	glmark2_results "$OUT/gm-qemu-serial.log" >"$OUT/gm-qemu.results"

	val() { sed -n "s/^$2 //p" "$1" | head -n1; }
	fps_of() { awk -v s="$2" 'substr($0, 1, length(s) + 1) == s " " { print $NF; exit }' "$1"; }
	printf '\nglmark2-es2-drm, %s s per scene, %s (scanway) / %s (QEMU), TCG guest (1 vCPU), host: %s\n' \
		"$GM_DURATION" "$(val "$OUT/gm-scanway.results" size)" "$(val "$OUT/gm-qemu.results" size)" "$HOST_CPU"
	printf 'guest renderer: %s (scanway) / %s (QEMU)\n' \
		"$(val "$OUT/gm-scanway.results" renderer)" "$(val "$OUT/gm-qemu.results" renderer)"
	printf '%-44s %10s %10s %10s\n' "scene (fps)" "scanway" "QEMU" "ratio"
	cat "$OUT/gm-scanway.results" "$OUT/gm-qemu.results" | grep -E '^\[' | sed 's/ [0-9]*$//' |
		awk '!seen[$0]++' | while IFS= read -r scene; do
		s=$(fps_of "$OUT/gm-scanway.results" "$scene")
		q=$(fps_of "$OUT/gm-qemu.results" "$scene")
		printf '%-44s %10s %10s %10s\n' "$scene" "${s:-?}" "${q:-?}" "$(ratio "$s" "$q")"
	done
	s=$(val "$OUT/gm-scanway.results" score)
	q=$(val "$OUT/gm-qemu.results" score)
	printf '%-44s %10s %10s %10s\n' "glmark2 score" "${s:-?}" "${q:-?}" "$(ratio "$s" "$q")"
	printf 'scanway host CPU during the scanway glmark2 run: %s s\n' "$(figure cpu-seconds "$SW_TICKS")"
fi
