internal import GRPCCore
internal import Logging
internal import NIOCore
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization

/// `PeerTunnel` calls kept open on one line ahead of need (warm), while this device serves ensemble partners: a
/// sandbox's new connection to a partner is handed to one that is open and authorised already, so it waits for no
/// call to be opened, no invocation to be signed and checked, no nonce to be recorded. Past them (a burst), a
/// connection opens a call of its own. A call unused for `lifetime` ends (nothing sent: the orchestrator ends it
/// quietly) and a fresh one takes its place, so no call outlives its invocation by much.
final class WarmPeerCalls: Sendable {
    typealias Frame = Orrery_Orchestrator_V1_TunnelFrame

    /// A sandbox's connection handed to a warm call, with its first frame (`peer`, where it goes).
    struct Assignment: Sendable {
        let connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        let first: Frame
    }

    private struct Ready {
        let id: UInt64
        let call: AsyncStream<Assignment>.Continuation
    }

    let count: Int
    let logger: Logger
    /// Calls ready for a connection, the longest waiting first.
    private let ready = Mutex<(next: UInt64, calls: [Ready])>((0, []))
    /// How long a call waits unused before it ends.
    static let lifetime = Duration.seconds(300)

    init(count: Int, logger: Logger) {
        self.count = count
        self.logger = logger
    }

    /// Hands `assignment` to a ready call; false when none is ready (the caller opens a call of its own).
    func hand(_ assignment: Assignment) -> Bool {
        while let ready = ready.withLock({ $0.calls.isEmpty ? nil : $0.calls.removeFirst() }) {
            if case .enqueued = ready.call.yield(assignment) { return true }
        }
        return false
    }

    /// Keeps `count` warm calls open on `line` until cancelled; `fallback` carries, on a call of its own, a
    /// connection a warm call could not (it ended as the connection was handed to it: nothing was sent).
    func keep<Line: Orrery_Orchestrator_V1_AgentChannel.ClientProtocol>(
        over line: Line, fallback: @escaping @Sendable (Assignment) async -> Void
    ) async {
        await CallsAhead.keep(count: count) { used in
            await self.warmCall(over: line, used: used, fallback: fallback)
        }
    }

    /// One warm call: ready once open, it carries the connection handed to it until either side ends.
    private func warmCall<Line: Orrery_Orchestrator_V1_AgentChannel.ClientProtocol>(
        over line: Line, used: @escaping @Sendable () -> Void,
        fallback: @escaping @Sendable (Assignment) async -> Void
    ) async {
        let (assignments, assign) = AsyncStream<Assignment>.makeStream()
        // The call's writer, handed from its request side to its response side, which carries the connection and
        // hands the sandbox's bytes back to the request side to carry; the requests end when those bytes do.
        let (writers, giveWriter) = AsyncStream<RPCWriter<Frame>>.makeStream()
        let handoff = SandboxTunnels.BytesHandoff()
        let id = ready.withLock { state in
            defer { state.next += 1 }
            return state.next
        }
        let expiry = Task {
            try await Task.sleep(for: Self.lifetime)
            self.withdraw(id)
            assign.finish()
        }
        defer { expiry.cancel() }
        do {
            try await line.peerTunnel(
                requestProducer: { writer in
                    defer {
                        giveWriter.finish()
                        handoff.requestSideEnded()
                    }
                    giveWriter.yield(writer)
                    giveWriter.finish()
                    try await handoff.carry(to: writer)
                },
                onResponse: { response in
                    defer { handoff.cancel() }
                    var handed = writers.makeAsyncIterator()
                    guard let writer = await handed.next() else { return }
                    self.ready.withLock { $0.calls.append(Ready(id: id, call: assign)) }
                    var next = assignments.makeAsyncIterator()
                    guard let assignment = await next.next() else { return }
                    used()
                    do {
                        try await Self.carry(
                            assignment, writer: writer, frames: response.messages, handoff: handoff,
                            fallback: fallback)
                    } catch {
                        // As for a connection on a call of its own: why it ended (the orchestrator's refusal).
                        let peer = assignment.first.peer
                        self.logger.info(
                            "an ensemble connection ended",
                            metadata: [
                                "offer": "\(peer.offerID)", "partner": "\(peer.allocation):\(peer.port)",
                                "error": "\(error)",
                            ])
                    }
                })
        } catch {
            logger.debug("a warm partner call ended", metadata: ["error": "\(error)"])
        }
        withdraw(id)
        assign.finish()
        // A connection handed to it just as it ended, never taken: carried on a call of its own.
        for await left in assignments { await fallback(left) }
    }

    private func withdraw(_ id: UInt64) {
        ready.withLock { $0.calls.removeAll { $0.id == id } }
    }

    /// Carries `assignment` over the call: its first frame, then the sandbox's bytes; the call's data to the
    /// socket. When the first frame cannot be written (the call is gone), nothing was sent: `fallback` carries it.
    private static func carry(
        _ assignment: Assignment, writer: RPCWriter<Frame>, frames: RPCAsyncSequence<Frame, any Error>,
        handoff: SandboxTunnels.BytesHandoff, fallback: @escaping @Sendable (Assignment) async -> Void
    ) async throws {
        do {
            try await writer.write(assignment.first)
        } catch {
            await fallback(assignment)
            return
        }
        var frames = frames.makeAsyncIterator()
        try await assignment.connection.executeThenClose { inbound, outbound in
            try await SandboxTunnels.carry(
                inbound: inbound, outbound: outbound, of: assignment.connection.channel, frames: &frames,
                handoff: handoff)
        }
    }
}
