#!/usr/bin/env bash
# build-guest.sh [OUTDIR] — build scanway's virtio-gpu test guest from Debian packages.
#
# Output (OUTDIR, default: <repo>/target/guest, or $CARGO_TARGET_DIR/guest):
#   vmlinuz               Debian kernel (bookworm-backports linux-image-amd64, 6.12.x)
#   initramfs.cpio.gz     busybox + virtio-gpu/DRM (+ virtio-blk/ext4, virtio-input/evdev)
#                         modules + gpu-test + /init
#   gpu-test              the static test client (also inside the initramfs)
#   BUILD-INFO            versions, sizes
# Cache: OUTDIR/cache (downloaded .debs, private apt lists, extracted kernel).
#
# Idempotent: re-running only redoes steps whose inputs changed.
# Environment knobs:
#   KERNEL_PKG=linux-image-...   use this kernel package instead of the backports one
#   KERNEL_SUITE=stable          use bookworm's own linux-image-amd64 (6.1) instead
#   REFRESH=1                    re-run apt-get update of the private package lists
#   EXTRA_MODULES="a b"          extra kernel modules (by file name, no .ko) for the initramfs
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$(realpath -m "${1:-${CARGO_TARGET_DIR:-$REPO/target}/guest}")
CACHE=$OUT/cache
SRC=$HERE/src
mkdir -p "$OUT" "$CACHE/debs"
T_START=$(date +%s.%N)

