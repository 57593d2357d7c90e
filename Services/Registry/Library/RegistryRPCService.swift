internal import Foundation
public import GRPCCore
internal import OrreryAuth
internal import OrreryIdentity
public import OrreryProto
internal import OrreryRuntime
internal import OrreryDatabase
internal import PostgresNIO
internal import SwiftProtobuf

/// `orrery.registry.v1.Registry`: devices join with proof of key possession, stay live, and leave.
public struct RegistryRPCService: Orrery_Registry_V1_Registry.SimpleServiceProtocol {
    private let environment: ServiceEnvironment
    private let components: RegistryComponents
    private let joins: JoinFlow
    private let database: PostgresClient
    private var store: DeviceStore { components.store }

    init(environment: ServiceEnvironment, database: PostgresClient, components: RegistryComponents) {
        self.environment = environment
        self.database = database
        self.components = components
        self.joins = JoinFlow(registryKey: environment.key, client: database, logger: environment.logger)
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
        -> Orrery_Common_V1_InfoResponse
    {
        environment.info.response()
    }

    /// The device calling: the invoker of the validated capability.
    private func caller(claiming did: String) throws -> DID {
        let authorization = try Authorization.required()
        guard authorization.invoker.string == did else {
            throw RPCError(
                code: .permissionDenied,
                message:
                    "device_did \(did.isEmpty ? "(empty)" : did) is not the invoker \(authorization.invoker): a device acts for itself only"
            )
        }
        return authorization.invoker
    }

    public func beginJoin(request: Orrery_Registry_V1_BeginJoinRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_BeginJoinResponse
    {
        let device = try caller(claiming: request.deviceDid)
        var response = Orrery_Registry_V1_BeginJoinResponse()
        response.challenge = try await joins.begin(deviceDID: device)
        return response
    }

    public func completeJoin(request: Orrery_Registry_V1_CompleteJoinRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_CompleteJoinResponse
    {
        let authorization = try Authorization.required()
        let device = authorization.invoker
        guard !request.idempotencyKey.isEmpty, request.idempotencyKey.count <= 200 else {
            throw RPCError(code: .invalidArgument, message: "idempotency_key: required, at most 200 characters")
        }
        if let earlier = try await store.earlierJoin(request.idempotencyKey) {
            guard earlier.did == device.string else {
                throw RPCError(code: .alreadyExists, message: "idempotency_key was used by another device")
            }
            return earlier.response
        }
        guard request.hasChallenge else {
            throw RPCError(code: .invalidArgument, message: "challenge: required (from BeginJoin, countersigned)")
        }
        guard request.hasCapabilities else { throw RPCError(code: .invalidArgument, message: "capabilities: required") }
        if let violation = CapabilityLimits.violation(request.capabilities) {
            throw RPCError(code: .invalidArgument, message: violation)
        }
        let nonce = try joins.verify(request.challenge, deviceDID: device)
        // The owner is whoever delegated to the device; a device authorised straight by the operator is the operator's.
        let owner = authorization.validated.chain.last?.issuer ?? device
        let joined = try await store.join(
            did: device.string, owner: owner.string, capabilities: request.capabilities, nonce: nonce,
            idempotencyKey: request.idempotencyKey)
        environment.logger.info(
            "device joined", metadata: ["device": "\(device)", "owner": "\(owner)", "revision": "\(joined.revision)"])
        var response = Orrery_Registry_V1_CompleteJoinResponse()
        response.device = joined
        return response
    }

    /// One stream per device, authorised when it opens; each heartbeat is queued for the next batched write.
    public func heartbeats(
        request: RPCAsyncSequence<Orrery_Registry_V1_Heartbeat, any Error>,
        context: ServerContext
    ) async throws -> Orrery_Registry_V1_HeartbeatsSummary {
        let authorization = try Authorization.required()
        var accepted: UInt64 = 0
        var checked: Orrery_Registry_V1_Device?
        for try await heartbeat in request {
            guard heartbeat.deviceDid == authorization.invoker.string else {
                throw RPCError(
                    code: .permissionDenied,
                    message: "device_did \(heartbeat.deviceDid) is not the invoker \(authorization.invoker)")
            }
            if checked == nil {
                guard let device = try await store.device(heartbeat.deviceDid) else {
                    throw RPCError(code: .notFound, message: "device \(heartbeat.deviceDid) has not joined")
                }
                guard device.status != .left else {
                    throw RPCError(
                        code: .failedPrecondition, message: "device \(heartbeat.deviceDid) has left; join again first")
                }
                checked = device
            }
            if let device = checked {
                let capabilities = device.capabilities
                if heartbeat.freeCpuMillicores > capabilities.cpuCores * 1000
                    || heartbeat.freeRamBytes > capabilities.ramBytes
                    || heartbeat.freeDiskBytes > capabilities.diskBytes
                    || Int(heartbeat.freeGpus) > capabilities.gpus.count
                {
                    throw RPCError(
                        code: .invalidArgument, message: "heartbeat: more free resources than the device has")
                }
            }
            components.liveness.record(heartbeat)
            accepted += 1
        }
        var summary = Orrery_Registry_V1_HeartbeatsSummary()
        summary.accepted = accepted
        return summary
    }

    public func queryDevices(request: Orrery_Registry_V1_QueryDevicesRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_QueryDevicesResponse
    {
        let query = try DeviceQuery(request)
        let rows = try await database.query(
            PostgresQuery(unsafeSQL: query.sql, binds: query.binds), logger: environment.logger)
        var devices: [Orrery_Registry_V1_Device] = []
        for try await row in rows.decode(DeviceStore.Row.self) { devices.append(try DeviceStore.device(row)) }
        var response = Orrery_Registry_V1_QueryDevicesResponse()
        if devices.count > query.pageSize {
            devices.removeLast()
            response.nextPageToken = DeviceQuery.token(after: devices[devices.count - 1].did)
        }
        response.devices = devices
        return response
    }

    public func watchDevices(
        request: Orrery_Registry_V1_WatchDevicesRequest,
        response: RPCWriter<Orrery_Registry_V1_WatchDevicesResponse>,
        context: ServerContext
    ) async throws {
        guard request.afterRevision >= 0 else {
            throw RPCError(code: .invalidArgument, message: "after_revision must be ≥ 0")
        }
        var after = request.afterRevision
        if after == 0 {
            // A consistent snapshot: every device and the change-log revision it reflects, read together.
            let snapshot = try await database.transaction(logger: environment.logger) { connection in
                try await connection.query(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", logger: environment.logger)
                let heads = try await connection.query(
                    "SELECT coalesce(max(revision), 0) FROM device_changes", logger: environment.logger)
                var head: Int64 = 0
                for try await value in heads.decode(Int64.self) { head = value }
                let rows = try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT \(DeviceStore.columns) FROM devices ORDER BY did"),
                    logger: environment.logger)
                var devices: [Orrery_Registry_V1_Device] = []
                for try await row in rows.decode(DeviceStore.Row.self) { devices.append(try DeviceStore.device(row)) }
                return (head, devices)
            }
            for device in snapshot.1 {
                var change = Orrery_Registry_V1_DeviceChange()
                change.revision = device.revision
                change.kind = .snapshot
                change.device = device
                var event = Orrery_Registry_V1_WatchDevicesResponse()
                event.change = change
                try await response.write(event)
            }
            var complete = Orrery_Registry_V1_WatchDevicesResponse()
            complete.snapshotComplete = snapshot.0
            try await response.write(complete)
            after = snapshot.0
        }
        try await components.changes.watch(after: after) { _, change in
            var event = Orrery_Registry_V1_WatchDevicesResponse()
            event.change = change
            try await response.write(event)
        }
    }

    public func reportRtt(request: Orrery_Registry_V1_ReportRttRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_ReportRttResponse
    {
        let device = try caller(claiming: request.deviceDid)
        guard (1...64).contains(request.samples.count) else {
            throw RPCError(code: .invalidArgument, message: "samples: 1…64 per report")
        }
        for (index, sample) in request.samples.enumerated() {
            guard !sample.landmark.isEmpty, sample.landmark.count <= 256 else {
                throw RPCError(code: .invalidArgument, message: "samples[\(index)].landmark: 1…256 characters")
            }
            guard sample.rttMs.isFinite, sample.rttMs > 0, sample.rttMs < 60_000 else {
                throw RPCError(
                    code: .invalidArgument, message: "samples[\(index)].rtt_ms: a round trip between 0 and 60000 ms")
            }
        }
        guard try await store.device(device.string) != nil else {
            throw RPCError(code: .notFound, message: "device \(device) has not joined")
        }
        let landmarks = request.samples.map(\.landmark)
        let times = request.samples.map(\.rttMs)
        try await database.query(
            """
            INSERT INTO rtt_samples (device_did, landmark, rtt_ms)
            SELECT \(device.string), landmark, rtt FROM unnest(\(landmarks)::text[], \(times)::float8[]) AS s(landmark, rtt)
            ON CONFLICT (device_did, landmark) DO UPDATE SET rtt_ms = EXCLUDED.rtt_ms, measured_at = now()
            """,
            logger: environment.logger)
        var accepted = Orrery_Registry_V1_ReportRttResponse()
        accepted.accepted = UInt32(request.samples.count)
        return accepted
    }

    public func recordOutcome(request: Orrery_Registry_V1_RecordOutcomeRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_RecordOutcomeResponse
    {
        guard (try? DID(request.deviceDid)) != nil else {
            throw RPCError(code: .invalidArgument, message: "device_did: '\(request.deviceDid)' is not a did:key")
        }
        switch request.outcome {
        case .completed, .failed, .relocatedAway: break
        default: throw RPCError(code: .invalidArgument, message: "outcome: COMPLETED, FAILED or RELOCATED_AWAY")
        }
        try RetryKey.validate(request.idempotencyKey)
        guard
            let device = try await store.recordOutcome(
                did: request.deviceDid, outcome: request.outcome, idempotencyKey: request.idempotencyKey)
        else {
            throw RPCError(code: .notFound, message: "no device \(request.deviceDid)")
        }
        return .with { $0.reputation = device.reputation }
    }

    public func getAvailability(request: Orrery_Registry_V1_GetAvailabilityRequest, context: ServerContext)
        async throws -> Orrery_Registry_V1_Availability
    {
        try await AvailabilityHistory.compute(request, client: database, logger: environment.logger)
    }

    public func listRttSamples(request: Orrery_Registry_V1_ListRttSamplesRequest, context: ServerContext)
        async throws -> Orrery_Registry_V1_ListRttSamplesResponse
    {
        try await RttSampleListing(request).run(on: database, logger: environment.logger)
    }

    public func leave(request: Orrery_Registry_V1_LeaveRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_LeaveResponse
    {
        let device = try caller(claiming: request.deviceDid)
        if try await store.leave(did: device.string) == nil, try await store.device(device.string) == nil {
            throw RPCError(code: .notFound, message: "device \(device) has not joined")
        }
        environment.logger.info("device left", metadata: ["device": "\(device)"])
        return Orrery_Registry_V1_LeaveResponse()
    }

    public func getDevice(request: Orrery_Registry_V1_GetDeviceRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_Device
    {
        guard (try? DID(request.did)) != nil else {
            throw RPCError(code: .invalidArgument, message: "did: '\(request.did)' is not a did:key")
        }
        guard let device = try await store.device(request.did) else {
            throw RPCError(code: .notFound, message: "no device \(request.did)")
        }
        return device
    }
}
