internal import NIOCore
internal import NIOHPACK
internal import NIOHTTP2

/// Refuses a gRPC request message larger than `limit` with the status a client can act on — RESOURCE_EXHAUSTED and
/// a message saying the sizes — instead of the reset stream (CANCELLED) the transport answers with. It sits first on
/// each HTTP/2 stream, reads the 5-byte prefix of every message as DATA frames pass, and answers on its own before the
/// oversized message reaches the gRPC handler; nothing of that message is buffered.
final class MessageSizeGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let limit: Int
    /// The prefix of the message being read, while it is incomplete.
    private var prefix: [UInt8] = []
    /// Bytes of the current message still to pass.
    private var remaining = 0
    private var responseStarted = false
    private var refused = false

    init(limit: Int) {
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if refused { return }
        if case .data(let frame) = unwrapInboundIn(data), case .byteBuffer(var buffer) = frame.data {
            while buffer.readableBytes > 0 {
                if remaining > 0 {
                    let skipped = min(remaining, buffer.readableBytes)
                    buffer.moveReaderIndex(forwardBy: skipped)
                    remaining -= skipped
                    continue
                }
                let taken = min(5 - prefix.count, buffer.readableBytes)
                prefix += buffer.readBytes(length: taken) ?? []
                guard prefix.count == 5 else { break }
                let length = prefix[1...4].reduce(0) { $0 << 8 | Int($1) }
                prefix = []
                guard length <= limit else {
                    refuse(context, length: length)
                    return
                }
                remaining = length
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .headers = unwrapOutboundIn(data) { responseStarted = true }
        context.write(data, promise: promise)
    }

    private func refuse(_ context: ChannelHandlerContext, length: Int) {
        refused = true
        var headers = HPACKHeaders()
        if !responseStarted {
            headers.add(name: ":status", value: "200")
            headers.add(name: "content-type", value: "application/grpc")
        }
        headers.add(name: "grpc-status", value: "8")
        headers.add(name: "grpc-message", value: "a request message of \(length) bytes is larger than the limit of \(limit) bytes")
        context.write(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
        // The response is complete: NO_ERROR tells the client to stop sending the rest (RFC 9113 §8.1), where a
        // plain close would reset the stream as cancelled.
        context.writeAndFlush(wrapOutboundOut(.rstStream(.noError)), promise: nil)
        context.close(promise: nil)
    }
}
