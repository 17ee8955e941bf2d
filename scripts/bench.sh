#!/usr/bin/env bash
# bench.sh — scanway vs QEMU's C vhost-user-gpu backend: guest fps and host CPU per
# frame for `animate` page flips at 1024x768 and 1920x1080 (tests/e2e/bench.py has
# the method).  Builds the release binary and the test guest first.
#
#   scripts/bench.sh [--frames 300] [--modes 1024x768,1920x1080] [--runs N] [--c-only]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case " $* " in
*" --c-only "*) ;;
*) cargo build --release ;;
esac
exec python3 tests/e2e/bench.py "$@"
