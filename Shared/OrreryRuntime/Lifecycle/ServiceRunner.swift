internal import ArgumentParser
internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Hummingbird
public import Logging
internal import Metrics
internal import OrreryAuth
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntimeCore
internal import PostgresNIO
internal import Prometheus
internal import ServiceLifecycle
internal import UnixSignals

/// Starts a service the same way for all six: settings, logging, metrics, migrations, the gRPC server with
/// health and reflection, the HTTP listener, the ready file, and a graceful stop on SIGTERM/SIGINT.
public enum ServiceRunner {
    /// Runs the service `make` builds from its own settings (`Own`, read with the shared ones) until SIGTERM or
    /// SIGINT. Call once per process, from the executable's `run()`.
    /// - Throws: `ExitCode` — 78 for an invalid setting, 69 when PostgreSQL cannot be reached, 70 for a database
    ///   schema newer than this binary, 73 when the ready file cannot be written; other errors (a worker that failed
    ///   for good among them) exit 1.
    public static func run<Own: ServiceSettings>(
        _ description: ServiceDescription, options: RuntimeOptions, own ownOptions: Own.Options,
        service make: (Own) -> OrreryService
    ) async throws {
        let name = description.name
        let settings: RuntimeSettings
        let service: OrreryService
        do {
            let loaded: (shared: RuntimeSettings, own: Own) = try await RuntimeSettings.load(
                for: description, options: options, own: ownOptions, environment: ProcessInfo.processInfo.environment)
            settings = loaded.shared
            service = make(loaded.own)
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("\(name): \(error)\n".utf8))
            throw ExitCode.configuration
        }
        LoggingBootstrap.bootstrap(service: name, format: settings.logFormat, level: settings.logLevel)
        let metrics = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(DocumentedMetricsFactory(registry: metrics))
        MetricCatalog.registerAtStart(service: name)
        var logger = Logger(label: "orrery.\(name)")
        logger.logLevel = settings.logLevel

