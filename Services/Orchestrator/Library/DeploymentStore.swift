internal import Metrics
internal import Crypto
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryPlacement
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf

/// Deployments in PostgreSQL: the record as it stands, every transition in an append-only event log with a
/// revision (handed out in revision order by the change feed, so a watch resumed after N misses nothing), and the
/// resources each placed replica holds.
struct DeploymentStore: Sendable {
    /// The advisory lock every transition holds (shared) from its revision's draw to its end: the change feed waits
    /// for its holders at a gap in the event log.
    static let eventWritersLock: Int64 = 0x6F72_7265_7279_0005  // "orrery" 5

    let client: PostgresClient
    let logger: Logger
    /// Told, after the transition that withdrew them committed, of the offers withdrawn from their devices (placed
    /// again, or the deployment ended): a device that bid holds capacity for its offer until told.
    var offersWithdrawn: @Sendable ([OfferStore.Withdrawn]) -> Void = { _ in }

    /// States a deployment never leaves.
    static let terminal = Orrery_Orchestrator_V1_DeploymentState.terminal

    /// A fresh identifier: `prefix` ("dep_" for deployments, "off_" for offers) and 26 base32 characters (130 random
    /// bits).
    static func newID(prefix: String = "dep_") -> String { RandomIdentifier.make(prefix: prefix) }

    /// The deployment a consumer created with this idempotency key, if any.
    func existing(consumer: String, idempotencyKey: String) async throws -> Orrery_Orchestrator_V1_Deployment? {
        let rows = try await client.query(
            "SELECT record FROM deployments WHERE consumer_did = \(consumer) AND idempotency_key = \(idempotencyKey)",
            logger: logger)
        for try await record in rows.decode(Data.self) {
            return try Orrery_Orchestrator_V1_Deployment(serializedBytes: record)
        }
        return nil
    }

    /// Records a new deployment in `submitted`; nil when the consumer already used the idempotency key (a
    /// concurrent retry won), in which case the caller reads the existing one.
    func create(
        consumer: String, spec: Orrery_Orchestrator_V1_WorkloadSpec, validated: PlacementRequest,
        idempotencyKey: String, authority: Data, settlementAuthority: Data = Data(),
        sealedSecrets: [(allocation: String, name: String, box: Data)] = []
    ) async throws -> Orrery_Orchestrator_V1_Deployment? {
        let request = String(decoding: try JSONEncoder().encode(validated), as: UTF8.self)
        return try await client.transaction(logger: logger) { connection in
            let now = Date()
            var deployment = Orrery_Orchestrator_V1_Deployment()
            deployment.id = Self.newID()
            deployment.consumerDid = consumer
            deployment.spec = spec
            deployment.state = .submitted
            deployment.reason = "submitted"
            deployment.createdAt = Google_Protobuf_Timestamp(date: now)
            deployment.updatedAt = deployment.createdAt
            let inserted = try await connection.query(
                """
                INSERT INTO deployments (id, consumer_did, idempotency_key, state, record, created_at, updated_at, revision,
                                         consumer_authority, settlement_authority, placement_request)
                VALUES (\(deployment.id), \(consumer), \(idempotencyKey), \(Int16(deployment.state.rawValue)),
                        \(Data()), \(now), \(now), 0, \(authority), \(settlementAuthority), \(request)::jsonb)
                ON CONFLICT (consumer_did, idempotency_key) DO NOTHING RETURNING id
                """,
                logger: logger)
            var created = false
            for try await _ in inserted.decode(String.self) { created = true }
            guard created else { return nil }
            try await DeploymentSecrets.insert(
                sealedSecrets, deployment: deployment.id, connection: connection, logger: logger)
            return try await Self.record(deployment, connection: connection, logger: logger)
        }
    }

