#!/bin/sh
# Builds the container's base image from Debian packages alone: debootstrap --variant=minbase
# into a folder, then `podman import`. No registry image is pulled, so `make image` needs only
# a Debian mirror (for debootstrap and the build's apt-get) and the Python package index.
#
#   tools/image/base.sh [IMAGE]             default IMAGE: mriscribe-base:bookworm
#
# Environment (all optional):
#   DEBIAN_MIRROR           the mirror debootstrap installs from (unset: debootstrap's own default)
#   DEBIAN_SECURITY_MIRROR  a security archive; when set, SUITE-security is added to the
#                           image's apt sources so the build installs security updates
#   SUITE                   Debian release (default bookworm)
#   WORKDIR                 where the root file system is made (default .cache/image)
#   PODMAN                  the podman command with its flags (default: podman)
# debootstrap and the root file system need root: run as root, or with sudo at hand (then the
# image is imported into the calling user's podman storage, where a rootless build finds it).
set -eu

root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

image=${1:-mriscribe-base:bookworm}
suite=${SUITE:-bookworm}
work=${WORKDIR:-.cache/image}
podman=${PODMAN:-podman}
rootfs="$work/rootfs-$suite"

command -v debootstrap >/dev/null || {
    echo "base.sh: debootstrap not found (apt-get install debootstrap)" >&2
    exit 2
}

root rm -rf "$rootfs"
mkdir -p "$work"
trap 'root rm -rf "$rootfs"' EXIT

# The mirror is only passed when the user names one: the repository holds no registry address.
if [ -n "${DEBIAN_MIRROR:-}" ]; then
    root debootstrap --variant=minbase "$suite" "$rootfs" "$DEBIAN_MIRROR"
else
    root debootstrap --variant=minbase "$suite" "$rootfs"
fi

# debootstrap leaves one line, "deb MIRROR SUITE main": add the point-release updates from the
# same mirror, and security updates when a security archive is named.
mirror=$(awk '$1 == "deb" { print $2; exit }' "$rootfs/etc/apt/sources.list")
if [ -n "$mirror" ]; then
    echo "deb $mirror $suite-updates main" | root tee -a "$rootfs/etc/apt/sources.list" >/dev/null
fi
if [ -n "${DEBIAN_SECURITY_MIRROR:-}" ]; then
    echo "deb $DEBIAN_SECURITY_MIRROR $suite-security main" |
        root tee -a "$rootfs/etc/apt/sources.list" >/dev/null
fi

# What a container needs not carry: downloaded packages, package lists, logs, docs and man pages
# (kept out of later installs too, by the dpkg filter below); each package's copyright stays.
root sh -c 'cd "$1" && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/* var/log/* \
    usr/share/man/* usr/share/info/* usr/share/locale/* &&
    find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete &&
    find usr/share/doc -mindepth 1 -type d -empty -delete' sh "$rootfs"
root tee "$rootfs/etc/dpkg/dpkg.cfg.d/01-container-nodoc" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
# No recommended packages and no interactive questions in image builds.
root tee "$rootfs/etc/apt/apt.conf.d/01-container" >/dev/null <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF

root tar -C "$rootfs" --numeric-owner -c . |
    $podman import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$image"
echo "base.sh: built $image"
