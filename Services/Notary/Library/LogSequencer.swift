internal import Metrics
internal import Foundation
internal import OrreryAuth
internal import Logging
internal import NIOCore
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryLedger
internal import OrreryProto
internal import PostgresNIO
internal import Synchronization
internal import SwiftProtobuf

/// A contract as the sequencer sees it: the staged proposal plus the log's view of its life so far.
struct ContractRow: Sendable {
    var contract: Orrery_Notary_V1_Contract
    var state: Orrery_Notary_V1_ContractState
    var proposal: Orrery_Common_V1_Signed
    var acceptance: Orrery_Common_V1_Signed?
    var relocations: Int
    var lastSequence: UInt64
    var entryIndexes: [UInt64]
    /// Its availability term was checked once it ended.
    var slaChecked = false
    /// The SLA breaches logged for it, in log order.
    var breaches: BreachIndex.Breaches = []

    var record: Orrery_Notary_V1_ContractRecord {
        .with {
            $0.contract = contract
            $0.state = state
            $0.proposal = proposal
            if let acceptance { $0.acceptance = acceptance }
            $0.entryIndexes = entryIndexes
            $0.lastReceiptSequence = lastSequence
            $0.breaches = breaches.map(\.breach)
            $0.breachIndexes = breaches.map(\.index)
        }
    }
}

/// One log entry an act appends (the sequencer gives it its index and countersigns it).
struct EntryDraft: Sendable {
    var kind: Orrery_Notary_V1_EntryKind
    var act: Orrery_Common_V1_Signed
    var acceptance: Orrery_Common_V1_Signed?
}

/// Something to record about one contract: checked against the contract's current state inside the batch that
/// appends it, so two acts racing on one contract (on any replicas) are decided in log order.
struct LogAct: Sendable {
    var contractID: String
    /// Checks the act against the row and changes it; returns what to append. Throws (an `RPCError`) to refuse.
    var apply: @Sendable (inout ContractRow, _ now: Date) throws -> [EntryDraft]
    /// The retry key this act answers for, if any: its response is stored in the same transaction.
    var idempotency: RetryKey?
    /// The response stored for a retry.
    var respond: @Sendable (ContractRow, _ appended: [UInt64]) -> Data
}

/// What an act achieved.
struct ActOutcome: Sendable {
    var row: ContractRow
    var appended: [UInt64]
    var response: Data
}

/// The log's only writer. Acts from every handler of this replica queue here; one batch at a time takes the queue,
/// locks the log for the whole database (`pg_advisory_xact_lock`, so replicas take turns and none forks the log or
/// leaves a gap), checks each act against the current contract rows, appends its entries with their perfect
/// subtree hashes, and one signed tree head for the batch, in one transaction: all of a batch or none.
final class LogSequencer: Sendable {
    /// The advisory lock key of the notary log.
    static let lockKey: Int64 = 0x6F72_7265_7279_6C67  // "orrerylg"

    let client: PostgresClient
    let key: SigningKey
    let logger: Logger
    let maximumBatch: Int

    private struct Pending: Sendable {
        var act: LogAct
        var continuation: CheckedContinuation<ActOutcome, any Error>
    }
    private let queue = Mutex<[Pending]>([])
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    /// How long one batch's transaction may take before its acts are refused (UNAVAILABLE, retried by their callers)
    /// and the next batch is taken.
    let batchLimit: Duration

