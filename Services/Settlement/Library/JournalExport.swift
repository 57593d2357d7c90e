internal import Crypto
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryLedger
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// The journal as `AuditJournal` streams it, read in one snapshot (so balances and lines agree however busy the
/// ledger is): sealed entries by chain position, unsealed ones, accounts, signed checkpoints, and each release
/// checked against the proof kept for it.
struct JournalExport: Sendable {
    let client: PostgresClient
    let notaryDID: DID?
    let heads: VerifiedTreeHeads
    let logger: Logger
    /// Sealed entries read per query.
    var page = 1000

    func stream(into send: @Sendable (Orrery_Settlement_V1_AuditJournalItem) async throws -> Void) async throws {
        let (logger, page) = (logger, page)
        try await client.transaction(logger: logger) { connection in
            try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            var releases: [Orrery_Settlement_V1_ChainedEntry] = []
            var after: Int64 = 0
            while true {
                let entries = try await JournalSealer.entries(
                    """
                    SELECT c.position, e.id, e.kind, coalesce(e.contract_id, ''), e.memo, e.invoker, e.idempotency_key,
                           e.request_sha256, (extract(epoch FROM e.created_at) * 1000000)::bigint, c.digest
                    FROM journal_chain c JOIN journal_entries e ON e.id = c.entry_id
                    WHERE c.position > \(after) ORDER BY c.position LIMIT \(page)
                    """, on: connection, logger: logger)
                for entry in entries {
                    try await send(.with { $0.entry = entry })
                    if entry.kind == "release" { releases.append(entry) }
                }
                guard let last = entries.last, entries.count == page else { break }
                after = Int64(last.position)
            }
            for entry in try await JournalSealer.entries(
                """
                SELECT 0::bigint, e.id, e.kind, coalesce(e.contract_id, ''), e.memo, e.invoker, e.idempotency_key,
                       e.request_sha256, (extract(epoch FROM e.created_at) * 1000000)::bigint, ''::bytea
                FROM journal_unsealed u JOIN journal_entries e ON e.id = u.entry_id ORDER BY e.id
                """, on: connection, logger: logger)
            {
                try await send(.with { $0.entry = entry })
                if entry.kind == "release" { releases.append(entry) }
            }
            for try await (id, owner, kind, balance) in try await connection.query(
                """
                SELECT id, coalesce(owner_did, ''), kind, balance::text FROM accounts ORDER BY id COLLATE "C"
                """, logger: logger
            ).decode((String, String, String, String).self) {
                try await send(
                    .with {
                        $0.account = .with {
                            $0.account = id
                            $0.ownerDid = owner
                            $0.kind = kind
                            $0.balance = balance
                        }
                    })
            }
            for try await signed in try await connection.query(
                "SELECT signed FROM journal_checkpoints ORDER BY position", logger: logger
            ).decode(Data.self) {
                try await send(
                    .with { $0.checkpoint = (try? Orrery_Common_V1_Signed(serializedBytes: signed)) ?? .init() })
            }
            for check in try await checks(releases.sorted { $0.id < $1.id }, on: connection) {
                try await send(.with { $0.release = check })
            }
        }
    }

    /// Each release judged against its kept proof, in entry order per contract (what was released for a contract
    /// up to an entry must be within what that entry's receipt made due).
    private func checks(_ releases: [Orrery_Settlement_V1_ChainedEntry], on connection: PostgresConnection)
        async throws -> [Orrery_Settlement_V1_ReleaseCheck]
    {
        var keptAfter: Int64 = 0
        for try await id in try await connection.query(
            "SELECT proofs_kept_after FROM journal_audit_start", logger: logger
        ).decode(Int64.self) { keptAfter = id }
        var released: [String: SignedDecimal] = [:]
        var checks: [Orrery_Settlement_V1_ReleaseCheck] = []
        for entry in releases {
            let escrow = entry.lines.first { $0.account == "escrow/\(entry.contractID)" }
            let amount = SignedDecimal(escrow.map { Amount.negated($0.amount) } ?? "0") ?? .zero
            released[entry.contractID] = (released[entry.contractID] ?? .zero) + amount
            var check = Orrery_Settlement_V1_ReleaseCheck.with { $0.entryID = entry.id }
            if entry.id <= keptAfter {
                check.unprovenLegacy = true
            } else {
                check.problem = try await problem(entry, releasedSoFar: released[entry.contractID] ?? .zero, connection)
            }
            checks.append(check)
        }
        return checks
    }

    private func problem(
        _ entry: Orrery_Settlement_V1_ChainedEntry, releasedSoFar: SignedDecimal, _ connection: PostgresConnection
    ) async throws -> String {
        guard
            let proof = try await connection.query(
                "SELECT request FROM release_proofs WHERE request_sha256 = \(entry.requestSha256)", logger: logger
            ).decode(Data.self).collected().first
        else { return "no proof is kept for it" }
        guard Data(SHA256.hash(data: proof)) == entry.requestSha256 else {
            return "the proof kept for it is not the request it was made against"
        }
        guard let notaryDID else { return "no notary DID is configured (notary.did) to check proofs against" }
        let request: Orrery_Settlement_V1_ReleaseRequest
        do {
            request = try Orrery_Settlement_V1_ReleaseRequest(serializedBytes: proof)
        } catch {
            return "the proof kept for it is not a release request"
        }
        let proven: ProvenRelease
        do {
            proven = try ProvenRelease.verify(request, notary: notaryDID, heads: heads)
        } catch {
            return "its proof no longer verifies: \(error)"
        }
        guard request.contractID == entry.contractID else {
            return "its proof is for contract \(request.contractID), not \(entry.contractID)"
        }
        let owner = "receivable/\(proven.contract.ownerDid)"
        guard entry.lines.contains(where: { $0.account == owner }) else {
            return "it pays an account other than the contract's owner's (\(owner))"
        }
        guard let due = SignedDecimal("-\(proven.due)"), !(releasedSoFar + due).isPositive else {
            return
                "\(releasedSoFar) was released for \(entry.contractID) through it, more than the \(proven.due) its receipt made due"
        }
        return ""
    }
}
