/// Base58 with Bitcoin's alphabet (`base58btc`), as did:key and multibase `z` use it.
public enum Base58 {
    private static let alphabet = Array("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".utf8)
    private static let indexes: [Int8] = {
        var table = [Int8](repeating: -1, count: 128)
        for (index, character) in alphabet.enumerated() { table[Int(character)] = Int8(index) }
        return table
    }()

    /// Encodes `bytes`; each leading zero byte becomes a leading `1`.
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        let zeros = bytes.prefix { $0 == 0 }.count
        var digits: [UInt8] = []  // base-58 digits, least significant first
        for byte in bytes {
            var carry = Int(byte)
            for index in digits.indices {
                carry += Int(digits[index]) << 8
                digits[index] = UInt8(carry % 58)
                carry /= 58
            }
            while carry > 0 {
                digits.append(UInt8(carry % 58))
                carry /= 58
            }
        }
        let text = [UInt8](repeating: alphabet[0], count: zeros) + digits.reversed().map { alphabet[Int($0)] }
        return String(decoding: text, as: UTF8.self)
    }

    /// The longest text `decode` accepts: decoding is quadratic in the length, so callers bound what they
    /// decode by its format (a did:key's key is under 64 characters) and this bounds the rest.
    public static let maximumDecodedLength = 1024

    /// Decodes base58btc text, or nil when it has a character outside the alphabet or is longer than
    /// `maximumDecodedLength`.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        guard text.utf8.count <= maximumDecodedLength else { return nil }
        let characters = Array(text.utf8)
        let zeros = characters.prefix { $0 == alphabet[0] }.count
        var bytes: [UInt8] = []  // base-256, least significant first
        for character in characters {
            guard character < 128, indexes[Int(character)] >= 0 else { return nil }
            var carry = Int(indexes[Int(character)])
            for index in bytes.indices {
                carry += Int(bytes[index]) * 58
                bytes[index] = UInt8(carry & 0xFF)
                carry >>= 8
            }
            while carry > 0 {
                bytes.append(UInt8(carry & 0xFF))
                carry >>= 8
            }
        }
        return [UInt8](repeating: 0, count: zeros) + bytes.reversed()
    }
}
