#!/usr/bin/env bash
# soak.sh — scanway's fault campaign (tests/e2e/soak.py has the method): VMMs killed with
# SIGKILL at random points (mid-transfer, mid-SUBMIT_3D with fences pending, mid-resize) while
# another guest animates, then a stopped guest, a flooding guest, hostile Wayland clients and
# garbage on the control socket; prints the figures (steady guest's frame rate around the
# kills, GL objects, fds and RSS before and after). Builds the release binary and the guest.
#
#   scripts/soak.sh [--kills 100] [--seed 1] [--quick]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release
tests/guest/build-guest.sh >/dev/null
exec python3 tests/e2e/soak.py "$@"
