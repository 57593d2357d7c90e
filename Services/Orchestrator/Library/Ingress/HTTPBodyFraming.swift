internal import NIOCore

/// How an HTTP/1.1 message body is delimited (RFC 9112 §6).
enum HTTPBodyLength: Equatable {
    case none
    case bytes(Int64)
    case chunked
    /// Until the sender closes the connection (a response only).
    case untilClose
}

/// Follows one body through its framing without changing a byte: the ingress forwards bodies as they arrive and
/// only needs to know where each ends (for chunked, by reading each chunk's size line and the trailer section).
struct HTTPBodyFramer {
    private enum State: Equatable {
        case fixed(remaining: Int64)
        case chunkSize(line: [UInt8])
        case chunkData(remaining: Int64)
        case chunkDataEnd(seen: Int)
        case trailers(lineLength: Int, total: Int, afterCR: Bool)
        case untilClose
        case done
    }

    private var state: State
    /// The longest chunk-size line (with extensions) read.
    static let maximumChunkLine = 1024
    /// The most bytes of trailer fields read.
    static let maximumTrailers = 16 << 10

    init(_ length: HTTPBodyLength) {
        switch length {
        case .none, .bytes(0): state = .done
        case .bytes(let count): state = .fixed(remaining: count)
        case .chunked: state = .chunkSize(line: [])
        case .untilClose: state = .untilClose
        }
    }

    var isDone: Bool { state == .done }

    /// Takes the body's bytes off the front of `buffer` (all of it, or up to the body's end) and returns them, as
    /// they came; `isDone` tells whether the body ended within them.
    mutating func take(from buffer: inout ByteBuffer) throws(HTTPFramingError) -> ByteBuffer {
        let start = buffer.readerIndex
        var index = start
        let end = buffer.writerIndex
        scan: while index < end {
            switch state {
            case .done:
                break scan
            case .untilClose:
                index = end
            case .fixed(let remaining):
                let step = Int(min(Int64(end - index), remaining))
                index += step
                state = remaining == Int64(step) ? .done : .fixed(remaining: remaining - Int64(step))
            case .chunkData(let remaining):
                let step = Int(min(Int64(end - index), remaining))
                index += step
                state =
                    remaining == Int64(step) ? .chunkDataEnd(seen: 0) : .chunkData(remaining: remaining - Int64(step))
            case .chunkDataEnd(let seen):
                let byte = buffer.getInteger(at: index, as: UInt8.self) ?? 0
                guard byte == (seen == 0 ? 0x0D : 0x0A) else { throw .bad("a chunk's data is not followed by CRLF") }
                index += 1
                state = seen == 0 ? .chunkDataEnd(seen: 1) : .chunkSize(line: [])
            case .chunkSize(var line):
                // The line is kept until its LF (it may come over several reads); its bytes go on as they come.
                let newline = firstLF(in: buffer, from: index, to: end)
                let stop = newline ?? end
                guard line.count + (stop - index) <= Self.maximumChunkLine else {
                    throw .bad("a chunk-size line longer than \(Self.maximumChunkLine) bytes")
                }
                line += buffer.getBytes(at: index, length: stop - index) ?? []
                guard let newline else {
                    state = .chunkSize(line: line)
                    index = end
                    break
                }
                let size = try Self.chunkSize(line)
                index = newline + 1
                state = size == 0 ? .trailers(lineLength: 0, total: 0, afterCR: false) : .chunkData(remaining: size)
            case .trailers(let lineLength, let total, let afterCR):
                let byte = buffer.getInteger(at: index, as: UInt8.self) ?? 0
                index += 1
                guard total < Self.maximumTrailers else {
                    throw HTTPFramingError(
                        status: 431, description: "trailer fields over \(Self.maximumTrailers) bytes")
                }
                if byte == 0x0A {
                    guard afterCR else { throw .bad("a trailer line ends in a bare LF") }
                    // The LF of an empty line (only its CR) ends the message.
                    state = lineLength == 1 ? .done : .trailers(lineLength: 0, total: total + 1, afterCR: false)
                } else {
                    state = .trailers(lineLength: lineLength + 1, total: total + 1, afterCR: byte == 0x0D)
                }
            }
        }
        return buffer.readSlice(length: index - start) ?? ByteBuffer()
    }

