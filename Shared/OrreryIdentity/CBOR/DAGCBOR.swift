/// Deterministic DAG-CBOR: minimal integer encodings, 64-bit floats, definite lengths, map keys sorted by length
/// then bytes, links as tag 42. Decoding is strict: anything a canonical encoder would not produce is refused,
/// so decoding and re-encoding always gives back the same bytes (and the same CID).
public enum DAGCBOR {
    public static func encode(_ value: IPLD) -> [UInt8] {
        var output: [UInt8] = []
        encode(value, into: &output)
        return output
    }

    /// Decodes exactly one value spanning all of `bytes`.
    /// - Throws: `DAGCBORError` for malformed or non-canonical input.
    public static func decode(_ bytes: [UInt8]) throws -> IPLD {
        var reader = Reader(bytes: bytes)
        let value = try reader.value(depth: 0)
        guard reader.offset == bytes.count else { throw DAGCBORError.invalid("trailing bytes after the value") }
        return value
    }

    private static func head(_ major: UInt8, _ argument: UInt64, into output: inout [UInt8]) {
        let prefix = major << 5
        switch argument {
        case 0..<24: output.append(prefix | UInt8(argument))
        case 24...0xFF: output += [prefix | 24, UInt8(argument)]
        case 0x100...0xFFFF: output += [prefix | 25] + bigEndian(argument, count: 2)
        case 0x1_0000...0xFFFF_FFFF: output += [prefix | 26] + bigEndian(argument, count: 4)
        default: output += [prefix | 27] + bigEndian(argument, count: 8)
        }
    }

