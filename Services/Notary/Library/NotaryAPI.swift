internal import Crypto
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryLedger
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization

/// The notary's acts and reads, for the authorised caller: each act checks its signatures before it is queued,
/// and its effect on the contract's state inside the sequencer's batch.
struct NotaryAPI: Sendable {
    let client: PostgresClient
    let sequencer: LogSequencer
    let store: LogStore
    let key: SigningKey
    let revocations: RevocationBook
    let settlementDID: String?
    /// The operator: a proposing orchestrator must hold a chain from it.
    let operatorDID: DID
    let logger: Logger
    /// Delegations whose signature was checked: owners' consents (a device accepts many contracts with one) and
    /// orchestrators' chains from the operator.
    let verifiedDelegations = VerifiedDelegations()

    // MARK: Acts

    func propose(_ request: Orrery_Notary_V1_ProposeContractRequest, authorization: Authorization) async throws
        -> Orrery_Notary_V1_ContractRecord
    {
        let idempotency = try Self.idempotency(
            request, key: request.idempotencyKey, method: "ProposeContract", authorization)
        if let earlier = try await ContractStore.earlierResult(idempotency, client: client, logger: logger) {
            return try Orrery_Notary_V1_ContractRecord(serializedBytes: earlier)
        }
        let contract: Orrery_Notary_V1_Contract = try Self.payload(request.proposal, "proposal")
        try ContractRules.validate(contract)
        guard request.amount == contract.price.maxCost else {
            throw NotaryFailure.invalid(
                "amount \(request.amount) differs from the contract's price.max_cost \(contract.price.maxCost)")
        }
        guard authorization.validated.subject.string == contract.consumerDid else {
            throw NotaryFailure.denied(
                "the invocation acts for \(authorization.validated.subject), but the contract's consumer is \(contract.consumerDid)"
            )
        }
        guard authorization.invoker.string == contract.orchestratorDid else {
            throw NotaryFailure.denied(
                "the contract names orchestrator \(contract.orchestratorDid), but \(authorization.invoker) proposes it")
        }
        try Self.requireSignature(request.proposal, by: contract.orchestratorDid, what: "the proposal")
        // The consumer chose the orchestrator; the network must know it too: its chain from the operator rides along.
        guard vouched(authorization.invoker, by: operatorDID, among: authorization.delegations) else {
            throw NotaryFailure.denied(
                "\(authorization.invoker) is not an orchestrator the operator vouches for: send its delegation chain from \(operatorDID) (covering /orrery/notary/propose) with the invocation"
            )
        }
        // The consumer's authority must be verifiable in the contract itself: the chain that authorised this call
        // is the one the contract embeds.
        let embedded = try Self.delegations(in: contract.consumerAuthority, field: "contract.consumer_authority")
        for link in authorization.validated.chain where embedded[link.cid] == nil {
            throw NotaryFailure.invalid(
                "contract.consumer_authority does not embed delegation \(link.cid) of the chain that authorised this proposal"
            )
        }
        var relocations = 0
        if !contract.replaces.isEmpty {
            guard
                let replaced = try await ContractStore.rows(ids: [contract.replaces], on: client, logger: logger)[
                    contract.replaces]
            else { throw NotaryFailure.notFound("replaces: no contract \(contract.replaces)") }
            guard replaced.contract.consumerDid == contract.consumerDid,
                replaced.contract.deploymentID == contract.deploymentID,
                replaced.contract.allocation == contract.allocation, replaced.contract.replica == contract.replica
            else {
                throw NotaryFailure.invalid(
                    "replaces: \(contract.replaces) is not the same consumer's replica \(contract.allocation)#\(contract.replica) of \(contract.deploymentID)"
                )
            }
            relocations = replaced.relocations + 1
        }
        let row = try await ContractStore.stage(
            contract, proposal: request.proposal, relocations: relocations, client: client, logger: logger)
        let record = row.record
        try await ContractStore.remember(
            idempotency, response: try record.serializedData(), client: client, logger: logger)
        logger.info("contract proposed", metadata: ["contract": "\(contract.id)"])
        return record
    }

