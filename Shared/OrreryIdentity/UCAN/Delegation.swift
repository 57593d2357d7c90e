#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// A UCAN 1.0 delegation: `iss` grants `aud` the authority to invoke `cmd` (and below) on `sub`, within `pol`.
public struct Delegation: Sendable {
    public let envelope: UCANEnvelope
    public let issuer: DID
    public let audience: DID
    /// Nil for a powerline delegation (any subject the delegator has authority over).
    public let subject: DID?
    public let command: Command
    public let policy: Policy
    public let nonce: [UInt8]
    public let meta: [String: IPLD]?
    public let notBefore: Int64?
    public let expiration: Int64?

    public var cid: CID { envelope.cid }

    /// Reads a delegation from its envelope.
    /// - Throws: `UCANError(.malformedToken)` when it is not a well-formed delegation.
    public init(envelope: UCANEnvelope) throws {
        guard envelope.tag == UCANEnvelope.delegationTag else {
            throw UCANError(.malformedToken, "expected a delegation, found \(envelope.tag)")
        }
        let reader = PayloadReader(payload: envelope.payload, kind: "delegation")
        self.envelope = envelope
        issuer = try reader.did("iss")
        audience = try reader.did("aud")
        guard envelope.payload["sub"] != nil else { throw reader.fail("'sub' is required (null for a powerline)") }
        subject = try reader.optionalDID("sub")
        command = try reader.command()
        guard let policyValue = envelope.payload["pol"] else { throw reader.fail("'pol' is required") }
        do {
            policy = try Policy(policyValue)
        } catch {
            throw reader.fail("\(error)")
        }
        nonce = try reader.bytes("nonce")
        meta = try reader.map("meta", required: false)
        notBefore = try reader.timestamp("nbf", required: false)
        expiration = try reader.timestamp("exp", required: true)
    }

    /// Decodes a delegation from its DAG-CBOR bytes.
    public init(bytes: [UInt8]) throws {
        try self.init(envelope: UCANEnvelope(bytes: bytes))
    }

    /// Issues a delegation signed by `issuer`.
    /// - Parameters:
    ///   - subject: The resource owner; nil makes a powerline delegation.
    ///   - expiration: Unix seconds, or nil for none.
    public static func issue(
        by issuer: SigningKey,
        to audience: DID,
        subject: DID?,
        command: Command,
        policy: Policy = .empty,
        notBefore: Int64? = nil,
        expiration: Int64?,
        meta: [String: IPLD]? = nil,
        nonce: [UInt8] = Nonce.random()
    ) -> Delegation {
        var payload: [String: IPLD] = [
            "iss": .string(issuer.did.string),
            "aud": .string(audience.string),
            "sub": subject.map { .string($0.string) } ?? .null,
            "cmd": .string(command.string),
            "pol": policy.ipld,
            "nonce": .bytes(nonce),
            "exp": expiration.map { .integer($0) } ?? .null,
        ]
        if let notBefore { payload["nbf"] = .integer(notBefore) }
        if let meta { payload["meta"] = .map(meta) }
        return Delegation(
            envelope: UCANEnvelope(signing: payload, tag: UCANEnvelope.delegationTag, with: issuer),
            issuer: issuer.did, audience: audience, subject: subject, command: command, policy: policy, nonce: nonce,
            meta: meta, notBefore: notBefore, expiration: expiration)
    }

    private init(
        envelope: UCANEnvelope, issuer: DID, audience: DID, subject: DID?, command: Command, policy: Policy,
        nonce: [UInt8], meta: [String: IPLD]?, notBefore: Int64?, expiration: Int64?
    ) {
        self.envelope = envelope
        self.issuer = issuer
        self.audience = audience
        self.subject = subject
        self.command = command
        self.policy = policy
        self.nonce = nonce
        self.meta = meta
        self.notBefore = notBefore
        self.expiration = expiration
    }
}

/// Random nonces for tokens.
public enum Nonce {
    /// 12 random bytes (the size UCAN recommends).
    public static func random(count: Int = 12) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}
