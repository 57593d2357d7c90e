internal import Crypto
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization

/// The orchestrator's content store: declared outputs over 3 MiB of allocations without `outputs_to`, streamed by
/// their device in chunks over its line and kept in PostgreSQL (`output_chunks`), so every orchestrator replica
/// reads them. A chunk is stored only where what is held ends, each answered with how much is held (the device's
/// window; after a reconnect it sends from there), the whole file checked against the sha256 its device's receipt
/// names before it is listed; a consumer keeps at most its quota at once, and outputs expire. Checkpoint archives over
/// 64 MiB come the same way (`checkpoint_sequence`, path `/checkpoints/N`), count in the quota, are never listed as
/// outputs, go when their actor has two newer ones (`CheckpointStore`) or when their deployment ended longer ago than
/// the retention.
struct ContentStore: Sendable {
    let client: PostgresClient
    let offers: OfferStore
    let logger: Logger
    /// Bytes one consumer may keep at once; 0 refuses every output.
    let quotaPerConsumer: Int64
    /// How long an output is kept.
    let retention: Duration
    /// Running digests of the outputs whose chunks this replica took in order.
    let hashes = RunningDigests()
    /// The largest chunk taken.
    static let chunkSize = 1 << 20
    /// The largest output taken.
    static let maximumOutputBytes: Int64 = 1 << 40

    /// Stores a chunk from `device` (when it starts where the store's copy ends) and answers how much is held.
    func intake(_ chunk: Orrery_Orchestrator_V1_OutputChunk, from device: String) async throws
        -> Orrery_Orchestrator_V1_OutputProgress
    {
        var progress = Orrery_Orchestrator_V1_OutputProgress.with {
            $0.offerID = chunk.offerID
            $0.path = chunk.path
            $0.checkpointSequence = chunk.checkpointSequence
        }
        guard chunk.data.count <= Self.chunkSize, WorkloadSpecValidator.isSHA256(chunk.sha256),
            WorkloadSpecValidator.isSHA256(chunk.chunkSha256), chunk.size > 0,
            chunk.size <= UInt64(Self.maximumOutputBytes)
        else {
            progress.refused = "a chunk of at most 1 MiB, with sha256s and a size of 1 byte … 1 TiB"
            return progress
        }
        // The chunk's check and the output's running digest are computed while the database appends it (the device
        // always sends intact chunks over its TLS line; one that is not is taken back before it is answered for).
        async let checked = !chunk.data.isEmpty && Hex.sha256(chunk.data) == chunk.chunkSha256
        async let advanced = hashes.advancing(chunk)
        if !chunk.data.isEmpty, let stored = try await append(chunk, from: device) {
            guard await checked else { return try await withdraw(chunk, from: device, progress: progress) }
            hashes.commit(await advanced, for: chunk)
            return try await appended(chunk, stored: stored, progress: progress)
        }
        let intact = await checked
        let admitted = try await admit(chunk, from: device, intact: intact, progress: progress)
        // A new output's first chunk: appended now that the output is admitted.
        if admitted.refused.isEmpty, !admitted.complete, intact, admitted.stored == chunk.offset,
            let stored = try await append(chunk, from: device)
        {
            hashes.commit(await advanced, for: chunk)
            return try await appended(chunk, stored: stored, progress: progress)
        }
        return admitted
    }

    /// Takes back a chunk just appended whose bytes are not the sha256 it names; answers with what was held before.
    private func withdraw(
        _ chunk: Orrery_Orchestrator_V1_OutputChunk, from device: String,
        progress: Orrery_Orchestrator_V1_OutputProgress
    ) async throws -> Orrery_Orchestrator_V1_OutputProgress {
        let length = Int64(chunk.data.count)
        let end = Int64(chunk.offset) + length
        try await client.query(
            """
            WITH undone AS (
                UPDATE stored_outputs SET stored = stored - \(length)
                WHERE offer_id = \(chunk.offerID) AND path = \(chunk.path) AND device_did = \(device)
                  AND stored = \(end) AND NOT complete
                RETURNING stored
            )
            DELETE FROM output_chunks
            WHERE offer_id = \(chunk.offerID) AND path = \(chunk.path) AND "offset" = \(Int64(chunk.offset))
              AND EXISTS (SELECT 1 FROM undone)
            """, logger: logger)
        var progress = progress
        progress.stored = chunk.offset
        return progress
    }