    private static func bigEndian(_ value: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64(count - 1 - $0))) }
    }

    /// DAG-CBOR's map key order: shorter keys first, then bytewise.
    static func keyOrder(_ lhs: String, _ rhs: String) -> Bool {
        let left = Array(lhs.utf8)
        let right = Array(rhs.utf8)
        return left.count != right.count ? left.count < right.count : left.lexicographicallyPrecedes(right)
    }

    private static func encode(_ value: IPLD, into output: inout [UInt8]) {
        switch value {
        case .null: output.append(0xF6)
        case .bool(let flag): output.append(flag ? 0xF5 : 0xF4)
        case .integer(let number):
            if number >= 0 {
                head(0, UInt64(number), into: &output)
            } else {
                head(1, UInt64(-(number + 1)), into: &output)
            }
        case .largeInteger(let number):
            // Only [-2^64, 2^64-1] is DAG-CBOR; a larger value (never in a token: only in a request's view) is
            // written as its decimal text, so encoding stays total.
            if let unsigned = number.uint64Value {
                head(0, unsigned, into: &output)
            } else if number.isNegative, let magnitude = UInt64(number.magnitude), magnitude > 0 {
                head(1, magnitude - 1, into: &output)
            } else if number.isNegative, number.magnitude == "18446744073709551616" {
                head(1, UInt64.max, into: &output)
            } else {
                encode(.string(number.description), into: &output)
            }
        case .float(let number):
            output.append(0xFB)
            output += bigEndian(number.bitPattern, count: 8)
        case .string(let text):
            let bytes = Array(text.utf8)
            head(3, UInt64(bytes.count), into: &output)
            output += bytes
        case .bytes(let bytes):
            head(2, UInt64(bytes.count), into: &output)
            output += bytes
        case .list(let items):
            head(4, UInt64(items.count), into: &output)
            for item in items { encode(item, into: &output) }
        case .map(let entries):
            head(5, UInt64(entries.count), into: &output)
            for key in entries.keys.sorted(by: keyOrder) {
                encode(.string(key), into: &output)
                // The key comes from the dictionary itself.
                encode(entries[key] ?? .null, into: &output)
            }
        case .link(let cid):
            head(6, 42, into: &output)
            head(2, UInt64(cid.bytes.count + 1), into: &output)
            output.append(0x00)
            output += cid.bytes
        }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func byte() throws -> UInt8 {
            guard offset < bytes.count else { throw DAGCBORError.invalid("unexpected end of input") }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count >= 0, bytes.count - offset >= count else {
                throw DAGCBORError.invalid("unexpected end of input")
            }
            defer { offset += count }
            return bytes[offset..<offset + count]
        }

        mutating func argument(_ info: UInt8) throws -> UInt64 {
            switch info {
            case 0..<24: return UInt64(info)
            case 24...27:
                let count = 1 << Int(info - 24)
                let value = try take(count).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let minimum: UInt64 = [24, 0x100, 0x1_0000, 0x1_0000_0000][Int(info - 24)]
                guard value >= minimum else { throw DAGCBORError.invalid("non-minimal integer encoding") }
                return value
            default:
                throw DAGCBORError.invalid("indefinite lengths and reserved values are not DAG-CBOR")
            }
        }

        mutating func length(_ info: UInt8) throws -> Int {
            let value = try argument(info)
            guard value <= UInt64(bytes.count - offset) else { throw DAGCBORError.invalid("length beyond the input") }
            return Int(value)
        }

        mutating func value(depth: Int) throws -> IPLD {
            guard depth < 128 else { throw DAGCBORError.invalid("nested too deeply") }
            let initial = try byte()
            let major = initial >> 5
            let info = initial & 0x1F
            switch major {
            case 0:
                return .exact(try argument(info))
            case 1:
                // -1 - n, exactly, for every n up to 2^64-1.
                let number = try argument(info)
                if number <= UInt64(Int64.max) { return .integer(-1 - Int64(number)) }
                let magnitude = number == UInt64.max ? "18446744073709551616" : String(number + 1)
                guard let exact = ExactInteger(decimal: "-" + magnitude) else {
                    throw DAGCBORError.invalid("integer out of range")
                }
                return .exact(exact)
            case 2:
                return .bytes(Array(try take(try length(info))))
            case 3:
                guard let text = String(validating: try take(try length(info)), as: UTF8.self) else {
                    throw DAGCBORError.invalid("a string is not valid UTF-8")
                }
                return .string(text)
            case 4:
                let count = try length(info)
                var items: [IPLD] = []
                items.reserveCapacity(count)
                for _ in 0..<count { items.append(try value(depth: depth + 1)) }
                return .list(items)
            case 5:
                let count = try length(info)
                var entries: [String: IPLD] = [:]
                var previous: String?
                for _ in 0..<count {
                    guard case .string(let key) = try value(depth: depth + 1) else {
                        throw DAGCBORError.invalid("map keys must be strings")
                    }
                    if let previous, !DAGCBOR.keyOrder(previous, key) {
                        throw DAGCBORError.invalid("map keys are not in canonical order (or repeat)")
                    }
                    previous = key
                    entries[key] = try value(depth: depth + 1)
                }
                return .map(entries)
            case 6:
                guard try argument(info) == 42 else { throw DAGCBORError.invalid("only tag 42 (CID) is allowed") }
                guard case .bytes(let raw) = try value(depth: depth + 1), raw.first == 0x00 else {
                    throw DAGCBORError.invalid("a CID link is a byte string starting with 0x00")
                }
                return .link(try CID(bytes: Array(raw.dropFirst())))
            default:
                switch info {
                case 20: return .bool(false)
                case 21: return .bool(true)
                case 22: return .null
                case 27:
                    let bits = try take(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    let number = Double(bitPattern: bits)
                    guard number.isFinite else { throw DAGCBORError.invalid("NaN and infinities are not DAG-CBOR") }
                    return .float(number)
                default:
                    throw DAGCBORError.invalid("only 64-bit floats, booleans and null are DAG-CBOR simple values")
                }
            }
        }
    }
}

/// Malformed or non-canonical DAG-CBOR.
public enum DAGCBORError: Error, Equatable, CustomStringConvertible, Sendable {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let reason): return "invalid DAG-CBOR: \(reason)"
        }
    }
}
