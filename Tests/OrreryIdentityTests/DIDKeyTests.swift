import Crypto
import Foundation
import OrreryIdentity
import Testing

@Suite("did:key against the W3C CCG vectors")
struct DIDKeyTests {
    @Test("every Ed25519 vector: seed → the same DID and public key, and a Multikey document")
    func ed25519() throws {
        let vectors = try #require(try Vectors.json("did-key/ed25519-x25519.json") as? [String: [String: Any]])
        #expect(vectors.count >= 5)
        for (did, vector) in vectors {
            let seedText = try #require(vector["seed"] as? String)
            let seed = try #require(Hex.decode(seedText))
            let key = try SigningKey(seed: seed)
            #expect(key.did.string == did)
            let pair = try #require(vector["verificationKeyPair"] as? [String: Any])
            #expect(key.publicKey.rawBytes == (try Self.publicKeyBytes(pair)))
            let parsed = try DID(did)
            #expect(parsed.publicKey == key.publicKey)

            let document = DIDDocument(resolving: parsed)
            let method = did + "#" + did.dropFirst("did:key:".count)
            #expect(document.id == did)
            #expect(document.verificationMethod.count == 1)
            #expect(document.verificationMethod[0].type == "Multikey")
            #expect(document.verificationMethod[0].id == method)
            #expect(document.verificationMethod[0].publicKeyMultibase == String(did.dropFirst("did:key:".count)))
            for relationship in [
                document.authentication, document.assertionMethod, document.capabilityInvocation,
                document.capabilityDelegation,
            ] {
                #expect(relationship == [method])
            }
        }
    }

    @Test("every P-256 vector: the DID decodes to the JWK's point, and re-encodes to the same DID")
    func p256() throws {
        let vectors = try #require(try Vectors.json("did-key/nist-curves.json") as? [String: [String: Any]])
        var checked = 0
        for (did, vector) in vectors {
            let method = try #require(vector["verificationMethod"] as? [String: Any])
            let jwk = method["publicKeyJwk"] as? [String: String]
            guard jwk?["crv"] == "P-256" || (jwk == nil && did.hasPrefix("did:key:zDn")) else { continue }
            let compressed = try Self.publicKeyBytes(method)
            let parsed = try DID(did)
            #expect(parsed.publicKey == .p256(compressed))
            #expect(DID(publicKey: .p256(compressed)).string == did)
            checked += 1
        }
        #expect(checked == 3)
    }

    /// The raw public key a vector gives as base58 or as a JWK (P-256 points compressed).
    static func publicKeyBytes(_ method: [String: Any]) throws -> [UInt8] {
        var bytes: [UInt8]
        if let base58 = method["publicKeyBase58"] as? String {
            bytes = try #require(Base58.decode(base58))
        } else {
            let jwk = try #require(method["publicKeyJwk"] as? [String: String])
            let x = try #require(Base64.decode(jwk["x"] ?? ""))
            guard let yText = jwk["y"] else { return x }  // OKP (Ed25519): x is the key
            let y = try #require(Base64.decode(yText))
            bytes = [0x04] + x + y
        }
        if bytes.count == 65, bytes[0] == 0x04 {
            bytes = [UInt8(0x02 | (bytes[64] & 1))] + bytes[1...32]
        }
        return bytes
    }

    @Test("P-256 signatures verify; a tampered message does not")
    func p256Verification() throws {
        let privateKey = P256.Signing.PrivateKey()
        let did = DID(publicKey: .p256(Array(privateKey.publicKey.compressedRepresentation)))
        let message = Array("hello".utf8)
        let signature = Array(try privateKey.signature(for: message).rawRepresentation)
        #expect(try DID(did.string).publicKey.verify(signature: signature, message: message))
        #expect(!did.publicKey.verify(signature: signature, message: Array("hellO".utf8)))
    }

    @Test("malformed DIDs are refused with the reason")
    func malformed() {
        #expect(throws: DIDError.notDIDKey("did:web:example.com")) { try DID("did:web:example.com") }
        #expect(throws: DIDError.self) { try DID("did:key:abc") }
        #expect(throws: DIDError.self) { try DID("did:key:z0OIl") }
        // secp256k1 (0xe7) is a real did:key type this implementation does not support.
        #expect(throws: DIDError.unsupportedKeyType(0xE7)) {
            try DID("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme")
        }
        #expect(throws: DIDError.self) { try DID("did:key:z" + Base58.encode([0xED, 0x01, 1, 2, 3])) }
    }

    @Test("base58 and base32 round-trip, keeping leading zeros")
    func encodings() {
        for bytes: [UInt8] in [[], [0], [0, 0, 1], [255, 254, 0, 3], Array(0..<64)] {
            #expect(Base58.decode(Base58.encode(bytes)) == bytes)
            #expect(Base32.decode(Base32.encode(bytes)) == bytes)
        }
        #expect(Base58.encode(Array("hello world".utf8)) == "StV1DL6CwTryKyV")
        #expect(Base32.encode(Array("foobar".utf8)) == "mzxw6ytboi")
        #expect(Base58.decode("0OIl") == nil)
    }
}
