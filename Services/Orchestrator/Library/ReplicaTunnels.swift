internal import Foundation
internal import Logging
internal import OrreryProto
internal import Synchronization

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
    /// Where replicas ran when last read (a second ago at most). A remembered offer that cannot be reached is read
    /// again, so a replica that moved is found where it runs now.
    let remembered = RecentReads<ReplicaKey, RunningReplica>()

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

    /// Opens a tunnel to `port` of a running replica of `allocation`; `first`, the connection's first bytes, goes
    /// with it (to the next replica tried, when one cannot be reached: nothing reached a service before).
    func open(
        _ deployment: Orrery_Orchestrator_V1_Deployment, allocation: String, port: UInt32, first: Data = Data(),
        within limit: Duration, deliver: @escaping @Sendable (Data) async throws -> Void
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
            let replica = ReplicaKey(
                deployment: deployment.id, allocation: allocation, replica: candidate.replica)
            do {
                guard
                    let opened = try await open(
                        replica, port: port, first: first, within: limit, deliver: deliver)
                else {
                    reasons.append("\(allocation)[\(candidate.replica)] stopped")
                    continue
                }
                return opened
            } catch {
                reasons.append("\(allocation)[\(candidate.replica)]: \(error)")
            }
        }
        logger.info(
            "no replica could be reached",
            metadata: ["deployment": "\(deployment.id)", "reasons": "\(reasons.joined(separator: "; "))"])
        throw .unreachable("no replica of \(allocation) could be reached: \(reasons.joined(separator: "; "))")
    }

    /// A tunnel to `replica` where its offer runs — as remembered, read again when that fails (it may have moved
    /// since); nil when it runs nowhere now.
    private func open(
        _ replica: ReplicaKey, port: UInt32, first: Data, within limit: Duration,
        deliver: @escaping @Sendable (Data) async throws -> Void
    ) async throws -> Opened? {
        let remembered = remembered.recall(replica)
        var running: RunningReplica?
        if let remembered {
            running = remembered.value
        } else {
            running = try await read(replica)
        }
        while let target = running {
            do {
                // Nothing happens here between the device's answer and its first bytes: they go at once.
                let session = try await broker.open(
                    port: port, offer: target.offer, device: target.device, hub: hub, relay: relay, first: first,
                    deliver: deliver, deliverAtOnce: true, within: limit)
                session.consumerReady()
                return Opened(session: session, replica: replica.replica, device: target.device)
            } catch {
                guard remembered != nil, running == remembered?.value else { throw error }
                let current = try await read(replica)
                guard current != target else { throw error }
                running = current
            }
        }
        return nil
    }

    /// `replica`'s running offer as PostgreSQL has it now (remembered for a moment).
    private func read(_ replica: ReplicaKey) async throws -> RunningReplica? {
        let running = try await offers.running(
            deployment: replica.deployment, allocation: replica.allocation, replica: replica.replica
        ).map { RunningReplica(offer: $0.offer, device: $0.device) }
        remembered.remember(running, for: replica)
        return running
    }
}

/// Where a replica runs: its offer and device.
struct RunningReplica: Equatable, Sendable {
    let offer: String
    let device: String
}

/// A replica of a deployment's allocation.
struct ReplicaKey: Hashable, Sendable {
    let deployment: String
    let allocation: String
    let replica: UInt32
}
