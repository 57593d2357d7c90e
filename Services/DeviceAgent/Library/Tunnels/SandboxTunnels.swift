#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
#if canImport(Glibc)
    internal import Glibc
#endif
internal import GRPCCore
internal import Logging
internal import Metrics
internal import NIOCore
internal import NIOPosix
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization

/// Connections into this device's sandboxes that an orchestrator asked for (for the ingress, a consumer's
/// port-forward, the ensemble network): each is a `Tunnel` call of its own on the line's HTTP/2 connection — its own
/// stream and flow control, so a slow reader stalls neither the line nor another tunnel — bridged to a socket inside
/// the sandbox's network namespace (`SandboxConnector`). A few calls are kept open ahead of need (standby), so that a
/// new connection is handed to one at once; past them, the orchestrator asks on the line (`OpenTunnel`) for a new one.
final class SandboxTunnels: Sendable {
    let runner: AllocationRunner
    let connector: SandboxConnector
    let logger: Logger
    /// Connections open at once on this device, at most `limit`: a consumer cannot make it hold sockets and streams
    /// without end (`orrery_agent_sandbox_connections`).
    private let open = Mutex(0)
    private static let openGauge = Gauge(label: "orrery_agent_sandbox_connections")
    let limit: Int
    /// Standby calls kept open on each line.
    let standbyCount: Int
    /// The ports each allocation declares (its spec never changes), so a connection reads no spec.
    private let declaredPorts = Mutex<[String: Set<UInt32>]>([:])
    /// When each allocation was last seen running.
    private let seenRunning = Mutex<[String: ContinuousClock.Instant]>([:])

    init(
        runner: AllocationRunner, logger: Logger, connector: SandboxConnector = SandboxConnector(), limit: Int = 2048,
        standbyCount: Int = 4
    ) {
        self.runner = runner
        self.logger = logger
        self.connector = connector
        self.limit = limit
        self.standbyCount = standbyCount
    }

    /// The most bytes one frame carries.
    static let frameLimit = 64 << 10

    /// Connects to the port `request` names and carries the connection over a `Tunnel` call on `line` until either
    /// side closes it; a connection that cannot be made is answered with the reason.
    func open<Line: Orrery_Orchestrator_V1_AgentChannel.ClientProtocol>(
        _ request: Orrery_Orchestrator_V1_OpenTunnel, over line: Line
    ) async {
        let connected = await connection(for: request)
        defer { if connected.admitted { release() } }
        let first = Orrery_Orchestrator_V1_TunnelFrame.with { $0.start = connected.start }
        do {
            guard let connection = connected.channel else {
                try await line.tunnel(
                    requestProducer: { writer in try await writer.write(first) },
                    onResponse: { _ in })
                return
            }
            try await Self.bridge(connection, first: first) { producer, onResponse in
                try await line.tunnel(requestProducer: producer, onResponse: onResponse)
            }
        } catch {
            logger.info(
                "a connection into a sandbox ended", metadata: ["offer": "\(request.offerID)", "error": "\(error)"])
        }
    }

    /// Keeps `standbyCount` standby `Tunnel` calls open on `line` until cancelled (the line's end).
    func keepStandby<Line: Orrery_Orchestrator_V1_AgentChannel.ClientProtocol>(over line: Line) async {
        await CallsAhead.keep(count: standbyCount) { used in await self.standby(over: line, onHanded: used) }
    }

    /// One standby call: announced (`start.standby`), it waits for the orchestrator's `open`, tells `onHanded`, and
    /// carries that tunnel until either side ends it.
    private func standby<Line: Orrery_Orchestrator_V1_AgentChannel.ClientProtocol>(
        over line: Line, onHanded: @escaping @Sendable () -> Void
    ) async {
        // The call's writer, handed from its request side to its response side, which serves the tunnel and hands
        // the socket's bytes back to the request side to carry; the requests end when those bytes do.
        let (writers, giveWriter) = AsyncStream<RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>>.makeStream()
        let handoff = BytesHandoff()
        do {
            try await line.tunnel(
                requestProducer: { writer in
                    defer {
                        giveWriter.finish()
                        handoff.requestSideEnded()
                    }
                    try await writer.write(.with { $0.start = .with { $0.standby = true } })
                    giveWriter.yield(writer)
                    giveWriter.finish()
                    try await handoff.carry(to: writer)
                },
                onResponse: { response in
                    defer { handoff.cancel() }
                    var frames = response.messages.makeAsyncIterator()
                    guard let first = try await frames.next() else { return }
                    guard case .open(let request) = first.kind else {
                        throw SandboxConnector.ConnectFailure(description: "a standby call's first frame is open")
                    }
                    onHanded()
                    var handedWriter = writers.makeAsyncIterator()
                    guard let writer = await handedWriter.next() else { return }
                    try await self.serve(request, writer: writer, frames: &frames, handoff: handoff)
                })
        } catch {
            logger.debug("a standby tunnel call ended", metadata: ["error": "\(error)"])
        }
    }

