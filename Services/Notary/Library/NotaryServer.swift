internal import Logging
internal import OrreryDatabase
public import OrreryRuntime

/// The `contract-notary` service as the shared runtime starts it.
public enum NotaryServer {
    public static let description = ServiceDescription(
        name: "contract-notary",
        defaultGRPCPort: 7404,
        defaultHTTPPort: 9404,
        schema: (name: "notary", migrations: NotaryMigrations.all)
    )

    /// The service with its gRPC handlers, the log's sequencer and, with a registry, the availability checker.
    public static func service(_ settings: NotarySettings) -> OrreryService {
        OrreryService(description: description) { environment in
            guard let database = environment.database else { return ServiceParts(rpcServices: []) }
            let sequencer = LogSequencer(client: database, key: environment.key, logger: environment.logger)
            let api = NotaryAPI(
                client: database, sequencer: sequencer,
                store: LogStore(client: database, logger: environment.logger), key: environment.key,
                revocations: environment.revocations, settlementDID: settings.settlementDID,
                operatorDID: environment.operatorDID, logger: environment.logger)
            var workers = [
                BackgroundWorker("log sequencer") {
                    await withTaskCancellationHandler {
                        await sequencer.run()
                    } onCancel: {
                        sequencer.finish()
                    }
                }
            ]
            let logger = environment.logger
            workers.append(
                BackgroundWorker("indexing the SLA breaches logged before their index", once: true) {
                    await PeriodicWork(
                        "indexing earlier SLA breaches", untilDoneRetryingAfter: .seconds(2), logger: logger
                    ) {
                        try await BreachIndex.backfill(client: database, logger: logger)
                    }.run()
                })
            if let registry = settings.registryAddress.flatMap(ServiceAddress.init) {
                let checker = AvailabilityChecker(
                    registry: registry, environment: environment, client: database, sequencer: sequencer)
                workers.append(BackgroundWorker("availability checker") { await checker.run() })
            } else {
                environment.logger.warning("registry.address is not set: contracts' availability terms are not checked")
            }
            return ServiceParts(rpcServices: [NotaryRPCService(environment: environment, api: api)], workers: workers)
        }
    }
}
