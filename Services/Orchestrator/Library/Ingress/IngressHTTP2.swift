internal import Foundation
internal import Logging
internal import NIOCore
internal import NIOHTTP1
internal import NIOHTTP2
internal import Synchronization

/// HTTP/2 through the ingress (ALPN `h2` over TLS, or prior knowledge over plain TCP). Each stream is one request:
/// it is written as HTTP/1.1 (`Connection: close`) to an `IngressConnection` of its own — the same routing,
/// authorisation, header rewriting and limits as every HTTP/1.1 request — and the service's HTTP/1.1 response is
/// read back into the stream: its head, its body as it comes (chunked bodies unchunked), its chunked trailers as
/// the stream's trailers. Streams are independent: one whose client reads slowly holds back only its own tunnel.
enum IngressHTTP2 {
    /// A stream as the ingress serves it: HTTP/1-shaped parts, the HTTP/2 framing done by NIO.
    typealias Stream = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    /// Serves one stream until its response ended (or either side reset it).
    static func serve(_ stream: Stream, proxy: IngressProxy, client: String, peer: String, secure: Bool) async {
        do {
            try await stream.executeThenClose { inbound, outbound in
                let response = IngressHTTP2Response(outbound)
                let connection = IngressConnection(
                    proxy: proxy, channel: stream.channel, outbound: response, client: client, peer: peer,
                    secure: secure)
                let request = IngressHTTP1RequestBytes(inbound) {
                    response.requested($0)
                } onEnd: {
                    response.requestEnded()
                }
                await connection.run(request)
                try await response.complete()
                // A request not read to its end (refused, or the service stopped reading) is reset at once, as
                // before.
                if response.isRequestEnded {
                    await Self.untilClosed(stream.channel, within: proxy.settings.idleTimeout)
                }
            }
        } catch {
            proxy.logger.debug("an HTTP/2 stream through the ingress ended", metadata: ["error": "\(error)"])
        }
    }
}

extension IngressHTTP2 {
    /// Waits until a stream whose request and response ended closes by itself — once our end went out — or, past
    /// `limit` (a client that does not read it), closes it. Closing it sooner (as `executeThenClose` does) resets it
    /// (RST_STREAM CANCEL), and a reset overtakes the stream's last frames while they still wait in the connection's
    /// buffers: the client then sees the response cancelled instead of ended.
    static func untilClosed(_ channel: any Channel, within limit: Duration) async {
        let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(limit)) { channel.close(promise: nil) }
        try? await channel.closeFuture.get()
        deadline.cancel()
    }
}

