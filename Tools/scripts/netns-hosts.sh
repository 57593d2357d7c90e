#!/usr/bin/env bash
# Separate "hosts" on one machine for the across-hosts test: network namespaces joined by a router namespace.
#   netns-hosts.sh up PREFIX     creates them (removing any left by an earlier run of the same PREFIX)
#   netns-hosts.sh down PREFIX   removes them
# PREFIX (1–8 letters or digits) names the namespaces PREFIX-rt, PREFIX-svc, PREFIX-con, PREFIX-a1 and PREFIX-a2:
#   PREFIX-svc  the services' host, 10.77.0.10 on the router's bridge (10.77.0.0/24, router 10.77.0.1)
#   PREFIX-con  a consumer's host, 10.77.0.20 on the same bridge
#   PREFIX-a1   a device behind NAT, 10.78.1.2 on its own link to the router (10.78.1.0/24)
#   PREFIX-a2   another device behind NAT, 10.78.2.2 (10.78.2.0/24)
# The router (nftables) masquerades what the devices send out to the bridge and rejects every connection that
# starts outside a device's network and goes in (ICMP administratively prohibited: a connect fails at once with
# "No route to host"), as a home router would. Needs root, iproute2 and nftables.
# Each namespace is also held by a process of its own, whose pid `up` prints as `NAME PID` lines (and keeps in
# /run/orrery-netns/PREFIX/): /proc/PID/ns/net enters it with nsenter even if another program's mount changes hide
# the /run/netns name (a sandbox's mount namespace sharing /run/netns's propagation was seen to).
set -euo pipefail
# shellcheck source=lib/descriptors.sh
. "$(dirname "$0")/lib/descriptors.sh"
action=${1:?usage: netns-hosts.sh up|down PREFIX}
prefix=${2:?usage: netns-hosts.sh up|down PREFIX}
[[ $prefix =~ ^[a-z0-9]{1,8}$ ]] || { echo "PREFIX: 1–8 lowercase letters or digits" >&2; exit 64; }
# One `ip netns` user at a time (SandboxTests takes the same lock): two first `ip netns add`s at once each mount
# /run/netns over itself, and the second mount hides the namespaces made under the first.
mkdir -p /run/lock
exec 9>/run/lock/orrery-netns.lock
flock 9
router=$prefix-rt
hosts=("$prefix-svc" "$prefix-con" "$prefix-a1" "$prefix-a2")

holders=/run/orrery-netns/$prefix

down() {
    local pidfile
    for pidfile in "$holders"/*.pid; do
        [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    done
    rm -rf "$holders"
    for namespace in "$router" "${hosts[@]}"; do ip netns delete "$namespace" 2>/dev/null || true; done
}

case "$action" in
down) down ;;
up)
    down
    trap 'down' ERR
    for namespace in "$router" "${hosts[@]}"; do
        ip netns add "$namespace"
        ip -n "$namespace" link set lo up
    done
    ip -n "$router" link add br0 type bridge
    ip -n "$router" addr add 10.77.0.1/24 dev br0
    ip -n "$router" link set br0 up
    # Hosts on the bridge: each a veth pair, eth0 inside the host, its peer a port of the bridge.
    for entry in "svc 10.77.0.10" "con 10.77.0.20"; do
        read -r name address <<<"$entry"
        ip -n "$router" link add "v-$name" type veth peer name eth0 netns "$prefix-$name"
        ip -n "$router" link set "v-$name" master br0 up
        ip -n "$prefix-$name" addr add "$address/24" dev eth0
        ip -n "$prefix-$name" link set eth0 up
        ip -n "$prefix-$name" route add default via 10.77.0.1
    done
    # Devices: each on a network of its own behind the router.
    for index in 1 2; do
        ip -n "$router" link add "v-a$index" type veth peer name eth0 netns "$prefix-a$index"
        ip -n "$router" addr add "10.78.$index.1/24" dev "v-a$index"
        ip -n "$router" link set "v-a$index" up
        ip -n "$prefix-a$index" addr add "10.78.$index.2/24" dev eth0
        ip -n "$prefix-a$index" link set eth0 up
        ip -n "$prefix-a$index" route add default via "10.78.$index.1"
    done
    ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$router" nft -f - <<'NFT'
table ip nat {
    chain outbound {
        type nat hook postrouting priority srcnat;
        ip saddr 10.78.0.0/16 oifname "br0" masquerade
    }
}
table inet filter {
    chain forwarding {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        ip daddr 10.78.0.0/16 counter reject with icmpx type admin-prohibited
    }
}
NFT
    # Each namespace held by a process of its own (closing what this script inherited, so that its caller does not
    # wait for the holder), or say which cannot be entered.
    mkdir -p "$holders"
    for namespace in "$router" "${hosts[@]}"; do
        (
            close_inherited_descriptors
            exec ip netns exec "$namespace" sleep infinity </dev/null >/dev/null 2>&1
        ) &
        echo $! >"$holders/$namespace.pid"
    done
    for namespace in "$router" "${hosts[@]}"; do
        pid=$(cat "$holders/$namespace.pid")
        for _ in $(seq 1 50); do
            [ "$(readlink "/proc/$pid/ns/net")" = "$(ip netns exec "$namespace" readlink /proc/self/ns/net)" ] && break
            sleep 0.05
        done
        [ "$(readlink "/proc/$pid/ns/net")" = "$(ip netns exec "$namespace" readlink /proc/self/ns/net)" ] \
            || { echo "namespace $namespace was made but cannot be entered" >&2; down; exit 1; }
        echo "$namespace $pid"
    done
    trap - ERR
    ;;
*) echo "usage: netns-hosts.sh up|down PREFIX" >&2; exit 64 ;;
esac