    /// The tunnel handed to a standby call: connects, writes the request's early bytes, answers `start`, then
    /// carries bytes both ways (the socket's through `handoff`, on the call's request side).
    private func serve(
        _ request: Orrery_Orchestrator_V1_OpenTunnel, writer: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>,
        frames: inout RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>.AsyncIterator,
        handoff: BytesHandoff
    ) async throws {
        let connected = await connection(for: request, early: request.earlyData)
        defer { if connected.admitted { release() } }
        guard let connection = connected.channel else {
            try await writer.write(.with { $0.start = connected.start })
            return
        }
        try await connection.executeThenClose { inbound, outbound in
            if !connected.unsent.isEmpty { try await outbound.write(ByteBuffer(bytes: connected.unsent)) }
            try await writer.write(.with { $0.start = connected.start })
            try await Self.carry(
                inbound: inbound, outbound: outbound, of: connection.channel, frames: &frames, handoff: handoff)
        }
    }

    /// Carries an open tunnel's bytes both ways on a call whose response side opened the connection (inside
    /// `channel`'s `executeThenClose`): the socket's bytes go to the call's request side through `handoff`, the
    /// call's frames to the socket, until `close` or the call's end; then the socket is closed, which ends the
    /// request side's carrying, and its end is waited for (the bytes are not used past their scope).
    static func carry(
        inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        of channel: any Channel,
        frames: inout RPCAsyncSequence<Orrery_Orchestrator_V1_TunnelFrame, any Error>.AsyncIterator,
        handoff: BytesHandoff
    ) async throws {
        handoff.hand(inbound)
        let ended: Result<Void, any Error>
        do {
            while let frame = try await frames.next(), try await apply(frame, to: outbound) {}
            ended = .success(())
        } catch {
            ended = .failure(error)
        }
        channel.close(promise: nil)
        await handoff.waitUntilCarried()
        try ended.get()
    }

    /// A connection's bytes handed from a call's response side, which opens the connection, to its request side,
    /// which carries them to the call (and ends the call's requests when they end): the request side's task does
    /// this instead of a task of its own — every task of an open connection keeps its deepest stack's memory.
    final class BytesHandoff: Sendable {
        private let handed: AsyncStream<NIOAsyncChannelInboundStream<ByteBuffer>>
        private let hand: AsyncStream<NIOAsyncChannelInboundStream<ByteBuffer>>.Continuation
        private let carried: AsyncStream<Void>
        private let carriedAll: AsyncStream<Void>.Continuation

        init() {
            (handed, hand) = AsyncStream.makeStream()
            (carried, carriedAll) = AsyncStream.makeStream()
        }

        /// On the request side: carries the bytes handed over to `writer` until the socket ends its side or is
        /// closed; returns at once when none are handed (`cancel`).
        func carry(to writer: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>) async throws {
            defer { requestSideEnded() }
            for await inbound in handed {
                try await SandboxTunnels.pump(inbound, to: writer)
                return
            }
        }

        /// On the response side: hands the socket's bytes over (once).
        func hand(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) {
            hand.yield(inbound)
            hand.finish()
        }

        /// Nothing (more) will be handed over.
        func cancel() { hand.finish() }

        /// The request side ended, whether it carried bytes or not (its producer's end, however it ended): nobody
        /// waits for it any more.
        func requestSideEnded() { carriedAll.finish() }

        /// Until the request side is done with the bytes handed over.
        func waitUntilCarried() async {
            for await _ in carried {}
        }
    }

    /// A connection made for `request` (nil, with the reason in `start.error`, when it could not be), whether it
    /// was admitted under the device's bound (then `release()` once it ends), and what of `early` (its first bytes)
    /// is still to be written: as much as the socket takes goes at once, before the connection's event loop has it,
    /// so the service reads a request that rode with its connection's open without waiting for that.
    private func connection(for request: Orrery_Orchestrator_V1_OpenTunnel, early: Data = Data()) async -> (
        channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>?, start: Orrery_Orchestrator_V1_TunnelStart, admitted: Bool,
        unsent: Data
    ) {
        var start = Orrery_Orchestrator_V1_TunnelStart.with { $0.tunnelID = request.tunnelID }
        var sentEarly = false
        let admitted = open.withLock { count -> Bool in
            guard count < limit else { return false }
            count += 1
            Self.openGauge.record(count)
            return true
        }
        do {
            guard admitted else {
                throw SandboxConnector.ConnectFailure(
                    description: "this device carries \(limit) connections into its sandboxes already")
            }
            guard request.earlyData.count <= Self.frameLimit else {
                throw SandboxConnector.ConnectFailure(description: "early data carries at most 64 KiB")
            }
            let socket = try await connect(request)
            let unsent = Self.sendNow(early, on: socket)
            sentEarly = unsent.count < early.count
            // From here the channel owns the socket.
            let channel = try await ClientBootstrap(group: LineLoop.group)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .withConnectedSocket(socket) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
            return (channel, start, admitted, unsent)
        } catch {
            logger.info(
                "a connection into a sandbox could not be made",
                metadata: ["offer": "\(request.offerID)", "port": "\(request.port)", "error": "\(error)"])
            // Once its first bytes reached the service, the connection was made and broke: said without an error, so
            // that they are not sent to another replica too (the tunnel ends at once).
            if !sentEarly { start.error = "\(error)" }
            return (nil, start, admitted, Data())
        }
    }

