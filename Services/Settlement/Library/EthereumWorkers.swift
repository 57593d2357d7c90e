internal import Foundation
internal import Logging
internal import OrreryDatabase
internal import OrreryAuth
internal import OrreryEthereum
internal import OrreryIdentity
internal import PostgresNIO
internal import OrreryRuntimeCore
internal import Synchronization

/// Sends withdrawals: signs each (nonce allocated in the database, the signed bytes stored before sending),
/// broadcasts, watches receipts until `confirmations` blocks deep, replaces a transaction stuck longer than
/// `replaceAfter` with the same nonce and higher fees, and credits back a withdrawal whose transaction failed.
struct EthereumBroadcaster: Sendable {
    let adapter: EthereumAdapter
    let payouts: PayoutStore
    let logger: Logger

    func run() async {
        // The chain's id, asked once the node answers.
        let chainID = Mutex<UInt64?>(nil)
        await PeriodicWork("ethereum broadcaster", every: adapter.settings.pollInterval, logger: logger) {
            let known = chainID.withLock { $0 }
            let id: UInt64
            if let known { id = known } else { id = try await adapter.rpc.chainID() }
            chainID.withLock { $0 = id }
            try await step(chainID: id)
        }.run()
    }

    /// One pass over the unfinished withdrawals.
    func step(chainID: UInt64) async throws {
        let pending = try await payouts.pending(chain: "ethereum")
        guard !pending.isEmpty else { return }
        let head = try await adapter.rpc.head()
        for payout in pending {
            switch payout.state {
            case "intent":
                try await sign(payout, chainID: chainID)
                if let signed = try await payouts.pending(chain: "ethereum").first(where: { $0.id == payout.id }),
                    signed.state == "signed"
                {
                    try await send(signed)
                }
            case "signed":
                try await send(payout)
            default:
                try await watch(payout, head: head, chainID: chainID)
            }
        }
    }

    private func sign(_ payout: PayoutStore.Pending, chainID: UInt64) async throws {
        guard let to = EthereumAddress(payout.address), let amount = UInt256(decimal: payout.amount) else {
            try await payouts.fail(id: payout.id, reason: "unusable address or amount")
            return
        }
        let sender = adapter.gatewayAddress
        let nodeNonce = try await adapter.rpc.transactionCount(sender, pending: true)
        let fees = try await adapter.marketFees()
        let adapter = adapter
        try await payouts.sign(
            id: payout.id, chain: "ethereum", sender: Hex.prefixed(sender.bytes), nodeNonce: nodeNonce
        ) { nonce in
            let signed = adapter.transfer(
                to: to, amount: amount, nonce: nonce, chainID: chainID, maxFee: fees.maxFee, tip: fees.tip)
            return (signed.raw, Hex.prefixed(signed.hash), fees.maxFee.decimal, fees.tip.decimal)
        }
    }

    /// Sends the stored signed bytes. A node that already knows them answers with an error that is not a failure.
    private func send(_ payout: PayoutStore.Pending) async throws {
        do {
            _ = try await adapter.rpc.sendRawTransaction(payout.raw)
        } catch EthereumRPCError.node(_, let message) where Self.alreadySent(message) {
            logger.info("ethereum: \(payout.id) was sent before (\(message))")
        }
        try await payouts.markBroadcast(id: payout.id)
        logger.info(
            "ethereum: withdrawal \(payout.id) broadcast", metadata: ["tx": "\(payout.transactions.last ?? "")"])
    }

    static func alreadySent(_ message: String) -> Bool {
        let lower = message.lowercased()
        return lower.contains("already known") || lower.contains("already imported")
            || lower.contains("known transaction")
    }

    private func watch(_ payout: PayoutStore.Pending, head: EthereumHead, chainID: UInt64) async throws {
        for transaction in payout.transactions {
            guard let hash = Hex.decode(transaction), let receipt = try await adapter.rpc.receipt(hash) else {
                continue
            }
            guard head.number + 1 >= receipt.blockNumber + adapter.settings.confirmations else { return }
            if receipt.succeeded {
                try await payouts.confirm(id: payout.id, transaction: transaction)
                logger.info("ethereum: withdrawal \(payout.id) confirmed", metadata: ["tx": "\(transaction)"])
            } else {
                try await payouts.fail(id: payout.id, reason: "transaction \(transaction) reverted")
                logger.warning("ethereum: withdrawal \(payout.id) reverted; credited back")
            }
            return
        }
        // Not mined yet: replace it when it waited too long.
        guard let sentAt = payout.broadcastAt,
            Date().timeIntervalSince(sentAt) >= Double(adapter.settings.replaceAfter.components.seconds),
            let nonce = payout.nonce, let to = EthereumAddress(payout.address),
            let amount = UInt256(decimal: payout.amount)
        else { return }
        let market = try await adapter.marketFees()
        let oldMax = payout.maxFee.flatMap { UInt256(decimal: $0) } ?? .zero
        let oldTip = payout.priorityFee.flatMap { UInt256(decimal: $0) } ?? .zero
        let maxFee = Swift.max(market.maxFee, oldMax.bumpedForReplacement)
        let tip = Swift.max(market.tip, oldTip.bumpedForReplacement)
        let replacement = adapter.transfer(
            to: to, amount: amount, nonce: UInt64(nonce), chainID: chainID, maxFee: maxFee, tip: tip)
        // Stored before it is sent: a crash in between re-sends it, never a third variant with the same nonce.
        try await payouts.replace(
            id: payout.id, raw: replacement.raw, hash: Hex.prefixed(replacement.hash), maxFee: maxFee.decimal,
            priorityFee: tip.decimal)
        do {
            _ = try await adapter.rpc.sendRawTransaction(replacement.raw)
        } catch EthereumRPCError.node(_, let message) where Self.alreadySent(message) {}
        logger.info(
            "ethereum: withdrawal \(payout.id) replaced after waiting",
            metadata: ["tx": "\(Hex.prefixed(replacement.hash))", "max_fee": "\(maxFee)"])
    }
}

