#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import GRPCCore
public import OrreryIdentity
public import SwiftProtobuf

/// The shape of every message in the protos, read from the descriptor set: what `RequestView` needs to show a
/// request as IPLD under its proto field names.
public struct MessageSchemas: Sendable {
    /// How a field's values appear in the view.
    public enum Kind: Sendable, Equatable {
        case signedInteger, unsignedInteger, float, bool, string, bytes
        /// A string field named `amount` or `…_amount`: decimal base units, shown as an exact integer.
        case decimalAmount
        /// An enum, shown by its value's name; the payload is the enum's full name.
        case enumeration(String)
        /// A nested message, shown as a map; the payload is the message's full name.
        case message(String)
    }

    /// One field of a message.
    public struct Field: Sendable {
        public let name: String
        /// The proto3 JSON name (lowerCamelCase).
        public let jsonName: String
        public let kind: Kind
        public let isRepeated: Bool
        /// Set only when present: a member of a oneof (also proto3 `optional`). Absent ones are not shown.
        public let hasPresence: Bool
        /// For a map field: how its values appear (its keys are shown as strings).
        public let mapValue: Kind?
    }

    /// Fields by number, per message full name (`orrery.settlement.v1.EscrowRequest`).
    let messages: [String: [Int: Field]]
    /// Value names by number, per enum full name.
    let enums: [String: [Int: String]]

    /// Reads every message and enum of `set`, nested ones included.
    public init(_ set: Google_Protobuf_FileDescriptorSet) {
        var messages: [String: [Int: Field]] = [:]
        var enums: [String: [Int: String]] = [:]
        var mapEntries: [String: Google_Protobuf_DescriptorProto] = [:]

        func addEnum(_ descriptor: Google_Protobuf_EnumDescriptorProto, prefix: String) {
            enums[prefix + descriptor.name] = Dictionary(
                descriptor.value.map { (Int($0.number), $0.name) }, uniquingKeysWith: { first, _ in first })
        }
        func collectMapEntries(_ descriptor: Google_Protobuf_DescriptorProto, prefix: String) {
            let fullName = prefix + descriptor.name
            if descriptor.options.mapEntry { mapEntries[fullName] = descriptor }
            for nested in descriptor.nestedType { collectMapEntries(nested, prefix: fullName + ".") }
        }
        func addMessage(_ descriptor: Google_Protobuf_DescriptorProto, prefix: String) {
            let fullName = prefix + descriptor.name
            for nested in descriptor.enumType { addEnum(nested, prefix: fullName + ".") }
            for nested in descriptor.nestedType { addMessage(nested, prefix: fullName + ".") }
            guard !descriptor.options.mapEntry else { return }
            var fields: [Int: Field] = [:]
            for field in descriptor.field {
                let typeName = field.typeName.hasPrefix(".") ? String(field.typeName.dropFirst()) : field.typeName
                let entry = field.type == .message ? mapEntries[typeName] : nil
                fields[Int(field.number)] = Field(
                    name: field.name,
                    jsonName: field.jsonName.isEmpty ? field.name : field.jsonName,
                    kind: Self.kind(of: field, typeName: typeName),
                    isRepeated: field.label == .repeated && entry == nil,
                    hasPresence: field.hasOneofIndex,
                    mapValue: entry.flatMap { entry in
                        entry.field.first { $0.number == 2 }.map { value in
                            let valueType =
                                value.typeName.hasPrefix(".") ? String(value.typeName.dropFirst()) : value.typeName
                            return Self.kind(of: value, typeName: valueType)
                        }
                    })
            }
            messages[fullName] = fields
        }
        for file in set.file {
            let prefix = file.package.isEmpty ? "" : file.package + "."
            for message in file.messageType { collectMapEntries(message, prefix: prefix) }
        }
        for file in set.file {
            let prefix = file.package.isEmpty ? "" : file.package + "."
            for enumeration in file.enumType { addEnum(enumeration, prefix: prefix) }
            for message in file.messageType { addMessage(message, prefix: prefix) }
        }
        self.messages = messages
        self.enums = enums
    }

