internal import Foundation
internal import Logging
internal import NIOCore
internal import OrreryDatabase
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// The `contract_breaches` table: which log entries are SLA breaches, by contract. The sequencer adds a breach's
/// row in the transaction that appends it; `backfill` indexes the entries logged before the table existed.
enum BreachIndex {
    /// A contract's breaches in log order: each entry's index and the breach as the notary signed it.
    typealias Breaches = [(index: UInt64, breach: Orrery_Notary_V1_SlaBreach)]

    /// The breach an entry's act carries, if the entry is one.
    static func breach(ofLeaf leaf: Data) throws -> Orrery_Notary_V1_SlaBreach? {
        let signed = try Orrery_Common_V1_Signed(serializedBytes: leaf)
        let entry = try Orrery_Notary_V1_LogEntry(serializedBytes: signed.payload)
        guard entry.kind == .slaBreach else { return nil }
        return try Orrery_Notary_V1_SlaBreach(serializedBytes: entry.act.payload)
    }

    /// The breaches of each of `ids` that has any.
    static func breaches(of ids: [String], on client: some PostgresQueryable, logger: Logger) async throws
        -> [String: Breaches]
    {
        guard !ids.isEmpty else { return [:] }
        let rows = try await client.runQuery(
            """
            SELECT b.contract_id, b.idx, e.leaf FROM contract_breaches b JOIN log_entries e ON e.idx = b.idx
            WHERE b.contract_id = ANY(\(ids)::text[]) ORDER BY b.idx
            """,
            logger: logger)
        var found: [String: Breaches] = [:]
        for try await (id, index, leaf) in rows.decode((String, Int64, Data).self) {
            guard let breach = try breach(ofLeaf: leaf) else {
                throw NotaryFailure.internalError("log entry \(index) is indexed as a breach of \(id) but is none")
            }
            found[id, default: []].append((UInt64(index), breach))
        }
        return found
    }

    /// Records that the entries at `indexes` are breaches of `contracts` (same order), in the caller's transaction;
    /// an entry indexed already is left as it is (the backfill may meet one twice after a restart).
    static func add(indexes: [Int64], contracts: [String], on connection: PostgresConnection, logger: Logger)
        async throws
    {
        guard !indexes.isEmpty else { return }
        try await connection.query(
            """
            INSERT INTO contract_breaches (idx, contract_id)
            SELECT * FROM unnest(\(indexes)::bigint[], \(contracts)::text[]) ON CONFLICT DO NOTHING
            """,
            logger: logger)
    }

    /// Indexes the breaches among the entries logged before the index existed, a batch per transaction, until none
    /// is left (a restart carries on where it stopped).
    static func backfill(client: PostgresClient, logger: Logger, batch: Int64 = 1_000) async throws {
        while !Task.isCancelled {
            let finished = try await client.transaction(logger: logger) { connection -> Bool in
                let rows = try await connection.query(
                    "SELECT upto, done FROM contract_breaches_backfill FOR UPDATE", logger: logger)
                var left: (upto: Int64, done: Int64)?
                for try await (upto, done) in rows.decode((Int64, Int64).self) { left = (upto, done) }
                guard let left, left.done < left.upto else { return true }
                let end = min(left.done + batch, left.upto)
                let leaves = try await connection.query(
                    "SELECT idx, leaf FROM log_entries WHERE idx >= \(left.done) AND idx < \(end) ORDER BY idx",
                    logger: logger)
                var indexes: [Int64] = []
                var contracts: [String] = []
                for try await (index, leaf) in leaves.decode((Int64, Data).self) {
                    guard let breach = try breach(ofLeaf: leaf) else { continue }
                    indexes.append(index)
                    contracts.append(breach.contractID)
                }
                try await add(indexes: indexes, contracts: contracts, on: connection, logger: logger)
                try await connection.query("UPDATE contract_breaches_backfill SET done = \(end)", logger: logger)
                if end == left.upto {
                    logger.info("SLA breaches logged before their index are indexed", metadata: ["entries": "\(end)"])
                }
                return end == left.upto
            }
            if finished { return }
        }
    }
}
