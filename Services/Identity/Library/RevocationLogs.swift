internal import Logging
internal import OrreryAuth
internal import PostgresNIO
internal import Synchronization

/// Hands out the process's one `RevocationLog` (the runtime asks for handlers and background tasks separately).
final class RevocationLogs: Sendable {
    static let shared = RevocationLogs()
    private let current = Mutex<RevocationLog?>(nil)

    func log(database: PostgresClient, book: RevocationBook, logger: Logger) -> RevocationLog {
        current.withLock { current in
            if let current { return current }
            let log = RevocationLog(client: database, book: book, logger: logger)
            current = log
            return log
        }
    }
}
