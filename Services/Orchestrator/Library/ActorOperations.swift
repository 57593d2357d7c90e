internal import Foundation
internal import GRPCCore
internal import OrreryActors
public import OrreryProto
internal import SwiftProtobuf

/// Checkpoints on request and planned moves of stateful replicas.
extension OrchestratorAPI {
    /// How long a checkpoint may take to be written, shipped and stored.
    static let checkpointTimeout: Duration = .seconds(60)

    /// The caller's deployment, which must be running.
    private func running(_ id: String, caller: String) async throws -> Orrery_Orchestrator_V1_Deployment {
        let deployment = try await get(id, caller: caller)
        guard deployment.state == .running else {
            throw RPCError(
                code: .failedPrecondition, message: "deployment \(deployment.id) is \(deployment.state), not running")
        }
        return deployment
    }

    /// Asks for a checkpoint of each stateful replica named (every one when no allocation is), waits for them.
    public func checkpoint(_ request: Orrery_Orchestrator_V1_CheckpointDeploymentRequest, caller: String) async throws
        -> Orrery_Orchestrator_V1_CheckpointDeploymentResponse
    {
        let deployment = try await running(request.id, caller: caller)
        let stateful = Set(deployment.spec.allocations.filter(\.stateful).map(\.name))
        if !request.allocation.isEmpty, !stateful.contains(request.allocation) {
            throw RPCError(
                code: .invalidArgument,
                message: "allocation: '\(request.allocation)' is not a stateful allocation of it")
        }
        let replicas = deployment.assignments.filter {
            stateful.contains($0.allocation)
                && (request.allocation.isEmpty
                    || ($0.allocation == request.allocation && $0.replica == request.replica))
        }
        guard !replicas.isEmpty else {
            if !request.allocation.isEmpty {
                throw RPCError(
                    code: .invalidArgument, message: "replica: \(request.allocation) has no replica \(request.replica)")
            }
            throw RPCError(code: .failedPrecondition, message: "deployment \(deployment.id) has no stateful allocation")
        }
        var stored: [Orrery_Orchestrator_V1_StoredCheckpoint] = []
        for assignment in replicas {
            stored.append(
                try await takeCheckpoint(
                    deployment: deployment.id, allocation: assignment.allocation, replica: assignment.replica,
                    reason: "request"))
        }
        return .with { $0.checkpoints = stored }
    }

    /// Checkpoints one running replica and waits until a newer checkpoint than before is stored.
    private func takeCheckpoint(deployment: String, allocation: String, replica: UInt32, reason: String) async throws
        -> Orrery_Orchestrator_V1_StoredCheckpoint
    {
        guard let address = ActorAddress(deployment: deployment, allocation: allocation, replica: Int(replica)),
            let running = try await offers.running(deployment: deployment, allocation: allocation, replica: replica)
        else {
            throw RPCError(code: .failedPrecondition, message: "\(allocation)[\(replica)] is not running")
        }
        guard hub.holds(running.device) else {
            throw RPCError(
                code: .unavailable, message: "\(allocation)[\(replica)]'s device \(running.device) is not connected")
        }
        let before = try await checkpoints.latest(address)
        let previous = before.flatMap { try? Orrery_Actors_V1_Checkpoint(serializedBytes: $0.record.payload) }?.sequence
        hub.send(
            .with {
                $0.checkpointRequest = .with {
                    $0.offerID = running.offer
                    $0.reason = reason
                }
            }, to: running.device)
        let deadline = ContinuousClock.now + Self.checkpointTimeout
        while ContinuousClock.now < deadline {
            if let latest = try await checkpoints.latest(address),
                let record = try? Orrery_Actors_V1_Checkpoint(serializedBytes: latest.record.payload),
                record.sequence > (previous ?? 0)
            {
                return latest
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RPCError(
            code: .deadlineExceeded,
            message:
                "\(allocation)[\(replica)] was asked to checkpoint but none was stored within \(Self.checkpointTimeout) (does the workload answer checkpoint requests on its mailbox?)"
        )
    }

    /// Moves a running stateful replica: its mail is held, it checkpoints (then takes no more messages), and it
    /// resumes on the other device from that checkpoint under a replacement contract, with the same address and key.
    public func move(_ request: Orrery_Orchestrator_V1_MoveAllocationRequest, caller: String) async throws
        -> Orrery_Orchestrator_V1_Deployment
    {
        let deployment = try await running(request.id, caller: caller)
        guard let spec = deployment.spec.allocations.first(where: { $0.name == request.allocation }) else {
            throw RPCError(code: .invalidArgument, message: "allocation: no '\(request.allocation)' in the deployment")
        }
        guard spec.stateful else {
            throw RPCError(
                code: .failedPrecondition,
                message:
                    "\(request.allocation) is stateless: it restarts elsewhere when its host fails; only stateful allocations move"
            )
        }
        guard
            let assignment = deployment.assignments.first(where: {
                $0.allocation == request.allocation && $0.replica == request.replica
            })
        else {
            throw RPCError(
                code: .invalidArgument, message: "replica: \(request.allocation) has no replica \(request.replica)")
        }
        if !request.toDevice.isEmpty {
            guard request.toDevice != assignment.deviceDid else {
                throw RPCError(code: .invalidArgument, message: "to_device: it already runs on \(request.toDevice)")
            }
            guard let device = fleet.device(request.toDevice), device.status == .online else {
                throw RPCError(
                    code: .failedPrecondition, message: "to_device: \(request.toDevice) is not an online device")
            }
        }
        guard
            let address = ActorAddress(
                deployment: deployment.id, allocation: request.allocation, replica: Int(request.replica))
        else { throw RPCError(code: .invalidArgument, message: "no such actor") }
        router.setMoving(address, true)
        defer { router.setMoving(address, false) }
        let checkpoint = try await takeCheckpoint(
            deployment: deployment.id, allocation: request.allocation, replica: request.replica, reason: "move")
        let sequence = (try? Orrery_Actors_V1_Checkpoint(serializedBytes: checkpoint.record.payload))?.sequence ?? 0
        guard let current = try await store.deployment(deployment.id) else {
            throw RPCError(code: .notFound, message: "deployment \(deployment.id) vanished")
        }
        let target = try await driver.relocate(
            current, allocation: request.allocation, replica: request.replica, from: assignment.deviceDid,
            why: "moved on request after checkpoint \(sequence)",
            to: request.toDevice.isEmpty ? nil : request.toDevice, planned: true)
        guard target != nil else {
            throw RPCError(
                code: .failedPrecondition,
                message: "no device can take \(request.allocation)[\(request.replica)]: see the deployment's reason")
        }
        return try await get(deployment.id, caller: caller)
    }
}
