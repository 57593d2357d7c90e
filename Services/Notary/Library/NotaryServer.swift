public import OrreryRuntime

/// The `contract-notary` service as the shared runtime starts it.
public enum NotaryServer {
    public static let description = ServiceDescription(
        name: "contract-notary",
        defaultGRPCPort: 7404,
        defaultHTTPPort: 9404,
        schema: (name: "notary", migrations: NotaryMigrations.all)
    )

    /// The service with its gRPC handlers.
    public static var service: OrreryService {
        OrreryService(description: description) { environment in
            [NotaryRPCService(environment: environment)]
        }
    }
}
