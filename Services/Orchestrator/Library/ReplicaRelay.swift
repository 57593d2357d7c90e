internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization

/// Tunnels to devices whose line another orchestrator replica holds. Each replica records the lines it holds
/// (`agent_lines`: device → the replica's advertised gRPC address); a replica asked for a tunnel to a device it does
/// not hold calls the holder's `RelayTunnel` with an invocation signed by the orchestrator's own key (replicas share
/// it), and the holder opens the tunnel on its line and carries the bytes both ways. Without an address of its own
/// (`--advertise-address`, or a gRPC host that is one), a replica neither records lines nor relays.
final class ReplicaRelay: Sendable {
    let client: PostgresClient
    let hub: AgentHub
    let broker: TunnelBroker
    let key: SigningKey
    let trustRoots: String?
    let logger: Logger
    private let advertised: String?
    private let grpcHost: String
    private let serving: ServingSignal
    private let clients = Mutex<[String: GRPCClient<HTTP2ClientTransport.Posix>]>([:])

    init(
        client: PostgresClient, hub: AgentHub, broker: TunnelBroker, environment: ServiceEnvironment,
        advertised: String?
    ) {
        self.client = client
        self.hub = hub
        self.broker = broker
        key = environment.key
        trustRoots = environment.settings.tlsTrustRoots
        logger = environment.logger
        self.advertised = advertised
        grpcHost = environment.settings.grpc.host
        serving = environment.serving
    }

    /// This replica's address as the others reach it, once it serves.
    var ownAddress: String? {
        if let advertised { return advertised }
        guard !["0.0.0.0", "::", "", "*"].contains(grpcHost), let port = serving.grpcPort else { return nil }
        return grpcHost.contains(":") ? "[\(grpcHost)]:\(port)" : "\(grpcHost):\(port)"
    }

    /// The device's line is now held here.
    func lineOpened(_ device: String) async {
        guard let own = ownAddress else { return }
        do {
            try await client.query(
                """
                INSERT INTO agent_lines (device_did, replica_address) VALUES (\(device), \(own))
                ON CONFLICT (device_did) DO UPDATE SET replica_address = EXCLUDED.replica_address, opened_at = now()
                """, logger: logger)
        } catch {
            logger.warning("cannot record an agent line", metadata: ["device": "\(device)", "error": "\(error)"])
        }
    }

    /// The device's line here closed at `closedAt` (a line of it opened here since keeps its record).
    func lineClosed(_ device: String, at closedAt: Date) async {
        guard let own = ownAddress, !hub.holds(device) else { return }
        _ = try? await client.query(
            """
            DELETE FROM agent_lines
            WHERE device_did = \(device) AND replica_address = \(own) AND opened_at <= \(closedAt)
            """, logger: logger)
    }

    /// The address of the replica holding the device's line, by the record.
    func holder(of device: String) async throws -> String? {
        let rows = try await client.query(
            "SELECT replica_address FROM agent_lines WHERE device_did = \(device)", logger: logger)
        for try await address in rows.decode(String.self) { return address }
        return nil
    }

    /// A tunnel to `port` of the device's allocation `offer` through the replica holding its line.
    func open(
        port: UInt32, offer: String, device: String, deliver: @escaping @Sendable (Data) async throws -> Void,
        within limit: Duration
    ) async throws -> TunnelBroker.Session {
        guard let own = ownAddress, let holder = try await holder(of: device), holder != own,
            let address = ServiceAddress(holder)
        else {
            throw RPCError(code: .unavailable, message: "no orchestrator replica holds the device's line now")
        }
        let channel = Orrery_Orchestrator_V1_AgentChannel.Client(wrapping: try client(for: address))
        var metadata = Metadata()
        metadata.addString(try authorization(), forKey: "authorization")
        let first = Orrery_Orchestrator_V1_TunnelFrame.with {
            $0.relay = .with {
                $0.deviceDid = device
                $0.offerID = offer
                $0.port = port
            }
        }
        let opened = OpenedOnce()
        let call = Task {
            let session = SessionBox()
            do {
                try await channel.relayTunnel(
                    metadata: metadata,
                    requestProducer: { writer in
                        try await writer.write(first)
                        let made = TunnelBroker.Session(deliver: deliver, toDevice: writer)
                        session.set(made)
                        // The writer serves the session until the device's side ends.
                        await made.waitUntilDeviceEnded()
                    },
                    onResponse: { response in
                        defer { session.get()?.deviceEnded() }
                        for try await frame in response.messages {
                            switch frame.kind {
                            case .start(let start):
                                guard let made = session.get() else { continue }
                                guard start.error.isEmpty else {
                                    opened.fail(
                                        RPCError(
                                            code: .unavailable, message: "the device could not connect: \(start.error)")
                                    )
                                    return
                                }
                                made.consumerReady()
                                opened.succeed(made)
                            case .data(let data): try await session.get()?.deliver(data)
                            default: continue
                            }
                        }
                    })
            } catch {
                opened.fail(error)
            }
            opened.fail(RPCError(code: .unavailable, message: "the replica at \(holder) ended the tunnel"))
            session.get()?.deviceEnded()
        }
        let expiry = Task {
            try await Task.sleep(for: limit)
            opened.fail(
                RPCError(code: .unavailable, message: "the replica at \(holder) did not open the tunnel in time"))
            call.cancel()
        }
        defer { expiry.cancel() }
        do {
            return try await withCheckedThrowingContinuation { opened.set($0) }
        } catch {
            call.cancel()
            throw error
        }
    }

