public import Logging
public import PostgresNIO

extension PostgresClient {
    /// Runs `body` in a transaction (committed on return, rolled back on a throw) and rethrows the body's own
    /// error rather than postgres-nio's wrapper, so a domain error (a gRPC status, a migration error) keeps its
    /// meaning; a failed BEGIN or COMMIT throws the database's error.
    public func transaction<Result: Sendable>(
        logger: Logger,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        do {
            return try await withTransaction(logger: logger) { connection in try await body(connection) }
        } catch let error as PostgresTransactionError {
            if let cause = error.closureError { throw cause }
            // BEGIN or COMMIT failed (the connection broke: the database failed over, or shut down): the database's
            // own error says so, and is answered UNAVAILABLE. A failed COMMIT leaves the outcome unknown: callers
            // retry with their idempotency keys.
            if let cause = error.beginError ?? error.commitError { throw cause }
            throw error
        }
    }
}
