internal import Foundation
internal import Logging
internal import OrreryActors
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Reads stored checkpoints: the latest of a replica, the one answering a request, and what a device resuming a
/// stateful replica is sent. It needs only the database and the orchestrator's key, so the agent hub is built with it
/// before the actor router and the checkpoint store exist.
struct CheckpointReader: Sendable {
    let client: PostgresClient
    let logger: Logger
    let key: SigningKey

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

    /// What a device resuming a stateful replica is sent: the latest checkpoint's chunks (none when its archive is in
    /// the content store: the device fetches it), then the deploy carrying the record and the actor's key resealed
    /// to that device. Without a known actor, the deploy as it is.
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
            resume.archiveStored = try await isStored(record)
        }
        if resume.hasCheckpoint, !resume.archiveStored {
            let record = try Orrery_Actors_V1_Checkpoint(serializedBytes: resume.checkpoint.payload)
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

    /// Bytes of checkpoint archives an offer's device is still sending to the content store.
    func archiveBytesArriving(offer: String) async throws -> Int64 {
        let rows = try await client.query(
            """
            SELECT coalesce(sum(stored), 0)::bigint FROM stored_outputs
            WHERE offer_id = \(offer) AND checkpoint_sequence > 0 AND NOT complete
            """, logger: logger)
        for try await total in rows.decode(Int64.self) { return total }
        return 0
    }

    /// Whether the checkpoint's archive is in the content store (over 64 MiB): the device fetches it then.
    private func isStored(_ record: Orrery_Actors_V1_Checkpoint) async throws -> Bool {
        try await ContentStore.storedCheckpoint(
            offer: record.offerID, sequence: record.sequence, client: client, logger: logger) != nil
    }
}