/// Credits NTX transfers to the gateway's address: scans `Transfer` logs of the token up to `confirmations` blocks
/// below the head, records each (transaction, log index) once, and credits it to the DID its sender is bound to
/// (or later, when the sender binds). Also marks channel vouchers redeemed when the contract says so.
struct EthereumDepositWatcher: Sendable {
    let adapter: EthereumAdapter
    let client: PostgresClient
    let gatewayDID: String
    let logger: Logger

    func run() async {
        await PeriodicWork("ethereum deposit watcher", every: adapter.settings.pollInterval, logger: logger) {
            try await scan()
        }.run()
    }

    /// Scans from the cursor to the confirmed head, 1,000 blocks at a time, each range in one transaction with
    /// the cursor's move.
    func scan() async throws {
        let head = try await adapter.rpc.head()
        guard head.number + 1 >= adapter.settings.confirmations else { return }
        let safe = head.number + 1 - adapter.settings.confirmations
        var next = try await cursor(default: adapter.settings.startBlock ?? safe)
        let gateway = [UInt8](repeating: 0, count: 12) + adapter.gatewayAddress.bytes
        while next <= safe {
            let to = min(next + 999, safe)
            let transfers = try await adapter.rpc.logs(
                address: adapter.settings.token, topics: [EthereumAdapter.transferTopic, nil, gateway], from: next,
                to: to)
            let redemptions: [EthereumLog] =
                if let channels = adapter.settings.channels {
                    try await adapter.rpc.logs(
                        address: channels, topics: [EthereumAdapter.redeemedTopic], from: next, to: to)
                } else { [] }
            try await record(transfers, redemptions, through: to)
            next = to + 1
        }
    }

    private func cursor(default start: UInt64) async throws -> UInt64 {
        let rows = try await client.query(
            "SELECT next_block FROM chain_cursors WHERE chain = 'ethereum'", logger: logger
        ).decode(Int64.self).collected()
        return rows.first.map { UInt64($0) } ?? start
    }

    private func record(_ transfers: [EthereumLog], _ redemptions: [EthereumLog], through block: UInt64) async throws {
        let (logger, gatewayDID) = (logger, gatewayDID)
        try await client.transaction(logger: logger) { connection in
            for log in transfers where log.topics.count == 3 {
                guard let from = EthereumAddress(bytes: Array(log.topics[1].suffix(20))),
                    let amount = ABI.decodeUInt(log.data), amount != .zero
                else { continue }
                let (transaction, sender) = (Hex.prefixed(log.transactionHash), Hex.prefixed(from.bytes))
                let inserted = try await connection.query(
                    """
                    INSERT INTO chain_deposits (chain, transaction_hash, log_index, block_number, from_address, amount)
                    VALUES ('ethereum', \(transaction), \(Int64(log.logIndex)), \(Int64(log.blockNumber)), \(sender),
                            \(amount.decimal)::numeric)
                    ON CONFLICT DO NOTHING RETURNING log_index
                    """, logger: logger
                ).decode(Int64.self).collected()
                guard !inserted.isEmpty else { continue }
                let owner = try await connection.query(
                    "SELECT did FROM address_bindings WHERE chain = 'ethereum' AND address = \(sender)", logger: logger
                ).decode(String.self).collected().first
                if let owner {
                    try await AddressBook.credit(
                        chain: "ethereum", transaction: transaction, logIndex: Int64(log.logIndex),
                        amount: amount.decimal, to: owner, gatewayDID: gatewayDID, on: connection, logger: logger)
                    logger.info("ethereum: deposit of \(amount) from \(sender) credited to \(owner)")
                } else {
                    logger.info("ethereum: deposit of \(amount) from unbound \(sender) held until it is bound")
                }
            }
            for log in redemptions where log.topics.count == 2 {
                guard let total = ABI.decodeUInt(log.data, word: 1) else { continue }
                try await connection.query(
                    """
                    UPDATE payouts SET state = 'confirmed', confirmed_transaction = \(Hex.prefixed(log.transactionHash)),
                        updated_at = now()
                    WHERE kind = 'voucher' AND channel = \(Data(log.topics[1])) AND amount <= \(total.decimal)::numeric
                      AND state <> 'confirmed'
                    """, logger: logger)
            }
            try await connection.query(
                """
                INSERT INTO chain_cursors (chain, next_block) VALUES ('ethereum', \(Int64(block + 1)))
                ON CONFLICT (chain) DO UPDATE SET next_block = EXCLUDED.next_block
                """, logger: logger)
        }
    }
}
