public import GRPCCore
public import OrreryProto
public import OrreryRuntime

/// `orrery.notary.v1.Notary`: Info, until its issue brings the rest of the API.
public struct NotaryRPCService: Orrery_Notary_V1_Notary.SimpleServiceProtocol {
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
