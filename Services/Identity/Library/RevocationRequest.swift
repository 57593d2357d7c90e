internal import OrreryAuth
internal import OrreryIdentity

/// A `/ucan/revoke` invocation checked against the revocation draft: it names the revoked delegation in
/// `args.revoke` and a path witness in `args.path` (delegation CIDs, root first, carried in the same container),
/// and the revoker issued a delegation on that path at or above the revoked one.
struct RevocationRequest {
    let revoked: CID
    let revoker: DID

    init(_ authorization: Authorization) throws(RevocationRefusal) {
        let invocation = authorization.invocation
        guard case .link(let revoked)? = invocation.arguments["revoke"] else {
            throw .malformed("args.revoke must be the CID link of the delegation to revoke")
        }
        var path: [Delegation] = []
        if case .list(let links)? = invocation.arguments["path"] {
            for link in links {
                guard case .link(let cid) = link else { throw .malformed("args.path must hold CID links") }
                guard let delegation = authorization.delegations[cid] else {
                    throw .malformed("path delegation \(cid) is not in the container")
                }
                path.append(delegation)
            }
        } else if let only = authorization.delegations[revoked] {
            path = [only]
        }
        guard let revokedIndex = path.firstIndex(where: { $0.cid == revoked }) else {
            throw .malformed("the path witness must include the revoked delegation \(revoked)")
        }
        for delegation in path where !delegation.envelope.signatureIsValid(issuer: delegation.issuer) {
            throw .forbidden("path delegation \(delegation.cid) is not signed by its issuer")
        }
        for index in path.indices.dropFirst() where path[index].issuer != path[index - 1].audience {
            throw .forbidden(
                "the path is not a chain: \(path[index].cid) is issued by \(path[index].issuer), not by \(path[index - 1].audience)"
            )
        }
        guard path[...revokedIndex].contains(where: { $0.issuer == invocation.issuer }) else {
            throw .forbidden(
                "\(invocation.issuer) issued no delegation at or above the revoked one, so it may not revoke it")
        }
        self.revoked = revoked
        self.revoker = invocation.issuer
    }
}

/// Why a revocation was refused.
enum RevocationRefusal: Error {
    case malformed(String)
    case forbidden(String)
}
