#!/usr/bin/env bash
# device-bench-3d.sh — kmscube through scanway's virgl path on a machine with no
# package archive and no QEMU (the `device` machine: an NVIDIA GPU through the EGL
# device platform). Two steps:
#
#   scripts/device-bench-3d.sh pack          (here) writes .dev1/ and .dev2/
#   scripts/device-bench-3d.sh run [FRAMES]  (there, in the repo root, as root)
#
# `pack` bundles everything `run` needs: QEMU with its libraries and firmware, zstd,
# the guest kernel and initramfs, scanway's release binary with its libraries, and the
# 3D root filesystem (zstd). The bundle is larger than one transfer may be (64 MiB),
# so the root filesystem is split over .dev1/ and .dev2/: carry .dev1 in one call that
# runs `unpack`, then .dev2 in the next (the machine is still warm) with `run`.
# `run` boots the guest against scanway headless three times, with virgl (shared), with
# virgl in an isolated worker (3d=isolated: scanouts as dmabufs where that EGL exports them)
# and, as the baseline in the same run, with --no-3d (the guest's Mesa then renders in
# software), and prints kmscube's fps for each (its last report: frames since it began
# rendering), their ratios, each scanout path and the EGL renderer scanway used; then the
# isolated-worker integration test (tests/isolated_worker.rs, built by `pack`) against that
# machine's EGL.
# Both folders are ignored by git (.git/info/exclude).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STAGE=/tmp/scanway-device

libs_of() { # the shared libraries a binary needs, glibc's own excluded
	ldd "$1" | awk '$3 ~ /^\// {print $3}' |
		grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux-x86-64)\.so' || true
}

pack_tools() { # scanway and its libraries in bin/ lib/; QEMU, zstd and theirs in bin/ qlib/
	local t
	t=$(mktemp -d)
	mkdir -p "$t/bin" "$t/lib" "$t/qlib" "$t/fw"
	cp /usr/bin/qemu-system-x86_64 "$(command -v zstd)" target/release/scanway "$t/bin/"
	# the isolated-worker integration test, run against the machine's EGL
	cp "$(cargo test --release --test isolated_worker --no-run --message-format=json 2>/dev/null |
		python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -n1)" "$t/bin/isolated_worker"
	# libgcc_s comes from the machine: the GPU driver's libraries may need its newer one
	libs_of target/release/scanway | grep -v libgcc_s | xargs -r cp -L -t "$t/lib/"
	{ libs_of /usr/bin/qemu-system-x86_64; libs_of "$(command -v zstd)"; } | sort -u | xargs -r cp -L -t "$t/qlib/"
	# vhost-user-gpu-pci lives in QEMU's loadable modules
	cp /usr/lib/x86_64-linux-gnu/qemu/hw-display-virtio-gpu{,-pci}.so "$t/qlib/"
	cp /usr/share/seabios/bios-256k.bin /usr/share/qemu/{linuxboot_dma.bin,kvmvapic.bin} "$t/fw/"
	cp target/guest/vmlinuz target/guest/initramfs.cpio.gz "$t/"
	cp -r /usr/share/X11/xkb "$t/xkb" # keymaps for the seat's keyboard
	rm -rf .dev1/tools.tar.zst .dev1/zstd
	tar -C "$t" -cf - . | zstd -q -19 -T0 -o .dev1/tools.tar.zst
	rm -rf "$t"
	mkdir .dev1/zstd # uncompressed: it unpacks the rest
	cp "$(command -v zstd)" .dev1/zstd/ && libs_of "$(command -v zstd)" | xargs -r cp -L -t .dev1/zstd/
}

pack_rootfs() {
	local rootfs
	rootfs=$(tests/guest/build-rootfs-3d.sh 2>/dev/null | tail -n1)
	zstd -q -19 -T0 -c "$rootfs" >"$STAGE.rootfs.zst"
	# .dev1 holds ~34 MiB of tools: 24 MiB of the root filesystem go with them, the rest in .dev2
	head -c 24M "$STAGE.rootfs.zst" >.dev1/rootfs.zst.aa
	tail -c +$((24 * 1024 * 1024 + 1)) "$STAGE.rootfs.zst" >.dev2/rootfs.zst.ab
	rm -f "$STAGE.rootfs.zst"
}

