internal import Logging
internal import OrreryIdentity
public import OrreryRuntime
internal import PostgresNIO

/// The `settlement-gateway` service as the shared runtime starts it.
public enum SettlementServer {
    public static let description = ServiceDescription(
        name: "settlement-gateway",
        defaultGRPCPort: 7405,
        defaultHTTPPort: 9405,
        schema: (name: "settlement", migrations: SettlementMigrations.all)
    )

    /// The service with its gRPC handlers, its JSON read calls and its workers: the journal sealer, the notary link
    /// and contract settler (with a notary), and per configured chain its broadcaster and deposit watcher.
    public static func service(_ settings: SettlementSettings, chains: ChainSettings = ChainSettings()) -> OrreryService
    {
        OrreryService(description: description) { environment in
            guard let database = environment.database else { return ServiceParts(rpcServices: []) }
            // One API (so one ledger batcher) for the gRPC service and the JSON routes.
            let api = makeAPI(environment, settings: settings, database: database, chains: chains)
            return ServiceParts(
                rpcServices: [SettlementRPCService(environment: environment, api: api)],
                workers: workers(environment, settings: settings, database: database, chains: chains),
                httpRoutes: { gateway, router in SettlementHTTPGateway.register(api: api, gateway: gateway, on: router)
                }
            )
        }
    }

    private static func workers(
        _ environment: ServiceEnvironment, settings: SettlementSettings, database: PostgresClient,
        chains: ChainSettings
    ) -> [BackgroundWorker] {
        let sealer = JournalSealer(client: database, key: environment.key, logger: environment.logger)
        let logger = environment.logger
        var workers = [
            BackgroundWorker("journal sealer") { await sealer.run() },
            BackgroundWorker("escrow gauge") {
                await PeriodicWork("reading the NTX held in escrow", every: .seconds(15), logger: logger) {
                    try await MoneyMetrics.recordEscrowHeld(client: database, logger: logger)
                }.run()
            },
        ]
        if let notaryAddress = settings.notaryAddress.flatMap(ServiceAddress.init) {
            let link = ServiceLink(address: notaryAddress, peer: "notary", environment: environment)
            let settler = ContractSettler(
                notary: link, client: database, key: environment.key, logger: environment.logger)
            workers += [
                BackgroundWorker("notary link") { await link.run() },
                BackgroundWorker("contract settler") { await settler.run() },
            ]
        } else {
            environment.logger.warning("notary.address is not set: refunded contracts are not recorded as settled")
        }
        guard let ethereum = chains.ethereum else { return workers }
        let adapter = EthereumAdapter(settings: ethereum)
        let gateway = environment.key.did.string
        let broadcaster = EthereumBroadcaster(
            adapter: adapter, payouts: PayoutStore(client: database, logger: environment.logger, gatewayDID: gateway),
            logger: environment.logger)
        let watcher = EthereumDepositWatcher(
            adapter: adapter, client: database, gatewayDID: gateway, logger: environment.logger)
        environment.logger.info(
            "ethereum adapter on",
            metadata: ["node": "\(ethereum.rpc)", "gateway_address": "\(adapter.gatewayAddress)"])
        return workers + [
            BackgroundWorker("ethereum broadcaster") { await broadcaster.run() },
            BackgroundWorker("ethereum deposit watcher") { await watcher.run() },
        ]
    }

    private static func makeAPI(
        _ environment: ServiceEnvironment, settings: SettlementSettings, database: PostgresClient,
        chains: ChainSettings
    ) -> SettlementAPI {
        let gateway = environment.key.did
        return SettlementAPI(
            ledger: LedgerStore(client: database, logger: environment.logger),
            addresses: AddressBook(client: database, logger: environment.logger, gatewayDID: gateway.string),
            payouts: PayoutStore(client: database, logger: environment.logger, gatewayDID: gateway.string),
            gatewayDID: gateway,
            ethereum: chains.ethereum.map(EthereumAdapter.init),
            operatorDID: environment.operatorDID,
            notaryDID: settings.notaryDID.flatMap { try? DID($0) },
            revocations: environment.revocations,
            logger: environment.logger)
    }
}
