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

    /// The service with its gRPC handlers.
    public static var service: OrreryService {
        OrreryService(
            description: description,
            workers: { environment in
                guard let database = environment.database else { return [] }
                let components = RegistryComponents.shared(environment, database: database)
                return [
                    BackgroundWorker("liveness") { await components.liveness.run(from: environment.serving) },
                    BackgroundWorker("device change feed") { await components.changes.follow() },
                ]
            },
            makeRPCServices: { environment in
                guard let database = environment.database else { return [] }
                return [RegistryRPCService(environment: environment, database: database)]
            }
        )
    }
}
