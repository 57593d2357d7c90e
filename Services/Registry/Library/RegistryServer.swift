internal import OrreryDatabase
public import OrreryRuntime

/// The `registry` service as the shared runtime starts it.
public enum RegistryServer {
    public static let description = ServiceDescription(
        name: "registry",
        defaultGRPCPort: 7402,
        defaultHTTPPort: 9402,
        schema: (name: "registry", migrations: RegistryMigrations.all)
    )

    /// The service with its gRPC handlers and its workers: judging liveness, following device changes.
    public static func service(_ settings: RegistrySettings) -> OrreryService {
        OrreryService(description: description) { environment in
            guard let database = environment.database else { return ServiceParts(rpcServices: []) }
            let components = RegistryComponents.make(environment, settings: settings, database: database)
            return ServiceParts(
                rpcServices: [
                    RegistryRPCService(environment: environment, database: database, components: components)
                ],
                workers: [
                    BackgroundWorker("liveness") { await components.liveness.run(from: environment.serving) },
                    BackgroundWorker("device change feed") { await components.changes.follow() },
                ])
        }
    }
}
