#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import Logging
internal import NIOCore
internal import NIOPosix
internal import OrreryActors

/// The Unix socket in an allocation's sandbox (`ORRERY_MAILBOX`) through which its workload sends and receives
/// envelopes: newline-delimited JSON (`MailboxLine`), each request answered on its connection in order. A bad
/// line is answered `refused` with the reason, and the connection stays open.
final class MailboxServer: Sendable {
    private let channel: any Channel
    let path: String

    /// Binds `path` (replacing a stale socket file) and serves each connection with `host`.
    static func start(path: String, host: ActorHost, logger: Logger) async throws -> MailboxServer {
        unlink(path)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LineFrameDecoder(limit: MailboxLine.maximumLength)))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        // The sandbox runs as another user: it must be allowed to connect.
        chmod(path, 0o777)
        let server = MailboxServer(channel: channel.channel, path: path)
        Task {
            try? await channel.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask { await serve(connection, host: host, logger: logger) }
                    }
                }
            }
        }
        return server
    }

    private init(channel: any Channel, path: String) {
        self.channel = channel
        self.path = path
    }

    func close() {
        channel.close(promise: nil)
        unlink(path)
    }

    private static func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, host: ActorHost, logger: Logger)
        async
    {
        do {
            try await connection.executeThenClose { inbound, outbound in
                for try await frame in inbound {
                    let text = String(buffer: frame)
                    let answer: MailboxLine
                    switch Result(catching: { () throws(MailboxLine.Invalid) in try MailboxLine.request(text) }) {
                    case .success(let request): answer = await host.handle(request)
                    case .failure(let invalid):
                        answer = MailboxLine(op: "refused", id: Self.id(in: text), reason: invalid.reason)
                    }
                    do {
                        try await outbound.write(ByteBuffer(string: answer.encoded))
                    } catch {
                        // The workload hung up before it got the line: it is offered again.
                        if answer.op == "message" || answer.op == "checkpoint" { await host.requeue(answer) }
                        throw error
                    }
                    if answer.op == "message" { await host.handedOver(answer) }
                }
            }
        } catch {
            logger.debug("mailbox connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// The request's id, when a refused line still has one to answer to.
    private static func id(in text: String) -> String? {
        struct Identified: Decodable { var id: String? }
        return (try? JSONDecoder().decode(Identified.self, from: Data(text.utf8)))?.id
    }
}

/// Splits a byte stream into lines (without the newline), refusing a line longer than `limit`.
struct LineFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let limit: Int

    struct TooLong: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > limit { throw TooLong() }
            return .needMoreData
        }
        let length = newline - buffer.readerIndex
        guard let line = buffer.readSlice(length: length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 1)
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}
