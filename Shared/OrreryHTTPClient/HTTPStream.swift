#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
public import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import NIOSSL

/// Which certificates an HTTPS server's chain must end in.
public enum TLSTrust: Sendable, Equatable {
    /// The system's trust roots.
    case system
    /// The certificates in a PEM file (a private registry's CA).
    case caFile(String)
}

/// A response's status line and headers.
public struct HTTPResponseHead: Sendable {
    public let status: Int
    public let headers: [(name: String, value: String)]

    /// The first value of a header, by case-insensitive name.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Every value of a header, by case-insensitive name (`WWW-Authenticate` may come more than once).
    public func headers(_ name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }
}

/// A request body of a known length written chunk by chunk as the connection takes it (a large upload never sits
/// in memory).
public struct HTTPRequestBody: Sendable {
    /// Sent as Content-Length: exactly this many bytes must be written.
    public var length: Int64
    /// Writes the body by calling `write` with each chunk in order.
    public var produce: @Sendable (_ write: (ByteBuffer) async throws -> Void) async throws -> Void

    public init(
        length: Int64, produce: @escaping @Sendable (_ write: (ByteBuffer) async throws -> Void) async throws -> Void
    ) {
        self.length = length
        self.produce = produce
    }
}

/// A response body read chunk by chunk, as the server sends it: reading no faster than the reader keeps the
/// connection's back-pressure (a large blob never sits in memory).
public final class HTTPBodyStream {
    private var iterator: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    private var ended = false

    init(_ iterator: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator) {
        self.iterator = iterator
    }

    /// The next chunk; nil once the response has ended.
    /// - Throws: `HTTPClient.Failure.connection` when the connection closes (or goes idle) before the end.
    public func next() async throws -> ByteBuffer? {
        guard !ended else { return nil }
        switch try await iterator.next() {
        case .body(let buffer): return buffer
        case .end:
            ended = true
            return nil
        case .head: throw HTTPClient.Failure.connection("a second response head in one response")
        case nil: throw HTTPClient.Failure.connection("the connection closed before the response ended")
        }
    }

    /// The whole body, refused when longer than `limit` bytes.
    public func collect(limit: Int) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        while var chunk = try await next() {
            guard bytes.count + chunk.readableBytes <= limit else { throw HTTPClient.Failure.tooLarge(limit) }
            bytes += chunk.readBytes(length: chunk.readableBytes) ?? []
        }
        return bytes
    }
}

extension HTTPClient {
    /// Sends one request (`Connection: close`, with `body` when given) and hands the response's head and body to
    /// `read`, which returns what the caller keeps. The connection is closed when `read` returns or throws.
    /// - Parameters:
    ///   - idleTimeout: the longest wait for any byte of the response; a stalled server fails the read rather than
    ///     holding it forever, however long a large body legitimately takes.
    public static func stream<Result>(
        method: String = "GET", _ url: URL, headers: [(String, String)] = [], trust: TLSTrust = .system,
        connectTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(30), addresses: AddressPolicy = .any,
        body: HTTPRequestBody? = nil, _ read: (HTTPResponseHead, HTTPBodyStream) async throws -> Result
    ) async throws -> Result {
        guard let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", let host = url.host,
            !host.isEmpty
        else { throw Failure.badURL(url.absoluteString) }
        let tls = scheme == "https"
        let port = url.port ?? (tls ? 443 : 80)
        var path = url.path.isEmpty ? "/" : url.path
        if let query = url.query { path += "?" + query }
        let sslContext: NIOSSLContext?
        if tls {
            var configuration = TLSConfiguration.makeClientConfiguration()
            if case .caFile(let file) = trust { configuration.trustRoots = .file(file) }
            sslContext = try NIOSSLContext(configuration: configuration)
        } else {
            sslContext = nil
        }
        // An IP address is not sent as SNI; the certificate is checked against the address connected to.
        let serverName = isIPAddress(host) ? nil : host
        let idle = TimeAmount.nanoseconds(Int64(idleTimeout / .nanoseconds(1)))
        let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.nanoseconds(Int64(connectTimeout / .nanoseconds(1))))
                .connect(host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host, port: port) {
                    channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let sslContext {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idle))
                        try channel.pipeline.syncOperations.addHandler(CloseWhenIdle())
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                            wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw Failure.connection("\(host):\(port): \(error)")
        }
        // From here on the channel is given up only through `executeThenClose`, which finishes its writer: an
        // `NIOAsyncChannel` dropped with its writer open is a fatal error in NIO.
        let refusal = addresses.refusal(channel.channel.remoteAddress)
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path)
        // A caller's own Host (a name served at the address connected to) replaces the URL's.
        if !headers.contains(where: { $0.0.lowercased() == "host" }) {
            head.headers.add(name: "Host", value: url.port.map { "\(host):\($0)" } ?? host)
        }
        head.headers.add(name: "User-Agent", value: "orrery")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body { head.headers.add(name: "Content-Length", value: String(body.length)) }
        head.headers.add(name: "Connection", value: "close")
        let requestHead = head
        return try await channel.executeThenClose { inbound, outbound in
            if let refusal {
                throw Failure.refusedAddress(
                    "\(host):\(port): \(refusal), and this client connects only to public addresses")
            }
            if let body {
                do {
                    try await outbound.write(.head(requestHead))
                } catch {
                    // The server closed the connection before the request went out (a restart, an overloaded server).
                    throw Failure.connection("\(host):\(port): sending the request: \(error)")
                }
                do {
                    try await body.produce { try await outbound.write(.body(.byteBuffer($0))) }
                } catch let error as CancellationError {
                    throw error
                } catch {
                    throw Failure.connection("\(host):\(port): sending the body: \(error)")
                }
                do {
                    try await outbound.write(.end(nil))
                } catch {
                    throw Failure.connection("\(host):\(port): ending the request: \(error)")
                }
            } else {
                // No body: the head and its end in one write. Written apart, a server that answers and closes as
                // soon as it has read the head (busybox httpd does) can close the connection under the end's write.
                do {
                    try await outbound.write(contentsOf: [.head(requestHead), .end(nil)])
                } catch {
                    // The server closed the connection before the request went out (a restart, an overloaded server).
                    throw Failure.connection("\(host):\(port): sending the request: \(error)")
                }
            }
            var iterator = inbound.makeAsyncIterator()
            let response: HTTPResponseHead
            do {
                guard case .head(let received) = try await iterator.next() else {
                    throw Failure.connection("\(host):\(port) closed the connection without answering")
                }
                response = HTTPResponseHead(
                    status: Int(received.status.code), headers: received.headers.map { ($0.name, $0.value) })
            } catch let failure as Failure {
                throw failure
            } catch {
                throw Failure.connection("\(host):\(port): \(error)")
            }
            return try await read(response, HTTPBodyStream(iterator))
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        host.contains(":") || host.split(separator: ".").count == 4 && host.allSatisfy { $0.isNumber || $0 == "." }
    }
}

/// Closes a connection on which nothing arrived for the idle time (`IdleStateHandler`'s event).
private final class CloseWhenIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias InboundOut = HTTPClientResponsePart

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
