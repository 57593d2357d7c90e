internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryProto
internal import OrreryDatabase
internal import PostgresNIO
internal import SwiftProtobuf

/// The registry's devices in PostgreSQL. Every change is appended to `device_changes` in the same transaction,
/// under one advisory lock, so revisions commit in order and a watch resumed after revision N misses nothing.
struct DeviceStore: Sendable {
    static let changeLogLock: Int64 = 0x6F72_7265_7279_0001  // "orrery" 1

    let client: PostgresClient
    let logger: Logger

    static let columns = """
        did, owner_did, status, capabilities, joined_at, last_heartbeat_at, revision,
        completed_allocations, failed_allocations, relocated_away,
        free_cpu_millicores::bigint, free_ram_bytes::bigint, free_disk_bytes::bigint, free_gpus::bigint
        """

    typealias Row = (
        String, String, String, Data, Date, Date, Int64, Int64, Int64, Int64, Int64?, Int64?, Int64?, Int64?
    )

    static func device(_ row: Row) throws -> Orrery_Registry_V1_Device {
        var device = Orrery_Registry_V1_Device()
        device.did = row.0
        device.ownerDid = row.1
        device.status = status(row.2)
        device.capabilities = try Orrery_Registry_V1_DeviceCapabilities(serializedBytes: row.3)
        device.joinedAt = Google_Protobuf_Timestamp(date: row.4)
        device.lastHeartbeatAt = Google_Protobuf_Timestamp(date: row.5)
        device.revision = row.6
        device.reputation.completedAllocations = UInt64(max(0, row.7))
        device.reputation.failedAllocations = UInt64(max(0, row.8))
        device.reputation.relocatedAway = UInt64(max(0, row.9))
        if let cpu = row.10, let ram = row.11, let disk = row.12, let gpus = row.13 {
            device.free = .with {
                $0.cpuMillicores = UInt32(clamping: max(0, cpu))
                $0.ramBytes = UInt64(max(0, ram))
                $0.diskBytes = UInt64(max(0, disk))
                $0.gpus = UInt32(clamping: max(0, gpus))
            }
        }
        return device
    }

    static func status(_ text: String) -> Orrery_Registry_V1_DeviceStatus {
        switch text {
        case "online": return .online
        case "suspect": return .suspect
        case "offline": return .offline
        case "left": return .left
        default: return .unspecified
        }
    }

    func device(_ did: String) async throws -> Orrery_Registry_V1_Device? {
        let rows = try await client.query(
            PostgresQuery(unsafeSQL: "SELECT \(Self.columns) FROM devices WHERE did = $1", binds: Self.binds([did])),
            logger: logger)
        for try await row in rows.decode(Row.self) { return try Self.device(row) }
        return nil
    }

    /// The result of an earlier join with `idempotencyKey`: the device it joined and the response it got.
    func earlierJoin(_ idempotencyKey: String) async throws -> (
        did: String, response: Orrery_Registry_V1_CompleteJoinResponse
    )? {
        let rows = try await client.query(
            "SELECT device_did, response FROM join_results WHERE idempotency_key = \(idempotencyKey)", logger: logger)
        for try await (did, response) in rows.decode((String, Data).self) {
            return (did, try Orrery_Registry_V1_CompleteJoinResponse(serializedBytes: response))
        }
        return nil
    }

