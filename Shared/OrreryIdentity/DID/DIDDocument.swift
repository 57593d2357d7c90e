#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// The DID document of a did:key (W3C DID Core), with one `Multikey` verification method referenced from
/// authentication, assertionMethod, capabilityInvocation and capabilityDelegation.
public struct DIDDocument: Codable, Sendable, Equatable {
    public struct VerificationMethod: Codable, Sendable, Equatable {
        public var id: String
        public var type: String
        public var controller: String
        public var publicKeyMultibase: String
    }

    public var context: [String]
    public var id: String
    public var verificationMethod: [VerificationMethod]
    public var authentication: [String]
    public var assertionMethod: [String]
    public var capabilityInvocation: [String]
    public var capabilityDelegation: [String]

    enum CodingKeys: String, CodingKey {
        case context = "@context"
        case id, verificationMethod, authentication, assertionMethod, capabilityInvocation, capabilityDelegation
    }

    /// Resolves `did` offline.
    public init(resolving did: DID) {
        let methodID = did.string + "#" + did.multibaseKey
        context = ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"]
        id = did.string
        verificationMethod = [
            .init(id: methodID, type: "Multikey", controller: did.string, publicKeyMultibase: did.multibaseKey)
        ]
        authentication = [methodID]
        assertionMethod = [methodID]
        capabilityInvocation = [methodID]
        capabilityDelegation = [methodID]
    }

    /// The document as pretty-printed JSON with sorted keys.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
