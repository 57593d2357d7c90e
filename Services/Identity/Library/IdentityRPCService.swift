public import GRPCCore
public import OrreryProto
public import OrreryRuntime

/// `orrery.identity.v1.Identity`. Info is served; the identity issue (#3) brings the rest.
public struct IdentityRPCService: Orrery_Identity_V1_Identity.SimpleServiceProtocol {
    private let environment: ServiceEnvironment

    public init(environment: ServiceEnvironment) {
        self.environment = environment
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws -> Orrery_Common_V1_InfoResponse {
        environment.info.response()
    }

    public func resolveDid(request: Orrery_Identity_V1_ResolveDidRequest, context: ServerContext) async throws -> Orrery_Identity_V1_ResolveDidResponse {
        throw RPCError.notYetImplemented("Identity.ResolveDid", issue: 3)
    }

    public func revoke(request: Orrery_Identity_V1_RevokeRequest, context: ServerContext) async throws -> Orrery_Identity_V1_RevokeResponse {
        throw RPCError.notYetImplemented("Identity.Revoke", issue: 3)
    }

    public func listRevocations(request: Orrery_Identity_V1_ListRevocationsRequest, context: ServerContext) async throws -> Orrery_Identity_V1_ListRevocationsResponse {
        throw RPCError.notYetImplemented("Identity.ListRevocations", issue: 3)
    }

    public func watchRevocations(
        request: Orrery_Identity_V1_WatchRevocationsRequest,
        response: RPCWriter<Orrery_Identity_V1_Revocation>,
        context: ServerContext
    ) async throws {
        throw RPCError.notYetImplemented("Identity.WatchRevocations", issue: 3)
    }
}