    /// Serves another replica's `RelayTunnel`: opens the tunnel on the line held here and carries it until either
    /// side ends (the caller ends its request stream only once it is done with the tunnel).
    func serve(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>
    ) async throws {
        let authorization = try Authorization.required()
        guard authorization.invoker == key.did, authorization.validated.subject == key.did else {
            throw RPCError(code: .permissionDenied, message: "only the orchestrator's own replicas relay tunnels")
        }
        let (broker, hub) = (broker, hub)
        let (sessions, made) = AsyncStream<TunnelBroker.Session>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var session: TunnelBroker.Session?
                defer {
                    made.finish()
                    session?.close()
                }
                for try await frame in request {
                    guard let open = session else {
                        guard case .relay(let relay) = frame.kind else {
                            throw RPCError(
                                code: .invalidArgument,
                                message: "the first frame must be relay: {device_did, offer_id, port}")
                        }
                        do {
                            session = try await broker.open(
                                port: relay.port, offer: relay.offerID, device: relay.deviceDid, hub: hub,
                                deliver: { data in try await response.write(.with { $0.data = data }) })
                        } catch {
                            try await response.write(.with { $0.start = .with { $0.error = "\(error)" } })
                            return
                        }
                        try await response.write(.with { $0.start = .with { $0.tunnelID = relay.offerID } })
                        session?.consumerReady()
                        if let session { made.yield(session) }
                        continue
                    }
                    switch frame.kind {
                    case .data(let data): try await open.toDevice.write(.with { $0.data = data })
                    case .end: try await open.toDevice.write(.with { $0.end = true })
                    case .close: return
                    default: continue
                    }
                }
            }
            // The device's side ended: so does the call.
            group.addTask { for await session in sessions { await session.waitUntilDeviceEnded() } }
            try await group.next()
            group.cancelAll()
        }
    }

    /// A self-issued invocation of `RelayTunnel` for the holder (the same orchestrator DID).
    private func authorization() throws -> String {
        let now = Int64(Date().timeIntervalSince1970)
        let invocation = Invocation.issue(
            by: key, subject: key.did, audience: key.did, command: try Command("/orrery/orchestrator/relay-tunnel"),
            expiration: now + 60, issuedAt: now)
        return "Bearer " + (try UCANContainer.encodeText([invocation.envelope.bytes]))
    }

    /// A client kept connected to another replica.
    private func client(for address: ServiceAddress) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
        if let known = clients.withLock({ $0[address.description] }) { return known }
        let made = GRPCClient(
            transport: try .http2NIOPosix(
                target: address.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots),
                config: ServiceProbe.longLivedLine))
        let winner = clients.withLock { table -> GRPCClient<HTTP2ClientTransport.Posix> in
            if let raced = table[address.description] { return raced }
            table[address.description] = made
            return made
        }
        if winner === made { Task { try? await made.runConnections() } }
        return winner
    }
}

/// The continuation of an opening relayed tunnel, resumed once.
private final class OpenedOnce: Sendable {
    private let state = Mutex<
        (
            continuation: CheckedContinuation<TunnelBroker.Session, any Error>?,
            result: Result<TunnelBroker.Session, any Error>?
        )
    >((nil, nil))

    func set(_ continuation: CheckedContinuation<TunnelBroker.Session, any Error>) {
        let early = state.withLock { state -> Result<TunnelBroker.Session, any Error>? in
            if let result = state.result { return result }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    func succeed(_ session: TunnelBroker.Session) { finish(.success(session)) }
    func fail(_ error: any Error) { finish(.failure(error)) }

    private func finish(_ result: Result<TunnelBroker.Session, any Error>) {
        let continuation = state.withLock { state -> CheckedContinuation<TunnelBroker.Session, any Error>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
    }
}

/// The session a relay call makes, shared by its producer and its response reader.
private final class SessionBox: Sendable {
    private let session = Mutex<TunnelBroker.Session?>(nil)
    func set(_ value: TunnelBroker.Session) { session.withLock { $0 = value } }
    func get() -> TunnelBroker.Session? { session.withLock { $0 } }
}
