/// A UCAN 1.0 invocation: `iss` asks to run `cmd` with `args` on `sub`, proving its authority with `prf`
/// (delegation CIDs, root first, ending with the one naming the invoker).
public struct Invocation: Sendable {
    public let envelope: UCANEnvelope
    public let issuer: DID
    public let subject: DID
    /// The executor, when it differs from the subject.
    public let audience: DID?
    public let command: Command
    public let arguments: [String: IPLD]
    public let proofs: [CID]
    public let meta: [String: IPLD]?
    public let nonce: [UInt8]
    public let expiration: Int64?
    public let issuedAt: Int64?
    public let cause: CID?

    public var cid: CID { envelope.cid }

    /// Reads an invocation from its envelope.
    /// - Throws: `UCANError(.malformedToken)` when it is not a well-formed invocation.
    public init(envelope: UCANEnvelope) throws {
        guard envelope.tag == UCANEnvelope.invocationTag else {
            throw UCANError(.malformedToken, "expected an invocation, found \(envelope.tag)")
        }
        let reader = PayloadReader(payload: envelope.payload, kind: "invocation")
        self.envelope = envelope
        issuer = try reader.did("iss")
        subject = try reader.did("sub")
        audience = try reader.optionalDID("aud")
        command = try reader.command()
        guard let arguments = try reader.map("args", required: true) else { throw reader.fail("'args' is required") }
        self.arguments = arguments
        guard case .list(let links)? = envelope.payload["prf"] else {
            throw reader.fail("'prf' must be a list of links")
        }
        proofs = try links.map { link in
            guard case .link(let cid) = link else { throw reader.fail("'prf' must hold CID links") }
            return cid
        }
        meta = try reader.map("meta", required: false)
        nonce = try reader.bytes("nonce")
        expiration = try reader.timestamp("exp", required: true)
        issuedAt = try reader.timestamp("iat", required: false)
        switch envelope.payload["cause"] {
        case nil, .null?: cause = nil
        case .link(let cid)?: cause = cid
        default: throw reader.fail("'cause' must be a link")
        }
    }

    public init(bytes: [UInt8]) throws {
        try self.init(envelope: UCANEnvelope(bytes: bytes))
    }

    /// Signs an invocation by `issuer`.
    /// - Parameters:
    ///   - proofs: The delegation chain, root first.
    ///   - audience: The executor when it is not the subject.
    public static func issue(
        by issuer: SigningKey,
        subject: DID,
        audience: DID? = nil,
        command: Command,
        arguments: [String: IPLD] = [:],
        proofs: [CID] = [],
        expiration: Int64?,
        issuedAt: Int64? = nil,
        meta: [String: IPLD]? = nil,
        nonce: [UInt8] = Nonce.random()
    ) -> Invocation {
        var payload: [String: IPLD] = [
            "iss": .string(issuer.did.string),
            "sub": .string(subject.string),
            "cmd": .string(command.string),
            "args": .map(arguments),
            "prf": .list(proofs.map { .link($0) }),
            "nonce": .bytes(nonce),
            "exp": expiration.map { .integer($0) } ?? .null,
        ]
        if let audience { payload["aud"] = .string(audience.string) }
        if let issuedAt { payload["iat"] = .integer(issuedAt) }
        if let meta { payload["meta"] = .map(meta) }
        return Invocation(
            envelope: UCANEnvelope(signing: payload, tag: UCANEnvelope.invocationTag, with: issuer),
            issuer: issuer.did, subject: subject, audience: audience, command: command, arguments: arguments,
            proofs: proofs, meta: meta, nonce: nonce, expiration: expiration, issuedAt: issuedAt)
    }

    private init(
        envelope: UCANEnvelope, issuer: DID, subject: DID, audience: DID?, command: Command, arguments: [String: IPLD],
        proofs: [CID], meta: [String: IPLD]?, nonce: [UInt8], expiration: Int64?, issuedAt: Int64?
    ) {
        self.envelope = envelope
        self.issuer = issuer
        self.subject = subject
        self.audience = audience
        self.command = command
        self.arguments = arguments
        self.proofs = proofs
        self.meta = meta
        self.nonce = nonce
        self.expiration = expiration
        self.issuedAt = issuedAt
        self.cause = nil
    }

    /// The executor this invocation addresses: its audience, else its subject.
    public var executor: DID { audience ?? subject }
}
