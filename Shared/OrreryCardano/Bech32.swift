/// Bech32 (BIP-173) as Cardano uses it for addresses: no 90-character limit, lower case.
public enum Bech32 {
    private static let alphabet = Array("qpzry9x8gf2tvdw0s3jn54khce6mua7l".utf8)
    private static let generator: [UInt32] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3]

    private static func polymod(_ values: [UInt8]) -> UInt32 {
        var checksum: UInt32 = 1
        for value in values {
            let top = checksum >> 25
            checksum = (checksum & 0x1ff_ffff) << 5 ^ UInt32(value)
            for index in 0..<5 where (top >> index) & 1 == 1 { checksum ^= generator[index] }
        }
        return checksum
    }

    private static func expand(_ hrp: String) -> [UInt8] {
        let utf8 = Array(hrp.utf8)
        return utf8.map { $0 >> 5 } + [0] + utf8.map { $0 & 31 }
    }

    /// Regroups bits (8 → 5 to encode, 5 → 8 to decode).
    static func convert(_ data: [UInt8], from: Int, to: Int, pad: Bool) -> [UInt8]? {
        var accumulator = 0
        var bits = 0
        var output: [UInt8] = []
        let maximum = (1 << to) - 1
        for value in data {
            guard Int(value) >> from == 0 else { return nil }
            accumulator = accumulator << from | Int(value)
            bits += from
            while bits >= to {
                bits -= to
                output.append(UInt8((accumulator >> bits) & maximum))
            }
        }
        if pad {
            if bits > 0 { output.append(UInt8((accumulator << (to - bits)) & maximum)) }
        } else if bits >= from || (accumulator << (to - bits)) & maximum != 0 {
            return nil
        }
        return output
    }

    public static func encode(hrp: String, data: [UInt8]) -> String {
        let words = convert(data, from: 8, to: 5, pad: true) ?? []
        let checksumInput = expand(hrp) + words + [0, 0, 0, 0, 0, 0]
        let checksum = polymod(checksumInput) ^ 1
        let checksumWords = (0..<6).map { UInt8((checksum >> (5 * (5 - $0))) & 31) }
        return hrp + "1" + String(decoding: (words + checksumWords).map { alphabet[Int($0)] }, as: UTF8.self)
    }

    /// The human-readable part and the data, or nil when the text is not valid lower-case bech32.
    public static func decode(_ text: String) -> (hrp: String, data: [UInt8])? {
        guard text == text.lowercased(), let separator = text.lastIndex(of: "1") else { return nil }
        let hrp = String(text[..<separator])
        let body = text[text.index(after: separator)...]
        guard !hrp.isEmpty, body.count >= 6 else { return nil }
        var words: [UInt8] = []
        for character in body.utf8 {
            guard let index = alphabet.firstIndex(of: character) else { return nil }
            words.append(UInt8(index))
        }
        guard polymod(expand(hrp) + words) == 1,
            let data = convert(Array(words.dropLast(6)), from: 5, to: 8, pad: false)
        else { return nil }
        return (hrp, data)
    }
}
