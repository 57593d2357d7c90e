internal import Crypto
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryEthereum
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf

/// The settlement gateway's ledger operations for an authorised caller (docs/ARCHITECTURE.md §2): deposits (the operator's, in
/// ledger mode), escrow of a contract's maximum cost under the consumer's own delegation, releases to the device's
/// owner against receipts proven in the notary's log, refunds, balances and statements; with the Ethereum adapter,
/// escrows held in on-chain payment channels whose releases become vouchers (SettlementChainAPI adds address
/// binding and payouts).
struct SettlementAPI: Sendable {
    let ledger: LedgerStore
    let addresses: AddressBook
    let payouts: PayoutStore
    /// The gateway's own DID (named in address-binding challenges; the invoker of entries it posts by itself).
    let gatewayDID: DID
    /// The Ethereum adapter, when one is configured.
    let ethereum: EthereumAdapter?
    let ethereumChainID = ChainIDCache()
    let operatorDID: DID
    /// The notary whose signed tree heads releases are proven against; nil refuses releases.
    let notaryDID: DID?
    let revocations: RevocationBook
    let logger: Logger
    let verified = VerifiedDelegations()
    let heads = VerifiedTreeHeads()

    static let area = (try? Command("/orrery/settlement"))
    static let escrowCommand = (try? Command("/orrery/settlement/escrow"))

