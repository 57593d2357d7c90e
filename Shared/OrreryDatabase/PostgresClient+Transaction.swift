public import Logging
public import PostgresNIO

extension PostgresClient {
    /// Runs `body` in a transaction (committed on return, rolled back on a throw) and rethrows the body's own
    /// error rather than postgres-nio's wrapper, so a domain error (a gRPC status, a migration error) keeps its
    /// meaning.
    public func transaction<Result: Sendable>(
        logger: Logger,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        do {
            return try await withTransaction(logger: logger) { connection in try await body(connection) }
        } catch let error as PostgresTransactionError {
            if let cause = error.closureError { throw cause }
            throw error
        }
    }
}
