internal import Crypto
internal import Foundation
internal import OrreryAuth
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryEthereum
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// The double-entry ledger in PostgreSQL. An entry is posted in one transaction: its lines change the accounts'
/// balances (each account's row locked, in id order, so concurrent entries cannot deadlock or overdraw), the
/// database refuses a negative balance on any account but a clearing one and an entry whose lines do not sum to
/// zero, and the (invoker, idempotency key) pair is unique, so a retry returns the first entry and a crash leaves
/// the whole entry or none.
struct LedgerStore: Sendable {
    let client: PostgresClient
    let logger: Logger
    let batcher: LedgerBatcher

    init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
        batcher = LedgerBatcher(client: client, logger: logger)
    }

    /// One line: what it adds to an account's balance (negative to take away).
    struct Line: Sendable {
        var account: String
        var owner: String?
        var kind: String
        var amount: String
    }

    /// An account an entry must create, and what to say when it exists already.
    struct NewAccount: Sendable {
        var id: String
        var taken: String
    }

    /// Posts an entry with known lines, batched with concurrent ones. `newAccount`, when given, must not exist yet
    /// (a contract's escrow is created once): `ALREADY_EXISTS` with its message otherwise.
    func post(
        kind: String, contractID: String?, memo: String, retry: RetryKey, lines: [Line], newAccount: NewAccount? = nil
    ) async throws -> Orrery_Settlement_V1_JournalEntry {
        var entry = Self.header(kind: kind, contractID: contractID, memo: memo, retry: retry)
        entry += [
            ("accounts", .array(lines.map { .string($0.account) })),
            ("owners", .array(lines.map { .string($0.owner ?? "") })),
            ("kinds", .array(lines.map { .string($0.kind) })),
            ("amounts", .array(lines.map { .string($0.amount) })),
            ("new_account", newAccount.map { .string($0.id) } ?? .null),
        ]
        let outcome = try await batcher.post(.object(entry))
        return try await journalEntry(
            outcome, kind: kind, contractID: contractID, memo: memo, retry: retry, newAccount: newAccount
        ) { _, _ in lines.map { ($0.account, $0.amount) } }
    }

    /// Releases what `due` (cumulative) makes owed from a contract's escrow to `owner`, at most what is left, less
    /// `feeBasisPoints` to `feeAccount` — computed in the database under the escrow's row lock, batched. `proof` (the
    /// release request, whose SHA-256 is `retry`'s) is kept with it, for audits.
    func release(
        contractID: String, owner: String, due: UInt64, feeBasisPoints: UInt64, feeAccount: String, memo: String,
        retry: RetryKey, proof: Data
    ) async throws -> Orrery_Settlement_V1_JournalEntry {
        var entry = Self.header(kind: "release", contractID: contractID, memo: memo, retry: retry)
        entry += [
            ("due", .string(String(due))), ("owner", .string(owner)), ("fee_bps", .string(String(feeBasisPoints))),
            ("fee_account", .string(feeAccount)),
        ]
        let outcome = try await batcher.post(
            .object(entry), proof: LedgerBatcher.Proof(sha256: retry.requestSHA256, request: proof))
        return try await journalEntry(
            outcome, kind: "release", contractID: contractID, memo: memo, retry: retry, newAccount: nil
        ) { released, fee in
            let (amount, cut) = (UInt64(released ?? "") ?? 0, UInt64(fee ?? "") ?? 0)
            var lines = [
                ("escrow/\(contractID)", Amount.negated(String(amount))), ("receivable/\(owner)", String(amount - cut)),
            ]
            if cut > 0 { lines.append((feeAccount, String(cut))) }
            return lines
        }
    }

    private static func header(kind: String, contractID: String?, memo: String, retry: RetryKey)
        -> [(key: String, value: JSONValue)]
    {
        [
            ("kind", .string(kind)), ("contract", contractID.map { .string($0) } ?? .null), ("memo", .string(memo)),
            ("invoker", .string(retry.invoker)), ("key", .string(retry.key)),
            ("sha", .string(Hex.encode(retry.requestSHA256))),
        ]
    }

    /// The answer for a batched entry: the posted entry (built from what was sent and what the database computed,
    /// without reading it back), the first entry of a retry, or the refusal as a gRPC status.
    private func journalEntry(
        _ outcome: LedgerBatcher.Outcome, kind: String, contractID: String?, memo: String, retry: RetryKey,
        newAccount: NewAccount?, lines: (String?, String?) -> [(String, String)]
    ) async throws -> Orrery_Settlement_V1_JournalEntry {
        switch outcome {
        case .posted(let id, let at, let released, let fee):
            let entry = Orrery_Settlement_V1_JournalEntry.with {
                $0.id = id
                $0.kind = kind
                $0.contractID = contractID ?? ""
                $0.memo = memo
                $0.at = Google_Protobuf_Timestamp(date: at)
                $0.lines = lines(released, fee).sorted { $0.0 < $1.0 }.map { account, amount in
                    .with {
                        $0.account = account
                        $0.amount = amount
                    }
                }
            }
            MoneyMetrics.count(entry)
            return entry
        case .refused(let state, let constraint, let message):
            if let earlier = try await earlierEntry(retry) { return earlier }
            switch (state, constraint) {
            case ("23505", "accounts_pkey"):
                throw RPCError(code: .alreadyExists, message: newAccount?.taken ?? "the account exists already")
            case ("23514", "no_negative_balance"):
                throw RPCError(code: .failedPrecondition, message: "the balance does not cover it: \(message)")
            case ("ORNOE", _):
                throw RPCError(code: .failedPrecondition, message: message)
            case ("ORNDU", _):
                throw RPCError(code: .failedPrecondition, message: message)
            default:
                throw RPCError(code: .internalError, message: "the ledger refused the entry (\(state)): \(message)")
            }
        }
    }

    /// Posts an entry whose lines `lines` decides inside the transaction (it may read balances, locked).
    func post(
        kind: String, contractID: String?, memo: String, retry: RetryKey,
        lines: @Sendable @escaping (PostgresConnection) async throws -> [Line]
    ) async throws -> Orrery_Settlement_V1_JournalEntry {
        try await answer(retry: retry, newAccount: nil) { [logger] in
            try await client.transaction(logger: logger) { connection in
                try await Self.insert(
                    kind: kind, contractID: contractID, memo: memo, retry: retry, lines: try await lines(connection),
                    newAccount: nil, on: connection, logger: logger)
            }
        }
    }

    /// Runs a posting and reads its entry back. A retry is recognised when the posting fails — the unique key
    /// refuses the second entry, or the rules refuse what was already done — and answered with the first entry.
    func answer(retry: RetryKey, newAccount: NewAccount?, _ posting: () async throws -> Int64) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        let id: Int64
        do {
            id = try await posting()
        } catch {
            if let earlier = try await earlierEntry(retry) { return earlier }
            guard let error = error as? PSQLError else { throw error }
            switch (error.serverInfo?[.sqlState], error.serverInfo?[.constraintName]) {
            case ("23505", "accounts_pkey"):
                throw RPCError(code: .alreadyExists, message: newAccount?.taken ?? "the account exists already")
            case ("23514", "no_negative_balance"):
                throw RPCError(
                    code: .failedPrecondition,
                    message:
                        "the balance does not cover it: \(error.serverInfo?[.message] ?? "an account would go below zero")"
                )
            default:
                throw error
            }
        }
        guard let entry = try await entry(id) else {
            throw RPCError(code: .internalError, message: "entry \(id) cannot be read back")
        }
        MoneyMetrics.count(entry)
        return entry
    }

    static func insert(
        kind: String, contractID: String?, memo: String, retry: RetryKey, lines: [Line], newAccount: NewAccount?,
        on database: some PostgresQueryable, logger: Logger
    ) async throws -> Int64 {
        guard !lines.isEmpty else { throw RPCError(code: .internalError, message: "an entry without lines") }
        let rows = try await database.runQuery(
            """
            SELECT post_entry(\(kind), \(contractID), \(memo), \(retry.invoker), \(retry.key), \(retry.requestSHA256),
                \(lines.map(\.account)), \(lines.map { $0.owner ?? "" }), \(lines.map(\.kind)), \(lines.map(\.amount))::numeric[],
                \(newAccount?.id))
            """, logger: logger)
        for try await id in rows.decode(Int64.self) { return id }
        throw RPCError(code: .internalError, message: "posting returned no entry")
    }

    /// The entry an earlier call with the same key posted, if any.
    /// - Throws: `FAILED_PRECONDITION` when the key was used for another request.
    func earlierEntry(_ retry: RetryKey) async throws -> Orrery_Settlement_V1_JournalEntry? {
        let rows = try await client.query(
            """
            SELECT id, request_sha256 FROM journal_entries
            WHERE invoker = \(retry.invoker) AND idempotency_key = \(retry.key)
            """, logger: logger)
        for try await (id, digest) in rows.decode((Int64, Data).self) {
            guard digest == retry.requestSHA256 else {
                throw RPCError(
                    code: .failedPrecondition, message: "idempotency_key '\(retry.key)' was used for another request")
            }
            return try await entry(id)
        }
        return nil
    }

    func entry(_ id: Int64) async throws -> Orrery_Settlement_V1_JournalEntry? {
        try await entries(
            """
            SELECT e.id, e.kind, coalesce(e.contract_id, ''), e.memo, e.created_at, l.account_id, l.amount::text
            FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id
            WHERE e.id = \(id) ORDER BY l.account_id
            """
        ).first
    }

    /// A participant's entries after `after`, oldest first.
    func statement(did: String, after: Int64, limit: Int) async throws -> [Orrery_Settlement_V1_JournalEntry] {
        try await entries(
            """
            SELECT e.id, e.kind, coalesce(e.contract_id, ''), e.memo, e.created_at, l.account_id, l.amount::text
            FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id
            WHERE e.id IN (
                SELECT DISTINCT l2.entry_id FROM journal_lines l2 JOIN accounts a ON a.id = l2.account_id
                WHERE a.owner_did = \(did) AND l2.entry_id > \(after)
                ORDER BY l2.entry_id LIMIT \(limit))
            ORDER BY e.id, l.account_id
            """)
    }

    private func entries(_ query: PostgresQuery) async throws -> [Orrery_Settlement_V1_JournalEntry] {
        var entries: [Orrery_Settlement_V1_JournalEntry] = []
        for try await (id, kind, contract, memo, at, account, amount) in try await client.query(query, logger: logger)
            .decode((Int64, String, String, String, Date, String, String).self)
        {
            if entries.last?.id != id {
                entries.append(
                    .with {
                        $0.id = id
                        $0.kind = kind
                        $0.contractID = contract
                        $0.memo = memo
                        $0.at = Google_Protobuf_Timestamp(date: at)
                    })
            }
            entries[entries.count - 1].lines.append(
                .with {
                    $0.account = account
                    $0.amount = amount
                })
        }
        return entries
    }

    /// A participant's balances by kind.
    func balance(did: String) async throws -> Orrery_Settlement_V1_Balance {
        var balance = Orrery_Settlement_V1_Balance.with {
            $0.did = did
            $0.available = "0"
            $0.escrow = "0"
            $0.receivable = "0"
        }
        for try await (kind, total) in try await client.query(
            "SELECT kind, sum(balance)::text FROM accounts WHERE owner_did = \(did) GROUP BY kind", logger: logger
        ).decode((String, String).self) {
            switch kind {
            case "available": balance.available = total
            case "escrow": balance.escrow = total
            case "receivable": balance.receivable = total
            default: break
            }
        }
        return balance
    }

    /// SLA penalties already refunded to a contract's consumer (taken from the owner's receivable).
    static func penaltiesPaid(_ contract: String, on connection: PostgresConnection, logger: Logger) async throws
        -> UInt64
    {
        for try await total in try await connection.query(
            """
            SELECT coalesce(-sum(l.amount), 0)::text FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
            WHERE e.kind = 'refund' AND e.contract_id = \(contract) AND l.account_id LIKE 'receivable/%'
            """, logger: logger
        ).decode(String.self) { return UInt64(total) ?? 0 }
        return 0
    }

    /// Whether the contract's escrow is held in an on-chain payment channel.
    func isChannelEscrow(_ contract: String) async throws -> Bool {
        try await Self.isChannelEscrow(contract, on: client, logger: logger)
    }

    static func isChannelEscrow(_ contract: String, on database: some PostgresQueryable, logger: Logger)
        async throws -> Bool
    {
        let rows = try await database.runQuery(
            "SELECT 1 FROM channel_escrows WHERE contract_id = \(contract)", logger: logger
        ).decode(Int32.self).collected()
        return !rows.isEmpty
    }

    /// What was released from a contract's escrow so far.
    static func released(_ contract: String, on connection: PostgresConnection, logger: Logger) async throws -> UInt64 {
        for try await total in try await connection.query(
            """
            SELECT coalesce(-sum(l.amount), 0)::text FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
            WHERE e.kind = 'release' AND l.account_id = \("escrow/\(contract)")
            """, logger: logger
        ).decode(String.self) { return UInt64(total) ?? 0 }
        return 0
    }

    /// The balance of one account, its row locked until the transaction ends; nil when it does not exist.
    static func lockedBalance(_ account: String, on connection: PostgresConnection, logger: Logger) async throws
        -> (balance: String, owner: String?)?
    {
        for try await (balance, owner) in try await connection.query(
            "SELECT balance::text, owner_did FROM accounts WHERE id = \(account) FOR UPDATE", logger: logger
        ).decode((String, String?).self) { return (balance, owner) }
        return nil
    }
}

/// NTX amounts: non-negative integers in base units, as decimal strings of at most 78 digits (a uint256).
enum Amount {
    /// The amount if `text` is a positive decimal integer without a sign or leading zeros.
    static func positive(_ text: String) -> String? {
        guard (1...78).contains(text.count), text.first != "0", text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            return nil
        }
        return text
    }

    static func negated(_ amount: String) -> String {
        amount.hasPrefix("-") ? String(amount.dropFirst()) : "-" + amount
    }
}
