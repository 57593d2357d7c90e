internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import Metrics
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntime
internal import OrrerySettlementClient
internal import PostgresNIO
internal import SwiftProtobuf

/// The orchestrator's side of settlement (docs/ARCHITECTURE.md §3): holds each contract's maximum cost in escrow at `contracted`,
/// under the consumer's own delegation of /orrery/settlement/escrow; after each receipt the notary recorded, asks the
/// gateway to release what it makes due, proven by the notary's inclusion proofs; once a contract ended, asks for the
/// refund of the rest with the penalties of the SLA breaches the notary logged. Releases and refunds are durable
/// tasks, retried until the gateway answers for good. Each call goes over the gateway's `Operate` stream, with its
/// own invocation.
struct SettlementClerk: Sendable {
    let gateway: ServiceLink
    let notary: NotaryLink
    let client: PostgresClient
    let logger: Logger
    var interval: Duration = .milliseconds(500)
    let stream = SettlementStreamLine()

    // MARK: - Escrow

    /// Holds every replica's contract of `deployment` not yet escrowed. Returns the gateway's refusal (the
    /// deployment cannot go on), nil when all are held.
    /// - Throws: when the gateway cannot be reached (the next round tries again).
    func escrow(_ deployment: Orrery_Orchestrator_V1_Deployment) async throws -> String? {
        let pending = try await contractsToEscrow(deployment.id)
        guard !pending.isEmpty else { return nil }
        let authority =
            try await client.query(
                "SELECT settlement_authority FROM deployments WHERE id = \(deployment.id)", logger: logger
            ).decode(Data.self).collected().first ?? Data()
        let delegations: [Delegation]
        do {
            delegations = try UCANContainer.decode(Array(authority)).map { try Delegation(bytes: $0) }
        } catch {
            return "settlement_authority: not a UCAN container of the consumer's delegations"
        }
        guard
            let delegation = delegations.first(where: {
                $0.issuer.string == deployment.consumerDid
                    && $0.command.covers((try? Command(ConsumerAuthority.escrowCommand)) ?? $0.command)
            })
        else {
            return "settlement_authority: the consumer's delegation of \(ConsumerAuthority.escrowCommand) is missing"
        }
        for held in pending {
            let request = Orrery_Settlement_V1_EscrowRequest.with {
                $0.contractID = held.contract.id
                $0.consumerDid = deployment.consumerDid
                $0.amount = held.contract.price.maxCost
                $0.chain = held.contract.settlementChain == "ethereum" ? "ethereum" : ""
                $0.idempotencyKey = "escrow/\(held.contract.id)"
            }
            do {
                _ = try await gateway.invoke(
                    Orrery_Settlement_V1_Settlement.Method.Escrow.descriptor, request, subject: delegation.subject,
                    proofs: [delegation], alsoCarrying: gateway.environmentProofs
                ) { client, request, metadata in
                    try await stream.operations(on: client).perform(.escrow(request), metadata: metadata)
                }
            } catch let error as RPCError where ContractClerk.isRefusal(error.code) && error.code != .alreadyExists {
                return "escrow of \(held.contract.id) refused: \(error.message)"
            }
            try await client.query("UPDATE offers SET escrowed = true WHERE id = \(held.offerID)", logger: logger)
            logger.info(
                "contract escrowed", metadata: ["contract": "\(held.contract.id)", "amount": "\(request.amount)"])
        }
        return nil
    }

    /// Accepted offers of a deployment with a recorded contract not yet escrowed, with their contracts.
    private func contractsToEscrow(_ deployment: String) async throws -> [(
        offerID: String, contract: Orrery_Notary_V1_Contract
    )] {
        var result: [(String, Orrery_Notary_V1_Contract)] = []
        for (offerID, record) in try await client.query(
            """
            SELECT id, record FROM offers
            WHERE deployment_id = \(deployment) AND contract_id IS NOT NULL AND NOT escrowed
              AND state NOT IN (\(OfferState.retired))
            """, logger: logger
        ).decode((String, Data).self).collected() {
            let offer = try Orrery_Orchestrator_V1_Offer(serializedBytes: record)
            result.append((offerID, try Orrery_Notary_V1_Contract(serializedBytes: offer.contract.payload)))
        }
        return result
    }

