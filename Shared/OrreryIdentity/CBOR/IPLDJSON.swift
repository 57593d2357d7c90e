#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// JSON to IPLD and back, for people: integers stay integers and numbers with a fraction or exponent become
/// floats. Rendering follows DAG-JSON (`{"/": {"bytes": …}}` for bytes, `{"/": cid}` for links).
public enum IPLDJSON {
    /// Parses JSON. With `lenient`, trailing commas pass and a keyless `{…}` inside an object merges into it
    /// (as the UCAN policy fixtures are written).
    /// - Throws: `IPLDJSONError` with the position of the problem.
    public static func parse(_ text: String, lenient: Bool = false) throws -> IPLD {
        var parser = Parser(characters: Array(text.unicodeScalars), lenient: lenient)
        let value = try parser.value()
        parser.skipSpace()
        guard parser.index == parser.characters.count else {
            throw IPLDJSONError(message: "trailing text at \(parser.index)")
        }
        return value
    }

    /// Renders `value` as DAG-JSON with sorted keys.
    public static func render(_ value: IPLD, indent: String = "") -> String {
        let inner = indent + "  "
        switch value {
        case .null: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .integer(let number): return String(number)
        case .largeInteger(let number): return number.description
        case .float(let number):
            return number == number.rounded() && abs(number) < 1e15 ? cFormat("%.1f", number) : String(number)
        case .string(let text): return quote(text)
        case .bytes(let bytes):
            return "{\"/\": {\"bytes\": \(quote(Base64.standard(bytes).replacing("=", with: "")))}}"
        case .link(let cid): return "{\"/\": \(quote(cid.string))}"
        case .list(let items):
            if items.isEmpty { return "[]" }
            return "[\n" + items.map { inner + render($0, indent: inner) }.joined(separator: ",\n") + "\n" + indent
                + "]"
        case .map(let map):
            if map.isEmpty { return "{}" }
            let entries = map.keys.sorted().map { key in
                inner + quote(key) + ": " + render(map[key] ?? .null, indent: inner)
            }
            return "{\n" + entries.joined(separator: ",\n") + "\n" + indent + "}"
        }
    }

    private static func quote(_ text: String) -> String {
        var output = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\t": output += "\\t"
            default:
                if scalar.value < 0x20 {
                    output += cFormat("\\u%04x", scalar.value)
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        return output + "\""
    }

    struct Parser {
        let characters: [Unicode.Scalar]
        let lenient: Bool
        var index = 0

        init(characters: [Unicode.Scalar], lenient: Bool) {
            self.characters = characters
            self.lenient = lenient
        }

        func fail(_ message: String) -> IPLDJSONError { IPLDJSONError(message: "\(message) at \(index)") }

        mutating func skipSpace() {
            while index < characters.count, characters[index].properties.isWhitespace { index += 1 }
        }

        mutating func expect(_ scalar: Unicode.Scalar) throws {
            skipSpace()
            guard index < characters.count, characters[index] == scalar else { throw fail("expected '\(scalar)'") }
            index += 1
        }

        func peek() -> Unicode.Scalar? { index < characters.count ? characters[index] : nil }

        mutating func literal(_ word: String, _ value: IPLD) throws -> IPLD {
            let scalars = Array(word.unicodeScalars)
            guard index + scalars.count <= characters.count, Array(characters[index..<index + scalars.count]) == scalars
            else {
                throw fail("unexpected token")
            }
            index += scalars.count
            return value
        }

        mutating func value() throws -> IPLD {
            skipSpace()
            guard let first = peek() else { throw fail("unexpected end") }
            switch first {
            case "{": return .map(try object())
            case "[":
                index += 1
                var items: [IPLD] = []
                skipSpace()
                if peek() == "]" {
                    index += 1
                    return .list(items)
                }
                while true {
                    items.append(try value())
                    skipSpace()
                    if peek() == "," {
                        index += 1
                        skipSpace()
                        if lenient, peek() == "]" {
                            index += 1
                            return .list(items)
                        }
                        continue
                    }
                    try expect("]")
                    return .list(items)
                }
            case "\"": return .string(try string())
            case "t": return try literal("true", .bool(true))
            case "f": return try literal("false", .bool(false))
            case "n": return try literal("null", .null)
            default: return try number()
            }
        }

        mutating func object() throws -> [String: IPLD] {
            try expect("{")
            var entries: [String: IPLD] = [:]
            skipSpace()
            if peek() == "}" {
                index += 1
                return entries
            }
            while true {
                skipSpace()
                if lenient, peek() == "{" {
                    entries.merge(try object()) { _, new in new }
                } else {
                    let key = try string()
                    try expect(":")
                    entries[key] = try value()
                }
                skipSpace()
                if peek() == "," {
                    index += 1
                    skipSpace()
                    if lenient, peek() == "}" {
                        index += 1
                        return entries
                    }
                    continue
                }
                try expect("}")
                return entries
            }
        }

        mutating func string() throws -> String {
            try expect("\"")
            var result = ""
            while true {
                guard let scalar = peek() else { throw fail("unterminated string") }
                index += 1
                if scalar == "\"" { return result }
                guard scalar == "\\" else {
                    result.unicodeScalars.append(scalar)
                    continue
                }
                guard let escaped = peek() else { throw fail("unterminated escape") }
                index += 1
                switch escaped {
                case "n": result.unicodeScalars.append("\n")
                case "t": result.unicodeScalars.append("\t")
                case "r": result.unicodeScalars.append("\r")
                case "b": result.unicodeScalars.append("\u{08}")
                case "f": result.unicodeScalars.append("\u{0C}")
                case "u":
                    guard index + 4 <= characters.count,
                        let code = UInt32(String(String.UnicodeScalarView(characters[index..<index + 4])), radix: 16),
                        let decoded = Unicode.Scalar(code)
                    else { throw fail("bad \\u escape") }
                    index += 4
                    result.unicodeScalars.append(decoded)
                default: result.unicodeScalars.append(escaped)
                }
            }
        }

        mutating func number() throws -> IPLD {
            let start = index
            while let scalar = peek(), "-+0123456789.eE".unicodeScalars.contains(scalar) { index += 1 }
            let text = String(String.UnicodeScalarView(characters[start..<index]))
            if text.contains(where: { ".eE".contains($0) }) {
                guard let double = Double(text) else { throw fail("bad number '\(text)'") }
                return .float(double)
            }
            if text == "-0" { return .integer(0) }
            guard let integer = ExactInteger(decimal: text) else { throw fail("bad number '\(text)'") }
            return .exact(integer)
        }
    }
}

/// JSON that could not be read.
public struct IPLDJSONError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { "invalid JSON: \(message)" }
}
