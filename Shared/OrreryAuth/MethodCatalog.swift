public import Foundation
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
        /// The chain may root in the invoker itself (`/ucan/revoke`: the handler checks the revoked chain).
        public let selfAuthorised: Bool
        /// The chain roots in the party the request acts for (a consumer's delegation to the orchestrator), not
        /// in the operator: the handler checks that the subject is that party.
        public let actsForSubject: Bool
    }

    /// The kind of a scalar request field, for mapping it into IPLD `args`.
    public enum FieldKind: Sendable, Equatable {
        case integer, float, string, bool, bytes
    }

    public let entries: [String: Entry]

    /// Commands that differ from the derived `/orrery/<area>/<kebab-method>`.
    /// The agent channel is the device's: the registry token it joins with covers it.
    static let overrides: [String: String] = [
        "orrery.identity.v1.Identity/Revoke": "/ucan/revoke",
        "orrery.orchestrator.v1.AgentChannel/Connect": "/orrery/registry/connect-agent",
        // Reputation is the orchestrator's to record, not a device's or an owner's (their tokens are /orrery/registry).
        "orrery.registry.v1.Registry/RecordOutcome": "/orrery/reputation/record-outcome",
        // DESIGN §6: the consumer delegates /orrery/notary/propose to the orchestrator.
        "orrery.notary.v1.Notary/ProposeContract": "/orrery/notary/propose",
    ]

    /// Methods invoked on a party's behalf under its own delegation (DESIGN §6: the orchestrator proposes a
    /// contract with the consumer's delegation).
    static let subjectRooted: Set<String> = [
        "orrery.notary.v1.Notary/ProposeContract", "orrery.settlement.v1.Settlement/Escrow",
    ]

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
                    let commandText = Self.overrides[fullName] ?? "/orrery/\(area)/\(Self.kebab(method.name))"
                    entries[fullName] = Entry(
                        fullName: fullName,
                        command: try Command(commandText),
                        isReadOnly: method.options.idempotencyLevel == .noSideEffects,
                        isOpen: isOpen,
                        isClientStreaming: method.clientStreaming,
                        requestFields: Self.scalarFields(messages[method.inputType]),
                        selfAuthorised: Self.overrides[fullName] == "/ucan/revoke",
                        actsForSubject: Self.subjectRooted.contains(fullName)
                    )
                }
            }
        }
        self.entries = entries
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
    /// The request's non-default top-level scalar fields (proto3 JSON, with 64-bit integers read back as integers).
    public static func of(_ message: any SwiftProtobuf.Message, fields: [String: MethodCatalog.FieldKind]) -> [String:
        IPLD]
    {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        guard let json = try? message.jsonUTF8Data(options: options),
            let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any]
        else { return [:] }
        var arguments: [String: IPLD] = [:]
        for (name, kind) in fields {
            guard let value = object[name] else { continue }
            switch kind {
            case .integer:
                if let text = value as? String, let integer = Int64(text) {
                    arguments[name] = .integer(integer)
                } else if let number = value as? NSNumber {
                    arguments[name] = .integer(number.int64Value)
                }
            case .float:
                if let number = value as? NSNumber { arguments[name] = .float(number.doubleValue) }
            case .string:
                if let text = value as? String { arguments[name] = .string(text) }
            case .bool:
                if let number = value as? NSNumber { arguments[name] = .bool(number.boolValue) }
            case .bytes:
                if let text = value as? String, let bytes = Base64.decode(text) { arguments[name] = .bytes(bytes) }
            }
        }
        return arguments
    }
}