    private static func kind(of field: Google_Protobuf_FieldDescriptorProto, typeName: String) -> Kind {
        switch field.type {
        case .int32, .int64, .sint32, .sint64, .sfixed32, .sfixed64: return .signedInteger
        case .uint32, .uint64, .fixed32, .fixed64: return .unsignedInteger
        case .float, .double: return .float
        case .bool: return .bool
        case .string: return field.name == "amount" || field.name.hasSuffix("_amount") ? .decimalAmount : .string
        case .bytes: return .bytes
        case .enum: return .enumeration(typeName)
        default: return .message(typeName)
        }
    }

    /// The fields of a message, by number.
    public subscript(message fullName: String) -> [Int: Field]? { messages[fullName] }

    /// The value names of an enum, by number.
    public func enumValues(_ fullName: String) -> [Int: String]? { enums[fullName] }

    /// What a field shows when the request does not set it (proto3 defaults); nil for a field with presence.
    func defaultValue(of field: Field) -> IPLD? {
        if field.hasPresence { return nil }
        if field.isRepeated { return .list([]) }
        if field.mapValue != nil { return .map([:]) }
        switch field.kind {
        case .signedInteger, .unsignedInteger: return .integer(0)
        case .float: return .float(0)
        case .bool: return .bool(false)
        case .string: return .string("")
        case .decimalAmount: return .null
        case .bytes: return .bytes([])
        case .enumeration(let name): return enums[name]?[0].map(IPLD.string) ?? .integer(0)
        case .message: return .null
        }
    }
}

/// A request exactly as policies see it: every field under its proto name — integers exact at any width,
/// decimal amounts as integers, enums by name, repeated fields as lists, maps as maps, nested messages as maps,
/// unset fields at their proto3 defaults (unset messages and oneof members absent).
public enum RequestView {
    /// The view of `message`, or only of its top-level fields named in `only`.
    /// - Throws: `RPCError` `INVALID_ARGUMENT` when a field cannot be represented (an amount that is not a
    ///   decimal integer): a policy is never evaluated over a value that was skipped.
    public static func of(
        _ message: any SwiftProtobuf.Message, schemas: MessageSchemas, only: Set<String>? = nil
    ) throws -> IPLD {
        try view(of: message, schemas: schemas, only: only, path: "")
    }

    static func view(
        of message: any SwiftProtobuf.Message, schemas: MessageSchemas, only: Set<String>?, path: String
    ) throws -> IPLD {
        let typeName = type(of: message).protoMessageName
        guard let fields = schemas[message: typeName] else {
            throw RPCError(code: .internalError, message: "no schema for \(typeName): the descriptor set is stale")
        }
        var builder = ViewBuilder(fields: fields, schemas: schemas, only: only, path: path)
        for field in fields.values where only?.contains(field.name) ?? true {
            if let value = schemas.defaultValue(of: field) { builder.values[field.name] = value }
        }
        try message.traverse(visitor: &builder)
        return .map(builder.values)
    }

    /// An amount's decimal text as an exact integer ("" is unset: null).
    static func amount(_ text: String, path: String) throws -> IPLD {
        if text.isEmpty { return .null }
        guard let exact = ExactInteger(decimal: text) else {
            throw RPCError(
                code: .invalidArgument,
                message: "\(path): a decimal integer of base units, got \(String(text.prefix(40)).debugDescription)")
        }
        return .exact(exact)
    }
}

/// Visits one message's set fields into IPLD values by proto name.
private struct ViewBuilder: SwiftProtobuf.Visitor {
    let fields: [Int: MessageSchemas.Field]
    let schemas: MessageSchemas
    let only: Set<String>?
    let path: String
    var values: [String: IPLD] = [:]

    init(fields: [Int: MessageSchemas.Field], schemas: MessageSchemas, only: Set<String>?, path: String) {
        self.fields = fields
        self.schemas = schemas
        self.only = only
        self.path = path
    }

    private func field(_ number: Int) -> MessageSchemas.Field? {
        guard let field = fields[number], only?.contains(field.name) ?? true else { return nil }
        return field
    }

    private func fieldPath(_ field: MessageSchemas.Field) -> String {
        path.isEmpty ? field.name : path + "." + field.name
    }