    func accept(_ request: Orrery_Notary_V1_AcceptContractRequest, authorization: Authorization) async throws
        -> Orrery_Notary_V1_ContractRecord
    {
        let idempotency = try Self.idempotency(
            request, key: request.idempotencyKey, method: "AcceptContract", authorization)
        let rows = try await acceptedRows([request.acceptance])
        let act = try acceptance(request.acceptance, rows: rows, idempotency: idempotency)
        let outcome = try await append(idempotency, act)
        logger.info("contract active", metadata: ["contract": "\(act.contractID)", "entries": "\(outcome.appended)"])
        CrashPoint.reach("notary.contract-accepted", logger: logger)
        return try Orrery_Notary_V1_ContractRecord(serializedBytes: outcome.response)
    }

    /// Up to 100 acceptances: each checked and appended as `accept` would (they share the sequencer's batches),
    /// each with its own result. Idempotent per acceptance (the same acceptance of an active contract returns it).
    func acceptMany(_ request: Orrery_Notary_V1_AcceptContractsRequest, authorization: Authorization) async throws
        -> Orrery_Notary_V1_AcceptContractsResponse
    {
        guard (1...100).contains(request.acceptances.count) else {
            throw NotaryFailure.invalid("acceptances: 1…100 per call")
        }
        _ = try Self.idempotency(request, key: request.idempotencyKey, method: "AcceptContracts", authorization)
        let rows = try await acceptedRows(request.acceptances)
        let results = await withTaskGroup(of: (Int, Orrery_Notary_V1_AcceptResult).self) { group in
            for (index, signed) in request.acceptances.enumerated() {
                group.addTask {
                    do {
                        let outcome = try await sequencer.append(
                            try acceptance(signed, rows: rows, idempotency: nil))
                        return (index, .with { $0.record = outcome.row.record })
                    } catch {
                        let status = (error as? RPCError) ?? NotaryFailure.internalError("\(error)")
                        return (
                            index,
                            .with {
                                $0.code = Int32(status.code.rawValue)
                                $0.message = status.message
                            }
                        )
                    }
                }
            }
            var results = [Orrery_Notary_V1_AcceptResult](repeating: .init(), count: request.acceptances.count)
            for await (index, result) in group { results[index] = result }
            return results
        }
        CrashPoint.reach("notary.contract-accepted", logger: logger)
        return .with { $0.results = results }
    }

    /// The contracts that acceptances name, read in one query.
    private func acceptedRows(_ acceptances: [Orrery_Common_V1_Signed]) async throws -> [String: ContractRow] {
        let ids = acceptances.compactMap { signed -> String? in
            (try? Orrery_Notary_V1_ContractAcceptance(serializedBytes: signed.payload))?.contractID
        }
        return try await ContractStore.rows(ids: Array(Set(ids)), on: client, logger: logger)
    }

