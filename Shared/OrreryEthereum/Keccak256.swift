internal import CNettle

/// Keccak-256 as Ethereum uses it: the Keccak-f[1600] sponge (rate 136 bytes) with Keccak's original `0x01…0x80`
/// padding — not SHA3-256, whose domain bits differ. The permutation is nettle's `sha3_permute`.
public enum Keccak256 {
    static let rate = 136

    /// The 32-byte digest of `data`.
    public static func hash(_ data: some Collection<UInt8>) -> [UInt8] {
        var state = sha3_state()
        var block = [UInt8](repeating: 0, count: rate)
        var filled = 0
        for byte in data {
            block[filled] = byte
            filled += 1
            if filled == rate {
                absorb(block, into: &state)
                filled = 0
            }
        }
        for index in filled..<rate { block[index] = 0 }
        block[filled] ^= 0x01
        block[rate - 1] ^= 0x80
        absorb(block, into: &state)
        var digest = [UInt8]()
        digest.reserveCapacity(32)
        withUnsafeBytes(of: state.a) { lanes in
            for lane in 0..<4 {
                let value = lanes.loadUnaligned(fromByteOffset: lane * 8, as: UInt64.self)
                for shift in stride(from: 0, to: 64, by: 8) { digest.append(UInt8(truncatingIfNeeded: value >> shift)) }
            }
        }
        return digest
    }

    /// The digest of a string's UTF-8 bytes.
    public static func hash(_ text: String) -> [UInt8] { hash(Array(text.utf8)) }

    private static func absorb(_ block: [UInt8], into state: inout sha3_state) {
        withUnsafeMutableBytes(of: &state.a) { lanes in
            for lane in 0..<(rate / 8) {
                var value: UInt64 = 0
                for byte in 0..<8 { value |= UInt64(block[lane * 8 + byte]) << (8 * byte) }
                let current = lanes.loadUnaligned(fromByteOffset: lane * 8, as: UInt64.self)
                lanes.storeBytes(of: current ^ value, toByteOffset: lane * 8, as: UInt64.self)
            }
        }
        nettle_sha3_permute(&state)
    }
}