/// A stream's request as HTTP/1.1 bytes, read from its parts as they are asked for (so a service that reads slowly
/// holds the client back): the head (`Connection: close`; `Transfer-Encoding: chunked` unless it states its length
/// or has no body), then the body, then the chunked end with the stream's trailers.
struct IngressHTTP1RequestBytes<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable
where Base.Element == HTTPServerRequestPart {
    typealias Element = ByteBuffer

    let base: Base
    /// Told the request's method once its head is read (the response to HEAD has no body).
    let onMethod: @Sendable (String) -> Void
    /// Told when the stream's end (the client's END_STREAM) was read.
    let onEnd: @Sendable () -> Void

    init(
        _ base: Base, onMethod: @escaping @Sendable (String) -> Void, onEnd: @escaping @Sendable () -> Void = {}
    ) {
        self.base = base
        self.onMethod = onMethod
        self.onEnd = onEnd
    }

    func makeAsyncIterator() -> Iterator {
        Iterator(parts: base.makeAsyncIterator(), onMethod: onMethod, onEnd: onEnd)
    }

    struct Iterator: AsyncIteratorProtocol {
        var parts: Base.AsyncIterator
        let onMethod: @Sendable (String) -> Void
        let onEnd: @Sendable () -> Void
        private var chunked = false
        private var ended = false

        init(
            parts: Base.AsyncIterator, onMethod: @escaping @Sendable (String) -> Void,
            onEnd: @escaping @Sendable () -> Void
        ) {
            self.parts = parts
            self.onMethod = onMethod
            self.onEnd = onEnd
        }

        mutating func next() async throws -> ByteBuffer? {
            guard !ended else { return nil }
            guard let part = try await parts.next() else {
                // The stream ended without its end (a reset): nothing more; the connection sees the request cut.
                ended = true
                return nil
            }
            switch part {
            case .head(let head):
                onMethod(head.method.rawValue)
                var bytes = ByteBuffer()
                var fields = head.headers.filter {
                    !["transfer-encoding", "connection", "keep-alive", "te", "upgrade"].contains($0.name.lowercased())
                }
                let declaresLength = head.headers.contains(name: "content-length")
                // Without a stated length, the next part says whether a body comes at all.
                var following: ByteBuffer?
                var endsNow = false
                if !declaresLength {
                    switch try await parts.next() {
                    case .end(let trailers)?:
                        endsNow = true
                        onEnd()
                        if let trailers, !trailers.isEmpty {
                            chunked = true
                            following = Self.lastChunk(trailers)
                        }
                    case .body(let body)?:
                        chunked = true
                        following = Self.chunk(body)
                    case .head?, nil:
                        ended = true
                        return nil
                    }
                }
                if chunked { fields.append((name: "Transfer-Encoding", value: "chunked")) }
                fields.append((name: "Connection", value: "close"))
                bytes.writeString("\(head.method.rawValue) \(head.uri) HTTP/1.1\r\n")
                for (name, value) in fields { bytes.writeString("\(name): \(value)\r\n") }
                bytes.writeString("\r\n")
                if var following { bytes.writeBuffer(&following) }
                if endsNow { ended = true }
                return bytes
            case .body(let body):
                return chunked ? Self.chunk(body) : body
            case .end(let trailers):
                ended = true
                onEnd()
                guard chunked else { return nil }
                return Self.lastChunk(trailers ?? HTTPHeaders())
            }
        }

        static func chunk(_ body: ByteBuffer) -> ByteBuffer {
            var bytes = ByteBuffer()
            guard body.readableBytes > 0 else { return bytes }
            bytes.writeString(String(body.readableBytes, radix: 16) + "\r\n")
            var body = body
            bytes.writeBuffer(&body)
            bytes.writeString("\r\n")
            return bytes
        }

        static func lastChunk(_ trailers: HTTPHeaders) -> ByteBuffer {
            var bytes = ByteBuffer()
            bytes.writeString("0\r\n")
            for (name, value) in trailers { bytes.writeString("\(name): \(value)\r\n") }
            bytes.writeString("\r\n")
            return bytes
        }
    }
}

/// The HTTP/1.1 response an `IngressConnection` writes for one stream, read into that stream's parts as it comes.
/// It ends the stream only once the response is whole; a response cut short leaves the stream to be reset.
final class IngressHTTP2Response: IngressClientOutput {
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    private let reader = Mutex(IngressHTTP1ResponseReader())

    init(_ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) { self.outbound = outbound }

    /// The request's method, for the response's framing.
    func requested(_ method: String) { reader.withLock { $0.method = method } }

    private let requestEnd = Mutex(false)
    /// The client's end of the request was read.
    func requestEnded() { requestEnd.withLock { $0 = true } }
    var isRequestEnded: Bool { requestEnd.withLock { $0 } }

    func write(_ bytes: ByteBuffer) async throws {
        let parts = try reader.withLock { reader throws(HTTPFramingError) in try reader.consume(bytes) }
        if !parts.isEmpty { try await outbound.write(contentsOf: parts) }
    }

    func finish() {}

