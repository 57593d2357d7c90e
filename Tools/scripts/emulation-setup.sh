#!/usr/bin/env bash
# For the QEMU user-emulation test (`make test`): Debian's qemu-user-static, its aarch64 handler registered in
# binfmt_misc (with the F flag, so containers reach the interpreter), and Debian's arm64 busybox-static unpacked into
# .cache/arm64/busybox. Nothing here is fatal: when a step cannot be done (no root, no binfmt_misc), it says why and
# the test that needs it is skipped, naming what is missing.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo -n); fi
say() { echo "emulation-setup: $*" >&2; }

if [ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null ||
        say "cannot install qemu-user-static"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    "${sudo[@]}" mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || say "cannot mount binfmt_misc"
fi
if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] &&
    [ -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
    # systemd-binfmt registers one file without systemd running; otherwise the line goes to `register` as it is.
    if [ -x /lib/systemd/systemd-binfmt ]; then
        "${sudo[@]}" /lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf || say "cannot register qemu-aarch64"
    else
        grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | "${sudo[@]}" tee /proc/sys/fs/binfmt_misc/register >/dev/null ||
            say "cannot register qemu-aarch64"
    fi
fi

target="$root/.cache/arm64/busybox"
if [ ! -x "$target" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        "${sudo[@]}" dpkg --add-architecture arm64 && "${sudo[@]}" apt-get update -qq || say "cannot add the arm64 architecture"
    fi
    chmod 777 "$work"
    if (cd "$work" && apt-get download -qq busybox-static:arm64 >/dev/null 2>&1) &&
        dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$work/root"; then
        mkdir -p "$(dirname "$target")"
        cp "$work/root/bin/busybox" "$target"
    else
        say "cannot fetch Debian's arm64 busybox-static"
    fi
fi
exit 0
