import Foundation
import Synchronization
import Testing

@testable import OrreryAuth

/// The per-source allowance of failed signature checks, on a clock the test moves.
@Suite("Failed-authentication throttle: per source, proven connections exempt, refilled over time")
struct FailedAuthenticationThrottleTests {
    /// A clock that moves only when told.
    final class ManualClock: Sendable {
        private let now = Mutex(ContinuousClock.now)
        var read: @Sendable () -> ContinuousClock.Instant { { [self] in now.withLock { $0 } } }
        func advance(_ duration: Duration) { now.withLock { $0 += duration } }
    }

    @Test("sources: an IPv4 address, an IPv6 /64, an IPv4-mapped IPv6 peer as IPv4, every Unix socket alike")
    func sources() {
        #expect(FailedAuthenticationThrottle.source(of: "ipv4:203.0.113.7:5678") == "203.0.113.7")
        #expect(FailedAuthenticationThrottle.source(of: "ipv6:[2001:db8:1:2:aaaa::1]:443") == "2001:db8:1:2::/64")
        #expect(
            FailedAuthenticationThrottle.source(of: "ipv6:[2001:db8:1:2:bbbb::9]:80")
                == FailedAuthenticationThrottle.source(of: "ipv6:[2001:db8:1:2:aaaa::1]:443"))
        #expect(FailedAuthenticationThrottle.source(of: "ipv6:[2001:db8:1:3::1]:80") == "2001:db8:1:3::/64")
        #expect(FailedAuthenticationThrottle.source(of: "ipv6:[::ffff:198.51.100.4]:80") == "198.51.100.4")
        #expect(FailedAuthenticationThrottle.source(of: "unix:/run/a.sock") == "unix")
    }

    @Test("a source spends its burst, is refused until one failure is refilled, then admitted again")
    func burstThenRefill() {
        let clock = ManualClock()
        let throttle = FailedAuthenticationThrottle(limits: .init(rate: 2, burst: 3), clock: clock.read)
        let attacker = "ipv4:192.0.2.1:4000"
        for _ in 0..<3 {
            #expect(throttle.verdict(peer: attacker) == .admit)
            throttle.recordFailure(peer: attacker)
        }
        guard case .refuse(let source, let retryAfter) = throttle.verdict(peer: attacker) else {
            Issue.record("the fourth call after three failures was admitted")
            return
        }
        #expect(source == "192.0.2.1" && retryAfter > 0.4 && retryAfter <= 0.5)
        // Another connection from the same address is refused too; another address is not.
        #expect(throttle.verdict(peer: "ipv4:192.0.2.1:4001") != .admit)
        #expect(throttle.verdict(peer: "ipv4:192.0.2.2:4000") == .admit)
        clock.advance(.milliseconds(500))
        #expect(throttle.verdict(peer: attacker) == .admit)
    }

    @Test("a connection that authenticated stays exempt while its address is refused, until a call on it fails")
    func provenConnectionsExempt() {
        let clock = ManualClock()
        let throttle = FailedAuthenticationThrottle(limits: .init(rate: 1, burst: 2), clock: clock.read)
        let worker = "ipv6:[2001:db8::5]:1000"
        throttle.recordSuccess(peer: worker)
        for _ in 0..<2 { throttle.recordFailure(peer: "ipv6:[2001:db8::6]:2000") }  // the same /64
        #expect(throttle.verdict(peer: "ipv6:[2001:db8::7]:3000") != .admit)
        #expect(throttle.verdict(peer: worker) == .admit)
        throttle.recordFailure(peer: worker)
        #expect(throttle.verdict(peer: worker) != .admit)
    }

    @Test("a burst of concurrent failures shuts a source out for at most (burst + 1) / rate")
    func failuresFloored() {
        let clock = ManualClock()
        let throttle = FailedAuthenticationThrottle(limits: .init(rate: 1, burst: 4), clock: clock.read)
        for _ in 0..<1000 { throttle.recordFailure(peer: "ipv4:192.0.2.9:1") }
        clock.advance(.milliseconds(4_500))
        #expect(throttle.verdict(peer: "ipv4:192.0.2.9:1") != .admit)
        clock.advance(.milliseconds(600))
        #expect(throttle.verdict(peer: "ipv4:192.0.2.9:1") == .admit)
    }

    @Test("rate 0 turns it off")
    func off() {
        let throttle = FailedAuthenticationThrottle(limits: .init(rate: 0, burst: 1))
        for _ in 0..<10 { throttle.recordFailure(peer: "ipv4:192.0.2.1:1") }
        #expect(throttle.verdict(peer: "ipv4:192.0.2.1:1") == .admit)
    }
}
