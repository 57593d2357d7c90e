internal import Foundation
internal import GRPCCore
public import OrreryAuth
internal import OrreryIdentity
public import SwiftProtobuf

/// Reads a JSON gateway body into a request message as people write it: strict UTF-8, the proto3 JSON mapping, enum
/// values in full (`EXECUTOR_PROCESS`) or short (`process`, `across_devices`), and an error that names the field.
public struct JSONRequestReader: Sendable {
    let schemas: MessageSchemas

    /// Bodies up to this size get the field path of a decoding error (finding it decodes parts of the body again).
    static let locatingLimit = 64 << 10

    public init(schemas: MessageSchemas) {
        self.schemas = schemas
    }

    /// The request in `body`; an empty body is the empty request.
    /// - Throws: `RPCError` `INVALID_ARGUMENT` saying what is wrong and where.
    public func read<Request: SwiftProtobuf.Message>(_ body: some Collection<UInt8>, as _: Request.Type) throws
        -> Request
    {
        guard let text = String(validating: body, as: UTF8.self) else {
            throw RPCError(code: .invalidArgument, message: "the body is not valid UTF-8")
        }
        if text.allSatisfy(\.isWhitespace) { return Request() }
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = false
        do {
            return try Request(jsonString: text, options: options)
        } catch {
            // Short enum names are not proto3 JSON: expand them and try once more; otherwise say where it fails.
            // The document is read as IPLD, whose integers stay exact, so rewriting it changes nothing else.
            let document: IPLD
            do {
                document = try IPLDJSON.parse(text)
            } catch {
                throw RPCError(code: .invalidArgument, message: "the body is not JSON: \(error)")
            }
            if let expanded = expandingShortEnums(document, message: Request.protoMessageName),
                let request = try? Request(jsonString: IPLDJSON.render(expanded), options: options)
            {
                return request
            }
            let path =
                text.utf8.count <= Self.locatingLimit
                ? Self.locate(document, decodes: { (try? Request(jsonString: IPLDJSON.render($0), options: options)) != nil })
                : nil
            throw RPCError(
                code: .invalidArgument,
                message:
                    "the body is not a \(Request.protoMessageName) in JSON\(path.map { " at \($0)" } ?? ""): \(Self.describe(error))"
            )
        }
    }

    private static func describe(_ error: any Error) -> String {
        if let decoding = error as? JSONDecodingError {
            switch decoding {
            case .unknownField(let name): return "unknown field '\(name)'"
            case .numberRange: return "a number out of its field's range"
            case .malformedNumber: return "a malformed number"
            case .unrecognizedEnumValue: return "an unknown enum value"
            case .malformedString: return "a malformed string"
            case .invalidUTF8: return "a value of the wrong type or out of range"
            default: return "\(decoding)"
            }
        }
        return (error as NSError).localizedDescription
    }

    /// The path of the first member whose value alone fails to decode (`.spec.allocations[0].resources`), found
    /// by decoding one member at a time inside its parents; nil when every member decodes on its own.
    static func locate(_ document: IPLD, decodes: (IPLD) -> Bool) -> String? {
        var path = ""
        var value = document
        var wrap: (IPLD) -> IPLD = { $0 }
        var found = false
        while true {
            var next: (String, IPLD, (IPLD) -> IPLD)?
            switch value {
            case .map(let object):
                for key in object.keys.sorted() {
                    guard let member = object[key] else { continue }
                    let outer = wrap
                    if !decodes(outer(.map([key: member]))) {
                        next = (".\(key)", member, { outer(.map([key: $0])) })
                        break
                    }
                }
            case .list(let array):
                for (index, element) in array.enumerated() {
                    let outer = wrap
                    if !decodes(outer(.list([element]))) {
                        next = ("[\(index)]", element, { outer(.list([$0])) })
                        break
                    }
                }
            default:
                break
            }
            guard let (step, member, inner) = next else { return found ? path : nil }
            path += step
            value = member
            wrap = inner
            found = true
        }
    }

    /// The document with short enum names expanded along `message`'s fields; nil when nothing was expanded.
    func expandingShortEnums(_ document: IPLD, message: String) -> IPLD? {
        var changed = false
        let expanded = expand(document, message: message, changed: &changed)
        return changed ? expanded : nil
    }

    private func expand(_ value: IPLD, message: String, changed: inout Bool) -> IPLD {
        guard case .map(var object) = value, let fields = schemas[message: message] else { return value }
        for field in fields.values {
            for key in Set([field.name, field.jsonName]) {
                guard let member = object[key] else { continue }
                object[key] = expand(
                    member, kind: field.mapValue ?? field.kind, isMap: field.mapValue != nil, changed: &changed)
            }
        }
        return .map(object)
    }

    private func expand(_ value: IPLD, kind: MessageSchemas.Kind, isMap: Bool, changed: inout Bool) -> IPLD {
        if isMap, case .map(let map) = value {
            return .map(map.mapValues { expand($0, kind: kind, isMap: false, changed: &changed) })
        }
        if case .list(let list) = value {
            return .list(list.map { expand($0, kind: kind, isMap: false, changed: &changed) })
        }
        switch kind {
        case .message(let name):
            return expand(value, message: name, changed: &changed)
        case .enumeration(let name):
            guard case .string(let text) = value, let names = schemas.enumValues(name).map({ Array($0.values) }),
                !names.contains(text)
            else { return value }
            let wanted = "_" + text.uppercased()
            let matches = names.filter { $0.hasSuffix(wanted) }
            guard matches.count == 1, let full = matches.first else { return value }
            changed = true
            return .string(full)
        default:
            return value
        }
    }
}
