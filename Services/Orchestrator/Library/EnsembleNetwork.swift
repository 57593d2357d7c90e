internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// The ensemble network: a sandbox's connection to a partner allocation's port, carried from its device's line to a
/// running replica of the partner over that replica's device line. Only allocations of one deployment reach each
/// other: the requesting device must run the allocation it speaks for, and the partner must be of its deployment and
/// declare the port.
struct EnsembleNetwork: Sendable {
    let api: OrchestratorAPI
    let offers: OfferStore
    let tunnels: ReplicaTunnels
    /// Revoked delegations (a network grant revoked stops new connections at once).
    let revocations: RevocationBook
    let logger: Logger
    /// Offers and deployments as read lately (a second ago at most): a sandbox opening connection after connection
    /// costs a read a second, not three a connection. Only reads that let a connection through are remembered (a
    /// replica starting is seen at once); grants are read every time (and revocations checked).
    let recentOffers = RecentReads<String, OfferStore.Owner>()
    let recentDeployments = RecentReads<String, Orrery_Orchestrator_V1_Deployment>()

    /// How long the partner's device has to connect.
    static let openingLimit = Duration.seconds(10)

    /// The partners a replica of `allocation` reaches by name: every other allocation of the spec that declares
    /// ports, each at a loopback address of its own fixed by its place in the spec (127.77.x.y, never 127.0.0.1),
    /// then the other deployments' allocations it lists in `reaches`, by their names there (127.78.0.y).
    static func peers(of spec: Orrery_Orchestrator_V1_WorkloadSpec, for allocation: String)
        -> [Orrery_Orchestrator_V1_EnsemblePeer]
    {
        let own: [Orrery_Orchestrator_V1_EnsemblePeer] = spec.allocations.enumerated().compactMap { index, partner in
            guard partner.name != allocation, !partner.ports.isEmpty else { return nil }
            return .with {
                $0.allocation = partner.name
                $0.address = "127.77.\(index / 250).\(index % 250 + 2)"
                $0.ports = partner.ports.map(\.port)
            }
        }
        let reaches = spec.allocations.first { $0.name == allocation }?.reaches ?? []
        let foreign = reaches.enumerated().map { index, partner in
            Orrery_Orchestrator_V1_EnsemblePeer.with {
                $0.allocation = partner.allocation
                $0.address = "127.78.0.\(index + 2)"
                $0.ports = partner.ports
                $0.deploymentID = partner.deploymentID
                $0.name = partner.name
            }
        }
        return own + foreign
    }

    /// Which deployment's allocation and port a device's `open` may reach.
    enum Verdict: Equatable {
        case reach(deployment: String)
        case refuse(RPCError.Code, String)
    }

    /// The rules, on what was read: the offer the device speaks for (nil: none) and its deployment's spec; for
    /// another deployment's partner, that deployment's spec and whether its consumer grants access now.
    static func judge(
        _ open: Orrery_Orchestrator_V1_PeerTunnelOpen, device: String,
        offer: (deployment: String, allocation: String, device: String, isRunning: Bool)?,
        spec: Orrery_Orchestrator_V1_WorkloadSpec?, partnerSpec: Orrery_Orchestrator_V1_WorkloadSpec? = nil,
        granted: Bool = false
    ) -> Verdict {
        guard let offer, offer.device == device else {
            return .refuse(.permissionDenied, "offer \(open.offerID.prefix(40)) is not one of this device's")
        }
        guard offer.isRunning else {
            return .refuse(.failedPrecondition, "offer \(open.offerID.prefix(40)) does not run")
        }
        if !open.deploymentID.isEmpty, open.deploymentID != offer.deployment {
            // Another deployment's: listed in the allocation's own spec, declared there, granted by its consumer.
            let listed =
                spec?.allocations.first { $0.name == offer.allocation }?.reaches.contains {
                    $0.deploymentID == open.deploymentID && $0.allocation == open.allocation
                        && $0.ports.contains(open.port)
                } ?? false
            guard listed else {
                return .refuse(
                    .permissionDenied,
                    "\(offer.allocation) of \(offer.deployment) lists no \(open.allocation.prefix(64)):\(open.port) of "
                        + "\(open.deploymentID.prefix(40)) in its reaches")
            }
            guard let partnerSpec, let partner = partnerSpec.allocations.first(where: { $0.name == open.allocation })
            else {
                return .refuse(
                    .notFound, "\(open.deploymentID.prefix(40)) has no allocation '\(open.allocation.prefix(64))'")
            }
            guard partner.ports.contains(where: { $0.port == open.port }) else {
                return .refuse(.notFound, "\(partner.name) declares no port \(open.port)")
            }
            guard granted else {
                return .refuse(
                    .permissionDenied,
                    "\(open.deploymentID) has not granted \(offer.deployment) access (its consumer: orrery network grant)"
                )
            }
            return .reach(deployment: open.deploymentID)
        }
        guard let spec, let partner = spec.allocations.first(where: { $0.name == open.allocation }) else {
            return .refuse(.notFound, "\(offer.deployment) has no allocation '\(open.allocation.prefix(64))'")
        }
        guard partner.ports.contains(where: { $0.port == open.port }) else {
            return .refuse(.notFound, "\(partner.name) declares no port \(open.port)")
        }
        return .reach(deployment: offer.deployment)
    }

