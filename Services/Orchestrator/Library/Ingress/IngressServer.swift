internal import Foundation
internal import Logging
internal import NIOCore
internal import NIOPosix
internal import NIOSSL
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
            configuration.applicationProtocols = ["http/1.1"]
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
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true))
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
                                // Closed through `executeThenClose`: NIO traps on a channel dropped with its writer open.
                                try? await connection.executeThenClose { _, _ in }
                                continue
                            }
                            group.addTask {
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

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, secure: Bool) async {
        let remote = connection.channel.remoteAddress
        let client = remote?.ipAddress ?? "unknown"
        guard proxy.limits.admitClient(client) else {
            // Closed through `executeThenClose`: NIO traps on a channel dropped with its writer open.
            try? await connection.executeThenClose { _, _ in }
            return
        }
        defer { proxy.limits.releaseClient(client) }
        let port = remote?.port ?? 0
        let peer = remote?.protocol == .inet6 ? "ipv6:[\(client)]:\(port)" : "ipv4:\(client):\(port)"
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
