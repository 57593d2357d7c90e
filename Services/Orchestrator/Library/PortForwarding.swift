internal import Foundation
internal import Metrics
internal import GRPCCore
internal import Logging
internal import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// Where a caller that wants a connection into a sandbox (a consumer's `PortForward` call, an ingress connection)
/// meets the `Tunnel` call the replica's device opens when asked on its line (`OpenTunnel`): the device's bytes go to
/// the caller's `deliver`, the caller's to the device's writer.
final class TunnelBroker: Sendable {
    /// A tunnel's two ends once the device answered.
    final class Session: Sendable {
        /// Hands the device's bytes to the caller; it may wait (a slow reader holds the device's stream back, and
        /// only that stream).
        let deliver: @Sendable (Data) async throws -> Void
        let toDevice: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>
        private let ready = OnceGate()
        private let deviceDone: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)

        init(
            deliver: @escaping @Sendable (Data) async throws -> Void,
            toDevice: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>
        ) {
            self.deliver = deliver
            self.toDevice = toDevice
            deviceDone = AsyncStream.makeStream()
        }

        /// The caller is ready for the device's bytes.
        func consumerReady() { ready.open() }
        func waitUntilConsumerReady() async { await ready.wait() }
        /// The device's side ended (the sandbox closed the connection, or the device went away).
        func deviceEnded() { deviceDone.continuation.finish() }
        func waitUntilDeviceEnded() async { for await _ in deviceDone.stream {} }
        /// Tells the device to close its side (best effort: it may be gone).
        func close() { Task { try? await toDevice.write(.with { $0.close = true }) } }
    }

    private let waits = DeviceCallWaits<@Sendable (Data) async throws -> Void, Session>()
    /// The `Tunnel` calls devices keep open ahead of need.
    let standbys = StandbyTunnels()
    /// Port-forwards open through this orchestrator replica, by deployment.
    let portForwards = DeploymentQuota()

    /// Waits (at most `limit`) for `device` to open tunnel `id` — after `ask` (nothing: the device was asked
    /// already) — and returns its session, or the device's reason it could not connect.
    func awaitDevice(
        tunnel id: String, device: String, deliver: @escaping @Sendable (Data) async throws -> Void,
        within limit: Duration, ask: () -> Void = {}
    ) async throws -> Session {
        try await waits.wait(
            for: id, device: device, pending: deliver, within: limit,
            timeout: RPCError(
                code: .unavailable,
                message: "the device did not open the connection within \(limit.components.seconds) s"),
            ask: ask)
    }

    /// The device's answer to tunnel `id`: its session, or nil when nobody waits for it from that device. With
    /// `error`, the waiting side fails with it instead.
    func deviceOpened(
        tunnel id: String, device: String, error: String,
        toDevice: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>
    ) -> Session? {
        guard let (deliver, answer) = waits.take(id, device: device) else { return nil }
        guard error.isEmpty else {
            answer.resume(throwing: RPCError(code: .unavailable, message: "the device could not connect: \(error)"))
            return nil
        }
        let session = Session(deliver: deliver, toDevice: toDevice)
        answer.resume(returning: session)
        return session
    }

    /// Asks `device` (its line held by this replica) to connect to `port` of its allocation `offer`, and waits (at
    /// most `limit`) until it did: the session, its bytes going to `deliver` once `consumerReady()` is called, and
    /// `first` (the connection's first bytes, if any) sent to the device ahead of any other. A standby call of the
    /// device's takes the tunnel at once, `first` riding with it; without one the device is asked on its line to open
    /// a call. Without the device's line here, `relay` (when given) opens it through the replica that holds the line.
    /// `deliverAtOnce`: a caller that only calls `consumerReady()` once this returns lets the device's bytes go to
    /// `deliver` from the device's answer on, when nothing is left to send first (its first bytes rode with the open).
    func open(
        port: UInt32, offer: String, device: String, hub: AgentHub, relay: ReplicaRelay? = nil, first: Data = Data(),
        deliver: @escaping @Sendable (Data) async throws -> Void, deliverAtOnce: Bool = false,
        within limit: Duration = .seconds(15)
    ) async throws -> Session {
        guard hub.holds(device) else {
            guard let relay else {
                throw RPCError(
                    code: .unavailable,
                    message: "the device's line is held by another orchestrator replica: connect through that one")
            }
            let session = try await relay.open(
                port: port, offer: offer, device: device, deliver: deliver, within: limit)
            Self.opened.relayed.increment()
            try await Self.send(first, on: session)
            return session
        }
        let tunnel = "tun_" + UUID().uuidString.lowercased()
        let rides = first.count <= Self.earlyDataLimit
        let open = Orrery_Orchestrator_V1_OpenTunnel.with {
            $0.tunnelID = tunnel
            $0.offerID = offer
            $0.port = port
        }
        var opening = open
        if rides { opening.earlyData = first }
        while let standby = standbys.take(device: device) {
            let session: Session
            do {
                session = try await standby.hand(
                    opening, deliver: deliver, deliverAtOnce: deliverAtOnce && rides, within: limit)
            } catch is StandbyTunnels.Unsent {
                continue  // it ended meanwhile: nothing reached the device
            }
            Self.opened.standby.increment()
            if !rides { try await Self.send(first, on: session) }
            return session
        }
        // Asked once the wait is registered: a quick device's answer always finds it.
        let session = try await awaitDevice(tunnel: tunnel, device: device, deliver: deliver, within: limit) {
            hub.send(.with { $0.openTunnel = open }, to: device)
        }
        Self.opened.asked.increment()
        try await Self.send(first, on: session)
        return session
    }

    /// Tunnels opened (`orrery_tunnels_opened_total`), by how: handed to a standby call, asked for on the line, or
    /// relayed through the replica holding the line.
    private static let opened = (
        standby: Counter(label: "orrery_tunnels_opened_total", dimensions: [("how", "standby")]),
        asked: Counter(label: "orrery_tunnels_opened_total", dimensions: [("how", "line")]),
        relayed: Counter(label: "orrery_tunnels_opened_total", dimensions: [("how", "relay")])
    )

    /// The most bytes that ride with a tunnel's `open` (a frame's limit).
    static let earlyDataLimit = 64 << 10

    /// Sends a new session's first bytes to the device, in frames of at most 64 KiB; when they cannot be sent, the
    /// device is told to close its side and the error thrown.
    private static func send(_ first: Data, on session: Session) async throws {
        var offset = first.startIndex
        do {
            while offset < first.endIndex {
                let end = first.index(offset, offsetBy: earlyDataLimit, limitedBy: first.endIndex) ?? first.endIndex
                try await session.toDevice.write(.with { $0.data = first[offset..<end] })
                offset = end
            }
        } catch {
            session.consumerReady()
            session.close()
            throw error
        }
    }

    /// Whether a port-forward waits for tunnel `id`.
    func waits(for id: String) -> Bool { waits.waits(for: id) }
}

