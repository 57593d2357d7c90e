internal import Foundation
internal import GRPCCore
internal import OrreryActors
internal import OrreryPlacement
public import OrreryProto
internal import SwiftProtobuf

/// Checkpoints on request and planned moves of stateful replicas.
extension OrchestratorAPI {
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
                try await mover.takeCheckpoint(
                    deployment: deployment.id, allocation: assignment.allocation, replica: assignment.replica,
                    reason: "request"))
        }
        return .with { $0.checkpoints = stored }
    }

    /// Moves a running stateful replica: its mail is held, it checkpoints (then takes no more messages), and it
    /// resumes on the other device from that checkpoint under a replacement contract, with the same address and key.
    public func move(_ request: Orrery_Orchestrator_V1_MoveAllocationRequest, caller: String) async throws
        -> Orrery_Orchestrator_V1_Deployment
    {
        let deployment = try await get(request.id, caller: caller)
        let spec = deployment.spec.allocations.first { $0.name == request.allocation }
        let assignment = deployment.assignments.first {
            $0.allocation == request.allocation && $0.replica == request.replica
        }
        let chosen = request.toDevice.isEmpty ? nil : request.toDevice
        var facts = DeploymentPlanner.MoveFacts(
            deployment: deployment.id, state: deployment.state, allocation: request.allocation,
            replica: request.replica, toDevice: chosen,
            stateful: spec?.stateful, device: assignment?.deviceDid,
            toDeviceStatus: chosen.flatMap { fleet.device($0)?.status })
        // Whether any device can take it, asked only of a request that is otherwise sound: refused before anything is
        // checkpointed when none can, and the replica runs on where it is.
        if case .move(let replica, let from, let to, _) = DeploymentPlanner.move(facts),
            let replacement = try await mover.driver.replacement(
                deployment, allocation: replica.allocation, replica: replica.replica, leaving: from, to: to),
            replacement.target == nil
        {
            facts.infeasible = mover.driver.solver.explain(replacement.request, on: replacement.snapshot).reason
        }
        switch DeploymentPlanner.move(facts) {
        case .invalid(let message):
            throw RPCError(code: .invalidArgument, message: message)
        case .refused(let message):
            throw RPCError(code: .failedPrecondition, message: message)
        case .move(let replica, let from, let to, let pin):
            let target = try await mover.move(
                deployment, allocation: replica.allocation, replica: replica.replica, from: from, to: to,
                why: "moved on request", pin: pin)
            guard target != nil else {
                throw RPCError(
                    code: .failedPrecondition,
                    message: "no device could take \(replica) any more once it was checkpointed; it runs on where it is"
                )
            }
        }
        return try await get(deployment.id, caller: caller)
    }

    /// The actors of one of the caller's deployments, or one actor of any deployment by its address.
    public func actors(_ request: Orrery_Orchestrator_V1_ListActorsRequest, caller: String) async throws
        -> Orrery_Orchestrator_V1_ListActorsResponse
    {
        if !request.address.isEmpty {
            guard let address = ActorAddress(request.address) else {
                throw RPCError(code: .invalidArgument, message: "address: actor://DEPLOYMENT/ALLOCATION/REPLICA")
            }
            guard let did = try await mover.router.actorDID(address) else {
                throw RPCError(code: .notFound, message: "no actor \(address) has started")
            }
            return .with {
                $0.actors = [
                    .with {
                        $0.address = address.description
                        $0.actorDid = did
                    }
                ]
            }
        }
        let deployment = try await get(request.id, caller: caller)
        let actors = try await mover.router.actors(of: deployment.id)
        return .with {
            $0.actors = actors.sorted { $0.key < $1.key }.map { address, did in
                .with {
                    $0.address = address
                    $0.actorDid = did
                }
            }
        }
    }

    /// The consumers' grants of ensemble network access across deployments.
    var networkGrants: NetworkGrants { NetworkGrants(client: store.client, logger: store.logger) }

    /// Keeps the caller's delegation letting the allocations of another deployment reach one of the caller's on the
    /// ensemble network.
    public func grantNetworkAccess(_ request: Orrery_Orchestrator_V1_GrantNetworkAccessRequest, caller: String)
        async throws -> Orrery_Orchestrator_V1_GrantNetworkAccessResponse
    {
        for (field, id) in [("from_deployment", request.fromDeployment), ("to_deployment", request.toDeployment)]
        where !WorkloadSpecValidator.isDeploymentID(id) {
            throw RPCError(code: .invalidArgument, message: "\(field): a deployment id, got '\(id.prefix(64))'")
        }
        guard request.fromDeployment != request.toDeployment else {
            throw RPCError(
                code: .invalidArgument, message: "to_deployment: a deployment's allocations already reach each other")
        }
        // The reached deployment is the caller's own (not even the operator grants for a consumer).
        let target = try await get(request.toDeployment, caller: caller)
        guard target.consumerDid == caller else {
            throw RPCError(code: .permissionDenied, message: "to_deployment: only its consumer grants access to it")
        }
        guard let source = try await current(request.fromDeployment) else {
            throw RPCError(code: .notFound, message: "from_deployment: no deployment \(request.fromDeployment)")
        }
        let cid = try await networkGrants.grant(
            from: source.id, fromConsumer: source.consumerDid, to: target.id, consumer: caller,
            delegation: Array(request.delegation))
        return .with { $0.cid = cid }
    }

    /// Keeps the caller's delegation letting an actor (of any deployment) message one of the caller's deployments.
    public func grantActorAccess(_ request: Orrery_Orchestrator_V1_GrantActorAccessRequest, caller: String)
        async throws -> Orrery_Orchestrator_V1_GrantActorAccessResponse
    {
        guard let sender = ActorAddress(request.from) else {
            throw RPCError(
                code: .invalidArgument, message: "from: an actor address actor://DEPLOYMENT/ALLOCATION/REPLICA")
        }
        // The receiving deployment is the caller's: its actors trust their consumer. The sender may be anyone's.
        let target = try await get(request.toDeployment, caller: caller)
        let owner = target.consumerDid
        guard target.id != sender.deployment else {
            throw RPCError(
                code: .invalidArgument, message: "to_deployment: actors of one deployment already talk to each other")
        }
        let cid = try await mover.router.grantAccess(
            from: sender, to: target.id, delegation: Array(request.delegation), consumer: owner)
        return .with { $0.cid = cid }
    }
}