        await StopWatchdog.start(grace: settings.shutdownGrace, logger: logger)
        do {
            try await serve(
                service, settings: settings, metrics: metrics, logger: logger, signals: [.sigterm, .sigint],
                givesHeapBack: true)
        } catch let error as StartupError {
            logger.critical("\(error.message)")
            FileHandle.standardError.write(Data("\(name): \(error.message)\n".utf8))
            throw error.exitCode
        } catch let failure as WorkerFailure {
            logger.critical(
                "exiting so that the service manager restarts this process", metadata: ["error": "\(failure)"])
            FileHandle.standardError.write(Data("\(name): \(failure)\n".utf8))
            throw ExitCode.failure
        }
        logger.info("stopped")
    }

    /// Runs `service` inside this process with `settings` until the calling task is cancelled, as a test does with a
    /// service it builds itself: the same listeners, checks and workers as `run`, but no signal handlers, no
    /// process-wide logging or metrics bootstrap (the test process has its own) and no heap give-back (it trims the
    /// whole process). `settings.readyFile` says when it
    /// serves and on which ports. Its parts may take as long as they need to stop once cancelled (a process is ended
    /// by its `StopWatchdog`; here that would end the test process and every suite in it).
    /// `stop`, when given, stops it as SIGTERM stops a process (gracefully, the servers first); cancelling the
    /// calling task cancels every part at once.
    public static func runInProcess(
        _ service: OrreryService, settings: RuntimeSettings, logger: Logger, stop: GracefulStop? = nil
    ) async throws {
        do {
            try await serve(
                service, settings: settings, metrics: PrometheusCollectorRegistry(), logger: logger, signals: [],
                givesHeapBack: false, stop: stop)
        } catch let error as StartupError {
            throw InProcessStartupError(message: error.message)
        }
    }

    /// Why a service run in process could not start.
    public struct InProcessStartupError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// Why a service could not start, and the exit code that says so.
    struct StartupError: Error {
        let message: String
        let exitCode: ExitCode
    }

    private static func serve(
        _ service: OrreryService,
        settings: RuntimeSettings,
        metrics: PrometheusCollectorRegistry,
        logger: Logger,
        signals: [UnixSignal],
        givesHeapBack: Bool,
        stop: GracefulStop? = nil
    ) async throws {
        var database: PostgresClient?
        // The database watch's probe has a connection of its own: behind a pool saturated by load it would wait its
        // turn, and a busy database would be taken for an unreachable one (every call then refused UNAVAILABLE).
        var probe: PostgresClient?
        if let schema = service.description.schema, let databaseSettings = settings.database {
            database = try databaseSettings.makeClient(schema: schema.name, logger: logger)
            probe = try databaseSettings.makeClient(schema: schema.name, logger: logger, maximumConnections: 1)
        }
        // Built before anything runs (a build reads no database), so that its workers join the process's one group.
        let built = try await BuiltService.build(service, settings: settings, database: database, logger: logger)

        // The process's one group, started in this order and shut down in reverse: the database client (last to
        // go), the heap give-back, each background worker (each waits until the process serves, so nothing it
        // reports can interrupt start-up), then the servers — which therefore stop first: they stop accepting and
        // finish in-flight RPCs before any worker is stopped, and the workers stop in reverse before the database.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let database { services.append(.init(service: database)) }
        if let probe { services.append(.init(service: probe)) }
        // The heap give-back trims the whole process's allocator: not for a service run inside a test process (it
        // would trim under the test's own measurements).
        if givesHeapBack { services.append(.init(service: HeapGiveBack(logger: logger))) }
        for worker in built.workers {
            // A worker that fails for good shuts the group down (the servers first) and ends `run` with its failure:
            // the process exits 1.
            services.append(
                .init(
                    service: WorkerService(worker: worker, serving: built.environment.serving),
                    successTerminationBehavior: .ignore, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        services.append(
            .init(
                service: MainService(
                    built: built, settings: settings, metrics: metrics, database: database, probe: probe ?? database),
                successTerminationBehavior: .gracefullyShutdownGroup,
                failureTerminationBehavior: .gracefullyShutdownGroup))
        var configuration = ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: signals, logger: logger)
        configuration.maximumGracefulShutdownDuration = settings.shutdownGrace
        // No bound on cancellation here: ServiceGroup's ends the process with a fatal error, whose crash report of
        // a large binary took minutes on a loaded machine — and in a test process it would end every suite. A
        // process is bounded by `StopWatchdog` instead; a test waits for the service it runs.
        configuration.maximumCancellationDuration = nil
        let group = ServiceGroup(configuration: configuration)
        guard let stop else { return try await group.run() }
        let stopping = Task {
            await stop.wait()
            await group.triggerGracefulShutdown()
        }
        defer { stopping.cancel() }
        try await group.run()
    }
}

/// Stops a service run in process (`ServiceRunner.runInProcess`) the way SIGTERM stops a process: gracefully.
public final class GracefulStop: Sendable {
    private let requests: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init() {
        (requests, continuation) = AsyncStream.makeStream()
    }

    /// Asks the service to stop; it stops as a process does on SIGTERM.
    public func request() {
        continuation.yield()
        continuation.finish()
    }

    /// Returns once a stop is requested, or when the task is cancelled.
    func wait() async {
        for await _ in requests { return }
    }
}

/// A service built from its environment, with what the runtime adds around it (the capability check, the
/// descriptor index, the revocation follower), before anything of it runs.
private struct BuiltService: Sendable {
    let description: ServiceDescription
    let environment: ServiceEnvironment
    let parts: ServiceParts
    let workers: [BackgroundWorker]
    let index: DescriptorIndex
    let capabilities: CapabilityInterceptor
    let tarpit: ConnectionTarpit

    static func build(
        _ service: OrreryService, settings: RuntimeSettings, database: PostgresClient?, logger: Logger
    ) async throws -> BuiltService {
        let description = service.description
        let key = try loadKey(description, settings: settings)
        let operatorDID: DID
        do {
            operatorDID = try DID(settings.trustedOperator)
        } catch {
            throw ServiceRunner.StartupError(message: "trust.operator: \(error)", exitCode: .configuration)
        }
        let proofs = try loadDelegations(settings: settings)
        let descriptorSet = Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data()
        let index: DescriptorIndex
        let catalog: MethodCatalog
        do {
            index = try DescriptorIndex(descriptorSet: descriptorSet)
            catalog = try MethodCatalog(descriptorSet: descriptorSet)
        } catch {
            throw ServiceRunner.StartupError(
                message: "the embedded descriptor set is unreadable: \(error)", exitCode: .failure)
        }
        let validator = ChainValidator(clockSkew: settings.clockSkew)
        let revocations = RevocationBook(validator: validator)
        let info = ServiceInfo(name: description.name, did: key.did.string)
        let replayGuard: any ReplayGuard =
            database.map { PostgresReplayGuard(client: $0, logger: logger) } ?? InMemoryReplayGuard()
        let tarpit = ConnectionTarpit()
        let capabilities = CapabilityInterceptor(
            serviceDID: key.did, trustedRoots: [operatorDID], catalog: catalog, validator: validator,
            revocations: revocations, replayGuard: replayGuard, logger: logger,
            throttle: FailedAuthenticationThrottle(
                limits: settings.authenticationFailures,
                onRefusal: { peer, retryAfter in
                    tarpit.pause(peer: peer, for: .milliseconds(Int64(retryAfter * 1000)))
                }))
        let environment = ServiceEnvironment(
            settings: settings, logger: logger, database: database, info: info, key: key, operatorDID: operatorDID,
            revocations: revocations, catalog: catalog, proofs: proofs, capabilities: capabilities,
            serving: ServingSignal())
        let parts: ServiceParts
        do {
            parts = try await service.build(environment)
        } catch {
            throw ServiceRunner.StartupError(message: "cannot start: \(error)", exitCode: .cannotCreate)
        }
        var workers = parts.workers
        if let followed = settings.identityAddress.flatMap(ServiceAddress.init) {
            workers.append(
                BackgroundWorker("revocation follower") {
                    await RevocationFollower(
                        address: followed, trustRoots: settings.tlsTrustRoots, environment: environment,
                        proofs: proofs
                    ).run()
                })
        } else if !description.keepsRevocationLog {
            logger.warning("identity.address is not set: revocations are not followed by this process")
        }
        return BuiltService(
            description: description, environment: environment, parts: parts, workers: workers, index: index,
            capabilities: capabilities, tarpit: tarpit)
    }

    /// The service's key: provisioned (`identity.key`), or created in the state directory (device agent).
    private static func loadKey(_ description: ServiceDescription, settings: RuntimeSettings) throws -> SigningKey {
        do {
            if let path = settings.keyFile { return try KeyFile.read(path) }
            try FileManager.default.createDirectory(
                atPath: settings.stateDirectory, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
            return try KeyFile.readOrCreate(settings.stateDirectory + "/device.key")
        } catch let error as KeyFileError {
            throw ServiceRunner.StartupError(message: "identity.key: \(error)", exitCode: .configuration)
        }
    }

    /// The service's own delegation chain (root first), for its calls to other services.
    private static func loadDelegations(settings: RuntimeSettings) throws -> [Delegation] {
        guard let path = settings.delegationFile else { return [] }
        do {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            return try DelegationChain.read(text)
        } catch {
            throw ServiceRunner.StartupError(message: "identity.delegation \(path): \(error)", exitCode: .configuration)
        }
    }
}

/// Migrates, serves gRPC and HTTP, writes the ready file, and on graceful shutdown stops accepting RPCs and lets
/// in-flight ones finish.
private struct MainService: Service {
    let built: BuiltService
    let settings: RuntimeSettings
    let metrics: PrometheusCollectorRegistry
    let database: PostgresClient?
    /// The database watch's own client (one connection).
    let probe: PostgresClient?
    var logger: Logger { built.environment.logger }

    func run() async throws {
        let description = built.description
        if let database, let schema = description.schema {
            try await migrate(database: database, schemaName: schema.name, migrations: schema.migrations)
        }
        let parts = built.parts
        let environment = built.environment
        let capabilities = built.capabilities
        let index = built.index
        let tarpit = built.tarpit
        let info = environment.info
        let logger = logger
        let settings = settings
        let database = database
        let probe = probe

        let health = HealthStatusBook()
        let serviceNames = Self.serviceNames(of: parts.rpcServices)
        let databaseWatch = database.map { _ in DatabaseWatch() }
        let reflection = ReflectionService(
            index: index,
            serviceNames: serviceNames + [
                "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ]
        )
        let budget = ConnectionBudget(limit: settings.maximumConnections)
        let transportSecurity: HTTP2ServerTransport.Posix.TransportSecurity
        if let tls = settings.tls {
            for path in [tls.certificate, tls.key] where !FileManager.default.isReadableFile(atPath: path) {
                throw ServiceRunner.StartupError(message: "tls: cannot read \(path)", exitCode: .configuration)
            }
            transportSecurity = .tls(
                certificateChain: [.file(path: tls.certificate, format: .pem)],
                privateKey: .file(path: tls.key, format: .pem))
        } else {
            transportSecurity = .plaintext
        }
        let server = GRPCServer(
            transport: .http2NIOPosix(
                address: try Self.socketAddress(host: settings.grpc.host, port: settings.grpc.port),
                transportSecurity: transportSecurity,
                config: ServerTransportSettings.configuration(
                    settings: settings, budget: budget, tarpit: tarpit, streams: built.description.concurrentStreams)
            ),
            services: parts.rpcServices + [
                HealthService(book: health), reflection, ReflectionServiceV1Alpha(v1: reflection),
            ],
            // The database gate before the capability check, whose replay guard is in the database too.
            // Every error a precise status (inside the metrics, which count the status it became).
            interceptors: [MetricsServerInterceptor(), ErrorStatusInterceptor(logger: logger)]
                + (databaseWatch.map { [DatabaseGate(watch: $0)] } ?? []) + [capabilities]
        )
        if settings.tls == nil {
            logger.notice(
                "gRPC listens in plaintext: allowed on loopback only", metadata: ["host": "\(settings.grpc.host)"])
        } else {
            logger.info("gRPC listens with TLS", metadata: ["host": "\(settings.grpc.host)"])
        }

        let (httpBound, httpBoundContinuation) = AsyncStream<Int>.makeStream()
        let http = try OperationsHTTPServer.make(
            host: settings.http.host,
            port: settings.http.port,
            metrics: metrics,
            health: health,
            logger: logger,
            tls: settings.tls,
            limits: .init(budget: budget, idleTimeout: settings.idleTimeout),
            routes: { router in
                parts.httpRoutes(
                    JSONGateway(authorizer: capabilities, logger: logger, database: databaseWatch), router)
            },
            onBound: { port in
                httpBoundContinuation.yield(port)
                httpBoundContinuation.finish()
            }
        )

        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            group.addTask { try await http.run() }
            let grpcPort: Int
            do {
                let address = try await server.transport.listeningAddress
                grpcPort = address.ipv4?.port ?? address.ipv6?.port ?? settings.grpc.port
            } catch {
                throw ServiceRunner.StartupError(
                    message: "cannot listen for gRPC on \(settings.grpc.host):\(settings.grpc.port): \(error)",
                    exitCode: .unavailable)
            }
            var httpPort: Int?
            for await port in httpBound { httpPort = port }
            guard let httpPort else {
                throw ServiceRunner.StartupError(
                    message: "cannot listen for HTTP on \(settings.http.host):\(settings.http.port)",
                    exitCode: .unavailable)
            }

            health.set(.serving, for: "")
            for name in serviceNames { health.set(.serving, for: name) }
            environment.serving.markServing(grpcPort: grpcPort)
            // From here on, health follows the database too.
            let databaseTask = Task {
                if let probe, let databaseWatch {
                    await databaseWatch.run(client: probe, health: health, services: serviceNames, logger: logger)
                }
            }
            if let path = settings.readyFile {
                let ready = ReadyFile(
                    service: description.name, pid: getpid(), grpcHost: settings.grpc.host, grpcPort: grpcPort,
                    httpHost: settings.http.host, httpPort: httpPort, did: info.did)
                do {
                    try ready.write(to: path)
                } catch {
                    databaseTask.cancel()
                    throw ServiceRunner.StartupError(
                        message: "cannot write the ready file \(path): \(error)", exitCode: .cannotCreate)
                }
            }
            logger.info(
                "serving",
                metadata: [
                    "grpc": "\(settings.grpc.host):\(grpcPort)", "http": "\(settings.http.host):\(httpPort)",
                    "version": "\(ServiceInfo.version)",
                ])

            group.addTask {
                try? await gracefulShutdown()
                logger.info("shutting down: finishing in-flight RPCs")
                health.setAll(.notServing)
                health.finishWatches()
                databaseTask.cancel()
                server.beginGracefulShutdown()
            }
        }
    }

    private func migrate(database: PostgresClient, schemaName: String, migrations: [Migration]) async throws {
        do {
            let migrator = try SchemaMigrator(schema: try SchemaName(schemaName), migrations: migrations)
            let report = try await withDeadline(settings.database?.startupTimeout ?? .seconds(30)) {
                try await migrator.migrate(using: database, logger: logger)
            }
            logger.info(
                "schema up to date",
                metadata: ["schema": "\(schemaName)", "version": "\(report.version)", "applied": "\(report.applied)"])
        } catch let error as MigrationError {
            throw ServiceRunner.StartupError(message: "\(error)", exitCode: .software)
        } catch {
            let target = settings.database.map { "\($0.user)@\($0.host):\($0.port)/\($0.database)" } ?? "?"
            throw ServiceRunner.StartupError(
                message: "cannot migrate schema \(schemaName) on PostgreSQL \(target): \(String(reflecting: error))",
                exitCode: .unavailable)
        }
    }

    private static func serviceNames(of services: [any RegistrableRPCService]) -> [String] {
        var router = RPCRouter<HTTP2ServerTransport.Posix>()
        for service in services { service.registerMethods(with: &router) }
        return Array(Set(router.methods.map(\.service.fullyQualifiedService))).sorted()
    }

    private static func socketAddress(host: String, port: Int) throws -> GRPCNIOTransportCore.SocketAddress {
        if host == "localhost" { return .ipv4(host: "127.0.0.1", port: port) }
        return host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port)
    }
}

/// A background worker as a member of the process's service group: it starts once the process serves and runs until
/// the group shuts it down (then it is cancelled); one that throws or returns before that has failed for good
/// (`WorkerFailure`).
private struct WorkerService: Service, CustomStringConvertible {
    let worker: BackgroundWorker
    /// Set once the process serves: the worker starts then.
    let serving: ServingSignal

    var description: String { worker.name }

    func run() async throws {
        await cancelWhenGracefulShutdown { await serving.wait() }
        if Task.isCancelled || Task.isShuttingDownGracefully { return }
        do {
            try InjectedWorkerFailure.check(worker.name)
            try await cancelWhenGracefulShutdown { try await worker.run() }
            await InjectedStopStall.stallIfArmed(worker.name)
        } catch {
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
            throw WorkerFailure(worker: worker.name, reason: "\(error)")
        }
        if Task.isCancelled || Task.isShuttingDownGracefully || worker.once { return }
        throw WorkerFailure(worker: worker.name, reason: "it ended on its own")
    }
}

/// A background worker failed for good: the process ends (exit 1) so that its service manager restarts it.
struct WorkerFailure: Error, CustomStringConvertible {
    let worker: String
    let reason: String
    var description: String { "the \(worker) failed for good: \(reason)" }
}

/// Runs `body`, failing with `DeadlineExceeded` if it takes longer than `limit`.
func withDeadline<Result: Sendable>(
    _ limit: Duration,
    _ body: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Result.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw DeadlineExceeded(limit: limit)
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw DeadlineExceeded(limit: limit) }
        return first
    }
}

/// An operation did not finish in time.
struct DeadlineExceeded: Error, CustomStringConvertible {
    let limit: Duration
    var description: String { "no answer within \(limit)" }
}