log() { printf '[build-guest] %s\n' "$*" >&2; }
die() { printf '[build-guest] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- host tools
need_pkgs=()
command -v gcc >/dev/null || need_pkgs+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_pkgs+=(libc6-dev)
[ -e /usr/include/libdrm/drm_mode.h ] || need_pkgs+=(libdrm-dev)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || [ -x /sbin/depmod ] || need_pkgs+=(kmod)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
command -v zstd >/dev/null || need_pkgs+=(zstd)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing host tools: ${need_pkgs[*]}"
	[ "$(id -u)" = 0 ] || die "need root to apt-get install ${need_pkgs[*]}"
	apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 ||
		{ apt-get update >&2 && apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; }
fi
DEPMOD=$(command -v depmod || echo /usr/sbin/depmod)

# ------------------------------------------------------- private apt setup
# A private apt configuration (own lists, own sources) so that the backports
# suite is available without touching the system's apt configuration. The
# archive addresses are taken from the system's own sources, never hard-coded.
. /etc/os-release
CODENAME=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
APTDIR=$CACHE/apt
APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APTDIR/sources.list.d"
	-o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache"
	-o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$APTDIR/prefs.d"
	-o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")

apt_setup() {
	mkdir -p "$APTDIR/sources.list.d" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/prefs.d"
	local srcs=$APTDIR/sources.list.d
	if [ -e /etc/apt/sources.list.d/debian.sources ]; then
		cp /etc/apt/sources.list.d/debian.sources "$srcs/debian.sources"
		# first stanza (the main archive) with its suite switched to backports
		awk -v bpo="$CODENAME-backports" '
			BEGIN { RS=""; ORS="\n\n" }
			NR==1 { n=split($0, L, "\n"); out="";
			        for (i=1;i<=n;i++) { if (L[i] ~ /^Suites:/) L[i]="Suites: " bpo; out=out L[i] "\n" }
			        printf "%s\n", out }' /etc/apt/sources.list.d/debian.sources >"$srcs/backports.sources"
	elif [ -e /etc/apt/sources.list ]; then
		grep -E '^deb ' /etc/apt/sources.list >"$srcs/system.list" || true
		awk -v c="$CODENAME" '$1=="deb" && $3==c { $3=c "-backports"; print; exit }' \
			/etc/apt/sources.list >"$srcs/backports.list"
	else
		die "no /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list to derive sources from"
	fi
}

apt_update_if_needed() {
	local stamp=$APTDIR/lists/.updated
	if [ "${REFRESH:-0}" = 1 ] || [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
		apt_setup
		log "apt-get update (private lists in $APTDIR)"
		apt-get "${APT_OPTS[@]}" update >&2 || die "apt-get update failed"
		touch "$stamp"
	fi
}

# download PKG (exact name, optionally =VERSION or /SUITE) into the deb cache
# unless a matching .deb is already there; prints the .deb path.
fetch_deb() {
	local spec=$1 name=${1%%[=/]*}
	local have
	have=$(ls -1 "$CACHE/debs/${name}_"*.deb 2>/dev/null | tail -n1 || true)
	if [ -n "$have" ] && [ "${REFRESH:-0}" != 1 ]; then echo "$have"; return; fi
	apt_update_if_needed
	log "downloading $spec"
	(cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" download "$spec" >&2) || die "apt-get download $spec failed"
	ls -1t "$CACHE/debs/${name}_"*.deb | head -n1
}

# ----------------------------------------------------------------- kernel
if [ -n "${KERNEL_PKG:-}" ]; then
	kpkg=$KERNEL_PKG
elif [ -s "$CACHE/kernel.pkg" ] && [ "${REFRESH:-0}" != 1 ]; then
	kpkg=$(cat "$CACHE/kernel.pkg")
else
	apt_update_if_needed
	suite=$CODENAME-backports
	[ "${KERNEL_SUITE:-backports}" = stable ] && suite=$CODENAME
	kpkg=$(apt-cache "${APT_OPTS[@]}" show "linux-image-amd64/$suite" 2>/dev/null |
		sed -n 's/^Depends: *\(linux-image-[^ ,]*\).*/\1/p' | head -n1)
	[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 in $suite"
	echo "$kpkg" >"$CACHE/kernel.pkg"
fi
log "kernel package: $kpkg"
kdeb=$(fetch_deb "$kpkg")
KDIR=$CACHE/kernel
if [ ! -e "$KDIR/.from" ] || [ "$(cat "$KDIR/.from")" != "$(basename "$kdeb")" ]; then
	log "extracting $(basename "$kdeb")"
	rm -rf "$KDIR"
	mkdir -p "$KDIR"
	dpkg -x "$kdeb" "$KDIR"
	KVER=$(ls "$KDIR/lib/modules" | head -n1)
	log "depmod $KVER"
	"$DEPMOD" -b "$KDIR" "$KVER"
	basename "$kdeb" >"$KDIR/.from"
fi
KVER=$(ls "$KDIR/lib/modules" | head -n1)
MDIR=$KDIR/lib/modules/$KVER
grep -q '^CONFIG_DRM_VIRTIO_GPU=[ym]' "$KDIR/boot/config-$KVER" ||
	die "$kpkg has no virtio-gpu driver (cloud kernels lack DRM); use the generic flavour"

# --------------------------------------------------------------- busybox
bbdeb=$(fetch_deb busybox-static)
BBDIR=$CACHE/busybox
if [ ! -e "$BBDIR/.from" ] || [ "$(cat "$BBDIR/.from")" != "$(basename "$bbdeb")" ]; then
	rm -rf "$BBDIR"
	mkdir -p "$BBDIR"
	dpkg -x "$bbdeb" "$BBDIR"
	basename "$bbdeb" >"$BBDIR/.from"
fi
BUSYBOX=$BBDIR/bin/busybox
[ -x "$BUSYBOX" ] || die "busybox missing in $bbdeb"

# ------------------------------------------------------------ gpu-test
GT_SRC=("$SRC/gpu-test.c" "$SRC/kms.c" "$SRC/input.c")
GT_SIG=$(cat "${GT_SRC[@]}" "$SRC/gpu-test.h" | sha256sum | cut -d' ' -f1)
if [ ! -x "$OUT/gpu-test" ] || [ "$(cat "$CACHE/gpu-test.sig" 2>/dev/null)" != "$GT_SIG" ]; then
	log "compiling gpu-test (static)"
	gcc -static -O2 -Wall -Werror -I/usr/include/libdrm -o "$OUT/gpu-test.tmp" "${GT_SRC[@]}"
	strip "$OUT/gpu-test.tmp"
	mv "$OUT/gpu-test.tmp" "$OUT/gpu-test"
	echo "$GT_SIG" >"$CACHE/gpu-test.sig"
fi

# ------------------------------------------------- module closure (topo order)
# virtio-gpu and what it needs, virtio_blk + ext4 for the 3D tests' root
# filesystem on a disk (build-rootfs-3d.sh), and evdev + virtio_input for the
# input test (/dev/input/event* of QEMU's virtio-keyboard-pci/virtio-tablet-pci;
# evdev first, so the event nodes appear as virtio_input probes).  The list of
# modules is part of the initramfs's signature: a change here rebuilds it.
WANT=(virtio-gpu virtio_blk crc32c_generic ext4 evdev virtio_input ${EXTRA_MODULES:-})
declare -A DEPS=() PATHOF=() DONE=()
while IFS= read -r line; do
	mod=${line%%:*}
	base=${mod##*/}
	base=${base%%.ko*}
	PATHOF[$base]=$mod
	deps=""
	for d in ${line#*:}; do
		d=${d##*/}; deps+=" ${d%%.ko*}"
	done
	DEPS[$base]=$deps
done <"$MDIR/modules.dep"
ORDER=()
visit() {
	local m=$1 d
	[ -n "${DONE[$m]:-}" ] && return
	[ -n "${PATHOF[$m]:-}" ] || { log "module $m not in $KVER (built in?) - skipped"; DONE[$m]=1; return; }
	DONE[$m]=1
	for d in ${DEPS[$m]}; do visit "$d"; done
	ORDER+=("$m")
}
for m in "${WANT[@]}"; do visit "$m"; done

# ------------------------------------------------------------ initramfs
INPUTS_SIG=$( (echo "$kdeb $bbdeb ${ORDER[*]}"; sha256sum "$SRC/init" "$OUT/gpu-test") | sha256sum | cut -d' ' -f1)
if [ ! -e "$OUT/initramfs.cpio.gz" ] || [ "$(cat "$CACHE/initramfs.sig" 2>/dev/null)" != "$INPUTS_SIG" ]; then
	log "assembling initramfs (${#ORDER[@]} modules: ${ORDER[*]})"
	R=$CACHE/initramfs-root
	rm -rf "$R"
	mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,lib/modules,root}
	cp "$BUSYBOX" "$R/bin/busybox"
	cp "$SRC/init" "$R/init"
	chmod 755 "$R/init"
	cp "$OUT/gpu-test" "$R/usr/bin/gpu-test"
	: >"$R/lib/modules/load.list"
	for m in "${ORDER[@]}"; do
		p=$MDIR/${PATHOF[$m]}
		case "$p" in
		*.ko.xz) xz -dc "$p" >"$R/lib/modules/$m.ko" ;;
		*.ko.zst) zstd -qdc "$p" >"$R/lib/modules/$m.ko" ;;
		*.ko.gz) gzip -dc "$p" >"$R/lib/modules/$m.ko" ;;
		*) cp "$p" "$R/lib/modules/$m.ko" ;;
		esac
		echo "$m" >>"$R/lib/modules/load.list"
	done
	echo "$KVER" >"$R/etc/kernel-version"
	# /dev/console must exist before /init mounts devtmpfs, or /init starts
	# without stdin/stdout (the kernel opens it before running /init)
	mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || log "mknod /dev/console failed (not root?)"
	(cd "$R" && find . -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc --owner=0:0 --quiet >"$CACHE/initramfs.cpio")
	gzip -9 -n <"$CACHE/initramfs.cpio" >"$OUT/initramfs.cpio.gz.tmp"
	mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
	rm -f "$CACHE/initramfs.cpio"
	echo "$INPUTS_SIG" >"$CACHE/initramfs.sig"
fi
cmp -s "$KDIR/boot/vmlinuz-$KVER" "$OUT/vmlinuz" 2>/dev/null || cp "$KDIR/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

T_END=$(date +%s.%N)
{
	echo "kernel_package=$kpkg"
	echo "kernel_deb=$(basename "$kdeb")"
	echo "kernel_version=$KVER"
	echo "busybox_deb=$(basename "$bbdeb")"
	echo "modules=${ORDER[*]}"
	echo "vmlinuz_bytes=$(stat -c %s "$OUT/vmlinuz")"
	echo "initramfs_bytes=$(stat -c %s "$OUT/initramfs.cpio.gz")"
	echo "gpu_test_bytes=$(stat -c %s "$OUT/gpu-test")"
	echo "last_build_seconds=$(awk "BEGIN{printf \"%.1f\", $T_END-$T_START}")"
} >"$OUT/BUILD-INFO"
log "done in $(awk "BEGIN{printf \"%.1f\", $T_END-$T_START}")s: $OUT/vmlinuz ($(du -h "$OUT/vmlinuz" | cut -f1)), $OUT/initramfs.cpio.gz ($(du -h "$OUT/initramfs.cpio.gz" | cut -f1))"
echo "$OUT"
