public import OrreryRuntime

/// The `identity` service as the shared runtime starts it.
public enum IdentityServer {
    public static let description = ServiceDescription(
        name: "identity",
        defaultGRPCPort: 7401,
        defaultHTTPPort: 9401,
        schema: (name: "identity", migrations: IdentityMigrations.all)
    )

    /// The service with its gRPC handlers.
    public static var service: OrreryService {
        OrreryService(description: description) { environment in
            [IdentityRPCService(environment: environment)]
        }
    }
}
