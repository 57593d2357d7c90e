/// A value of the IPLD data model, as DAG-CBOR encodes it.
public indirect enum IPLD: Sendable, Hashable {
    case null
    case bool(Bool)
    case integer(Int64)
    /// An integer outside `Int64` (DAG-CBOR carries those down to -2^64 and up to 2^64-1; a request's decimal
    /// amounts can be larger). Made by `IPLD.exact(_:)`, never for a value that fits `.integer`.
    case largeInteger(ExactInteger)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([IPLD])
    case map([String: IPLD])
    case link(CID)

    /// The value under `key` of a map, or nil.
    public subscript(key: String) -> IPLD? {
        if case .map(let map) = self { return map[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var integerValue: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var bytesValue: [UInt8]? {
        if case .bytes(let value) = self { return value }
        return nil
    }

    public var listValue: [IPLD]? {
        if case .list(let value) = self { return value }
        return nil
    }

    public var mapValue: [String: IPLD]? {
        if case .map(let value) = self { return value }
        return nil
    }

    /// The kind's name, for error messages.
    public var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "bool"
        case .integer, .largeInteger: return "integer"
        case .float: return "float"
        case .string: return "string"
        case .bytes: return "bytes"
        case .list: return "list"
        case .map: return "map"
        case .link: return "link"
        }
    }
}