    private func firstLF(in buffer: ByteBuffer, from: Int, to: Int) -> Int? {
        buffer.withUnsafeReadableBytes { bytes in
            let offset = from - buffer.readerIndex
            return bytes[offset..<(to - buffer.readerIndex)].firstIndex(of: 0x0A).map { $0 + buffer.readerIndex }
        }
    }

    /// A chunk-size line: hex digits, optional extensions, CRLF.
    private static func chunkSize(_ line: [UInt8]) throws(HTTPFramingError) -> Int64 {
        guard line.last == 0x0D else { throw .bad("a chunk-size line ends in a bare LF") }
        let digits = line.dropLast().prefix { isHexDigit($0) }
        guard !digits.isEmpty, digits.count <= 15 else { throw .bad("a chunk size that is not 1…15 hex digits") }
        let rest = line.dropLast().dropFirst(digits.count)
        guard rest.isEmpty || rest.first == UInt8(ascii: ";") || rest.first == 0x20 || rest.first == 0x09 else {
            throw .bad("a chunk size followed by something other than an extension")
        }
        guard rest.allSatisfy({ $0 == 0x09 || (0x20...0x7E).contains($0) }) else {
            throw .bad("a chunk extension holds control characters")
        }
        return digits.reduce(Int64(0)) { $0 << 4 | Int64(hexValue($1)) }
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8 {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x37
        default: byte - 0x57
        }
    }
}

extension HTTPMessageHead {
    /// How a request's body is delimited; a request the ingress will not forward is refused with its reason.
    func requestBodyLength() throws(HTTPFramingError) -> HTTPBodyLength {
        let codings = tokens("Transfer-Encoding")
        let lengths = values("Content-Length")
        if !codings.isEmpty {
            guard lengths.isEmpty else { throw .bad("both Transfer-Encoding and Content-Length") }
            guard codings == ["chunked"] else {
                throw HTTPFramingError(
                    status: 501,
                    description: "a transfer coding other than chunked alone: \(codings.joined(separator: ", "))")
            }
            return .chunked
        }
        guard let length = try Self.contentLength(lengths) else { return .none }
        return .bytes(length)
    }

    /// How the response to a `method` request with this head is delimited (RFC 9112 §6.3); nil for an interim
    /// (1xx) response, which another head follows.
    func responseBodyLength(toMethod method: String) throws(HTTPFramingError) -> HTTPBodyLength? {
        guard let status = Int(second), (100...599).contains(status) else {
            throw .bad("a response status that is not 100…599")
        }
        if (100...199).contains(status) { return status == 101 ? HTTPBodyLength.none : nil }
        if method == "HEAD" || status == 204 || status == 304 { return HTTPBodyLength.none }
        let codings = tokens("Transfer-Encoding")
        if !codings.isEmpty { return codings.last == "chunked" ? .chunked : .untilClose }
        guard let length = try Self.contentLength(values("Content-Length")) else { return .untilClose }
        return .bytes(length)
    }

    /// The one length every Content-Length field states (repeated equal values are one), or nil without any.
    private static func contentLength(_ values: [String]) throws(HTTPFramingError) -> Int64? {
        let all = values.flatMap { $0.split(separator: ",") }.map { $0.trimmingHTTPWhitespace() }
        guard let first = all.first else { return nil }
        guard all.allSatisfy({ $0 == first }), first.utf8.count <= 18,
            first.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
            let length = Int64(first)
        else { throw .bad("a Content-Length that is not one decimal number") }
        return length
    }
}