    /// The answer once a chunk was appended: what is held, and the completion when that is all of it.
    private func appended(
        _ chunk: Orrery_Orchestrator_V1_OutputChunk, stored: Int64, progress: Orrery_Orchestrator_V1_OutputProgress
    ) async throws -> Orrery_Orchestrator_V1_OutputProgress {
        var progress = progress
        progress.stored = UInt64(stored)
        guard stored == Int64(chunk.size) else { return progress }
        return try await complete(chunk, progress: progress)
    }

    /// The common case, one statement (one round trip): the chunk appended where the device's copy of this output
    /// ends. Not synced to disk on its own (`synchronous_commit` off for this statement's transaction alone): a chunk
    /// lost in a database crash is answered for with less and sent again; only the completion is synchronous (and,
    /// the WAL being sequential, makes every chunk before it durable).
    /// - Returns: the bytes now held; nil when the chunk does not continue an output of this device's.
    private func append(_ chunk: Orrery_Orchestrator_V1_OutputChunk, from device: String) async throws -> Int64? {
        let length = Int64(chunk.data.count)
        for try await stored in try await client.query(
            """
            WITH relaxed AS (
                SELECT set_config('synchronous_commit', 'off', true)
            ), advanced AS (
                UPDATE stored_outputs SET stored = stored + \(length)
                WHERE offer_id = \(chunk.offerID) AND path = \(chunk.path) AND device_did = \(device)
                  AND stored = \(Int64(chunk.offset)) AND NOT complete AND size = \(Int64(chunk.size))
                  AND sha256 = \(chunk.sha256) AND stored + \(length) <= size
                  AND EXISTS (SELECT 1 FROM relaxed)
                RETURNING stored
            ), inserted AS (
                INSERT INTO output_chunks (offer_id, path, "offset", data)
                SELECT \(chunk.offerID), \(chunk.path), \(Int64(chunk.offset)), \(chunk.data) FROM advanced
            )
            SELECT stored FROM advanced
            """, logger: logger
        ).decode(Int64.self) {
            return stored
        }
        return nil
    }

