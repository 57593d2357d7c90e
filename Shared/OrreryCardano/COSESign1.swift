public import Crypto

/// CIP-8 message signing (what CIP-30 wallets return from `signData`): a COSE_Sign1 whose protected header names
/// EdDSA and the signing address, and the COSE_Key with the verification key.
public struct COSESign1: Sendable, Hashable {
    /// The untagged COSE_Sign1 array `[protected, unprotected, payload, signature]`.
    public let signature: [UInt8]
    /// The COSE_Key: `{1: 1 (OKP), 3: -8 (EdDSA), -1: 6 (Ed25519), -2: public key}`.
    public let key: [UInt8]

    /// Signs `payload` on behalf of `address` (whose payment key is `signingKey`).
    public static func sign(
        payload: [UInt8], address: CardanoAddress, signingKey: Curve25519.Signing.PrivateKey
    ) throws -> COSESign1 {
        let protected = CBOR.map([
            CBORPair(.unsigned(1), .int(-8)), CBORPair(.text("address"), .bytes(address.bytes)),
        ]).encoded
        let toSign = sigStructure(protected: protected, payload: payload)
        let signature = Array(try signingKey.signature(for: toSign))
        let message = CBOR.array([
            .bytes(protected), .map([CBORPair(.text("hashed"), .bool(false))]), .bytes(payload), .bytes(signature),
        ])
        let key = CBOR.map([
            CBORPair(.unsigned(1), .unsigned(1)), CBORPair(.unsigned(3), .int(-8)), CBORPair(.int(-1), .unsigned(6)),
            CBORPair(.int(-2), .bytes(Array(signingKey.publicKey.rawRepresentation))),
        ])
        return COSESign1(signature: message.encoded, key: key.encoded)
    }

    public init(signature: [UInt8], key: [UInt8]) {
        self.signature = signature
        self.key = key
    }

    /// What the signature covers: `["Signature1", protected, external_aad = h'', payload]`.
    static func sigStructure(protected: [UInt8], payload: [UInt8]) -> [UInt8] {
        CBOR.array([.text("Signature1"), .bytes(protected), .bytes([]), .bytes(payload)]).encoded
    }

    /// Checks the signature and that the protected header's address is the key's enterprise (or base) address
    /// payment credential; returns the payload and the address.
    public func verify() throws -> (payload: [UInt8], address: CardanoAddress) {
        guard case .array(let parts) = try CBOR.decode(signature), parts.count == 4,
            case .bytes(let protected) = parts[0], case .bytes(let payload) = parts[2],
            case .bytes(let signatureBytes) = parts[3]
        else { throw COSEError.malformed("not a COSE_Sign1 array") }
        let header = try CBOR.decode(protected)
        guard header[.unsigned(1)] == .int(-8) else { throw COSEError.malformed("the algorithm is not EdDSA") }
        guard case .bytes(let addressBytes)? = header[.text("address")], addressBytes.count >= 29 else {
            throw COSEError.malformed("the protected header names no address")
        }
        let keyMap = try CBOR.decode(key)
        guard case .bytes(let publicKeyBytes)? = keyMap[.int(-2)],
            let publicKey = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKeyBytes)
        else { throw COSEError.malformed("the COSE_Key holds no Ed25519 public key") }
        guard publicKey.isValidSignature(signatureBytes, for: Self.sigStructure(protected: protected, payload: payload))
        else { throw COSEError.badSignature }
        guard Array(addressBytes[1..<29]) == Blake2b.hash224(publicKeyBytes) else {
            throw COSEError.malformed("the address is not the signing key's")
        }
        let network: CardanoNetwork = addressBytes[0] & 0x0F == 1 ? .mainnet : .testnet
        return (payload, CardanoAddress(paymentKey: publicKey, network: network))
    }
}

public enum COSEError: Error, Equatable {
    case malformed(String)
    case badSignature
}
