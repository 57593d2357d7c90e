/// Varsig v1 headers of the signatures UCAN tokens carry (algorithm and payload encoding).
public enum VarsigHeader {
    /// 0x34 varsig, v1, EdDSA (0xed), curve Ed25519 (0xed), SHA-512 (0x13), DAG-CBOR (0x71).
    public static let ed25519: [UInt8] = [0x34, 0x01, 0xED, 0x01, 0xED, 0x01, 0x13, 0x71]
    /// 0x34 varsig, v1, ECDSA (0xec), curve P-256 (0x1200), SHA-256 (0x12), DAG-CBOR (0x71).
    public static let es256: [UInt8] = [0x34, 0x01, 0xEC, 0x01, 0x80, 0x24, 0x12, 0x71]

    /// The header a signature by `key` must carry.
    public static func header(for key: PublicKey) -> [UInt8] {
        switch key {
        case .ed25519: return ed25519
        case .p256: return es256
        }
    }
}
