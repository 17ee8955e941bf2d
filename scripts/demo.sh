#!/usr/bin/env bash
# demo.sh — see scanway show real guests' screens.
#
# Installs what is missing (when run as root), builds scanway (release) and the test
# guest (Debian kernel + initramfs, cached in target/guest), starts scanway and boots two
# guests (QEMU, vhost-user-gpu-pci): "desk", linked to QEMU's D-Bus display so that its
# window resizes it and input reaches it, drawing a test picture that follows its mode;
# and "multi", with two outputs (two windows).
#   * DISPLAY or WAYLAND_DISPLAY set: scanway opens a window (winit backend); resize the
#     desk window (Super+= / Super+-, or `scanway window --guest desk --size WxH`) and it
#     follows. The demo runs until you close the window or press Ctrl-C.
#   * otherwise (headless): once the pictures are up, desk is resized to 1024x640 through
#     the control socket, and a screenshot of scanway's output is written to
#     target/demo/screenshot.png, then everything is stopped.
# Everything started here is ended by PID on exit.  Logs: target/demo/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/scanway
OUT=$TARGET/demo
log() { printf '[demo] %s\n' "$*" >&2; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] && scripts/install-deps.sh
log "building scanway (cargo build --release)"
cargo build --release
log "building the test guest (first time: ~106 MB download)"
tests/guest/build-guest.sh >/dev/null

if [ -n "${WAYLAND_DISPLAY:-}" ] || [ -n "${DISPLAY:-}" ]; then BACKEND=winit; else BACKEND=headless; fi
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/scanway-demo.XXXXXX)
CTL=$WORK/ctl.sock
SCANWAY_PID= TAIL_PID=
GUEST_PIDS=()
cleanup() {
	local p g
	for g in desk multi; do
		python3 tests/guest/qmp.py "$WORK/qmp-$g.sock" quit >/dev/null 2>&1 || true
	done
	for p in "${GUEST_PIDS[@]}" "$SCANWAY_PID" "$TAIL_PID"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$BACKEND" = headless ]; then SIZES=(--size 3200x900 --guest-size 1024x768); else
	SIZES=(--size 1920x1200 --guest-size 768x480); fi
log "starting scanway ($BACKEND)"
"$BIN" run --backend "$BACKEND" --control "$CTL" "${SIZES[@]}" \
	--guest "desk=$WORK/desk.sock,qmp=$WORK/qmp-desk.sock,3d=off" \
	--guest "multi=$WORK/multi.sock,outputs=2" >"$OUT/scanway.log" 2>&1 &
SCANWAY_PID=$!
tail -n +1 -F --pid="$SCANWAY_PID" "$OUT/scanway.log" 2>/dev/null &
TAIL_PID=$!
for _ in $(seq 300); do
	grep -q "^scanway: guest multi listening on" "$OUT/scanway.log" && break
	kill -0 "$SCANWAY_PID" 2>/dev/null || die "scanway exited (log: $OUT/scanway.log)"
	sleep 0.1
done
grep -q "^scanway: guest multi listening on" "$OUT/scanway.log" || die "scanway does not listen (log: $OUT/scanway.log)"

log "booting the guests (QEMU; about 10 s each without KVM)"
GUEST_TIMEOUT=0
[ "$BACKEND" = headless ] && GUEST_TIMEOUT=300
# desk: QEMU's D-Bus display (scanway links to it over QMP) and virtio keyboard and tablet
tests/guest/run-guest.sh --socket "$WORK/desk.sock" --test follow --hold 0 --workdir "$WORK/desk" \
	--qmp "$WORK/qmp-desk.sock" --timeout "$GUEST_TIMEOUT" --display dbus,p2p=yes \
	--qemu-arg -device --qemu-arg virtio-keyboard-pci --qemu-arg -device --qemu-arg virtio-tablet-pci \
	>"$OUT/guest-desk.log" 2>&1 &
GUEST_PIDS+=($!)
tests/guest/run-guest.sh --socket "$WORK/multi.sock" --test multihead --outputs 2 --no-force-heads --hold 0 \
	--workdir "$WORK/multi" --qmp "$WORK/qmp-multi.sock" --timeout "$GUEST_TIMEOUT" >"$OUT/guest-multi.log" 2>&1 &
GUEST_PIDS+=($!)
wait_line() { # wait_line FILE REGEX WHAT
	for _ in $(seq 1800); do
		grep -qs "$2" "$1" && return 0
		kill -0 "$SCANWAY_PID" 2>/dev/null || die "scanway exited (log: $OUT/scanway.log)"
		sleep 0.1
	done
	die "$3 did not come up in 180 s (logs: $OUT/)"
}
wait_line "$WORK/desk/serial.log" '^GUEST-PATTERN-READY' "desk's picture"
wait_line "$WORK/multi/serial.log" '^GUEST-MULTIHEAD-READY' "multi's pictures"
cp "$WORK/desk/serial.log" "$OUT/serial-desk.log"
log "desk: $(grep -m1 '^GUEST-PATTERN-READY' "$WORK/desk/serial.log")"
log "multi: $(grep -m1 '^GUEST-MULTIHEAD-READY' "$WORK/multi/serial.log")"

if [ "$BACKEND" = headless ]; then
	log "resizing desk's window to 1024x640: the guest follows"
	for _ in $(seq 100); do "$BIN" list --control "$CTL" --json | grep -q '"linked"' && break; sleep 0.2; done
	"$BIN" window --control "$CTL" --guest desk --size 1024x640
	wait_line "$WORK/desk/serial.log" '^GUEST-MODE 1024x640' "desk's new mode"
	sleep 0.5
	"$BIN" layout --control "$CTL"
	"$BIN" screenshot --control "$CTL" --output -o "$OUT/screenshot.png"
	"$BIN" screenshot --control "$CTL" --guest desk --scanout 0 -o "$OUT/desk.png"
	echo "scanway: screenshot written to $OUT/screenshot.png"
	python3 tests/guest/check-pattern.py "$OUT/desk.png" --size 1024x640 >&2 || die "desk's screenshot is not its picture"
	exit 0
fi
log "the guests are windows in scanway's window: close it or press Ctrl-C to stop"
wait "$SCANWAY_PID" || true
SCANWAY_PID=
