#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
public import OrreryProto
internal import SwiftProtobuf

/// The `Signed` envelope of docs/ARCHITECTURE.md §2: a payload carried and stored exactly as signed, each signature covering
/// `"orrery-sig-v1" 0x00 ‖ type ‖ 0x00 ‖ payload`, so a signature made for one type never passes as another.
public enum SignedMessage {
    /// The bytes a signature covers.
    public static func signingInput(type: String, payload: some Collection<UInt8>) -> [UInt8] {
        Array("orrery-sig-v1".utf8) + [0] + Array(type.utf8) + [0] + Array(payload)
    }

    /// A `Signed` envelope over `payload`, signed by each of `signers`.
    public static func make(type: String, payload: Data, signers: [SigningKey]) -> Orrery_Common_V1_Signed {
        var signed = Orrery_Common_V1_Signed()
        signed.type = type
        signed.payload = payload
        for signer in signers { countersign(&signed, with: signer) }
        return signed
    }

    /// Adds `signer`'s signature (a countersignature when others already signed).
    public static func countersign(_ signed: inout Orrery_Common_V1_Signed, with signer: SigningKey) {
        let signature = signer.sign(signingInput(type: signed.type, payload: signed.payload))
        signed.signatures.append(
            .with {
                $0.did = signer.did.string
                $0.alg = signer.publicKey.algorithm
                $0.sig = Data(signature)
            })
    }

    /// Checks every signature and that each of `required` signed; returns the DIDs that signed.
    /// - Throws: `SignedMessageError` for a bad or unknown signature, a wrong type, or a missing signer.
    @discardableResult
    public static func verify(
        _ signed: Orrery_Common_V1_Signed,
        type expectedType: String? = nil,
        requiring required: [DID] = []
    ) throws -> [DID] {
        if let expectedType, signed.type != expectedType {
            throw SignedMessageError.wrongType(expected: expectedType, found: signed.type)
        }
        guard !signed.signatures.isEmpty else { throw SignedMessageError.unsigned }
        let input = signingInput(type: signed.type, payload: signed.payload)
        var signers: [DID] = []
        for signature in signed.signatures {
            let did: DID
            do {
                did = try DID(signature.did)
            } catch {
                throw SignedMessageError.badSigner(signature.did, "\(error)")
            }
            guard signature.alg == did.publicKey.algorithm else {
                throw SignedMessageError.badSigner(signature.did, "algorithm \(signature.alg) does not match its key")
            }
            guard did.publicKey.verify(signature: signature.sig, message: input) else {
                throw SignedMessageError.invalidSignature(did.string)
            }
            signers.append(did)
        }
        for did in required where !signers.contains(did) {
            throw SignedMessageError.missingSignature(did.string)
        }
        return signers
    }
}

/// Why a `Signed` envelope was refused.
public enum SignedMessageError: Error, Equatable, CustomStringConvertible, Sendable {
    case unsigned
    case wrongType(expected: String, found: String)
    case badSigner(String, String)
    case invalidSignature(String)
    case missingSignature(String)

    public var description: String {
        switch self {
        case .unsigned: return "the message carries no signature"
        case .wrongType(let expected, let found): return "expected a signed \(expected), found \(found)"
        case .badSigner(let did, let reason): return "signer \(did): \(reason)"
        case .invalidSignature(let did): return "the signature of \(did) does not verify"
        case .missingSignature(let did): return "\(did) has not signed"
        }
    }
}
