internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics

/// A public key a DID names: Ed25519 (signing and verification) or P-256 (verification).
public enum PublicKey: Sendable, Hashable {
    /// 32 bytes.
    case ed25519([UInt8])
    /// 33 bytes, SEC1 compressed.
    case p256([UInt8])

    /// Multicodec codes of the key types (`ed25519-pub`, `p256-pub`).
    public static let ed25519Codec: UInt64 = 0xED
    public static let p256Codec: UInt64 = 0x1200

    /// The key from its multicodec-prefixed bytes (what a did:key carries after the multibase prefix).
    /// - Throws: `DIDError` for an unsupported key type or a key of the wrong size or off its curve.
    public init(multicodecBytes bytes: [UInt8]) throws {
        var offset = 0
        guard let codec = Varint.decode(bytes, offset: &offset) else {
            throw DIDError.malformed("truncated multicodec prefix")
        }
        let key = Array(bytes[offset...])
        switch codec {
        case Self.ed25519Codec:
            guard key.count == 32 else { throw DIDError.malformed("an Ed25519 key has 32 bytes, not \(key.count)") }
            self = .ed25519(key)
        case Self.p256Codec:
            guard key.count == 33, (try? P256.Signing.PublicKey(compressedRepresentation: key)) != nil else {
                throw DIDError.malformed("not a compressed P-256 point")
            }
            self = .p256(key)
        default:
            throw DIDError.unsupportedKeyType(codec)
        }
    }

    /// The multicodec-prefixed key bytes.
    public var multicodecBytes: [UInt8] {
        switch self {
        case .ed25519(let key): return Varint.encode(Self.ed25519Codec) + key
        case .p256(let key): return Varint.encode(Self.p256Codec) + key
        }
    }

    /// The raw key bytes.
    public var rawBytes: [UInt8] {
        switch self {
        case .ed25519(let key), .p256(let key): return key
        }
    }

    /// The signature algorithm's name as the `Signed` envelope records it: `Ed25519` or `ES256`.
    public var algorithm: String {
        switch self {
        case .ed25519: return "Ed25519"
        case .p256: return "ES256"
        }
    }

    /// Whether `signature` is this key's signature over `message` (ES256: raw r‖s over SHA-256 of the message).
    public func verify(signature: some DataProtocol, message: some DataProtocol) -> Bool {
        switch self {
        case .ed25519(let key):
            guard let publicKey = try? Curve25519.Signing.PublicKey(rawRepresentation: key) else { return false }
            return publicKey.isValidSignature(signature, for: message)
        case .p256(let key):
            guard let publicKey = try? P256.Signing.PublicKey(compressedRepresentation: key),
                let ecdsa = try? P256.Signing.ECDSASignature(rawRepresentation: signature)
            else { return false }
            return publicKey.isValidSignature(ecdsa, for: message)
        }
    }
}