    /// Serves one `PeerTunnel` call of `device`.
    func carry(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>, device: String
    ) async throws {
        // The partner's tunnel call writes to this one: shared, closed before this call ends.
        try await SharedCallWriter.serving(response) { try await carry(request: request, response: $0, device: device) }
    }

    private func carry(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>, device: String
    ) async throws {
        // The requester's frames: the first says where to, the rest go to the partner once it is reached; their end
        // half-closes the partner's side (its answer still comes back).
        try await TunnelCall.carry(
            request,
            opening: { frame in
                guard case .peer(let open) = frame.kind else {
                    throw RPCError(
                        code: .invalidArgument, message: "the first frame must be peer: {offer_id, allocation, port}")
                }
                guard open.earlyData.count <= TunnelBroker.earlyDataLimit else {
                    throw RPCError(code: .invalidArgument, message: "early_data carries at most 64 KiB")
                }
                return open
            },
            // A warm call the device kept open ahead of need and closed unused carried nothing: a quiet end.
            missing: nil,
            step: { frame in
                switch frame.kind {
                case .data(let data): .data(data)
                case .end: .end
                case .close: .close
                default: .skip
                }
            },
            open: { open in try await reach(open, device: device, response: response) })
    }

    /// Deployment `id` with its replicas' runs, as read lately (remembered only while a replica of `allocation`
    /// runs).
    private func current(_ id: String, running allocation: String) async throws -> Orrery_Orchestrator_V1_Deployment? {
        try await recentDeployments.value(
            for: id, read: { try await api.current(id) },
            keep: { deployment in
                deployment?.assignments.contains { $0.allocation == allocation && $0.run.state == .running } == true
            })
    }

    /// A tunnel to the partner `open` names, once the rules allow it.
    private func reach(
        _ open: Orrery_Orchestrator_V1_PeerTunnelOpen, device: String,
        response: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>
    ) async throws -> TunnelBroker.Session {
        let offer = try await recentOffers.value(
            for: open.offerID, read: { try await offers.owner(ofOffer: open.offerID) }, keep: { $0?.isRunning == true })
        var deployment: Orrery_Orchestrator_V1_Deployment?
        if let offer { deployment = try await current(offer.deployment, running: open.allocation) }
        // Another deployment's partner: read it, and whether its consumer grants access now.
        var partner: Orrery_Orchestrator_V1_Deployment?
        var granted = false
        if let offer, let own = deployment, !open.deploymentID.isEmpty, open.deploymentID != offer.deployment,
            WorkloadSpecValidator.isDeploymentID(open.deploymentID)
        {
            partner = try await current(open.deploymentID, running: open.allocation)
            if let partner {
                let revocations = revocations
                granted = try await api.networkGrants.allows(
                    from: own.id, fromConsumer: own.consumerDid, to: partner.id, toConsumer: partner.consumerDid,
                    isRevoked: { revocations.isRevoked($0) })
            }
        }
        if case .refuse(let code, let message) = Self.judge(
            open, device: device, offer: offer, spec: deployment?.spec, partnerSpec: partner?.spec, granted: granted)
        {
            throw RPCError(code: code, message: message)
        }
        if let partner { deployment = partner }
        guard let deployment else {
            throw RPCError(code: .notFound, message: "no deployment for offer \(open.offerID.prefix(40))")
        }
        do {
            return try await tunnels.open(
                deployment, allocation: open.allocation, port: open.port, first: open.earlyData,
                within: Self.openingLimit,
                deliver: { data in try await response.write(.with { $0.data = data }) }
            ).session
        } catch {
            throw RPCError(code: .unavailable, message: "\(error)")
        }
    }
}
