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
            backgroundTasks: { environment in
                guard let database = environment.database else { return [] }
                let components = OrchestratorComponents.shared(environment, database: database)
                var tasks: [@Sendable () async throws -> Void] = [
                    { await components.events.follow() },
                    { await components.driver.run() },
                    { await components.hub.run() },
                    { await components.router.run() },
                    { await components.router.relay.run() },
                    { await components.betterPlacements.run() },
                ]
                if let address = environment.settings.registryAddress.flatMap(ServiceAddress.init) {
                    tasks.append {
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
                    }
                } else {
                    environment.logger.warning("registry.address is not set: no devices, nothing can be placed")
                }
                if let settlement = components.settlement {
                    tasks += [{ await settlement.gateway.run() }, { await settlement.run() }]
                } else {
                    environment.logger.warning(
                        "settlement.address (or notary.address) is not set: contracts are not escrowed or paid")
                }
                if let notary = components.notary {
                    tasks.append { await notary.run() }
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
