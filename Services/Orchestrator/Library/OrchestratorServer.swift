internal import Logging
internal import OrreryDatabase
internal import OrreryProto
internal import OrreryRuntimeCore
internal import PostgresNIO
public import OrreryRuntime

/// The `orchestrator` service as the shared runtime starts it.
public enum OrchestratorServer {
    public static let description = ServiceDescription(
        name: "orchestrator",
        defaultGRPCPort: 7403,
        defaultHTTPPort: 9403,
        schema: (name: "orchestrator", migrations: OrchestratorMigrations.all),
        // An agent's line carries a stream per tunnel into its sandboxes (up to 2,048 a device) besides the line.
        concurrentStreams: 4096
    )

    /// The service with its gRPC handlers, its JSON gateway and its background work: following the registry, the
    /// deployment event log, and advancing deployments.
    public static func service(_ settings: OrchestratorSettings) -> OrreryService {
        OrreryService(description: description) { environment in
            guard let database = environment.database else { return ServiceParts(rpcServices: []) }
            let components = OrchestratorComponents.make(environment, settings: settings, database: database)
            return ServiceParts(
                rpcServices: [
                    OrchestratorRPCService(
                        environment: environment, api: components.api, settings: settings,
                        portForwarding: components.portForwarding, execSessions: components.execSessions),
                    components.channel,
                ],
                workers: workers(environment, settings: settings, database: database, components: components),
                httpRoutes: { gateway, router in
                    OrchestratorHTTPGateway.register(api: components.api, gateway: gateway, on: router)
                })
        }
    }

    private static func workers(
        _ environment: ServiceEnvironment, settings: OrchestratorSettings, database: PostgresClient,
        components: OrchestratorComponents
    ) -> [BackgroundWorker] {
        var workers = [
            BackgroundWorker("deployment event feed") { await components.events.follow() },
            BackgroundWorker("deployment driver") { await components.driver.run() },
            BackgroundWorker("agent hub") { await components.hub.run() },
            BackgroundWorker("actor router") { await components.router.run() },
            BackgroundWorker("line relay") { await components.router.relay.run() },
            BackgroundWorker("output expiry") {
                await PeriodicWork("expiring stored outputs", every: .seconds(600), logger: environment.logger) {
                    try await components.contents.expire()
                }.run()
            },
        ]
        if let ingress = components.ingress {
            workers.append(
                BackgroundWorker("ingress") {
                    do {
                        try await ingress.run()
                    } catch {
                        environment.logger.critical("the ingress cannot listen", metadata: ["error": "\(error)"])
                    }
                })
        }
        // A margin of 0 turns moving for a better price or RTT off: no worker then.
        if settings.relocationMarginPercent > 0 {
            workers.append(BackgroundWorker("better placements") { await components.betterPlacements.run() })
        }
        if let address = settings.registryAddress.flatMap(ServiceAddress.init) {
            let (driver, placements) = (components.driver, components.betterPlacements)
            let follower = RegistryFollower(
                address: address, environment: environment, fleet: components.fleet,
                outbox: ReputationOutbox(client: database, logger: environment.logger),
                changed: { change in
                    guard change.hasDevice else { return }
                    switch change.device.status {
                    case .offline, .left: await driver.deviceLost(change.device.did)
                    case .online: placements.deviceAppeared()
                    default: break
                    }
                })
            workers.append(BackgroundWorker("registry follower") { await follower.run() })
        } else {
            environment.logger.warning("registry.address is not set: no devices, nothing can be placed")
        }
        if let settlement = components.settlement {
            workers += [
                BackgroundWorker("settlement gateway link") { await settlement.gateway.run() },
                BackgroundWorker("settlement clerk") { await settlement.run() },
            ]
        } else {
            environment.logger.warning(
                "settlement.address (or notary.address) is not set: contracts are not escrowed or paid")
        }
        if let notary = components.notary {
            workers.append(BackgroundWorker("notary link") { await notary.run() })
        } else {
            environment.logger.warning(
                "notary.address is not set: no contract can be recorded, so no deployment passes contracted")
        }
        return workers
    }
}
