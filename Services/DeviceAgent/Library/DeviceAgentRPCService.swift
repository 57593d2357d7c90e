public import GRPCCore
public import OrreryProto
public import OrreryRuntime

/// `orrery.agent.v1.DeviceAgent`: Info, until its issue brings the rest of the API.
public struct DeviceAgentRPCService: Orrery_Agent_V1_DeviceAgent.SimpleServiceProtocol {
    private let environment: ServiceEnvironment

    public init(environment: ServiceEnvironment) {
        self.environment = environment
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
        -> Orrery_Common_V1_InfoResponse
    {
        environment.info.response()
    }
}
