internal import CSodium
public import OrreryIdentity

/// An actor's signing key in transit: the Ed25519 seed in a libsodium sealed box (X25519 + XSalsa20-Poly1305, an
/// ephemeral sender key) to a party's did:key, its Ed25519 key converted to X25519 (RFC 7748 birational map). Only
/// that party's signing key opens it; a changed byte fails authentication.
public enum ActorKeySeal {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private static let ready: Bool = sodium_init() >= 0

    /// Seals `key`'s seed to `recipient` (an Ed25519 did:key).
    public static func seal(_ key: SigningKey, to recipient: DID) throws -> [UInt8] {
        guard ready else { throw Failure(description: "libsodium failed to initialise") }
        guard case .ed25519(let edPublic) = recipient.publicKey, edPublic.count == 32 else {
            throw Failure(description: "\(recipient) is not an Ed25519 did:key: an actor key is sealed only to one")
        }
        var xPublic = [UInt8](repeating: 0, count: 32)
        guard crypto_sign_ed25519_pk_to_curve25519(&xPublic, edPublic) == 0 else {
            throw Failure(description: "\(recipient)'s key has no X25519 counterpart")
        }
        let seed = key.seed
        var sealed = [UInt8](repeating: 0, count: seed.count + Int(crypto_box_sealbytes()))
        guard crypto_box_seal(&sealed, seed, UInt64(seed.count), xPublic) == 0 else {
            throw Failure(description: "sealing the actor key failed")
        }
        return sealed
    }

    /// Opens a sealed actor key with `recipient`'s signing key; the key must be the one `expected` names.
    public static func open(_ sealed: [UInt8], with recipient: SigningKey, expecting expected: DID) throws -> SigningKey
    {
        guard ready else { throw Failure(description: "libsodium failed to initialise") }
        guard sealed.count == 32 + Int(crypto_box_sealbytes()) else {
            throw Failure(
                description: "a sealed actor key is \(32 + Int(crypto_box_sealbytes())) bytes, not \(sealed.count)")
        }
        var edPublic = [UInt8](repeating: 0, count: 32)
        var edSecret = [UInt8](repeating: 0, count: 64)
        defer { sodium_memzero(&edSecret, 64) }
        guard crypto_sign_seed_keypair(&edPublic, &edSecret, recipient.seed) == 0 else {
            throw Failure(description: "cannot derive the recipient's key pair")
        }
        var xPublic = [UInt8](repeating: 0, count: 32)
        var xSecret = [UInt8](repeating: 0, count: 32)
        defer { sodium_memzero(&xSecret, 32) }
        guard crypto_sign_ed25519_pk_to_curve25519(&xPublic, edPublic) == 0,
            crypto_sign_ed25519_sk_to_curve25519(&xSecret, edSecret) == 0
        else { throw Failure(description: "the recipient's key has no X25519 counterpart") }
        var seed = [UInt8](repeating: 0, count: 32)
        defer { sodium_memzero(&seed, 32) }
        guard crypto_box_seal_open(&seed, sealed, UInt64(sealed.count), xPublic, xSecret) == 0 else {
            throw Failure(
                description: "the sealed actor key does not open with \(recipient.did): not sealed to it, or altered")
        }
        let key = try SigningKey(seed: seed)
        guard key.did == expected else {
            throw Failure(description: "the sealed key is \(key.did), not the actor's \(expected)")
        }
        return key
    }
}
