internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
public import Prometheus

/// A small HTTP/1.1 listener for `/metrics` (Prometheus text) and `/healthz` over SwiftNIO alone, for a process
/// that needs no HTTP framework (the device agent, on loopback). Each response closes its connection; a connection
/// that sends nothing for 30 s is closed.
public final class OperationsEndpoint: Sendable {
    private let channel: any Channel

    /// The port bound (the one asked for, or the system's choice for 0).
    public let port: Int

    /// Binds `host:port` and serves until `close()`.
    public init(host: String, port: Int, metrics: PrometheusCollectorRegistry, health: HealthStatusBook) async throws {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(IdleStateHandler(readTimeout: .seconds(30)))
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandler(OperationsHandler(metrics: metrics, health: health))
                }
            }
        channel = try await bootstrap.bind(host: host, port: port).get()
        self.port = channel.localAddress?.port ?? port
    }

    /// Stops listening.
    public func close() async {
        try? await channel.close()
    }
}

/// Answers one request per connection: GET `/metrics` and `/healthz`, 405 for another method on them, 404 otherwise.
private final class OperationsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let metrics: PrometheusCollectorRegistry
    private let health: HealthStatusBook
    private var head: HTTPRequestHead?

    init(metrics: PrometheusCollectorRegistry, health: HealthStatusBook) {
        self.metrics = metrics
        self.health = health
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request): head = request
        case .body: break
        case .end:
            guard let request = head else { return }
            head = nil
            respond(to: request, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        var headers = HTTPHeaders([("Connection", "close")])
        let status: HTTPResponseStatus
        var body: [UInt8]
        switch (path, request.method) {
        case ("/metrics", .GET):
            status = .ok
            body = []
            metrics.emit(into: &body)
            headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
        case ("/healthz", .GET):
            let serving = health.overallStatus == .serving
            status = serving ? .ok : .serviceUnavailable
            body = Array((serving ? "ok\n" : "not serving\n").utf8)
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        case ("/metrics", _), ("/healthz", _):
            status = .methodNotAllowed
            body = Array("\(path) answers GET only\n".utf8)
            headers.add(name: "Allow", value: "GET")
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        default:
            status = .notFound
            body = Array("not found: this listener serves /metrics and /healthz\n".utf8)
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        }
        headers.add(name: "Content-Length", value: String(body.count))
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
