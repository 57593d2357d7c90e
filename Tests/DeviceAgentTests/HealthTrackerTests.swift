import Foundation
import OrreryProto
import SwiftProtobuf
import Testing

@testable import DeviceAgent

/// A replica's health check decisions as data: thresholds, the start period, restarts in place and the bound after
/// which it gives up on this device.
@Suite("Health: the tracker's decisions")
struct HealthTrackerTests {
    static let start = Date(timeIntervalSince1970: 1_000_000)

    static func policy(
        healthy: UInt32 = 2, unhealthy: UInt32 = 3, startPeriod: UInt32 = 0, maxRestarts: UInt32? = 2
    ) -> HealthTracker.Policy {
        HealthTracker.Policy(
            .with {
                $0.tcp = .with { $0.port = 80 }
                $0.intervalSeconds = 5
                $0.healthyThreshold = healthy
                $0.unhealthyThreshold = unhealthy
                $0.startPeriodSeconds = startPeriod
                if let maxRestarts { $0.maxRestarts = maxRestarts }
            })
    }

    @Test("defaults: every 10 s, 2 s timeout, healthy after 1 pass, unhealthy after 3 failures, 3 restarts")
    func defaults() {
        let policy = HealthTracker.Policy(.with { $0.tcp = .with { $0.port = 80 } })
        #expect(policy.interval == .seconds(10) && policy.timeout == .seconds(2))
        #expect(policy.healthyThreshold == 1 && policy.unhealthyThreshold == 3 && policy.maxRestarts == 3)
        #expect(policy.startPeriod == .zero)
        // A timeout longer than the interval is cut to it; max_restarts 0 given is 0, not the default.
        let short = HealthTracker.Policy(
            .with {
                $0.intervalSeconds = 1
                $0.timeoutSeconds = 5
                $0.maxRestarts = 0
            })
        #expect(short.timeout == .seconds(1) && short.maxRestarts == 0)
    }

    @Test("starting until the healthy threshold is reached; the change is reported once")
    func becomesHealthy() {
        var tracker = HealthTracker(policy: Self.policy(healthy: 2), startedAt: Self.start)
        #expect(tracker.health.status == .starting)
        #expect(tracker.passed(at: Self.start + 5) == .none)
        #expect(tracker.health.status == .starting)
        #expect(tracker.passed(at: Self.start + 10) == .report)
        #expect(tracker.health.status == .healthy)
        #expect(tracker.passed(at: Self.start + 15) == .none)
    }

    @Test("failures in the start period do not count; afterwards the unhealthy threshold restarts it in place")
    func startPeriodThenRestart() {
        var tracker = HealthTracker(policy: Self.policy(unhealthy: 2, startPeriod: 30), startedAt: Self.start)
        for second in [5.0, 10, 15, 20, 25] {
            #expect(tracker.failed(at: Self.start + second, reason: "tcp 80: connection refused") == .none)
        }
        #expect(tracker.health.consecutiveFailures == 0)
        #expect(tracker.health.lastFailure == "tcp 80: connection refused")
        #expect(tracker.failed(at: Self.start + 30, reason: "tcp 80: connection refused") == .none)
        #expect(tracker.failed(at: Self.start + 35, reason: "tcp 80: connection refused") == .restart)
        #expect(tracker.health.status == .unhealthy && tracker.health.restarts == 1)
        // Restarted: starting again, failures forgotten, a new start period.
        tracker.started(at: Self.start + 36)
        #expect(tracker.health.status == .starting && tracker.health.consecutiveFailures == 0)
        #expect(tracker.failed(at: Self.start + 40, reason: "again") == .none)
        #expect(tracker.health.consecutiveFailures == 0)
    }

    @Test("a healthy replica failing below the threshold stays healthy; a pass resets the count")
    func flapping() {
        var tracker = HealthTracker(policy: Self.policy(healthy: 1, unhealthy: 3), startedAt: Self.start)
        #expect(tracker.passed(at: Self.start + 1) == .report)
        #expect(tracker.failed(at: Self.start + 2, reason: "GET /: 503") == .none)
        #expect(tracker.failed(at: Self.start + 3, reason: "GET /: 503") == .none)
        #expect(tracker.health.status == .healthy && tracker.health.consecutiveFailures == 2)
        #expect(tracker.passed(at: Self.start + 4) == .none)
        #expect(tracker.health.consecutiveFailures == 0)
        #expect(tracker.failed(at: Self.start + 5, reason: "GET /: 503") == .none)
        #expect(tracker.health.status == .healthy)
    }

    @Test("after its last allowed restart, unhealthy again gives up; max_restarts 0 gives up at once")
    func givesUp() {
        var tracker = HealthTracker(
            policy: Self.policy(healthy: 1, unhealthy: 1, maxRestarts: 2), startedAt: Self.start)
        #expect(tracker.failed(at: Self.start + 1, reason: "x") == .restart)
        tracker.started(at: Self.start + 2)
        #expect(tracker.failed(at: Self.start + 3, reason: "x") == .restart)
        tracker.started(at: Self.start + 4)
        #expect(tracker.failed(at: Self.start + 5, reason: "x") == .giveUp)
        #expect(tracker.health.restarts == 2 && tracker.health.gaveUp && tracker.health.status == .unhealthy)

        var none = HealthTracker(policy: Self.policy(unhealthy: 1, maxRestarts: 0), startedAt: Self.start)
        #expect(none.failed(at: Self.start + 1, reason: "x") == .giveUp)
        #expect(none.health.restarts == 0)
    }

