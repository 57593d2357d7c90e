internal import OrreryIdentity
internal import CSecp256k1

/// Errors from secp256k1 keys and signatures.
public enum EthereumKeyError: Error, Equatable, CustomStringConvertible {
    case invalidPrivateKey
    case invalidSignature(String)

    public var description: String {
        switch self {
        case .invalidPrivateKey: "not a secp256k1 private key (32 bytes, non-zero, below the group order)"
        case .invalidSignature(let why): "invalid signature: \(why)"
        }
    }
}

/// One libsecp256k1 context for the process; after creation it is only read, which the library allows from any
/// thread.
nonisolated(unsafe) private let context: OpaquePointer = {
    guard let created = secp256k1_context_create(UInt32(SECP256K1_CONTEXT_NONE)) else {
        fatalError("libsecp256k1 could not create a context")
    }
    return created
}()

/// A recoverable ECDSA signature: r ‖ s (64 bytes, low s) and the recovery id (0 or 1).
public struct RecoverableSignature: Sendable, Hashable {
    public let r: [UInt8]
    public let s: [UInt8]
    public let recoveryID: UInt8

    /// The 65-byte form wallets exchange: r ‖ s ‖ v with v = 27 + recovery id.
    public var rsv: [UInt8] { r + s + [27 + recoveryID] }

    public init(r: [UInt8], s: [UInt8], recoveryID: UInt8) {
        self.r = r
        self.s = s
        self.recoveryID = recoveryID
    }

    /// Parses r ‖ s ‖ v, v being 27/28 or 0/1.
    public init(rsv bytes: [UInt8]) throws {
        guard bytes.count == 65 else {
            throw EthereumKeyError.invalidSignature("expected 65 bytes, got \(bytes.count)")
        }
        let v = bytes[64]
        let id: UInt8
        switch v {
        case 27, 28: id = v - 27
        case 0, 1: id = v
        default: throw EthereumKeyError.invalidSignature("v must be 27, 28, 0 or 1, got \(v)")
        }
        self.init(r: Array(bytes[0..<32]), s: Array(bytes[32..<64]), recoveryID: id)
    }

    /// The address whose key made this signature over `digest`. High-s signatures (malleable twins) are refused.
    public func recoverAddress(digest: [UInt8]) throws -> EthereumAddress {
        guard digest.count == 32 else { throw EthereumKeyError.invalidSignature("the digest must be 32 bytes") }
        guard UInt256(bigEndian: s).map({ $0 <= Self.halfOrder }) == true else {
            throw EthereumKeyError.invalidSignature("s is in the upper half of the curve order")
        }
        var signature = secp256k1_ecdsa_recoverable_signature()
        let compact = r + s
        guard secp256k1_ecdsa_recoverable_signature_parse_compact(context, &signature, compact, Int32(recoveryID)) == 1
        else { throw EthereumKeyError.invalidSignature("r or s out of range") }
        var publicKey = secp256k1_pubkey()
        guard secp256k1_ecdsa_recover(context, &publicKey, &signature, digest) == 1 else {
            throw EthereumKeyError.invalidSignature("no public key recovers from it")
        }
        return EthereumAddress(publicKey: Secp256k1PrivateKey.serializeUncompressed(publicKey))
    }

    /// n / 2 for secp256k1's group order n.
    static let halfOrder =
        UInt256(
            decimal: "57896044618658097711785492504343953926418782139537452191302581570759080747168") ?? .zero
}

/// A secp256k1 private key: signs 32-byte digests deterministically (RFC 6979) with recovery ids.
public struct Secp256k1PrivateKey: Sendable {
    private let secret: [UInt8]

    /// - Throws: `EthereumKeyError.invalidPrivateKey` unless `bytes` is a valid 32-byte scalar.
    public init(bytes: [UInt8]) throws {
        guard bytes.count == 32, secp256k1_ec_seckey_verify(context, bytes) == 1 else {
            throw EthereumKeyError.invalidPrivateKey
        }
        self.secret = bytes
    }

    /// A fresh key from the system's random source.
    public static func generate() -> Secp256k1PrivateKey {
        var generator = SystemRandomNumberGenerator()
        while true {
            let candidate = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if let key = try? Secp256k1PrivateKey(bytes: candidate) { return key }
        }
    }

    /// The raw scalar (for writing a key file).
    public var rawRepresentation: [UInt8] { secret }

    /// The uncompressed public key, 0x04 ‖ x ‖ y.
    public var publicKey: [UInt8] {
        var publicKey = secp256k1_pubkey()
        guard secp256k1_ec_pubkey_create(context, &publicKey, secret) == 1 else {
            preconditionFailure("a verified secret key always has a public key")
        }
        return Self.serializeUncompressed(publicKey)
    }

    /// The account address of this key.
    public var address: EthereumAddress { EthereumAddress(publicKey: publicKey) }

    /// Signs a 32-byte digest; the signature is low-s.
    public func sign(digest: [UInt8]) -> RecoverableSignature {
        precondition(digest.count == 32, "ECDSA here signs 32-byte digests")
        var signature = secp256k1_ecdsa_recoverable_signature()
        guard secp256k1_ecdsa_sign_recoverable(context, &signature, digest, secret, nil, nil) == 1 else {
            preconditionFailure("signing with a verified key and the default nonce function cannot fail")
        }
        var compact = [UInt8](repeating: 0, count: 64)
        var recoveryID: Int32 = 0
        secp256k1_ecdsa_recoverable_signature_serialize_compact(context, &compact, &recoveryID, &signature)
        return RecoverableSignature(
            r: Array(compact[0..<32]), s: Array(compact[32..<64]), recoveryID: UInt8(recoveryID))
    }

    static func serializeUncompressed(_ key: secp256k1_pubkey) -> [UInt8] {
        var key = key
        var output = [UInt8](repeating: 0, count: 65)
        var length = 65
        secp256k1_ec_pubkey_serialize(context, &output, &length, &key, UInt32(SECP256K1_EC_UNCOMPRESSED))
        return output
    }
}

/// A 20-byte account address, shown with the EIP-55 mixed-case checksum.
public struct EthereumAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// The address of an uncompressed public key: the last 20 bytes of keccak-256(x ‖ y).
    public init(publicKey: [UInt8]) {
        bytes = Array(Keccak256.hash(publicKey.dropFirst())[12...])
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 20 else { return nil }
        self.bytes = bytes
    }

    /// Parses `0x` + 40 hex digits. Mixed-case input must carry a correct EIP-55 checksum; all-lower or all-upper
    /// input carries none and is accepted.
    public init?(_ text: String) {
        guard text.hasPrefix("0x"), text.count == 42, let bytes = Hex.decode(text) else { return nil }
        self.bytes = bytes
        let body = text.dropFirst(2)
        let mixed = body.contains(where: \.isLowercase) && body.contains(where: \.isUppercase)
        if mixed && checksummed != text { return nil }
    }

    /// EIP-55: a hex letter is upper case where the matching nibble of keccak-256(lower-case hex) is ≥ 8.
    public var checksummed: String {
        let lower = Hex.encode(bytes)
        let hash = Keccak256.hash(lower)
        var output = "0x"
        for (index, character) in lower.enumerated() {
            let nibble = index % 2 == 0 ? hash[index / 2] >> 4 : hash[index / 2] & 0x0F
            output.append(character.isLetter && nibble >= 8 ? Character(character.uppercased()) : character)
        }
        return output
    }

    public var description: String { checksummed }
}