    /// Everything but the common case, nothing stored: an output's first chunk admits the output (checked against
    /// the offer and the quota); a chunk resent, past a gap or damaged is answered with what is held; or refused.
    private func admit(
        _ chunk: Orrery_Orchestrator_V1_OutputChunk, from device: String, intact: Bool,
        progress: Orrery_Orchestrator_V1_OutputProgress
    ) async throws -> Orrery_Orchestrator_V1_OutputProgress {
        var progress = progress
        func refused(_ why: String) -> Orrery_Orchestrator_V1_OutputProgress {
            progress.refused = why
            return progress
        }
        let checkpoint = Int64(clamping: chunk.checkpointSequence)
        guard let recorded = try await offers.offer(chunk.offerID), recorded.device == device else {
            return refused("not an offer of this device's")
        }
        if checkpoint > 0 {
            guard recorded.offer.spec.stateful, chunk.path == Self.checkpointPath(UInt64(checkpoint)) else {
                return refused("a checkpoint archive of a stateful allocation, at /checkpoints/SEQUENCE")
            }
        } else {
            guard recorded.offer.spec.outputs.contains(chunk.path), recorded.offer.spec.outputsTo.isEmpty else {
                return refused("not a declared output of this device's allocation that the orchestrator keeps")
            }
        }
        let consumer = recorded.offer.consumerDid
        let size = Int64(chunk.size)
        return try await client.transaction(logger: logger) { connection in
            // One consumer's new outputs are admitted one at a time: the quota is checked against what is held.
            try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\(consumer)))", logger: logger)
            var held: (size: Int64, sha256: String, stored: Int64, complete: Bool)?
            for try await row in try await connection.query(
                """
                SELECT size, sha256, stored, complete FROM stored_outputs
                WHERE offer_id = \(chunk.offerID) AND path = \(chunk.path) FOR UPDATE
                """, logger: logger
            ).decode((Int64, String, Int64, Bool).self) {
                held = row
            }
            if held != nil {
                // Admitted before migration 18 recorded its device: the offer's device (checked above) is it.
                try await connection.query(
                    """
                    UPDATE stored_outputs SET device_did = \(device)
                    WHERE offer_id = \(chunk.offerID) AND path = \(chunk.path) AND device_did = ''
                    """, logger: logger)
            } else {
                var used: Int64 = 0
                for try await total in try await connection.query(
                    "SELECT coalesce(sum(size), 0)::bigint FROM stored_outputs WHERE consumer_did = \(consumer)",
                    logger: logger
                ).decode(Int64.self) {
                    used = total
                }
                guard used + size <= quotaPerConsumer else {
                    return refused(
                        "the consumer keeps \(used) bytes in the orchestrator's content store; \(size) more pass its quota of \(quotaPerConsumer)"
                            + (checkpoint > 0 ? "" : ": use outputs_to"))
                }
                try await connection.query(
                    """
                    INSERT INTO stored_outputs
                        (offer_id, path, consumer_did, device_did, size, sha256, checkpoint_sequence)
                    VALUES (\(chunk.offerID), \(chunk.path), \(consumer), \(device), \(size), \(chunk.sha256),
                            \(checkpoint))
                    """, logger: logger)
                held = (size, chunk.sha256, 0, false)
            }
            guard let current = held, current.size == size, current.sha256 == chunk.sha256 else {
                return refused("its size or sha256 differs from the first chunk's")
            }
            progress.stored = UInt64(current.stored)
            progress.complete = current.complete
            // Answered with where the copy ends: a chunk resent, one past a gap or a damaged one is not stored; the one
            // that continues it is appended by the caller.
            if intact, !current.complete, chunk.offset == UInt64(current.stored),
                current.stored + Int64(chunk.data.count) > size
            {
                return refused("longer than its size")
            }
            return progress
        }
    }

    /// The whole output is held: listed once its bytes are the sha256 the device named (hashed as the chunks came,
    /// or read back when they came to several replicas), durably.
    private func complete(
        _ chunk: Orrery_Orchestrator_V1_OutputChunk, progress: Orrery_Orchestrator_V1_OutputProgress
    ) async throws -> Orrery_Orchestrator_V1_OutputProgress {
        var progress = progress
        let size = Int64(chunk.size)
        return try await client.transaction(logger: logger) { connection in
            var digest = hashes.finish(chunk)
            if digest == nil {
                var hasher = SHA256()
                for try await data in try await connection.query(
                    """
                    SELECT data FROM output_chunks WHERE offer_id = \(chunk.offerID) AND path = \(chunk.path)
                    ORDER BY "offset"
                    """, logger: logger
                ).decode(Data.self) {
                    hasher.update(data: data)
                }
                digest = Hex.encode(hasher.finalize())
            }
            guard digest == chunk.sha256 else {
                try await connection.query(
                    "DELETE FROM stored_outputs WHERE offer_id = \(chunk.offerID) AND path = \(chunk.path)",
                    logger: logger)
                progress.refused = "its bytes have the sha256 \(digest ?? "?"), not \(chunk.sha256)"
                return progress
            }
            try await connection.query(
                """
                UPDATE stored_outputs SET complete = true WHERE offer_id = \(chunk.offerID) AND path = \(chunk.path)
                """, logger: logger)
            // A checkpoint archive is not an output: its record, sent once the device hears this, lists it.
            if chunk.checkpointSequence == 0 {
                try await connection.query(
                    """
                    INSERT INTO outputs (offer_id, path, sha256, content, size, location)
                    VALUES (\(chunk.offerID), \(chunk.path), \(chunk.sha256), \(Data()), \(size), 'store')
                    ON CONFLICT DO NOTHING
                    """, logger: logger)
            }
            progress.complete = true
            return progress
        }
    }

    /// A stored output's chunks from `offset`, for `consumer`'s deployment, handed to `write` one by one.
    /// - Throws: `NOT_FOUND` when the deployment is not the consumer's or holds no such stored output.
    func read(
        _ request: Orrery_Orchestrator_V1_ReadOutputRequest, consumer: String,
        _ write: (Orrery_Orchestrator_V1_OutputChunk) async throws -> Void
    ) async throws {
        var found: (offer: String, size: Int64, sha256: String)?
        for try await row in try await client.query(
            """
            SELECT s.offer_id, s.size, s.sha256 FROM stored_outputs s
            JOIN offers o ON o.id = s.offer_id JOIN deployments d ON d.id = o.deployment_id
            WHERE d.id = \(request.id) AND d.consumer_did = \(consumer) AND o.allocation = \(request.allocation)
              AND o.replica = \(Int32(clamping: request.replica)) AND s.path = \(request.path) AND s.complete
              AND s.checkpoint_sequence = 0
            ORDER BY s.created_at DESC LIMIT 1
            """, logger: logger
        ).decode((String, Int64, String).self) {
            found = row
        }
        guard let found else {
            throw RPCError(
                code: .notFound,
                message:
                    "no stored output \(request.allocation)[\(request.replica)] \(request.path.prefix(200)) in deployment \(request.id.prefix(64)) of yours (expired, or never over 3 MiB)"
            )
        }
        guard request.offset <= UInt64(found.size) else {
            throw RPCError(code: .outOfRange, message: "offset: past the output's \(found.size) bytes")
        }
        let start = Int64(request.offset)
        let rows = try await client.query(
            """
            SELECT "offset", data FROM output_chunks
            WHERE offer_id = \(found.offer) AND path = \(request.path) AND "offset" + length(data) > \(start)
            ORDER BY "offset"
            """, logger: logger)
        for try await (offset, stored) in rows.decode((Int64, Data).self) {
            let data = offset < start ? stored.dropFirst(Int(start - offset)) : stored[...]
            try await write(
                .with {
                    $0.offerID = found.offer
                    $0.path = request.path
                    $0.offset = UInt64(max(offset, start))
                    $0.data = Data(data)
                    $0.chunkSha256 = Hex.sha256(Data(data))
                    $0.size = UInt64(found.size)
                    $0.sha256 = found.sha256
                })
        }
    }

    /// Removes outputs older than the retention (their chunks and their listing), and checkpoint archives of
    /// deployments that ended longer ago than that.
    func expire() async throws {
        let seconds = Double(retention.components.seconds)
        try await client.query(
            """
            WITH gone AS (
                DELETE FROM stored_outputs s
                WHERE (s.checkpoint_sequence = 0 AND s.created_at < now() - make_interval(secs => \(seconds)))
                   OR (s.checkpoint_sequence > 0 AND EXISTS (
                        SELECT 1 FROM offers o JOIN deployments d ON d.id = o.deployment_id
                        WHERE o.id = s.offer_id AND d.state IN (8, 9, 10)
                          AND d.updated_at < now() - make_interval(secs => \(seconds))))
                RETURNING offer_id, path
            )
            DELETE FROM outputs o USING gone g WHERE o.offer_id = g.offer_id AND o.path = g.path
            """, logger: logger)
    }

    /// Where checkpoint `sequence`'s archive is kept (no declared output's path: those are relative).
    static func checkpointPath(_ sequence: UInt64) -> String { "/checkpoints/\(sequence)" }

    /// The size and sha256 of an offer's checkpoint archive when the store holds it whole; nil otherwise. (Static:
    /// `CheckpointReader` asks it with the database alone.)
    static func storedCheckpoint(offer: String, sequence: UInt64, client: PostgresClient, logger: Logger)
        async throws -> (size: Int64, sha256: String)?
    {
        let rows = try await client.query(
            """
            SELECT size, sha256 FROM stored_outputs
            WHERE offer_id = \(offer) AND path = \(checkpointPath(sequence))
              AND checkpoint_sequence = \(Int64(clamping: sequence)) AND complete
            """, logger: logger)
        for try await held in rows.decode((Int64, String).self) { return held }
        return nil
    }

    /// The stored archive's bytes in [`start`, `end`) of an offer's checkpoint, handed to `write` in pieces of at most
    /// 1 MiB, in order, each with its offset.
    /// - Returns: false when no complete archive of that checkpoint is kept.
    func readCheckpoint(
        offer: String, sequence: UInt64, from start: Int64, to end: Int64,
        _ write: (_ offset: Int64, _ data: Data) async throws -> Void
    ) async throws -> Bool {
        let path = Self.checkpointPath(sequence)
        guard
            let size = try await Self.storedCheckpoint(
                offer: offer, sequence: sequence, client: client, logger: logger)?
                .size
        else { return false }
        let end = min(end, size)
        guard start < end else { return true }
        let rows = try await client.query(
            """
            SELECT "offset", data FROM output_chunks
            WHERE offer_id = \(offer) AND path = \(path) AND "offset" + length(data) > \(start) AND "offset" < \(end)
            ORDER BY "offset"
            """, logger: logger)
        for try await (offset, stored) in rows.decode((Int64, Data).self) {
            let from = max(offset, start)
            let to = min(offset + Int64(stored.count), end)
            let base = stored.startIndex
            try await write(from, Data(stored[(base + Int(from - offset))..<(base + Int(to - offset))]))
        }
        return true
    }
}

