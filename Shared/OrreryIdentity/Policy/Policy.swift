#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// A UCAN policy: statements over an invocation's `args`, all of which must hold.
public struct Policy: Sendable, Hashable {
    /// One statement of the policy language.
    public indirect enum Statement: Sendable, Hashable {
        case equal(Selector, IPLD)
        case notEqual(Selector, IPLD)
        case less(Selector, IPLD)
        case lessOrEqual(Selector, IPLD)
        case greater(Selector, IPLD)
        case greaterOrEqual(Selector, IPLD)
        case like(Selector, String)
        case not(Statement)
        case and([Statement])
        case or([Statement])
        case all(Selector, Statement)
        case any(Selector, Statement)
    }

    public let statements: [Statement]

    /// The IPLD form the policy came from (kept so a delegation re-encodes exactly).
    public let ipld: IPLD

    /// A policy allowing anything.
    public static let empty = Policy(statements: [], ipld: .list([]))

    private init(statements: [Statement], ipld: IPLD) {
        self.statements = statements
        self.ipld = ipld
    }

    /// Parses a policy from its IPLD form (a list of statements).
    /// - Throws: `PolicyError` naming the malformed statement.
    public init(_ ipld: IPLD) throws {
        guard case .list(let items) = ipld else { throw PolicyError.malformed("a policy is a list of statements") }
        self.statements = try items.map(Self.statement)
        self.ipld = ipld
    }

    private static func statement(_ ipld: IPLD) throws -> Statement {
        guard case .list(let parts) = ipld, case .string(let op)? = parts.first else {
            throw PolicyError.malformed("a statement is a list starting with its operator")
        }
        func selector(_ index: Int) throws -> Selector {
            guard parts.count > index, case .string(let text) = parts[index] else {
                throw PolicyError.malformed("'\(op)' needs a selector")
            }
            return try Selector(text)
        }
        func arity(_ count: Int) throws {
            guard parts.count == count else { throw PolicyError.malformed("'\(op)' takes \(count - 1) arguments") }
        }
        func number(_ index: Int) throws -> IPLD {
            switch parts[index] {
            case .integer, .largeInteger, .float: return parts[index]
            default: throw PolicyError.malformed("'\(op)' compares with a number")
            }
        }
        func statements(_ index: Int) throws -> [Statement] {
            guard case .list(let inner) = parts[index] else {
                throw PolicyError.malformed("'\(op)' takes a list of statements")
            }
            return try inner.map(statement)
        }
        switch op {
        case "==":
            try arity(3)
            return .equal(try selector(1), parts[2])
        case "!=":
            try arity(3)
            return .notEqual(try selector(1), parts[2])
        case "<":
            try arity(3)
            return .less(try selector(1), try number(2))
        case "<=":
            try arity(3)
            return .lessOrEqual(try selector(1), try number(2))
        case ">":
            try arity(3)
            return .greater(try selector(1), try number(2))
        case ">=":
            try arity(3)
            return .greaterOrEqual(try selector(1), try number(2))
        case "like":
            try arity(3)
            guard case .string(let pattern) = parts[2] else {
                throw PolicyError.malformed("'like' takes a string pattern")
            }
            return .like(try selector(1), pattern)
        case "not":
            try arity(2)
            return .not(try statement(parts[1]))
        case "and":
            try arity(2)
            return .and(try statements(1))
        case "or":
            try arity(2)
            return .or(try statements(1))
        case "all":
            try arity(3)
            return .all(try selector(1), try statement(parts[2]))
        case "any":
            try arity(3)
            return .any(try selector(1), try statement(parts[2]))
        default:
            throw PolicyError.malformed("unknown operator '\(op)'")
        }
    }

    /// Whether `args` satisfies every statement.
    public func matches(_ args: IPLD) -> Bool {
        statements.allSatisfy { Self.evaluate($0, on: args) }
    }

    /// The first statement `args` does not satisfy, for error messages.
    public func firstViolation(_ args: IPLD) -> Statement? {
        statements.first { !Self.evaluate($0, on: args) }
    }

    static func evaluate(_ statement: Statement, on value: IPLD) -> Bool {
        switch statement {
        case .equal(let selector, let expected):
            guard let found = selector.select(value) else { return false }
            return deepEqual(found, expected)
        case .notEqual(let selector, let expected):
            guard let found = selector.select(value) else { return false }
            return !deepEqual(found, expected)
        case .less(let selector, let bound):
            return compare(selector.select(value), bound) { $0 < $1 }
        case .lessOrEqual(let selector, let bound):
            return compare(selector.select(value), bound) { $0 <= $1 }
        case .greater(let selector, let bound):
            return compare(selector.select(value), bound) { $0 > $1 }
        case .greaterOrEqual(let selector, let bound):
            return compare(selector.select(value), bound) { $0 >= $1 }
        case .like(let selector, let pattern):
            guard case .string(let text)? = selector.select(value) else { return false }
            return Glob(pattern).matches(text)
        case .not(let inner):
            return !evaluate(inner, on: value)
        case .and(let inner):
            return inner.allSatisfy { evaluate($0, on: value) }
        case .or(let inner):
            return inner.isEmpty || inner.contains { evaluate($0, on: value) }
        case .all(let selector, let inner):
            guard let items = collection(selector.select(value)) else { return false }
            return items.allSatisfy { evaluate(inner, on: $0) }
        case .any(let selector, let inner):
            guard let items = collection(selector.select(value)) else { return false }
            return items.contains { evaluate(inner, on: $0) }
        }
    }