    // MARK: - Releases and refunds

    /// A release for a receipt the notary recorded at `entry`.
    static func enqueueRelease(contract: String, entry: UInt64, client: PostgresClient, logger: Logger) async throws {
        try await client.query(
            """
            INSERT INTO settlement_tasks (contract_id, kind, receipt_entry) VALUES (\(contract), 'release', \(Int64(entry)))
            ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    /// A refund once a contract ended (completed or terminated).
    static func enqueueRefund(contract: String, client: PostgresClient, logger: Logger) async throws {
        try await client.query(
            "INSERT INTO settlement_tasks (contract_id, kind) VALUES (\(contract), 'refund') ON CONFLICT DO NOTHING",
            logger: logger)
    }

    func run() async {
        await PeriodicWork("settlement tasks", every: interval, logger: logger) { try await work() }.run()
    }

    /// One pass over the queue: `SettlementPlanner` names the tasks due and what each answer means; a task that
    /// could not be carried out ends the pass (the gateway or the notary is likely down; the next pass retries).
    func work() async throws {
        var queued: [SettlementPlanner.Queued] = []
        for try await (contract, kind, entry, held, resolution, _) in try await client.query(
            """
            (SELECT contract_id, kind, receipt_entry, false, resolution, created_at FROM settlement_tasks
             WHERE done_at IS NULL AND (held_at IS NULL OR resolution <> '') ORDER BY created_at LIMIT 1000)
            UNION ALL
            -- Every step held for the operator (incidents: few), so that however many there are they neither fill
            -- the page nor let a contract's refund through past its held release.
            (SELECT contract_id, kind, receipt_entry, true, resolution, created_at FROM settlement_tasks
             WHERE done_at IS NULL AND held_at IS NOT NULL AND resolution = '')
            ORDER BY created_at
            """, logger: logger
        ).decode((String, String, Int64, Bool, String, Date).self) {
            let task: SettlementPlanner.Task =
                kind == "release"
                ? .release(contract: contract, entry: UInt64(max(entry, 0)))
                : .refund(contract: contract, penalties: resolution != "forgo")
            queued.append(.init(task: task, held: held))
        }
        for task in SettlementPlanner.due(queued) {
            var proved = false
            let answer: SettlementPlanner.Answer
            do {
                switch task {
                case .release(let contract, let entry):
                    proved = true
                    try await release(contract, receiptEntry: entry)
                case .refund(let contract, let penalties):
                    if let request = try await refundRequest(contract, penalties: penalties) {
                        proved = request.hasTreeHead
                        try await refund(request)
                    }
                }
                answer = .done
            } catch let error as RPCError {
                answer = .refused(error.code, message: error.message)
            } catch {
                answer = .failed(description: "\(error)")
            }
            switch SettlementPlanner.outcome(of: task, proved: proved, answer) {
            case .finished(let note):
                if !note.isEmpty {
                    logger.info("settlement step refused", metadata: ["task": "\(task)", "why": "\(note)"])
                }
                let (contract, kind, entry) = Self.key(task)
                try await client.query(
                    """
                    UPDATE settlement_tasks SET done_at = now(), last_error = \(note)
                    WHERE contract_id = \(contract) AND kind = \(kind) AND receipt_entry = \(entry)
                    """, logger: logger)
            case .hold(let reason):
                try await hold(task, reason: reason)
            case .retryLater(let error):
                let (contract, kind, entry) = Self.key(task)
                try await client.query(
                    """
                    UPDATE settlement_tasks SET attempts = attempts + 1, last_error = \(error)
                    WHERE contract_id = \(contract) AND kind = \(kind) AND receipt_entry = \(entry)
                    """, logger: logger)
                return
            }
        }
    }

    /// A task's row: its contract, kind and receipt entry (-1 for a refund).
    private static func key(_ task: SettlementPlanner.Task) -> (String, String, Int64) {
        switch task {
        case .release(let contract, let entry): (contract, "release", Int64(entry))
        case .refund(let contract, _): (contract, "refund", -1)
        }
    }

    private func hold(_ task: SettlementPlanner.Task, reason: String) async throws {
        let (contract, kind, entry) = Self.key(task)
        try await client.query(
            """
            UPDATE settlement_tasks SET held_at = now(), last_error = \(reason), resolution = '', attempts = 0
            WHERE contract_id = \(contract) AND kind = \(kind) AND receipt_entry = \(entry)
            """, logger: logger)
        Self.incidents.increment()
        logger.error(
            "settlement incident: the gateway refused the notary's proofs; the escrow is held for the operator",
            metadata: ["task": "\(task)", "reason": "\(reason)"])
    }

    /// Settlement steps held because the gateway refused their proofs.
    static let incidents = Counter(label: "orrery_settlement_incidents_total")

    /// The newest signed head and the proven entries at `indexes` under it.
    private func proven(_ indexes: [UInt64]) async throws -> (
        Orrery_Notary_V1_SignedTreeHead, [Orrery_Settlement_V1_ProvenEntry]
    ) {
        let head = try await notary.treeHead()
        var entries: [Orrery_Settlement_V1_ProvenEntry] = []
        for index in indexes {
            let proof = try await notary.inclusionProof(index: index, treeSize: head.head.treeSize)
            entries.append(
                .with {
                    $0.index = index
                    $0.leaf = proof.leaf
                    $0.path = proof.path
                })
        }
        return (head, entries)
    }

    private func release(_ contract: String, receiptEntry: UInt64) async throws {
        guard let contractEntry = try await notary.contract(contract).entryIndexes.first else { return }
        let (head, entries) = try await proven([contractEntry, receiptEntry])
        let request = Orrery_Settlement_V1_ReleaseRequest.with {
            $0.contractID = contract
            $0.treeHead = head
            $0.contract = entries[0]
            $0.receipt = entries[1]
            $0.idempotencyKey = "release/\(contract)/\(receiptEntry)"
        }
        _ = try await gateway.invoke(Orrery_Settlement_V1_Settlement.Method.Release.descriptor, request) {
            client, request, metadata in
            try await stream.operations(on: client).perform(.release(request), metadata: metadata)
        }
    }

    /// The refund of the rest, with every SLA breach the notary logged for the contract proven along (unless
    /// `penalties` is false: the operator forwent them); nil when the notary has no entry for the contract. Only the
    /// contract's entry and its breaches' are proven (its receipts are not needed), and nothing when it has no breach.
    private func refundRequest(_ contract: String, penalties: Bool) async throws
        -> Orrery_Settlement_V1_RefundRequest?
    {
        let record = try await notary.contract(contract)
        guard let contractEntry = record.entryIndexes.first else { return nil }
        var request = Orrery_Settlement_V1_RefundRequest.with {
            $0.contractID = contract
            $0.idempotencyKey = "refund/\(contract)\(penalties ? "" : "/without-penalties")"
        }
        let breaches = record.breachIndexes.filter { $0 != contractEntry }
        if penalties, !breaches.isEmpty {
            let (head, entries) = try await proven([contractEntry] + breaches)
            request.treeHead = head
            request.contract = entries[0]
            request.breaches = Array(entries.dropFirst())
        }
        return request
    }

    private func refund(_ request: Orrery_Settlement_V1_RefundRequest) async throws {
        _ = try await gateway.invoke(Orrery_Settlement_V1_Settlement.Method.Refund.descriptor, request) {
            client, request, metadata in
            try await stream.operations(on: client).perform(.refund(request), metadata: metadata)
        }
    }
}