    /// Checks a device's acceptance (its signature, the terms it names, its owner's consent) and makes the act
    /// that activates the contract: the contract's first log entry, plus a breach when its relocations exceed the
    /// SLA's maximum.
    private func acceptance(
        _ signed: Orrery_Common_V1_Signed, rows: [String: ContractRow], idempotency: RetryKey?
    ) throws -> LogAct {
        let acceptance: Orrery_Notary_V1_ContractAcceptance = try Self.payload(signed, "acceptance")
        guard !acceptance.contractID.isEmpty else { throw NotaryFailure.invalid("acceptance.contract_id: required") }
        guard let row = rows[acceptance.contractID] else {
            throw NotaryFailure.notFound("no contract \(acceptance.contractID) is known to this notary")
        }
        let contract = row.contract
        try Self.requireSignature(signed, by: contract.deviceDid, what: "the acceptance")
        guard acceptance.deviceDid == contract.deviceDid else {
            throw NotaryFailure.denied(
                "the acceptance names device \(acceptance.deviceDid), the contract \(contract.deviceDid)")
        }
        guard acceptance.contractSha256 == Data(SHA256.hash(data: row.proposal.payload)) else {
            throw NotaryFailure.failedPrecondition(
                "the acceptance is for other terms than contract \(contract.id) as proposed (its contract_sha256 differs)"
            )
        }
        try checkOwnerConsent(acceptance.deviceAuthority, owner: contract.ownerDid, device: contract.deviceDid)
        let key = key
        return LogAct(
            contractID: contract.id,
            apply: { row, now in
                if row.state == .active, row.acceptance == signed { return [] }  // the same acceptance again
                guard row.state == .proposed else {
                    throw NotaryFailure.failedPrecondition(
                        "contract \(row.contract.id) is \(row.state.name), not proposed: it cannot be accepted"
                    )
                }
                row.state = .active
                row.acceptance = signed
                var drafts = [EntryDraft(kind: .contract, act: row.proposal, acceptance: signed)]
                if row.relocations > Int(row.contract.sla.maxRelocations) {
                    drafts.append(
                        try Self.breach(
                            .relocations, of: row.contract, observed: Double(row.relocations),
                            required: Double(row.contract.sla.maxRelocations),
                            bps: row.contract.penalties.relocationBps, at: now, key: key))
                }
                return drafts
            },
            idempotency: idempotency,
            respond: { row, _ in (try? row.record.serializedData()) ?? Data() })
    }

    func transition(_ request: Orrery_Notary_V1_TransitionContractRequest, authorization: Authorization) async throws
        -> Orrery_Notary_V1_ContractRecord
    {
        let idempotency = try Self.idempotency(
            request, key: request.idempotencyKey, method: "TransitionContract", authorization)
        let transition: Orrery_Notary_V1_ContractTransition = try Self.payload(request.transition, "transition")
        let row = try await existing(transition.contractID)
        guard let allowed = ContractRules.signers(for: transition.to, of: row.contract, settlementDID: settlementDID)
        else {
            throw NotaryFailure.invalid(
                "to: \(transition.to.name) is recorded by the notary itself (on acceptance or on the completion receipt); request terminated, disputed or settled"
            )
        }
        let signers = try Self.verified(request.transition)
        guard signers.contains(where: { allowed.contains($0.string) }) else {
            throw NotaryFailure.denied(
                allowed.isEmpty
                    ? "no settlement gateway DID is configured (settlement.did): nobody may settle contracts here"
                    : "only \(allowed.joined(separator: " or ")) may make contract \(row.contract.id) \(transition.to.name); it is signed by \(signers.map(\.string).joined(separator: ", "))"
            )
        }
        let signed = request.transition
        let outcome = try await append(
            idempotency,
            LogAct(
                contractID: row.contract.id,
                apply: { row, _ in
                    guard ContractRules.allowedSources(of: transition.to).contains(row.state) else {
                        throw NotaryFailure.failedPrecondition(
                            "contract \(row.contract.id) is \(row.state.name): it cannot become \(transition.to.name)"
                        )
                    }
                    row.state = transition.to
                    return [EntryDraft(kind: .transition, act: signed)]
                },
                idempotency: idempotency,
                respond: { row, _ in (try? row.record.serializedData()) ?? Data() }))
        return try Orrery_Notary_V1_ContractRecord(serializedBytes: outcome.response)
    }

