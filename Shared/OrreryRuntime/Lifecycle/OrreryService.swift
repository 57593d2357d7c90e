public import GRPCCore
public import Hummingbird
public import Logging
public import OrreryAuth
public import OrreryIdentity
public import PostgresNIO

/// What a service's handlers get from the runtime.
public struct ServiceEnvironment: Sendable {
    public let settings: RuntimeSettings
    public let logger: Logger
    /// The service's PostgreSQL pool (its own schema on the search path), or nil for a service without one.
    public let database: PostgresClient?
    public let info: ServiceInfo
    /// The service's own key (its DID is the audience of every invocation it accepts).
    public let key: SigningKey
    /// The operator DID chains root in.
    public let operatorDID: DID
    /// The revocations this process knows.
    public let revocations: RevocationBook
    /// Every method and how it is authorised.
    public let catalog: MethodCatalog
    /// The service's own delegation chain from the operator (root first), for its calls to other services.
    public let proofs: [Delegation]
    /// The capability check every RPC passes, for a stream that checks each of its messages (nil in tests that
    /// build an environment by hand).
    public let capabilities: CapabilityInterceptor?
    /// Set once the process serves (its listeners bound).
    public let serving: ServingSignal

    public init(
        settings: RuntimeSettings, logger: Logger, database: PostgresClient?, info: ServiceInfo, key: SigningKey,
        operatorDID: DID, revocations: RevocationBook, catalog: MethodCatalog, proofs: [Delegation] = [],
        capabilities: CapabilityInterceptor? = nil, serving: ServingSignal = ServingSignal(serving: true)
    ) {
        self.serving = serving
        self.settings = settings
        self.logger = logger
        self.database = database
        self.info = info
        self.key = key
        self.operatorDID = operatorDID
        self.revocations = revocations
        self.catalog = catalog
        self.proofs = proofs
        self.capabilities = capabilities
    }
}

/// A service's background work (a feed, a sweeper, a link to another service): it runs as long as the service
/// serves. One that throws, or returns before the service stops (unless it is work done `once`), has failed for good:
/// the process reports NOT_SERVING and exits 1, so that its service manager restarts it — never a log line while
/// health says SERVING.
public struct BackgroundWorker: Sendable {
    /// What it is, for the log line that reports its failure.
    public let name: String
    /// Work done once (a backfill at start): it may end. Any other worker that ends has failed for good.
    public let once: Bool
    public let run: @Sendable () async throws -> Void

    public init(_ name: String, once: Bool = false, run: @escaping @Sendable () async throws -> Void) {
        self.name = name
        self.once = once
        self.run = run
    }
}

/// What a service is made of once built: the gRPC services it serves, the routes it adds to its HTTP listener and
/// its background workers, all sharing the parts one build made.
public struct ServiceParts: Sendable {
    public var rpcServices: [any RegistrableRPCService]
    /// Routes the service adds to its HTTP listener (the orchestrator's and the gateway's JSON calls).
    public var httpRoutes: @Sendable (JSONGateway, Router<OrreryRequestContext>) -> Void
    /// Started once the service serves, in this order.
    public var workers: [BackgroundWorker]

    public init(
        rpcServices: [any RegistrableRPCService], workers: [BackgroundWorker] = [],
        httpRoutes: @escaping @Sendable (JSONGateway, Router<OrreryRequestContext>) -> Void = { _, _ in }
    ) {
        self.rpcServices = rpcServices
        self.workers = workers
        self.httpRoutes = httpRoutes
    }
}

/// A service as the runtime starts it: its description and the one function that builds its parts from its
/// environment, once per process, before anything runs (so it must not use the database: its schema is migrated
/// afterwards, before the servers and workers start). Health, reflection, metrics and capability checks
/// are added by the runtime.
public struct OrreryService: Sendable {
    public let description: ServiceDescription
    public let build: @Sendable (ServiceEnvironment) async throws -> ServiceParts

    public init(
        description: ServiceDescription, build: @escaping @Sendable (ServiceEnvironment) async throws -> ServiceParts
    ) {
        self.description = description
        self.build = build
    }
}
