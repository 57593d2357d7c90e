internal import Foundation
internal import OrreryProto
internal import SwiftProtobuf
internal import Yams

/// Checks a spec file's YAML against the `WorkloadSpec` message before it is decoded, so that every mistake is named
/// at once with its line and column: unknown fields (with the nearest known name), values of the wrong kind, numbers
/// out of range, enum values that do not exist (with the allowed ones). The shape comes from the protos' descriptors,
/// so it follows the protos without a second copy.
struct WorkloadSpecSchema {
    /// One mistake in a spec file.
    struct Problem: CustomStringConvertible {
        var line: Int
        var column: Int
        /// Where in the spec: `allocations[0].resources.cpu_cores`.
        var path: String
        var message: String

        var description: String { "\(line):\(column): \(path.isEmpty ? "" : path + ": ")\(message)" }
    }

    private let messages: [String: Google_Protobuf_DescriptorProto]
    private let enums: [String: Google_Protobuf_EnumDescriptorProto]

    /// The schema of the protos compiled into `OrreryProto`.
    static let compiled: WorkloadSpecSchema? = {
        guard let data = Data(base64Encoded: OrreryDescriptorSet.base64),
            let set = try? Google_Protobuf_FileDescriptorSet(serializedBytes: data)
        else { return nil }
        return WorkloadSpecSchema(set)
    }()

    init(_ set: Google_Protobuf_FileDescriptorSet) {
        var messages: [String: Google_Protobuf_DescriptorProto] = [:]
        var enums: [String: Google_Protobuf_EnumDescriptorProto] = [:]
        func index(_ message: Google_Protobuf_DescriptorProto, prefix: String) {
            let name = "\(prefix).\(message.name)"
            messages[name] = message
            for nested in message.nestedType { index(nested, prefix: name) }
            for nested in message.enumType { enums["\(name).\(nested.name)"] = nested }
        }
        for file in set.file {
            for message in file.messageType { index(message, prefix: ".\(file.package)") }
            for nested in file.enumType { enums[".\(file.package).\(nested.name)"] = nested }
        }
        self.messages = messages
        self.enums = enums
    }

    /// Every problem of `node` read as a `WorkloadSpec`.
    func problems(in node: Node) -> [Problem] {
        var found: [Problem] = []
        check(node, message: ".orrery.orchestrator.v1.WorkloadSpec", path: "", into: &found)
        return found
    }

