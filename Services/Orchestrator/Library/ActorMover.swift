internal import Foundation
internal import GRPCCore
internal import OrreryActors
internal import OrreryProto
internal import SwiftProtobuf

/// Checkpoints a running stateful replica on demand, and moves one: its mail held here, a checkpoint taken (after
/// which it receives nothing), then it resumes on another device from that checkpoint under a replacement contract,
/// with the same actor address and key. Used by `MoveAllocation` and by moves to a markedly cheaper device.
struct ActorMover: Sendable {
    let store: DeploymentStore
    let offers: OfferStore
    let checkpoints: CheckpointReader
    let router: ActorRouter
    let driver: DeploymentDriver
    /// How long a checkpoint may take to be written, shipped and stored (longer while a large archive keeps arriving).
    static let checkpointTimeout: Duration = .seconds(60)

    /// Checkpoints one running replica and waits until a newer checkpoint than before is stored.
    func takeCheckpoint(deployment: String, allocation: String, replica: UInt32, reason: String) async throws
        -> Orrery_Orchestrator_V1_StoredCheckpoint
    {
        guard let address = ActorAddress(deployment: deployment, allocation: allocation, replica: Int(replica)),
            let running = try await offers.running(deployment: deployment, allocation: allocation, replica: replica)
        else {
            throw RPCError(code: .failedPrecondition, message: "\(allocation)[\(replica)] is not running")
        }
        let before = try await checkpoints.latest(address)
        let previous = before.flatMap { try? Orrery_Actors_V1_Checkpoint(serializedBytes: $0.record.payload) }?.sequence
        let requestID = UUID().uuidString.lowercased()
        await router.relay.send(
            .with {
                $0.checkpointRequest = .with {
                    $0.offerID = running.offer
                    $0.reason = reason
                    $0.requestID = requestID
                }
            }, to: running.device,
            until: Date().addingTimeInterval(TimeInterval(Self.checkpointTimeout.components.seconds)))
        // The checkpoint that answers this request, not merely a newer one (the schedule's may come first). A large
        // archive still arriving in the content store extends the wait while it grows.
        var deadline = ContinuousClock.now + Self.checkpointTimeout
        var arriving: Int64 = 0
        var polls = 0
        while ContinuousClock.now < deadline {
            if let answer = try await checkpoints.answering(requestID, of: address, after: previous ?? 0) {
                return answer
            }
            polls += 1
            if polls % 20 == 0 {
                let now = try await checkpoints.archiveBytesArriving(offer: running.offer)
                if now > arriving { deadline = max(deadline, ContinuousClock.now + .seconds(30)) }
                arriving = now
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RPCError(
            code: .deadlineExceeded,
            message:
                "\(allocation)[\(replica)] was asked to checkpoint but none was stored within \(Self.checkpointTimeout) (is its device connected to an orchestrator replica, and does the workload answer checkpoint requests on its mailbox?)"
        )
    }

    /// Moves one replica (to `chosen`, or the best other feasible device; `pin`: kept there against voluntary
    /// moves); returns where it went, or nil when no device could take it (it runs on where it was).
    func move(
        _ deployment: Orrery_Orchestrator_V1_Deployment, allocation: String, replica: UInt32, from device: String,
        to chosen: String?, why: String, pin: Bool = false
    ) async throws -> String? {
        guard let address = ActorAddress(deployment: deployment.id, allocation: allocation, replica: Int(replica))
        else { throw RPCError(code: .invalidArgument, message: "\(allocation)[\(replica)] is no actor address") }
        router.setMoving(address, true)
        defer { router.setMoving(address, false) }
        let checkpoint = try await takeCheckpoint(
            deployment: deployment.id, allocation: allocation, replica: replica, reason: "move")
        let sequence = (try? Orrery_Actors_V1_Checkpoint(serializedBytes: checkpoint.record.payload))?.sequence ?? 0
        guard let current = try await store.deployment(deployment.id) else {
            throw RPCError(code: .notFound, message: "deployment \(deployment.id) vanished")
        }
        return try await driver.relocate(
            current, allocation: allocation, replica: replica, from: device, why: "\(why) after checkpoint \(sequence)",
            to: chosen, planned: true, pin: pin)
    }
}