/// The sha256 of each output as far as this replica took its chunks in order, so a completed output is checked
/// without reading it back; one whose chunks came to several replicas (or before a restart) is read back instead.
final class RunningDigests: Sendable {
    fileprivate struct Running {
        var next: UInt64
        var hasher: SHA256
    }
    private let running = Mutex<[String: Running]>([:])

    /// What was hashed of an output with `chunk` added, computed aside (nil when the chunk does not continue it).
    func advancing(_ chunk: Orrery_Orchestrator_V1_OutputChunk) -> Advanced? {
        let key = chunk.offerID + "\u{0}" + chunk.path
        guard
            var entry = running.withLock({ $0[key] }) ?? (chunk.offset == 0 ? Running(next: 0, hasher: SHA256()) : nil),
            entry.next == chunk.offset
        else { return nil }
        entry.hasher.update(data: chunk.data)
        entry.next += UInt64(chunk.data.count)
        return Advanced(entry: entry, from: chunk.offset)
    }

    /// Keeps what `advancing` computed for a chunk just stored, when nothing else was hashed meanwhile; otherwise
    /// the entry is dropped (the output is read back when it completes).
    func commit(_ advanced: Advanced?, for chunk: Orrery_Orchestrator_V1_OutputChunk) {
        let key = chunk.offerID + "\u{0}" + chunk.path
        running.withLock { running in
            let hashedSoFar = running[key]?.next ?? 0
            guard let advanced, advanced.from == hashedSoFar else {
                running[key] = nil
                return
            }
            running[key] = advanced.entry
        }
    }

    /// An entry with one more chunk hashed, and where that chunk started.
    struct Advanced: @unchecked Sendable {
        fileprivate let entry: Running
        fileprivate let from: UInt64
    }

    /// The digest of the whole output when every chunk was hashed here (the entry is dropped either way).
    func finish(_ chunk: Orrery_Orchestrator_V1_OutputChunk) -> String? {
        let key = chunk.offerID + "\u{0}" + chunk.path
        guard let entry = running.withLock({ $0.removeValue(forKey: key) }), entry.next == chunk.size else {
            return nil
        }
        return Hex.encode(entry.hasher.finalize())
    }
}
