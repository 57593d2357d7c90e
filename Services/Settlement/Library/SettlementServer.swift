internal import Logging
internal import OrreryIdentity
public import OrreryRuntime
internal import PostgresNIO
internal import Synchronization

/// The `settlement-gateway` service as the shared runtime starts it.
public enum SettlementServer {
    public static let description = ServiceDescription(
        name: "settlement-gateway",
        defaultGRPCPort: 7405,
        defaultHTTPPort: 9405,
        schema: (name: "settlement", migrations: SettlementMigrations.all)
    )

    /// The ledger-only gateway (no chain adapters).
    public static var service: OrreryService { service(chains: ChainSettings()) }

    /// The service with its gRPC handlers, its JSON read calls and, per configured chain, its workers.
    public static func service(chains: ChainSettings) -> OrreryService {
        OrreryService(
            description: description,
            workers: { environment in
                guard let database = environment.database else { return [] }
                let sealer = JournalSealer(client: database, key: environment.key, logger: environment.logger)
                var tasks = [BackgroundWorker("journal sealer") { await sealer.run() }]
                if let notaryAddress = environment.settings.notaryAddress.flatMap(ServiceAddress.init) {
                    let link = ServiceLink(address: notaryAddress, peer: "notary", environment: environment)
                    let settler = ContractSettler(
                        notary: link, client: database, key: environment.key, logger: environment.logger)
                    tasks += [
                        BackgroundWorker("notary link") { await link.run() },
                        BackgroundWorker("contract settler") { await settler.run() },
                    ]
                } else {
                    environment.logger.warning(
                        "notary.address is not set: refunded contracts are not recorded as settled")
                }
                guard let ethereum = chains.ethereum else { return tasks }
                let adapter = EthereumAdapter(settings: ethereum)
                let gateway = environment.key.did.string
                let broadcaster = EthereumBroadcaster(
                    adapter: adapter,
                    payouts: PayoutStore(client: database, logger: environment.logger, gatewayDID: gateway),
                    logger: environment.logger)
                let watcher = EthereumDepositWatcher(
                    adapter: adapter, client: database, gatewayDID: gateway, logger: environment.logger)
                environment.logger.info(
                    "ethereum adapter on",
                    metadata: ["node": "\(ethereum.rpc)", "gateway_address": "\(adapter.gatewayAddress)"])
                return tasks + [
                    BackgroundWorker("ethereum broadcaster") { await broadcaster.run() },
                    BackgroundWorker("ethereum deposit watcher") { await watcher.run() },
                ]
            },
            httpRoutes: { environment, gateway, router in
                guard let database = environment.database else { return }
                SettlementHTTPGateway.register(
                    api: api(environment, database: database, chains: chains), gateway: gateway, on: router)
            },
            makeRPCServices: { environment in
                guard let database = environment.database else { return [] }
                return [
                    SettlementRPCService(
                        environment: environment, api: api(environment, database: database, chains: chains))
                ]
            }
        )
    }

    /// The process's one API (so one ledger batcher), shared by the gRPC service and the JSON routes.
    private static let shared = Mutex<SettlementAPI?>(nil)

    private static func api(_ environment: ServiceEnvironment, database: PostgresClient, chains: ChainSettings)
        -> SettlementAPI
    {
        shared.withLock { shared in
            if let shared { return shared }
            let made = makeAPI(environment, database: database, chains: chains)
            shared = made
            return made
        }
    }

    private static func makeAPI(_ environment: ServiceEnvironment, database: PostgresClient, chains: ChainSettings)
        -> SettlementAPI
    {
        let gateway = environment.key.did
        return SettlementAPI(
            ledger: LedgerStore(client: database, logger: environment.logger),
            addresses: AddressBook(client: database, logger: environment.logger, gatewayDID: gateway.string),
            payouts: PayoutStore(client: database, logger: environment.logger, gatewayDID: gateway.string),
            gatewayDID: gateway,
            ethereum: chains.ethereum.map(EthereumAdapter.init),
            operatorDID: environment.operatorDID,
            notaryDID: environment.settings.notaryDID.flatMap { try? DID($0) },
            revocations: environment.revocations,
            logger: environment.logger)
    }
}