    @Test("a restart that could not be made gives up on this device, as after the last allowed restart")
    func restartFailed() {
        var tracker = HealthTracker(policy: Self.policy(unhealthy: 1, maxRestarts: 3), startedAt: Self.start)
        #expect(tracker.failed(at: Self.start + 1, reason: "x") == .restart)
        #expect(!tracker.health.gaveUp)
        tracker.couldNotRestart()
        #expect(tracker.health.gaveUp && tracker.health.status == .unhealthy && tracker.health.restarts == 1)
    }

    @Test("an agent restarted mid-way goes on counting the replica's restarts from its journal")
    func restoredCountsOn() {
        var earlier = Orrery_Orchestrator_V1_ReplicaHealth()
        earlier.status = .starting
        earlier.restarts = 2
        var tracker = HealthTracker(
            policy: Self.policy(unhealthy: 1, maxRestarts: 2), startedAt: Self.start, restoring: earlier)
        #expect(tracker.failed(at: Self.start + 1, reason: "x") == .giveUp)
        // A replica healthy when the agent stopped stays healthy.
        earlier.status = .healthy
        let healthy = HealthTracker(policy: Self.policy(), startedAt: Self.start, restoring: earlier)
        #expect(healthy.health.status == .healthy)
    }
}

/// The agent's `probe` command: a TCP connection or an HTTP GET on 127.0.0.1, against real listeners.
@Suite("Health: the probe client")
struct HealthProbeClientTests {
    @Test("tcp: a listening port passes, a closed one fails as refused")
    func tcp() throws {
        let listener = try LoopbackListener(answer: nil)
        defer { listener.close() }
        let passed = HealthProbeClient.tcp(port: listener.port, timeout: .seconds(5))
        #expect(passed.passed, "\(passed.detail)")
        let port = listener.port
        listener.close()
        let refused = HealthProbeClient.tcp(port: port, timeout: .seconds(5))
        #expect(!refused.passed && refused.detail.contains("connection refused"), "\(refused.detail)")
    }

    @Test("http: 200 and 302 pass, 503 fails, a non-HTTP answer fails, silence fails at the timeout")
    func http() throws {
        for (answer, passes, detail) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true, ": 200"),
            ("HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n", true, ": 302"),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false, ": 503"),
            ("SSH-2.0-OpenSSH_9.2\r\n", false, "not an HTTP answer"),
        ] {
            let listener = try LoopbackListener(answer: answer)
            defer { listener.close() }
            let result = HealthProbeClient.http(port: listener.port, path: "/healthz?full=1", timeout: .seconds(5))
            #expect(result.passed == passes && result.detail.hasSuffix(detail), "\(answer): \(result.detail)")
            #expect(result.detail.hasPrefix("GET http://127.0.0.1:\(listener.port)/healthz?full=1"))
            #expect(listener.request().hasPrefix("GET /healthz?full=1 HTTP/1.1\r\n"))
        }
        let silent = try LoopbackListener(answer: "")
        defer { silent.close() }
        let started = ContinuousClock.now
        let result = HealthProbeClient.http(port: silent.port, path: "/", timeout: .milliseconds(300))
        #expect(!result.passed && result.detail.contains("no answer within"), "\(result.detail)")
        #expect(ContinuousClock.now - started >= .milliseconds(300))
    }

    @Test("an HTTP status line is read strictly")
    func statusLine() {
        #expect(HealthProbeClient.statusCode(Array("HTTP/1.1 204 No Content\r\n".utf8)) == 204)
        #expect(HealthProbeClient.statusCode(Array("HTTP/1.1 2000 x\r\n".utf8)) == nil)
        #expect(HealthProbeClient.statusCode(Array("HTTP/2 200\r\n".utf8)) == nil)
        #expect(HealthProbeClient.statusCode(Array("".utf8)) == nil)
    }
}

/// A one-connection TCP server on 127.0.0.1 (a thread): it keeps what the client sent and answers `answer` (nil:
/// accepts and says nothing; "": reads and never answers). `close` stops it taking a connection.
final class LoopbackListener: @unchecked Sendable {
    let port: Int
    private let socket: Int32
    private let lock = NSLock()
    private var received = Data()
    private var closed = false

    init(answer: String?) throws {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.socket = socket
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(socket, pointer, length) == 0 && listen(socket, 8) == 0
                    && getsockname(socket, pointer, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.EADDRNOTAVAIL) }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread {
            // The listening socket is this thread's to close: closed by the test while this thread had not yet
            // reached accept, its number could be another test's socket by then (a full run saw this thread take a
            // connection meant for a listener of the suite's other test and reset it).
            defer { Glibc.close(socket) }
            var client: Int32 = -1
            repeat { client = accept(socket, nil, nil) } while client < 0 && errno == EINTR
            guard client >= 0 else { return }
            defer { Glibc.close(client) }
            guard let answer else { return }
            var buffer = [UInt8](repeating: 0, count: 4096)
            var got = Data()
            while !got.contains("\r\n\r\n".data(using: .utf8) ?? Data()) {
                let count = recv(client, &buffer, buffer.count, 0)
                // A signal another suite's child process sent this process interrupts it: read again.
                if count < 0, errno == EINTR { continue }
                if count <= 0 { break }
                got.append(contentsOf: buffer[0..<count])
            }
            self.lock.withLock { self.received = got }
            if answer.isEmpty {
                Thread.sleep(forTimeInterval: 2)
            } else {
                _ = answer.withCString { send(client, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            }
        }.start()
    }

    func request() -> String { lock.withLock { String(decoding: received, as: UTF8.self) } }

    func close() {
        let first = lock.withLock {
            defer { closed = true }
            return !closed
        }
        // Shut down (its thread's accept, waiting or still to come, fails), not closed: its thread closes it.
        if first { shutdown(socket, Int32(SHUT_RDWR)) }
    }
}