    /// Sets a singular field, or appends to a repeated one (SwiftProtobuf visits repeated fields element by element
    /// through the singular methods unless they are overridden).
    private mutating func put(_ number: Int, _ make: (MessageSchemas.Field, String) throws -> IPLD) rethrows {
        guard let field = field(number) else { return }
        let value = try make(field, fieldPath(field))
        if field.isRepeated {
            var items = values[field.name]?.listValue ?? []
            items.append(value)
            values[field.name] = .list(items)
        } else {
            values[field.name] = value
        }
    }

    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {
        put(fieldNumber) { _, _ in .float(value) }
    }
    mutating func visitSingularFloatField(value: Float, fieldNumber: Int) throws {
        // As proto3 JSON carries it: the float's shortest decimal form, read as a double.
        put(fieldNumber) { _, _ in .float(Double(String(value)) ?? Double(value)) }
    }
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {
        put(fieldNumber) { _, _ in .integer(value) }
    }
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {
        put(fieldNumber) { _, _ in .exact(value) }
    }
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {
        put(fieldNumber) { _, _ in .bool(value) }
    }
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {
        try put(fieldNumber) { field, path in
            field.kind == .decimalAmount ? try RequestView.amount(value, path: path) : .string(value)
        }
    }
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {
        put(fieldNumber) { _, _ in .bytes([UInt8](value)) }
    }
    mutating func visitSingularEnumField<E: SwiftProtobuf.Enum>(value: E, fieldNumber: Int) throws {
        let schemas = self.schemas
        put(fieldNumber) { field, _ in Self.enumValue(value.rawValue, kind: field.kind, schemas: schemas) }
    }
    mutating func visitSingularMessageField<M: SwiftProtobuf.Message>(value: M, fieldNumber: Int) throws {
        let schemas = self.schemas
        try put(fieldNumber) { _, path in
            try RequestView.view(of: value, schemas: schemas, only: nil, path: path)
        }
    }
    mutating func visitSingularGroupField<G: SwiftProtobuf.Message>(value: G, fieldNumber: Int) throws {
        try visitSingularMessageField(value: value, fieldNumber: fieldNumber)
    }

    private static func enumValue(_ raw: Int, kind: MessageSchemas.Kind?, schemas: MessageSchemas) -> IPLD {
        guard case .enumeration(let name)? = kind, let text = schemas.enums[name]?[raw] else {
            return .integer(Int64(raw))
        }
        return .string(text)
    }

    private func mapKey(_ key: Any) -> String { "\(key)" }

    private func scalar(_ value: Any, kind: MessageSchemas.Kind?, path: String) throws -> IPLD {
        switch value {
        case let value as Int32: return .integer(Int64(value))
        case let value as Int64: return .integer(value)
        case let value as UInt32: return .integer(Int64(value))
        case let value as UInt64: return .exact(value)
        case let value as Bool: return .bool(value)
        case let value as Double: return .float(value)
        case let value as Float: return .float(Double(String(value)) ?? Double(value))
        case let value as Data: return .bytes([UInt8](value))
        case let value as String:
            return kind == .decimalAmount ? try RequestView.amount(value, path: path) : .string(value)
        default:
            throw RPCError(code: .internalError, message: "\(path): a map value of an unknown type")
        }
    }

    mutating func visitMapField<KeyType, ValueType: MapValueType>(
        fieldType: _ProtobufMap<KeyType, ValueType>.Type, value: _ProtobufMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws {
        guard let field = field(fieldNumber) else { return }
        var map: [String: IPLD] = [:]
        for (key, item) in value {
            let name = mapKey(key)
            map[name] = try scalar(item, kind: field.mapValue, path: fieldPath(field) + "." + name)
        }
        values[field.name] = .map(map)
    }
    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type, value: _ProtobufEnumMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws where ValueType.RawValue == Int {
        guard let field = field(fieldNumber) else { return }
        var map: [String: IPLD] = [:]
        for (key, item) in value {
            map[mapKey(key)] = Self.enumValue(item.rawValue, kind: field.mapValue, schemas: schemas)
        }
        values[field.name] = .map(map)
    }
    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
        value: _ProtobufMessageMap<KeyType, ValueType>.BaseType, fieldNumber: Int
    ) throws {
        guard let field = field(fieldNumber) else { return }
        var map: [String: IPLD] = [:]
        for (key, item) in value {
            let name = mapKey(key)
            map[name] = try RequestView.view(
                of: item, schemas: schemas, only: nil, path: fieldPath(field) + "." + name)
        }
        values[field.name] = .map(map)
    }
    mutating func visitUnknown(bytes: Data) throws {}
}
