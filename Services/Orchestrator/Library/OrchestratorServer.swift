public import OrreryRuntime

/// The `orchestrator` service as the shared runtime starts it.
public enum OrchestratorServer {
    public static let description = ServiceDescription(
        name: "orchestrator",
        defaultGRPCPort: 7403,
        defaultHTTPPort: 9403,
        schema: (name: "orchestrator", migrations: OrchestratorMigrations.all)
    )

    /// The service with its gRPC handlers.
    public static var service: OrreryService {
        OrreryService(description: description) { environment in
            [OrchestratorRPCService(environment: environment)]
        }
    }
}
