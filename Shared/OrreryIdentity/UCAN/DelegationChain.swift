/// A delegation chain kept in a file or passed around as a UCAN container: the delegations ordered root first.
public enum DelegationChain {
    /// Orders `delegations` into a chain from the root (issued by its subject) to the last audience.
    /// - Throws: `UCANError(.invalidClaim)` when they do not form exactly one chain.
    public static func ordered(_ delegations: [Delegation]) throws -> [Delegation] {
        guard !delegations.isEmpty else { return [] }
        let audiences = Set(delegations.map(\.audience))
        let roots = delegations.filter { !audiences.contains($0.issuer) }
        guard roots.count == 1, var current = roots.first else {
            throw UCANError(
                .invalidClaim, "the delegations do not form one chain (found \(roots.count) starting points)")
        }
        var chain = [current]
        var remaining = delegations.filter { $0.cid != current.cid }
        while let next = remaining.firstIndex(where: { $0.issuer == current.audience }) {
            current = remaining.remove(at: next)
            chain.append(current)
        }
        guard remaining.isEmpty else {
            throw UCANError(.invalidClaim, "\(remaining.count) delegations do not continue the chain")
        }
        return chain
    }

    /// Reads a container (text) of delegations into a chain, root first.
    public static func read(_ container: String) throws -> [Delegation] {
        try ordered(try UCANContainer.decode(container).map { try Delegation(bytes: $0) })
    }

    /// The container (text, header `C`) of a chain.
    public static func write(_ chain: [Delegation]) throws -> String {
        try UCANContainer.encodeText(chain.map(\.envelope.bytes))
    }
}
