#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import NIOSSL

/// A minimal HTTP/1.1 client over SwiftNIO: one request per connection, plain or TLS (system trust roots), a
/// deadline, a bounded response body. Enough for a chain node's JSON-RPC or a Cardano submit endpoint.
public enum HTTPClient {
    public struct Response: Sendable {
        public let status: Int
        public let body: [UInt8]
    }

    public enum Failure: Error, CustomStringConvertible {
        case badURL(String)
        case connection(String)
        case timedOut(String)
        case tooLarge(Int)
        /// The connection reached an address the client's `AddressPolicy` forbids.
        case refusedAddress(String)

        public var description: String {
            switch self {
            case .badURL(let url): "not an http(s) URL: \(url)"
            case .connection(let why): "HTTP connection failed: \(why)"
            case .timedOut(let url): "no answer from \(url) in time"
            case .tooLarge(let limit): "the response is larger than \(limit) bytes"
            case .refusedAddress(let why): why
            }
        }
    }

    /// The largest response body read.
    public static let maximumBody = 16 << 20

    /// POSTs `body` to `url` and returns the response.
    public static func post(
        _ url: URL, body: [UInt8], contentType: String, timeout: Duration = .seconds(10)
    ) async throws -> Response {
        guard let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", let host = url.host else {
            throw Failure.badURL(url.absoluteString)
        }
        let tls = scheme == "https"
        let port = url.port ?? (tls ? 443 : 80)
        var path = url.path.isEmpty ? "/" : url.path
        if let query = url.query { path += "?" + query }
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: Response.self)
        let sslContext = tls ? try NIOSSLContext(configuration: .makeClientConfiguration()) : nil
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(Int64(timeout / .nanoseconds(1))))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        let handler = try NIOSSLClientHandler(context: sslContext, serverHostname: host)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw Failure.connection("\(host):\(port): \(error)")
        }
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: url.port.map { "\(host):\($0)" } ?? host)
        head.headers.add(name: "Content-Type", value: contentType)
        head.headers.add(name: "Content-Length", value: String(body.count))
        head.headers.add(name: "Connection", value: "close")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout / .nanoseconds(1)))) {
            promise.fail(Failure.timedOut(url.absoluteString))
            channel.close(promise: nil)
        }
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        return try await promise.futureResult.get()
    }
}

/// Collects one response and completes the promise; a closed connection before the end fails it.
private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<HTTPClient.Response>
    private var status = 0
    private var body: [UInt8] = []
    private var done = false

    init(promise: EventLoopPromise<HTTPClient.Response>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(var buffer):
            guard body.count + buffer.readableBytes <= HTTPClient.maximumBody else {
                finish(.failure(HTTPClient.Failure.tooLarge(HTTPClient.maximumBody)))
                context.close(promise: nil)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end: finish(.success(HTTPClient.Response(status: status, body: body)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(HTTPClient.Failure.connection("closed before the response ended")))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(HTTPClient.Failure.connection("\(error)")))
        context.close(promise: nil)
    }

    private func finish(_ result: Result<HTTPClient.Response, any Error>) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
    }
}
