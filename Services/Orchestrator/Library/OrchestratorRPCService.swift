public import GRPCCore
public import OrreryProto
public import OrreryRuntime

/// `orrery.orchestrator.v1.Orchestrator`: Info, until its issue brings the rest of the API.
public struct OrchestratorRPCService: Orrery_Orchestrator_V1_Orchestrator.SimpleServiceProtocol {
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
