#!/usr/bin/env bash
# bench-input.sh — key press to guest evdev event through scanway's seat (QEMU's D-Bus
# display) against QMP input-send-event straight to QEMU, in one run (method:
# tests/e2e/bench_input.py).  Builds the release binary and the test guest first.
#
#   scripts/bench-input.sh [--samples 200] [--3d]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release
exec python3 tests/e2e/bench_input.py "$@"
