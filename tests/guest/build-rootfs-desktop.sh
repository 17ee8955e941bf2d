#!/usr/bin/env bash
# build-rootfs-desktop.sh [OUTDIR] — debootstrap (minbase) a Debian rootfs with two desktop
# sessions on Mesa's virgl driver and pack it as OUTDIR/rootfs-desktop.ext4:
#   weston (DRM backend, GL renderer, desktop-shell) with weston-terminal;
#   Xorg (modesetting driver, glamor) with xterm and twm, plus xrandr and a udev rule that
#   applies the connector's new preferred mode when the virtio-gpu driver reports a hotplug.
# Boot it with: run-guest.sh ... --rootfs OUTDIR/rootfs-desktop.ext4 --test desktop-weston
# (the initramfs's /init chroots into it and runs src/guest-desktop).
#
# A separate image from rootfs-3d.ext4, so the 3D cases keep their image (and its cache)
# as it is. Cached: the debootstrap tree is kept in OUTDIR/cache/rootfs-desktop; when only
# the kit's own files (guest-desktop) changed, only they and the image are redone, and a
# build with nothing changed is a no-op.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(realpath -m "${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/guest}")
CACHE=$OUT/cache
ROOT=$CACHE/rootfs-desktop
IMG=$OUT/rootfs-desktop.ext4
T0=$(date +%s)
log() { printf '[build-rootfs-desktop] %s\n' "$*" >&2; }
die() { printf '[build-rootfs-desktop] ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap >&2
command -v mkfs.ext4 >/dev/null || apt-get install -y --no-install-recommends e2fsprogs >&2
mkdir -p "$CACHE"

. /etc/os-release
CODENAME=$VERSION_CODENAME
# Mesa (virgl), udev + libinput (both sessions' input), weston (its terminal is in the
# package), Xorg's server (modesetting and glamor are in xserver-xorg-core) with libinput,
# xterm, twm, xrandr/xsetroot (x11-xserver-utils), xwininfo/xev (x11-utils)
PKGS=libgl1-mesa-dri,libegl-mesa0,libgbm1,libegl1,libgles2,kmod,udev,libinput10,xkb-data,libxkbcommon0
PKGS+=,weston,fonts-dejavu-core
PKGS+=,xserver-xorg-core,xserver-xorg-input-libinput,xterm,twm,x11-xserver-utils,x11-utils

# The archive address comes from the system's own apt sources (never hard-coded).
mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || die "cannot find the archive address in the system's apt sources"

SIG="$CODENAME $PKGS"
if [ ! -e "$ROOT/.done" ] || [ "$(cat "$ROOT/.done")" != "$SIG" ]; then
	rm -rf "$ROOT"
	log "debootstrap --variant=minbase $CODENAME (+ $PKGS)"
	debootstrap --variant=minbase --include="$PKGS" "$CODENAME" "$ROOT" "$mirror" >"$CACHE/debootstrap-desktop.log" 2>&1 ||
		{ tail -n 30 "$CACHE/debootstrap-desktop.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap-desktop.log)"; }
	# slim down; drop the archive address that debootstrap wrote into the image
	chroot "$ROOT" apt-get clean
	rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* \
		"$ROOT"/usr/share/locale/* "$ROOT"/usr/share/info/* "$ROOT"/var/cache/debconf/*-old \
		"$ROOT"/var/log/*.log
	: >"$ROOT/etc/apt/sources.list"
	echo guestdesktop >"$ROOT/etc/hostname"
	echo "$SIG" >"$ROOT/.done"
fi

# The kit's own files: the test driver, and the guest-side piece that makes X follow the
# host's size (README "Guest desktops"): on the drm "change" uevent with HOTPLUG=1 that
# virtio-gpu sends after the host's display-change event, udev runs x-hotplug-auto, which
# gives every connected output of each running X server its (new) preferred mode.
changed=0
inst() { # inst MODE DEST: stdin -> ROOT/DEST when different
	local tmp
	tmp=$(mktemp)
	cat >"$tmp"
	if ! cmp -s "$tmp" "$ROOT/$2"; then
		install -D -m "$1" "$tmp" "$ROOT/$2"
		changed=1
	fi
	rm -f "$tmp"
}
inst 755 usr/local/bin/guest-desktop <"$HERE/src/guest-desktop"
inst 644 etc/udev/rules.d/95-x-hotplug-auto.rules <<'EOF'
# A virtio-gpu (or any DRM) hotplug: let running X servers take the connectors' preferred modes.
ACTION=="change", SUBSYSTEM=="drm", ENV{HOTPLUG}=="1", RUN+="/usr/local/bin/x-hotplug-auto"
EOF
inst 755 usr/local/bin/x-hotplug-auto <<'EOF'
#!/bin/sh
# Run by udev on a DRM hotplug uevent (95-x-hotplug-auto.rules): every running X server
# re-probes its outputs (xrandr -q) and sets each connected one to its preferred mode
# (`xrandr --output NAME --auto`, which also resizes the screen to fit; a bare `xrandr --auto`
# once left the mode as it was here). X's modesetting driver re-reads the connectors on the
# uevent itself but keeps the current mode.
for s in /tmp/.X11-unix/X*; do
	[ -S "$s" ] || continue
	export DISPLAY=:${s##*/X}
	# `xrandr -q` probes the outputs (new modes, the new preferred one first)
	for o in $(xrandr -q | awk '$2 == "connected" { print $1 }'); do
		if xrandr --output "$o" --auto 2>/tmp/x-hotplug-auto.err; then
			echo "GUEST-X-HOTPLUG display=$DISPLAY xrandr --output $o --auto" >/dev/ttyS0
		else
			echo "GUEST-X-HOTPLUG display=$DISPLAY xrandr --output $o --auto failed: $(tr '\n' ' ' </tmp/x-hotplug-auto.err)" >/dev/ttyS0
		fi
	done
	xrandr -q | sed 's/^/GUEST-X-HOTPLUG /' >/dev/ttyS0