    private static func collection(_ value: IPLD?) -> [IPLD]? {
        switch value {
        case .list(let items)?: return items
        case .map(let map)?: return map.keys.sorted(by: DAGCBOR.keyOrder).compactMap { map[$0] }
        default: return nil
        }
    }

    /// Equality of IPLD values in which numbers compare by value (1 == 1.0), integers exactly at any size.
    public static func deepEqual(_ lhs: IPLD, _ rhs: IPLD) -> Bool {
        switch (lhs, rhs) {
        case (.list(let a), .list(let b)): return a.count == b.count && zip(a, b).allSatisfy { deepEqual($0, $1) }
        case (.map(let a), .map(let b)):
            return a.count == b.count && a.allSatisfy { key, value in b[key].map { deepEqual(value, $0) } ?? false }
        default:
            if let order = numericOrder(lhs, rhs) { return order == 0 }
            return lhs == rhs
        }
    }

    private static func compare(_ value: IPLD?, _ bound: IPLD, _ predicate: (Int, Int) -> Bool) -> Bool {
        guard let value, let order = numericOrder(value, bound) else { return false }
        return predicate(order, 0)
    }

    /// -1, 0 or 1 as `lhs` is below, at or above `rhs`; nil unless both are numbers (or one is NaN). Integers of
    /// either size compare exactly; an integer and a float compare by the float's value, exactly where it
    /// is a whole number.
    static func numericOrder(_ lhs: IPLD, _ rhs: IPLD) -> Int? {
        func order<T: Comparable>(_ a: T, _ b: T) -> Int { a < b ? -1 : (a == b ? 0 : 1) }
        switch (lhs.exactIntegerValue, rhs.exactIntegerValue, lhs, rhs) {
        case (let a?, let b?, _, _):
            return order(a, b)
        case (let a?, nil, _, .float(let b)):
            return integerOrder(a, b)
        case (nil, let b?, .float(let a), _):
            return integerOrder(b, a).map { -$0 }
        case (nil, nil, .float(let a), .float(let b)):
            return a.isNaN || b.isNaN ? nil : order(a, b)
        default:
            return nil
        }
    }

    /// The order of an exact integer against a float, without rounding the integer.
    private static func integerOrder(_ integer: ExactInteger, _ float: Double) -> Int? {
        guard !float.isNaN else { return nil }
        // Every exact integer has at most `ExactInteger.maximumDigits` (200) digits: a float this large is beyond it.
        if float.isInfinite || abs(float) >= 1e200 { return float > 0 ? -1 : 1 }
        let floor = float.rounded(.down)
        // A finite double's integer part prints exactly (glibc prints every digit).
        let digits = cFormat("%.0f", floor)
        guard let whole = ExactInteger(decimal: digits == "-0" ? "0" : digits) else { return nil }
        if integer < whole { return -1 }
        if whole < integer { return 1 }  // integer ≥ ⌊f⌋ + 1 > f
        return floor == float ? 0 : -1
    }
}

/// A `like` pattern: `*` matches any run of characters, `\*` a literal star.
struct Glob {
    enum Token: Equatable {
        case literal(Character)
        case star
    }

    let tokens: [Token]

    init(_ pattern: String) {
        var tokens: [Token] = []
        var escaping = false
        for character in pattern {
            if escaping {
                tokens.append(.literal(character))
                escaping = false
            } else if character == "\\" {
                escaping = true
            } else if character == "*" {
                tokens.append(.star)
            } else {
                tokens.append(.literal(character))
            }
        }
        if escaping { tokens.append(.literal("\\")) }
        self.tokens = tokens
    }

    func matches(_ text: String) -> Bool {
        let characters = Array(text)
        // Greedy matching with backtracking to the last star.
        var textIndex = 0
        var tokenIndex = 0
        var starToken: Int?
        var starText = 0
        while textIndex < characters.count {
            if tokenIndex < tokens.count, case .literal(let literal) = tokens[tokenIndex],
                literal == characters[textIndex]
            {
                textIndex += 1
                tokenIndex += 1
            } else if tokenIndex < tokens.count, tokens[tokenIndex] == .star {
                starToken = tokenIndex
                starText = textIndex
                tokenIndex += 1
            } else if let star = starToken {
                tokenIndex = star + 1
                starText += 1
                textIndex = starText
            } else {
                return false
            }
        }
        while tokenIndex < tokens.count, tokens[tokenIndex] == .star { tokenIndex += 1 }
        return tokenIndex == tokens.count
    }
}

/// A malformed policy or selector.
public enum PolicyError: Error, Equatable, CustomStringConvertible, Sendable {
    case malformed(String)
    case invalidSelector(String, String)

    public var description: String {
        switch self {
        case .malformed(let reason): return "malformed policy: \(reason)"
        case .invalidSelector(let selector, let reason): return "invalid selector '\(selector)': \(reason)"
        }
    }
}
