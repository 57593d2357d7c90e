internal import Synchronization

/// Validates an invocation and its delegation chain as UCAN 1.0 says: signatures, time bounds of every token,
/// principal alignment, subject alignment (powerlines included), command hierarchy, policies, revocation.
///
/// Memoized: what depends only on the delegations (their signatures, alignment, time window) is remembered per
/// chain, so a chain validated once costs one signature check (the invocation's) afterwards. A revocation drops
/// every remembered chain that contains the revoked delegation.
public final class ChainValidator: Sendable {
    /// A chain that passed validation.
    public struct Validated: Sendable {
        public let invocation: Invocation
        /// Root first.
        public let chain: [Delegation]
        /// The resource owner the chain roots in (the invocation's subject).
        public var subject: DID { invocation.subject }
        /// Every CID involved: the invocation's and its delegations'.
        public var cids: [CID] { [invocation.cid] + chain.map(\.cid) }
    }

    /// What is known about a chain independently of any invocation using it.
    struct ChainFacts: Sendable {
        let chain: [Delegation]
        let subject: DID
        let lastAudience: DID
        let notBefore: Int64?
        let expiration: Int64?
    }

    private struct Memo {
        var chains: [[CID]: ChainFacts] = [:]
        var verifiedSignatures: Set<CID> = []
    }

    private let memo = Mutex(Memo())
    private let capacity: Int
    /// Seconds of clock skew tolerated on `exp` and `nbf` (UCAN recommends a buffer).
    public let clockSkew: Int64

    public init(capacity: Int = 10_000, clockSkew: Int64 = 0) {
        self.capacity = capacity
        self.clockSkew = clockSkew
    }

    /// Validates `invocation` at `now` (Unix seconds).
    /// - Parameters:
    ///   - proofs: Delegations by CID; those the invocation cites must be here.
    ///   - isRevoked: Whether a delegation (by CID) has been revoked.
    ///   - deferringPolicies: Leave the chain's policies to the caller, who evaluates them over what the
    ///     invocation is used for (a server: over the request itself, `checkPolicies(of:over:)`); otherwise they
    ///     are evaluated over the invocation's `args`.
    /// - Throws: `UCANError` with the specification's error name.
    @discardableResult
    public func validate(
        _ invocation: Invocation,
        proofs: [CID: Delegation],
        now: Int64,
        isRevoked: (CID) -> Bool = { _ in false },
        deferringPolicies: Bool = false
    ) throws -> Validated {
        if let expiration = invocation.expiration, now > expiration + clockSkew {
            throw UCANError(.expired, "the invocation expired at \(expiration) (now \(now))")
        }
        guard invocation.envelope.signatureIsValid(issuer: invocation.issuer) else {
            throw UCANError(
                .invalidSignature, "the invocation's signature does not verify against \(invocation.issuer)")
        }
        guard !invocation.proofs.isEmpty else {
            guard invocation.issuer == invocation.subject else {
                throw UCANError(
                    .invalidClaim,
                    "no proofs, and the invoker \(invocation.issuer) is not the subject \(invocation.subject)")
            }
            return Validated(invocation: invocation, chain: [])
        }
        let facts = try chainFacts(invocation.proofs, proofs: proofs)
        for delegation in facts.chain {
            if let expiration = delegation.expiration, now > expiration + clockSkew {
                throw UCANError(.expired, "delegation \(delegation.cid) expired at \(expiration) (now \(now))")
            }
            if let notBefore = delegation.notBefore, now + clockSkew < notBefore {
                throw UCANError(.tooEarly, "delegation \(delegation.cid) is not valid before \(notBefore) (now \(now))")
            }
        }
        guard facts.lastAudience == invocation.issuer else {
            throw UCANError(
                .invalidAudience, "the last delegation is to \(facts.lastAudience), but \(invocation.issuer) invokes")
        }
        guard facts.subject == invocation.subject else {
            throw UCANError(
                .invalidSubject, "the chain is about \(facts.subject), the invocation about \(invocation.subject)")
        }
        for delegation in facts.chain where !delegation.command.covers(invocation.command) {
            throw UCANError(
                .invalidCommand,
                "delegation \(delegation.cid) grants \(delegation.command), which does not cover \(invocation.command)")
        }
        if !deferringPolicies {
            try Self.checkPolicies(of: facts.chain, over: .map(invocation.arguments))
        }
        for cid in [invocation.cid] + facts.chain.map(\.cid) where isRevoked(cid) {
            throw UCANError(.revoked, "\(cid) has been revoked")
        }
        return Validated(invocation: invocation, chain: facts.chain)
    }

