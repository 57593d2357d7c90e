internal import OrreryIdentity
/// EIP-712 typed structured data in the `eth_signTypedData_v4` JSON shape: `{types, primaryType, domain, message}`.
public struct TypedData: Sendable {
    public struct Field: Sendable, Hashable {
        public let name: String
        public let type: String

        public init(name: String, type: String) {
            self.name = name
            self.type = type
        }
    }

    public let types: [String: [Field]]
    public let primaryType: String
    public let domain: JSONValue
    public let message: JSONValue

    public init(types: [String: [Field]], primaryType: String, domain: JSONValue, message: JSONValue) {
        self.types = types
        self.primaryType = primaryType
        self.domain = domain
        self.message = message
    }

    /// Parses the JSON shape; `EIP712Domain` must be among the types.
    public init(json: String) throws {
        let root = try JSONValue.parse(json)
        guard case .object(let typeMembers)? = root["types"] else { throw EIP712Error.invalid("'types' is missing") }
        var types: [String: [Field]] = [:]
        for (name, fields) in typeMembers {
            guard let list = fields.arrayValue else { throw EIP712Error.invalid("type \(name) is not a list") }
            types[name] = try list.map {
                guard let field = $0["name"]?.stringValue, let type = $0["type"]?.stringValue else {
                    throw EIP712Error.invalid("a field of \(name) lacks a name or type")
                }
                return Field(name: field, type: type)
            }
        }
        guard types["EIP712Domain"] != nil else { throw EIP712Error.invalid("'EIP712Domain' is missing from types") }
        guard let primary = root["primaryType"]?.stringValue else {
            throw EIP712Error.invalid("'primaryType' is missing")
        }
        guard let domain = root["domain"], let message = root["message"] else {
            throw EIP712Error.invalid("'domain' or 'message' is missing")
        }
        self.init(types: types, primaryType: primary, domain: domain, message: message)
    }

    /// keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ hashStruct(message)) — what a wallet signs.
    public func digest() throws -> [UInt8] {
        Keccak256.hash([0x19, 0x01] + (try domainSeparator()) + (try hashStruct(primaryType, message)))
    }

    public func domainSeparator() throws -> [UInt8] { try hashStruct("EIP712Domain", domain) }

    /// `Name(type field,…)` followed by every referenced struct type, sorted by name.
    public func encodeType(_ name: String) throws -> String {
        var referenced = Set<String>()
        try collectReferences(name, into: &referenced)
        referenced.remove(name)
        return try ([name] + referenced.sorted()).map { type in
            guard let fields = types[type] else { throw EIP712Error.invalid("unknown type \(type)") }
            return type + "(" + fields.map { "\($0.type) \($0.name)" }.joined(separator: ",") + ")"
        }.joined()
    }

    public func hashStruct(_ type: String, _ value: JSONValue) throws -> [UInt8] {
        Keccak256.hash(try encodeData(type, value))
    }

    private func collectReferences(_ type: String, into found: inout Set<String>) throws {
        let base = Self.baseType(type)
        guard let fields = types[base], !found.contains(base) else { return }
        found.insert(base)
        for field in fields { try collectReferences(field.type, into: &found) }
    }

    private func encodeData(_ type: String, _ value: JSONValue) throws -> [UInt8] {
        guard let fields = types[type] else { throw EIP712Error.invalid("unknown type \(type)") }
        guard case .object = value else { throw EIP712Error.invalid("a \(type) must be an object") }
        var encoded = Keccak256.hash(try encodeType(type))
        for field in fields {
            guard let member = value[field.name] else {
                throw EIP712Error.invalid("\(type).\(field.name) is missing")
            }
            encoded += try encodeField(field.type, member, path: "\(type).\(field.name)")
        }
        return encoded
    }

    private func encodeField(_ type: String, _ value: JSONValue, path: String) throws -> [UInt8] {
        if type.hasSuffix("]"), let open = type.lastIndex(of: "[") {
            let element = String(type[..<open])
            guard let items = value.arrayValue else { throw EIP712Error.invalid("\(path) must be an array") }
            let sizeText = type[type.index(after: open)..<type.index(before: type.endIndex)]
            if !sizeText.isEmpty && Int(sizeText) != items.count {
                throw EIP712Error.invalid("\(path) must have \(sizeText) elements")
            }
            return Keccak256.hash(
                try items.enumerated().flatMap { try encodeField(element, $1, path: "\(path)[\($0)]") })
        }
        if types[type] != nil { return try hashStruct(type, value) }
        return try Self.encodeAtomic(type, value, path: path)
    }

