internal import Foundation
internal import Logging
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Offers in PostgreSQL: one per placed replica, pending until its device bids or declines, or it expires.
/// The table is how an offer reaches an agent connected to any replica.
struct OfferStore: Sendable {
    enum State: Int16, Sendable {
        case pending = 0, accepted, declined, expired, withdrawn
    }

    let client: PostgresClient
    let logger: Logger

    /// Inserts an offer per assignment of `deployment`, inside the transition that moves it to `offered`.
    static func create(
        for deployment: Orrery_Orchestrator_V1_Deployment, orchestratorDID: String, timeout: Duration,
        connection: PostgresConnection, logger: Logger
    ) async throws {
        let expires = Date().addingTimeInterval(
            Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        for assignment in deployment.assignments {
            var offer = Orrery_Orchestrator_V1_Offer()
            offer.offerID = "off_" + String(DeploymentStore.newID().dropFirst(4))
            offer.deploymentID = deployment.id
            offer.allocation = assignment.allocation
            offer.replica = assignment.replica
            offer.consumerDid = deployment.consumerDid
            offer.spec = deployment.spec.allocations.first { $0.name == assignment.allocation } ?? .init()
            offer.hourlyPrice = assignment.hourlyPrice
            offer.jobCost = assignment.jobCost
            offer.expiresAt = Google_Protobuf_Timestamp(date: expires)
            offer.orchestratorDid = orchestratorDID
            try await connection.query(
                """
                INSERT INTO offers (id, deployment_id, allocation, replica, device_did, record, expires_at)
                VALUES (\(offer.offerID), \(deployment.id), \(assignment.allocation), \(Int32(assignment.replica)),
                        \(assignment.deviceDid), \(Data(try offer.serializedBytes() as [UInt8])), \(expires))
                """,
                logger: logger)
        }
    }

    /// Pending offers for these devices, oldest first.
    func pending(for devices: [String]) async throws -> [(device: String, offer: Orrery_Orchestrator_V1_Offer)] {
        guard !devices.isEmpty else { return [] }
        let rows = try await client.query(
            """
            SELECT device_did, record FROM offers
            WHERE state = 0 AND device_did = ANY(\(devices)::text[]) AND expires_at > now()
            ORDER BY created_at
            """,
            logger: logger)
        var offers: [(device: String, offer: Orrery_Orchestrator_V1_Offer)] = []
        for try await (device, record) in rows.decode((String, Data).self) {
            offers.append((device, try Orrery_Orchestrator_V1_Offer(serializedBytes: record)))
        }
        return offers
    }

    /// Records a device's answer to a pending offer addressed to it; returns the offer's deployment, or nil
    /// when the offer is not pending for this device (already answered, expired, withdrawn, or someone else's).
    func answer(
        _ offerID: String, device: String, state: State, bid: Orrery_Common_V1_Signed?, reason: String
    ) async throws -> String? {
        let bidData = try bid.map { Data(try $0.serializedBytes() as [UInt8]) }
        let rows = try await client.query(
            """
            UPDATE offers SET state = \(state.rawValue), bid = \(bidData), reason = \(reason)
            WHERE id = \(offerID) AND device_did = \(device) AND state = 0 AND expires_at > now()
            RETURNING deployment_id
            """,
            logger: logger)
        for try await deployment in rows.decode(String.self) { return deployment }
        return nil
    }

    /// The offer as recorded, for checking a bid against it.
    func offer(_ offerID: String) async throws -> (device: String, offer: Orrery_Orchestrator_V1_Offer)? {
        let rows = try await client.query(
            "SELECT device_did, record FROM offers WHERE id = \(offerID)", logger: logger)
        for try await (device, record) in rows.decode((String, Data).self) {
            return (device, try Orrery_Orchestrator_V1_Offer(serializedBytes: record))
        }
        return nil
    }

    /// Marks pending offers past their expiry; returns their deployments.
    func expire() async throws -> Set<String> {
        let rows = try await client.query(
            """
            UPDATE offers SET state = 3, reason = 'no answer before the offer expired'
            WHERE state = 0 AND expires_at <= now() RETURNING deployment_id
            """,
            logger: logger)
        var deployments: Set<String> = []
        for try await deployment in rows.decode(String.self) { deployments.insert(deployment) }
        return deployments
    }

    /// The current round's offers of a deployment (pending or accepted) and the devices that declined or let
    /// an offer expire in any round, with why.
    func round(of deployment: String) async throws -> (
        current: [(device: String, state: State)], refusals: [(device: String, reason: String)]
    ) {
        let rows = try await client.query(
            "SELECT device_did, state, reason FROM offers WHERE deployment_id = \(deployment) ORDER BY created_at",
            logger: logger)
        var current: [(device: String, state: State)] = []
        var refusals: [(device: String, reason: String)] = []
        for try await (device, code, reason) in rows.decode((String, Int16, String).self) {
            switch State(rawValue: code) {
            case .pending, .accepted: current.append((device, State(rawValue: code) ?? .pending))
            case .declined, .expired: refusals.append((device, reason))
            default: break
            }
        }
        return (current, refusals)
    }

    /// Withdraws the current round (before placing again). Must run inside the transition that does so.
    static func withdraw(deployment: String, reason: String, connection: PostgresConnection, logger: Logger)
        async throws
    {
        try await connection.query(
            "UPDATE offers SET state = 4, reason = \(reason) WHERE deployment_id = \(deployment) AND state IN (0, 1)",
            logger: logger)
    }
}
