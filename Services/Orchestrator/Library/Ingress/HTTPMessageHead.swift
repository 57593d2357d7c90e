internal import NIOCore

/// Why bytes from a client or a service are not HTTP/1.1 the ingress forwards; `status` is what a client is answered.
struct HTTPFramingError: Error, CustomStringConvertible, Equatable {
    let status: Int
    let description: String

    static func bad(_ reason: String) -> HTTPFramingError { HTTPFramingError(status: 400, description: reason) }
}

/// One HTTP/1.x message head (RFC 9112 §2–5): its start line split in three, and its header fields in order.
/// Parsed strictly — CRLF line ends, no folded lines, no space before a colon, no control characters in values —
/// because the ingress forwards what it parsed and a lenient reading is how requests are smuggled past a proxy.
struct HTTPMessageHead: Equatable {
    /// Request: method, target, version. Response: version, status code, reason.
    var first: String
    var second: String
    var third: String
    var fields: [(name: String, value: String)]

    static func == (lhs: HTTPMessageHead, rhs: HTTPMessageHead) -> Bool {
        lhs.first == rhs.first && lhs.second == rhs.second && lhs.third == rhs.third
            && lhs.fields.elementsEqual(rhs.fields) { $0.name == $1.name && $0.value == $1.value }
    }

    /// The values of every field named `name` (case-insensitive), in order.
    func values(_ name: String) -> [String] {
        fields.filter { $0.name.caseInsensitiveEquals(name) }.map(\.value)
    }

    /// The comma-separated elements of every field named `name`, trimmed and lowercased.
    func tokens(_ name: String) -> [String] {
        values(name).flatMap { $0.split(separator: ",") }.map {
            $0.trimmingHTTPWhitespace().lowercased()
        }.filter { !$0.isEmpty }
    }

    /// The most bytes a head may take, its empty line included.
    static let maximumSize = 16 << 10
    /// The most header fields one head may carry.
    static let maximumFields = 100

    /// Takes one complete head off the front of `buffer`, or nil (leaving `buffer` as it was) while its empty line
    /// has not arrived. Empty lines before a start line are dropped (RFC 9112 §2.2).
    static func take(from buffer: inout ByteBuffer) throws(HTTPFramingError) -> HTTPMessageHead? {
        while buffer.readableBytesView.starts(with: [0x0D, 0x0A]) { buffer.moveReaderIndex(forwardBy: 2) }
        let view = buffer.readableBytesView
        guard let end = endOfHead(in: view) else {
            if view.count >= maximumSize {
                throw HTTPFramingError(status: 431, description: "the head is longer than \(maximumSize) bytes")
            }
            return nil
        }
        guard end - view.startIndex <= maximumSize else {
            throw HTTPFramingError(status: 431, description: "the head is longer than \(maximumSize) bytes")
        }
        let head = try parse(Array(view[view.startIndex..<(end - 4)]))
        buffer.moveReaderIndex(forwardBy: end - view.startIndex)
        return head
    }

    /// The index just past the first CRLF CRLF, or nil.
    private static func endOfHead(in view: ByteBufferView) -> Int? {
        var index = view.startIndex
        let last = view.endIndex - 3
        while index < last {
            if view[index] == 0x0D, view[index + 1] == 0x0A, view[index + 2] == 0x0D, view[index + 3] == 0x0A {
                return index + 4
            }
            index += 1
        }
        return nil
    }

    private static func parse(_ bytes: [UInt8]) throws(HTTPFramingError) -> HTTPMessageHead {
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        var index = 0
        while index < bytes.count {
            if bytes[index] == 0x0A { throw .bad("a line ends in a bare LF") }
            if bytes[index] == 0x0D {
                guard index + 1 < bytes.count, bytes[index + 1] == 0x0A else { throw .bad("a bare CR") }
                lines.append(bytes[start..<index])
                index += 2
                start = index
                continue
            }
            index += 1
        }
        lines.append(bytes[start..<bytes.count])
        guard let startLine = lines.first else { throw .bad("no start line") }
        let parts = startLine.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw .bad("the start line is not three parts separated by single spaces")
        }
        guard startLine.allSatisfy({ $0 == 0x09 || (0x20...0x7E).contains($0) || $0 >= 0x80 }) else {
            throw .bad("the start line holds control characters")
        }
        var fields: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            if fields.count == maximumFields {
                throw HTTPFramingError(status: 431, description: "more than \(maximumFields) header fields")
            }
            guard let first = line.first, first != 0x20, first != 0x09 else {
                throw .bad("a folded header line (obs-fold is not accepted)")
            }
            guard let colon = line.firstIndex(of: 0x3A) else { throw .bad("a header line without a colon") }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(isTokenCharacter) else {
                throw .bad("a header name that is not a token (no spaces before the colon)")
            }
            let value = line[(colon + 1)...]
            guard value.allSatisfy({ $0 == 0x09 || $0 >= 0x20 }), !value.contains(0x7F) else {
                throw .bad("a header value holds control characters")
            }
            fields.append(
                (
                    String(decoding: name, as: UTF8.self),
                    String(decoding: value, as: UTF8.self).trimmingHTTPWhitespace()
                ))
        }
        return HTTPMessageHead(
            first: String(decoding: parts[0], as: UTF8.self), second: String(decoding: parts[1], as: UTF8.self),
            third: String(decoding: parts[2], as: UTF8.self), fields: fields)
    }

    /// tchar (RFC 9110 §5.6.2).
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }

    /// The head as bytes on the wire.
    func write(to buffer: inout ByteBuffer) {
        buffer.writeString("\(first) \(second) \(third)\r\n")
        for field in fields { buffer.writeString("\(field.name): \(field.value)\r\n") }
        buffer.writeString("\r\n")
    }
}

extension StringProtocol {
    func caseInsensitiveEquals(_ other: some StringProtocol) -> Bool {
        utf8.count == other.utf8.count
            && zip(utf8, other.utf8).allSatisfy { asciiLowercase($0) == asciiLowercase($1) }
    }

    func trimmingHTTPWhitespace() -> String {
        let bytes = Array(utf8)
        let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}

private func asciiLowercase(_ byte: UInt8) -> UInt8 {
    (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
}
