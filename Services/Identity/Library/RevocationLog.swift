internal import Foundation
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization

/// The identity service's view of the revocation table: it follows new rows (LISTEN/NOTIFY, with a periodic
/// re-read as a safety net), applies them to this replica's `RevocationBook`, and fans them out to watchers.
/// Any replica serves any watch, because every replica follows the same table.
final class RevocationLog: Sendable {
    private struct State {
        var revision: Int64 = 0
        var watchers: [UUID: AsyncStream<Orrery_Identity_V1_Revocation>.Continuation] = [:]
    }

    private let client: PostgresClient
    private let book: RevocationBook
    private let logger: Logger
    private let state = Mutex(State())

    init(client: PostgresClient, book: RevocationBook, logger: Logger) {
        self.client = client
        self.book = book
        self.logger = logger
    }

    /// Revocations after `revision`, oldest first, at most `limit`.
    func list(after revision: Int64, limit: Int) async throws -> [Orrery_Identity_V1_Revocation] {
        let rows = try await client.query(
            """
            SELECT revision, cid, revoked_by, revoked_at FROM revocations
            WHERE revision > \(revision) ORDER BY revision LIMIT \(limit)
            """,
            logger: logger
        )
        var revocations: [Orrery_Identity_V1_Revocation] = []
        for try await (revision, cid, revokedBy, revokedAt) in rows.decode((Int64, String, String, Date).self) {
            revocations.append(
                .with {
                    $0.revision = revision
                    $0.cid = cid
                    $0.revokedBy = revokedBy
                    $0.revokedAt = Google_Protobuf_Timestamp(date: revokedAt)
                })
        }
        return revocations
    }

    /// New revocations as this replica learns them, until the consumer stops.
    func subscribe() -> AsyncStream<Orrery_Identity_V1_Revocation> {
        let (stream, continuation) = AsyncStream<Orrery_Identity_V1_Revocation>.makeStream(
            bufferingPolicy: .bufferingNewest(10_000))
        let id = UUID()
        state.withLock { $0.watchers[id] = continuation }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Reads what is new since the last revision seen and publishes it.
    func catchUp() async throws {
        while true {
            let after = state.withLock { $0.revision }
            let batch = try await list(after: after, limit: 1000)
            guard !batch.isEmpty else { return }
            for revocation in batch {
                if let cid = try? CID(revocation.cid) { book.apply(cid: cid, revision: revocation.revision) }
                let watchers = state.withLock { state -> [AsyncStream<Orrery_Identity_V1_Revocation>.Continuation] in
                    guard revocation.revision > state.revision else { return [] }
                    state.revision = revocation.revision
                    return Array(state.watchers.values)
                }
                for watcher in watchers { watcher.yield(revocation) }
            }
        }
    }

    /// Follows the table until cancelled: wakes on NOTIFY, and re-reads every second in case a notification was
    /// missed (a dropped connection).
    func follow() async throws {
        try await catchUp()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                while !Task.isCancelled {
                    do {
                        try await client.withConnection { connection in
                            try await connection.listen(on: "orrery_revocations") { notifications in
                                for try await _ in notifications { try await self.catchUp() }
                            }
                        }
                    } catch is CancellationError {
                        return
                    } catch {
                        logger.warning("LISTEN orrery_revocations failed; retrying", metadata: ["error": "\(error)"])
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
            }
            group.addTask { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    do { try await catchUp() } catch {
                        logger.warning("revocation re-read failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }
}
