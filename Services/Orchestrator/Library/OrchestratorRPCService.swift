public import GRPCCore
internal import OrreryAuth
internal import OrreryIdentity
public import OrreryProto
internal import OrreryRuntime
internal import SwiftProtobuf

/// `orrery.orchestrator.v1.Orchestrator` over gRPC: each method hands the authorised caller to `OrchestratorAPI`.
public struct OrchestratorRPCService: Orrery_Orchestrator_V1_Orchestrator.SimpleServiceProtocol {
    private let environment: ServiceEnvironment
    private let api: OrchestratorAPI
    /// The services this orchestrator calls, named in `Info` so that a client given only its address finds them.
    private let peers: [Orrery_Common_V1_ServiceEndpoint]
    private let portForwarding: PortForwarding
    private let execSessions: ExecSessions

    init(
        environment: ServiceEnvironment, api: OrchestratorAPI, settings: OrchestratorSettings,
        portForwarding: PortForwarding, execSessions: ExecSessions
    ) {
        self.environment = environment
        self.api = api
        self.portForwarding = portForwarding
        self.execSessions = execSessions
        self.peers = [
            ("registry", settings.registryAddress), ("contract-notary", settings.notaryAddress),
            ("settlement-gateway", settings.settlementAddress),
        ].compactMap { name, address in
            address.map { address in
                .with {
                    $0.name = name
                    $0.address = address
                }
            }
        }
    }

    /// The invoker of the validated capability.
    private func caller() throws -> String {
        let authorization = try Authorization.required()
        return authorization.invoker.string
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
        -> Orrery_Common_V1_InfoResponse
    {
        var info = environment.info.response()
        info.services = peers
        return info
    }

    public func submitWorkload(request: Orrery_Orchestrator_V1_SubmitWorkloadRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_Deployment
    {
        try await api.submit(request, consumer: try caller())
    }

    public func getDeployment(request: Orrery_Orchestrator_V1_GetDeploymentRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_Deployment
    {
        try await api.status(request.id, caller: try caller())
    }

    public func listDeployments(request: Orrery_Orchestrator_V1_ListDeploymentsRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_ListDeploymentsResponse
    {
        try await api.list(request, caller: try caller())
    }

    public func watchDeployment(
        request: Orrery_Orchestrator_V1_WatchDeploymentRequest,
        response: RPCWriter<Orrery_Orchestrator_V1_DeploymentEvent>,
        context: ServerContext
    ) async throws {
        try await api.watch(request, caller: try caller()) { event in try await response.write(event) }
    }

    public func listSettlementIncidents(
        request: Orrery_Orchestrator_V1_ListSettlementIncidentsRequest, context: ServerContext
    ) async throws -> Orrery_Orchestrator_V1_ListSettlementIncidentsResponse {
        try await api.settlementIncidents(request, caller: try caller())
    }

    public func resolveSettlementIncident(
        request: Orrery_Orchestrator_V1_ResolveSettlementIncidentRequest, context: ServerContext
    ) async throws -> Orrery_Orchestrator_V1_SettlementIncident {
        try await api.resolveSettlementIncident(request, caller: try caller())
    }

    public func cancelDeployment(request: Orrery_Orchestrator_V1_CancelDeploymentRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_Deployment
    {
        try await api.cancel(request, caller: try caller())
    }

    public func streamLogs(
        request: Orrery_Orchestrator_V1_StreamLogsRequest, response: RPCWriter<Orrery_Orchestrator_V1_LogLine>,
        context: ServerContext
    ) async throws {
        try await api.streamLogs(request, caller: try caller()) { line in try await response.write(line) }
    }

    public func getOutputs(request: Orrery_Orchestrator_V1_GetOutputsRequest, context: ServerContext) async throws
        -> Orrery_Orchestrator_V1_GetOutputsResponse
    {
        try await api.outputs(request, caller: try caller())
    }

    public func readOutput(
        request: Orrery_Orchestrator_V1_ReadOutputRequest, response: RPCWriter<Orrery_Orchestrator_V1_OutputChunk>,
        context: ServerContext
    ) async throws {
        try await api.readOutput(request, caller: try caller()) { chunk in try await response.write(chunk) }
    }

    public func explainPlacement(request: Orrery_Orchestrator_V1_ExplainPlacementRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_PlacementExplanation
    {
        try await api.explain(request)
    }

    public func checkpoint(request: Orrery_Orchestrator_V1_CheckpointDeploymentRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_CheckpointDeploymentResponse
    {
        try await api.checkpoint(request, caller: try caller())
    }

    public func moveAllocation(request: Orrery_Orchestrator_V1_MoveAllocationRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_Deployment
    {
        try await api.move(request, caller: try caller())
    }

    public func listActors(request: Orrery_Orchestrator_V1_ListActorsRequest, context: ServerContext) async throws
        -> Orrery_Orchestrator_V1_ListActorsResponse
    {
        try await api.actors(request, caller: try caller())
    }

    public func grantActorAccess(request: Orrery_Orchestrator_V1_GrantActorAccessRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_GrantActorAccessResponse
    {
        try await api.grantActorAccess(request, caller: try caller())
    }

    public func grantNetworkAccess(request: Orrery_Orchestrator_V1_GrantNetworkAccessRequest, context: ServerContext)
        async throws -> Orrery_Orchestrator_V1_GrantNetworkAccessResponse
    {
        try await api.grantNetworkAccess(request, caller: try caller())
    }

    public func renewDeploymentSecrets(
        request: Orrery_Orchestrator_V1_RenewDeploymentSecretsRequest, context: ServerContext
    ) async throws -> Orrery_Orchestrator_V1_RenewDeploymentSecretsResponse {
        try await api.renewSecrets(request, caller: try caller())
    }

    public func portForward(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_PortForwardRequest, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_PortForwardResponse>,
        context: ServerContext
    ) async throws {
        let caller = try caller()
        try await ConnectionLoops.onCallLoop(of: context) {
            try await portForwarding.forward(request: request, response: response, caller: caller)
        }
    }

    public func exec(
        request: RPCAsyncSequence<Orrery_Orchestrator_V1_ExecRequest, any Error>,
        response: RPCWriter<Orrery_Orchestrator_V1_ExecResponse>,
        context: ServerContext
    ) async throws {
        try await execSessions.run(request: request, response: response)
    }
}
