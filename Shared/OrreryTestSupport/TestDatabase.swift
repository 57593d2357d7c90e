internal import Foundation
internal import Logging
public import OrreryDatabase
public import PostgresNIO

/// A database of its own for one test, created in the throwaway PostgreSQL that `make test` starts
/// (`ORRERY_TEST_DB_HOST`, `_PORT`, `_USER`) and dropped afterwards.
public struct TestDatabase: Sendable {
    /// The connection settings of the test's own database.
    public let settings: DatabaseSettings

    /// Whether the throwaway PostgreSQL is configured. `make test` sets `ORRERY_TEST_DB_REQUIRED=1`, under
    /// which a missing database fails tests instead of skipping them.
    public static var isConfigured: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["ORRERY_TEST_DB_HOST"] != nil || environment["ORRERY_TEST_DB_REQUIRED"] == "1"
    }

    static var adminSettings: DatabaseSettings {
        let environment = ProcessInfo.processInfo.environment
        return DatabaseSettings(
            host: environment["ORRERY_TEST_DB_HOST"] ?? "127.0.0.1",
            port: Int(environment["ORRERY_TEST_DB_PORT"] ?? "") ?? 5432,
            user: environment["ORRERY_TEST_DB_USER"] ?? "orrery",
            password: environment["ORRERY_TEST_DB_PASSWORD"],
            database: environment["ORRERY_TEST_DB_NAME"] ?? "orrery"
        )
    }

    /// Creates a database named `orrery_test_<random>`, runs `body` with it, and drops it.
    public static func withDatabase<Result: Sendable>(
        _ body: (TestDatabase) async throws -> Result
    ) async throws -> Result {
        let name = "orrery_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        try await admin("CREATE DATABASE \(name)")
        var settings = adminSettings
        settings.database = name
        do {
            let result = try await body(TestDatabase(settings: settings))
            await drop(name)
            return result
        } catch {
            await drop(name)
            throw error
        }
    }

    /// Drops a test database. `WITH (FORCE)` cannot end an autovacuum worker (a superuser's process) that happens
    /// to be in it, so the drop is retried for a while; a database left behind is reported, not a test failure.
    private static func drop(_ name: String) async {
        var lastError: (any Error)?
        for _ in 0..<25 {
            do {
                try await admin("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
                return
            } catch {
                lastError = error
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        print("warning: test database \(name) could not be dropped: \(String(reflecting: lastError))")
    }

    private static func admin(_ sql: String) async throws {
        try await withClient(adminSettings, schema: "public") { client in
            _ = try await client.query(PostgresQuery(unsafeSQL: sql))
        }
    }

    /// Runs `body` with a running `PostgresClient` for `settings`, whose search path is `schema`.
    public static func withClient<Result: Sendable>(
        _ settings: DatabaseSettings,
        schema: String,
        _ body: @Sendable (PostgresClient) async throws -> Result
    ) async throws -> Result {
        // A query may be issued before the task below has started `run()`: PostgresNIO holds it until then, but
        // warns at every such call, a hundred and more lines in every full run. Errors still show.
        var logger = Logger(label: "test.db")
        logger.logLevel = .error
        let client = try settings.makeClient(schema: schema, logger: logger)
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask {
                await client.run()
                return nil
            }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    /// Runs `body` with a client on this test's database.
    public func withClient<Result: Sendable>(
        schema: String = "public",
        _ body: @Sendable (PostgresClient) async throws -> Result
    ) async throws -> Result {
        try await Self.withClient(settings, schema: schema, body)
    }

    /// The environment variables that point a service at this database.
    public var serviceEnvironment: [String: String] {
        var environment = [
            "ORRERY_DB_HOST": settings.host,
            "ORRERY_DB_PORT": String(settings.port),
            "ORRERY_DB_USER": settings.user,
            "ORRERY_DB_DATABASE": settings.database,
        ]
        if let password = settings.password { environment["ORRERY_DB_PASSWORD"] = password }
        return environment
    }
}