    /// The connection is done: a response that ends where its bytes end (no length stated) ends now; the writer
    /// finishes. Throws when the response was cut short, so the stream is reset rather than ended.
    func complete() async throws {
        let end = reader.withLock { $0.close() }
        switch end {
        case .whole: outbound.finish()
        case .endsNow:
            try await outbound.write(.end(nil))
            outbound.finish()
        case .cut: throw HTTPFramingError(status: 502, description: "the service's response was cut short")
        }
    }
}

/// Reads one HTTP/1.1 response (RFC 9112) into HTTP/1-shaped parts: interim (1xx) heads skipped, the body passed
/// on unchunked, chunked trailers kept as the end's trailers.
struct IngressHTTP1ResponseReader {
    var method = "GET"
    private var buffer = ByteBuffer()
    private var state = State.head

    private enum State {
        case head
        case fixed(remaining: Int64)
        case chunkSize
        case chunkData(remaining: Int64)
        case chunkDataEnd
        case trailers
        case untilClose
        case done
    }

    /// How a response stands once the service's side closed.
    enum End: Equatable {
        case whole
        case endsNow
        case cut
    }

    /// The parts `bytes` completes.
    mutating func consume(_ bytes: ByteBuffer) throws(HTTPFramingError) -> [HTTPServerResponsePart] {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
        var parts: [HTTPServerResponsePart] = []
        while true {
            switch state {
            case .done:
                // Anything after the response (a second one) is not for this stream.
                buffer.clear()
                return parts
            case .head:
                guard let head = try HTTPMessageHead.take(from: &buffer) else { return parts }
                guard let length = try head.responseBodyLength(toMethod: method) else { continue }
                guard let status = Int(head.second), status != 101 else {
                    throw HTTPFramingError(status: 502, description: "a protocol switch answers no HTTP/2 request")
                }
                var headers = HTTPHeaders()
                for (name, value) in head.fields
                where !Self.connectionFields.contains(name.lowercased()) {
                    headers.add(name: name, value: value)
                }
                parts.append(
                    .head(HTTPResponseHead(version: .http1_1, status: .init(statusCode: status), headers: headers)))
                switch length {
                case .none, .bytes(0):
                    parts.append(.end(nil))
                    state = .done
                case .bytes(let count): state = .fixed(remaining: count)
                case .chunked: state = .chunkSize
                case .untilClose: state = .untilClose
                }
            case .fixed(let remaining):
                guard buffer.readableBytes > 0 else { return parts }
                let take = Int(min(Int64(buffer.readableBytes), remaining))
                if let slice = buffer.readSlice(length: take) { parts.append(.body(.byteBuffer(slice))) }
                if remaining - Int64(take) == 0 {
                    parts.append(.end(nil))
                    state = .done
                } else {
                    state = .fixed(remaining: remaining - Int64(take))
                }
            case .untilClose:
                guard buffer.readableBytes > 0, let slice = buffer.readSlice(length: buffer.readableBytes) else {
                    return parts
                }
                parts.append(.body(.byteBuffer(slice)))
            case .chunkSize:
                guard let line = try takeLine() else { return parts }
                let digits =
                    line.split(separator: ";", maxSplits: 1).first.map {
                        $0.trimmingCharacters(in: .whitespaces)
                    } ?? ""
                guard !digits.isEmpty, digits.count <= 15, let size = Int64(digits, radix: 16), size >= 0 else {
                    throw HTTPFramingError(status: 502, description: "a chunk size that is not hexadecimal")
                }
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                guard buffer.readableBytes > 0 else { return parts }
                let take = Int(min(Int64(buffer.readableBytes), remaining))
                if let slice = buffer.readSlice(length: take) { parts.append(.body(.byteBuffer(slice))) }
                state = remaining - Int64(take) == 0 ? .chunkDataEnd : .chunkData(remaining: remaining - Int64(take))
            case .chunkDataEnd:
                guard let line = try takeLine() else { return parts }
                guard line.isEmpty else {
                    throw HTTPFramingError(status: 502, description: "a chunk longer than its size")
                }
                state = .chunkSize
            case .trailers:
                // The trailer section ends with an empty line; its fields are a head's fields.
                var probe = ByteBuffer(string: "HTTP/1.1 200 OK\r\n")
                var rest = buffer
                probe.writeBuffer(&rest)
                guard let section = try HTTPMessageHead.take(from: &probe) else { return parts }
                buffer = probe
                var trailers = HTTPHeaders()
                for (name, value) in section.fields where !Self.connectionFields.contains(name.lowercased()) {
                    trailers.add(name: name, value: value)
                }
                parts.append(.end(trailers.isEmpty ? nil : trailers))
                state = .done
            }
        }
    }

