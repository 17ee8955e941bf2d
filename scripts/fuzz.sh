#!/usr/bin/env bash
# fuzz.sh — run scanway's fuzz targets (fuzz/fuzz_targets/, cargo fuzz + libFuzzer) and print
# what they did.
#
#   scripts/fuzz.sh [--time SECONDS] [--smoke] [--jobs N] [--sanitizer address|none] [TARGET...]
#
# Every target (default: all) runs for SECONDS (default 60; --smoke: 10) starting from its seed
# corpus, fuzz/corpus/TARGET (recorded from real guests and kept in git), in a working copy under
# target/fuzz/corpus/TARGET that grows from run to run. Printed per target: executions, exec/s,
# coverage (libFuzzer's edge counter `cov` and feature count `ft`), the coverage when half the
# executions were done (`cov@50%`: equal to `cov` when the growth has gone flat), corpus size,
# crashes; then the totals. --sanitizer none (default address) builds without AddressSanitizer,
# about twice as fast: the targets are Rust, whose safe code needs no sanitizer. Each sanitizer
# builds into its own directory (target/fuzz/build-SANITIZER), so the two never share a lock. A crash (panic, sanitizer report, timeout, out-of-memory) leaves its input in
# fuzz/artifacts/TARGET/ and makes the script exit 1: turn it into a regression test.
#
# Needs a nightly toolchain (AddressSanitizer) and cargo-fuzz: installed here when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[fuzz] %s\n' "$*" >&2; }

time_s=60
jobs=1
sanitizer=address
targets=()
while [ $# -gt 0 ]; do
	case "$1" in
	--time) time_s=$2; shift 2 ;;
	--smoke) time_s=10; shift ;;
	--jobs) jobs=$2; shift 2 ;;
	--sanitizer) sanitizer=$2; shift 2 ;;
	-*) log "unknown option $1"; exit 2 ;;
	*) targets+=("$1"); shift ;;
	esac
done

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
	log "installing the nightly toolchain (minimal profile)"
	rustup toolchain install nightly --profile minimal >&2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
	log "installing cargo-fuzz"
	cargo install cargo-fuzz --locked >&2
fi
if [ ${#targets[@]} -eq 0 ]; then
	mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

log "building ${#targets[@]} targets (release, debug assertions, sanitizer: $sanitizer)"
build=(-O -s "$sanitizer" --fuzz-dir fuzz --target-dir "target/fuzz/build-$sanitizer")
cargo +nightly fuzz build "${build[@]}" >&2

work=target/fuzz/corpus
mkdir -p "$work" target/fuzz/logs
printf '%-16s %12s %9s %7s %8s %7s %8s %7s\n' target execs exec/s cov cov@50% ft corpus crashes
total=0
failed=0
for t in "${targets[@]}"; do
	mkdir -p "$work/$t" "fuzz/corpus/$t" "fuzz/artifacts/$t"
	before=$(find "fuzz/artifacts/$t" -type f | wc -l)
	logf=target/fuzz/logs/$t.log
	rc=0
	# -jobs (even 1) makes libFuzzer run workers that log to ./fuzz-N.log instead of here
	parallel=()
	[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
	cargo +nightly fuzz run "${build[@]}" "$t" "$work/$t" "fuzz/corpus/$t" -- \
		-max_total_time="$time_s" -rss_limit_mb=2048 -timeout=10 "${parallel[@]}" \
		-print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$logf" 2>&1 || rc=$?
	# the last status line: "#123 DONE cov: 1 ft: 2 corp: 3/4b ... exec/s: 5 ..."
	line=$(grep -aE '^#[0-9]+' "$logf" | tail -1)
	execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$line")
	eps=$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$line")
	cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$line")
	ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$line")
	corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$line")
	# coverage of the last status line at or before half the executions
	half=$(grep -aE '^#[0-9]+.* cov: ' "$logf" | awk -v n="${execs:-0}" \
		'{ e = substr($1, 2) + 0; if (e <= n / 2) { sub(/.* cov: /, ""); sub(/ .*/, ""); c = $0 } } END { print c }')
	crashes=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - before ))
	printf '%-16s %12s %9s %7s %8s %7s %8s %7s\n' "$t" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${half:-?}" "${ft:-?}" \
		"${corp:-?}" "$crashes"
	total=$(( total + ${execs:-0} ))
	if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
		failed=1
		log "$t: libFuzzer exited $rc; see $logf and fuzz/artifacts/$t/"
		grep -aE 'panicked at|ERROR: |SUMMARY' "$logf" | head -5 >&2 || true
	fi
done
printf '%-16s %12s\n' total "$total"
exit "$failed"
