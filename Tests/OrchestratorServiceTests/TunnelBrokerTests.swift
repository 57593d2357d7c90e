import GRPCCore
import OrreryProto
import OrreryRuntimeCore
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

/// A writer that keeps nothing.
private struct DiscardingWriter<Element: Sendable>: RPCWriterProtocol {
    func write(_ element: Element) async throws {}
    func write(contentsOf elements: some Sequence<Element>) async throws {}
}
