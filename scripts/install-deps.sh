#!/usr/bin/env bash
# install-deps.sh — install what scanway builds, runs and tests with on Debian 12 (as root).
#
# Adds the <codename>-backports suite, derived from the system's own apt sources (never a
# hard-coded archive host), because QEMU 10 (vhost-user-gpu with reconnect-ms) comes from
# there; everything is then installed with `-t <codename>-backports` so that Mesa and its -dev
# packages come from one suite (mixing suites makes apt refuse libgbm-dev).
#
# Usage: scripts/install-deps.sh [--test]     (--test adds what only the test suite needs)
set -euo pipefail
log() { printf '[install-deps] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
	log "not root: skipping package installation (install the packages listed in README.md yourself)"
	exit 0
fi

. /etc/os-release
CODENAME=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
BPO=$CODENAME-backports
src=/etc/apt/sources.list.d/debian.sources
bpo_file=/etc/apt/sources.list.d/scanway-backports.sources
if [ ! -e "$bpo_file" ] && ! grep -rqs "$BPO" /etc/apt/sources.list /etc/apt/sources.list.d/; then
	if [ -e "$src" ]; then
		# the first stanza (the main archive) with its suite switched to backports
		awk -v bpo="$BPO" 'BEGIN { RS=""; ORS="\n" }
			NR==1 { n=split($0, L, "\n");
			        for (i=1;i<=n;i++) { if (L[i] ~ /^Suites:/) L[i]="Suites: " bpo; print L[i] } }' \
			"$src" >"$bpo_file"
	elif [ -e /etc/apt/sources.list ]; then
		awk -v c="$CODENAME" -v b="$BPO" '$1=="deb" && $3==c { $3=b; print; exit }' \
			/etc/apt/sources.list >/etc/apt/sources.list.d/scanway-backports.list
	fi
	log "added $BPO"
	rm -f /var/lib/apt/periodic/scanway-updated
fi

# build: smithay's native dependencies
pkgs=(pkg-config gcc libc6-dev libudev-dev libseat-dev libinput-dev libxkbcommon-dev
	libpixman-1-dev libgbm-dev libwayland-dev libegl1 libegl-mesa0 libgl1-mesa-dri libwayland-egl1
	libvirglrenderer-dev libepoxy-dev libclang-dev)
# run: the demo guest
pkgs+=(qemu-system-x86 qemu-system-gui python3 cpio kmod xz-utils zstd libdrm-dev)
if [ "${1:-}" = --test ]; then
	pkgs+=(xvfb imagemagick edid-decode weston xauth debootstrap e2fsprogs libegl-dev libgles-dev xdotool)
	# the libvirt case: libvirtd and virtlogd started by the test itself
	pkgs+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/apt/periodic/scanway-updated
if [ ! -e "$stamp" ]; then
	apt-get update -qq >&2
	mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
apt-get install -y -qq --no-install-recommends -t "$BPO" "${missing[@]}" >&2
