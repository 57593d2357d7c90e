internal import Foundation
public import GRPCCore
internal import OrreryAuth
internal import OrreryIdentity
public import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO

/// `orrery.registry.v1.Registry`: devices join with proof of key possession, stay live, and leave.
public struct RegistryRPCService: Orrery_Registry_V1_Registry.SimpleServiceProtocol {
    private let environment: ServiceEnvironment
    private let store: DeviceStore
    private let joins: JoinFlow

    init(environment: ServiceEnvironment, database: PostgresClient) {
        self.environment = environment
        self.store = DeviceStore(client: database, logger: environment.logger)
        self.joins = JoinFlow(registryKey: environment.key, client: database, logger: environment.logger)
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
        -> Orrery_Common_V1_InfoResponse
    {
        environment.info.response()
    }

    /// The device calling: the invoker of the validated capability.
    private func caller(claiming did: String) throws -> DID {
        guard let authorization = Authorization.current else {
            throw RPCError(code: .unauthenticated, message: "no capability")
        }
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
        guard let authorization = Authorization.current else {
            throw RPCError(code: .unauthenticated, message: "no capability")
        }
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

    public func heartbeats(
        request: RPCAsyncSequence<Orrery_Registry_V1_Heartbeat, any Error>,
        context: ServerContext
    ) async throws -> Orrery_Registry_V1_HeartbeatsSummary {
        throw RPCError.notYetImplemented("Registry.Heartbeats", issue: 4)
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
