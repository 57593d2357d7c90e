internal import Logging
internal import OrreryDatabase
internal import OrreryProto
public import OrreryRuntime

/// The `orchestrator` service as the shared runtime starts it.
public enum OrchestratorServer {
    public static let description = ServiceDescription(
        name: "orchestrator",
        defaultGRPCPort: 7403,
        defaultHTTPPort: 9403,
        schema: (name: "orchestrator", migrations: OrchestratorMigrations.all)
    )

    /// The service with its gRPC handlers and its background work: following the registry, the deployment event
    /// log, and advancing deployments.
    public static var service: OrreryService {
        OrreryService(
            description: description,
            workers: { environment in
                guard let database = environment.database else { return [] }
                let components = OrchestratorComponents.shared(environment, database: database)
                var tasks = [
                    BackgroundWorker("deployment event feed") { await components.events.follow() },
                    BackgroundWorker("deployment driver") { await components.driver.run() },
                    BackgroundWorker("agent hub") { await components.hub.run() },
                    BackgroundWorker("actor router") { await components.router.run() },
                    BackgroundWorker("line relay") { await components.router.relay.run() },
                ]
                // A margin of 0 turns moving for a better price or RTT off: no worker then.
                if environment.settings.relocationMarginPercent > 0 {
                    tasks.append(BackgroundWorker("better placements") { await components.betterPlacements.run() })
                }
                if let address = environment.settings.registryAddress.flatMap(ServiceAddress.init) {
                    tasks.append(
                        BackgroundWorker("registry follower") {
                            var follower = RegistryFollower(
                                address: address, environment: environment, fleet: components.fleet,
                                outbox: ReputationOutbox(client: database, logger: environment.logger))
                            let (driver, placements) = (components.driver, components.betterPlacements)
                            follower.changed = { change in
                                guard change.hasDevice else { return }
                                switch change.device.status {
                                case .offline, .left: await driver.deviceLost(change.device.did)
                                case .online: placements.deviceAppeared()
                                default: break
                                }
                            }
                            await follower.run()
                        })
                } else {
                    environment.logger.warning("registry.address is not set: no devices, nothing can be placed")
                }
                if let settlement = components.settlement {
                    tasks += [
                        BackgroundWorker("settlement gateway link") { await settlement.gateway.run() },
                        BackgroundWorker("settlement clerk") { await settlement.run() },
                    ]
                } else {
                    environment.logger.warning(
                        "settlement.address (or notary.address) is not set: contracts are not escrowed or paid")
                }
                if let notary = components.notary {
                    tasks.append(BackgroundWorker("notary link") { await notary.run() })
                } else {
                    environment.logger.warning(
                        "notary.address is not set: no contract can be recorded, so no deployment passes contracted")
                }
                return tasks
            },
            httpRoutes: { environment, gateway, router in
                guard let database = environment.database else { return }
                let components = OrchestratorComponents.shared(environment, database: database)
                OrchestratorHTTPGateway.register(api: components.api, gateway: gateway, on: router)
            },
            makeRPCServices: { environment in
                guard let database = environment.database else { return [] }
                let components = OrchestratorComponents.shared(environment, database: database)
                return [OrchestratorRPCService(environment: environment, api: components.api), components.channel]
            }
        )
    }
}
