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
    public static func service(_ settings: IdentitySettings) -> OrreryService {
        OrreryService(description: description) { environment in
            guard let database = environment.database else { return ServiceParts(rpcServices: []) }
            let log = RevocationLog(client: database, book: environment.revocations, logger: environment.logger)
            var issuer: DelegationIssuer?
            if let path = settings.operatorKeyFile {
                let operatorKey = try KeyFile.read(path)
                guard operatorKey.did == environment.operatorDID else {
                    throw IdentityStartupError(
                        message:
                            "operator.key is the key of \(operatorKey.did), not of the trusted operator \(environment.operatorDID)"
                    )
                }
                issuer = DelegationIssuer(operatorKey: operatorKey, database: database, logger: environment.logger)
            }
            return ServiceParts(
                rpcServices: [IdentityRPCService(environment: environment, log: log, issuer: issuer)],
                workers: [BackgroundWorker("revocation log feed") { await log.follow() }])
        }
    }
}

/// A setting of the identity service that does not hold together.
struct IdentityStartupError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