    func recordReceipt(_ request: Orrery_Notary_V1_RecordReceiptRequest, authorization: Authorization) async throws
        -> Orrery_Notary_V1_RecordReceiptResponse
    {
        let idempotency = try Self.idempotency(
            request, key: request.idempotencyKey, method: "RecordReceipt", authorization)
        let signed = request.receipt
        if signed.type == Orrery_Actors_V1_Checkpoint.protoMessageName {
            return try await recordCheckpoint(signed, idempotency: idempotency)
        }
        if signed.type == Orrery_Notary_V1_ExecSession.protoMessageName {
            return try await recordExecSession(signed, idempotency: idempotency)
        }
        let contractID: String
        let sequence: UInt64
        let completion: Bool
        switch signed.type {
        case Orrery_Notary_V1_UsageReceipt.protoMessageName:
            let receipt: Orrery_Notary_V1_UsageReceipt = try Self.payload(signed, "receipt")
            (contractID, sequence, completion) = (receipt.contractID, receipt.sequence, false)
        case Orrery_Notary_V1_CompletionReceipt.protoMessageName:
            let receipt: Orrery_Notary_V1_CompletionReceipt = try Self.payload(signed, "receipt")
            guard receipt.usage.contractID == receipt.contractID || receipt.usage.contractID.isEmpty else {
                throw NotaryFailure.invalid("receipt.usage.contract_id differs from receipt.contract_id")
            }
            (contractID, sequence, completion) = (receipt.contractID, receipt.sequence, true)
        default:
            throw NotaryFailure.invalid(
                "receipt: expected a signed orrery.notary.v1.UsageReceipt or CompletionReceipt, found '\(signed.type)'")
        }
        guard sequence > 0 else { throw NotaryFailure.invalid("receipt.sequence: starts at 1") }
        let row = try await existing(contractID)
        try Self.requireSignature(signed, by: row.contract.deviceDid, what: "the receipt")
        let key = key
        let outcome = try await append(
            idempotency,
            LogAct(
                contractID: contractID,
                apply: { row, now in
                    guard row.state == .active else {
                        throw NotaryFailure.failedPrecondition(
                            "contract \(row.contract.id) is \(row.state.name), not active: no receipt is recorded for it"
                        )
                    }
                    if sequence <= row.lastSequence {
                        throw NotaryFailure.alreadyExists(
                            "receipt \(sequence) of contract \(row.contract.id) was already recorded: a replay is refused"
                        )
                    }
                    guard sequence == row.lastSequence + 1 else {
                        throw NotaryFailure.failedPrecondition(
                            "receipt \(sequence) of contract \(row.contract.id) leaves a gap: the next is \(row.lastSequence + 1)"
                        )
                    }
                    row.lastSequence = sequence
                    guard completion else { return [EntryDraft(kind: .usageReceipt, act: signed)] }
                    row.state = .completed
                    let completed = Orrery_Notary_V1_ContractTransition.with {
                        $0.contractID = row.contract.id
                        $0.to = .completed
                        $0.reason = "the device's completion receipt \(sequence) was recorded"
                        $0.at = .init(date: now)
                    }
                    return [
                        EntryDraft(kind: .completionReceipt, act: signed),
                        EntryDraft(
                            kind: .transition,
                            act: SignedMessage.make(
                                type: Orrery_Notary_V1_ContractTransition.protoMessageName,
                                payload: try completed.serializedData(), signers: [key])),
                    ]
                },
                idempotency: idempotency,
                respond: Self.receiptResponse))
        CrashPoint.reach("notary.receipt-recorded", logger: logger)
        return try Orrery_Notary_V1_RecordReceiptResponse(serializedBytes: outcome.response)
    }

    /// The answer to RecordReceipt: the first entry appended and the contract's state after it.
    private static func receiptResponse(_ row: ContractRow, _ appended: [UInt64]) -> Data {
        let response = Orrery_Notary_V1_RecordReceiptResponse.with {
            $0.entryIndex = appended.first ?? 0
            $0.state = row.state
        }
        return (try? response.serializedData()) ?? Data()
    }

    /// Logs a stateful allocation's checkpoint record, signed by its contract's device, while the contract is active.
    private func recordCheckpoint(_ signed: Orrery_Common_V1_Signed, idempotency: RetryKey) async throws
        -> Orrery_Notary_V1_RecordReceiptResponse
    {
        let record: Orrery_Actors_V1_Checkpoint = try Self.payload(signed, "receipt")
        guard record.sequence > 0, record.sha256.count == 64, Hex.decode(record.sha256) != nil, record.size > 0 else {
            throw NotaryFailure.invalid("checkpoint: sequence from 1, a hex sha256 and a size are required")
        }
        let row = try await existing(record.contractID)
        try Self.requireSignature(signed, by: row.contract.deviceDid, what: "the checkpoint record")
        let outcome = try await append(
            idempotency,
            LogAct(
                contractID: record.contractID,
                apply: { row, _ in
                    guard row.state == .active else {
                        throw NotaryFailure.failedPrecondition(
                            "contract \(row.contract.id) is \(row.state.name), not active: no checkpoint is logged for it"
                        )
                    }
                    return [EntryDraft(kind: .checkpoint, act: signed)]
                },
                idempotency: idempotency,
                respond: Self.receiptResponse))
        return try Orrery_Notary_V1_RecordReceiptResponse(serializedBytes: outcome.response)
    }