    /// What the spec was validated into at submit. A deployment submitted before it was stored (or stored in a shape
    /// this version cannot read) is validated now.
    /// - Throws: `WorkloadSpecValidator.Problems` for such a deployment whose spec no longer validates.
    func placementRequest(of deployment: Orrery_Orchestrator_V1_Deployment) async throws -> PlacementRequest {
        let rows = try await client.query(
            "SELECT placement_request::text FROM deployments WHERE id = \(deployment.id)", logger: logger)
        for try await stored in rows.decode(String?.self) {
            if let stored, let request = try? JSONDecoder().decode(PlacementRequest.self, from: Data(stored.utf8)) {
                return request
            }
        }
        return try WorkloadSpecValidator.validate(deployment.spec)
    }

    /// Moves a deployment to `state` when it is in one of `from` and `condition` holds for it, applying `change` to
    /// the record; returns the deployment after the transition, or nil when it was not (someone else moved it first).
    func transition(
        _ id: String,
        from: Set<Orrery_Orchestrator_V1_DeploymentState>,
        to state: Orrery_Orchestrator_V1_DeploymentState,
        reason: String,
        onlyIf condition: @Sendable (Orrery_Orchestrator_V1_Deployment) -> Bool = { _ in true },
        change: @Sendable (inout Orrery_Orchestrator_V1_Deployment) -> Void = { _ in },
        also: @Sendable (PostgresConnection, Orrery_Orchestrator_V1_Deployment) async throws -> Void = { _, _ in }
    ) async throws -> Orrery_Orchestrator_V1_Deployment? {
        let (moved, withdrawn) = try await client.transaction(logger: logger) {
            connection -> (Orrery_Orchestrator_V1_Deployment?, [OfferStore.Withdrawn]) in
            let rows = try await connection.query(
                "SELECT record FROM deployments WHERE id = \(id) FOR UPDATE", logger: logger)
            var current: Orrery_Orchestrator_V1_Deployment?
            for try await record in rows.decode(Data.self) {
                current = try Orrery_Orchestrator_V1_Deployment(serializedBytes: record)
            }
            guard var deployment = current, from.contains(deployment.state), condition(deployment) else {
                return (nil, [])
            }
            var withdrawn: [OfferStore.Withdrawn] = []
            guard DeploymentLifecycle.allows(deployment.state, state) else {
                let illegal = IllegalTransition(deployment: id, from: deployment.state, to: state)
                logger.critical("a transition no lifecycle rule allows was refused", metadata: ["error": "\(illegal)"])
                throw illegal
            }
            change(&deployment)
            deployment.state = state
            deployment.reason = reason
            deployment.updatedAt = Google_Protobuf_Timestamp(date: Date())
            if state == .matched {
                // Placed (again): the new assignments hold the resources, and the round offered before is withdrawn.
                withdrawn = try await OfferStore.withdraw(
                    deployment: id, reason: "placed again", connection: connection, logger: logger)
                try await connection.query("DELETE FROM assignments WHERE deployment_id = \(id)", logger: logger)
                for assignment in deployment.assignments {
                    let allocation = deployment.spec.allocations.first { $0.name == assignment.allocation }
                    let resources = allocation?.resources ?? Orrery_Orchestrator_V1_Resources()
                    try await connection.query(
                        """
                        INSERT INTO assignments (deployment_id, allocation, replica, device_did, cpu_cores, ram_mib,
                                                 disk_mib, gpus)
                        VALUES (\(id), \(assignment.allocation), \(Int32(assignment.replica)), \(assignment.deviceDid),
                                \(Int32(resources.cpuCores)), \(Int64(resources.ramMib)), \(Int64(resources.diskMib)),
                                \(Int32(resources.gpu.count)))
                        """,
                        logger: logger)
                }
            }
            if Self.terminal.contains(state) {
                try await connection.query(
                    "UPDATE assignments SET active = false WHERE deployment_id = \(id)", logger: logger)
                withdrawn = try await OfferStore.withdraw(
                    deployment: id, reason: reason, connection: connection, logger: logger)
                // What already runs is stopped: the agents get a Stop; each contract ends once its device reported
                // the end with its final receipt, or after the grace for it.
                try await connection.query(
                    """
                    UPDATE offers SET state = \(OfferState.stopping), reason = \(reason),
                        terminate_after = now() + make_interval(secs => \(OfferStore.finalReceiptGraceSeconds))
                    WHERE deployment_id = \(id) AND state IN (\(OfferState.deploying), \(OfferState.running))
                    """,
                    logger: logger)
            }
            try await also(connection, deployment)
            return (try await Self.record(deployment, connection: connection, logger: logger), withdrawn)
        }
        if !withdrawn.isEmpty { offersWithdrawn(withdrawn) }
        // For the crash tests: `orchestrator.<state>` dies right after a deployment's move to that state committed.
        if let moved {
            Counter(label: "orrery_deployment_transitions_total", dimensions: [("state", "\(moved.state)")]).increment()
            CrashPoint.reach("orchestrator.\(moved.state)", logger: logger)
        }
        return moved
    }

