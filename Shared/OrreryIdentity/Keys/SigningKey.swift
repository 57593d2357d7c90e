internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics

/// An Ed25519 private key: a party's identity (its did:key) and what it signs with.
public struct SigningKey: Sendable {
    private let key: Curve25519.Signing.PrivateKey

    /// A new random key.
    public init() {
        key = Curve25519.Signing.PrivateKey()
    }

    /// The key of a 32-byte seed.
    /// - Throws: `KeyFileError.malformed` for a seed of the wrong size.
    public init(seed: [UInt8]) throws {
        do {
            key = try Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        } catch {
            throw KeyFileError.malformed("an Ed25519 seed has 32 bytes")
        }
    }

    /// The 32-byte seed (secret).
    public var seed: [UInt8] { Array(key.rawRepresentation) }

    public var publicKey: PublicKey { .ed25519(Array(key.publicKey.rawRepresentation)) }

    /// The key's did:key.
    public var did: DID { DID(publicKey: publicKey) }

    /// An Ed25519 signature over `message`.
    public func sign(_ message: some DataProtocol) -> [UInt8] {
        // Signing with a valid key does not fail; swift-crypto's API throws only for its other backends.
        (try? Array(key.signature(for: message))) ?? []
    }
}
