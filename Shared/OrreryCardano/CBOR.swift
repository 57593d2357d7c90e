/// General CBOR (RFC 8949) for Cardano and COSE: integer map keys, maps kept in the order given (callers give
/// canonical order), definite lengths, shortest heads.
public indirect enum CBOR: Sendable, Hashable {
    case unsigned(UInt64)
    /// A negative integer -1 - n, stored as n.
    case negative(UInt64)
    case bytes([UInt8])
    case text(String)
    case array([CBOR])
    case map([CBORPair])
    case tag(UInt64, CBOR)
    case bool(Bool)
    case null

    public static func int(_ value: Int64) -> CBOR {
        value >= 0 ? .unsigned(UInt64(value)) : .negative(UInt64(-(value + 1)))
    }

    public var encoded: [UInt8] {
        var output: [UInt8] = []
        encode(into: &output)
        return output
    }

    private func encode(into output: inout [UInt8]) {
        switch self {
        case .unsigned(let value): Self.head(0, value, &output)
        case .negative(let value): Self.head(1, value, &output)
        case .bytes(let bytes):
            Self.head(2, UInt64(bytes.count), &output)
            output += bytes
        case .text(let text):
            Self.head(3, UInt64(text.utf8.count), &output)
            output += Array(text.utf8)
        case .array(let items):
            Self.head(4, UInt64(items.count), &output)
            for item in items { item.encode(into: &output) }
        case .map(let pairs):
            Self.head(5, UInt64(pairs.count), &output)
            for pair in pairs {
                pair.key.encode(into: &output)
                pair.value.encode(into: &output)
            }
        case .tag(let tag, let value):
            Self.head(6, tag, &output)
            value.encode(into: &output)
        case .bool(let flag): output.append(flag ? 0xF5 : 0xF4)
        case .null: output.append(0xF6)
        }
    }

    private static func head(_ major: UInt8, _ argument: UInt64, _ output: inout [UInt8]) {
        let prefix = major << 5
        switch argument {
        case 0..<24: output.append(prefix | UInt8(argument))
        case 24...0xFF: output += [prefix | 24, UInt8(argument)]
        case 0x100...0xFFFF: output += [prefix | 25] + bigEndian(argument, 2)
        case 0x1_0000...0xFFFF_FFFF: output += [prefix | 26] + bigEndian(argument, 4)
        default: output += [prefix | 27] + bigEndian(argument, 8)
        }
    }

    private static func bigEndian(_ value: UInt64, _ count: Int) -> [UInt8] {
        (0..<count).reversed().map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    /// Decodes one item spanning all of `bytes` (definite lengths only).
    public static func decode(_ bytes: [UInt8]) throws -> CBOR {
        var offset = 0
        let value = try decodeItem(bytes, &offset, depth: 0)
        guard offset == bytes.count else { throw CBORError.malformed("trailing bytes") }
        return value
    }

    private static func decodeItem(_ bytes: [UInt8], _ offset: inout Int, depth: Int) throws -> CBOR {
        guard depth < 32, offset < bytes.count else { throw CBORError.malformed("truncated or too deep") }
        let initial = bytes[offset]
        offset += 1
        let major = initial >> 5
        let info = initial & 0x1F
        if major == 7 {
            switch info {
            case 20: return .bool(false)
            case 21: return .bool(true)
            case 22: return .null
            default: throw CBORError.malformed("unsupported simple value \(info)")
            }
        }
        let argument: UInt64
        switch info {
        case 0..<24: argument = UInt64(info)
        case 24...27:
            let count = 1 << (info - 24)
            guard offset + count <= bytes.count else { throw CBORError.malformed("truncated head") }
            argument = bytes[offset..<offset + count].reduce(0) { $0 << 8 | UInt64($1) }
            offset += count
        default: throw CBORError.malformed("indefinite lengths are not supported")
        }
        func take(_ count: UInt64) throws -> [UInt8] {
            guard count <= UInt64(bytes.count - offset) else { throw CBORError.malformed("length beyond the input") }
            defer { offset += Int(count) }
            return Array(bytes[offset..<offset + Int(count)])
        }
        switch major {
        case 0: return .unsigned(argument)
        case 1: return .negative(argument)
        case 2: return .bytes(try take(argument))
        case 3: return .text(String(decoding: try take(argument), as: UTF8.self))
        case 4:
            guard argument <= UInt64(bytes.count) else { throw CBORError.malformed("array longer than the input") }
            return .array(try (0..<argument).map { _ in try decodeItem(bytes, &offset, depth: depth + 1) })
        case 5:
            guard argument <= UInt64(bytes.count) else { throw CBORError.malformed("map longer than the input") }
            return .map(
                try (0..<argument).map { _ in
                    CBORPair(
                        try decodeItem(bytes, &offset, depth: depth + 1),
                        try decodeItem(bytes, &offset, depth: depth + 1))
                })
        default: return .tag(argument, try decodeItem(bytes, &offset, depth: depth + 1))
        }
    }

    /// The value under `key` in a map.
    public subscript(key: CBOR) -> CBOR? {
        guard case .map(let pairs) = self else { return nil }
        return pairs.first(where: { $0.key == key })?.value
    }
}

/// One key/value pair of a CBOR map.
public struct CBORPair: Sendable, Hashable {
    public let key: CBOR
    public let value: CBOR

    public init(_ key: CBOR, _ value: CBOR) {
        self.key = key
        self.value = value
    }
}

public enum CBORError: Error, Equatable {
    case malformed(String)
}
