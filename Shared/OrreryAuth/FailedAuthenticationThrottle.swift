#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import Synchronization

#if canImport(Glibc)
    internal import Glibc
#endif

/// Limits what forged capabilities can cost, per source address (as OpenSSH's `PerSourcePenalties` does): each
/// call whose capability fails its signature check took one verification of CPU, so a source gets `burst` such
/// failures, refilled at `rate` per second; past that, calls from its connections that have not yet authenticated are
/// refused RESOURCE_EXHAUSTED before anything is decoded or verified. A connection that has carried a valid
/// capability is exempt until a call on it fails, so a flood from one address does not lock out callers already
/// working. IPv6 sources count per /64, the block one host is usually given.
///
/// The throttle decides only who waits: it never lets anything through that the capability check would refuse.
public final class FailedAuthenticationThrottle: Sendable {
    /// A source's allowance of failed verifications.
    public struct Limits: Sendable, Equatable {
        /// Failures refilled per second (0 turns the throttle off).
        public var rate: Double
        /// Failures allowed at once.
        public var burst: Int

        public init(rate: Double, burst: Int) {
            self.rate = rate
            self.burst = burst
        }

        /// 16 failures per second with bursts of 64: an honest caller whose capability is wrong learns it long before.
        public static let standard = Limits(rate: 16, burst: 64)
    }

    /// What the throttle answers for a call.
    public enum Verdict: Sendable, Equatable {
        case admit
        /// Refused: the source has no failures left; `retryAfter` seconds until it has one.
        case refuse(source: String, retryAfter: Double)
    }

    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private struct State {
        var buckets: [String: Bucket] = [:]
        var provenPeers: Set<String> = []
    }

    /// The most sources and proven connections remembered (each a few dozen bytes).
    static let capacity = 65_536

    public let limits: Limits
    private let state = Mutex(State())
    private let clock: @Sendable () -> ContinuousClock.Instant

    private let onRefusal: @Sendable (_ peer: String, _ retryAfter: Double) -> Void

    /// - Parameter onRefusal: Called with each refused peer and the seconds until its source may try again (the
    ///   transport uses it to stop reading from that connection meanwhile).
    public init(
        limits: Limits, clock: @escaping @Sendable () -> ContinuousClock.Instant = { .now },
        onRefusal: @escaping @Sendable (_ peer: String, _ retryAfter: Double) -> Void = { _, _ in }
    ) {
        self.limits = limits
        self.clock = clock
        self.onRefusal = onRefusal
    }

    /// Whether a call from `peer` (gRPC's form: `ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`, `unix:…`) may have its
    /// capability checked now.
    public func verdict(peer: String) -> Verdict {
        guard limits.rate > 0 else { return .admit }
        let now = clock()
        let verdict = state.withLock { state -> Verdict in
            if state.provenPeers.contains(peer) { return .admit }
            let source = Self.source(of: peer)
            guard var bucket = state.buckets[source] else { return .admit }
            refill(&bucket, now: now)
            state.buckets[source] = bucket
            if bucket.tokens >= 1 { return .admit }
            return .refuse(source: source, retryAfter: (1 - bucket.tokens) / limits.rate)
        }
        if case .refuse(_, let retryAfter) = verdict { onRefusal(peer, retryAfter) }
        return verdict
    }

    /// A call from `peer` failed its signature check: its source spends one failure, and its connection is no
    /// longer trusted to be working.
    public func recordFailure(peer: String) {
        guard limits.rate > 0 else { return }
        let now = clock()
        state.withLock { state in
            state.provenPeers.remove(peer)
            let source = Self.source(of: peer)
            var bucket = state.buckets[source] ?? Bucket(tokens: Double(limits.burst), updated: now)
            refill(&bucket, now: now)
            // Floored, so that a burst of concurrent failures shuts a source out for at most `(burst + 1) / rate`.
            bucket.tokens = max(bucket.tokens - 1, -Double(limits.burst))
            if state.buckets.count >= Self.capacity, state.buckets[source] == nil {
                forgetRefilled(&state.buckets, now: now)
            }
            state.buckets[source] = bucket
        }
    }

    /// A call from `peer` carried a valid capability: its connection is exempt until a call on it fails.
    public func recordSuccess(peer: String) {
        guard limits.rate > 0 else { return }
        state.withLock { state in
            guard !state.provenPeers.contains(peer) else { return }
            if state.provenPeers.count >= Self.capacity { state.provenPeers.removeAll(keepingCapacity: true) }
            state.provenPeers.insert(peer)
        }
    }

    private func refill(_ bucket: inout Bucket, now: ContinuousClock.Instant) {
        let elapsed = now - bucket.updated
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        bucket.tokens = min(Double(limits.burst), bucket.tokens + max(0, seconds) * limits.rate)
        bucket.updated = now
    }

    /// Drops the sources whose allowance is whole again (they are as good as unknown); if none is, all of them.
    private func forgetRefilled(_ buckets: inout [String: Bucket], now: ContinuousClock.Instant) {
        buckets = buckets.filter { _, bucket in
            var bucket = bucket
            refill(&bucket, now: now)
            return bucket.tokens < Double(limits.burst)
        }
        if buckets.count >= Self.capacity { buckets.removeAll(keepingCapacity: true) }
    }

    /// The address a peer's failures are counted under: an IPv4 address, an IPv6 address's /64, or the peer
    /// description itself when it is neither.
    static func source(of peer: String) -> String {
        if peer.hasPrefix("ipv4:") {
            let rest = peer.dropFirst(5)
            return String(rest.lastIndex(of: ":").map { rest[..<$0] } ?? rest)
        }
        if peer.hasPrefix("ipv6:") {
            var rest = peer.dropFirst(5)
            if rest.first == "[", let close = rest.firstIndex(of: "]") {
                rest = rest[rest.index(after: rest.startIndex)..<close]
            }
            if let percent = rest.firstIndex(of: "%") { rest = rest[..<percent] }
            var address = in6_addr()
            guard inet_pton(AF_INET6, String(rest), &address) == 1 else { return String(rest) }
            let bytes = withUnsafeBytes(of: address) { Array($0) }
            if bytes.prefix(10).allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
                return bytes[12...].map(String.init).joined(separator: ".")  // an IPv4 peer on a dual-stack socket
            }
            let groups = stride(from: 0, to: 8, by: 2).map {
                String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16)
            }
            return groups.joined(separator: ":") + "::/64"
        }
        if peer.hasPrefix("unix:") { return "unix" }
        return peer
    }
}
