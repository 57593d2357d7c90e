/// Base64 forms the protocols here use: standard with padding, and URL-safe without padding. Byte-level, without
/// Foundation's string operations: every authorised call decodes its capability container with it.
public enum Base64 {
    private static let standardAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let urlAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Each byte's 6-bit value in either alphabet; 0xFF for a byte that is in neither.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in standardAlphabet.enumerated() { table[Int(byte)] = UInt8(index) }
        table[Int(UInt8(ascii: "-"))] = 62
        table[Int(UInt8(ascii: "_"))] = 63
        return table
    }()

    public static func standard(_ bytes: some Collection<UInt8>) -> String {
        encode(bytes, alphabet: standardAlphabet, padded: true)
    }

    public static func url(_ bytes: some Collection<UInt8>) -> String {
        encode(bytes, alphabet: urlAlphabet, padded: false)
    }

    private static func encode(_ bytes: some Collection<UInt8>, alphabet: [UInt8], padded: Bool) -> String {
        let input = Array(bytes)
        var output: [UInt8] = []
        output.reserveCapacity((input.count + 2) / 3 * 4)
        var index = 0
        while index + 3 <= input.count {
            let chunk = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
            output += [
                alphabet[Int(chunk >> 18 & 63)], alphabet[Int(chunk >> 12 & 63)], alphabet[Int(chunk >> 6 & 63)],
                alphabet[Int(chunk & 63)],
            ]
            index += 3
        }
        let rest = input.count - index
        if rest > 0 {
            let chunk = UInt32(input[index]) << 16 | (rest == 2 ? UInt32(input[index + 1]) << 8 : 0)
            output += [alphabet[Int(chunk >> 18 & 63)], alphabet[Int(chunk >> 12 & 63)]]
            if rest == 2 { output.append(alphabet[Int(chunk >> 6 & 63)]) }
            if padded { output += Array(repeating: UInt8(ascii: "="), count: 3 - rest) }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Decodes either alphabet, with or without padding (surrounding whitespace ignored); nil for anything else.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var input = Array(text.utf8)[...]
        while let last = input.last, last == 0x20 || last == 0x0A || last == 0x0D || last == 0x09 { input.removeLast() }
        while let first = input.first, first == 0x20 || first == 0x0A || first == 0x0D || first == 0x09 {
            input.removeFirst()
        }
        var padding = 0
        while input.last == UInt8(ascii: "=") {
            input.removeLast()
            padding += 1
        }
        guard padding <= 2, input.count % 4 != 1 else { return nil }
        if padding > 0, (input.count + padding) % 4 != 0 { return nil }
        // Four characters at a time into a buffer of the exact size, the table read once: every call pays this.
        let table = values
        let count = input.count
        let outputCount = count / 4 * 3 + max(0, count % 4 - 1)
        var valid = true
        let output = [UInt8](unsafeUninitializedCapacity: outputCount) { buffer, initialized in
            table.withUnsafeBufferPointer { table in
                input.withUnsafeBufferPointer { input in
                    var read = 0
                    var written = 0
                    while read + 4 <= count {
                        let a = table[Int(input[read])], b = table[Int(input[read + 1])]
                        let c = table[Int(input[read + 2])], d = table[Int(input[read + 3])]
                        guard (a | b | c | d) & 0xC0 == 0 else {
                            valid = false
                            return
                        }
                        let chunk = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                        buffer[written] = UInt8(truncatingIfNeeded: chunk >> 16)
                        buffer[written + 1] = UInt8(truncatingIfNeeded: chunk >> 8)
                        buffer[written + 2] = UInt8(truncatingIfNeeded: chunk)
                        read += 4
                        written += 3
                    }
                    let rest = count - read
                    if rest >= 2 {
                        let a = table[Int(input[read])], b = table[Int(input[read + 1])]
                        let c = rest == 3 ? table[Int(input[read + 2])] : 0
                        guard (a | b | c) & 0xC0 == 0 else {
                            valid = false
                            return
                        }
                        let chunk = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6
                        buffer[written] = UInt8(truncatingIfNeeded: chunk >> 16)
                        written += 1
                        if rest == 3 {
                            buffer[written] = UInt8(truncatingIfNeeded: chunk >> 8)
                            written += 1
                        }
                    }
                    initialized = written
                }
            }
        }
        guard valid, output.count == outputCount else { return nil }
        return output
    }
}
