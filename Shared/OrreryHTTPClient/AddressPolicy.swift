#if canImport(Glibc)
    internal import Glibc
#elseif canImport(Darwin)
    internal import Darwin
#endif
public import NIOCore

/// Which addresses a client may connect to, checked on the connected socket itself (so a name that resolves to a
/// public address for a check and a private one for the connection gains nothing).
public enum AddressPolicy: String, Sendable, Equatable, CaseIterable {
    /// Any address.
    case any
    /// Public addresses only: not loopback, private (RFC 1918, IPv6 unique-local), link-local, carrier-grade NAT,
    /// unspecified or multicast — what a host reached on someone else's behalf must not be.
    case publicOnly = "public"

    /// Whether `address` may be used: nil when it may, else what it is.
    public func refusal(_ address: SocketAddress?) -> String? {
        guard self == .publicOnly else { return nil }
        guard let text = address?.ipAddress else { return "not an internet address" }
        return Self.refusal(ip: text).map { "\(text) is \($0)" }
    }

    /// What an IP address (text) is when it is not public; nil for a public one.
    static func refusal(ip text: String) -> String? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return refusal(ipv4: UInt32(bigEndian: v4.s_addr)) }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return "not an IP address" }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return refusal(ipv4: bytes[12..<16].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        }
        if bytes.allSatisfy({ $0 == 0 }) { return "unspecified" }
        if bytes[0..<15].allSatisfy({ $0 == 0 }), bytes[15] == 1 { return "loopback" }
        if bytes[0] & 0xfe == 0xfc { return "a unique-local (private) address" }
        if bytes[0] == 0xfe, bytes[1] & 0xc0 == 0x80 { return "link-local" }
        if bytes[0] == 0xff { return "multicast" }
        return nil
    }

    static func refusal(ipv4 value: UInt32) -> String? {
        func within(_ network: UInt32, _ bits: UInt32) -> Bool {
            bits == 0 || value >> (32 - bits) == network >> (32 - bits)
        }
        if within(0x7f00_0000, 8) { return "loopback" }
        if within(0x0a00_0000, 8) || within(0xac10_0000, 12) || within(0xc0a8_0000, 16) { return "a private address" }
        if within(0xa9fe_0000, 16) { return "link-local" }
        if within(0x6440_0000, 10) { return "a carrier-grade NAT address" }
        if within(0x0000_0000, 8) { return "unspecified" }
        if within(0xe000_0000, 4) || value == 0xffff_ffff { return "multicast or broadcast" }
        return nil
    }
}
