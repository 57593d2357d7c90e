public import GRPCCore
public import OrreryProto
public import OrreryRuntimeCore

/// `orrery.agent.v1.DeviceAgent` on the agent's loopback listener: Info.
public struct DeviceAgentRPCService: Orrery_Agent_V1_DeviceAgent.SimpleServiceProtocol {
    private let info: ServiceInfo

    public init(info: ServiceInfo) {
        self.info = info
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
        -> Orrery_Common_V1_InfoResponse
    {
        info.response()
    }
}
