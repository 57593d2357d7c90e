internal import GRPCCore
internal import OrreryIdentity

/// What a consumer's grant (`GrantActorAccess`, `GrantNetworkAccess`) must be, whatever it grants: the consumer's own
/// delegation (its issuer and subject), to the party it names, signed by its issuer, and in force now.
enum ConsumerGrant {
    /// `bytes` as a delegation, or `INVALID_ARGUMENT` saying why not.
    static func decode(_ bytes: [UInt8]) throws -> Delegation {
        do {
            return try Delegation(bytes: bytes)
        } catch {
            throw RPCError(code: .invalidArgument, message: "delegation: not a UCAN delegation (\(error))")
        }
    }

    /// The problems of a grant's policy over `{from, to}`: it must allow `from` → `to` (named `allowed`) and hold
    /// each side to its value — `strangerFrom` with `to`, and `from` with `strangerTo`, must not match.
    static func policyProblems(
        _ policy: Policy, from: String, to: String, strangerFrom: String, strangerTo: String, allowed: String,
        fromName: String, toName: String
    ) -> [String] {
        func arguments(from: String, to: String) -> IPLD { .map(["from": .string(from), "to": .string(to)]) }
        var problems: [String] = []
        if !policy.matches(arguments(from: from, to: to)) { problems.append("its policy does not let \(allowed)") }
        if policy.matches(arguments(from: strangerFrom, to: to)) {
            problems.append("its policy does not fix .from to \(fromName)")
        }
        if policy.matches(arguments(from: from, to: strangerTo)) {
            problems.append("its policy does not fix .to to \(toName)")
        }
        return problems
    }

    /// The problems of `delegation` as `consumer`'s grant to `audience` (`audienceName` says who that is) at `now`.
    static func problems(
        _ delegation: Delegation, consumer: String, audience: String, audienceName: String, now: Int64
    ) -> [String] {
        var problems: [String] = []
        if delegation.issuer.string != consumer { problems.append("it is issued by \(delegation.issuer), not you") }
        if delegation.subject?.string != consumer { problems.append("its subject must be you") }
        if delegation.audience.string != audience {
            problems.append("it is for \(delegation.audience), not \(audienceName)")
        }
        if !delegation.envelope.signatureIsValid(issuer: delegation.issuer) { problems.append("its signature is bad") }
        if let expiration = delegation.expiration, expiration <= now { problems.append("it has expired") }
        if let notBefore = delegation.notBefore, notBefore > now { problems.append("it is not valid yet") }
        return problems
    }
}
