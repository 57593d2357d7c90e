internal import Crypto
internal import Foundation
internal import Logging
internal import OrreryActors
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Stateful allocations' checkpoints in PostgreSQL: chunks as the agent streams them, then the record — signed by
/// the device and the actor — once every chunk is there and matches its sha256 and size; the record is logged by
/// the notary. An archive over 64 MiB comes through the content store instead (`ContentStore`, with its window and
/// resumption), and its record follows once the store holds it whole. `CheckpointReader` reads them back (a resume
/// gets the latest checkpoint's chunks, or fetches its stored archive with `serve`, and the actor's key, resealed to
/// the device resuming it).
struct CheckpointStore: Sendable {
    let client: PostgresClient
    let logger: Logger
    let key: SigningKey
    let offers: OfferStore
    let router: ActorRouter
    let notary: NotaryLink?
    /// Where archives over `archiveLimit` are kept.
    let contents: ContentStore
    /// The largest archive kept in checkpoint rows.
    var archiveLimit = 64 << 20
    static let chunkSize = 1 << 20
    /// The most one fetch asks for.
    static let fetchLimit: UInt64 = 16 << 20

    /// One chunk from `device`; the last (with the record) completes the checkpoint.
    func intake(_ chunk: Orrery_Actors_V1_CheckpointChunk, from device: DID) async throws {
        guard let (owner, offer) = try await offers.offer(chunk.offerID), owner == device.string else {
            throw ActorRouterError("checkpoint for offer \(chunk.offerID), which is not this device's")
        }
        guard chunk.data.count <= Self.chunkSize, Int(chunk.index) * Self.chunkSize < archiveLimit, chunk.sequence > 0,
            chunk.sequence <= UInt64(Int64.max)
        else {
            throw ActorRouterError("checkpoint chunk \(chunk.index): too large, or past the \(archiveLimit)-byte limit")
        }
        if chunk.archiveStored {
            guard chunk.hasRecord, chunk.data.isEmpty else {
                throw ActorRouterError("a stored checkpoint archive is announced by its record alone")
            }
        } else {
            try await client.query(
                """
                INSERT INTO checkpoint_chunks (offer_id, sequence, index, data)
                VALUES (\(chunk.offerID), \(Int64(chunk.sequence)), \(Int32(chunk.index)), \(chunk.data))
                ON CONFLICT DO NOTHING
                """, logger: logger)
        }
        guard chunk.hasRecord else { return }
        let stored = try await complete(chunk, offer: offer, device: device)
        router.hub.send(
            .with {
                $0.checkpointStored = .with {
                    $0.offerID = chunk.offerID
                    $0.sequence = chunk.sequence
                    $0.logIndex = stored
                }
            }, to: device.string)
    }

