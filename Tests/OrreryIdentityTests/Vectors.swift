import Foundation
import OrreryIdentity
import OrreryTestSupport

/// The public test vectors in `../shared/vectors/`, and a lenient JSON reader for the ones that are not strict JSON.
enum Vectors {
    static var directory: URL {
        if let path = ProcessInfo.processInfo.environment["ORRERY_VECTORS"] { return URL(fileURLWithPath: path) }
        return TestEnvironment.repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/vectors")
    }

    static func data(_ path: String) throws -> Data {
        try Data(contentsOf: directory.appendingPathComponent(path))
    }

    static func json(_ path: String) throws -> Any {
        try JSONSerialization.jsonObject(with: data(path))
    }

    /// Reads JSON into IPLD: integers stay integers, numbers with a fraction or exponent become floats, and a
    /// `{ {…} }` object without a key (as in policy.json) merges into the object around it. Trailing commas pass.
    static func lenientIPLD(_ text: String) throws -> IPLD {
        var parser = LenientJSON(characters: Array(text.unicodeScalars))
        let value = try parser.value()
        return value
    }

    /// A dag-json byte field `{"/": {"bytes": base64}}`.
    static func dagJSONBytes(_ object: Any?) -> [UInt8]? {
        guard let slash = (object as? [String: Any])?["/"] as? [String: Any], let text = slash["bytes"] as? String else { return nil }
        return Base64.decode(text)
    }
}

struct LenientJSON {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let characters: [Unicode.Scalar]
    var index = 0

    mutating func skipSpace() {
        while index < characters.count, characters[index].properties.isWhitespace { index += 1 }
    }

    mutating func expect(_ scalar: Unicode.Scalar) throws {
        skipSpace()
        guard index < characters.count, characters[index] == scalar else { throw Failure(description: "expected \(scalar) at \(index)") }
        index += 1
    }

    func peek() -> Unicode.Scalar? { index < characters.count ? characters[index] : nil }

    mutating func value() throws -> IPLD {
        skipSpace()
        guard let first = peek() else { throw Failure(description: "unexpected end") }
        switch first {
        case "{": return .map(try object())
        case "[":
            index += 1
            var items: [IPLD] = []
            while true {
                skipSpace()
                if peek() == "]" { index += 1; break }
                items.append(try value())
                skipSpace()
                if peek() == "," { index += 1 }
            }
            return .list(items)
        case "\"": return .string(try string())
        case "t": index += 4; return .bool(true)
        case "f": index += 5; return .bool(false)
        case "n": index += 4; return .null
        default: return try number()
        }
    }

    mutating func object() throws -> [String: IPLD] {
        try expect("{")
        var entries: [String: IPLD] = [:]
        while true {
            skipSpace()
            if peek() == "}" { index += 1; break }
            if peek() == "{" {
                // A keyless object inside an object: its entries belong to the enclosing object.
                entries.merge(try object()) { _, new in new }
            } else {
                let key = try string()
                try expect(":")
                entries[key] = try value()
            }
            skipSpace()
            if peek() == "," { index += 1 }
        }
        return entries
    }

    mutating func string() throws -> String {
        try expect("\"")
        var result = ""
        while let scalar = peek(), scalar != "\"" {
            index += 1
            if scalar == "\\", let escaped = peek() {
                index += 1
                switch escaped {
                case "n": result.unicodeScalars.append("\n")
                case "t": result.unicodeScalars.append("\t")
                default: result.unicodeScalars.append(escaped)
                }
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        index += 1
        return result
    }

    mutating func number() throws -> IPLD {
        let start = index
        while let scalar = peek(), "-+0123456789.eE".unicodeScalars.contains(scalar) { index += 1 }
        let text = String(String.UnicodeScalarView(characters[start..<index]))
        if text.contains(where: { ".eE".contains($0) }), let double = Double(text) { return .float(double) }
        guard let integer = Int64(text) else { throw Failure(description: "bad number '\(text)'") }
        return .integer(integer)
    }
}
