internal import Foundation
internal import Logging
internal import NIOCore
internal import OrreryEthereum
internal import PostgresNIO

/// Posts concurrent entries together: while one batch is in the database, new entries gather; the next batch goes
/// as one `post_entries` call (one statement, one transaction, one WAL flush). Each entry still succeeds or is
/// refused on its own (a subtransaction each), and one batch runs at a time, so entries never deadlock on rows. The
/// same statement keeps each release's proof (`release_proofs`).
actor LedgerBatcher {
    /// What the database answered for one entry.
    enum Outcome: Sendable {
        case posted(id: Int64, at: Date, released: String?, fee: String?)
        case refused(state: String, constraint: String, message: String)
    }

    private let client: PostgresClient
    private let logger: Logger
    private var pending: [(entry: JSONValue, proof: Proof?, answer: CheckedContinuation<Outcome, any Error>)] = []

    /// A release's request, kept by its SHA-256 (bound as bytes beside the JSON, never inside it).
    struct Proof: Sendable {
        var sha256: Data
        var request: Data
    }
    private var flushing = false
    /// The most entries one call carries.
    static let batchLimit = 256

    init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Queues `entry` (the JSON shape `post_entries` reads), with a release's `proof`, and waits for its outcome.
    func post(_ entry: JSONValue, proof: Proof? = nil) async throws -> Outcome {
        try await withCheckedThrowingContinuation { answer in
            pending.append((entry, proof, answer))
            if !flushing {
                flushing = true
                Task { await self.flush() }
            }
        }
    }

    private func flush() async {
        while !pending.isEmpty {
            let batch = Array(pending.prefix(Self.batchLimit))
            pending.removeFirst(batch.count)
            do {
                let outcomes = try await Self.runRetryingDeadlocks(
                    batch.map(\.entry), proofs: batch.compactMap(\.proof), client: client, logger: logger)
                for (position, item) in batch.enumerated() {
                    if let outcome = outcomes[position + 1] {
                        item.answer.resume(returning: outcome)
                    } else {
                        item.answer.resume(throwing: PostgresBatchError.missingOutcome(position + 1))
                    }
                }
            } catch {
                for item in batch { item.answer.resume(throwing: error) }
            }
        }
        flushing = false
    }

    /// A batch holds its rows until it commits; a single-entry transaction elsewhere (a payout, a deposit credit)
    /// can deadlock with it. PostgreSQL then aborts one side: the batch is simply run again.
    private static func runRetryingDeadlocks(
        _ entries: [JSONValue], proofs: [Proof], client: PostgresClient, logger: Logger
    ) async throws -> [Int: Outcome] {
        var attempt = 0
        while true {
            do {
                return try await run(entries, proofs: proofs, client: client, logger: logger)
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == "40P01" && attempt < 3 {
                attempt += 1
                logger.notice("a ledger batch deadlocked with another transaction; running it again")
            }
        }
    }

    private static func run(_ entries: [JSONValue], proofs: [Proof], client: PostgresClient, logger: Logger)
        async throws -> [Int: Outcome]
    {
        let json = JSONValue.array(entries).serialized
        var outcomes: [Int: Outcome] = [:]
        let rows = try await client.query(
            """
            WITH proofs AS (
                INSERT INTO release_proofs (request_sha256, request)
                SELECT s, r
                FROM unnest(\(proofs.map { ByteBuffer(bytes: $0.sha256) })::bytea[], \(proofs.map { ByteBuffer(bytes: $0.request) })::bytea[]) AS t(s, r)
                ON CONFLICT (request_sha256) DO NOTHING
            )
            SELECT ordinal, entry_id, created_at, state, coalesce(constraint_name, ''), message, released::text,
                   fee::text
            FROM post_entries(\(json)::jsonb)
            """, logger: logger)
        for try await (ordinal, id, at, state, constraint, message, released, fee) in rows.decode(
            (Int32, Int64?, Date?, String, String, String, String?, String?).self)
        {
            if let id, let at {
                outcomes[Int(ordinal)] = .posted(id: id, at: at, released: released, fee: fee)
            } else {
                outcomes[Int(ordinal)] = .refused(state: state, constraint: constraint, message: message)
            }
        }
        return outcomes
    }
}

enum PostgresBatchError: Error {
    case missingOutcome(Int)
}
