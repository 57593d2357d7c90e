internal import OrreryIdentity
public import OrreryRuntime

/// The `identity` service as the shared runtime starts it.
public enum IdentityServer {
    public static let description = ServiceDescription(
        name: "identity",
        defaultGRPCPort: 7401,
        defaultHTTPPort: 9401,
        schema: (name: "identity", migrations: IdentityMigrations.all),
        keepsRevocationLog: true
    )

    /// The service with its gRPC handlers and the follower of its revocation log.
    public static var service: OrreryService {
        OrreryService(
            description: description,
            workers: { environment in
                guard let log = log(environment) else { return [] }
                return [BackgroundWorker("revocation log feed") { await log.follow() }]
            },
            makeRPCServices: { environment in
                guard let log = log(environment), let database = environment.database else { return [] }
                var issuer: DelegationIssuer?
                if let path = environment.settings.operatorKeyFile {
                    let operatorKey = try KeyFile.read(path)
                    guard operatorKey.did == environment.operatorDID else {
                        throw IdentityStartupError(
                            message:
                                "operator.key is the key of \(operatorKey.did), not of the trusted operator \(environment.operatorDID)"
                        )
                    }
                    issuer = DelegationIssuer(operatorKey: operatorKey, database: database, logger: environment.logger)
                }
                return [IdentityRPCService(environment: environment, log: log, issuer: issuer)]
            }
        )
    }

    /// One log per process, shared by the handlers and the follower.
    private static func log(_ environment: ServiceEnvironment) -> RevocationLog? {
        guard let database = environment.database else { return nil }
        return RevocationLogs.shared.log(database: database, book: environment.revocations, logger: environment.logger)
    }
}

/// A setting of the identity service that does not hold together.
struct IdentityStartupError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
