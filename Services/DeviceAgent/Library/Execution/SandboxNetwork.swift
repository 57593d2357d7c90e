#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// Outbound-only network for a sandbox that asks for it (`network: true`): the sandbox keeps its own network
/// namespace; slirp4netns gives it a user-mode TCP/IP stack (NAT through the agent's host, no route to the host's
/// loopback), and nftables inside that namespace refuses the host's own addresses, private and special-purpose
/// ranges (unless the owner allows some) and every inbound connection. The workload is held until all of it is in
/// place; if any step fails, it never starts.
public struct SandboxNetwork: Sendable {
    /// IPv4 ranges no workload reaches (RFC 6890 special-purpose and private ranges, loopback, multicast).
    public static let refusedIPv4 = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/3",
    ]
    /// IPv6 ranges no workload reaches.
    public static let refusedIPv6 = ["::/127", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8"]
    /// slirp4netns's DNS forwarder inside the sandbox.
    public static let resolver = "10.0.2.3"

    /// Ranges the owner lets workloads reach although they are refused by default (`owner.network_allow`).
    public var allowed: [String]
    /// The host's own addresses, refused (a service listening on all interfaces is not the workload's).
    public var hostAddresses: [String]
    public var slirp4netns = "/usr/bin/slirp4netns"
    public var nft = "/usr/sbin/nft"
    public var nsenter = "/usr/bin/nsenter"
    public var unshare = "/usr/bin/unshare"

    public init(allowed: [String] = [], hostAddresses: [String] = SandboxNetwork.localAddresses()) {
        self.allowed = allowed
        self.hostAddresses = hostAddresses
    }

    /// Whether the tools it needs are installed.
    public var isAvailable: Bool {
        [slirp4netns, nft, nsenter, unshare].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The nftables ruleset loaded into the sandbox's namespace.
    public var rules: String {
        func family(_ address: String) -> String { address.contains(":") ? "ip6" : "ip" }
        var output = [
            "table inet orrery_sandbox {",
            "  chain output {",
            "    type filter hook output priority 0; policy accept;",
            "    oifname \"lo\" accept",
            "    ip daddr \(Self.resolver) udp dport 53 accept",
            "    ip daddr \(Self.resolver) tcp dport 53 accept",
        ]
        for range in allowed { output.append("    \(family(range)) daddr \(range) accept") }
        for address in hostAddresses {
            output.append("    \(family(address)) daddr \(address) reject")
        }
        for range in Self.refusedIPv4 { output.append("    ip daddr \(range) reject") }
        for range in Self.refusedIPv6 { output.append("    ip6 daddr \(range) reject") }
        output += [
            "  }",
            "  chain input {",
            "    type filter hook input priority 0; policy drop;",
            "    iifname \"lo\" accept",
            "    ct state established,related accept",
            "  }",
            "}",
        ]
        return output.joined(separator: "\n") + "\n"
    }

    /// The `resolv.conf` bound into the sandbox: slirp4netns's forwarder (the host's may name its own loopback).
    public static let resolvConf = "nameserver \(resolver)\n"

    /// Shell lines that run `sandbox` (a quoted bubblewrap command line that shares the network namespace it starts
    /// in) inside a network namespace of its own, with its output `redirections`, once that namespace has its network
    /// and firewall; they leave the workload's exit status in `$status`. `directory` is the allocation's (quoted),
    /// where the ruleset file already is.
    ///
    /// The namespace is made by `unshare` (with a user namespace of its own when the agent is not root, which is
    /// what lets an unprivileged agent give it a network), and holds the workload back until the firewall is in
    /// place: the holder execs bubblewrap only after reading `go`. The workload runs in a user namespace nested
    /// below the one owning the network namespace, with no capability over it: it cannot change the firewall.
    func launchLines(sandbox: String, redirections: String, directory: String) -> String {
        let d = directory
        let privileged = geteuid() == 0
        let ownNamespace = privileged ? "--net" : "--user --map-root-user --net"
        let slirpNamespace = privileged ? "" : "--userns-path=/proc/\"$holder\"/ns/user "
        let enter = privileged ? "-n" : "-U -n --preserve-credentials"
        return """
            refuse() {
                echo "orrery: the sandbox's network could not be set up: $1" >> \(d)/stderr.log
                printf '%s' "the sandbox's network could not be set up: $1" > \(d)/stop_reason
                [ -n "$holder" ] && kill -9 "$holder" 2>/dev/null
                [ -n "$slirp" ] && kill "$slirp" 2>/dev/null
                echo 125 > \(d)/exit_status.tmp && mv \(d)/exit_status.tmp \(d)/exit_status
                exit 0
            }
            holder=; slirp=
            rm -f \(d)/net.go \(d)/net.ready
            mkfifo \(d)/net.go || refuse "mkfifo failed"
            \(shellQuoted(unshare)) \(ownNamespace) -- /bin/sh -c 'read go < "$1" && [ "$go" = go ] || exit 125; shift; exec "$@"' \\
                holder \(d)/net.go \(sandbox) \(redirections) &
            holder=$!
            tries=0
            while [ "$(readlink /proc/"$holder"/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; do
                kill -0 "$holder" 2>/dev/null || refuse "no network namespace could be made"
                tries=$((tries + 1)); [ "$tries" -gt 500 ] && refuse "no network namespace was made in time"
                sleep 0.02
            done
            \(shellQuoted(slirp4netns)) --configure --mtu=65520 --disable-host-loopback --enable-sandbox --enable-seccomp \\
                --ready-fd 9 \(slirpNamespace)--netns-type=path /proc/"$holder"/ns/net tap0 9>\(d)/net.ready > \(d)/net.log 2>&1 &
            slirp=$!
            tries=0
            while [ ! -s \(d)/net.ready ]; do
                kill -0 "$slirp" 2>/dev/null || refuse "slirp4netns exited: $(grep -v WARNING \(d)/net.log | tail -c 300)"
                tries=$((tries + 1)); [ "$tries" -gt 400 ] && refuse "slirp4netns did not become ready"
                sleep 0.05
            done
            \(shellQuoted(nsenter)) -t "$holder" \(enter) \(shellQuoted(nft)) -f \(d)/net.nft >> \(d)/net.log 2>&1 \\
                || refuse "the firewall was not loaded: $(grep -v WARNING \(d)/net.log | tail -c 300)"
            echo go > \(d)/net.go
            wait "$holder"
            status=$?
            kill "$slirp" 2>/dev/null
            """
    }

    /// Every address configured on this host's interfaces, loopback excluded.
    public static func localAddresses() -> [String] {
        var addresses: [String] = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr else { continue }
            let family = Int32(address.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length = socklen_t(
                family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            guard getnameinfo(address, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else {
                continue
            }
            let text = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let plain = text.split(separator: "%").first.map(String.init) ?? text
            if plain.hasPrefix("127.") || plain == "::1" { continue }
            addresses.append(plain)
        }
        return Array(Set(addresses)).sorted()
    }

    /// Whether `text` is an IPv4 or IPv6 address with an optional prefix length, as an owner writes an allowance.
    public static func isRange(_ text: String) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count) else { return false }
        let address = String(parts[0])
        var buffer = [UInt8](repeating: 0, count: 16)
        let isV6 = address.contains(":")
        guard inet_pton(isV6 ? AF_INET6 : AF_INET, address, &buffer) == 1 else { return false }
        if parts.count == 2 {
            guard let prefix = Int(parts[1]), (0...(isV6 ? 128 : 32)).contains(prefix) else { return false }
        }
        return true
    }
}
