public import GRPCCore
public import OrreryProto
public import OrreryRuntime

/// `orrery.registry.v1.Registry`. Info is served; the registry issue (#4) brings the rest.
public struct RegistryRPCService: Orrery_Registry_V1_Registry.SimpleServiceProtocol {
    private let environment: ServiceEnvironment

    public init(environment: ServiceEnvironment) {
        self.environment = environment
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
        -> Orrery_Common_V1_InfoResponse
    {
        environment.info.response()
    }

    public func beginJoin(request: Orrery_Registry_V1_BeginJoinRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_BeginJoinResponse
    {
        throw RPCError.notYetImplemented("Registry.BeginJoin", issue: 4)
    }

    public func completeJoin(request: Orrery_Registry_V1_CompleteJoinRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_CompleteJoinResponse
    {
        throw RPCError.notYetImplemented("Registry.CompleteJoin", issue: 4)
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
        throw RPCError.notYetImplemented("Registry.Leave", issue: 4)
    }

    public func getDevice(request: Orrery_Registry_V1_GetDeviceRequest, context: ServerContext) async throws
        -> Orrery_Registry_V1_Device
    {
        throw RPCError.notYetImplemented("Registry.GetDevice", issue: 4)
    }
}