    private func complete(
        _ chunk: Orrery_Actors_V1_CheckpointChunk, offer: Orrery_Orchestrator_V1_Offer, device: DID
    ) async throws -> UInt64 {
        guard
            let address = ActorAddress(
                deployment: offer.deploymentID, allocation: offer.allocation, replica: Int(offer.replica)),
            let actor = try await router.actorDID(address).map(DID.init)
        else { throw ActorRouterError("checkpoint of an actor whose identity is unknown") }
        try SignedMessage.verify(
            chunk.record, type: Orrery_Actors_V1_Checkpoint.protoMessageName, requiring: [device, actor])
        let record = try Orrery_Actors_V1_Checkpoint(serializedBytes: chunk.record.payload)
        guard record.offerID == chunk.offerID, record.sequence == chunk.sequence, record.address == address.description
        else { throw ActorRouterError("the checkpoint record names another offer, sequence or actor") }
        let size: Int64
        if chunk.archiveStored {
            size = try await storedArchive(of: chunk, matching: record)
        } else {
            var archive = Data()
            var expected: Int32 = 0
            let rows = try await client.query(
                """
                SELECT index, data FROM checkpoint_chunks
                WHERE offer_id = \(chunk.offerID) AND sequence = \(Int64(chunk.sequence)) ORDER BY index
                """, logger: logger)
            for try await (index, data) in rows.decode((Int32, Data).self) {
                guard index == expected else {
                    throw ActorRouterError("checkpoint \(record.sequence) lacks chunk \(expected)")
                }
                archive.append(data)
                expected += 1
            }
            let digest = Hex.sha256(archive)
            guard digest == record.sha256, UInt64(archive.count) == record.size else {
                throw ActorRouterError(
                    "checkpoint \(record.sequence)'s chunks do not match its record's sha256 and size")
            }
            size = Int64(archive.count)
        }
        // Logged by the notary first, so a stored checkpoint always carries its log index.
        var logIndex: UInt64 = 0
        if let notary {
            logIndex = try await notary.recordReceipt(
                .with {
                    $0.receipt = chunk.record
                    $0.idempotencyKey = "checkpoint/" + Hex.sha256(chunk.record.payload)
                }
            ).entryIndex
        }
        try await client.query(
            """
            INSERT INTO checkpoints
                (deployment_id, allocation, replica, sequence, offer_id, device_did, record, size, log_index)
            VALUES (\(offer.deploymentID), \(offer.allocation), \(Int32(offer.replica)), \(Int64(record.sequence)),
                    \(chunk.offerID), \(device.string), \(Data(try chunk.record.serializedBytes() as [UInt8])),
                    \(size), \(Int64(logIndex)))
            ON CONFLICT DO NOTHING
            """, logger: logger)
        // Older archives of this actor go, also those its earlier offers (before a move) stored; the latest two
        // stay (sequences continue across moves).
        try await client.query(
            """
            DELETE FROM checkpoint_chunks c USING offers o
            WHERE c.offer_id = o.id AND o.deployment_id = \(offer.deploymentID) AND o.allocation = \(offer.allocation)
              AND o.replica = \(Int32(offer.replica)) AND c.sequence < \(Int64(chunk.sequence) - 1)
            """, logger: logger)
        try await client.query(
            """
            DELETE FROM stored_outputs s USING offers o
            WHERE s.offer_id = o.id AND o.deployment_id = \(offer.deploymentID) AND o.allocation = \(offer.allocation)
              AND o.replica = \(Int32(offer.replica)) AND s.checkpoint_sequence > 0
              AND s.checkpoint_sequence < \(Int64(chunk.sequence) - 1)
            """, logger: logger)
        logger.info(
            "checkpoint stored",
            metadata: [
                "actor": "\(address)", "sequence": "\(record.sequence)", "bytes": "\(size)",
                "in": "\(chunk.archiveStored ? "content store" : "checkpoint rows")",
            ])
        return logIndex
    }

    /// The size of the archive the content store holds whole for this checkpoint, when it is the record's.
    private func storedArchive(
        of chunk: Orrery_Actors_V1_CheckpointChunk, matching record: Orrery_Actors_V1_Checkpoint
    ) async throws -> Int64 {
        guard
            let (size, sha256) = try await ContentStore.storedCheckpoint(
                offer: chunk.offerID, sequence: chunk.sequence, client: client, logger: logger)
        else {
            throw ActorRouterError("checkpoint \(record.sequence)'s archive is not (wholly) in the content store")
        }
        guard sha256 == record.sha256, UInt64(size) == record.size else {
            throw ActorRouterError(
                "checkpoint \(record.sequence)'s stored archive does not match its record's sha256 and size")
        }
        return size
    }

    /// Answers a device resuming an actor with the part of its stored checkpoint archive it asks for: the offer is
    /// this device's, the checkpoint is of the actor that offer runs.
    func serve(_ fetch: Orrery_Actors_V1_CheckpointFetch, to device: DID) async throws {
        guard fetch.length > 0, fetch.length <= Self.fetchLimit, fetch.offset <= UInt64(Int64.max / 2),
            fetch.sequence > 0, fetch.sequence <= UInt64(Int64.max)
        else { throw ActorRouterError("a checkpoint fetch of 1 byte … 16 MiB") }
        guard let (owner, offer) = try await offers.offer(fetch.offerID), owner == device.string else {
            throw ActorRouterError("checkpoint fetch for offer \(fetch.offerID), which is not this device's")
        }
        var source: String?
        for try await kept in try await client.query(
            """
            SELECT offer_id FROM checkpoints WHERE deployment_id = \(offer.deploymentID)
              AND allocation = \(offer.allocation) AND replica = \(Int32(offer.replica))
              AND sequence = \(Int64(fetch.sequence))
            """, logger: logger
        ).decode(String.self) {
            source = kept
        }
        guard let source else {
            throw ActorRouterError("no checkpoint \(fetch.sequence) of the actor offer \(fetch.offerID) runs")
        }
        let start = Int64(fetch.offset)
        let found = try await contents.readCheckpoint(
            offer: source, sequence: fetch.sequence, from: start, to: start + Int64(fetch.length)
        ) { offset, data in
            router.hub.send(
                .with {
                    $0.checkpointChunk = .with {
                        $0.offerID = fetch.offerID
                        $0.sequence = fetch.sequence
                        $0.offset = UInt64(offset)
                        $0.data = data
                    }
                }, to: device.string)
        }
        guard found else {
            throw ActorRouterError("checkpoint \(fetch.sequence)'s archive is not in the content store")
        }
    }
}