/// `PortForward`: a consumer's TCP connection to a declared port of one of its running replicas, carried over the
/// device's own outbound line.
struct PortForwarding: Sendable {
    let api: OrchestratorAPI
    let offers: OfferStore
    let hub: AgentHub
    let broker: TunnelBroker
    /// Reaches devices whose line another replica holds.
    let relay: ReplicaRelay?
    let logger: Logger

    /// The most bytes a message carries.
    static let messageLimit = 64 << 10
    /// How long the device has to open the connection.
    static let openingLimit = Duration.seconds(15)
    /// Port-forwards one deployment may have open through one orchestrator replica.
    static let perDeploymentLimit = 64

    func forward(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_PortForwardRequest, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_PortForwardResponse>, caller: String
    ) async throws {
        // The device's tunnel call writes to the consumer's: shared, closed before this call ends.
        try await SharedCallWriter.serving(response) {
            try await forward(request: request, response: $0, caller: caller)
        }
    }

    private func forward(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_PortForwardRequest, any Error>,
        response: SharedCallWriter<Orrery_Orchestrator_V1_PortForwardResponse>, caller: String
    ) async throws {
        let limit = Self.messageLimit
        var admitted: String?
        defer { if let admitted { broker.portForwards.release(admitted) } }
        try await TunnelCall.carry(
            request,
            opening: { message in
                guard case .open(let open) = message.kind else {
                    throw RPCError(
                        code: .invalidArgument,
                        message: "the first message must be open: {deployment_id, allocation, port}")
                }
                return open
            },
            missing: RPCError(code: .invalidArgument, message: "no open message: {deployment_id, allocation, port}"),
            step: { message in
                guard case .data(let data) = message.kind else {
                    throw RPCError(code: .invalidArgument, message: "after open, only data messages")
                }
                guard data.count <= limit else {
                    throw RPCError(code: .invalidArgument, message: "a data message carries at most \(limit) bytes")
                }
                return .data(data)
            },
            open: { open in
                let session = try await connect(open, response: response, caller: caller)
                admitted = open.deploymentID
                return session
            })
    }

