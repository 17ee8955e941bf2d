#!/usr/bin/env bash
# test.sh — run every scanway test, from a fresh Debian 12 machine (as root: installs
# what is missing) or a prepared one (as a user).
#
#   scripts/test.sh [run.py options, e.g. --only pattern,reconnect]
#
# Steps: install-deps --test (root only), cargo fmt --check, the module graph check, cargo clippy (warnings are
# errors), cargo test, the fuzz smoke (scripts/fuzz.sh --smoke), cargo build --release, the test guest (tests/guest/build-guest.sh,
# cached in target/guest; the first build downloads ~106 MB from the Debian archive),
# then the end-to-end suite (tests/e2e/run.py, logs in target/e2e/) and the fault campaign's
# short version (tests/e2e/soak.py --quick, logs in target/soak/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

T0=$SECONDS
step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }

if [ "$(id -u)" = 0 ]; then
	step "scripts/install-deps.sh --test"
	scripts/install-deps.sh --test
fi
step "cargo fmt --check"
cargo fmt --check
step "scripts/modgraph.py --check (no import cycle, no module importing one above it)"
python3 scripts/modgraph.py --check >/dev/null
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
step "cargo test"
cargo test
step "scripts/fuzz.sh --smoke (every fuzz target 10 s from its seeds)"
scripts/fuzz.sh --smoke
step "cargo build --release"
cargo build --release
step "tests/guest/build-guest.sh"
tests/guest/build-guest.sh >/dev/null
step "tests/e2e/run.py $*"
python3 tests/e2e/run.py --no-build-guest "$@"
if [ $# -eq 0 ]; then # not for a selection of e2e cases
	step "tests/e2e/soak.py --quick (the fault campaign, one kill of each kind)"
	python3 tests/e2e/soak.py --quick
fi
step "all tests passed"
