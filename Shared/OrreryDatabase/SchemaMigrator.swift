public import Logging
public import PostgresNIO
internal import Crypto

/// Brings one service's schema up to date: every pending migration in one transaction, recorded in
/// `<schema>.schema_migrations`, serialised across replicas by a transaction-scoped advisory lock.
public struct SchemaMigrator: Sendable {
    /// What a run did.
    public struct Report: Sendable, Equatable {
        /// The versions this run applied, in order.
        public var applied: [Int]
        /// The schema's version after the run.
        public var version: Int

        public init(applied: [Int], version: Int) {
            self.applied = applied
            self.version = version
        }
    }

    public let schema: SchemaName
    public let migrations: [Migration]

    /// - Throws: `MigrationError.invalidSequence` unless the versions are exactly 1…n.
    public init(schema: SchemaName, migrations: [Migration]) throws {
        let versions = migrations.map(\.version)
        guard versions == Array(1...max(1, versions.count)) || versions.isEmpty else {
            throw MigrationError.invalidSequence(schema: schema.rawValue, versions: versions)
        }
        self.schema = schema
        self.migrations = migrations
    }

    /// Applies what is pending.
    /// - Throws: `MigrationError.schemaNewerThanBinary` or `.checksumMismatch` (nothing is changed then), or the
    ///   database's error (the transaction is rolled back: nothing half-applied remains).
    @discardableResult
    public func migrate(using client: PostgresClient, logger: Logger) async throws -> Report {
        let schema = self.schema
        let migrations = self.migrations
        let lockKey = Self.advisoryLockKey(for: schema)
        do {
            return try await apply(
                schema: schema, migrations: migrations, lockKey: lockKey, client: client, logger: logger)
        } catch let error as PostgresTransactionError {
            // Report what went wrong inside the transaction, not the wrapper.
            if let cause = error.closureError { throw cause }
            throw error
        }
    }

    private func apply(
        schema: SchemaName,
        migrations: [Migration],
        lockKey: Int64,
        client: PostgresClient,
        logger: Logger
    ) async throws -> Report {
        try await client.transaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            try await connection.query(
                PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema.quoted)"), logger: logger)
            try await connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TABLE IF NOT EXISTS \(schema.quoted).schema_migrations (
                            version integer PRIMARY KEY,
                            name text NOT NULL,
                            checksum text NOT NULL,
                            applied_at timestamptz NOT NULL DEFAULT now()
                        )
                        """
                ),
                logger: logger
            )
            let rows = try await connection.query(
                PostgresQuery(
                    unsafeSQL: "SELECT version, name, checksum FROM \(schema.quoted).schema_migrations ORDER BY version"
                ),
                logger: logger
            )
            var appliedChecksums: [Int: String] = [:]
            for try await (version, _, checksum) in rows.decode((Int, String, String).self) {
                appliedChecksums[version] = checksum
            }
            let known = migrations.count
            if let newest = appliedChecksums.keys.max(), newest > known {
                throw MigrationError.schemaNewerThanBinary(schema: schema.rawValue, applied: newest, known: known)
            }
            for migration in migrations {
                if let checksum = appliedChecksums[migration.version], checksum != migration.checksum {
                    throw MigrationError.checksumMismatch(
                        schema: schema.rawValue, version: migration.version, name: migration.name)
                }
            }
            var applied: [Int] = []
            try await connection.query(
                PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(schema.quoted)"), logger: logger)
            for migration in migrations where appliedChecksums[migration.version] == nil {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    """
                    INSERT INTO schema_migrations (version, name, checksum)
                    VALUES (\(migration.version), \(migration.name), \(migration.checksum))
                    """,
                    logger: logger
                )
                applied.append(migration.version)
                logger.info(
                    "applied migration",
                    metadata: ["schema": "\(schema)", "version": "\(migration.version)", "name": "\(migration.name)"])
            }
            return Report(applied: applied, version: max(appliedChecksums.keys.max() ?? 0, applied.last ?? 0))
        }
    }

    /// A 64-bit advisory-lock key derived from the schema name, the same in every replica.
    static func advisoryLockKey(for schema: SchemaName) -> Int64 {
        let digest = Array(SHA256.hash(data: Array("orrery.migrate.\(schema.rawValue)".utf8)))
        return digest.prefix(8).reduce(Int64(0)) { ($0 << 8) | Int64($1) }
    }
}
