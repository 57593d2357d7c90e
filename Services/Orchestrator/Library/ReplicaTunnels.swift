internal import Foundation
internal import Logging
internal import OrreryProto

/// A tunnel to a declared port of one running replica of an allocation (a healthy one, when the allocation has a
/// check), over its device's line: a replica chosen at random, the next tried when one cannot be reached — nothing
/// was sent to it yet. For the ingress and the ensemble network; `PortForwarding` picks its replica itself.
struct ReplicaTunnels: Sendable {
    let broker: TunnelBroker
    let hub: AgentHub
    let offers: OfferStore
    /// Reaches devices whose line another replica holds.
    let relay: ReplicaRelay?
    let logger: Logger

    /// Why no tunnel was opened.
    enum Failure: Error, CustomStringConvertible {
        /// No replica runs (healthy) now.
        case noReplica(String)
        /// Replicas run, and none could be reached: each one's reason.
        case unreachable(String)

        var description: String {
            switch self {
            case .noReplica(let reason), .unreachable(let reason): reason
            }
        }
    }

    /// The open tunnel and whom it reaches.
    struct Opened: Sendable {
        let session: TunnelBroker.Session
        let replica: UInt32
        let device: String
    }

    func open(
        _ deployment: Orrery_Orchestrator_V1_Deployment, allocation: String, port: UInt32, within limit: Duration,
        deliver: @escaping @Sendable (Data) async throws -> Void
    ) async throws(Failure) -> Opened {
        let hasHealth = deployment.spec.allocations.first { $0.name == allocation }?.hasHealth ?? false
        let candidates = deployment.assignments.filter {
            $0.allocation == allocation && $0.run.state == .running && (!hasHealth || $0.run.health.status == .healthy)
        }.shuffled()
        guard !candidates.isEmpty else {
            throw .noReplica("no replica of \(allocation) runs\(hasHealth ? " healthy" : "") now")
        }
        var reasons: [String] = []
        for candidate in candidates {
            do {
                guard
                    let running = try await offers.running(
                        deployment: deployment.id, allocation: allocation, replica: candidate.replica)
                else {
                    reasons.append("\(allocation)[\(candidate.replica)] stopped")
                    continue
                }
                let session = try await broker.open(
                    port: port, offer: running.offer, device: running.device, hub: hub, relay: relay, deliver: deliver,
                    within: limit)
                session.consumerReady()
                return Opened(session: session, replica: candidate.replica, device: running.device)
            } catch {
                reasons.append("\(allocation)[\(candidate.replica)]: \(error)")
            }
        }
        logger.info(
            "no replica could be reached",
            metadata: ["deployment": "\(deployment.id)", "reasons": "\(reasons.joined(separator: "; "))"])
        throw .unreachable("no replica of \(allocation) could be reached: \(reasons.joined(separator: "; "))")
    }
}
