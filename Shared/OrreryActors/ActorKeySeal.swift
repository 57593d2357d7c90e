internal import CSodium
public import OrreryIdentity

/// An actor's signing key in transit: the Ed25519 seed in a `SealedBox` to a party's did:key. Only that party's
/// signing key opens it; a changed byte fails authentication.
public enum ActorKeySeal {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Seals `key`'s seed to `recipient` (an Ed25519 did:key).
    public static func seal(_ key: SigningKey, to recipient: DID) throws -> [UInt8] {
        do { return try SealedBox.seal(key.seed, to: recipient) } catch {
            throw Failure(description: "the actor key cannot be sealed: \(error)")
        }
    }

    /// Opens a sealed actor key with `recipient`'s signing key; the key must be the one `expected` names.
    public static func open(_ sealed: [UInt8], with recipient: SigningKey, expecting expected: DID) throws -> SigningKey
    {
        let size = 32 + Int(crypto_box_sealbytes())
        guard sealed.count == size else {
            throw Failure(description: "a sealed actor key is \(size) bytes, not \(sealed.count)")
        }
        var seed: [UInt8]
        do { seed = try SealedBox.open(sealed, with: recipient) } catch {
            throw Failure(description: "the sealed actor key does not open: \(error)")
        }
        defer { sodium_memzero(&seed, seed.count) }
        let key = try SigningKey(seed: seed)
        guard key.did == expected else {
            throw Failure(description: "the sealed key is \(key.did), not the actor's \(expected)")
        }
        return key
    }
}
