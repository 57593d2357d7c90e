import Foundation
import Logging
import OrreryDatabase
import OrreryIdentity
import OrreryTestSupport
import PostgresNIO
import Testing

@testable import OrchestratorService

/// Network grants kept in PostgreSQL: one stands for its two deployments and parties only, until it expires or is
/// revoked.
@Suite(
    "Network grants in the database", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct NetworkGrantStoreTests {
    static let from = "dep_" + String(repeating: "a", count: 26)
    static let to = "dep_" + String(repeating: "b", count: 26)

    @Test(
        "a kept grant allows its pair only; a revoked one, an expiring one once expired, and a retried one counted once"
    )
    func allows() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient(schema: "orchestrator") { client in
                try await SchemaMigrator(schema: SchemaName("orchestrator"), migrations: OrchestratorMigrations.all)
                    .migrate(using: client, logger: Logger(label: "test.migrate"))
                let grants = NetworkGrants(client: client, logger: Logger(label: "test.grants"))
                let owner = SigningKey()
                let neighbour = SigningKey()
                let policy = try Policy(
                    try IPLDJSON.parse(#"[["==", ".from", "\#(Self.from)"], ["==", ".to", "\#(Self.to)"]]"#))
                func delegation(expiring seconds: Int64) throws -> Delegation {
                    Delegation.issue(
                        by: owner, to: neighbour.did, subject: owner.did,
                        command: try Command("/orrery/network/connect"), policy: policy,
                        expiration: Int64(Date().timeIntervalSince1970) + seconds)
                }
                func allows(
                    from: String = Self.from, fromConsumer: DID? = nil, to: String = Self.to,
                    revoked: Set<String> = []
                ) async throws -> Bool {
                    try await grants.allows(
                        from: from, fromConsumer: (fromConsumer ?? neighbour.did).string, to: to,
                        toConsumer: owner.did.string, isRevoked: { revoked.contains($0.string) })
                }
                #expect(try await allows() == false)
                let lasting = try delegation(expiring: 3600)
                let cid = try await grants.grant(
                    from: Self.from, fromConsumer: neighbour.did.string, to: Self.to, consumer: owner.did.string,
                    delegation: lasting.envelope.bytes)
                #expect(cid == lasting.cid.string)
                // A retry keeps one row, and answers the same.
                #expect(
                    try await grants.grant(
                        from: Self.from, fromConsumer: neighbour.did.string, to: Self.to, consumer: owner.did.string,
                        delegation: lasting.envelope.bytes) == cid)
                #expect(try await allows())
                #expect(try await allows(to: "dep_" + String(repeating: "c", count: 26)) == false)
                #expect(try await allows(fromConsumer: SigningKey().did) == false)
                #expect(try await allows(revoked: [cid]) == false)
                // A grant about to expire stands until it does.
                try await client.query("DELETE FROM network_grants", logger: Logger(label: "test"))
                let brief = try delegation(expiring: 5)
                _ = try await grants.grant(
                    from: Self.from, fromConsumer: neighbour.did.string, to: Self.to, consumer: owner.did.string,
                    delegation: brief.envelope.bytes)
                #expect(try await allows())
                let expiry = Date(timeIntervalSince1970: TimeInterval(try #require(brief.expiration)))
                try await Task.sleep(for: .seconds(max(0, expiry.timeIntervalSinceNow) + 1))
                #expect(try await allows() == false)
            }
        }
    }
}
