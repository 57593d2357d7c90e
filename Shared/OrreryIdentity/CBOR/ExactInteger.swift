/// An integer of any size, exact: what the UCAN policy language compares (IPLD integers are arbitrary precision
/// there). IPLD keeps integers that fit `Int64` as `.integer`; larger ones (a uint64 request field, a uint256
/// amount given as a decimal string) are `.largeInteger` — build either through `IPLD.exact(_:)`, which picks.
///
/// Stored as a sign and decimal digits without leading zeros: comparing needs no arithmetic.
public struct ExactInteger: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// True for values below zero (never for zero).
    public let isNegative: Bool
    /// The magnitude's decimal digits, no leading zero ("0" for zero).
    public let magnitude: String

    /// The longest decimal text accepted (a uint256 has 78 digits): longer input is refused, not parsed.
    public static let maximumDigits = 200

    public init(_ value: Int64) {
        isNegative = value < 0
        magnitude = String(value.magnitude)
    }

    public init(_ value: UInt64) {
        isNegative = false
        magnitude = String(value)
    }

    /// Parses canonical decimal text: an optional `-`, then `0` or digits without a leading zero. No `+`,
    /// spaces, `-0`, fractions or exponents.
    public init?(decimal text: some StringProtocol) {
        var digits = Substring(text)
        let negative = digits.first == "-"
        if negative { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.utf8.count <= Self.maximumDigits,
            digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            digits == "0" || digits.first != "0", !(negative && digits == "0")
        else { return nil }
        isNegative = negative
        magnitude = String(digits)
    }

    public var description: String { isNegative ? "-" + magnitude : magnitude }

    /// The value as `Int64` when it fits.
    public var int64Value: Int64? { Int64(description) }

    /// The value as `UInt64` when it fits.
    public var uint64Value: UInt64? { isNegative ? nil : UInt64(magnitude) }

    /// The nearest double (for comparison with a float bound).
    public var doubleValue: Double { Double(description) ?? (isNegative ? -.infinity : .infinity) }

    public static func < (lhs: ExactInteger, rhs: ExactInteger) -> Bool {
        if lhs.isNegative != rhs.isNegative { return lhs.isNegative }
        let magnitudeLess =
            lhs.magnitude.utf8.count != rhs.magnitude.utf8.count
            ? lhs.magnitude.utf8.count < rhs.magnitude.utf8.count
            : lhs.magnitude.utf8.lexicographicallyPrecedes(rhs.magnitude.utf8)
        let magnitudeEqual = lhs.magnitude == rhs.magnitude
        return lhs.isNegative ? (!magnitudeLess && !magnitudeEqual) : magnitudeLess
    }
}

extension IPLD {
    /// The integer as IPLD: `.integer` when it fits `Int64`, else `.largeInteger` — the one form of each value, so
    /// that equal integers are equal IPLD values.
    public static func exact(_ value: ExactInteger) -> IPLD {
        if let small = value.int64Value { return .integer(small) }
        return .largeInteger(value)
    }

    /// An unsigned 64-bit integer as IPLD, exactly.
    public static func exact(_ value: UInt64) -> IPLD {
        if let small = Int64(exactly: value) { return .integer(small) }
        return .largeInteger(ExactInteger(value))
    }

    /// Either integer form as an exact integer; nil for anything else.
    public var exactIntegerValue: ExactInteger? {
        switch self {
        case .integer(let value): return ExactInteger(value)
        case .largeInteger(let value): return value
        default: return nil
        }
    }
}