    init(
        client: PostgresClient, key: SigningKey, logger: Logger, maximumBatch: Int = 512,
        batchLimit: Duration = .seconds(20)
    ) {
        self.client = client
        self.key = key
        self.logger = logger
        self.maximumBatch = maximumBatch
        self.batchLimit = batchLimit
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues `act` for the next batch and waits until that batch committed (or the act was refused).
    func append(_ act: LogAct) async throws -> ActOutcome {
        try await withCheckedThrowingContinuation { continuation in
            queue.withLock { $0.append(Pending(act: act, continuation: continuation)) }
            wake.yield()
        }
    }

    /// Runs batches until cancelled; acts queued meanwhile wait for the next batch.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.watchBatches() }
            await drain()
            group.cancelAll()
        }
    }

    /// The batch in flight: when its limit passes, and how to give it up.
    private let inFlight = Mutex<BatchInFlight?>(nil)

    /// Gives up a batch that passed its limit (twice a second: one sleeping task for the sequencer, not per batch).
    private func watchBatches() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            let now = ContinuousClock.now
            let expired: BatchInFlight? = inFlight.withLock { slot in
                guard let batch = slot, now >= batch.deadline else { return nil }
                slot = nil
                return batch
            }
            if let expired, expired.giveUp() {
                logger.error(
                    "a log batch's transaction did not end in time: its acts are refused, the next batch goes on",
                    metadata: ["limit": "\(batchLimit)"])
            }
        }
    }

    private func drain() async {
        for await _ in wakes {
            while true {
                let batch: [Pending] = queue.withLock { queue in
                    let taken = Array(queue.prefix(maximumBatch))
                    queue.removeFirst(taken.count)
                    return taken
                }
                if batch.isEmpty { break }
                await process(batch)
            }
        }
        let left = queue.withLock { queue in
            defer { queue.removeAll() }
            return queue
        }
        for pending in left { pending.continuation.resume(throwing: CancellationError()) }
    }

    /// Stops accepting work (the service is shutting down).
    func finish() { wake.finish() }

    private func process(_ batch: [Pending]) async {
        var results: [Result<ActOutcome, any Error>] = []
        let started = ContinuousClock.now
        do {
            results = try await withinLimit {
                try await self.client.transaction(logger: self.logger) { connection in
                    try await self.appendBatch(batch.map(\.act), on: connection)
                }
            }
            Metrics.Timer(label: "orrery_notary_append_seconds").record(duration: started.duration(to: .now))
        } catch {
            logger.warning("a log batch failed; its acts are refused", metadata: ["error": "\(error)"])
            results = batch.map { _ in .failure(error) }
        }
        for (pending, result) in zip(batch, results) { pending.continuation.resume(with: result) }
    }

    /// `work`'s result, or UNAVAILABLE once `batchLimit` passed (`watchBatches`) — without waiting for `work` to end.
    /// The log's only writer must not wait forever: in a failover of the database (kill -9 of the primary under load)
    /// a batch was seen to wait on its transaction for good while the database served every other query, and with
    /// it every act queued behind it. The abandoned transaction is cancelled; if it did commit, a retry of its acts
    /// finds them done (their idempotency keys).
    private func withinLimit<Result: Sendable>(
        _ work: @escaping @Sendable () async throws -> Result
    ) async throws -> Result {
        let deadline = ContinuousClock.now + batchLimit
        defer { inFlight.withLock { $0 = nil } }
        return try await withCheckedThrowingContinuation { continuation in
            let reply = ReplyOnce(continuation)
            let running = Task {
                do { reply.send(.success(try await work())) } catch { reply.send(.failure(error)) }
            }
            let batch = BatchInFlight(deadline: deadline) {
                running.cancel()
                return reply.send(
                    .failure(NotaryFailure.unavailable("the log's database did not answer in time; retry")))
            }
            inFlight.withLock { $0 = batch }
        }
    }

    private func appendBatch(_ acts: [LogAct], on connection: PostgresConnection) async throws
        -> [Result<ActOutcome, any Error>]
    {
        try await connection.query("SELECT pg_advisory_xact_lock(\(Self.lockKey))", logger: logger)
        let now = Date()
        let size = try await currentSize(on: connection)
        let frontierKeys = MerkleTree.perfectSubtrees(start: 0, end: size)
        let stored = try await LogStore.nodes(frontierKeys, on: connection, logger: logger)
        let frontier = try frontierKeys.map { key in
            guard let hash = stored[LogStore.NodeKey(level: key.level, position: key.position)] else {
                throw LogStoreError.missingNode(level: key.level, position: key.position)
            }
            return hash
        }
        var tree = RootAccumulator(size: size, frontier: frontier)
        var rows = try await ContractStore.rows(ids: Array(Set(acts.map(\.contractID))), on: connection, logger: logger)
        var changed: Set<String> = []

        var indexes: [Int64] = []
        var leaves: [ByteBuffer] = []
        var nodeLevels: [Int16] = []
        var nodePositions: [Int64] = []
        var nodeHashes: [ByteBuffer] = []
        var entryContracts: [String] = []
        var breachIndexes: [Int64] = []
        var breachContracts: [String] = []
        var idempotent: [(RetryKey, Data)] = []
        var results: [Result<ActOutcome, any Error>] = []
        // Acts whose key already has an answer — from an earlier batch, or earlier in this one — append nothing: a
        // retry that raced its first call (both queued before either committed) is answered, not logged twice.
        var answered = try await storedAnswers(for: acts.compactMap(\.idempotency), on: connection)

        for act in acts {
            guard var row = rows[act.contractID] else {
                results.append(
                    .failure(NotaryFailure.notFound("no contract \(act.contractID) is known to this notary")))
                continue
            }
            if let key = act.idempotency, let earlier = answered[AnswerKey(key)] {
                guard earlier.requestSHA256 == key.requestSHA256 else {
                    results.append(
                        .failure(
                            NotaryFailure.failedPrecondition(
                                "idempotency key '\(key.key)' was already used for a different request")))
                    continue
                }
                results.append(.success(ActOutcome(row: row, appended: [], response: earlier.response)))
                continue
            }
            let drafts: [EntryDraft]
            do {
                drafts = try act.apply(&row, now)
            } catch {
                results.append(.failure(error))
                continue
            }
            var appended: [UInt64] = []
            for draft in drafts {
                let index = tree.size
                let entry = Orrery_Notary_V1_LogEntry.with {
                    $0.index = index
                    $0.kind = draft.kind
                    $0.contractID = act.contractID
                    $0.loggedAt = .init(date: now)
                    $0.act = draft.act
                    if let acceptance = draft.acceptance { $0.acceptance = acceptance }
                }
                let signed = SignedMessage.make(
                    type: Orrery_Notary_V1_LogEntry.protoMessageName, payload: try entry.serializedData(),
                    signers: [key])
                let leaf = try signed.serializedData()
                tree.append(leafHash: MerkleTree.leafHash(leaf)) { level, position, hash in
                    nodeLevels.append(Int16(level))
                    nodePositions.append(Int64(position))
                    nodeHashes.append(ByteBuffer(bytes: hash))
                }
                indexes.append(Int64(index))
                leaves.append(ByteBuffer(bytes: leaf))
                entryContracts.append(act.contractID)
                appended.append(index)
                row.entryIndexes.append(index)
                if draft.kind == .slaBreach {
                    row.breaches.append((index, try Orrery_Notary_V1_SlaBreach(serializedBytes: draft.act.payload)))
                    breachIndexes.append(Int64(index))
                    breachContracts.append(act.contractID)
                }
            }
            rows[act.contractID] = row
            changed.insert(act.contractID)
            let response = act.respond(row, appended)
            if let key = act.idempotency {
                idempotent.append((key, response))
                answered[AnswerKey(key)] = (key.requestSHA256, response)
            }
            results.append(.success(ActOutcome(row: row, appended: appended, response: response)))
        }

        if !indexes.isEmpty {
            try await connection.query(
                """
                INSERT INTO log_entries (idx, leaf)
                SELECT * FROM unnest(\(indexes)::bigint[], \(leaves)::bytea[])
                """,
                logger: logger)
            try await connection.query(
                """
                INSERT INTO log_nodes (level, position, hash)
                SELECT * FROM unnest(\(nodeLevels)::smallint[], \(nodePositions)::bigint[], \(nodeHashes)::bytea[])
                """,
                logger: logger)
            Gauge(label: "orrery_notary_tree_size").record(Int64(tree.size))
            let head = Orrery_Notary_V1_TreeHead.with {
                $0.treeSize = tree.size
                $0.rootHash = Data(tree.root)
                $0.timestamp = .init(date: now)
                $0.logDid = key.did.string
            }
            let signedHead = SignedMessage.make(
                type: Orrery_Notary_V1_TreeHead.protoMessageName, payload: try head.serializedData(), signers: [key])
            try await connection.query(
                """
                INSERT INTO tree_heads (tree_size, root, signed)
                VALUES (\(Int64(tree.size)), \(Data(tree.root)), \(try signedHead.serializedData()))
                """,
                logger: logger)
        }
        try await BreachIndex.add(indexes: breachIndexes, contracts: breachContracts, on: connection, logger: logger)
        try await ContractStore.update(changed.compactMap { rows[$0] }, on: connection, logger: logger)
        if !idempotent.isEmpty {
            try await connection.query(
                """
                INSERT INTO idempotent_results (invoker, method, idempotency_key, request_sha256, response)
                SELECT * FROM unnest(
                    \(idempotent.map(\.0.invoker))::text[], \(idempotent.map(\.0.method))::text[],
                    \(idempotent.map(\.0.key))::text[], \(idempotent.map { ByteBuffer(bytes: $0.0.requestSHA256) })::bytea[],
                    \(idempotent.map { ByteBuffer(bytes: $0.1) })::bytea[])
                ON CONFLICT DO NOTHING
                """,
                logger: logger)
        }
        return results
    }

    /// Who asked what under which key: a retry's identity, whatever its request.
    private struct AnswerKey: Hashable {
        let invoker: String
        let method: String
        let key: String
        init(_ key: RetryKey) { (invoker, method, self.key) = (key.invoker, key.method, key.key) }
        init(invoker: String, method: String, key: String) {
            (self.invoker, self.method, self.key) = (invoker, method, key)
        }
    }

    /// The answers stored for `keys` (read under the log's lock, so no batch adds one meanwhile).
    private func storedAnswers(for keys: [RetryKey], on connection: PostgresConnection) async throws
        -> [AnswerKey: (requestSHA256: Data, response: Data)]
    {
        guard !keys.isEmpty else { return [:] }
        let rows = try await connection.query(
            """
            SELECT r.invoker, r.method, r.idempotency_key, r.request_sha256, r.response
            FROM idempotent_results r
            JOIN unnest(\(keys.map(\.invoker))::text[], \(keys.map(\.method))::text[], \(keys.map(\.key))::text[])
                AS k(invoker, method, idempotency_key)
              ON r.invoker = k.invoker AND r.method = k.method AND r.idempotency_key = k.idempotency_key
            """,
            logger: logger)
        var answers: [AnswerKey: (requestSHA256: Data, response: Data)] = [:]
        for try await (invoker, method, key, digest, response) in rows.decode((String, String, String, Data, Data).self)
        {
            answers[AnswerKey(invoker: invoker, method: method, key: key)] = (digest, response)
        }
        return answers
    }

    private func currentSize(on connection: PostgresConnection) async throws -> UInt64 {
        let rows = try await connection.query(
            "SELECT tree_size FROM tree_heads ORDER BY tree_size DESC LIMIT 1", logger: logger)
        for try await size in rows.decode(Int64.self) { return UInt64(size) }
        return 0
    }
}

/// A continuation resumed by whichever of several tasks answers first.
private final class ReplyOnce<Value: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Value, any Error>?>

    init(_ continuation: CheckedContinuation<Value, any Error>) { self.continuation = Mutex(continuation) }

    /// Resumes with `result` unless another answer came first; says whether this one was sent.
    @discardableResult
    func send(_ result: Result<Value, any Error>) -> Bool {
        guard let waiting = continuation.withLock({ $0.take() }) else { return false }
        waiting.resume(with: result)
        return true
    }
}

/// The batch in flight: when its limit passes, and how to give it up (says whether that answered its acts).
private struct BatchInFlight: Sendable {
    var deadline: ContinuousClock.Instant
    var giveUp: @Sendable () -> Bool
}
