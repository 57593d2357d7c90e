internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntimeCore
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
    /// Where the exec sessions this replica opens for others meet their devices.
    let execs: ExecBroker
    let key: SigningKey
    let trustRoots: String?
    let logger: Logger
    private let advertised: String?
    private let grpcHost: String
    private let serving: ServingSignal
    private let clients = Mutex<[String: GRPCClient<HTTP2ClientTransport.Posix>]>([:])

    init(
        client: PostgresClient, hub: AgentHub, broker: TunnelBroker, execs: ExecBroker,
        environment: ServiceEnvironment, advertised: String?
    ) {
        self.client = client
        self.hub = hub
        self.broker = broker
        self.execs = execs
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
        let (holder, channel) = try await holderChannel(of: device)
        let metadata = try authorization(for: "/orrery/orchestrator/relay-tunnel")
        let first = Orrery_Orchestrator_V1_TunnelFrame.with {
            $0.relay = .with {
                $0.deviceDid = device
                $0.offerID = offer
                $0.port = port
            }
        }
        return try await Self.opening(holder: holder, what: "tunnel", within: limit) { opened in
            let session = SessionBox<TunnelBroker.Session>()
            do {
                try await channel.relayTunnel(
                    metadata: metadata,
                    requestProducer: { writer in
                        // The writer serves the session (other calls write to it) until the device's side ends.
                        try await SharedCallWriter.serving(writer) { writer in
                            // Known before the holder can answer: its `start` may come before this write returns.
                            let made = TunnelBroker.Session(deliver: deliver, toDevice: writer)
                            session.set(made)
                            try await writer.write(first)
                            await made.waitUntilDeviceEnded()
                        }
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
            session.get()?.deviceEnded()
        }
    }

    /// Serves another replica's `RelayTunnel`: opens the tunnel on the line held here and carries it until either
    /// side ends (the caller ends its request stream only once it is done with the tunnel).
    func serve(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>
    ) async throws {
        // The device's tunnel call writes to this one: shared, closed before this call ends.
        try await SharedCallWriter.serving(response) { try await serve(request: request, response: $0) }
    }

    private func serve(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>,
        response: SharedCallWriter<Orrery_Orchestrator_V1_TunnelFrame>
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

    /// An exec session on the device through the replica holding its line: its device side, the session's frames
    /// going to `deliver` once the device started the command.
    func openExec(
        _ open: Orrery_Orchestrator_V1_OpenExec, device: String, within limit: Duration,
        deliver: @escaping @Sendable (Orrery_Orchestrator_V1_ExecFrame) async throws -> Void
    ) async throws -> ExecBroker.DeviceSide {
        let (holder, channel) = try await holderChannel(of: device)
        let metadata = try authorization(for: "/orrery/orchestrator/relay-exec")
        let first = Orrery_Orchestrator_V1_ExecFrame.with {
            $0.relay = .with {
                $0.deviceDid = device
                $0.open = open
            }
        }
        return try await Self.opening(holder: holder, what: "exec session", within: limit) { opened in
            let side = SessionBox<ExecBroker.DeviceSide>()
            do {
                try await channel.relayExec(
                    metadata: metadata,
                    requestProducer: { writer in
                        // The writer serves the session (other calls write to it) until the device's side ends.
                        try await SharedCallWriter.serving(writer) { writer in
                            // Known before the holder can answer: its `opened` may come before this write returns.
                            let made = ExecBroker.DeviceSide(device: device, toDevice: writer, deliver: deliver)
                            side.set(made)
                            try await writer.write(first)
                            await made.waitUntilDeviceEnded()
                        }
                    },
                    onResponse: { response in
                        defer { side.get()?.deviceEnded() }
                        for try await frame in response.messages {
                            switch frame.kind {
                            case .opened(let answer):
                                guard let made = side.get() else { continue }
                                guard answer.error.isEmpty else {
                                    let code =
                                        Status.Code(rawValue: Int(answer.code)).flatMap { RPCError.Code($0) }
                                        ?? .unavailable
                                    opened.fail(RPCError(code: code, message: answer.error))
                                    return
                                }
                                opened.succeed(made)
                            case .stdout, .stderr, .exited: try await side.get()?.deliver(frame)
                            default: continue
                            }
                        }
                    })
            } catch {
                opened.fail(error)
            }
            side.get()?.deviceEnded()
        }
    }

    /// The replica holding the device's line, and a client of its agent channel.
    private func holderChannel(of device: String) async throws -> (
        holder: String, channel: Orrery_Orchestrator_V1_AgentChannel.Client<HTTP2ClientTransport.Posix>
    ) {
        guard let own = ownAddress, let holder = try await holder(of: device), holder != own,
            let address = ServiceAddress(holder)
        else {
            throw RPCError(code: .unavailable, message: "no orchestrator replica holds the device's line now")
        }
        return (holder, Orrery_Orchestrator_V1_AgentChannel.Client(wrapping: try client(for: address)))
    }

    /// Runs a relay `call` (in a task of its own: it lasts as long as the relayed session) until it resolves
    /// `opened`, or `limit` passed (the call is then cancelled); what it opened, or why not.
    private static func opening<Value: Sendable>(
        holder: String, what: String, within limit: Duration,
        _ call: @escaping @Sendable (OpenedOnce<Value>) async -> Void
    ) async throws -> Value {
        let opened = OpenedOnce<Value>()
        let task = Task {
            await call(opened)
            opened.fail(RPCError(code: .unavailable, message: "the replica at \(holder) ended the \(what)"))
        }
        let expiry = Task {
            try await Task.sleep(for: limit)
            opened.fail(
                RPCError(code: .unavailable, message: "the replica at \(holder) did not open the \(what) in time"))
            task.cancel()
        }
        defer { expiry.cancel() }
        do {
            return try await withCheckedThrowingContinuation { opened.set($0) }
        } catch {
            task.cancel()
            throw error
        }
    }

    /// Serves another replica's `RelayExec`: opens the session on the line held here and carries its frames both
    /// ways until the device's side ends.
    func serveExec(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecFrame, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_ExecFrame>
    ) async throws {
        // The device's session call writes to this one: shared, closed before this call ends.
        try await SharedCallWriter.serving(response) { try await serveExec(request: request, response: $0) }
    }

    private func serveExec(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecFrame, any Error>,
        response: SharedCallWriter<Orrery_Orchestrator_V1_ExecFrame>
    ) async throws {
        let authorization = try Authorization.required()
        guard authorization.invoker == key.did, authorization.validated.subject == key.did else {
            throw RPCError(code: .permissionDenied, message: "only the orchestrator's own replicas relay exec sessions")
        }
        let (execs, hub) = (execs, hub)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let (sides, made) = AsyncStream<ExecBroker.DeviceSide>.makeStream()
            group.addTask {
                // The device's frames go out after `opened` (which the caller reads first).
                let openedSent = OnceGate()
                defer {
                    openedSent.open()
                    made.finish()
                }
                var incoming = request.makeAsyncIterator()
                guard let first = try await incoming.next(), case .relay(let relay) = first.kind else {
                    throw RPCError(code: .invalidArgument, message: "the first frame must be relay: {device_did, open}")
                }
                let side: ExecBroker.DeviceSide
                do {
                    side = try await execs.open(
                        relay.open, device: relay.deviceDid, hub: hub, within: ExecSessions.openingLimit
                    ) { frame in
                        await openedSent.wait()
                        try await response.write(frame)
                    }
                } catch {
                    let code = (error as? RPCError)?.code ?? .unavailable
                    let reason = (error as? RPCError)?.message ?? "\(error)"
                    try await response.write(
                        .with {
                            $0.opened = .with {
                                $0.execID = relay.open.execID
                                $0.error = reason
                                $0.code = Int32(code.rawValue)
                            }
                        })
                    return
                }
                // `opened` goes out before the device's side is watched: a command that ends at once ends this call
                // (cancelling this task) only after it, never while it is written.
                do {
                    try await response.write(.with { $0.opened = .with { $0.execID = relay.open.execID } })
                } catch {
                    try? await side.toDevice.write(.with { $0.close = true })
                    throw error
                }
                openedSent.open()
                made.yield(side)
                made.finish()
                do {
                    while let frame = try await incoming.next() {
                        switch frame.kind {
                        case .stdin, .stdinEnd, .resize, .close: try await side.toDevice.write(frame)
                        default: continue
                        }
                    }
                } catch {
                    try? await side.toDevice.write(.with { $0.close = true })
                }
            }
            // The device's side ended (its record delivered): so does the call. A bad first frame ends it at once.
            for await side in sides { await side.waitUntilDeviceEnded() }
            group.cancelAll()
            while try await group.next() != nil {}
        }
    }

    /// The metadata of a self-issued invocation of `command` (a relay method) for the holder (the same orchestrator
    /// DID).
    private func authorization(for command: String) throws -> Metadata {
        let now = Int64(Date().timeIntervalSince1970)
        let invocation = Invocation.issue(
            by: key, subject: key.did, audience: key.did, command: try Command(command), expiration: now + 60,
            issuedAt: now)
        var metadata = Metadata()
        metadata.addString(
            "Bearer " + (try UCANContainer.encodeText([invocation.envelope.bytes])), forKey: "authorization")
        return metadata
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

/// The continuation of an opening relayed tunnel or exec session, resumed once.
private final class OpenedOnce<Value: Sendable>: Sendable {
    private let state = Mutex<
        (continuation: CheckedContinuation<Value, any Error>?, result: Result<Value, any Error>?)
    >(
        (nil, nil))

    func set(_ continuation: CheckedContinuation<Value, any Error>) {
        let early = state.withLock { state -> Result<Value, any Error>? in
            if let result = state.result { return result }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    func succeed(_ value: Value) { finish(.success(value)) }
    func fail(_ error: any Error) { finish(.failure(error)) }

    private func finish(_ result: Result<Value, any Error>) {
        let continuation = state.withLock { state -> CheckedContinuation<Value, any Error>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
    }
}

/// What a relay call makes, shared by its producer and its response reader.
private final class SessionBox<Value: Sendable>: Sendable {
    private let session = Mutex<Value?>(nil)
    func set(_ value: Value) { session.withLock { $0 = value } }
    func get() -> Value? { session.withLock { $0 } }
}
