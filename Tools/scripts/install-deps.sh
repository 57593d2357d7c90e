#!/usr/bin/env bash
# Installs what Orrery needs when it is missing: Debian's PostgreSQL server, protoc, bubblewrap, slirp4netns, nftables,
# iproute2, systemd-analyze, curl, zstd, runc (with --test-venv also docker-registry, umoci, skopeo and busybox-static for the image tests, systemd-container for the install test, and with --ha or --test-venv Patroni, etcd and HAProxy,
# and qemu-user-static with an arm64 busybox for the emulation test: Tools/scripts/emulation-setup.sh);
# the C libraries the chain adapters link (libsecp256k1, nettle, libsodium) and Python's venv module; with --test-venv also a Python venv (.venv-test) with the independent checkers.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)
command -v bwrap >/dev/null || missing+=(bubblewrap)
# The sandbox's outbound-only network: a user-mode stack, a firewall inside its namespace, nsenter (util-linux).
command -v slirp4netns >/dev/null || missing+=(slirp4netns)
[ -x /usr/sbin/nft ] || missing+=(nftables)
[ -x /usr/sbin/ip ] || missing+=(iproute2)
[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
# OCI image layers: zstd (the library; the command writes test layers).
[ -f /usr/include/zstd.h ] || missing+=(libzstd-dev)
command -v zstd >/dev/null || missing+=(zstd)
# The OCI runtime the agent runs images with.
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
if [ "${1:-}" = "--test-venv" ]; then
    # For the image tests and benchmarks: a real registry (CNCF distribution), images built with umoci and pushed
    # with skopeo, their root filesystems from busybox-static (a static /bin/busybox).
    [ -x /bin/busybox ] || missing+=(busybox-static)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v umoci >/dev/null || missing+=(umoci)
    command -v skopeo >/dev/null || missing+=(skopeo)
    # For the install test: a container booted with systemd (systemd-nspawn).
    [ -x /usr/bin/systemd-nspawn ] || missing+=(systemd-container)
fi
[ -f /usr/include/secp256k1_recovery.h ] || missing+=(libsecp256k1-dev)
[ -f /usr/include/nettle/sha3.h ] || missing+=(nettle-dev)
[ -f /usr/include/sodium.h ] || missing+=(libsodium-dev)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v runuser >/dev/null || missing+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ "${1:-}" = "--test-venv" ] || [ "${1:-}" = "--ha" ]; then
    # The highly available PostgreSQL (Deploy/ha): Patroni (its HTTPS client needs idna), etcd, HAProxy.
    command -v patroni >/dev/null || missing+=(patroni)
    /usr/bin/python3 -c 'import idna' 2>/dev/null || missing+=(python3-idna)
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v haproxy >/dev/null || missing+=(haproxy)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || { echo "the postgres user is missing after installing postgresql" >&2; exit 69; }

[ "${1:-}" = "--test-venv" ] || exit 0
"$root/Tools/scripts/emulation-setup.sh"

venv="$root/.venv-test"
requirements="$root/Tests/python/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "creating the Python test venv in $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
fi