    /// Logs an exec session into an allocation's sandbox, signed by its contract's device. A session may end after
    /// its contract did (the replica stopped under it), so any logged contract takes one; a proposal does not.
    private func recordExecSession(_ signed: Orrery_Common_V1_Signed, idempotency: RetryKey) async throws
        -> Orrery_Notary_V1_RecordReceiptResponse
    {
        let record: Orrery_Notary_V1_ExecSession = try Self.payload(signed, "receipt")
        try Self.validate(record)
        let row = try await existing(record.contractID)
        try Self.requireSignature(signed, by: row.contract.deviceDid, what: "the exec session record")
        let outcome = try await append(
            idempotency,
            LogAct(
                contractID: record.contractID,
                apply: { row, _ in
                    guard row.state != .proposed, row.state != .unspecified else {
                        throw NotaryFailure.failedPrecondition(
                            "contract \(row.contract.id) was never accepted: no exec session is logged for it")
                    }
                    return [EntryDraft(kind: .execSession, act: signed)]
                },
                idempotency: idempotency,
                respond: Self.receiptResponse))
        return try Orrery_Notary_V1_RecordReceiptResponse(serializedBytes: outcome.response)
    }

    /// An exec session record's fields: what the log promises its readers.
    static func validate(_ record: Orrery_Notary_V1_ExecSession) throws {
        func hex(_ text: String, digits: Int) -> Bool {
            text.utf8.count == digits && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
        }
        guard record.sessionID.hasPrefix("exe_"), hex(String(record.sessionID.dropFirst(4)), digits: 32) else {
            throw NotaryFailure.invalid("exec session: session_id is exe_ and 32 lowercase hex digits")
        }
        guard hex(record.commandSha256, digits: 64) else {
            throw NotaryFailure.invalid("exec session: command_sha256 is 64 lowercase hex digits")
        }
        guard (try? CID(record.invocationCid)) != nil, record.invokerDid.hasPrefix("did:"),
            record.invokerDid.utf8.count <= 256
        else {
            throw NotaryFailure.invalid("exec session: invocation_cid must be a CID and invoker_did a DID")
        }
        guard record.hasStartedAt, record.hasEndedAt, record.endedAt.seconds >= record.startedAt.seconds,
            (0...255).contains(record.exitCode), (0...64).contains(record.signal)
        else {
            throw NotaryFailure.invalid(
                "exec session: started_at ≤ ended_at, an exit code 0…255 and a signal 0…64 are required")
        }
    }

    /// Appends an act; when it is refused, a retry of a call that already succeeded (the same idempotency key
    /// and request) gets that call's response instead. The earlier result is looked up only then: a first call
    /// costs no lookup.
    private func append(_ idempotency: RetryKey, _ act: LogAct) async throws -> ActOutcome {
        do {
            return try await sequencer.append(act)
        } catch let refusal as RPCError {
            guard let earlier = try await ContractStore.earlierResult(idempotency, client: client, logger: logger)
            else {
                throw refusal
            }
            let row = try await existing(act.contractID)
            return ActOutcome(row: row, appended: [], response: earlier)
        }
    }

    // MARK: Reads

    func contract(_ id: String) async throws -> Orrery_Notary_V1_ContractRecord {
        try await existing(id).record
    }

