#!/usr/bin/env bash
# Installs Orrery on a host.
#   Deploy/install.sh cluster   the five cluster services + the orrery CLI, their units and orrery.target
#   Deploy/install.sh edge      the device agent + the orrery CLI, its unit and the orrery-agent user
# Options:
#   --bin-dir DIR   take the executables from DIR instead of building them (release, Tools/scripts/release-flags.sh)
#   --destdir DIR   install under DIR (packaging, tests); creates no user and starts nothing
#   --no-start      install and enable, but do not start
# Cluster services need a reachable PostgreSQL; set its address in /etc/orrery/<service>.json and the password
# as ORRERY_DB_PASSWORD in /etc/orrery/<service>.env (mode 0600).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

role=${1:-}
shift || true
bin_dir="" destdir="" start=1
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --destdir) destdir=$2; shift 2 ;;
        --no-start) start=0; shift ;;
        *) echo "unknown option $1 (see the header of $0)" >&2; exit 64 ;;
    esac
done
case "$role" in
    cluster) executables=(identity registry orchestrator contract-notary settlement-gateway orrery)
             units=(orrery-identity.service orrery-registry.service orrery-orchestrator.service
                    orrery-contract-notary.service orrery-settlement-gateway.service orrery.target) ;;
    edge)    executables=(device-agent orrery)
             units=(orrery-device-agent.service) ;;
    *) echo "usage: $0 cluster|edge [--bin-dir DIR] [--destdir DIR] [--no-start]" >&2; exit 64 ;;
esac

if [ -z "$bin_dir" ]; then
    # shellcheck source=Tools/scripts/release-flags.sh
    source "$root/Tools/scripts/release-flags.sh"
    prepare_release_scratch "$root/.build"
    (cd "$root" && swift build "${release_flags[@]}")
    bin_dir=$(cd "$root" && swift build "${release_flags[@]}" --show-bin-path)
fi

install -d -m 0755 "$destdir/usr/local/bin" "$destdir/etc/systemd/system"
install -d -m 0755 "$destdir/etc/orrery"
# Installed stripped (a release binary is mostly debug information) when binutils' strip is present.
strip_flag=()
command -v strip >/dev/null && strip_flag=(-s)
for executable in "${executables[@]}"; do
    [ -x "$bin_dir/$executable" ] || { echo "$bin_dir/$executable is missing" >&2; exit 66; }
    install -m 0755 "${strip_flag[@]}" "$bin_dir/$executable" "$destdir/usr/local/bin/$executable"
done
for unit in "${units[@]}"; do
    install -m 0644 "$here/systemd/$unit" "$destdir/etc/systemd/system/$unit"
done
for executable in "${executables[@]}"; do
    config="$here/config/$executable.json"
    target="$destdir/etc/orrery/$executable.json"
    if [ -f "$config" ] && [ ! -f "$target" ]; then
        install -m 0644 "$config" "$target"
    fi
done
echo "installed the $role role under ${destdir:-/}"

[ -z "$destdir" ] || exit 0
if [ "$role" = edge ] && ! id orrery-agent >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/orrery/device-agent --shell /usr/sbin/nologin orrery-agent
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    target=orrery.target
    [ "$role" = edge ] && target=orrery-device-agent.service
    if [ "$start" = 1 ]; then systemctl enable --now "$target"; else systemctl enable "$target"; fi
    echo "enabled $target"
else
    echo "systemd is not running here: start the services by hand or on a systemd host"
fi