    /// Appends the deployment's transition to the event log and stores the record stamped with its revision: the
    /// last writes of its transaction. Transitions of different deployments draw and commit their revisions at once,
    /// so they may commit out of revision order; the change feed hands them out in order anyway (see `ChangeFeed`),
    /// for which each holds `eventWritersLock` shared from before its draw to its end. One deployment's revisions
    /// commit in order: its row is locked (written or `FOR UPDATE`) before the draw. (An exclusive lock from the draw
    /// to the commit kept the order before: every transition committed alone, each with its own WAL flush, and at 20
    /// deployments a second offered ~5–10 transactions waited for it.)
    private static func record(
        _ deployment: Orrery_Orchestrator_V1_Deployment, connection: PostgresConnection, logger: Logger
    ) async throws -> Orrery_Orchestrator_V1_Deployment {
        var deployment = deployment
        // The CTE's row is fetched (the lock taken) before the outer projection draws the revision.
        let revisionRows = try await connection.query(
            """
            WITH drawing AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(\(eventWritersLock)))
            SELECT nextval(pg_get_serial_sequence('deployment_events', 'revision')) FROM drawing
            """, logger: logger)
        for try await revision in revisionRows.decode(Int64.self) { deployment.revision = revision }
        var event = Orrery_Orchestrator_V1_DeploymentEvent()
        event.revision = deployment.revision
        event.state = deployment.state
        event.reason = deployment.reason
        event.at = deployment.updatedAt
        event.deployment = deployment
        let record = Data(try deployment.serializedBytes() as [UInt8])
        // A data-modifying CTE runs to completion whether or not the INSERT reads it.
        try await connection.query(
            """
            WITH updated AS (
                UPDATE deployments SET state = \(Int16(deployment.state.rawValue)), record = \(record),
                    updated_at = \(deployment.updatedAt.date), revision = \(deployment.revision)
                WHERE id = \(deployment.id)
            )
            INSERT INTO deployment_events (revision, deployment_id, state, record, at)
            VALUES (\(deployment.revision), \(deployment.id), \(Int16(deployment.state.rawValue)),
                    \(Data(try event.serializedBytes() as [UInt8])), \(deployment.updatedAt.date))
            """,
            logger: logger)
        return deployment
    }

    func deployment(_ id: String) async throws -> Orrery_Orchestrator_V1_Deployment? {
        let rows = try await client.query("SELECT record FROM deployments WHERE id = \(id)", logger: logger)
        for try await record in rows.decode(Data.self) {
            return try Orrery_Orchestrator_V1_Deployment(serializedBytes: record)
        }
        return nil
    }

