#!/usr/bin/env bash
# build-rootfs-3d.sh [OUTDIR] — debootstrap (minbase) a rootfs with Mesa, kmscube
# and glmark2-es2-drm for the 3D guest tests and pack it as OUTDIR/rootfs-3d.ext4.
# Boot it with: run-guest.sh ... --rootfs OUTDIR/rootfs-3d.ext4 --test kmscube
#
# MESA_SUITE=backports  take Mesa from <codename>-backports instead of <codename>
# Cached: the debootstrap tree is kept in OUTDIR/cache/rootfs-3d and only the
# guest-3d script and the image are redone when nothing else changed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(realpath -m "${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/guest}")
CACHE=$OUT/cache
ROOT=$CACHE/rootfs-3d
IMG=$OUT/rootfs-3d.ext4
MESA_SUITE=${MESA_SUITE:-stable}
T0=$(date +%s)
log() { printf '[build-rootfs-3d] %s\n' "$*" >&2; }
die() { printf '[build-rootfs-3d] ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap >&2
command -v mkfs.ext4 >/dev/null || apt-get install -y --no-install-recommends e2fsprogs >&2
mkdir -p "$CACHE"

. /etc/os-release
CODENAME=$VERSION_CODENAME
PKGS=kmscube,glmark2-es2-drm,libgl1-mesa-dri,libegl-mesa0,libgbm1,libegl1,libgles2,mesa-utils-bin,kmod,weston,wev,udev,libseat1,libinput10,libvirglrenderer1,xkb-data,libxkbcommon0

# The archive address comes from the system's own apt sources (never hard-coded).
mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || die "cannot find the archive address in the system's apt sources"

chroot_mounts() {
	mount -t proc proc "$ROOT/proc"
	mount -t sysfs sys "$ROOT/sys"
	mount --bind /dev "$ROOT/dev"
}
chroot_umounts() {
	umount "$ROOT/dev" 2>/dev/null || true
	umount "$ROOT/sys" 2>/dev/null || true
	umount "$ROOT/proc" 2>/dev/null || true
}

SIG="$CODENAME $PKGS $MESA_SUITE"
if [ ! -e "$ROOT/.done" ] || [ "$(cat "$ROOT/.done")" != "$SIG" ]; then
	chroot_umounts
	rm -rf "$ROOT"
	log "debootstrap --variant=minbase $CODENAME (+ $PKGS)"
	debootstrap --variant=minbase --include="$PKGS" "$CODENAME" "$ROOT" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
	if [ "$MESA_SUITE" = backports ]; then
		log "upgrading Mesa from $CODENAME-backports"
		src=/etc/apt/sources.list.d/debian.sources
		[ -e "$src" ] || die "MESA_SUITE=backports needs $src"
		awk -v bpo="$CODENAME-backports" 'BEGIN{RS="";ORS="\n\n"} NR==1{n=split($0,L,"\n");o="";for(i=1;i<=n;i++){if(L[i]~/^Suites:/)L[i]="Suites: " bpo;o=o L[i] "\n"};printf "%s\n",o}' \
			"$src" >"$ROOT/etc/apt/sources.list.d/backports.sources"
		cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
		chroot_mounts
		trap chroot_umounts EXIT
		chroot "$ROOT" apt-get update >&2
		chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			-t "$CODENAME-backports" libgl1-mesa-dri libegl-mesa0 libgbm1 mesa-libgallium >&2 ||
			chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
				-t "$CODENAME-backports" libgl1-mesa-dri libegl-mesa0 libgbm1 >&2
		chroot_umounts
		trap - EXIT
		rm -f "$ROOT/etc/apt/sources.list.d/backports.sources"
	fi
	# slim down; drop the archive address that debootstrap wrote into the image
	chroot "$ROOT" apt-get clean
	rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* \
		"$ROOT"/usr/share/locale/* "$ROOT"/usr/share/info/* "$ROOT"/var/cache/debconf/*-old \
		"$ROOT"/var/log/*.log
	: >"$ROOT/etc/apt/sources.list"
	echo guest3d >"$ROOT/etc/hostname"
	echo "$SIG" >"$ROOT/.done"
fi

cmp -s "$HERE/src/guest-3d" "$ROOT/usr/local/bin/guest-3d" ||
	install -D -m 755 "$HERE/src/guest-3d" "$ROOT/usr/local/bin/guest-3d"
# gles-pattern: built on the host against the same sonames the rootfs has (libEGL.so.1,
# libGLESv2.so.2, libgbm.so.1, libdrm.so.2; same glibc as the rootfs's bookworm).
GP=$ROOT/usr/local/bin/gles-pattern
if [ ! -e "$GP" ] || [ "$HERE/src/gles-pattern.c" -nt "$GP" ]; then
	log "compiling gles-pattern"
	gcc -O2 -Wall -Werror -I/usr/include/libdrm -o "$GP.tmp" "$HERE/src/gles-pattern.c" -ldrm -lgbm -lEGL -lGLESv2
	mv "$GP.tmp" "$GP"
fi
# bad-streams: malformed virgl streams and 3D commands (the hostile-stream campaign)
BS=$ROOT/usr/local/bin/bad-streams
if [ ! -e "$BS" ] || [ "$HERE/src/bad-streams.c" -nt "$BS" ]; then
	log "compiling bad-streams"
	gcc -O2 -Wall -Werror -I/usr/include/libdrm -o "$BS.tmp" "$HERE/src/bad-streams.c"
	mv "$BS.tmp" "$BS"
fi
# drm-one-mode.so: glmark2-es2-drm's LD_PRELOAD (one mode per connector, see the source)
OM=$ROOT/usr/local/lib/drm-one-mode.so
if [ ! -e "$OM" ] || [ "$HERE/src/drm-one-mode.c" -nt "$OM" ]; then
	log "compiling drm-one-mode.so"
	mkdir -p "$ROOT/usr/local/lib"
	gcc -O2 -Wall -Werror -shared -fPIC -I/usr/include/libdrm -o "$OM.tmp" "$HERE/src/drm-one-mode.c" -ldl
	mv "$OM.tmp" "$OM"
fi
if [ ! -e "$IMG" ] || [ -n "$(find "$ROOT/usr/local/bin/guest-3d" "$GP" "$BS" "$OM" "$ROOT/.done" -newer "$IMG" 2>/dev/null)" ]; then
	used_kb=$(du -sk "$ROOT" | cut -f1)
	size_mb=$(( used_kb * 12 / 10 / 1024 + 64 ))
	log "mkfs.ext4 -d ($((used_kb / 1024)) MiB of files -> ${size_mb} MiB image)"
	rm -f "$IMG.tmp"
	mkfs.ext4 -q -F -L guest3d -d "$ROOT" "$IMG.tmp" "${size_mb}M"
	mv "$IMG.tmp" "$IMG"
fi
log "done in $(( $(date +%s) - T0 ))s: $IMG ($(du -h --apparent-size "$IMG" | cut -f1) apparent, $(du -h "$IMG" | cut -f1) on disk)"
echo "$IMG"
