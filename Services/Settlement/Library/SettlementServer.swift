internal import OrreryIdentity
public import OrreryRuntime

/// The `settlement-gateway` service as the shared runtime starts it.
public enum SettlementServer {
    public static let description = ServiceDescription(
        name: "settlement-gateway",
        defaultGRPCPort: 7405,
        defaultHTTPPort: 9405,
        schema: (name: "settlement", migrations: SettlementMigrations.all)
    )

    /// The service with its gRPC handlers.
    public static var service: OrreryService {
        OrreryService(description: description) { environment in
            guard let database = environment.database else { return [] }
            return [
                SettlementRPCService(
                    environment: environment,
                    api: SettlementAPI(
                        ledger: LedgerStore(client: database, logger: environment.logger),
                        operatorDID: environment.operatorDID,
                        notaryDID: environment.settings.notaryDID.flatMap { try? DID($0) },
                        revocations: environment.revocations,
                        logger: environment.logger))
            ]
        }
    }
}
