#!/bin/sh
# Prints the podman flags this host needs; nothing on a usual host. The Makefile's image
# targets use it for their defaults (make image PODMAN_FLAGS=... PODMAN_LIMITS=... overrides).
#
#   podman-flags.sh global   flags before the subcommand: the OCI runtime
#   podman-flags.sh limits   flags for build and run: resource limits
#
# global: on a host with hybrid cgroups (v1 controllers, and a cgroup2 hierarchy with
#   controllers of its own at /sys/fs/cgroup/unified), crun refuses to start a container
#   ("cgroups in hybrid mode not supported"); runc runs there, so it is chosen when installed.
# limits: as root, podman gives a container file and process limits above its own (nofile
#   1048576, nproc 4194304), which only a process with CAP_SYS_RESOURCE may raise to
#   ("setrlimit RLIMIT_NOFILE: Operation not permitted"). Without that capability the
#   container gets this shell's hard limits, and no more processes than pid_max (podman
#   lowers its own process limit to that).
set -eu

case "${1:-}" in
global)
    if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ] &&
        [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ] &&
        command -v runc >/dev/null; then
        echo "--runtime runc"
    fi
    ;;
limits)
    caps=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
    # CAP_SYS_RESOURCE is capability 24; rootless podman keeps within its limits by itself.
    if [ "$(id -u)" = 0 ] && [ $((0x$caps >> 24 & 1)) = 0 ]; then
        nofile=$(awk '/^Max open files/ { print $5 }' /proc/self/limits)
        nproc=$(awk '/^Max processes/ { print $4 }' /proc/self/limits)
        pid_max=$(cat /proc/sys/kernel/pid_max)
        [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
        [ "$nofile" = unlimited ] && nofile=1048576
        echo "--ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
    fi
    ;;
*)
    echo "usage: podman-flags.sh global|limits" >&2
    exit 2
    ;;
esac
