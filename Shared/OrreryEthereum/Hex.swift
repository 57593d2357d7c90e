/// Hexadecimal text as Ethereum tools write it: lower case, `0x`-prefixed on output, prefix optional on input.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// `0x` followed by two lower-case digits per byte.
    public static func encode(_ bytes: some Collection<UInt8>, prefix: Bool = true) -> String {
        var text = [UInt8]()
        text.reserveCapacity(bytes.count * 2 + 2)
        if prefix { text += Array("0x".utf8) }
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bytes of an even-length hex string (an optional `0x` is skipped), or nil when it is not hex.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var body = Substring(text)
        if body.hasPrefix("0x") || body.hasPrefix("0X") { body = body.dropFirst(2) }
        let utf8 = Array(body.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var bytes = [UInt8]()
        bytes.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    static func nibble(_ character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): character - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