    func treeHead() async throws -> Orrery_Notary_V1_SignedTreeHead {
        if let head = try await store.latestHead() { return head }
        // The empty log: a head signed now, so a client can start its consistency checks from it.
        let head = Orrery_Notary_V1_TreeHead.with {
            $0.treeSize = 0
            $0.rootHash = Data(MerkleTree.emptyRoot)
            $0.timestamp = .init(date: Date())
            $0.logDid = key.did.string
        }
        return .with {
            $0.head = head
            $0.signed = SignedMessage.make(
                type: Orrery_Notary_V1_TreeHead.protoMessageName, payload: (try? head.serializedData()) ?? Data(),
                signers: [key])
        }
    }

    func inclusionProof(_ request: Orrery_Notary_V1_GetInclusionProofRequest) async throws
        -> Orrery_Notary_V1_InclusionProof
    {
        let latest = try await treeHead()
        let size = request.treeSize == 0 ? latest.head.treeSize : request.treeSize
        guard size <= latest.head.treeSize else {
            throw NotaryFailure.invalid("tree_size \(size) is beyond the log's \(latest.head.treeSize) entries")
        }
        guard request.index < size else {
            throw NotaryFailure.invalid("index \(request.index) is not in a tree of \(size) entries")
        }
        let path = try await store.inclusionProof(index: request.index, size: size)
        let leaf = try await store.entries(start: request.index, end: request.index + 1)
        let head = size == latest.head.treeSize ? latest : try await store.head(size: size)
        return .with {
            $0.index = request.index
            $0.treeSize = size
            $0.path = path.map { Data($0) }
            $0.leaf = leaf.first ?? Data()
            if let head { $0.treeHead = head }
        }
    }

    func consistencyProof(_ request: Orrery_Notary_V1_GetConsistencyProofRequest) async throws
        -> Orrery_Notary_V1_ConsistencyProof
    {
        let latest = try await treeHead()
        let newSize = request.newSize == 0 ? latest.head.treeSize : request.newSize
        guard newSize <= latest.head.treeSize else {
            throw NotaryFailure.invalid("new_size \(newSize) is beyond the log's \(latest.head.treeSize) entries")
        }
        guard request.oldSize <= newSize else {
            throw NotaryFailure.invalid("old_size \(request.oldSize) is larger than new_size \(newSize)")
        }
        let path = try await store.consistencyProof(oldSize: request.oldSize, newSize: newSize)
        let head = newSize == latest.head.treeSize ? latest : try await store.head(size: newSize)
        return .with {
            $0.oldSize = request.oldSize
            $0.newSize = newSize
            $0.path = path.map { Data($0) }
            if let head { $0.newHead = head }
        }
    }

    func entries(_ request: Orrery_Notary_V1_GetEntriesRequest) async throws -> Orrery_Notary_V1_GetEntriesResponse {
        let size = try await treeHead().head.treeSize
        guard request.start < size else {
            throw NotaryFailure.invalid("start \(request.start) is not below the log's \(size) entries")
        }
        var end = request.end == 0 ? request.start + LogStore.pageLimit : request.end
        guard end > request.start else { throw NotaryFailure.invalid("end must be above start") }
        end = min(end, size, request.start + LogStore.pageLimit)
        let leaves = try await store.entries(start: request.start, end: end)
        return .with {
            $0.start = request.start
            $0.leaves = leaves
        }
    }

    // MARK: Checks

    private func existing(_ id: String) async throws -> ContractRow {
        guard !id.isEmpty else { throw NotaryFailure.invalid("contract_id: required") }
        guard let row = try await ContractStore.rows(ids: [id], on: client, logger: logger)[id] else {
            throw NotaryFailure.notFound("no contract \(id) is known to this notary")
        }
        return row
    }

    static let propose = (try? Command("/orrery/notary/propose"))

    /// Whether `invoker` holds a valid, unrevoked chain from `root` among the call's delegations that covers proposing.
    func vouched(_ invoker: DID, by root: DID, among delegations: [CID: Delegation]) -> Bool {
        guard let propose = Self.propose else { return false }
        return OperatorVouching.vouches(
            for: invoker, root: root, command: propose, among: delegations, now: Int64(Date().timeIntervalSince1970),
            isRevoked: revocations.isRevoked, isSigned: verifiedDelegations.isValid)
    }

