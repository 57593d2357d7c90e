public import OrreryIdentity
internal import Synchronization

/// Whether the network knows a party acting under someone else's chain: the party's own chain from the operator,
/// carried (uncited) in the same container. Used where a consumer's delegation lets an orchestrator act for it
/// (proposing contracts, escrowing), so that only an orchestrator the operator vouches for can.
public enum OperatorVouching {
    /// True when `delegations` hold a valid chain from `root` (subject `root`) to `party` covering `command`, each link
    /// signed by its issuer (`isSigned`), within its time bounds and unrevoked; or when `party` is `root` itself.
    public static func vouches(
        for party: DID, root: DID, command: Command, among delegations: [CID: Delegation], now: Int64,
        isRevoked: (CID) -> Bool, isSigned: (Delegation) -> Bool
    ) -> Bool {
        if party == root { return true }
        func usable(_ delegation: Delegation) -> Bool {
            delegation.command.covers(command) && (delegation.subject == nil || delegation.subject == root)
                && (delegation.expiration.map { $0 >= now } ?? true) && (delegation.notBefore.map { $0 <= now } ?? true)
                && !isRevoked(delegation.cid) && isSigned(delegation)
        }
        // Walk back from the party towards the root, at most 8 links.
        var frontier: Set<DID> = [party]
        for _ in 0..<8 {
            var next: Set<DID> = []
            for delegation in delegations.values where frontier.contains(delegation.audience) && usable(delegation) {
                if delegation.issuer == root && delegation.subject == root { return true }
                next.insert(delegation.issuer)
            }
            if next.isEmpty { return false }
            frontier = next
        }
        return false
    }
}

/// Delegations whose signature verified, by CID (content-addressed: the same CID is the same signed bytes), so a
/// delegation shown again and again (an owner's consent, an orchestrator's chain) is verified once.
public final class VerifiedDelegations: Sendable {
    private let verified = Mutex<Set<CID>>([])

    public init() {}

    public func isValid(_ delegation: Delegation) -> Bool {
        if verified.withLock({ $0.contains(delegation.cid) }) { return true }
        guard delegation.envelope.signatureIsValid(issuer: delegation.issuer) else { return false }
        verified.withLock { set in
            if set.count >= 100_000 { set.removeAll() }
            set.insert(delegation.cid)
        }
        return true
    }
}