    /// The service's side closed: where that leaves the response.
    mutating func close() -> End {
        switch state {
        case .done: return .whole
        case .untilClose:
            state = .done
            return .endsNow
        default: return .cut
        }
    }

    /// One CRLF-ended line off the buffer (without its end), nil until it is whole.
    private mutating func takeLine() throws(HTTPFramingError) -> String? {
        let view = buffer.readableBytesView
        guard let lf = view.firstIndex(of: 0x0A) else {
            if view.count > 4096 { throw HTTPFramingError(status: 502, description: "a chunk line over 4 KiB") }
            return nil
        }
        guard lf > view.startIndex, view[lf - 1] == 0x0D else {
            throw HTTPFramingError(status: 502, description: "a chunk line not ended by CRLF")
        }
        let line = String(decoding: view[view.startIndex..<(lf - 1)], as: UTF8.self)
        buffer.moveReaderIndex(forwardBy: lf - view.startIndex + 1)
        return line
    }

    /// Fields of one HTTP/1.1 connection that HTTP/2 does not carry.
    private static let connectionFields: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
    ]
}

/// Reads a connection's first bytes to tell HTTP/2 (its connection preface, RFC 9113 §3.4 — sent first by a client
/// that negotiated `h2` by ALPN as by one that assumes it) from HTTP/1.1, then sets the rest of the pipeline up for
/// it and steps aside, passing what it read on.
final class IngressProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The connection, as the protocol it speaks.
    enum Negotiated: Sendable {
        case http1(NIOAsyncChannel<ByteBuffer, ByteBuffer>)
        case http2(NIOHTTP2Handler.AsyncStreamMultiplexer<IngressHTTP2.Stream>)
    }

    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private var buffered = ByteBuffer()
    private let promise: EventLoopPromise<Negotiated>
    private let http1: (any Channel) throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer>
    private let http2: (any Channel) throws -> NIOHTTP2Handler.AsyncStreamMultiplexer<IngressHTTP2.Stream>

    /// What the connection turned out to be (failed when it closed first).
    var negotiated: EventLoopFuture<Negotiated> { promise.futureResult }

    init(
        promise: EventLoopPromise<Negotiated>,
        http1: @escaping (any Channel) throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer>,
        http2: @escaping (any Channel) throws -> NIOHTTP2Handler.AsyncStreamMultiplexer<IngressHTTP2.Stream>
    ) {
        self.promise = promise
        self.http1 = http1
        self.http2 = http2
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffered.writeBuffer(&bytes)
        let view = buffered.readableBytesView
        let seen = min(view.count, Self.preface.count)
        if !view.prefix(seen).elementsEqual(Self.preface.prefix(seen)) {
            decide(context: context, http2: false)
        } else if view.count >= Self.preface.count {
            decide(context: context, http2: true)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.eof)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise.fail(ChannelError.ioOnClosedChannel)
    }

    private func decide(context: ChannelHandlerContext, http2 isHTTP2: Bool) {
        do {
            let negotiated: Negotiated =
                isHTTP2 ? .http2(try http2(context.channel)) : .http1(try http1(context.channel))
            promise.succeed(negotiated)
        } catch {
            promise.fail(error)
            context.close(promise: nil)
            return
        }
        let bytes = buffered
        buffered = ByteBuffer()
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
