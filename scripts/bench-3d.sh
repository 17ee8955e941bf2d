#!/usr/bin/env bash
# bench-3d.sh — kmscube in a guest through scanway's virgl vs QEMU's built-in
# virtio-gpu-gl-pci shown with -display sdl,gl=on under Xvfb (the same host Mesa),
# in one run on one machine. Prints kmscube's fps for each and their ratio.
#
#   scripts/bench-3d.sh [FRAMES]        (default 1500 frames)
#
# kmscube reports "Rendered N frames in S sec (F fps)" every 2 s; the figure taken is
# its last report (frames since kmscube started rendering).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FRAMES=${1:-1500}
OUT=target/bench3d
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -q
tests/guest/build-guest.sh >/dev/null
ROOTFS=$(tests/guest/build-rootfs-3d.sh 2>/dev/null | tail -n1)
G=target/guest
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

last_fps() { grep -a -o 'Rendered [0-9]* frames in [0-9.]* sec ([0-9.]* fps)' "$1" | tail -n1 | sed 's/.*(\([0-9.]*\) fps)/\1/'; }
renderer() { grep -a -m1 'renderer:' "$1" | sed 's/.*renderer: *//'; }

# ---- scanway (headless, virgl in the compositor's share group)
export XDG_RUNTIME_DIR=$PWD/$OUT/xdg
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
target/release/scanway run --control "$OUT/ctl.sock" --guest "g0=$PWD/$OUT/g0.sock" >"$OUT/scanway.out" 2>"$OUT/scanway.err" &
PIDS+=($!)
SCANWAY=$!
for _ in $(seq 50); do [ -S "$OUT/g0.sock" ] && break; sleep 0.1; done
t0=$(awk '{print $14+$15}' "/proc/$SCANWAY/stat")
tests/guest/run-guest.sh --socket "$PWD/$OUT/g0.sock" --test kmscube --frames "$FRAMES" --hold 1 \
	--rootfs "$ROOTFS" --mem 1G --workdir "$OUT/scanway-guest" --timeout 600 --quiet \
	--ready '^GUEST-3D-DONE' >"$OUT/scanway-run-guest.log" 2>&1 || true
t1=$(awk '{print $14+$15}' "/proc/$SCANWAY/stat")
SW_FPS=$(last_fps "$OUT/scanway-guest/serial.log")
SW_R=$(renderer "$OUT/scanway-guest/serial.log")
HZ=$(getconf CLK_TCK)

# ---- QEMU's built-in virtio-gpu-gl-pci, -display sdl,gl=on, in Xvfb
N=97
while [ -e "/tmp/.X11-unix/X$N" ]; do N=$((N + 1)); done
Xvfb ":$N" -screen 0 1920x1200x24 -nolisten tcp >"$OUT/xvfb.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$N" ] && break; sleep 0.1; done
if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=(-accel kvm -cpu host); else
	ACCEL=(-accel tcg -cpu max,vendor=GenuineIntel,family=6,model=85); fi
DISPLAY=:$N timeout 600 qemu-system-x86_64 "${ACCEL[@]}" -machine q35 -m 1G -smp 1 \
	-kernel "$G/vmlinuz" -initrd "$G/initramfs.cpio.gz" \
	-append "console=ttyS0 panic=-1 loglevel=4 vt.global_cursor_default=0 guest.test=kmscube guest.frames=$FRAMES guest.hold=1 guest.root=/dev/vda" \
	-nodefaults -vga none -no-reboot -display sdl,gl=on -device virtio-gpu-gl-pci \
	-drive "file=$ROOTFS,if=virtio,format=raw,readonly=on,snapshot=on" \
	-serial "file:$OUT/qemu-serial.log" >"$OUT/qemu.log" 2>&1 || true
Q_FPS=$(last_fps "$OUT/qemu-serial.log")
Q_R=$(renderer "$OUT/qemu-serial.log")

printf '\nkmscube, %s frames, TCG guest (1 vCPU), host: %s\n' "$FRAMES" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-44s %10s  %s\n' "path" "fps" "guest renderer"
printf '%-44s %10s  %s\n' "scanway (virgl, zero-copy, headless)" "${SW_FPS:-?}" "${SW_R:-?}"
printf '%-44s %10s  %s\n' "QEMU virtio-gpu-gl-pci, sdl,gl=on in Xvfb" "${Q_FPS:-?}" "${Q_R:-?}"
if [ -n "${SW_FPS:-}" ] && [ -n "${Q_FPS:-}" ]; then
	printf 'ratio scanway/QEMU: %sx\n' "$(awk "BEGIN{printf \"%.2f\", $SW_FPS/$Q_FPS}")"
fi
printf 'scanway host CPU during the scanway run: %s ms per frame\n' \
	"$(awk "BEGIN{printf \"%.2f\", ($t1-$t0)*1000/$HZ/$FRAMES}")"