    /// Joins a device, or updates it when it joined before (re-join): online, with its new capabilities. In one
    /// transaction: consumes the join challenge `nonce`, writes the device and its change record, and keeps the
    /// response under `idempotencyKey`.
    /// - Throws: `RPCError(.permissionDenied)` for an unknown, used or expired challenge.
    func join(
        did: String,
        owner: String,
        capabilities: Orrery_Registry_V1_DeviceCapabilities,
        nonce: Data,
        idempotencyKey: String
    ) async throws -> Orrery_Registry_V1_Device {
        let record = Data(try capabilities.serializedBytes() as [UInt8])
        let gpu = capabilities.gpus.first
        let labels = String(
            decoding: try JSONSerialization.data(withJSONObject: capabilities.labels, options: [.sortedKeys]),
            as: UTF8.self)
        let location = capabilities.location
        let prices = capabilities.prices
        return try await client.transaction(logger: logger) { connection in
            let challenges = try await connection.query(
                "DELETE FROM join_challenges WHERE nonce = \(nonce) AND device_did = \(did) RETURNING expires_at > now()",
                logger: logger)
            var fresh: Bool?
            for try await value in challenges.decode(Bool.self) { fresh = value }
            guard let fresh else {
                throw RPCError(
                    code: .permissionDenied, message: "challenge: unknown or already used; begin the join again")
            }
            guard fresh else {
                throw RPCError(code: .permissionDenied, message: "challenge: expired; begin the join again")
            }
            // The change-log lock is taken by the same statement that writes the device (held to the commit, every
            // round trip under it holds back every other change): the CTE's row is read before the insert's.
            let rows = try await connection.query(
                """
                WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(\(Self.changeLogLock)))
                INSERT INTO devices (
                    did, owner_did, status, architecture, cpu_cores, cpu_mhz, ram_bytes, disk_bytes, gpu_model, gpu_count,
                    gpu_vram_bytes, country, region, latitude, longitude, price_core_hour, price_gb_ram_hour,
                    price_gpu_hour, price_minimum, labels, capabilities, joined_at, last_heartbeat_at, revision)
                SELECT
                    \(did), \(owner), 'online', \(capabilities.architecture), \(Int(capabilities.cpuCores)),
                    \(Int(capabilities.cpuMhz)), \(Int64(capabilities.ramBytes)), \(Int64(capabilities.diskBytes)),
                    \(gpu?.model), \(capabilities.gpus.count), \(Int64(gpu?.vramBytes ?? 0)),
                    \(location.country.isEmpty ? nil : location.country), \(location.region.isEmpty ? nil : location.region),
                    \(location.latitude), \(location.longitude), \(Int64(prices.perCoreHour)), \(Int64(prices.perGbRamHour)),
                    \(Int64(prices.perGpuHour)), \(Int64(prices.minimumPerJob)), \(labels)::jsonb, \(record), now(), now(), 0
                FROM locked
                ON CONFLICT (did) DO UPDATE SET
                    owner_did = EXCLUDED.owner_did, status = 'online', architecture = EXCLUDED.architecture,
                    cpu_cores = EXCLUDED.cpu_cores, cpu_mhz = EXCLUDED.cpu_mhz, ram_bytes = EXCLUDED.ram_bytes,
                    disk_bytes = EXCLUDED.disk_bytes, gpu_model = EXCLUDED.gpu_model, gpu_count = EXCLUDED.gpu_count,
                    gpu_vram_bytes = EXCLUDED.gpu_vram_bytes, country = EXCLUDED.country, region = EXCLUDED.region,
                    latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
                    price_core_hour = EXCLUDED.price_core_hour, price_gb_ram_hour = EXCLUDED.price_gb_ram_hour,
                    price_gpu_hour = EXCLUDED.price_gpu_hour, price_minimum = EXCLUDED.price_minimum,
                    labels = EXCLUDED.labels, capabilities = EXCLUDED.capabilities, last_heartbeat_at = now()
                RETURNING (xmax = 0)
                """,
                logger: logger)
            var inserted = true
            for try await isNew in rows.decode(Bool.self) { inserted = isNew }
            let device = try await Self.recordChange(
                did: did, kind: inserted ? .joined : .updated, connection: connection, logger: logger)
            var response = Orrery_Registry_V1_CompleteJoinResponse()
            response.device = device
            try await connection.query(
                """
                INSERT INTO join_results (idempotency_key, device_did, response)
                VALUES (\(idempotencyKey), \(did), \(Data(try response.serializedBytes() as [UInt8])))
                """,
                logger: logger)
            return device
        }
    }

