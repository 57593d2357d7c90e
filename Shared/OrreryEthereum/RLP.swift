/// Recursive Length Prefix, Ethereum's serialisation of byte strings and lists.
public indirect enum RLP: Sendable, Hashable {
    case bytes([UInt8])
    case list([RLP])

    /// An unsigned integer as RLP wants it: minimal big-endian bytes, zero as the empty string.
    public static func uint(_ value: UInt256) -> RLP { .bytes(value.bytes) }
    public static func uint(_ value: UInt64) -> RLP { .bytes(UInt256(value).bytes) }

    /// The encoding.
    public var encoded: [UInt8] {
        switch self {
        case .bytes(let bytes):
            if bytes.count == 1 && bytes[0] < 0x80 { return bytes }
            return Self.header(0x80, length: bytes.count) + bytes
        case .list(let items):
            let payload = items.flatMap(\.encoded)
            return Self.header(0xC0, length: payload.count) + payload
        }
    }

    private static func header(_ offset: UInt8, length: Int) -> [UInt8] {
        if length < 56 { return [offset + UInt8(length)] }
        let lengthBytes = UInt256(UInt64(length)).bytes
        return [offset + 55 + UInt8(lengthBytes.count)] + lengthBytes
    }

    /// Decodes exactly one item spanning `bytes`; non-canonical forms (e.g. a single byte < 0x80 wrapped in a
    /// header, lengths with leading zeros) are refused.
    public static func decode(_ bytes: [UInt8]) throws -> RLP {
        var offset = 0
        let item = try decodeItem(bytes, &offset, end: bytes.count)
        guard offset == bytes.count else { throw RLPError.malformed("trailing bytes") }
        return item
    }

    private static func decodeItem(_ bytes: [UInt8], _ offset: inout Int, end: Int) throws -> RLP {
        guard offset < end else { throw RLPError.malformed("truncated") }
        let prefix = bytes[offset]
        offset += 1
        switch prefix {
        case 0x00..<0x80:
            return .bytes([prefix])
        case 0x80..<0xC0:
            let length = try payloadLength(prefix - 0x80, bytes, &offset, end: end)
            let payload = Array(bytes[offset..<offset + length])
            if length == 1 && payload[0] < 0x80 { throw RLPError.malformed("a single low byte must not be wrapped") }
            offset += length
            return .bytes(payload)
        default:
            let length = try payloadLength(prefix - 0xC0, bytes, &offset, end: end)
            let listEnd = offset + length
            var items: [RLP] = []
            while offset < listEnd { items.append(try decodeItem(bytes, &offset, end: listEnd)) }
            return .list(items)
        }
    }

    private static func payloadLength(_ code: UInt8, _ bytes: [UInt8], _ offset: inout Int, end: Int) throws -> Int {
        var length: Int
        if code < 56 {
            length = Int(code)
        } else {
            let count = Int(code) - 55
            guard count <= 4, offset + count <= end, bytes[offset] != 0 else {
                throw RLPError.malformed("bad long length")
            }
            length = 0
            for byte in bytes[offset..<offset + count] { length = length << 8 | Int(byte) }
            guard length >= 56 else { throw RLPError.malformed("a short length written in long form") }
            offset += count
        }
        guard offset + length <= end else { throw RLPError.malformed("length beyond the input") }
        return length
    }
}

public enum RLPError: Error, Equatable {
    case malformed(String)
}
