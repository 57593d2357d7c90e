internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Payouts in PostgreSQL. A withdrawal's ledger entry and its intent are written in one transaction; the
/// broadcaster then moves it intent → signed (nonce allocated, transaction signed and stored before anything is
/// sent) → broadcast → confirmed | failed (the amount credited back). Every step is durable, so a restart resumes
/// where it stopped and re-sends the same signed bytes: a payout is never paid twice.
struct PayoutStore: Sendable {
    let client: PostgresClient
    let logger: Logger
    let gatewayDID: String

    /// What the broadcaster works from.
    struct Pending: Sendable {
        var id: String
        var state: String
        var address: String
        var amount: String
        var nonce: Int64?
        var raw: [UInt8]
        var maxFee: String?
        var priorityFee: String?
        var transactions: [String]
        var broadcastAt: Date?
    }

    static let columns = """
        id, did, chain, address, amount::text, kind, coalesce(contract_id, ''), state, coalesce(nonce, -1),
        transactions, coalesce(confirmed_transaction, ''), coalesce(voucher_signature, ''::bytea),
        coalesce(channel, ''::bytea), error, created_at, updated_at
        """

    /// Takes `amount` from `did`'s `source` account ("receivable" or "available") into the chain's clearing
    /// account and records the withdrawal's intent to `address`.
    func requestWithdrawal(
        did: String, chain: String, address: String, amount: String, source: String, retry: RetryKey
    ) async throws -> Orrery_Settlement_V1_Payout {
        let logger = logger
        let id = RandomIdentifier.make(prefix: "pay_")
        do {
            try await client.transaction(logger: logger) { connection in
                let entry = try await LedgerStore.insert(
                    kind: "payout", contractID: nil, memo: "withdrawal \(id) to \(address) on \(chain)", retry: retry,
                    lines: [
                        .init(account: "\(source)/\(did)", owner: did, kind: source, amount: Amount.negated(amount)),
                        .init(account: "clearing/\(chain)", owner: nil, kind: "clearing", amount: amount),
                    ], newAccount: nil, on: connection, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO payouts (id, did, chain, address, amount, kind, source_account, state, entry_id)
                    VALUES (\(id), \(did), \(chain), \(address), \(amount)::numeric, 'withdrawal',
                            \("\(source)/\(did)"), 'intent', \(entry))
                    """, logger: logger)
            }
        } catch {
            if let earlier = try await earlierPayout(retry) { return earlier }
            if let error = error as? PSQLError, error.serverInfo?[.constraintName] == "no_negative_balance" {
                throw RPCError(
                    code: .failedPrecondition, message: "the \(source) balance of \(did) does not cover \(amount)")
            }
            throw error
        }
        guard let payout = try await payout(id: id) else {
            throw RPCError(code: .internalError, message: "payout \(id) cannot be read back")
        }
        return payout
    }

    /// The payout an earlier call with the same retry key created.
    private func earlierPayout(_ retry: RetryKey) async throws -> Orrery_Settlement_V1_Payout? {
        for (id, digest) in try await client.query(
            """
            SELECT p.id, e.request_sha256 FROM payouts p JOIN journal_entries e ON e.id = p.entry_id
            WHERE e.invoker = \(retry.invoker) AND e.idempotency_key = \(retry.key)
            """, logger: logger
        ).decode((String, Data).self).collected() {
            guard digest == retry.requestSHA256 else {
                throw RPCError(
                    code: .failedPrecondition, message: "idempotency_key '\(retry.key)' was used for another request")
            }
            return try await payout(id: id)
        }
        return nil
    }

    func payout(id: String) async throws -> Orrery_Settlement_V1_Payout? {
        try await payouts(
            PostgresQuery(unsafeSQL: "SELECT \(Self.columns) FROM payouts WHERE id = $1", binds: try binds(id))
        ).first
    }

    func list(did: String, limit: Int) async throws -> [Orrery_Settlement_V1_Payout] {
        try await payouts(
            PostgresQuery(
                unsafeSQL: "SELECT \(Self.columns) FROM payouts WHERE did = $1 ORDER BY created_at DESC LIMIT \(limit)",
                binds: try binds(did)))
    }

    private func binds(_ value: String) throws -> PostgresBindings {
        var binds = PostgresBindings()
        binds.append(value)
        return binds
    }

    private func payouts(_ query: PostgresQuery) async throws -> [Orrery_Settlement_V1_Payout] {
        var result: [Orrery_Settlement_V1_Payout] = []
        for try await row in try await client.query(query, logger: logger) {
            let (id, did, chain, address, amount, kind, contract, state) = try row.decode(
                (String, String, String, String, String, String, String, String).self)
            let cells = row.makeRandomAccess()
            let nonce = try cells[8].decode(Int64.self)
            let transactions = try cells[9].decode([String].self)
            let confirmed = try cells[10].decode(String.self)
            let signature = try cells[11].decode(Data.self)
            let channel = try cells[12].decode(Data.self)
            let error = try cells[13].decode(String.self)
            let created = try cells[14].decode(Date.self)
            let updated = try cells[15].decode(Date.self)
            result.append(
                .with {
                    $0.id = id
                    $0.did = did
                    $0.chain = chain
                    $0.address = address
                    $0.amount = amount
                    $0.kind = kind
                    $0.contractID = contract
                    $0.state = state
                    $0.nonce = nonce
                    $0.transactions = transactions
                    $0.confirmedTransaction = confirmed
                    $0.voucherSignature = signature
                    $0.channel = channel
                    $0.error = error
                    $0.createdAt = Google_Protobuf_Timestamp(date: created)
                    $0.updatedAt = Google_Protobuf_Timestamp(date: updated)
                })
        }
        return result
    }

    // MARK: - The broadcaster's steps

    /// Withdrawals on `chain` that are not finished, oldest first.
    func pending(chain: String) async throws -> [Pending] {
        var result: [Pending] = []
        for try await row in try await client.query(
            """
            SELECT id, state, address, amount::text, nonce, coalesce(raw_transaction, ''::bytea),
                   max_fee_per_gas::text, max_priority_fee_per_gas::text, transactions, broadcast_at
            FROM payouts WHERE chain = \(chain) AND kind = 'withdrawal' AND state IN ('intent', 'signed', 'broadcast')
            ORDER BY created_at LIMIT 100
            """, logger: logger)
        {
            let (id, state, address, amount, nonce, raw, maxFee, priorityFee, transactions, broadcastAt) =
                try row.decode((String, String, String, String, Int64?, Data, String?, String?, [String], Date?).self)
            result.append(
                Pending(
                    id: id, state: state, address: address, amount: amount, nonce: nonce, raw: [UInt8](raw),
                    maxFee: maxFee, priorityFee: priorityFee, transactions: transactions, broadcastAt: broadcastAt))
        }
        return result
    }

    /// Allocates the next nonce of `sender` (starting from `nodeNonce` the first time) and stores the signed
    /// transaction `sign` makes with it — both in one transaction, so a nonce is used by one payout only.
    func sign(
        id: String, chain: String, sender: String, nodeNonce: UInt64,
        sign: @Sendable (UInt64) throws -> (raw: [UInt8], hash: String, maxFee: String, priorityFee: String)
    ) async throws {
        let logger = logger
        try await client.transaction(logger: logger) { connection in
            let state = try await connection.query(
                "SELECT state FROM payouts WHERE id = \(id) FOR UPDATE", logger: logger
            ).decode(String.self).collected().first
            guard state == "intent" else { return }
            try await connection.query(
                """
                INSERT INTO chain_nonces (chain, address, next_nonce) VALUES (\(chain), \(sender), \(Int64(nodeNonce)))
                ON CONFLICT (chain, address) DO NOTHING
                """, logger: logger)
            guard
                let nonce = try await connection.query(
                    """
                    UPDATE chain_nonces SET next_nonce = next_nonce + 1 WHERE chain = \(chain) AND address = \(sender)
                    RETURNING next_nonce - 1
                    """, logger: logger
                ).decode(Int64.self).collected().first
            else { throw RPCError(code: .internalError, message: "no nonce row for \(sender)") }
            let signed = try sign(UInt64(nonce))
            try await connection.query(
                """
                UPDATE payouts SET state = 'signed', nonce = \(nonce), raw_transaction = \(Data(signed.raw)),
                    max_fee_per_gas = \(signed.maxFee)::numeric, max_priority_fee_per_gas = \(signed.priorityFee)::numeric,
                    transactions = ARRAY[\(signed.hash)], updated_at = now()
                WHERE id = \(id)
                """, logger: logger)
        }
    }

    func markBroadcast(id: String) async throws {
        try await client.query(
            """
            UPDATE payouts SET state = 'broadcast', broadcast_at = now(), updated_at = now()
            WHERE id = \(id) AND state = 'signed'
            """, logger: logger)
    }

    /// Records a replacement (same nonce, higher fees): the newest signed bytes and one more hash to watch.
    func replace(id: String, raw: [UInt8], hash: String, maxFee: String, priorityFee: String) async throws {
        try await client.query(
            """
            UPDATE payouts SET raw_transaction = \(Data(raw)), transactions = transactions || \(hash),
                max_fee_per_gas = \(maxFee)::numeric, max_priority_fee_per_gas = \(priorityFee)::numeric,
                broadcast_at = now(), updated_at = now()
            WHERE id = \(id) AND state = 'broadcast'
            """, logger: logger)
    }

    func confirm(id: String, transaction: String) async throws {
        try await client.query(
            """
            UPDATE payouts SET state = 'confirmed', confirmed_transaction = \(transaction), updated_at = now()
            WHERE id = \(id) AND state = 'broadcast'
            """, logger: logger)
    }

    /// Marks a withdrawal failed and credits its amount back to the account it came from, together.
    func fail(id: String, reason: String) async throws {
        let (logger, gatewayDID) = (logger, gatewayDID)
        try await client.transaction(logger: logger) { connection in
            guard
                let (chain, did, amount, source) = try await connection.query(
                    """
                    SELECT chain, did, amount::text, source_account FROM payouts
                    WHERE id = \(id) AND state IN ('signed', 'broadcast') FOR UPDATE
                    """, logger: logger
                ).decode((String, String, String, String).self).collected().first
            else { return }
            let key = "payout-failed/\(id)"
            _ = try await LedgerStore.insert(
                kind: "payout-reversal", contractID: nil, memo: "withdrawal \(id) failed: \(reason)",
                retry: RetryKey(invoker: gatewayDID, method: "payout-reversal", key: key, describing: key),
                lines: [
                    .init(account: "clearing/\(chain)", owner: nil, kind: "clearing", amount: Amount.negated(amount)),
                    .init(
                        account: source, owner: did, kind: String(source.prefix(while: { $0 != "/" })), amount: amount),
                ], newAccount: nil, on: connection, logger: logger)
            try await connection.query(
                "UPDATE payouts SET state = 'failed', error = \(reason), updated_at = now() WHERE id = \(id)",
                logger: logger)
        }
    }
}
