internal import CSodium
public import OrreryIdentity

/// Bytes in transit or at rest for one party only: a libsodium sealed box (X25519 + XSalsa20-Poly1305, an ephemeral
/// sender key) to that party's Ed25519 did:key, converted to X25519 (RFC 7748 birational map). Only its signing key
/// opens it; a changed byte fails authentication. (A private image's pull token, sealed to the orchestrator at rest
/// and to the chosen device on the way to it.)
public enum SealedBox {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private static let ready: Bool = sodium_init() >= 0

    /// Seals `bytes` to `recipient` (an Ed25519 did:key).
    public static func seal(_ bytes: [UInt8], to recipient: DID) throws -> [UInt8] {
        guard ready else { throw Failure(description: "libsodium failed to initialise") }
        guard case .ed25519(let edPublic) = recipient.publicKey, edPublic.count == 32 else {
            throw Failure(description: "\(recipient) is not an Ed25519 did:key: nothing is sealed to it")
        }
        var xPublic = [UInt8](repeating: 0, count: 32)
        guard crypto_sign_ed25519_pk_to_curve25519(&xPublic, edPublic) == 0 else {
            throw Failure(description: "\(recipient)'s key has no X25519 counterpart")
        }
        var sealed = [UInt8](repeating: 0, count: bytes.count + Int(crypto_box_sealbytes()))
        guard crypto_box_seal(&sealed, bytes, UInt64(bytes.count), xPublic) == 0 else {
            throw Failure(description: "sealing failed")
        }
        return sealed
    }

    /// Opens a box sealed to `recipient`'s DID with its signing key.
    public static func open(_ sealed: [UInt8], with recipient: SigningKey) throws -> [UInt8] {
        guard ready else { throw Failure(description: "libsodium failed to initialise") }
        let overhead = Int(crypto_box_sealbytes())
        guard sealed.count >= overhead else { throw Failure(description: "a sealed box is at least \(overhead) bytes") }
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
        var opened = [UInt8](repeating: 0, count: sealed.count - overhead)
        guard crypto_box_seal_open(&opened, sealed, UInt64(sealed.count), xPublic, xSecret) == 0 else {
            throw Failure(description: "the box does not open with \(recipient.did): not sealed to it, or altered")
        }
        return opened
    }
}
