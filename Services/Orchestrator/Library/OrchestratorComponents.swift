internal import Foundation
internal import Logging
internal import OrreryDatabase
internal import OrreryHTTPClient
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryPlacement
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO

/// The orchestrator's parts, built once per process (in an order that needs no part set after construction) and
/// shared by its handlers and its background workers.
struct OrchestratorComponents: Sendable {
    let fleet: FleetView
    let api: OrchestratorAPI
    let events: ChangeFeed<Orrery_Orchestrator_V1_DeploymentEvent>
    let driver: DeploymentDriver
    let hub: AgentHub
    let channel: AgentChannelService
    /// Consumers' port-forwards through the devices' lines.
    let portForwarding: PortForwarding
    /// Consumers' commands run inside their sandboxes.
    let execSessions: ExecSessions
    /// The contract notary, when one is configured.
    let notary: NotaryLink?
    /// Escrow, releases and refunds through the settlement gateway, when one (and a notary) is configured.
    let settlement: SettlementClerk?
    let router: ActorRouter
    let checkpoints: CheckpointStore
    /// Outputs over 3 MiB without outputs_to.
    let contents: ContentStore
    /// Moves running stateful replicas to markedly cheaper devices.
    let betterPlacements: BetterPlacements
    /// HTTP to services' exposed ports, when the settings ask for an ingress.
    let ingress: IngressServer?

    /// The parts for this environment.
    static func make(
        _ environment: ServiceEnvironment, settings: OrchestratorSettings, database: PostgresClient
    ) -> OrchestratorComponents {
        let logger = environment.logger
        let fleet = FleetView()
        var store = DeploymentStore(client: database, logger: logger)
        let solver = PlacementSolver(timeLimit: .milliseconds(500))
        let offers = OfferStore(client: database, logger: logger)
        let checkpointReader = CheckpointReader(client: database, logger: logger, key: environment.key)
        let secrets = DeploymentSecrets(client: database, key: environment.key, logger: logger)
        let hub = AgentHub(offers: offers, checkpoints: checkpointReader, secrets: secrets, logger: logger)
        store.offersWithdrawn = { hub.tellWithdrawn($0) }
        let notary = settings.notaryAddress.flatMap(ServiceAddress.init).map {
            NotaryLink(address: $0, environment: environment)
        }
        let settlement: SettlementClerk? = notary.flatMap { notary in
            settings.settlementAddress.flatMap(ServiceAddress.init).map {
                SettlementClerk(
                    gateway: ServiceLink(address: $0, peer: "settlement gateway", environment: environment),
                    notary: notary, client: database, logger: logger)
            }
        }
        let driver = DeploymentDriver(
            store: store, offers: offers, fleet: fleet, solver: solver, logger: logger,
            orchestratorDID: environment.key.did.string, offerTimeout: settings.offerTimeout,
            clerk: ContractClerk(key: environment.key, notary: notary, fleet: fleet, logger: logger),
            settlement: settlement, kick: { try? await hub.deliver() })
        let events = ChangeFeed<Orrery_Orchestrator_V1_DeploymentEvent>(
            client: database, channel: "orrery_deployment_events", writersLock: DeploymentStore.eventWritersLock,
            logger: logger, key: { $0.deployment.id }
        ) { client, after, limit in
            try await DeploymentStore.fetchEvents(client: client, after: after, limit: limit, logger: logger)
        }
        let relay = LineRelay(client: database, hub: hub, logger: logger)
        let router = ActorRouter(client: database, logger: logger, key: environment.key, relay: relay, offers: offers)
        let contents = ContentStore(
            client: database, offers: offers, logger: logger, quotaPerConsumer: settings.outputStoreBytesPerConsumer,
            retention: settings.outputRetention)
        let checkpoints = CheckpointStore(
            client: database, logger: logger, key: environment.key, offers: offers, router: router, notary: notary,
            contents: contents)
        let mover = ActorMover(
            store: store, offers: offers, checkpoints: checkpointReader, router: router, driver: driver)
        let ingressAddress = settings.ingress.map(IngressAddress.init)
        let latency = LineLatency(client: database, logger: logger)
        let api = OrchestratorAPI(
            store: store, fleet: fleet, driver: driver, events: events, offers: offers, solver: solver,
            operatorDID: environment.operatorDID.string, mover: mover,
            images: ImageResolver(
                trust: settings.registryCA.map { .caFile($0) } ?? .system, addresses: settings.registryAddresses),
            secrets: secrets, contents: contents, ingress: ingressAddress, latency: latency)
        let tunnels = TunnelBroker()
        let execs = ExecBroker()
        let replicaRelay = ReplicaRelay(
            client: database, hub: hub, broker: tunnels, execs: execs, environment: environment,
            advertised: settings.advertiseAddress
        )
        return OrchestratorComponents(
            fleet: fleet,
            api: api,
            events: events, driver: driver, hub: hub,
            channel: AgentChannelService(
                hub: hub, offers: offers, advances: DeploymentAdvances(logger: logger) { try await driver.advance($0) },
                logger: logger, notary: notary,
                settles: settlement != nil, router: router, checkpoints: checkpoints, contents: contents,
                tunnels: tunnels, execs: execs, latency: latency,
                ensemble: EnsembleNetwork(
                    api: api, offers: offers,
                    tunnels: ReplicaTunnels(
                        broker: tunnels, hub: hub, offers: offers, relay: replicaRelay, logger: logger),
                    revocations: environment.revocations, logger: logger),
                relay: replicaRelay),
            portForwarding: PortForwarding(
                api: api, offers: offers, hub: hub, broker: tunnels, relay: replicaRelay, logger: logger),
            execSessions: ExecSessions(
                api: api, offers: offers, hub: hub, broker: execs, relay: replicaRelay, notary: notary,
                logger: logger),
            notary: notary, settlement: settlement, router: router, checkpoints: checkpoints, contents: contents,
            betterPlacements: BetterPlacements(
                store: store, driver: driver, mover: mover, logger: logger,
                marginPercent: settings.relocationMarginPercent),
            ingress: ingressAddress.map { address in
                ingressServer(
                    address, environment: environment, api: api,
                    tunnels: ReplicaTunnels(
                        broker: tunnels, hub: hub, offers: offers, relay: replicaRelay, logger: logger))
            })
    }

    private static func ingressServer(
        _ address: IngressAddress, environment: ServiceEnvironment, api: OrchestratorAPI, tunnels: ReplicaTunnels
    ) -> IngressServer {
        let settings = address.settings
        let proxy = IngressProxy(
            settings: settings,
            directory: IngressDirectory(domain: settings.domain) { id in try await api.current(id) },
            authority: IngressAuthority(
                key: environment.key, validator: ChainValidator(clockSkew: environment.settings.clockSkew),
                revocations: environment.revocations),
            limits: IngressLimits(
                connectionsPerDeployment: settings.connectionsPerDeployment,
                connectionsPerClient: settings.connectionsPerClient, requestsPerSecond: settings.requestsPerSecond),
            throttle: FailedAuthenticationThrottle(limits: environment.settings.authenticationFailures),
            tunnels: tunnels, logger: environment.logger)
        return IngressServer(proxy: proxy, address: address, logger: environment.logger)
    }
}