    func balance(_ request: Orrery_Settlement_V1_GetBalanceRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_Balance
    {
        try mayRead(request.did, authorization)
        return try await ledger.balance(did: request.did)
    }

    func statement(_ request: Orrery_Settlement_V1_GetStatementRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_Statement
    {
        try mayRead(request.did, authorization)
        guard request.limit <= 1000 else { throw RPCError(code: .invalidArgument, message: "limit: 1…1000") }
        let entries = try await ledger.statement(
            did: request.did, after: request.afterEntry, limit: request.limit == 0 ? 100 : Int(request.limit))
        return .with { $0.entries = entries }
    }

    /// The whole journal for an audit (`JournalExport`); the operator only.
    func auditJournal(
        authorization: Authorization, send: @Sendable (Orrery_Settlement_V1_AuditJournalItem) async throws -> Void
    ) async throws {
        guard authorization.invoker == operatorDID else {
            throw RPCError(code: .permissionDenied, message: "only the operator audits the whole journal")
        }
        try await JournalExport(client: ledger.client, notaryDID: notaryDID, heads: heads, logger: logger)
            .stream(into: send)
    }

    func deposit(_ request: Orrery_Settlement_V1_DepositRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        let retry = try Self.retry(request, key: request.idempotencyKey, authorization)
        guard (try? DID(request.did)) != nil else {
            throw RPCError(code: .invalidArgument, message: "did: '\(request.did)' is not a did:key")
        }
        guard let amount = Amount.positive(request.amount) else {
            throw RPCError(code: .invalidArgument, message: "amount: a positive integer of base units, up to 78 digits")
        }
        guard request.source == "ledger" else {
            throw RPCError(
                code: .invalidArgument,
                message: "source: only 'ledger' (an operator's credit) until chain adapters land")
        }
        guard authorization.invoker == operatorDID else {
            throw RPCError(code: .permissionDenied, message: "only the operator credits deposits in ledger mode")
        }
        guard request.reference.count <= 200 else {
            throw RPCError(code: .invalidArgument, message: "reference: at most 200 characters")
        }
        let did = request.did
        return try await ledger.post(
            kind: "deposit", contractID: nil, memo: request.reference, retry: retry,
            lines: [
                .init(account: "clearing/ledger", owner: nil, kind: "clearing", amount: Amount.negated(amount)),
                .init(account: "available/\(did)", owner: did, kind: "available", amount: amount),
            ])
    }

    func escrow(_ request: Orrery_Settlement_V1_EscrowRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        let retry = try Self.retry(request, key: request.idempotencyKey, authorization)
        try Self.validateContractID(request.contractID)
        guard request.amount > 0 else { throw RPCError(code: .invalidArgument, message: "amount: at least 1") }
        guard authorization.validated.subject.string == request.consumerDid else {
            throw RPCError(
                code: .permissionDenied,
                message:
                    "the invocation acts for \(authorization.validated.subject), not for the consumer \(request.consumerDid)"
            )
        }
        guard let escrowCommand = Self.escrowCommand,
            OperatorVouching.vouches(
                for: authorization.invoker, root: operatorDID, command: escrowCommand,
                among: authorization.delegations, now: Int64(Date().timeIntervalSince1970),
                isRevoked: revocations.isRevoked, isSigned: verified.isValid)
        else {
            throw RPCError(
                code: .permissionDenied,
                message:
                    "\(authorization.invoker) is not an orchestrator the operator vouches for: send its chain from \(operatorDID) with the invocation"
            )
        }
        let (consumer, contract, amount) = (request.consumerDid, request.contractID, String(request.amount))
        switch request.chain {
        case "", "ledger": break
        case "ethereum": return try await channelEscrow(request, retry: retry)
        default: throw RPCError(code: .invalidArgument, message: "chain: '', 'ledger' or 'ethereum'")
        }
        let entry = try await ledger.post(
            kind: "escrow", contractID: contract, memo: "", retry: retry,
            lines: [
                .init(
                    account: "available/\(consumer)", owner: consumer, kind: "available", amount: Amount.negated(amount)
                ),
                .init(account: "escrow/\(contract)", owner: consumer, kind: "escrow", amount: amount),
            ],
            newAccount: .init(id: "escrow/\(contract)", taken: "contract \(contract) is already escrowed"))
        CrashPoint.reach("settlement.escrowed", logger: logger)
        return entry
    }

    /// Mirrors an on-chain channel escrow in the ledger (clearing/ethereum → escrow/<contract>) after checking the
    /// channel, and remembers the channel.
    private func channelEscrow(_ request: Orrery_Settlement_V1_EscrowRequest, retry: RetryKey) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        let (contract, consumer, amount, logger) = (
            request.contractID, request.consumerDid, String(request.amount), logger
        )
        if let earlier = try await ledger.earlierEntry(retry) { return earlier }
        let (channel, state) = try await verifiedChannel(contract: contract, consumer: consumer, amount: request.amount)
        return try await ledger.post(kind: "escrow", contractID: contract, memo: "payment channel", retry: retry) {
            connection in
            if try await LedgerStore.lockedBalance("escrow/\(contract)", on: connection, logger: logger) != nil {
                throw RPCError(code: .alreadyExists, message: "contract \(contract) is already escrowed")
            }
            try await connection.query(
                """
                INSERT INTO channel_escrows (contract_id, channel, payer, payee, deposit, expiry)
                VALUES (\(contract), \(Data(channel)), \(Hex.prefixed(state.payer.bytes)),
                        \(Hex.prefixed(state.payee.bytes)), \(state.deposit.decimal)::numeric, \(Int64(clamping: state.expiry)))
                """, logger: logger)
            return [
                .init(account: "clearing/ethereum", owner: nil, kind: "clearing", amount: Amount.negated(amount)),
                .init(account: "escrow/\(contract)", owner: consumer, kind: "escrow", amount: amount),
            ]
        }
    }

    /// The orchestration fee, in basis points of each release.
    static let feeBasisPoints: UInt64 = 200
    /// Fee accounts: spread so that concurrent releases do not queue on one row.
    static let feeShards = 8

    func release(_ request: Orrery_Settlement_V1_ReleaseRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        let retry = try Self.retry(request, key: request.idempotencyKey, authorization)
        try Self.validateContractID(request.contractID)
        guard let notaryDID else {
            throw RPCError(
                code: .failedPrecondition, message: "no notary DID is configured (notary.did): nothing is released")
        }
        let proven = try ProvenRelease.verify(request, notary: notaryDID, heads: heads)
        if ethereum != nil, try await ledger.isChannelEscrow(request.contractID) {
            return try await channelRelease(request, proven: proven, retry: retry)
        }
        let (contract, owner, due) = (request.contractID, proven.contract.ownerDid, proven.due)
        let shard = Int(Array(SHA256.hash(data: Data(contract.utf8)))[0]) % Self.feeShards
        let entry = try await ledger.release(
            contractID: contract, owner: owner, due: due, feeBasisPoints: Self.feeBasisPoints,
            feeAccount: "fee/\(shard)",
            memo: "receipt usage: \(proven.usage.wallSeconds) s wall\(proven.completed ? ", completed" : "")",
            retry: retry, proof: try request.serializedBytes())
        CrashPoint.reach("settlement.released", logger: logger)
        return entry
    }

    /// A release from an on-chain channel: the ledger moves the amount to the owner and straight out again as a
    /// cumulative voucher the owner redeems on chain (no orchestration fee is taken from a peer-to-peer channel).
    private func channelRelease(
        _ request: Orrery_Settlement_V1_ReleaseRequest, proven: ProvenRelease, retry: RetryKey
    ) async throws -> Orrery_Settlement_V1_JournalEntry {
        guard let ethereum else {
            throw RPCError(
                code: .failedPrecondition, message: "the contract is escrowed on Ethereum, which is not configured")
        }
        let chainID = try await ethereumChainID.get(ethereum.rpc)
        let (contract, owner, due, logger, gatewayDID) = (
            request.contractID, proven.contract.ownerDid, proven.due, logger, gatewayDID.string
        )
        let memo = "receipt usage: \(proven.usage.wallSeconds) s wall\(proven.completed ? ", completed" : "")"
        let proof: Data = try request.serializedBytes()
        return try await ledger.answer(retry: retry, newAccount: nil) {
            try await ledger.client.transaction(logger: logger) { connection in
                guard
                    let (channel, payee) = try await connection.query(
                        "SELECT channel, payee FROM channel_escrows WHERE contract_id = \(contract)", logger: logger
                    ).decode((Data, String).self).collected().first,
                    let held = try await LedgerStore.lockedBalance(
                        "escrow/\(contract)", on: connection, logger: logger),
                    let consumer = held.owner
                else { throw RPCError(code: .failedPrecondition, message: "contract \(contract) has no escrow") }
                let boundTo = try await connection.query(
                    "SELECT did FROM address_bindings WHERE chain = 'ethereum' AND address = \(payee)", logger: logger
                ).decode(String.self).collected().first
                guard boundTo == owner else {
                    throw RPCError(
                        code: .permissionDenied,
                        message: "the channel pays \(payee), which is not bound to the device's owner \(owner)")
                }
                try await connection.query(
                    """
                    INSERT INTO release_proofs (request_sha256, request) VALUES (\(retry.requestSHA256), \(proof))
                    ON CONFLICT (request_sha256) DO NOTHING
                    """, logger: logger)
                let released = try await LedgerStore.released(contract, on: connection, logger: logger)
                let left = UInt64(held.balance) ?? 0
                guard due > released, left > 0 else {
                    throw RPCError(
                        code: .failedPrecondition,
                        message:
                            "nothing more is due for \(contract): \(released) of \(due) released, \(left) left in escrow"
                    )
                }
                let amount = String(min(due - released, left))
                let cumulative = released + min(due - released, left)
                let entry = try await LedgerStore.insert(
                    kind: "release", contractID: contract, memo: memo, retry: retry,
                    lines: [
                        .init(
                            account: "escrow/\(contract)", owner: consumer, kind: "escrow",
                            amount: Amount.negated(amount)),
                        .init(account: "receivable/\(owner)", owner: owner, kind: "receivable", amount: amount),
                    ], newAccount: nil, on: connection, logger: logger)
                guard
                    let signature = ethereum.voucher(
                        channel: [UInt8](channel), amount: UInt256(cumulative), chainID: chainID)
                else { throw RPCError(code: .failedPrecondition, message: "no channel contract is configured") }
                let key = "voucher/\(contract)/\(cumulative)"
                let voucherEntry = try await LedgerStore.insert(
                    kind: "payout", contractID: contract, memo: "channel voucher for \(cumulative) in total",
                    retry: RetryKey(invoker: gatewayDID, method: "voucher", key: key, describing: key),
                    lines: [
                        .init(
                            account: "receivable/\(owner)", owner: owner, kind: "receivable",
                            amount: Amount.negated(amount)),
                        .init(account: "clearing/ethereum", owner: nil, kind: "clearing", amount: amount),
                    ], newAccount: nil, on: connection, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO payouts (id, did, chain, address, amount, kind, contract_id, state, voucher_signature,
                                         channel, entry_id)
                    VALUES (\(RandomIdentifier.make(prefix: "pay_")), \(owner), 'ethereum', \(payee),
                            \(String(cumulative))::numeric, 'voucher', \(contract), 'signed', \(Data(signature)), \(channel),
                            \(voucherEntry))
                    ON CONFLICT (contract_id) DO UPDATE SET amount = EXCLUDED.amount, state = 'signed',
                        voucher_signature = EXCLUDED.voucher_signature, entry_id = EXCLUDED.entry_id, updated_at = now()
                    """, logger: logger)
                return entry
            }
        }
    }

    func refund(_ request: Orrery_Settlement_V1_RefundRequest, authorization: Authorization) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        let retry = try Self.retry(request, key: request.idempotencyKey, authorization)
        let (contract, logger) = (request.contractID, logger)
        try Self.validateContractID(contract)
        let penalties = try ProvenPenalties.verify(request, notary: notaryDID, heads: heads)
        let entry = try await ledger.post(kind: "refund", contractID: contract, memo: "", retry: retry) { connection in
            guard let held = try await LedgerStore.lockedBalance("escrow/\(contract)", on: connection, logger: logger),
                let consumer = held.owner, let left = UInt64(held.balance)
            else { throw RPCError(code: .notFound, message: "contract \(contract) has no escrow") }
            var penalty: UInt64 = 0
            if let penalties, penalties.total > 0 {
                let alreadyPaid = try await LedgerStore.penaltiesPaid(contract, on: connection, logger: logger)
                let owed = penalties.total > alreadyPaid ? penalties.total - alreadyPaid : 0
                let holds =
                    try await LedgerStore.lockedBalance(
                        "receivable/\(penalties.owner)", on: connection, logger: logger
                    ).flatMap { UInt64($0.balance) } ?? 0
                penalty = min(owed, holds)
            }
            guard left > 0 || penalty > 0 else {
                throw RPCError(code: .failedPrecondition, message: "nothing is left in the escrow of \(contract)")
            }
            let channel = try await LedgerStore.isChannelEscrow(contract, on: connection, logger: logger)
            var lines: [LedgerStore.Line] = []
            if left > 0 {
                lines.append(
                    .init(
                        account: "escrow/\(contract)", owner: consumer, kind: "escrow",
                        amount: Amount.negated(String(left))))
                // A channel's rest stays in the channel, which the consumer reclaims on chain after the expiry.
                if channel {
                    lines.append(
                        .init(account: "clearing/ethereum", owner: nil, kind: "clearing", amount: String(left)))
                }
            }
            let toConsumer = (channel ? 0 : left) + penalty
            if toConsumer > 0 {
                lines.append(
                    .init(
                        account: "available/\(consumer)", owner: consumer, kind: "available", amount: String(toConsumer)
                    ))
            }
            if penalty > 0, let owner = penalties?.owner {
                lines.append(
                    .init(
                        account: "receivable/\(owner)", owner: owner, kind: "receivable",
                        amount: Amount.negated(String(penalty))))
            }
            try await connection.query(
                "INSERT INTO settlements (contract_id) VALUES (\(contract)) ON CONFLICT DO NOTHING", logger: logger)
            return lines
        }
        CrashPoint.reach("settlement.refunded", logger: logger)
        return entry
    }

    /// A participant reads its own balance and statement; the operator, and services holding the whole
    /// /orrery/settlement area, read anyone's.
    func mayRead(_ did: String, _ authorization: Authorization) throws {
        guard (try? DID(did)) != nil else {
            throw RPCError(code: .invalidArgument, message: "did: '\(did)' is not a did:key")
        }
        if authorization.invoker.string == did || authorization.invoker == operatorDID { return }
        guard let area = Self.area, !authorization.validated.chain.isEmpty,
            authorization.validated.chain.allSatisfy({ $0.command.covers(area) })
        else {
            throw RPCError(
                code: .permissionDenied, message: "only \(did) itself, or a holder of /orrery/settlement, may read it")
        }
    }

    /// A contract id as the notary gives them: "ctr_" and 26 base32 characters.
    static func validateContractID(_ id: String) throws {
        guard id.hasPrefix("ctr_"), id.count == 30,
            id.dropFirst(4).allSatisfy({ ("a"..."z").contains($0) || ("2"..."7").contains($0) })
        else { throw RPCError(code: .invalidArgument, message: "contract_id: \"ctr_\" and 26 base32 characters") }
    }

    static func retry(_ request: some SwiftProtobuf.Message, key: String, _ authorization: Authorization) throws
        -> RetryKey
    {
        try RetryKey(
            request: request, key: key, method: String(describing: type(of: request)),
            invoker: authorization.invoker.string)
    }
}
