internal import Foundation
internal import OrreryAuth
internal import OrreryIdentity

/// Who may call a private port through the ingress: the holder of an invocation of `/orrery/ingress/connect` whose
/// `args.deployment` names the route's deployment, addressed to this orchestrator, under a chain rooted in the
/// deployment's consumer (the consumer itself, or whoever it delegated to) — or a browser holding the session cookie
/// it got for one such invocation. The cookie is this orchestrator's signed statement (its own key, so every replica
/// verifies it), bound to the one host name, and no longer valid than the chain it was traded for.
struct IngressAuthority: Sendable {
    static let command = "/orrery/ingress/connect"
    /// The session cookie's name.
    static let cookieName = "orrery_session"
    /// The longest a session cookie is valid (less when its chain expires sooner).
    static let cookieLifetime: Int64 = 3600

    let key: SigningKey
    let validator: ChainValidator
    let revocations: RevocationBook
    let clock: @Sendable () -> Int64

    init(
        key: SigningKey, validator: ChainValidator, revocations: RevocationBook,
        clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    ) {
        self.key = key
        self.validator = validator
        self.revocations = revocations
        self.clock = clock
    }

    /// A caller proven by an invocation: its DID, and the delegations it holds its authority by (their CIDs, and
    /// when the first of them expires).
    struct Caller: Sendable, Equatable {
        let did: String
        let chainExpires: Int64
        let tokens: [String]
    }

    /// The caller a `Bearer` container proves for `route`; a refusal says why.
    func caller(bearer container: String, for route: IngressRoute) throws(IngressRefusal) -> Caller {
        let now = clock()
        var invocations: [Invocation] = []
        var proofs: [CID: Delegation] = [:]
        do {
            let tokens = try UCANContainer.decode(container, maximumSize: CapabilityInterceptor.maximumContainerSize)
            guard tokens.count <= CapabilityInterceptor.maximumTokens else {
                throw IngressRefusal.unauthenticated("the container holds more than 32 tokens")
            }
            for token in tokens {
                if let invocation = try? Invocation(bytes: token) {
                    invocations.append(invocation)
                } else {
                    let delegation = try Delegation(bytes: token)
                    proofs[delegation.cid] = delegation
                }
            }
        } catch let refusal as IngressRefusal {
            throw refusal
        } catch {
            throw .unauthenticated("malformed capability: \(error)")
        }
        guard invocations.count == 1, let invocation = invocations.first else {
            throw .unauthenticated("the container must hold exactly one invocation (it holds \(invocations.count))")
        }
        guard invocation.executor == key.did else {
            throw .unauthenticated(
                "the invocation is addressed to \(invocation.executor), not to this orchestrator (\(key.did))")
        }
        guard invocation.command.description == Self.command else {
            throw .forbidden("the invocation is for \(invocation.command), the ingress needs \(Self.command)")
        }
        guard case .string(let deployment)? = invocation.arguments["deployment"], deployment == route.deploymentID
        else { throw .forbidden("the invocation's args.deployment is not \(route.deploymentID)") }
        guard invocation.subject.string == route.consumer else {
            throw .forbidden(
                "the invocation's authority roots in \(invocation.subject), not in the deployment's consumer")
        }
        guard let expiration = invocation.expiration, expiration - now <= CapabilityInterceptor.maximumLifetime else {
            throw .forbidden(
                "the invocation must expire within \(CapabilityInterceptor.maximumLifetime) s (give it an exp)")
        }
        let validated: ChainValidator.Validated
        do {
            validated = try validator.validate(
                invocation, proofs: proofs, now: now, isRevoked: { revocations.isRevoked($0) })
        } catch let error as UCANError {
            throw error.name == .invalidSignature ? .unauthenticated(error.reason) : .forbidden(error.reason)
        } catch {
            throw .forbidden("\(error)")
        }
        let chainExpiry = validated.chain.compactMap(\.expiration).min() ?? Int64.max
        return Caller(
            did: invocation.issuer.string, chainExpires: chainExpiry, tokens: validated.chain.map(\.cid.description))
    }

    /// A session cookie's value for `caller` on `host`: valid for an hour, or until its chain expires.
    func cookie(for caller: Caller, host: String) -> (value: String, expires: Int64) {
        let expires = min(clock() + Self.cookieLifetime, caller.chainExpires)
        let payload = ([host, caller.did, String(expires)] + caller.tokens).joined(separator: " ")
        let bytes = Array(payload.utf8)
        return ("v1." + Base64.url(bytes) + "." + Base64.url(key.sign(Self.signed(bytes))), expires)
    }

    /// The caller a session cookie proves on `host`, or nil (expired, forged, another host's, or revoked).
    func caller(cookie value: String, host: String) -> String? {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "v1", parts[1].utf8.count <= 4096, let payload = Base64.decode(parts[1]),
            let signature = Base64.decode(parts[2]),
            key.publicKey.verify(signature: signature, message: Self.signed(payload))
        else { return nil }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: " ").map(String.init)
        guard fields.count >= 3, fields[0] == host, let expires = Int64(fields[2]), clock() <= expires else {
            return nil
        }
        for token in fields.dropFirst(3) {
            guard let cid = try? CID(token), !revocations.isRevoked(cid) else { return nil }
        }
        return fields[1]
    }

    /// What the orchestrator signs: a domain tag first, so the signature means nothing elsewhere.
    private static func signed(_ payload: [UInt8]) -> [UInt8] { Array("orrery-ingress-session/v1\n".utf8) + payload }
}

/// Why the ingress turns a request away, and how it answers.
enum IngressRefusal: Error, Equatable {
    /// 401: no valid proof of who calls.
    case unauthenticated(String)
    /// 403: a valid proof that does not allow this.
    case forbidden(String)

    var reason: String {
        switch self {
        case .unauthenticated(let reason), .forbidden(let reason): reason
        }
    }
}