    /// Counts an outcome on a device's reputation once per idempotency key, as a change of the device; nil when
    /// the device is unknown.
    func recordOutcome(
        did: String, outcome: Orrery_Registry_V1_RecordOutcomeRequest.Outcome, idempotencyKey: String
    ) async throws -> Orrery_Registry_V1_Device? {
        try await client.transaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.changeLogLock))", logger: logger)
            let fresh = try await connection.query(
                """
                INSERT INTO recorded_outcomes (idempotency_key, device_did, outcome)
                SELECT \(idempotencyKey), did, \(Int16(outcome.rawValue)) FROM devices WHERE did = \(did)
                ON CONFLICT DO NOTHING RETURNING device_did
                """,
                logger: logger)
            var counted = false
            for try await _ in fresh.decode(String.self) { counted = true }
            guard counted else {
                // Unknown device, or a retry: nothing changes.
                let rows = try await connection.query(
                    PostgresQuery(
                        unsafeSQL: "SELECT \(Self.columns) FROM devices WHERE did = $1", binds: Self.binds([did])),
                    logger: logger)
                for try await row in rows.decode(Row.self) { return try Self.device(row) }
                return nil
            }
            let column: String
            switch outcome {
            case .completed: column = "completed_allocations"
            case .failed: column = "failed_allocations"
            default: column = "relocated_away"
            }
            try await connection.query(
                PostgresQuery(
                    unsafeSQL: "UPDATE devices SET \(column) = \(column) + 1 WHERE did = $1", binds: Self.binds([did])),
                logger: logger)
            return try await Self.recordChange(did: did, kind: .updated, connection: connection, logger: logger)
        }
    }

    /// Marks a device as having left; nil when it is unknown.
    func leave(did: String) async throws -> Orrery_Registry_V1_Device? {
        try await client.transaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.changeLogLock))", logger: logger)
            let rows = try await connection.query(
                "UPDATE devices SET status = 'left' WHERE did = \(did) AND status <> 'left' RETURNING did",
                logger: logger)
            var changed = false
            for try await _ in rows.decode(String.self) { changed = true }
            guard changed else { return nil }
            return try await Self.recordChange(did: did, kind: .left, connection: connection, logger: logger)
        }
    }

    /// Appends the device's current state to the change log and stamps the device with that revision.
    /// Must run in a transaction holding `changeLogLock`.
    static func recordChange(
        did: String,
        kind: Orrery_Registry_V1_DeviceChange.Kind,
        connection: PostgresConnection,
        logger: Logger
    ) async throws -> Orrery_Registry_V1_Device {
        // The revision drawn, stamped and the device read back in one statement: the change-log lock is held
        // from here to the commit, and every round trip under it holds back every other change.
        let rows = try await connection.query(
            PostgresQuery(
                unsafeSQL: """
                    UPDATE devices SET revision = nextval(pg_get_serial_sequence('device_changes', 'revision'))
                    WHERE did = $1 RETURNING \(columns)
                    """, binds: binds([did])),
            logger: logger)
        var device: Orrery_Registry_V1_Device?
        for try await row in rows.decode(Row.self) { device = try Self.device(row) }
        guard let device else {
            throw RPCError(code: .internalError, message: "device \(did) vanished while its change was recorded")
        }
        let revision = device.revision
        var change = Orrery_Registry_V1_DeviceChange()
        change.revision = revision
        change.kind = kind
        change.device = device
        try await connection.query(
            """
            INSERT INTO device_changes (revision, device_did, kind, record)
            VALUES (\(revision), \(did), \(kind.rawValue), \(Data(try change.serializedBytes() as [UInt8])))
            """,
            logger: logger)
        return device
    }

    static func binds(_ values: [String]) -> PostgresBindings {
        var bindings = PostgresBindings()
        for value in values { bindings.append(value) }
        return bindings
    }
}