    /// Evaluates every delegation's policy of `chain` over `subject` (the invocation's args, or the request they
    /// authorise).
    /// - Throws: `UCANError` `.matchError` naming the first statement that does not hold.
    public static func checkPolicies(of chain: [Delegation], over subject: IPLD) throws {
        for delegation in chain {
            if let violated = delegation.policy.firstViolation(subject) {
                throw UCANError(.matchError, "\(violated) of delegation \(delegation.cid) is violated")
            }
        }
    }

    /// Forgets every memoized chain that contains `cid` (called when it is revoked).
    public func forget(_ cid: CID) {
        memo.withLock { memo in
            memo.chains = memo.chains.filter { !$0.key.contains(cid) }
            memo.verifiedSignatures.remove(cid)
        }
    }

    /// How many chains are memoized (for tests and metrics).
    public var memoizedChainCount: Int { memo.withLock { $0.chains.count } }

    private func chainFacts(_ cids: [CID], proofs: [CID: Delegation]) throws -> ChainFacts {
        // Every cited proof must come with the invocation, memoized or not, so that every replica decides alike.
        var chain: [Delegation] = []
        for cid in cids {
            guard let delegation = proofs[cid] else {
                throw UCANError(.unavailableProof, "proof \(cid) was not provided")
            }
            chain.append(delegation)
        }
        if let known = memo.withLock({ $0.chains[cids] }) { return known }
        let verified = memo.withLock { $0.verifiedSignatures }
        for delegation in chain where !verified.contains(delegation.cid) {
            guard delegation.envelope.signatureIsValid(issuer: delegation.issuer) else {
                throw UCANError(
                    .invalidSignature, "delegation \(delegation.cid) is not signed by its issuer \(delegation.issuer)")
            }
        }
        let root = chain[0]
        guard let subject = root.subject else {
            throw UCANError(
                .invalidClaim, "the root delegation \(root.cid) is a powerline (null subject): there is no such root")
        }
        guard root.issuer == subject else {
            throw UCANError(
                .invalidClaim,
                "the root delegation \(root.cid) is issued by \(root.issuer), not by its subject \(subject)")
        }
        for index in chain.indices.dropFirst() {
            let delegation = chain[index]
            guard delegation.issuer == chain[index - 1].audience else {
                throw UCANError(
                    .invalidAudience,
                    "delegation \(delegation.cid) is issued by \(delegation.issuer), but the previous one is to \(chain[index - 1].audience)"
                )
            }
            if let other = delegation.subject, other != subject {
                throw UCANError(
                    .invalidSubject, "delegation \(delegation.cid) is about \(other), the chain about \(subject)")
            }
        }
        let facts = ChainFacts(
            chain: chain,
            subject: subject,
            lastAudience: chain[chain.count - 1].audience,
            notBefore: chain.compactMap(\.notBefore).max(),
            expiration: chain.compactMap(\.expiration).min()
        )
        memo.withLock { memo in
            if memo.chains.count >= capacity { memo.chains.removeAll(keepingCapacity: true) }
            if memo.verifiedSignatures.count >= capacity * 4 {
                memo.verifiedSignatures.removeAll(keepingCapacity: true)
            }
            memo.chains[cids] = facts
            for delegation in chain { memo.verifiedSignatures.insert(delegation.cid) }
        }
        return facts
    }
}
