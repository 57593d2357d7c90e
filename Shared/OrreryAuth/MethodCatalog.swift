#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
public import OrreryIdentity
public import SwiftProtobuf

/// Every RPC method of the protos with what authorising it takes, read from the descriptor set so that a new
/// method cannot escape authorisation: its command, whether it is read-only (`NO_SIDE_EFFECTS`), whether it is
/// open (health, reflection, `Info`), and the scalar fields of its request that invocation `args` can carry.
public struct MethodCatalog: Sendable {
    /// How a method is authorised.
    public struct Entry: Sendable, Equatable {
        /// `package.Service/Method`.
        public let fullName: String
        public let command: Command
        public let isReadOnly: Bool
        public let isOpen: Bool
        public let isClientStreaming: Bool
        /// Top-level scalar request fields (proto names) and their kinds.
        public let requestFields: [String: FieldKind]
        /// The same fields' proto names by field number.
        public let requestFieldNames: [Int: String]
        /// The chain may root in the invoker itself (`/ucan/revoke`: the handler checks the revoked chain).
        public let selfAuthorised: Bool
        /// The chain roots in the party the request acts for (a consumer's delegation to the orchestrator), not
        /// in the operator: the handler checks that the subject is that party.
        public let actsForSubject: Bool
        /// A replayed invocation can do nothing: the call only answers what the orchestrator asked for on the
        /// device's line, by an id it made for that one answer and forgets once answered. No replay-guard write.
        public let answersSingleUse: Bool
        /// Whether a used invocation is refused when it comes again (everything but read-only and single-use
        /// answers).
        public var isReplayGuarded: Bool { !isReadOnly && !answersSingleUse }
        /// The request message's full name (`orrery.settlement.v1.EscrowRequest`).
        public let inputType: String
    }

    /// The kind of a scalar request field, for mapping it into IPLD `args`.
    public enum FieldKind: Sendable, Equatable {
        case integer, float, string, bool, bytes
    }

    public let entries: [String: Entry]
    /// Every message's fields, for viewing a request as policies see it (`RequestView`).
    public let schemas: MessageSchemas

    /// Commands that differ from the derived `/orrery/<area>/<kebab-method>`.
    /// The agent channel is the device's: the registry token it joins with covers it.
    static let overrides: [String: String] = [
        "orrery.identity.v1.Identity/Revoke": "/ucan/revoke",
        "orrery.orchestrator.v1.AgentChannel/Connect": "/orrery/registry/connect-agent",
        "orrery.orchestrator.v1.AgentChannel/Tunnel": "/orrery/registry/agent-tunnel",
        "orrery.orchestrator.v1.AgentChannel/PeerTunnel": "/orrery/registry/agent-peer-tunnel",
        "orrery.orchestrator.v1.AgentChannel/ExecSession": "/orrery/registry/agent-exec-session",
        // Running a command inside a deployment's sandbox is the consumer's to allow (the chain roots in it).
        "orrery.orchestrator.v1.Orchestrator/Exec": "/orrery/exec/run",
        // Between the orchestrator's replicas, invoked by its own key for itself (the handler checks both).
        "orrery.orchestrator.v1.AgentChannel/RelayTunnel": "/orrery/orchestrator/relay-tunnel",
        "orrery.orchestrator.v1.AgentChannel/RelayExec": "/orrery/orchestrator/relay-exec",
        // Reputation is the orchestrator's to record, not a device's or an owner's (their tokens are /orrery/registry).
        "orrery.registry.v1.Registry/RecordOutcome": "/orrery/reputation/record-outcome",
        // docs/ARCHITECTURE.md §2: the consumer delegates /orrery/notary/propose to the orchestrator.
        "orrery.notary.v1.Notary/ProposeContract": "/orrery/notary/propose",
    ]

    /// Methods invoked on a party's behalf under its own delegation (docs/ARCHITECTURE.md §2: the orchestrator proposes a
    /// contract with the consumer's delegation).
    static let subjectRooted: Set<String> = [
        "orrery.notary.v1.Notary/ProposeContract", "orrery.settlement.v1.Settlement/Escrow",
        "orrery.orchestrator.v1.AgentChannel/RelayTunnel", "orrery.orchestrator.v1.Orchestrator/Exec",
        "orrery.orchestrator.v1.AgentChannel/RelayExec",
    ]

    /// The device's answers to what the orchestrator asked for on its line (OpenTunnel, OpenExec): each names a
    /// random id the orchestrator waits on once, so a replay finds nothing to answer — and the per-connection
    /// replay-guard write (a database round trip on every ingress and port-forward connection) is not needed.
    static let singleUseAnswers: Set<String> = [
        "orrery.orchestrator.v1.AgentChannel/Tunnel", "orrery.orchestrator.v1.AgentChannel/ExecSession",
    ]

    /// Streams whose every message carries its own capability, checked by the handler as the unary method the
    /// message names would be (`CapabilityInterceptor.authorize(authorizationHeader:method:request:)`): the stream
    /// itself is open.
    public static let authorisedPerMessage: Set<String> = ["orrery.settlement.v1.Settlement/Operate"]

