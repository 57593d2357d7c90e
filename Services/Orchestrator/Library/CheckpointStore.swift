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
/// the notary. A resume gets the latest checkpoint's chunks and the actor's key, resealed to the device resuming it.
struct CheckpointStore: Sendable {
    let client: PostgresClient
    let logger: Logger
    let key: SigningKey
    let offers: OfferStore
    let router: ActorRouter
    let notary: NotaryLink?
    /// The largest archive kept.
    var archiveLimit = 64 << 20
    static let chunkSize = 1 << 20

    /// One chunk from `device`; the last (with the record) completes the checkpoint.
    func intake(_ chunk: Orrery_Actors_V1_CheckpointChunk, from device: DID) async throws {
        guard let (owner, offer) = try await offers.offer(chunk.offerID), owner == device.string else {
            throw ActorRouterError("checkpoint for offer \(chunk.offerID), which is not this device's")
        }
        guard chunk.data.count <= Self.chunkSize, Int(chunk.index) * Self.chunkSize < archiveLimit, chunk.sequence > 0
        else {
            throw ActorRouterError("checkpoint chunk \(chunk.index): too large, or past the \(archiveLimit)-byte limit")
        }
        try await client.query(
            """
            INSERT INTO checkpoint_chunks (offer_id, sequence, index, data)
            VALUES (\(chunk.offerID), \(Int64(chunk.sequence)), \(Int32(chunk.index)), \(chunk.data))
            ON CONFLICT DO NOTHING
            """, logger: logger)
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
            throw ActorRouterError("checkpoint \(record.sequence)'s chunks do not match its record's sha256 and size")
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
                    \(Int64(archive.count)), \(Int64(logIndex)))
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
        logger.info(
            "checkpoint stored",
            metadata: ["actor": "\(address)", "sequence": "\(record.sequence)", "bytes": "\(archive.count)"])
        return logIndex
    }

    /// The latest stored checkpoint of a replica.
    func latest(_ address: ActorAddress) async throws -> Orrery_Orchestrator_V1_StoredCheckpoint? {
        try await stored(
            address,
            client.query(
                """
                SELECT device_did, record, log_index FROM checkpoints WHERE deployment_id = \(address.deployment)
                  AND allocation = \(address.allocation) AND replica = \(Int32(address.replica))
                ORDER BY sequence DESC LIMIT 1
                """, logger: logger)
        ).first
    }

    /// The stored checkpoint of a replica, newer than sequence `after`, whose record answers request `requestID`.
    func answering(_ requestID: String, of address: ActorAddress, after: UInt64) async throws
        -> Orrery_Orchestrator_V1_StoredCheckpoint?
    {
        try await stored(
            address,
            client.query(
                """
                SELECT device_did, record, log_index FROM checkpoints WHERE deployment_id = \(address.deployment)
                  AND allocation = \(address.allocation) AND replica = \(Int32(address.replica))
                  AND sequence > \(Int64(clamping: after))
                ORDER BY sequence
                """, logger: logger)
        ).first { (try? Orrery_Actors_V1_Checkpoint(serializedBytes: $0.record.payload))?.requestID == requestID }
    }

    private func stored(_ address: ActorAddress, _ rows: PostgresRowSequence) async throws
        -> [Orrery_Orchestrator_V1_StoredCheckpoint]
    {
        var found: [Orrery_Orchestrator_V1_StoredCheckpoint] = []
        for try await (device, record, logIndex) in rows.decode((String, Data, Int64).self) {
            found.append(
                .with {
                    $0.allocation = address.allocation
                    $0.replica = UInt32(address.replica)
                    $0.deviceDid = device
                    $0.record = (try? Orrery_Common_V1_Signed(serializedBytes: record)) ?? .init()
                    $0.logIndex = UInt64(logIndex)
                })
        }
        return found
    }

    /// What a device resuming a stateful replica is sent: the latest checkpoint's chunks, then the deploy carrying
    /// the record and the actor's key resealed to that device. Without a known actor, the deploy as it is.
    func prepare(_ deploy: Orrery_Orchestrator_V1_Deploy, device: String) async throws
        -> [Orrery_Orchestrator_V1_OrchestratorMessage]
    {
        guard deploy.spec.stateful,
            let address = ActorAddress(
                deployment: deploy.deploymentID, allocation: deploy.allocation, replica: Int(deploy.replica))
        else { return [.with { $0.deploy = deploy }] }
        let rows = try await client.query(
            """
            SELECT actor_did, sealed_key FROM actors WHERE deployment_id = \(address.deployment)
              AND allocation = \(address.allocation) AND replica = \(Int32(address.replica))
            """, logger: logger)
        var found: (String, Data)?
        for try await row in rows.decode((String, Data).self) { found = row }
        guard let (did, sealed) = found else { return [.with { $0.deploy = deploy }] }
        let actor = try DID(did)
        let actorKey = try ActorKeySeal.open(Array(sealed), with: key, expecting: actor)
        var resume = Orrery_Actors_V1_Resume.with {
            $0.actorDid = did
        }
        resume.sealedKey = Data(try ActorKeySeal.seal(actorKey, to: try DID(device)))
        var messages: [Orrery_Orchestrator_V1_OrchestratorMessage] = []
        if let stored = try await latest(address) {
            let record = try Orrery_Actors_V1_Checkpoint(serializedBytes: stored.record.payload)
            resume.checkpoint = stored.record
            let chunks = try await client.query(
                """
                SELECT index, data FROM checkpoint_chunks
                WHERE offer_id = \(record.offerID) AND sequence = \(Int64(record.sequence)) ORDER BY index
                """, logger: logger)
            for try await (index, data) in chunks.decode((Int32, Data).self) {
                messages.append(
                    .with {
                        $0.checkpointChunk = .with {
                            $0.offerID = deploy.offerID
                            $0.sequence = record.sequence
                            $0.index = UInt32(index)
                            $0.data = data
                        }
                    })
            }
        }
        var resumed = deploy
        resumed.resume = resume
        return messages + [.with { $0.deploy = resumed }]
    }
}