    /// Writes as much of `bytes` as the connected, non-blocking `socket` takes now; returns the rest (all of it when
    /// the socket takes nothing: its channel's write then tells why).
    static func sendNow(_ bytes: Data, on socket: Int32) -> Data {
        guard !bytes.isEmpty else { return bytes }
        let sent = bytes.withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        return sent > 0 ? Data(bytes.dropFirst(sent)) : bytes
    }

    private func release() {
        open.withLock { count in
            count -= 1
            Self.openGauge.record(count)
        }
    }

    /// Carries `connection`'s bytes over a tunnel call both ways until either side ends: `first` goes first, then
    /// the socket's bytes (in frames of at most 64 KiB); its end ends the call's requests. The call's data frames go
    /// to the socket, `end` half-closes it, `close` or the call's end closes it (which ends the socket's bytes).
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
            try await call(
                { writer in
                    try await writer.write(first)
                    // The socket's bytes until it closes its side, or the other side is gone (then it is closed).
                    try await Self.pump(inbound, to: writer)
                },
                { response in
                    defer { connection.channel.close(promise: nil) }
                    for try await frame in response.messages {
                        guard try await Self.apply(frame, to: outbound) else { return }
                    }
                })
        }
    }

    /// The socket's bytes to the call, in frames of at most 64 KiB, until the socket closes its side.
    private static func pump(
        _ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, to writer: RPCWriter<Orrery_Orchestrator_V1_TunnelFrame>
    ) async throws {
        for try await var buffer in inbound {
            while buffer.readableBytes > 0,
                let slice = buffer.readSlice(length: min(buffer.readableBytes, Self.frameLimit))
            {
                try await writer.write(.with { $0.data = Data(slice.readableBytesView) })
            }
        }
    }

    /// One frame from the orchestrator applied to the socket: data written, `end` half-closes it; false for `close`
    /// (the tunnel ends).
    private static func apply(
        _ frame: Orrery_Orchestrator_V1_TunnelFrame, to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws -> Bool {
        switch frame.kind {
        case .data(let data): try await outbound.write(ByteBuffer(bytes: data))
        case .end: outbound.finish()
        case .close: return false
        case .start, .peer, .relay, .open, nil: break
        }
        return true
    }

    /// A socket connected to the requested port of a running allocation that declares it.
    private func connect(_ request: Orrery_Orchestrator_V1_OpenTunnel) async throws -> Int32 {
        let id = request.offerID
        guard AllocationRunner.isSafeID(id), isRunning(id) else {
            throw SandboxConnector.ConnectFailure(
                description: "allocation \(id.prefix(80)) does not run on this device")
        }
        guard try ports(declaredBy: id).contains(request.port) else {
            throw SandboxConnector.ConnectFailure(
                description: "allocation \(id.prefix(80)) declares no port \(request.port)")
        }
        return try await connector.connect(
            id, member: { SandboxProbe.networkMember(among: self.runner.processes(id)) }, port: Int(request.port),
            timeout: .seconds(5))
    }

    /// Whether allocation `id` runs: as its directory says, or said within the last second (a connection to one that
    /// stopped since fails to connect instead).
    private func isRunning(_ id: String) -> Bool {
        if let seen = seenRunning.withLock({ $0[id] }), seen.duration(to: .now) < .seconds(1) { return true }
        guard runner.isKnown(id), runner.status(id) == .running else { return false }
        seenRunning.withLock { seen in
            if seen.count >= 1024 { seen.removeAll() }
            seen[id] = .now
        }
        return true
    }

    /// The ports allocation `id` declares (its spec read once).
    private func ports(declaredBy id: String) throws -> Set<UInt32> {
        if let known = declaredPorts.withLock({ $0[id] }) { return known }
        let ports = Set(try runner.spec(id).ports.map(\.port))
        declaredPorts.withLock { known in
            if known.count >= 1024 { known.removeAll() }
            known[id] = ports
        }
        return ports
    }
}
