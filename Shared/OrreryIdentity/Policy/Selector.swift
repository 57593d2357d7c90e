/// A UCAN policy selector (jq-like): `.`, `.field`, `["key"]`, `[]`, `[index]`, `[-index]`, `[from:to]`, each
/// segment optionally followed by `?`.
public struct Selector: Sendable, Hashable, CustomStringConvertible {
    enum Segment: Sendable, Hashable {
        case field(String)
        case index(Int)
        case slice(Int?, Int?)
        case values
    }

    struct Step: Sendable, Hashable {
        var segment: Segment
        var optional: Bool
    }

    let steps: [Step]
    public let description: String

    /// Parses a selector.
    /// - Throws: `PolicyError.invalidSelector` with the reason.
    public init(_ text: String) throws {
        description = text
        let characters = Array(text)
        guard characters.first == "." else { throw PolicyError.invalidSelector(text, "a selector begins with '.'") }
        var steps: [Step] = []
        var index = 1
        func fail(_ reason: String) -> PolicyError { .invalidSelector(text, reason) }
        func markOptional() {
            guard index < characters.count, characters[index] == "?" else { return }
            while index < characters.count, characters[index] == "?" { index += 1 }
            if !steps.isEmpty { steps[steps.count - 1].optional = true }
        }
        // After the leading dot: either nothing (identity), a field name, or a bracket.
        if index < characters.count, characters[index] != "[" && characters[index] != "?" {
            let name = Self.readIdentifier(characters, &index)
            guard !name.isEmpty else { throw fail("expected a field name after '.'") }
            steps.append(Step(segment: .field(name), optional: false))
        }
        markOptional()
        while index < characters.count {
            switch characters[index] {
            case ".":
                index += 1
                let name = Self.readIdentifier(characters, &index)
                if name.isEmpty {
                    // A dot may only be followed by a bracket ("…[0].[1]" is unusual but unambiguous).
                    guard index < characters.count, characters[index] == "[" else {
                        throw fail("'..' or a trailing '.'")
                    }
                } else {
                    steps.append(Step(segment: .field(name), optional: false))
                }
            case "[":
                index += 1
                guard let close = characters[index...].firstIndex(of: "]") else { throw fail("unclosed '['") }
                let inner = String(characters[index..<close])
                steps.append(Step(segment: try Self.bracket(inner, text), optional: false))
                index = close + 1
            default:
                throw fail("unexpected '\(characters[index])'")
            }
            markOptional()
        }
        self.steps = steps
    }

    private static func readIdentifier(_ characters: [Character], _ index: inout Int) -> String {
        var name = ""
        while index < characters.count,
            characters[index].isLetter || characters[index].isNumber || characters[index] == "_"
        {
            name.append(characters[index])
            index += 1
        }
        return name
    }

    private static func bracket(_ inner: String, _ text: String) throws -> Segment {
        if inner.isEmpty { return .values }
        if inner.hasPrefix("\""), inner.hasSuffix("\""), inner.count >= 2 {
            return .field(String(inner.dropFirst().dropLast()))
        }
        if inner.contains(":") {
            let parts = inner.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            func bound(_ part: Substring) throws -> Int? {
                if part.isEmpty { return nil }
                guard let value = Int(part) else {
                    throw PolicyError.invalidSelector(text, "'\(part)' is not a slice bound")
                }
                return value
            }
            return .slice(try bound(parts[0]), try bound(parts[1]))
        }
        guard let value = Int(inner) else {
            throw PolicyError.invalidSelector(text, "'[\(inner)]' is not an index, slice or quoted key")
        }
        return .index(value)
    }

    /// What the selector picks out of `value`: nil when it cannot be resolved (the statement is then false).
    /// A missing map key resolves to null; an optional segment turns a failure into null.
    public func select(_ value: IPLD) -> IPLD? {
        var current = value
        for step in steps {
            guard let next = Self.apply(step.segment, to: current) else {
                return step.optional ? .null : nil
            }
            current = next
        }
        return current
    }

    private static func apply(_ segment: Segment, to value: IPLD) -> IPLD? {
        switch (segment, value) {
        case (.field(let name), .map(let map)):
            return map[name] ?? .null
        case (.index(let index), .list(let items)):
            let position = index < 0 ? items.count + index : index
            return items.indices.contains(position) ? items[position] : nil
        case (.index(let index), .bytes(let bytes)):
            let position = index < 0 ? bytes.count + index : index
            return bytes.indices.contains(position) ? .integer(Int64(bytes[position])) : nil
        case (.slice(let from, let to), .list(let items)):
            guard let range = slice(from, to, count: items.count) else { return nil }
            return .list(Array(items[range]))
        case (.slice(let from, let to), .bytes(let bytes)):
            guard let range = slice(from, to, count: bytes.count) else { return nil }
            return .bytes(Array(bytes[range]))
        case (.values, .list):
            return value
        case (.values, .map(let map)):
            return .list(map.keys.sorted(by: DAGCBOR.keyOrder).compactMap { map[$0] })
        default:
            return nil
        }
    }

    private static func slice(_ from: Int?, _ to: Int?, count: Int) -> Range<Int>? {
        func clamp(_ bound: Int) -> Int { min(max(bound < 0 ? count + bound : bound, 0), count) }
        let lower = clamp(from ?? 0)
        let upper = clamp(to ?? count)
        return lower <= upper ? lower..<upper : nil
    }
}
