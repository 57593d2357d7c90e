public import Logging
public import PostgresNIO

/// LISTEN on a channel for as long as the task runs: on a connection of its own, listening again a second after a
/// failure (a notification sent meanwhile is missed, so listeners also look on a timer).
public enum PostgresListener {
    /// Hands each notification's payload to `handle` until cancelled.
    public static func listen(
        client: PostgresClient, channel: String, logger: Logger,
        _ handle: @escaping @Sendable (String) async throws -> Void
    ) async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: channel) { notifications in
                        for try await notification in notifications { try await handle(notification.payload) }
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("LISTEN \(channel) failed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }
}