    static func baseType(_ type: String) -> String {
        type.firstIndex(of: "[").map { String(type[..<$0]) } ?? type
    }

    static func encodeAtomic(_ type: String, _ value: JSONValue, path: String) throws -> [UInt8] {
        switch type {
        case "string":
            guard let text = value.stringValue else { throw EIP712Error.invalid("\(path) must be a string") }
            return Keccak256.hash(text)
        case "bytes":
            guard let text = value.stringValue, let bytes = Hex.decode(text) else {
                throw EIP712Error.invalid("\(path) must be hex bytes")
            }
            return Keccak256.hash(bytes)
        case "bool":
            guard case .bool(let flag) = value else { throw EIP712Error.invalid("\(path) must be true or false") }
            return UInt256(flag ? 1 : 0).word
        case "address":
            guard let text = value.stringValue, let address = EthereumAddress(text) else {
                throw EIP712Error.invalid("\(path) must be an address")
            }
            return [UInt8](repeating: 0, count: 12) + address.bytes
        case _ where type.hasPrefix("bytes"):
            guard let size = Int(type.dropFirst(5)), (1...32).contains(size), let text = value.stringValue,
                let bytes = Hex.decode(text), bytes.count == size
            else { throw EIP712Error.invalid("\(path) must be \(type)") }
            return bytes + [UInt8](repeating: 0, count: 32 - size)
        case _ where type.hasPrefix("uint") || type.hasPrefix("int"):
            let signed = type.hasPrefix("int")
            let bits = Int(type.dropFirst(signed ? 3 : 4)) ?? 256
            guard bits % 8 == 0, (8...256).contains(bits) else {
                throw EIP712Error.invalid("\(path): bad type \(type)")
            }
            return try integerWord(value, bits: bits, signed: signed, path: path)
        default:
            throw EIP712Error.invalid("\(path): unknown type \(type)")
        }
    }

    /// An integer from a JSON number, a decimal string or a `0x` hex string, range-checked and as a 32-byte word
    /// (two's complement for negative signed values).
    static func integerWord(_ value: JSONValue, bits: Int, signed: Bool, path: String) throws -> [UInt8] {
        var text: String
        switch value {
        case .number(let literal): text = literal
        case .string(let literal): text = literal
        default: throw EIP712Error.invalid("\(path) must be an integer")
        }
        let negative = text.hasPrefix("-")
        if negative { text.removeFirst() }
        guard !negative || signed else { throw EIP712Error.invalid("\(path) must not be negative") }
        let magnitude =
            text.hasPrefix("0x") ? UInt256(quantity: text.count == 2 ? "0x0" : text) : UInt256(decimal: text)
        guard let magnitude else { throw EIP712Error.invalid("\(path): '\(text)' is not an integer") }
        let limitBits = signed ? bits - 1 : bits
        let limit =
            limitBits == 256
            ? nil : UInt256(bigEndian: [UInt8(1) << (limitBits % 8)] + .init(repeating: 0, count: limitBits / 8))
        if let limit {
            // Signed minimum: -2^(bits-1) is allowed; positive values must stay below 2^(bits-1).
            let tooBig = negative ? limit < magnitude : !(magnitude < limit)
            guard !tooBig else { throw EIP712Error.invalid("\(path) does not fit \(signed ? "int" : "uint")\(bits)") }
        }
        guard negative, magnitude != .zero else { return magnitude.word }
        // Two's complement: invert and add one.
        var word = magnitude.word.map { ~$0 }
        for index in word.indices.reversed() {
            let (sum, overflow) = word[index].addingReportingOverflow(1)
            word[index] = sum
            if !overflow { break }
        }
        return word
    }
}

public enum EIP712Error: Error, Equatable, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let why): "invalid EIP-712 typed data: \(why)"
        }
    }
}
