internal import Hummingbird
internal import GRPCCore
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntime

/// The orchestrator's methods as JSON over HTTP (`curl -X POST …/orrery.orchestrator.v1.Orchestrator/<Method>`).
enum OrchestratorHTTPGateway {
    static let service = "orrery.orchestrator.v1.Orchestrator"

    static func register(api: OrchestratorAPI, gateway: JSONGateway, on router: Router<OrreryRequestContext>) {
        gateway.unary(router, method: "\(service)/SubmitWorkload", Orrery_Orchestrator_V1_SubmitWorkloadRequest.self) {
            try await api.submit($0, consumer: try caller())
        }
        gateway.unary(router, method: "\(service)/GetDeployment", Orrery_Orchestrator_V1_GetDeploymentRequest.self) {
            try await api.status($0.id, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/ListDeployments", Orrery_Orchestrator_V1_ListDeploymentsRequest.self
        ) {
            try await api.list($0, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/CancelDeployment", Orrery_Orchestrator_V1_CancelDeploymentRequest.self
        ) {
            try await api.cancel($0, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/ExplainPlacement", Orrery_Orchestrator_V1_ExplainPlacementRequest.self
        ) {
            try await api.explain($0)
        }
        gateway.unary(
            router, method: "\(service)/Checkpoint", Orrery_Orchestrator_V1_CheckpointDeploymentRequest.self
        ) {
            try await api.checkpoint($0, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/MoveAllocation", Orrery_Orchestrator_V1_MoveAllocationRequest.self
        ) {
            try await api.move($0, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/RenewDeploymentSecrets",
            Orrery_Orchestrator_V1_RenewDeploymentSecretsRequest.self
        ) {
            try await api.renewSecrets($0, caller: try caller())
        }
        gateway.unary(router, method: "\(service)/ListActors", Orrery_Orchestrator_V1_ListActorsRequest.self) {
            try await api.actors($0, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/GrantActorAccess", Orrery_Orchestrator_V1_GrantActorAccessRequest.self
        ) {
            try await api.grantActorAccess($0, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/GrantNetworkAccess", Orrery_Orchestrator_V1_GrantNetworkAccessRequest.self
        ) {
            try await api.grantNetworkAccess($0, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/ListSettlementIncidents",
            Orrery_Orchestrator_V1_ListSettlementIncidentsRequest.self
        ) {
            try await api.settlementIncidents($0, caller: try caller())
        }
        gateway.unary(
            router, method: "\(service)/ResolveSettlementIncident",
            Orrery_Orchestrator_V1_ResolveSettlementIncidentRequest.self
        ) {
            try await api.resolveSettlementIncident($0, caller: try caller())
        }
        gateway.unary(router, method: "\(service)/GetOutputs", Orrery_Orchestrator_V1_GetOutputsRequest.self) {
            try await api.outputs($0, caller: try caller())
        }
        gateway.serverStreaming(
            router, method: "\(service)/ReadOutput", Orrery_Orchestrator_V1_ReadOutputRequest.self
        ) { (request, send: (Orrery_Orchestrator_V1_OutputChunk) async throws -> Void) in
            try await api.readOutput(request, caller: try caller(), send)
        }
        gateway.serverStreaming(
            router, method: "\(service)/StreamLogs", Orrery_Orchestrator_V1_StreamLogsRequest.self
        ) { (request, send: (Orrery_Orchestrator_V1_LogLine) async throws -> Void) in
            try await api.streamLogs(request, caller: try caller(), deliver: send)
        }
        gateway.serverStreaming(
            router, method: "\(service)/WatchDeployment", Orrery_Orchestrator_V1_WatchDeploymentRequest.self
        ) { (request, send: (Orrery_Orchestrator_V1_DeploymentEvent) async throws -> Void) in
            try await api.watch(request, caller: try caller(), deliver: send)
        }
    }

    private static func caller() throws -> String {
        let authorization = try Authorization.required()
        return authorization.invoker.string
    }
}
