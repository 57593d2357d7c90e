import Foundation
import OrreryTestSupport
import Testing

/// The PostgreSQL clusters `make run` and `make test` create authenticate every login with a password (SCRAM): a
/// process that reaches the port, a sandboxed workload or anything else on the host, cannot use the ledgers.
@Suite(
    "Local PostgreSQL: password logins only",
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct LocalClusterTests {
    @Test("no password and a wrong one are refused; the cluster's own password logs in")
    func passwordsRequired() async throws {
        let environment = ProcessInfo.processInfo.environment
        let port = try #require(environment["ORRERY_TEST_DB_PORT"])
        let password = try #require(environment["ORRERY_TEST_DB_PASSWORD"], "make test passes the orrery password")
        let psql = URL(fileURLWithPath: "/usr/bin/psql")
        func login(_ password: String?) async throws -> (status: Int32, output: String) {
            var variables = ["PATH": "/usr/bin:/bin", "PGPASSFILE": "/nonexistent", "PGPASSWORD": ""]
            if let password { variables["PGPASSWORD"] = password }
            return try await ChildProcess.run(
                psql,
                arguments: ["-w", "-h", "127.0.0.1", "-p", port, "-U", "orrery", "-d", "orrery", "-tAc", "SELECT 42"],
                environment: variables)
        }
        let none = try await login(nil)
        #expect(none.status != 0 && none.output.contains("no password supplied"), "\(none.output)")
        let wrong = try await login("not-the-password")
        #expect(wrong.status != 0 && wrong.output.contains("password authentication failed"), "\(wrong.output)")
        let right = try await login(password)
        #expect(right.status == 0 && right.output.contains("42"), "\(right.output)")
        for superuser in ["postgres"] {
            let (status, output) = try await ChildProcess.run(
                psql,
                arguments: ["-w", "-h", "127.0.0.1", "-p", port, "-U", superuser, "-d", "postgres", "-c", "SELECT 1"],
                environment: ["PATH": "/usr/bin:/bin", "PGPASSFILE": "/nonexistent", "PGPASSWORD": ""])
            #expect(status != 0 && output.contains("no password supplied"), "\(output)")
        }
    }
}
