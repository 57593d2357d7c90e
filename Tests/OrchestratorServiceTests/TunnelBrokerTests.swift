import Foundation
import GRPCCore
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf
import Synchronization
import Testing

@testable import OrchestratorService

/// The orchestrator's side of port-forwards, without processes: the per-deployment bound and how a device's answer
/// reaches the waiting port-forward.
@Suite("Tunnel broker")
struct TunnelBrokerTests {
    @Test(
        "a deployment has at most its limit of port-forwards (or exec sessions) open; one closed makes room; deployments apart"
    )
    func perDeploymentLimit() {
        let quota = DeploymentQuota()
        #expect(quota.admit("dep_a", limit: 2) && quota.admit("dep_a", limit: 2))
        #expect(!quota.admit("dep_a", limit: 2))
        #expect(quota.admit("dep_b", limit: 2))
        quota.release("dep_a")
        #expect(quota.admit("dep_a", limit: 2))
    }

    @Test("a device's refusal reaches the waiting port-forward with its reason; an answer nobody waits for is dropped")
    func deviceAnswers() async throws {
        let broker = TunnelBroker()
        let device = SharedCallWriter(RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>(wrapping: DiscardingWriter()))
        #expect(broker.deviceOpened(tunnel: "tun_x", device: "did:key:d", error: "", toDevice: device) == nil)
        let waiting = Task {
            try await broker.awaitDevice(tunnel: "tun_1", device: "did:key:d", deliver: { _ in }, within: .seconds(30))
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while !broker.waits(for: "tun_1"), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(broker.waits(for: "tun_1"))
        // Another device cannot answer for it; its own device's refusal ends it.
        #expect(broker.deviceOpened(tunnel: "tun_1", device: "did:key:other", error: "", toDevice: device) == nil)
        #expect(broker.waits(for: "tun_1"))
        #expect(
            broker.deviceOpened(tunnel: "tun_1", device: "did:key:d", error: "port 22 refused", toDevice: device) == nil
        )
        #expect(!broker.waits(for: "tun_1"))
        let failure = await #expect(throws: RPCError.self) { try await waiting.value }
        #expect(failure?.code == .unavailable && failure?.message.contains("port 22 refused") == true)
    }

    @Test("a device that never answers leaves the port-forward UNAVAILABLE after the limit")
    func deviceSilent() async throws {
        let broker = TunnelBroker()
        let failure = await #expect(throws: RPCError.self) {
            try await broker.awaitDevice(
                tunnel: "tun_2", device: "did:key:d", deliver: { _ in }, within: .milliseconds(100))
        }
        #expect(failure?.code == .unavailable)
    }
}

/// A device's standby `Tunnel` calls on the orchestrator's side, without processes: how a tunnel is handed to one
/// and how the device's answer, its refusal, its silence or the call's end reach the caller.
@Suite("Standby tunnel calls")
struct StandbyTunnelTests {
    typealias Frame = Orrery_Orchestrator_V1_TunnelFrame

    static func open(_ tunnel: String, first: String = "") -> Orrery_Orchestrator_V1_OpenTunnel {
        .with {
            $0.tunnelID = tunnel
            $0.offerID = "off_1"
            $0.port = 8080
            $0.earlyData = Data(first.utf8)
        }
    }

    /// Waits until `writer` holds `count` frames.
    static func frames(_ writer: RecordingWriter<Frame>, count: Int) async throws -> [Frame] {
        let deadline = ContinuousClock.now + .seconds(30)
        while writer.written.count < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        return writer.written
    }

    @Test("a tunnel handed to a standby call goes out as open with the request riding along; the answer opens it")
    func handed() async throws {
        let pool = StandbyTunnels()
        let writer = RecordingWriter<Frame>()
        let call = try #require(pool.add(device: "did:key:d", toDevice: SharedCallWriter(RPCWriter(wrapping: writer))))
        #expect(pool.take(device: "did:key:other") == nil)
        let taken = try #require(pool.take(device: "did:key:d"))
        #expect(taken === call && pool.count(device: "did:key:d") == 0)
        let delivered = Mutex<[Data]>([])
        let waiting = Task {
            try await taken.hand(
                Self.open("tun_1", first: "GET / HTTP/1.1\r\n\r\n"),
                deliver: { data in delivered.withLock { $0.append(data) } }, within: .seconds(30))
        }
        let sent = try await Self.frames(writer, count: 1)
        guard case .open(let open)? = sent.first?.kind else {
            Issue.record("the device was sent \(sent), not open")
            return
        }
        #expect(open.tunnelID == "tun_1" && open.earlyData == Data("GET / HTTP/1.1\r\n\r\n".utf8))
        // The device's answer to another tunnel is refused; this one opens the session.
        let session = try #require(try call.deviceAnswered(.with { $0.tunnelID = "tun_1" }))
        #expect(try await waiting.value === session)
        try await session.deliver(Data("ok".utf8))
        #expect(delivered.withLock { $0 } == [Data("ok".utf8)])
        // A second answer on the same call is a protocol error.
        #expect(throws: RPCError.self) { try call.deviceAnswered(.with { $0.tunnelID = "tun_1" }) }
    }

