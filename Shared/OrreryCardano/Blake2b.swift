internal import CSodium

/// BLAKE2b (unkeyed) from libsodium: 28-byte digests for Cardano key hashes, 32-byte ones for transaction ids.
public enum Blake2b {
    /// The `length`-byte digest (16…64) of `data`.
    public static func hash(_ data: [UInt8], length: Int) -> [UInt8] {
        precondition((16...64).contains(length), "BLAKE2b digests are 16 to 64 bytes")
        var output = [UInt8](repeating: 0, count: length)
        let status = crypto_generichash(&output, length, data, UInt64(data.count), nil, 0)
        precondition(status == 0, "crypto_generichash cannot fail for valid lengths")
        return output
    }

    public static func hash224(_ data: [UInt8]) -> [UInt8] { hash(data, length: 28) }
    public static func hash256(_ data: [UInt8]) -> [UInt8] { hash(data, length: 32) }
}
