internal import Logging
internal import OrreryDatabase
public import OrreryRuntime
internal import PostgresNIO
internal import Synchronization

/// The `contract-notary` service as the shared runtime starts it.
public enum NotaryServer {
    public static let description = ServiceDescription(
        name: "contract-notary",
        defaultGRPCPort: 7404,
        defaultHTTPPort: 9404,
        schema: (name: "notary", migrations: NotaryMigrations.all)
    )

    /// The service with its gRPC handlers and the log's sequencer.
    public static var service: OrreryService {
        OrreryService(
            description: description,
            workers: { environment in
                guard let database = environment.database else { return [] }
                let sequencer = NotaryComponents.shared(environment, database: database).sequencer
                var tasks = [
                    BackgroundWorker("log sequencer") {
                        await withTaskCancellationHandler {
                            await sequencer.run()
                        } onCancel: {
                            sequencer.finish()
                        }
                    }
                ]
                if let registry = environment.settings.registryAddress.flatMap(ServiceAddress.init) {
                    let checker = AvailabilityChecker(
                        registry: registry, environment: environment, client: database, sequencer: sequencer)
                    tasks.append(BackgroundWorker("availability checker") { await checker.run() })
                } else {
                    environment.logger.warning(
                        "registry.address is not set: contracts' availability terms are not checked")
                }
                return tasks
            },
            makeRPCServices: { environment in
                guard let database = environment.database else { return [] }
                return [
                    NotaryRPCService(
                        environment: environment, api: NotaryComponents.shared(environment, database: database).api)
                ]
            }
        )
    }
}

/// The notary's per-process parts, shared by its handlers and its sequencer.
struct NotaryComponents: Sendable {
    let sequencer: LogSequencer
    let api: NotaryAPI

    private static let current = Mutex<NotaryComponents?>(nil)

    static func shared(_ environment: ServiceEnvironment, database: PostgresClient) -> NotaryComponents {
        current.withLock { current in
            if let current { return current }
            let sequencer = LogSequencer(client: database, key: environment.key, logger: environment.logger)
            let made = NotaryComponents(
                sequencer: sequencer,
                api: NotaryAPI(
                    client: database, sequencer: sequencer,
                    store: LogStore(client: database, logger: environment.logger), key: environment.key,
                    revocations: environment.revocations, settlementDID: environment.settings.settlementDID,
                    operatorDID: environment.operatorDID,
                    logger: environment.logger))
            current = made
            return made
        }
    }
}