    /// Builds the catalog from a serialized `FileDescriptorSet`.
    public init(descriptorSet: Data) throws {
        let set = try Google_Protobuf_FileDescriptorSet(serializedBytes: descriptorSet)
        var messages: [String: Google_Protobuf_DescriptorProto] = [:]
        for file in set.file {
            for message in file.messageType { messages[".\(file.package).\(message.name)"] = message }
        }
        var entries: [String: Entry] = [:]
        for file in set.file {
            for service in file.service {
                let serviceName = file.package.isEmpty ? service.name : "\(file.package).\(service.name)"
                let area =
                    file.package.split(separator: ".").dropFirst().first.map(String.init) ?? service.name.lowercased()
                for method in service.method {
                    let fullName = "\(serviceName)/\(method.name)"
                    let isOpen =
                        file.package.hasPrefix("grpc.") || (file.package.hasPrefix("orrery.") && method.name == "Info")
                        || Self.authorisedPerMessage.contains(fullName)
                    let commandText = Self.overrides[fullName] ?? "/orrery/\(area)/\(Self.kebab(method.name))"
                    entries[fullName] = Entry(
                        fullName: fullName,
                        command: try Command(commandText),
                        isReadOnly: method.options.idempotencyLevel == .noSideEffects,
                        isOpen: isOpen,
                        isClientStreaming: method.clientStreaming,
                        requestFields: Self.scalarFields(messages[method.inputType]),
                        requestFieldNames: Self.scalarFieldNames(messages[method.inputType]),
                        selfAuthorised: Self.overrides[fullName] == "/ucan/revoke",
                        actsForSubject: Self.subjectRooted.contains(fullName),
                        answersSingleUse: Self.singleUseAnswers.contains(fullName),
                        inputType: method.inputType.hasPrefix(".")
                            ? String(method.inputType.dropFirst()) : method.inputType
                    )
                }
            }
        }
        self.entries = entries
        self.schemas = MessageSchemas(set)
    }

    public subscript(fullName: String) -> Entry? { entries[fullName] }

    /// `CompleteJoin` → `complete-join`.
    static func kebab(_ name: String) -> String {
        var output = ""
        for (index, character) in name.enumerated() {
            if character.isUppercase && index > 0 { output.append("-") }
            output.append(contentsOf: character.lowercased())
        }
        return output
    }

    private static func scalarFieldNames(_ message: Google_Protobuf_DescriptorProto?) -> [Int: String] {
        let kinds = scalarFields(message)
        var names: [Int: String] = [:]
        for field in message?.field ?? [] where kinds[field.name] != nil { names[Int(field.number)] = field.name }
        return names
    }

    private static func scalarFields(_ message: Google_Protobuf_DescriptorProto?) -> [String: FieldKind] {
        guard let message else { return [:] }
        var fields: [String: FieldKind] = [:]
        for field in message.field where field.label != .repeated {
            switch field.type {
            case .int32, .int64, .uint32, .uint64, .sint32, .sint64, .fixed32, .fixed64, .sfixed32, .sfixed64:
                fields[field.name] = .integer
            case .float, .double: fields[field.name] = .float
            case .string: fields[field.name] = .string
            case .bool: fields[field.name] = .bool
            case .bytes: fields[field.name] = .bytes
            default: break
            }
        }
        return fields
    }
}

/// The scalar fields of a request message as IPLD, under their proto names: what invocation `args` carry.
public enum RequestArguments {
    /// The request's non-default top-level singular scalar fields (what proto3 JSON would show; integers exact at
    /// every width), read by visiting the message's fields without encoding it.
    public static func of(_ message: any SwiftProtobuf.Message, entry: MethodCatalog.Entry) -> [String: IPLD] {
        var visitor = ScalarFieldVisitor(names: entry.requestFieldNames, kinds: entry.requestFields)
        try? message.traverse(visitor: &visitor)
        return visitor.arguments
    }
}

/// Collects top-level singular scalar fields by number; messages, maps and unknown fields are skipped unvisited.
private struct ScalarFieldVisitor: SwiftProtobuf.Visitor {
    let names: [Int: String]
    let kinds: [String: MethodCatalog.FieldKind]
    var arguments: [String: IPLD] = [:]

    private mutating func set(_ fieldNumber: Int, _ kind: MethodCatalog.FieldKind, _ value: IPLD) {
        guard let name = names[fieldNumber], kinds[name] == kind else { return }
        arguments[name] = value
    }

    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {
        set(fieldNumber, .float, .float(value))
    }
    mutating func visitSingularFloatField(value: Float, fieldNumber: Int) throws {
        // As proto3 JSON carries it: the float's shortest decimal form, read as a double.
        set(fieldNumber, .float, .float(Double(String(value)) ?? Double(value)))
    }
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {
        set(fieldNumber, .integer, .integer(value))
    }
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {
        set(fieldNumber, .integer, .exact(value))
    }
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {
        set(fieldNumber, .bool, .bool(value))
    }
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {
        set(fieldNumber, .string, .string(value))
    }
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {
        set(fieldNumber, .bytes, .bytes([UInt8](value)))
    }
    mutating func visitSingularEnumField<E: SwiftProtobuf.Enum>(value: E, fieldNumber: Int) throws {}
    mutating func visitSingularMessageField<M: SwiftProtobuf.Message>(value: M, fieldNumber: Int) throws {}
    mutating func visitSingularGroupField<G: SwiftProtobuf.Message>(value: G, fieldNumber: Int) throws {}
    mutating func visitRepeatedMessageField<M: SwiftProtobuf.Message>(value: [M], fieldNumber: Int) throws {}
    mutating func visitMapField<KeyType, ValueType: MapValueType>(
        fieldType: _ProtobufMap<KeyType, ValueType>.Type, value: _ProtobufMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws {}
    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type, value: _ProtobufEnumMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws where ValueType.RawValue == Int {}
    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
        value: _ProtobufMessageMap<KeyType, ValueType>.BaseType, fieldNumber: Int
    ) throws {}
    mutating func visitUnknown(bytes: Data) throws {}
}