    private func check(_ node: Node, message name: String, path: String, into found: inout [Problem]) {
        guard let message = messages[name] else { return }
        guard case .mapping(let mapping) = node else {
            found.append(problem(node, path, "expected a mapping of \(fieldList(message))"))
            return
        }
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            let fieldPath = path.isEmpty ? key : "\(path).\(key)"
            guard let field = message.field.first(where: { $0.name == key || $0.jsonName == key }) else {
                let names = message.field.map(\.name)
                let hint =
                    Self.nearest(key, among: names).map { " — did you mean `\($0)`?" }
                    ?? " (fields here: \(names.joined(separator: ", ")))"
                found.append(problem(keyNode, path, "unknown field `\(key)`\(hint)"))
                continue
            }
            if field.label == .repeated, !isMapEntry(field) {
                guard case .sequence(let sequence) = value else {
                    if value.null != nil { continue }
                    found.append(problem(value, fieldPath, "expected a list ([…] or lines starting with -)"))
                    continue
                }
                for (index, element) in sequence.enumerated() {
                    checkValue(element, field: field, path: "\(fieldPath)[\(index)]", into: &found)
                }
            } else if isMapEntry(field) {
                guard case .mapping(let entries) = value else {
                    found.append(problem(value, fieldPath, "expected a mapping of names to values"))
                    continue
                }
                let entry = messages[field.typeName]
                if let valueField = entry?.field.first(where: { $0.number == 2 }) {
                    for (entryKey, entryValue) in entries {
                        checkValue(
                            entryValue, field: valueField, path: "\(fieldPath).\(entryKey.string ?? "")", into: &found)
                    }
                }
            } else {
                checkValue(value, field: field, path: fieldPath, into: &found)
            }
        }
    }

    private func checkValue(
        _ node: Node, field: Google_Protobuf_FieldDescriptorProto, path: String, into found: inout [Problem]
    ) {
        if node.null != nil { return }  // unset
        switch field.type {
        case .message:
            guard !field.typeName.hasPrefix(".google.protobuf.") else { return }
            check(node, message: field.typeName, path: path, into: &found)
        case .enum:
            guard let scalar = node.scalar else {
                found.append(problem(node, path, "expected one of \(enumList(field.typeName))"))
                return
            }
            guard enumValue(scalar.string, of: field.typeName) != nil else {
                found.append(
                    problem(node, path, "`\(scalar.string)` is not one of \(enumList(field.typeName))"))
                return
            }
        case .int32, .sint32, .sfixed32, .int64, .sint64, .sfixed64, .uint32, .fixed32, .uint64, .fixed64:
            guard let scalar = node.scalar, let number = Int128(scalar.string) ?? Self.wholeDouble(scalar.string)
            else {
                found.append(problem(node, path, "expected a whole number, got \(shown(node))"))
                return
            }
            let (low, high) = Self.range(field.type)
            guard number >= low, number <= high else {
                found.append(
                    problem(
                        node, path,
                        low == 0
                            ? "expected a whole number ≥ 0 (at most \(high)), got \(scalar.string)"
                            : "expected a whole number from \(low) to \(high), got \(scalar.string)"))
                return
            }
        case .double, .float:
            guard let scalar = node.scalar, Double(scalar.string) != nil else {
                found.append(problem(node, path, "expected a number, got \(shown(node))"))
                return
            }
        case .bool:
            guard let scalar = node.scalar, ["true", "false"].contains(scalar.string.lowercased()) else {
                found.append(problem(node, path, "expected true or false, got \(shown(node))"))
                return
            }
        case .string, .bytes:
            guard let scalar = node.scalar else {
                found.append(problem(node, path, "expected text, got \(shown(node))"))
                return
            }
            if scalar.style == .plain, field.type == .string,
                Int128(scalar.string) != nil || Double(scalar.string) != nil
                    || ["true", "false"].contains(scalar.string)
            {
                found.append(problem(node, path, "expected text: write \(scalar.string) in quotes"))
            }
        default:
            return
        }
    }

    /// The enum value a spec file's text names: in full (`EXECUTOR_PROCESS`) or short (`process`).
    func enumValue(_ text: String, of typeName: String) -> String? {
        guard let values = enums[typeName]?.value.map(\.name) else { return nil }
        let upper = text.uppercased()
        if values.contains(upper) { return upper }
        let prefix = Self.commonPrefix(values)
        return values.contains(prefix + upper) ? prefix + upper : nil
    }

    private func enumList(_ typeName: String) -> String {
        let values = enums[typeName]?.value.map(\.name).filter { !$0.hasSuffix("_UNSPECIFIED") } ?? []
        let prefix = Self.commonPrefix(enums[typeName]?.value.map(\.name) ?? [])
        return values.map { "`\($0.dropFirst(prefix.count).lowercased())`" }.joined(separator: ", ")
    }

    private func fieldList(_ message: Google_Protobuf_DescriptorProto) -> String {
        message.field.prefix(6).map(\.name).joined(separator: ", ") + (message.field.count > 6 ? ", …" : "")
    }

    private func isMapEntry(_ field: Google_Protobuf_FieldDescriptorProto) -> Bool {
        field.label == .repeated && field.type == .message && messages[field.typeName]?.options.mapEntry == true
    }

    private func problem(_ node: Node, _ path: String, _ message: String) -> Problem {
        Problem(line: node.mark?.line ?? 0, column: node.mark?.column ?? 0, path: path, message: message)
    }

    private func shown(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): "`\(scalar.string)`"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    /// The shared `NAME_` prefix of enum value names (`EXECUTOR_`).
    static func commonPrefix(_ names: [String]) -> String {
        guard let first = names.first, let underscore = first.firstIndex(of: "_") else { return "" }
        let prefix = String(first[...underscore])
        return names.allSatisfy { $0.hasPrefix(prefix) } ? prefix : ""
    }

    static func wholeDouble(_ text: String) -> Int128? {
        guard let value = Double(text), value.isFinite, value == value.rounded(), abs(value) < 1e30 else { return nil }
        return Int128(value)
    }

    static func range(_ type: Google_Protobuf_FieldDescriptorProto.TypeEnum) -> (Int128, Int128) {
        switch type {
        case .uint32, .fixed32: (0, Int128(UInt32.max))
        case .uint64, .fixed64: (0, Int128(UInt64.max))
        case .int64, .sint64, .sfixed64: (Int128(Int64.min), Int128(Int64.max))
        default: (Int128(Int32.min), Int128(Int32.max))
        }
    }

    /// The known name nearest to a mistyped one, when it is near enough to be a typo.
    static func nearest(_ name: String, among names: [String]) -> String? {
        let scored = names.map { ($0, distance(name.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
        return best.1 <= max(2, name.count / 4) ? best.0 : nil
    }

    /// Levenshtein distance.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
