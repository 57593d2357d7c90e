internal import OrreryIdentity
/// An unsigned integer of at most 256 bits, held as minimal big-endian bytes (no leading zero; zero is empty) —
/// the form RLP wants. Ledger amounts are decimal strings; chains want 32-byte words or `0x` quantities.
public struct UInt256: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Big-endian magnitude without leading zeros.
    public let bytes: [UInt8]

    public static let zero = UInt256(minimalBytes: [])

    private init(minimalBytes: [UInt8]) { self.bytes = minimalBytes }

    /// From big-endian bytes (leading zeros allowed); nil when the value needs more than 256 bits.
    public init?(bigEndian raw: some Collection<UInt8>) {
        let trimmed = Array(raw.drop(while: { $0 == 0 }))
        guard trimmed.count <= 32 else { return nil }
        self.init(minimalBytes: trimmed)
    }

    public init(_ value: UInt64) {
        var bytes: [UInt8] = []
        var rest = value
        while rest > 0 {
            bytes.insert(UInt8(truncatingIfNeeded: rest), at: 0)
            rest >>= 8
        }
        self.init(minimalBytes: bytes)
    }

    /// From base-10 digits only (no sign, no spaces); nil for anything else or a value ≥ 2²⁵⁶.
    public init?(decimal text: some StringProtocol) {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return nil
        }
        var magnitude = [UInt8](repeating: 0, count: 33)  // little-endian work area with one byte of headroom
        for character in text.utf8 {
            var carry = UInt(character - UInt8(ascii: "0"))
            for index in magnitude.indices {
                let product = UInt(magnitude[index]) * 10 + carry
                magnitude[index] = UInt8(truncatingIfNeeded: product)
                carry = product >> 8
            }
            guard carry == 0, magnitude[32] == 0 else { return nil }
        }
        self.init(bigEndian: magnitude[0..<32].reversed())
    }

    /// From a `0x` hex quantity as JSON-RPC answers (`0x0`, `0x1a`, odd lengths allowed).
    public init?(quantity text: String) {
        guard text.hasPrefix("0x"), text.count > 2, text.count <= 66 else { return nil }
        let digits = text.dropFirst(2)
        guard let bytes = Hex.decode(digits.count % 2 == 0 ? String(digits) : "0" + digits) else { return nil }
        self.init(bigEndian: bytes)
    }

    /// The 32-byte big-endian word (ABI, EIP-712).
    public var word: [UInt8] { [UInt8](repeating: 0, count: 32 - bytes.count) + bytes }

    /// Base-10 digits.
    public var decimal: String {
        var digits: [UInt8] = []
        var magnitude = bytes
        while !magnitude.isEmpty {
            var remainder: UInt = 0
            var quotient: [UInt8] = []
            for byte in magnitude {
                let current = remainder << 8 | UInt(byte)
                let digit = current / 10
                remainder = current % 10
                if !(quotient.isEmpty && digit == 0) { quotient.append(UInt8(digit)) }
            }
            digits.append(UInt8(remainder) + UInt8(ascii: "0"))
            magnitude = quotient
        }
        return digits.isEmpty ? "0" : String(decoding: digits.reversed(), as: UTF8.self)
    }

    /// The JSON-RPC quantity form: `0x` and hex digits without leading zeros (`0x0` for zero).
    public var quantity: String {
        let hex = Hex.encode(bytes).drop(while: { $0 == "0" })
        return "0x" + (hex.isEmpty ? "0" : hex)
    }

    /// The value when it fits 64 bits.
    public var uint64: UInt64? {
        guard bytes.count <= 8 else { return nil }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// self + other, saturating at 2²⁵⁶ − 1.
    public func adding(_ other: UInt256) -> UInt256 {
        var result = [UInt8](repeating: 0, count: 32)
        var carry = 0
        let (x, y) = (word, other.word)
        for index in (0..<32).reversed() {
            let sum = Int(x[index]) + Int(y[index]) + carry
            result[index] = UInt8(sum & 0xFF)
            carry = sum >> 8
        }
        return carry != 0 ? Self.max : UInt256(minimalBytes: Array(result.drop(while: { $0 == 0 })))
    }

    /// self × factor, saturating at 2²⁵⁶ − 1.
    public func multiplied(by factor: UInt32) -> UInt256 {
        var result = [UInt8](repeating: 0, count: 32)
        var carry: UInt64 = 0
        let x = word
        for index in (0..<32).reversed() {
            let product = UInt64(x[index]) * UInt64(factor) + carry
            result[index] = UInt8(truncatingIfNeeded: product)
            carry = product >> 8
        }
        return carry != 0 ? Self.max : UInt256(minimalBytes: Array(result.drop(while: { $0 == 0 })))
    }

    /// ⌊self / divisor⌋ (divisor > 0).
    public func divided(by divisor: UInt32) -> UInt256 {
        precondition(divisor > 0, "division by zero")
        var quotient: [UInt8] = []
        var remainder: UInt64 = 0
        for byte in bytes {
            let current = remainder << 8 | UInt64(byte)
            quotient.append(UInt8(current / UInt64(divisor)))
            remainder = current % UInt64(divisor)
        }
        return UInt256(minimalBytes: Array(quotient.drop(while: { $0 == 0 })))
    }

    /// 2²⁵⁶ − 1.
    public static let max = UInt256(minimalBytes: [UInt8](repeating: 0xFF, count: 32))

    public var description: String { decimal }

    public static func < (lhs: UInt256, rhs: UInt256) -> Bool {
        lhs.bytes.count != rhs.bytes.count
            ? lhs.bytes.count < rhs.bytes.count : lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }
}