    @Test("the device's refusal reaches the caller with its reason; an answer to another tunnel fails both sides")
    func refused() async throws {
        let pool = StandbyTunnels()
        let writer = RecordingWriter<Frame>()
        let device = SharedCallWriter(RPCWriter(wrapping: writer))
        let call = try #require(pool.add(device: "did:key:d", toDevice: device))
        let waiting = Task { try await call.hand(Self.open("tun_2"), deliver: { _ in }, within: .seconds(30)) }
        _ = try await Self.frames(writer, count: 1)
        #expect(
            try call.deviceAnswered(
                .with {
                    $0.tunnelID = "tun_2"; $0.error = "connection refused"
                }) == nil)
        let failure = await #expect(throws: RPCError.self) { try await waiting.value }
        #expect(failure?.code == .unavailable && failure?.message.contains("connection refused") == true)

        let other = try #require(pool.add(device: "did:key:d", toDevice: device))
        let second = Task { try await other.hand(Self.open("tun_3"), deliver: { _ in }, within: .seconds(30)) }
        _ = try await Self.frames(writer, count: 2)
        #expect(throws: RPCError.self) { try other.deviceAnswered(.with { $0.tunnelID = "tun_other" }) }
        await #expect(throws: RPCError.self) { try await second.value }
    }

    @Test("a caller is told when the call ends before the device answers, and when the device stays silent")
    func endedOrSilent() async throws {
        let pool = StandbyTunnels()
        let writer = RecordingWriter<Frame>()
        let device = SharedCallWriter(RPCWriter(wrapping: writer))
        let call = try #require(pool.add(device: "did:key:d", toDevice: device))
        let waiting = Task { try await call.hand(Self.open("tun_4"), deliver: { _ in }, within: .seconds(30)) }
        _ = try await Self.frames(writer, count: 1)
        call.ended()
        let ended = await #expect(throws: RPCError.self) { try await waiting.value }
        #expect(ended?.code == .unavailable && ended?.message.contains("ended") == true)

        let silent = try #require(pool.add(device: "did:key:d", toDevice: device))
        let timedOut = await #expect(throws: RPCError.self) {
            try await silent.hand(Self.open("tun_5"), deliver: { _ in }, within: .milliseconds(100))
        }
        #expect(timedOut?.code == .unavailable && timedOut?.message.contains("did not open") == true)
        // Its late answer finds nobody: no session, and the call ends.
        #expect(try silent.deviceAnswered(.with { $0.tunnelID = "tun_5" }) == nil)
    }

    @Test("a call that cannot be written to takes no tunnel; a start before any open is refused; 16 calls a device")
    func unsentAndBounded() async throws {
        let pool = StandbyTunnels()
        let broken = SharedCallWriter(RPCWriter<Frame>(wrapping: FailingWriter()))
        _ = try #require(pool.add(device: "did:key:d", toDevice: broken))
        let call = try #require(pool.take(device: "did:key:d"))
        await #expect(throws: StandbyTunnels.Unsent.self) {
            try await call.hand(Self.open("tun_6"), deliver: { _ in }, within: .seconds(30))
        }
        let idle = try #require(pool.add(device: "did:key:d", toDevice: broken))
        #expect(throws: RPCError.self) { try idle.deviceAnswered(.with { $0.tunnelID = "tun_7" }) }

        let device = SharedCallWriter(RPCWriter(wrapping: DiscardingWriter<Frame>()))
        let calls = (1..<StandbyTunnels.perDeviceLimit).compactMap { _ in
            pool.add(device: "did:key:d", toDevice: device)
        }
        #expect(calls.count == StandbyTunnels.perDeviceLimit - 1)
        #expect(pool.add(device: "did:key:d", toDevice: device) == nil)
        #expect(pool.add(device: "did:key:e", toDevice: device) != nil)
        // Taken oldest first; an ended one leaves the pool.
        #expect(pool.take(device: "did:key:d") === idle)
        pool.remove(calls[0])
        #expect(pool.take(device: "did:key:d") === calls[1])
        #expect(pool.count(device: "did:key:d") == StandbyTunnels.perDeviceLimit - 3)
    }
}

/// A writer that keeps nothing.
private struct DiscardingWriter<Element: Sendable>: RPCWriterProtocol {
    func write(_ element: Element) async throws {}
    func write(contentsOf elements: some Sequence<Element>) async throws {}
}

/// A writer whose stream is gone.
private struct FailingWriter<Element: Sendable>: RPCWriterProtocol {
    func write(_ element: Element) async throws { throw RPCError(code: .cancelled, message: "gone") }
    func write(contentsOf elements: some Sequence<Element>) async throws {
        throw RPCError(code: .cancelled, message: "gone")
    }
}

/// A writer that keeps what was written.
final class RecordingWriter<Element: Sendable>: RPCWriterProtocol, Sendable {
    private let kept = Mutex<[Element]>([])
    var written: [Element] { kept.withLock { $0 } }
    func write(_ element: Element) async throws { kept.withLock { $0.append(element) } }
    func write(contentsOf elements: some Sequence<Element>) async throws {
        kept.withLock { $0.append(contentsOf: elements) }
    }
}
