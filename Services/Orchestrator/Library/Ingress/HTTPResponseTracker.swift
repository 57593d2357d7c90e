internal import NIOCore

/// Follows the responses a service sends back on one ingress connection, in the order their requests were
/// forwarded, without changing a byte: where each ends (so the ingress can answer a request itself only after every
/// earlier response went out), and whether an upgrade request was switched (101) — after which both directions are
/// an opaque byte stream (WebSocket).
struct HTTPResponseTracker {
    struct Request: Equatable {
        var method: String
        var upgrade: Bool
    }

    private enum State {
        case head(ByteBuffer)
        case body(HTTPBodyFramer)
        case switched
    }

    /// Requests forwarded and not yet answered in full, oldest first.
    private(set) var pending: [Request] = []
    private var state: State = .head(ByteBuffer())
    /// The answer to the upgrade request that was forwarded last: nil until its final head arrived.
    private(set) var upgradeAccepted: Bool?
    /// The connection carries opaque bytes both ways since a 101.
    var isSwitched: Bool {
        if case .switched = state { return true }
        return false
    }
    /// The last response (if any) ended and none is under way.
    var isIdle: Bool {
        guard pending.isEmpty, case .head(let partial) = state else { return false }
        return partial.readableBytes == 0
    }
    /// A response ends only when the service closes: an `untilClose` body is being sent.
    private(set) var endsAtClose = false

    mutating func expect(_ request: Request) {
        pending.append(request)
        if request.upgrade { upgradeAccepted = nil }
    }

    /// Takes what the service sent and returns the bytes to pass on to the client: everything, except a head still
    /// incomplete (held until its empty line arrives).
    mutating func consume(_ incoming: ByteBuffer) throws(HTTPFramingError) -> ByteBuffer {
        var input = incoming
        var output = ByteBuffer()
        while input.readableBytes > 0 {
            switch state {
            case .switched:
                output.writeBuffer(&input)
            case .body(var framer):
                var slice = try framer.take(from: &input)
                output.writeBuffer(&slice)
                if framer.isDone {
                    state = .head(ByteBuffer())
                    pending.removeFirst()
                } else {
                    state = .body(framer)
                }
            case .head(var partial):
                partial.writeBuffer(&input)
                guard let head = try HTTPMessageHead.take(from: &partial) else {
                    state = .head(partial)
                    break
                }
                guard let request = pending.first else {
                    throw HTTPFramingError(status: 502, description: "the service sent a response nobody asked for")
                }
                guard head.first == "HTTP/1.1" || head.first == "HTTP/1.0" else {
                    throw HTTPFramingError(status: 502, description: "the service answered in \(head.first.prefix(16))")
                }
                head.write(to: &output)
                // What followed the head is the body's (or the next response's): read on.
                input = partial
                guard let length = try head.responseBodyLength(toMethod: request.method) else {
                    // An interim response (100 Continue): the final one follows.
                    state = .head(ByteBuffer())
                    continue
                }
                let switching = head.second == "101"
                if switching && !request.upgrade {
                    throw HTTPFramingError(status: 502, description: "the service switched protocols unasked")
                }
                if request.upgrade { upgradeAccepted = switching }
                if switching {
                    pending.removeFirst()
                    state = .switched
                    continue
                }
                endsAtClose = length == .untilClose
                let framer = HTTPBodyFramer(length)
                if framer.isDone {
                    pending.removeFirst()
                    state = .head(ByteBuffer())
                } else {
                    state = .body(framer)
                }
            }
        }
        return output
    }
}