pack() {
	cargo build --release -q
	tests/guest/build-guest.sh >/dev/null
	mkdir -p .dev1 .dev2
	grep -qx '/.dev1/' .git/info/exclude || printf '/.dev1/\n/.dev2/\n' >>.git/info/exclude
	pack_tools
	[ "${1:-}" = --tools-only ] || pack_rootfs
	du -sh .dev1 .dev2
}

# the figures (fps, CPU time) are read in one place: tests/e2e/harness.py (its command line)
figure() { python3 tests/e2e/harness.py "$@"; }

unpack_tools() {
	rm -rf "$STAGE" && mkdir -p "$STAGE"
	LD_LIBRARY_PATH=.dev1/zstd .dev1/zstd/zstd -dc .dev1/tools.tar.zst | tar -C "$STAGE" -xf -
	# (absent after `pack --tools-only`: the tools alone run the integration test)
	if [ -f .dev1/rootfs.zst.aa ]; then cp .dev1/rootfs.zst.aa "$STAGE/rootfs.zst.part"; fi
}

# one_pass NAME FRAMES [SCANWAY-ARGS...]: kmscube through scanway; sets FPS, RENDERER, CPU_MS
one_pass() {
	local name=$1 frames=$2 guest_opts=${GUEST_OPTS:-}
	shift 2
	local out=$STAGE/$name
	rm -rf "$out" && mkdir -p "$out/xdg" && chmod 700 "$out/xdg"
	XDG_RUNTIME_DIR=$out/xdg XKB_CONFIG_ROOT=$STAGE/xkb LD_LIBRARY_PATH=$STAGE/lib RUST_LOG=${RUST_LOG:-info} \
		"$STAGE/bin/scanway" run --backend headless --control "$out/ctl.sock" --guest "g0=$out/g0.sock$guest_opts" "$@" \
		>"$out/scanway.out" 2>"$out/scanway.err" &
	local sw=$!
	for _ in $(seq 100); do [ -S "$out/g0.sock" ] && break; sleep 0.1; done
	if ! kill -0 "$sw" 2>/dev/null; then
		[ -n "${OUT:-}" ] && cp "$out/scanway.err" "$OUT/$name-scanway.err"
		tail -n 20 "$out/scanway.err" >&2
		exit 1
	fi
	local t0 t1
	t0=$(figure cpu-ticks "$sw")
	tests/guest/run-guest.sh --socket "$out/g0.sock" --test kmscube --frames "$frames" --hold 1 \
		--kernel "$STAGE/vmlinuz" --initrd "$STAGE/initramfs.cpio.gz" \
		--rootfs "$STAGE/rootfs.ext4" --mem 1G --workdir "$out/guest" --timeout 270 --quiet \
		--ready '^GUEST-3D-DONE' >"$out/run-guest.log" 2>&1 || true
	t1=$(figure cpu-ticks "$sw")
	XDG_RUNTIME_DIR=$out/xdg LD_LIBRARY_PATH=$STAGE/lib "$STAGE/bin/scanway" list --control "$out/ctl.sock" \
		>"$out/list.txt" 2>&1 || true
	XDG_RUNTIME_DIR=$out/xdg LD_LIBRARY_PATH=$STAGE/lib "$STAGE/bin/scanway" list --json --control "$out/ctl.sock" \
		>"$out/list.json" 2>&1 || true
	PATH_OF=$(python3 -c 'import json,sys
g = json.load(open(sys.argv[1]))["guests"][0]
print(",".join(sorted({s.get("path", "?") for s in g["scanouts"] if s.get("enabled")})) or "-", json.dumps(g.get("3d")))' "$out/list.json" 2>/dev/null || echo '?')
	kill "$sw" 2>/dev/null || true
	FPS=$(figure kmscube-fps "$out/guest/serial.log" || true)
	RENDERER=$(grep -a -m1 'renderer:' "$out/guest/serial.log" | sed 's/.*renderer: *//' | tr -d '\r"' || true)
	CPU_MS=$(figure cpu-ms-per-frame $((t1 - t0)) "$frames")
	if [ -n "${OUT:-}" ]; then
		for f in scanway.err guest/serial.log run-guest.log list.txt list.json; do cp "$out/$f" "$OUT/$name-${f#guest/}" 2>/dev/null || true; done
	fi
}

run() {
	local frames=${1:-1500}
	[ -d "$STAGE/bin" ] || { echo "unpack first (.dev1)" >&2; exit 1; }
	[ -f "$STAGE/rootfs.ext4" ] ||
		cat "$STAGE/rootfs.zst.part" .dev2/rootfs.zst.ab | LD_LIBRARY_PATH=$STAGE/qlib "$STAGE/bin/zstd" -dc >"$STAGE/rootfs.ext4"
	# run-guest.sh calls qemu-system-x86_64 from PATH
	mkdir -p "$STAGE/path"
	printf '#!/bin/sh\nQEMU_MODULE_DIR=%s LD_LIBRARY_PATH=%s exec %s -L %s "$@"\n' "$STAGE/qlib" "$STAGE/qlib" \
		"$STAGE/bin/qemu-system-x86_64" "$STAGE/fw" >"$STAGE/path/qemu-system-x86_64"
	chmod +x "$STAGE/path/qemu-system-x86_64"
	export PATH=$STAGE/path:$PATH

	# baseline: the same guest with scanway's 3D off, so the guest's Mesa renders in software
	local b_fps= b_r=- b_cpu=-
	if [ "${BASELINE:-1}" = 1 ]; then # BASELINE=0: skip it (about 270 s)
		one_pass baseline "$frames" --no-3d
		b_fps=$FPS b_r=$RENDERER b_cpu=$CPU_MS
	fi
	one_pass virgl "$frames"
	local v_fps=$FPS v_r=$RENDERER v_cpu=$CPU_MS v_path=$PATH_OF
	GUEST_OPTS=,3d=isolated one_pass isolated "$frames"
	local i_fps=$FPS i_r=$RENDERER i_cpu=$CPU_MS i_path=$PATH_OF
	FPS=$v_fps RENDERER=$v_r CPU_MS=$v_cpu
	local egl
	egl=$(sed 's/\x1b\[[0-9;]*m//g' "$STAGE/virgl/scanway.err" | grep -a -o 'GL renderer: .*' | head -n1 | sed 's/GL renderer: //')
	printf '\nkmscube, %s frames, TCG guest (1 vCPU), host CPU: %s\n' "$frames" \
		"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
	printf 'scanway EGL: %s\n' "${egl:-?}"
	printf '%-40s %10s %14s  %s\n' path fps "host ms/frame" "guest renderer"
	printf '%-40s %10s %14s  %s\n' "scanway virgl (zero-copy)" "${FPS:-?}" "$CPU_MS" "${RENDERER:-?}"
	printf '%-40s %10s %14s  %s\n' "scanway virgl, 3d=isolated" "${i_fps:-?}" "$i_cpu" "${i_r:-?}"
	printf '%-40s %10s %14s  %s\n' "scanway --no-3d (guest software GL)" "${b_fps:-?}" "$b_cpu" "${b_r:-?}"
	if [ -n "${FPS:-}" ] && [ -n "${b_fps:-}" ]; then
		printf 'ratio virgl/software: %sx\n' "$(awk "BEGIN{printf \"%.2f\", $FPS/$b_fps}")"
	fi
	if [ -n "${FPS:-}" ] && [ -n "${i_fps:-}" ]; then
		printf 'ratio isolated/shared: %sx\n' "$(awk "BEGIN{printf \"%.2f\", $i_fps/$FPS}")"
	fi
	printf 'scanout path (shared): %s\nscanout path (isolated): %s\n' "$v_path" "$i_path"
	printf '\nisolated-worker integration test on this EGL:\n'
	SCANWAY_BIN=$STAGE/bin/scanway LD_LIBRARY_PATH=$STAGE/lib "$STAGE/bin/isolated_worker" --nocapture 2>&1 |
		grep -a -E 'isolated_worker:|test result|panicked|assert' || true
}

case "${1:-}" in
pack) shift; pack "$@" ;;
unpack) unpack_tools ;;
run) shift; run "$@" ;;
*) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