    /// A consumer's deployments, newest first, after the page token's (created_at, id).
    func list(
        consumer: String, states: [Orrery_Orchestrator_V1_DeploymentState], pageSize: Int, after: (Date, String)?
    ) async throws -> [Orrery_Orchestrator_V1_Deployment] {
        let stateCodes = states.map { Int16($0.rawValue) }
        let (afterTime, afterID) = after ?? (Date.distantFuture, "")
        let rows = try await client.query(
            """
            SELECT record FROM deployments
            WHERE consumer_did = \(consumer)
              AND (cardinality(\(stateCodes)::smallint[]) = 0 OR state = ANY(\(stateCodes)::smallint[]))
              AND (created_at, id) < (\(afterTime), \(afterID))
            ORDER BY created_at DESC, id DESC LIMIT \(pageSize + 1)
            """,
            logger: logger)
        var deployments: [Orrery_Orchestrator_V1_Deployment] = []
        for try await record in rows.decode(Data.self) {
            deployments.append(try Orrery_Orchestrator_V1_Deployment(serializedBytes: record))
        }
        return deployments
    }

    /// Deployments waiting in `state`, oldest first.
    func waiting(in state: Orrery_Orchestrator_V1_DeploymentState, limit: Int) async throws -> [String] {
        let rows = try await client.query(
            "SELECT id FROM deployments WHERE state = \(Int16(state.rawValue)) ORDER BY created_at LIMIT \(limit)",
            logger: logger)
        var ids: [String] = []
        for try await id in rows.decode(String.self) { ids.append(id) }
        return ids
    }

    /// Deployments in `state` by id, after `after` (a page of a full pass), at most `limit`.
    func page(in state: Orrery_Orchestrator_V1_DeploymentState, after: String, limit: Int) async throws -> [String] {
        let rows = try await client.query(
            """
            SELECT id FROM deployments WHERE state = \(Int16(state.rawValue)) AND id > \(after) ORDER BY id
            LIMIT \(limit)
            """, logger: logger)
        var ids: [String] = []
        for try await id in rows.decode(String.self) { ids.append(id) }
        return ids
    }

    /// What in-progress deployments hold on each device.
    func reservations() async throws -> [String: Reservation] {
        let rows = try await client.query(
            """
            SELECT device_did, sum(cpu_cores)::bigint, sum(ram_mib)::bigint, sum(disk_mib)::bigint, sum(gpus)::bigint
            FROM assignments WHERE active GROUP BY device_did
            """,
            logger: logger)
        var reserved: [String: Reservation] = [:]
        for try await (device, cores, ram, disk, gpus) in rows.decode((String, Int64, Int64, Int64, Int64).self) {
            reserved[device] = Reservation(cores: Int(cores), ramMiB: Int(ram), diskMiB: Int(disk), gpus: Int(gpus))
        }
        return reserved
    }

    /// One deployment's events after a revision, oldest first.
    func events(of id: String, after revision: Int64) async throws -> [Orrery_Orchestrator_V1_DeploymentEvent] {
        let rows = try await client.query(
            """
            SELECT record FROM deployment_events WHERE deployment_id = \(id) AND revision > \(revision)
            ORDER BY revision
            """,
            logger: logger)
        var events: [Orrery_Orchestrator_V1_DeploymentEvent] = []
        for try await record in rows.decode(Data.self) {
            events.append(try Orrery_Orchestrator_V1_DeploymentEvent(serializedBytes: record))
        }
        return events
    }

    /// Every deployment's events after a revision, for the change feed.
    static func fetchEvents(client: PostgresClient, after: Int64, limit: Int, logger: Logger) async throws -> [(
        revision: Int64, change: Orrery_Orchestrator_V1_DeploymentEvent
    )] {
        let rows = try await client.query(
            "SELECT revision, record FROM deployment_events WHERE revision > \(after) ORDER BY revision LIMIT \(limit)",
            logger: logger)
        var events: [(revision: Int64, change: Orrery_Orchestrator_V1_DeploymentEvent)] = []
        for try await (revision, record) in rows.decode((Int64, Data).self) {
            events.append((revision, try Orrery_Orchestrator_V1_DeploymentEvent(serializedBytes: record)))
        }
        return events
    }
}
