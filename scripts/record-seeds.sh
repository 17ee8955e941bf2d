#!/usr/bin/env bash
# record-seeds.sh — record every e2e guest's requests and turn them into the fuzz targets' seed
# corpora (fuzz/corpus/, kept in git).
#
#   scripts/record-seeds.sh [run.py options, e.g. --only pattern,kmscube]
#
# Runs tests/e2e/run.py with SCANWAY_E2E_RECORD (each case's scanway gets --record-commands),
# then fuzz/seeds.py over the recordings (target/fuzz/recordings/CASE/GUEST-N.bin), then
# minimises the three corpora (cargo fuzz cmin).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rec=target/fuzz/recordings
rm -rf "$rec"
mkdir -p "$rec"
SCANWAY_E2E_RECORD=$PWD/$rec python3 tests/e2e/run.py --no-build-guest "$@" || true
python3 fuzz/seeds.py "$rec"
# keep only the seeds that add coverage (libFuzzer's -merge=1)
for t in ctrl_commands virgl_stream queue_rings; do
	cargo +nightly fuzz cmin -O --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- -rss_limit_mb=2048 >&2
done
du -sh fuzz/corpus/*