    /// Opens `open` on the replica's device (counted against the deployment's bound, released by the caller once
    /// the session ended) and tells the consumer it is open.
    private func connect(
        _ open: Orrery_Orchestrator_V1_PortForwardOpen,
        response: SharedCallWriter<Orrery_Orchestrator_V1_PortForwardResponse>, caller: String
    ) async throws -> TunnelBroker.Session {
        let (replica, offer, device) = try await target(open, caller: caller)
        guard broker.portForwards.admit(open.deploymentID, limit: Self.perDeploymentLimit) else {
            throw RPCError(
                code: .resourceExhausted,
                message:
                    "\(open.deploymentID) has \(Self.perDeploymentLimit) port-forwarded connections open here already")
        }
        do {
            let session = try await broker.open(
                port: open.port, offer: offer, device: device, hub: hub, relay: relay,
                deliver: { data in try await response.write(.with { $0.data = data }) }, within: Self.openingLimit)
            logger.info(
                "port-forward open",
                metadata: [
                    "deployment": "\(open.deploymentID)", "replica": "\(open.allocation)[\(replica)]",
                    "port": "\(open.port)", "device": "\(device)",
                ])
            do {
                try await response.write(
                    .with {
                        $0.opened = .with {
                            $0.replica = replica
                            $0.deviceDid = device
                        }
                    })
            } catch {
                // The consumer is gone already: the device closes its side.
                session.consumerReady()
                session.close()
                throw error
            }
            session.consumerReady()
            return session
        } catch {
            broker.portForwards.release(open.deploymentID)
            throw error
        }
    }

    /// The replica, its running offer and its device, for a port it declares.
    private func target(_ open: Orrery_Orchestrator_V1_PortForwardOpen, caller: String) async throws -> (
        replica: UInt32, offer: String, device: String
    ) {
        let deployment = try await api.get(open.deploymentID, caller: caller)
        // Its consumer's own: not even the operator, who may read its status, reaches into its services.
        guard deployment.consumerDid == caller else {
            throw RPCError(code: .notFound, message: "no deployment \(deployment.id) of yours")
        }
        guard let spec = deployment.spec.allocations.first(where: { $0.name == open.allocation }) else {
            throw RPCError(
                code: .invalidArgument,
                message: "allocation: \(deployment.id) has no allocation '\(open.allocation.prefix(64))'")
        }
        guard spec.ports.contains(where: { $0.port == open.port }) else {
            let declared = spec.ports.map { "\($0.name) \($0.port)" }.joined(separator: ", ")
            throw RPCError(
                code: .invalidArgument,
                message:
                    "port: \(spec.name) declares no port \(open.port) (its ports: \(declared.isEmpty ? "none" : declared))"
            )
        }
        let candidates = deployment.assignments.filter {
            $0.allocation == open.allocation && (!open.hasReplica || $0.replica == open.replica)
        }
        let ready = candidates.filter {
            $0.run.state == .running && (!spec.hasHealth || $0.run.health.status == .healthy)
        }
        guard !ready.isEmpty else {
            let which = open.hasReplica ? "\(open.allocation)[\(open.replica)]" : "no replica of \(open.allocation)"
            throw RPCError(
                code: .failedPrecondition,
                message:
                    "\(which) \(open.hasReplica ? "does not run" : "runs") \(spec.hasHealth ? "healthy " : "")now (deployment \(deployment.state))"
            )
        }
        guard
            let found = try await offers.firstRunning(
                of: ready, deployment: deployment.id, allocation: open.allocation)
        else {
            throw RPCError(code: .failedPrecondition, message: "no replica of \(open.allocation) runs now")
        }
        return found
    }
}
