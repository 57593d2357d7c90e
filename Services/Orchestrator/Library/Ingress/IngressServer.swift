internal import Foundation
internal import Logging
internal import NIOCore
internal import NIOHTTP1
internal import NIOHTTP2
internal import NIOPosix
internal import NIOSSL
internal import OrreryRuntime
internal import Synchronization

/// The ingress's listener: HTTP (or HTTPS with the operator's certificate) on its own address, each connection
/// served by an `IngressConnection`. Connections past `maximumConnections`, or past a client address's share, are
/// closed as they arrive; one idle for the idle limit (no byte either way) is closed.
struct IngressServer: Sendable {
    let proxy: IngressProxy
    let address: IngressAddress
    let logger: Logger
    /// Connections open at once through this listener.
    static let maximumConnections = 10_000

    /// Listens until cancelled.
    func run() async throws {
        let settings = proxy.settings
        let tls = try settings.tls.map { files in
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(files.certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem)))
            configuration.applicationProtocols = ["h2", "http/1.1"]
            return try NIOSSLContext(configuration: configuration)
        }
        let idle = TimeAmount.seconds(settings.idleTimeout.components.seconds)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: settings.host, port: settings.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: idle))
                    try channel.pipeline.syncOperations.addHandler(IdleCloser())
                    let sniffer = IngressProtocolSniffer(
                        promise: channel.eventLoop.makePromise(),
                        http1: { channel in
                            try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                                wrappingChannelSynchronously: channel,
                                configuration: .init(isOutboundHalfClosureEnabled: true))
                        },
                        http2: { channel in
                            try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .server) { stream in
                                stream.eventLoop.makeCompletedFuture {
                                    try stream.pipeline.syncOperations.addHandler(
                                        HTTP2FramePayloadToHTTP1ServerCodec())
                                    return try IngressHTTP2.Stream(wrappingChannelSynchronously: stream)
                                }
                            }
                        })
                    try channel.pipeline.syncOperations.addHandler(sniffer)
                    return Accepted(channel: channel, negotiated: sniffer.negotiated)
                }
            }
        let port = server.channel.localAddress?.port ?? settings.port
        address.listening(on: port)
        logger.info(
            "ingress listening",
            metadata: [
                "address": "\(settings.host):\(port)", "domain": "\(settings.domain)",
                "tls": "\(settings.tls != nil)",
            ])
        let open = OpenConnections()
        let secure = tls != nil
        try await withTaskCancellationHandler {
            try await server.executeThenClose { connections in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await connection in connections {
                            guard open.admit(limit: Self.maximumConnections) else {
                                await connection.refuse()
                                continue
                            }
                            // The connection's task runs on its channel's event loop: its bytes reach it, and its
                            // writes go out, without waking another thread.
                            let loop = ConnectionLoops.executor(for: connection.channel.eventLoop)
                            group.addTask(executorPreference: loop) {
                                defer { open.release() }
                                await serve(connection, secure: secure)
                            }
                        }
                    } catch {
                        logger.debug("ingress listener ended", metadata: ["error": "\(error)"])
                    }
                    group.cancelAll()
                }
            }
        } onCancel: {
            server.channel.close(promise: nil)
        }
    }

    private func serve(_ accepted: Accepted, secure: Bool) async {
        let remote = accepted.channel.remoteAddress
        let client = remote?.ipAddress ?? "unknown"
        guard proxy.limits.admitClient(client) else {
            await accepted.refuse()
            return
        }
        defer { proxy.limits.releaseClient(client) }
        let port = remote?.port ?? 0
        let peer = remote?.protocol == .inet6 ? "ipv6:[\(client)]:\(port)" : "ipv4:\(client):\(port)"
        let connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        switch try? await accepted.negotiated.get() {
        case .http1(let http1)?: connection = http1
        case .http2(let multiplexer)?:
            await serve(multiplexer, channel: accepted.channel, client: client, peer: peer, secure: secure)
            return
        case nil: return
        }
        do {
            try await connection.executeThenClose { inbound, outbound in
                let handler = IngressConnection(
                    proxy: proxy, channel: connection.channel, outbound: outbound, client: client, peer: peer,
                    secure: secure)
                await withTaskCancellationHandler {
                    await handler.run(inbound)
                } onCancel: {
                    connection.channel.close(promise: nil)
                }
            }
        } catch {
            logger.debug("ingress connection ended", metadata: ["error": "\(error)"])
        }
    }
}

extension IngressServer {
    /// An HTTP/2 connection: each stream served on its own (at most the connection's stream limit at once), until the
    /// client or the idle limit closes it.
    fileprivate func serve(
        _ multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<IngressHTTP2.Stream>, channel: any Channel,
        client: String, peer: String, secure: Bool
    ) async {
        let proxy = proxy
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                do {
                    for try await stream in multiplexer.inbound {
                        group.addTask(executorPreference: ConnectionLoops.executor(for: stream.channel.eventLoop)) {
                            await IngressHTTP2.serve(stream, proxy: proxy, client: client, peer: peer, secure: secure)
                        }
                    }
                } catch {
                    logger.debug("an HTTP/2 ingress connection ended", metadata: ["error": "\(error)"])
                }
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

/// A connection as accepted: its channel, and what it speaks once its first bytes told.
private struct Accepted: Sendable {
    let channel: any Channel
    let negotiated: EventLoopFuture<IngressProtocolSniffer.Negotiated>

    /// Closes a connection turned away. What it negotiated meanwhile is given up through `executeThenClose` (NIO
    /// traps on an async channel dropped with its writer open).
    func refuse() async {
        try? await channel.close()
        switch try? await negotiated.get() {
        case .http1(let connection)?: try? await connection.executeThenClose { _, _ in }
        case .http2(let multiplexer)?:
            do {
                for try await stream in multiplexer.inbound { try? await stream.executeThenClose { _, _ in } }
            } catch {}
        case nil: break
        }
    }
}

/// How many connections the listener has open.
private final class OpenConnections: Sendable {
    private let count = Mutex(0)

    func admit(limit: Int) -> Bool {
        count.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func release() { count.withLock { $0 -= 1 } }
}

/// Closes a connection on which nothing moved for the idle limit.
private final class IdleCloser: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
