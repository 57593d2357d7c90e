import Foundation
import Logging
import OrreryDatabase
import OrreryTestSupport
import PostgresNIO
import Testing

@Suite(
    "Migrations on a real PostgreSQL",
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct SchemaMigratorTests {
    let logger = Logger(label: "test.migrations")

    static let first = Migration(
        version: 1, name: "widgets", statements: ["CREATE TABLE widgets (id bigint PRIMARY KEY, name text NOT NULL)"])
    static let second = Migration(
        version: 2, name: "widget colour", statements: ["ALTER TABLE widgets ADD COLUMN colour text"])

    func migrator(_ migrations: [Migration], schema: String = "widgets_svc") throws -> SchemaMigrator {
        try SchemaMigrator(schema: try SchemaName(schema), migrations: migrations)
    }

    func appliedVersions(_ client: PostgresClient, schema: String = "widgets_svc") async throws -> [Int] {
        let rows = try await client.query(
            PostgresQuery(unsafeSQL: "SELECT version FROM \(schema).schema_migrations ORDER BY version"))
        var versions: [Int] = []
        for try await version in rows.decode(Int.self) { versions.append(version) }
        return versions
    }

    func tableExists(_ client: PostgresClient, _ table: String, schema: String = "widgets_svc") async throws -> Bool {
        let rows = try await client.query("SELECT to_regclass(\(schema + "." + table)) IS NOT NULL")
        for try await exists in rows.decode(Bool.self) { return exists }
        return false
    }

    @Test("a fresh database gets every migration, in its own schema, recorded with checksums")
    func fresh() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                let report = try await migrator([Self.first, Self.second]).migrate(using: client, logger: logger)
                #expect(report == .init(applied: [1, 2], version: 2))
                #expect(try await appliedVersions(client) == [1, 2])
                #expect(try await tableExists(client, "widgets"))
                #expect(try await tableExists(client, "widgets", schema: "public") == false)
            }
        }
    }

    @Test("re-running applies nothing; a later binary applies only what is new")
    func rerunAndUpgrade() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                _ = try await migrator([Self.first]).migrate(using: client, logger: logger)
                let again = try await migrator([Self.first]).migrate(using: client, logger: logger)
                #expect(again == .init(applied: [], version: 1))
                let upgrade = try await migrator([Self.first, Self.second]).migrate(using: client, logger: logger)
                #expect(upgrade == .init(applied: [2], version: 2))
            }
        }
    }

    @Test("two replicas starting at once: one applies, the other finds it done, nothing fails")
    func concurrentStarts() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                let migrator = try migrator([Self.first, Self.second])
                let logger = self.logger
                let reports = try await withThrowingTaskGroup(of: SchemaMigrator.Report.self) { group in
                    for _ in 0..<4 {
                        group.addTask {
                            // Separate pools, as separate replicas would have.
                            try await TestDatabase.withClient(database.settings, schema: "public") { replica in
                                try await migrator.migrate(using: replica, logger: logger)
                            }
                        }
                    }
                    var reports: [SchemaMigrator.Report] = []
                    for try await report in group { reports.append(report) }
                    return reports
                }
                #expect(reports.filter { $0.applied == [1, 2] }.count == 1)
                #expect(reports.filter { $0.applied.isEmpty }.count == 3)
                #expect(try await appliedVersions(client) == [1, 2])
            }
        }
    }

    @Test("a schema newer than the binary is refused and left untouched")
    func newerSchemaRefused() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                _ = try await migrator([Self.first, Self.second]).migrate(using: client, logger: logger)
                await #expect(throws: MigrationError.schemaNewerThanBinary(schema: "widgets_svc", applied: 2, known: 1))
                {
                    try await migrator([Self.first]).migrate(using: client, logger: logger)
                }
                #expect(try await appliedVersions(client) == [1, 2])
            }
        }
    }

    @Test("an edited migration is refused")
    func checksumMismatch() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                _ = try await migrator([Self.first]).migrate(using: client, logger: logger)
                let edited = Migration(
                    version: 1, name: "widgets", statements: ["CREATE TABLE widgets (id bigint PRIMARY KEY)"])
                await #expect(
                    throws: MigrationError.checksumMismatch(schema: "widgets_svc", version: 1, name: "widgets")
                ) {
                    try await migrator([edited]).migrate(using: client, logger: logger)
                }
            }
        }
    }

    @Test("a failing migration leaves nothing half-applied: the whole run rolls back")
    func failureRollsBack() async throws {
        try await TestDatabase.withDatabase { database in
            try await database.withClient { client in
                let broken = Migration(
                    version: 2, name: "broken",
                    statements: ["CREATE TABLE gadgets (id bigint)", "SELECT * FROM no_such_table"])
                await #expect(throws: PSQLError.self) {
                    try await migrator([Self.first, broken]).migrate(using: client, logger: logger)
                }
                #expect(try await tableExists(client, "widgets") == false)
                #expect(try await tableExists(client, "gadgets") == false)
                let report = try await migrator([Self.first]).migrate(using: client, logger: logger)
                #expect(report.applied == [1])
            }
        }
    }

    @Test("schema names and migration sequences are validated before touching the database")
    func validation() throws {
        #expect(throws: MigrationError.invalidSchemaName("Bad-Name")) { try SchemaName("Bad-Name") }
        #expect(throws: MigrationError.invalidSchemaName("1abc")) { try SchemaName("1abc") }
        #expect(throws: MigrationError.invalidSchemaName("x\"; DROP")) { try SchemaName("x\"; DROP") }
        #expect(throws: MigrationError.invalidSequence(schema: "s", versions: [1, 3])) {
            try SchemaMigrator(
                schema: try SchemaName("s"), migrations: [Self.first, Migration(version: 3, name: "x", statements: [])])
        }
    }
}
