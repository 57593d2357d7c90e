public import Logging
public import OrreryAuth
public import OrreryIdentity
public import PostgresNIO
internal import Foundation
internal import Synchronization

/// The replay guard of a service with a schema: `consumed_invocations` there, so every replica sees every use.
/// Concurrent calls are recorded together: while one insert is in flight the next calls queue, and the queue goes
/// in one multi-row insert (group commit), so a busy service pays one round trip per batch, not per call.
public final class PostgresReplayGuard: ReplayGuard {
    private struct Pending {
        var cid: String
        var command: String
        var issuer: String
        var expiresAt: Int64
        var continuation: CheckedContinuation<Bool, any Error>
    }

    private let client: PostgresClient
    private let logger: Logger
    private let maximumBatch = 1000
    private let state = Mutex<(queue: [Pending], flushing: Bool)>(([], false))

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func consume(_ cid: CID, command: String, issuer: DID, expiresAt: Int64) async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            let pending = Pending(
                cid: cid.string, command: command, issuer: issuer.string, expiresAt: expiresAt,
                continuation: continuation)
            let startFlushing = state.withLock { state in
                state.queue.append(pending)
                if state.flushing { return false }
                state.flushing = true
                return true
            }
            if startFlushing { Task { await self.flush() } }
        }
    }

    /// Inserts what is queued, batch after batch, until the queue is empty.
    private func flush() async {
        while true {
            let batch: [Pending] = state.withLock { state in
                if state.queue.isEmpty {
                    state.flushing = false
                    return []
                }
                let taken = Array(state.queue.prefix(maximumBatch))
                state.queue.removeFirst(taken.count)
                return taken
            }
            if batch.isEmpty { return }
            do {
                let rows = try await client.query(
                    """
                    INSERT INTO consumed_invocations (cid, command, issuer, expires_at)
                    SELECT cid, command, issuer, to_timestamp(expires_at)
                    FROM unnest(\(batch.map(\.cid))::text[], \(batch.map(\.command))::text[],
                                \(batch.map(\.issuer))::text[], \(batch.map { Double($0.expiresAt) })::float8[])
                        AS u(cid, command, issuer, expires_at)
                    ON CONFLICT (cid) DO NOTHING
                    RETURNING cid
                    """,
                    logger: logger)
                var inserted: Set<String> = []
                for try await cid in rows.decode(String.self) { inserted.insert(cid) }
                // The same invocation twice in one batch: only its first use counts.
                var answered: Set<String> = []
                for pending in batch {
                    let fresh = inserted.contains(pending.cid) && answered.insert(pending.cid).inserted
                    pending.continuation.resume(returning: fresh)
                }
            } catch {
                for pending in batch { pending.continuation.resume(throwing: error) }
                continue
            }
            if Int.random(in: 0..<512) < batch.count {
                // Expired entries cannot be replayed anyway (the invocation is refused as expired): prune now and
                // then; a failure only delays it.
                do {
                    try await client.query(
                        "DELETE FROM consumed_invocations WHERE expires_at < now() - interval '10 minutes'",
                        logger: logger)
                } catch {
                    logger.warning("pruning consumed invocations failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
