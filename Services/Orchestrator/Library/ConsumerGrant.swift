internal import OrreryIdentity

/// What a consumer's grant (`GrantActorAccess`, `GrantNetworkAccess`) must be, whatever it grants: the consumer's own
/// delegation (its issuer and subject), to the party it names, signed by its issuer, and in force now.
enum ConsumerGrant {
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