    /// The owner's consent: a valid, unrevoked delegation from the contract's owner to its device.
    private func checkOwnerConsent(_ container: Data, owner: String, device: String) throws {
        let delegations = try Self.delegations(in: container, field: "acceptance.device_authority")
        let now = Int64(Date().timeIntervalSince1970)
        let consent = delegations.values.first { delegation in
            delegation.issuer.string == owner && delegation.audience.string == device
                && verifiedDelegations.isValid(delegation)
                && (delegation.expiration.map { $0 >= now } ?? true)
                && (delegation.notBefore.map { $0 <= now } ?? true)
        }
        guard let consent else {
            throw NotaryFailure.denied(
                "the acceptance carries no valid delegation from the owner \(owner) to the device \(device)")
        }
        guard !revocations.isRevoked(consent.cid) else {
            throw NotaryFailure.denied("the owner's delegation \(consent.cid) to the device has been revoked")
        }
    }

    static func delegations(in container: Data, field: String) throws -> [CID: Delegation] {
        var delegations: [CID: Delegation] = [:]
        do {
            for token in try UCANContainer.decode(Array(container)) {
                let delegation = try Delegation(bytes: token)
                delegations[delegation.cid] = delegation
            }
        } catch {
            throw NotaryFailure.invalid("\(field): not a UCAN container of delegations (\(error))")
        }
        return delegations
    }

    static func payload<Message: SwiftProtobuf.Message>(_ signed: Orrery_Common_V1_Signed, _ field: String) throws
        -> Message
    {
        guard signed.type == Message.protoMessageName else {
            throw NotaryFailure.invalid(
                "\(field): expected a signed \(Message.protoMessageName), found '\(signed.type)'")
        }
        do {
            return try Message(serializedBytes: signed.payload)
        } catch {
            throw NotaryFailure.invalid("\(field): the payload is not a \(Message.protoMessageName)")
        }
    }

    /// Every signature verifies; returns the signers.
    static func verified(_ signed: Orrery_Common_V1_Signed) throws -> [DID] {
        do {
            return try SignedMessage.verify(signed)
        } catch let error as SignedMessageError {
            throw RPCError(code: .unauthenticated, message: "\(signed.type): \(error)")
        }
    }

    static func requireSignature(_ signed: Orrery_Common_V1_Signed, by did: String, what: String) throws {
        let signers = try verified(signed)
        guard signers.contains(where: { $0.string == did }) else {
            throw NotaryFailure.denied(
                "\(what) must be signed by \(did); it is signed by \(signers.map(\.string).joined(separator: ", "))")
        }
    }

    static func idempotency(
        _ request: some SwiftProtobuf.Message, key: String, method: String, _ authorization: Authorization
    ) throws -> RetryKey {
        try RetryKey(request: request, key: key, method: method, invoker: authorization.invoker.string)
    }

    /// An SLA breach, signed by the notary, with its penalty in basis points of the contract's maximum cost.
    static func breach(
        _ kind: Orrery_Notary_V1_BreachKind, of contract: Orrery_Notary_V1_Contract, observed: Double,
        required: Double, bps: UInt32, at now: Date, key: SigningKey
    ) throws -> EntryDraft {
        let breach = Orrery_Notary_V1_SlaBreach.with {
            $0.contractID = contract.id
            $0.kind = kind
            $0.observed = observed
            $0.required = required
            let cost = contract.price.maxCost
            $0.penalty = cost / 10_000 * UInt64(bps) + cost % 10_000 * UInt64(bps) / 10_000
            $0.detectedAt = .init(date: now)
        }
        return EntryDraft(
            kind: .slaBreach,
            act: SignedMessage.make(
                type: Orrery_Notary_V1_SlaBreach.protoMessageName, payload: try breach.serializedData(),
                signers: [key]))
    }
}