done
exit 0
EOF
inst 755 usr/local/bin/term-shell <<'EOF'
#!/bin/sh
# The terminals' shell: bash inside script(1), which copies everything the shell writes to
# the terminal (the echo of typed keys too) to the second serial port, /dev/ttyS1 when the VM
# has one: the host paces its typing by that echo (see tests/e2e/desktop.py).
[ -c /dev/ttyS1 ] && exec script -q -f -c "bash --norc -i" /dev/ttyS1
exec bash --norc -i
EOF
inst 644 etc/xdg/weston/weston.ini <<'EOF'
[core]
backend=drm-backend.so
idle-time=0

[shell]
background-color=0xff204a78
panel-position=top
locking=false
animation=none
close-animation=none
startup-animation=none
focus-animation=none
clock-format=none

[keyboard]
keymap_layout=us
# no key repeat: on a loaded host a press and its release may reach the guest far apart
repeat-rate=0
EOF

if [ ! -e "$IMG" ] || [ "$changed" = 1 ] || [ "$ROOT/.done" -nt "$IMG" ]; then
	used_kb=$(du -sk "$ROOT" | cut -f1)
	size_mb=$((used_kb * 12 / 10 / 1024 + 64))
	log "mkfs.ext4 -d ($((used_kb / 1024)) MiB of files -> ${size_mb} MiB image)"
	rm -f "$IMG.tmp"
	mkfs.ext4 -q -F -L guestdesktop -d "$ROOT" "$IMG.tmp" "${size_mb}M"
	mv "$IMG.tmp" "$IMG"
fi
log "done in $(($(date +%s) - T0))s: $IMG ($(du -h --apparent-size "$IMG" | cut -f1) apparent, $(du -h "$IMG" | cut -f1) on disk)"
echo "$IMG"
