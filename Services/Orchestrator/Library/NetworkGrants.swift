internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryIdentity
internal import PostgresNIO

/// Consumers' delegations letting another deployment's allocations reach theirs on the ensemble network
/// (`GrantNetworkAccess`). Each is checked when it is given and again, by its expiry, for every connection.
struct NetworkGrants: Sendable {
    let client: PostgresClient
    let logger: Logger

    /// The command a grant delegates.
    static let command = "/orrery/network/connect"

    /// What is wrong with `delegation` as the consumer `consumer`'s grant letting `from` (whose consumer is
    /// `fromConsumer`) reach `to` at `now`; empty when nothing is.
    static func problems(
        _ delegation: Delegation, from: String, fromConsumer: String, to: String, consumer: String, now: Int64
    ) -> [String] {
        var problems = ConsumerGrant.problems(
            delegation, consumer: consumer, audience: fromConsumer,
            audienceName: "\(from)'s consumer \(fromConsumer)", now: now)
        let command = delegation.command.description
        if command != "/orrery/network", command != Self.command {
            problems.append("its command \(command) is not \(Self.command) (or /orrery/network)")
        }
        // Its policy must hold the connecting deployment to `from` and the reached one to `to` ("dep_elsewhere", of
        // no deployment id's form, stands for every other one).
        problems += ConsumerGrant.policyProblems(
            delegation.policy, from: from, to: to, strangerFrom: "dep_elsewhere", strangerTo: "dep_elsewhere",
            allowed: "\(from) reach \(to)", fromName: from, toName: to)
        return problems
    }

    /// Checks and keeps `bytes`, the delegation of `to`'s consumer `consumer` letting `from` reach `to`.
    /// - Returns: its CID.
    func grant(from: String, fromConsumer: String, to: String, consumer: String, delegation bytes: [UInt8])
        async throws -> String
    {
        let delegation = try ConsumerGrant.decode(bytes)
        let problems = Self.problems(
            delegation, from: from, fromConsumer: fromConsumer, to: to, consumer: consumer,
            now: Int64(Date().timeIntervalSince1970))
        guard problems.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "delegation: " + problems.joined(separator: "; "))
        }
        let expires = delegation.expiration.map { Date(timeIntervalSince1970: TimeInterval($0)) }
        try await client.query(
            """
            INSERT INTO network_grants (cid, from_deployment, to_deployment, issuer_did, audience_did, expires_at,
                delegation)
            VALUES (\(delegation.cid.string), \(from), \(to), \(consumer), \(fromConsumer), \(expires),
                \(Data(bytes)))
            ON CONFLICT (cid) DO NOTHING
            """, logger: logger)
        logger.info("network access granted", metadata: ["from": "\(from)", "to": "\(to)", "cid": "\(delegation.cid)"])
        return delegation.cid.string
    }

    /// Whether `to`'s consumer `toConsumer` grants `from` (of consumer `fromConsumer`) access now: a grant kept,
    /// unexpired, and not revoked (`isRevoked`, the service's revocation book as the identity service tells it).
    func allows(
        from: String, fromConsumer: String, to: String, toConsumer: String, isRevoked: (CID) -> Bool
    ) async throws -> Bool {
        let rows = try await client.query(
            """
            SELECT cid FROM network_grants
            WHERE from_deployment = \(from) AND to_deployment = \(to) AND issuer_did = \(toConsumer)
              AND audience_did = \(fromConsumer) AND (expires_at IS NULL OR expires_at > now())
            """, logger: logger)
        for try await cid in rows.decode(String.self) {
            guard let parsed = try? CID(cid) else { continue }
            if !isRevoked(parsed) { return true }
        }
        return false
    }
}
