internal import Foundation
internal import Logging
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Outcomes to count on devices' reputation: written inside the deployment transition that causes them, sent to
/// the registry's `RecordOutcome` by `RegistryFollower` (at least once; the registry counts each key once).
struct ReputationOutbox: Sendable {
    let client: PostgresClient
    let logger: Logger

    /// Records an outcome for later delivery. Must run inside the transition that causes it.
    static func add(
        device: String, outcome: Orrery_Registry_V1_RecordOutcomeRequest.Outcome, key: String,
        connection: PostgresConnection, logger: Logger
    ) async throws {
        try await connection.query(
            """
            INSERT INTO reputation_outbox (idempotency_key, device_did, outcome)
            VALUES (\(key), \(device), \(Int16(outcome.rawValue))) ON CONFLICT DO NOTHING
            """,
            logger: logger)
    }

    /// Unsent outcomes, oldest first.
    func unsent(limit: Int = 100) async throws -> [Orrery_Registry_V1_RecordOutcomeRequest] {
        let rows = try await client.query(
            """
            SELECT idempotency_key, device_did, outcome FROM reputation_outbox WHERE sent_at IS NULL
            ORDER BY created_at LIMIT \(limit)
            """,
            logger: logger)
        var requests: [Orrery_Registry_V1_RecordOutcomeRequest] = []
        for try await (key, device, outcome) in rows.decode((String, String, Int16).self) {
            requests.append(
                .with {
                    $0.idempotencyKey = key
                    $0.deviceDid = device
                    $0.outcome = .init(rawValue: Int(outcome)) ?? .unspecified
                })
        }
        return requests
    }

    func markSent(_ key: String) async throws {
        try await client.query(
            "UPDATE reputation_outbox SET sent_at = now() WHERE idempotency_key = \(key)", logger: logger)
    }
}
