internal import Foundation
internal import Logging
internal import NIOCore
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryLedger
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf
internal import OrreryRuntimeCore

/// Seals posted journal entries into the journal's hash chain (`JournalChain`) and signs the chain's new head, about
/// once a second. Postings only queue their entry (a trigger), so no posting waits for the chain: the sealer takes
/// queued entries in id order, and an entry committed late (after a higher id was sealed) is sealed after it —
/// the chain's order is the order entries were sealed in. One sealer works at a time, however many gateways share
/// the database (an advisory lock); a sealing is one transaction with its checkpoint, so a crash leaves none of it.
struct JournalSealer: Sendable {
    let client: PostgresClient
    let key: SigningKey
    let logger: Logger
    /// Entries sealed per transaction at most.
    var batch = 5000

    /// `pg_advisory_xact_lock` key of the one sealer.
    static let lockKey: Int64 = 0x6f72_7279_6a6e_6c00

    func run() async {
        await PeriodicWork("sealing journal entries", every: .seconds(1), logger: logger) {
            while try await sealPending() == batch {}
        }.run()
    }

    /// Seals up to `batch` queued entries and signs the new head; returns how many it sealed.
    @discardableResult
    func sealPending() async throws -> Int {
        let (key, logger, batch) = (key, logger, batch)
        return try await client.transaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.lockKey))", logger: logger)
            let entries = try await Self.entries(
                """
                SELECT 0::bigint, e.id, e.kind, coalesce(e.contract_id, ''), e.memo, e.invoker, e.idempotency_key,
                       e.request_sha256, (extract(epoch FROM e.created_at) * 1000000)::bigint, ''::bytea
                FROM journal_unsealed u JOIN journal_entries e ON e.id = u.entry_id
                ORDER BY e.id LIMIT \(batch)
                """, on: connection, logger: logger)
            guard !entries.isEmpty else { return 0 }
            var position: Int64 = 0
            var previous = JournalChain.genesis
            for try await (last, digest) in try await connection.query(
                "SELECT position, digest FROM journal_chain ORDER BY position DESC LIMIT 1", logger: logger
            ).decode((Int64, Data).self) {
                position = last
                previous = [UInt8](digest)
            }
            var (positions, ids, digests) = ([Int64](), [Int64](), [ByteBuffer]())
            for entry in entries {
                previous = JournalChain.digest(previous: previous, entry: entry)
                position += 1
                positions.append(position)
                ids.append(entry.id)
                digests.append(ByteBuffer(bytes: previous))
            }
            try await connection.query(
                """
                INSERT INTO journal_chain (position, entry_id, digest)
                SELECT p, e, d FROM unnest(\(positions)::bigint[], \(ids)::bigint[], \(digests)::bytea[]) AS t(p, e, d)
                """, logger: logger)
            try await connection.query(
                "DELETE FROM journal_unsealed WHERE entry_id = ANY(\(ids)::bigint[])", logger: logger)
            let signed = try JournalChain.checkpoint(
                position: UInt64(position), digest: previous, at: Date(), key: key)
            try await connection.query(
                """
                INSERT INTO journal_checkpoints (position, signed) VALUES (\(position), \(Data(try signed.serializedBytes() as [UInt8])))
                """, logger: logger)
            return entries.count
        }
    }

    /// Entries with their lines (by account, in byte order), from a query selecting position, id, kind, contract,
    /// memo, invoker, key, request digest, creation time in microseconds and chain digest.
    static func entries(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger) async throws
        -> [Orrery_Settlement_V1_ChainedEntry]
    {
        var entries: [Orrery_Settlement_V1_ChainedEntry] = []
        for try await (position, id, kind, contract, memo, invoker, key, sha, micros, digest)
            in try await connection
            .query(query, logger: logger).decode(
                (Int64, Int64, String, String, String, String, String, Data, Int64, Data).self)
        {
            entries.append(
                .with {
                    $0.position = UInt64(max(0, position))
                    $0.id = id
                    $0.kind = kind
                    $0.contractID = contract
                    $0.memo = memo
                    $0.invoker = invoker
                    $0.idempotencyKey = key
                    $0.requestSha256 = sha
                    $0.createdAtMicros = micros
                    $0.chainDigest = digest
                })
        }
        guard !entries.isEmpty else { return [] }
        var index: [Int64: Int] = [:]
        for (offset, entry) in entries.enumerated() { index[entry.id] = offset }
        for try await (id, account, amount) in try await connection.query(
            """
            SELECT entry_id, account_id, amount::text FROM journal_lines
            WHERE entry_id = ANY(\(entries.map(\.id))::bigint[]) ORDER BY entry_id, account_id COLLATE "C"
            """, logger: logger
        ).decode((Int64, String, String).self) {
            guard let offset = index[id] else { continue }
            entries[offset].lines.append(
                .with {
                    $0.account = account
                    $0.amount = amount
                })
        }
        return entries
    }
}
