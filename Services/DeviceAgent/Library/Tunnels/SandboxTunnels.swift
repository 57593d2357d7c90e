#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import GRPCCore
internal import Logging
internal import NIOCore
internal import NIOPosix
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization

/// Connections into this device's sandboxes that an orchestrator asked for over its line (`OpenTunnel`, for a
/// consumer's port-forward): each is a `Tunnel` call of its own on the line's HTTP/2 connection — its own stream and
/// flow control, so a slow reader stalls neither the line nor another tunnel — bridged to a socket inside the
/// sandbox's network namespace (`SandboxConnector`).
final class SandboxTunnels: Sendable {
    let runner: AllocationRunner
    let connector: SandboxConnector
    let logger: Logger
    /// Connections open at once on this device, at most `limit`: a consumer cannot make it hold sockets and streams
    /// without end.
    private let open = Mutex(0)
    let limit: Int

    init(runner: AllocationRunner, logger: Logger, connector: SandboxConnector = SandboxConnector(), limit: Int = 2048)
    {
        self.runner = runner
        self.logger = logger
        self.connector = connector
        self.limit = limit
    }

    /// The most bytes one frame carries.
    static let frameLimit = 64 << 10

    /// Connects to the port `request` names and carries the connection over a `Tunnel` call on `line` until either
    /// side closes it; a connection that cannot be made is answered with the reason.
    func open<Line: Orrery_Orchestrator_V1_AgentChannel.ClientProtocol>(
        _ request: Orrery_Orchestrator_V1_OpenTunnel, over line: Line
    ) async {
        var start = Orrery_Orchestrator_V1_TunnelStart.with { $0.tunnelID = request.tunnelID }
        var socket: Int32?
        let admitted = open.withLock { count -> Bool in
            guard count < limit else { return false }
            count += 1
            return true
        }
        defer { if admitted { open.withLock { $0 -= 1 } } }
        do {
            guard admitted else {
                throw SandboxConnector.ConnectFailure(
                    description: "this device carries \(limit) connections into its sandboxes already")
            }
            socket = try await connect(request)
        } catch {
            start.error = "\(error)"
            logger.info(
                "a connection into a sandbox could not be made",
                metadata: ["offer": "\(request.offerID)", "port": "\(request.port)", "error": "\(error)"])
        }
        let first = Orrery_Orchestrator_V1_TunnelFrame.with { $0.start = start }
        do {
            guard let socket else {
                try await line.tunnel(
                    requestProducer: { writer in try await writer.write(first) },
                    onResponse: { _ in })
                return
            }
            // From here the channel owns the socket.
            let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .withConnectedSocket(socket) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
            try await Self.bridge(connection, first: first) { producer, onResponse in
                try await line.tunnel(requestProducer: producer, onResponse: onResponse)
            }
        } catch {
            logger.info(
                "a connection into a sandbox ended", metadata: ["offer": "\(request.offerID)", "error": "\(error)"])
        }
    }

    /// Carries `connection`'s bytes over a tunnel call both ways until either side ends: `first` goes first, then
    /// the socket's bytes (in frames of at most 64 KiB); its end ends the call's requests. The call's data frames go
    /// to the socket, `end` half-closes it, `close` or the call's end closes it.
    static func bridge(
        _ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, first: Orrery_Orchestrator_V1_TunnelFrame,
        call: (
            _ requestProducer: @escaping @Sendable (RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>) async throws -> Void,
            _ onResponse:
                @escaping @Sendable (StreamingClientResponse<Orrery_Orchestrator_V1_TunnelFrame>) async throws
                -> Void
        ) async throws -> Void
    ) async throws {
        try await connection.executeThenClose { inbound, outbound in
            let (closed, close) = AsyncStream<Void>.makeStream()
            try await call(
                { writer in
                    try await writer.write(first)
                    // The socket's bytes until it closes its side, or the other side is gone.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for try await var buffer in inbound {
                                while buffer.readableBytes > 0,
                                    let slice = buffer.readSlice(length: min(buffer.readableBytes, Self.frameLimit))
                                {
                                    try await writer.write(.with { $0.data = Data(slice.readableBytesView) })
                                }
                            }
                        }
                        group.addTask { for await _ in closed {} }
                        try await group.next()
                        group.cancelAll()
                    }
                },
                { response in
                    defer { close.finish() }
                    for try await frame in response.messages {
                        switch frame.kind {
                        case .data(let data): try await outbound.write(ByteBuffer(bytes: data))
                        case .end: outbound.finish()
                        case .close: return
                        case .start, .peer, .relay, nil: continue
                        }
                    }
                })
        }
    }

    /// A socket connected to the requested port of a running allocation that declares it.
    private func connect(_ request: Orrery_Orchestrator_V1_OpenTunnel) async throws -> Int32 {
        let id = request.offerID
        guard AllocationRunner.isSafeID(id), runner.isKnown(id), runner.status(id) == .running else {
            throw SandboxConnector.ConnectFailure(
                description: "allocation \(id.prefix(80)) does not run on this device")
        }
        let spec = try runner.spec(id)
        guard spec.ports.contains(where: { $0.port == request.port }) else {
            throw SandboxConnector.ConnectFailure(
                description: "allocation \(spec.name) declares no port \(request.port)")
        }
        guard let member = SandboxProbe.networkMember(among: runner.processes(id)) else {
            throw SandboxConnector.ConnectFailure(description: "no process of its sandbox runs")
        }
        return try await connector.connect(id, member: member, port: Int(request.port), timeout: .seconds(5))
    }
}
