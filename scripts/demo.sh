#!/usr/bin/env bash
# demo.sh — see scanway show a real guest's screen.
#
# Installs what is missing (when run as root), builds scanway (release) and the test
# guest (Debian kernel + initramfs, cached in target/guest), starts scanway and boots a
# guest (QEMU, vhost-user-gpu-pci) that draws a test picture and holds it.
#   * DISPLAY or WAYLAND_DISPLAY set: scanway opens a window (winit backend) and the
#     demo runs until you close the window or press Ctrl-C.
#   * otherwise (headless): once the picture is up, a screenshot of scanway's output is
#     written to target/demo/screenshot.png, then everything is stopped.
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
CTL=$WORK/ctl.sock SOCK=$WORK/demo.sock
SCANWAY_PID= GUEST_PID= TAIL_PID=
cleanup() {
	local p
	if [ -n "$GUEST_PID" ] && kill -0 "$GUEST_PID" 2>/dev/null; then
		python3 tests/guest/qmp.py "$WORK/qmp.sock" quit >/dev/null 2>&1 || kill "$GUEST_PID" 2>/dev/null || true
	fi
	for p in "$GUEST_PID" "$SCANWAY_PID" "$TAIL_PID"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting scanway ($BACKEND)"
"$BIN" run --backend "$BACKEND" --control "$CTL" --guest "demo=$SOCK" >"$OUT/scanway.log" 2>&1 &
SCANWAY_PID=$!
tail -n +1 -F --pid="$SCANWAY_PID" "$OUT/scanway.log" 2>/dev/null &
TAIL_PID=$!
for _ in $(seq 300); do
	grep -q "^scanway: guest demo listening on" "$OUT/scanway.log" && break
	kill -0 "$SCANWAY_PID" 2>/dev/null || die "scanway exited (log: $OUT/scanway.log)"
	sleep 0.1
done
grep -q "^scanway: guest demo listening on" "$OUT/scanway.log" || die "scanway does not listen (log: $OUT/scanway.log)"

log "booting the guest (QEMU; about 10 s without KVM)"
GUEST_TIMEOUT=0
[ "$BACKEND" = headless ] && GUEST_TIMEOUT=300
tests/guest/run-guest.sh --socket "$SOCK" --test pattern --hold 0 --workdir "$WORK/guest" \
	--qmp "$WORK/qmp.sock" --timeout "$GUEST_TIMEOUT" >"$OUT/guest.log" 2>&1 &
GUEST_PID=$!
SERIAL=$WORK/guest/serial.log
for _ in $(seq 1200); do
	grep -qs '^GUEST-PATTERN-READY' "$SERIAL" && break
	kill -0 "$GUEST_PID" 2>/dev/null || die "the guest ended early (log: $OUT/guest.log)"
	kill -0 "$SCANWAY_PID" 2>/dev/null || die "scanway exited (log: $OUT/scanway.log)"
	sleep 0.1
done
grep -qs '^GUEST-PATTERN-READY' "$SERIAL" || die "the guest's picture did not come up in 120 s (log: $OUT/guest.log)"
cp "$SERIAL" "$OUT/serial.log"
log "guest: $(grep -m1 '^GUEST-PATTERN-READY' "$SERIAL")"

if [ "$BACKEND" = headless ]; then
	sleep 0.5
	"$BIN" screenshot --control "$CTL" --output -o "$OUT/screenshot.png"
	echo "scanway: screenshot written to $OUT/screenshot.png"
	python3 tests/guest/check-pattern.py "$OUT/screenshot.png" --locate >&2 || die "the screenshot does not show the guest's picture"
	exit 0
fi
log "the guest's screen is in scanway's window: close it or press Ctrl-C to stop"
wait "$SCANWAY_PID" || true
SCANWAY_PID=
