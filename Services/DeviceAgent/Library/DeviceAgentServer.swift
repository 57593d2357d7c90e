#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import ArgumentParser
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import Metrics
internal import OrreryBasics
internal import OrreryIdentity
internal import OrreryHTTPClient
internal import OrreryLedger
internal import OrreryOCI
internal import OrreryProto
internal import OrreryRuntimeCore
internal import Prometheus
internal import ServiceLifecycle
internal import UnixSignals

/// The `device-agent` process: its settings, logging and metrics, its key in its state directory, and two services
/// in one `ServiceGroup` — the loopback listeners (gRPC Info, health and reflection; HTTP `/metrics` and
/// `/healthz`; an edge host opens no network port) and the agent's work (join, heartbeats, offers, allocations).
/// SIGTERM or SIGINT stops the work first, then the listeners. Work that fails for good ends the process (so that
/// systemd restarts it) instead of leaving health saying SERVING.
public enum DeviceAgentServer {
    /// Runs the agent until SIGTERM or SIGINT.
    /// - Throws: `ExitCode` — 78 for an invalid setting or key file, 73 when the state directory or the ready file
    ///   cannot be made, 69 when a listener cannot bind, 1 when the agent's work fails for good.
    public static func run(options: AgentOptions) async throws {
        let name = AgentSettings.serviceName
        let settings: AgentSettings
        do {
            settings = try AgentSettings.load(options: options, environment: ProcessInfo.processInfo.environment)
        } catch let error as ConfigurationError {
            printError("\(name): \(error)")
            throw ExitCode.configuration
        }
        LoggingBootstrap.bootstrap(service: name, format: settings.logFormat, level: settings.logLevel)
        let metrics = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(DocumentedMetricsFactory(registry: metrics))
        MetricCatalog.registerAtStart(service: name)
        var logger = Logger(label: "orrery.\(name)")
        logger.logLevel = settings.logLevel

        do {
            let key = try prepareState(settings)
            let listeners = AgentListeners(settings: settings, key: key, metrics: metrics, logger: logger)
            let work = AgentWork(settings: settings, key: key, logger: logger)
            var configuration = ServiceGroupConfiguration(
                services: [
                    .init(service: listeners),
                    .init(
                        service: work, successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            configuration.maximumGracefulShutdownDuration = settings.shutdownGrace
            // No fatal error on slow cancellation: the watchdog ends a process that does not stop in time.
            configuration.maximumCancellationDuration = nil
            await StopWatchdog.start(grace: settings.shutdownGrace, logger: logger)
            try await ServiceGroup(configuration: configuration).run()
        } catch let error as StartupError {
            logger.critical("\(error.message)")
            printError("\(name): \(error.message)")
            throw error.exitCode
        } catch let error as AgentWork.Failed {
            logger.critical(
                "the agent's work failed for good; exiting so that the service manager restarts it",
                metadata: ["error": "\(error.underlying)"])
            printError("\(name): the agent's work failed: \(error.underlying)")
            throw ExitCode.failure
        }
        logger.info("stopped")
    }

    /// The state directory (mode 0700) and the device key in it, created on first start.
    private static func prepareState(_ settings: AgentSettings) throws -> SigningKey {
        do {
            try StateDirectory.prepare(at: settings.stateDirectory)
        } catch {
            throw StartupError(message: "cannot start: \(error)", exitCode: .cannotCreate)
        }
        do {
            _ = try OwnerPolicy.read(configFile: settings.configFile)
        } catch {
            throw StartupError(message: "cannot start: \(error)", exitCode: .configuration)
        }
        do {
            return try KeyFile.readOrCreate(settings.stateDirectory + "/device.key")
        } catch {
            throw StartupError(message: "device key: \(error)", exitCode: .configuration)
        }
    }

    private static func printError(_ line: String) {
        _ = systemWrite(STDERR_FILENO, Array((line + "\n").utf8))
    }
}

/// Why the agent could not start, and the exit code that says so.
struct StartupError: Error {
    let message: String
    let exitCode: ExitCode
}

/// The loopback listeners: gRPC (Info, health, reflection) and HTTP (`/metrics`, `/healthz`); writes the ready file
/// once both are bound, and on graceful shutdown reports NOT_SERVING and stops accepting.
struct AgentListeners: Service {
    let settings: AgentSettings
    let key: SigningKey
    let metrics: PrometheusCollectorRegistry
    let logger: Logger

    func run() async throws {
        let info = ServiceInfo(name: AgentSettings.serviceName, did: key.did.string)
        let health = HealthStatusBook()
        let index: DescriptorIndex
        do {
            index = try DescriptorIndex(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        } catch {
            throw StartupError(message: "the embedded descriptor set is unreadable: \(error)", exitCode: .software)
        }
        let agentService = "orrery.agent.v1.DeviceAgent"
        let reflection = ReflectionService(
            index: index,
            serviceNames: [
                agentService, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ])
        let host = settings.grpc.host == "localhost" ? "127.0.0.1" : settings.grpc.host
        let server = GRPCServer(
            transport: .http2NIOPosix(
                address: host.contains(":")
                    ? .ipv6(host: host, port: settings.grpc.port) : .ipv4(host: host, port: settings.grpc.port),
                transportSecurity: .plaintext),
            services: [
                DeviceAgentRPCService(info: info), HealthService(book: health), reflection,
                ReflectionServiceV1Alpha(v1: reflection),
            ],
            interceptors: [MetricsServerInterceptor()])

        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            let grpcPort: Int
            do {
                let address = try await server.transport.listeningAddress
                grpcPort = address.ipv4?.port ?? address.ipv6?.port ?? settings.grpc.port
            } catch {
                throw StartupError(
                    message: "cannot listen for gRPC on \(settings.grpc.host):\(settings.grpc.port): \(error)",
                    exitCode: .unavailable)
            }
            let operations: OperationsEndpoint
            do {
                operations = try await OperationsEndpoint(
                    host: settings.http.host, port: settings.http.port, metrics: metrics, health: health)
            } catch {
                server.beginGracefulShutdown()
                throw StartupError(
                    message: "cannot listen for HTTP on \(settings.http.host):\(settings.http.port): \(error)",
                    exitCode: .unavailable)
            }
            health.set(.serving, for: "")
            health.set(.serving, for: agentService)
            if let path = settings.readyFile {
                let ready = ReadyFile(
                    service: AgentSettings.serviceName, pid: getpid(), grpcHost: settings.grpc.host,
                    grpcPort: grpcPort, httpHost: settings.http.host, httpPort: operations.port, did: info.did)
                do {
                    try ready.write(to: path)
                } catch {
                    await operations.close()
                    server.beginGracefulShutdown()
                    throw StartupError(
                        message: "cannot write the ready file \(path): \(error)", exitCode: .cannotCreate)
                }
            }
            logger.info(
                "serving",
                metadata: [
                    "grpc": "\(settings.grpc.host):\(grpcPort)", "http": "\(settings.http.host):\(operations.port)",
                    "version": "\(ServiceInfo.version)", "did": "\(info.did)",
                ])
            // Until SIGTERM/SIGINT, or until the group is cancelled because the work failed.
            try? await gracefulShutdown()
            health.setAll(.notServing)
            health.finishWatches()
            await operations.close()
            server.beginGracefulShutdown()
        }
    }
}

/// The agent's work as one service: waits for an enrollment (`device-agent join`), then keeps the device joined and
/// live — heartbeats, the lines to its orchestrators, allocations and their receipts — until graceful shutdown.
struct AgentWork: Service {
    let settings: AgentSettings
    let key: SigningKey
    let logger: Logger

    /// The work cannot go on (an unreadable enrollment or policy): the process should end and be restarted.
    struct Failed: Error {
        let underlying: any Error
    }

    /// The work returned although nobody stopped it.
    struct EndedEarly: Error, CustomStringConvertible {
        var description: String { "the agent's work ended on its own" }
    }

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await keepJoined() }
        } catch is CancellationError {
            return
        } catch {
            throw Failed(underlying: error)
        }
        if !Task.isShuttingDownGracefully && !Task.isCancelled { throw Failed(underlying: EndedEarly()) }
    }

    private func keepJoined() async throws {
        let stateDirectory = settings.stateDirectory
        var enrollment = try Enrollment.read(stateDirectory: stateDirectory)
        if enrollment == nil {
            logger.notice("not joined yet: run `device-agent join --registry ADDR --token FILE`")
        }
        while enrollment == nil {
            try await Task.sleep(for: .seconds(1))
            enrollment = try Enrollment.read(stateDirectory: stateDirectory)
        }
        guard let enrollment else { return }
        let policy = try OwnerPolicy.read(configFile: settings.configFile)
        let inventory = HostDetector.detect(workDirectory: stateDirectory)
        let connection = try RegistryConnection(enrollment: enrollment, key: key)
        var runner = AllocationRunner(root: stateDirectory + "/allocations")
        runner.networkAllowed = policy.networkAllow ?? []
        var images = await openImages(inventory: inventory)
        let emulated = emulatedPlatforms(policy, native: images?.platform)
        images?.emulated = emulated
        runner.images = images
        runner.inputs = await openInputs()
        runner.uploader = OutputUploader(
            trust: settings.registryCA.map { .caFile($0) } ?? .system, addresses: settings.registryAddresses)
        var capabilities = policy.capabilities(of: inventory)
        capabilities.executors = ["process"] + (runner.images == nil ? [] : ["oci"])
        capabilities.platforms = runner.images.map { $0.platforms.map(\.description) } ?? []
        let loop = HeartbeatLoop(
            connection: connection, capabilities: capabilities, interval: settings.livenessInterval,
            workDirectory: stateDirectory,
            landmarks: try OwnerPolicy.landmarks(configFile: settings.configFile),
            logger: logger)
        let ledger = CommitmentLedger(stateDirectory: stateDirectory)
        let judge = OfferJudge(policy: policy, capabilities: capabilities)
        let orchestrators = try OwnerPolicy.orchestrators(configFile: settings.configFile)
        let lines = AgentLines()
        // Usage receipts every 12 heartbeat intervals (a minute by default), a completion receipt at the end.
        let executions = ExecutionManager(
            runner: runner, ledger: ledger, logger: logger,
            receipts: ReceiptBook(key: key, runner: runner),
            witness: TreeHeadWitness(file: stateDirectory + "/notary-tree-head.pb"),
            receiptInterval: settings.livenessInterval * 12,
            actors: ActorDesk(
                deviceKey: key, root: runner.root, logger: logger, lines: lines,
                archiveLimit: Int64(settings.checkpointLimitMiB) << 20,
                unpackedLimit: settings.checkpointUnpackedLimitMiB << 20),
            lines: lines, allowExec: policy.allowExec ?? true, connectionLimit: policy.connectionLimit)
        executions.execs.reapOrphans()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await loop.run() }
            group.addTask { await executions.removeEndedPeriodically(keeping: policy.keepEnded) }
            for address in orchestrators {
                group.addTask {
                    var line = AgentChannelLoop(
                        address: address, connection: connection, judge: judge, ledger: ledger,
                        executions: executions, logger: logger)
                    line.inventoryInterval = (settings.inventoryInterval, settings.inventoryInterval * 6)
                    await line.run()
                }
            }
        }
    }

    /// Finds the OCI runtime that works here and opens the image store; nil (images refused, and the reason logged)
    /// when none works or the owner turned images off. Images of allocations still running keep their roots.
    private func openImages(inventory: HostInventory) async -> ImageRunner? {
        guard settings.ociRuntime != .off else { return nil }
        let stateDirectory = settings.stateDirectory
        // A container's root (another uid) passes through the state directory to its image and /work (0711: it
        // cannot list it).
        chmod(stateDirectory, 0o711)
        let (runtime, failures) = await OCIRuntime.detect(
            settings.ociRuntime, stateDirectory: stateDirectory + "/oci", cgroups: ControlGroup.detect())
        guard let runtime else {
            var metadata: Logger.Metadata = ["tried": "\(failures.joined(separator: "; "))"]
            if let closed = Self.firstClosedAncestor(of: stateDirectory) {
                metadata["hint"] =
                    "\(closed) cannot be passed through by other users (mode without o+x): a container's root, another uid, must reach its image below it"
            }
            logger.notice("no OCI runtime runs containers here: images are refused", metadata: metadata)
            return nil
        }
        do {
            var images = try ImageRunner.open(
                runtime: runtime, stateDirectory: stateDirectory, capacityMiB: settings.imageCacheMiB,
                trust: settings.registryCA.map { .caFile($0) } ?? .system, machine: inventory.architecture)
            images.addresses = settings.registryAddresses
            let runner = AllocationRunner(root: stateDirectory + "/allocations")
            await images.retain(
                running: runner.known().filter { runner.status($0) == .running }.map(runner.directory))
            logger.info(
                "images run with \(runtime.name)",
                metadata: ["runtime": "\(runtime.executable)", "platform": "\(images.platform)"])
            return images
        } catch {
            logger.error("the image store cannot be opened: images are refused", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The platforms the owner opted into emulating (`owner.emulated_platforms`) that this kernel runs through a
    /// binfmt_misc handler usable in containers; each refused one is logged with the reason.
    private func emulatedPlatforms(_ policy: OwnerPolicy, native: Platform?) -> [Platform] {
        guard let native, let wanted = policy.emulatedPlatforms, !wanted.isEmpty else { return [] }
        let handlers = BinfmtEmulation.handlers()
        var emulated: [Platform] = []
        for text in wanted {
            guard let platform = OwnerPolicy.platform(text), !native.runs(platform) else { continue }
            switch BinfmtEmulation.handler(for: platform, among: handlers) {
            case .success(let handler):
                emulated.append(platform)
                logger.notice(
                    "images for \(platform) run emulated",
                    metadata: ["handler": "\(handler.name)", "interpreter": "\(handler.interpreter)"])
            case .failure(let refusal):
                logger.warning("an emulated platform is not offered", metadata: ["why": "\(refusal)"])
            }
        }
        return emulated
    }

    /// Opens the input cache; nil (allocations with inputs refused, and the reason logged) when it cannot be opened.
    /// Inputs of allocations still running stay in use.
    private func openInputs() async -> InputFetcher? {
        do {
            var inputs = try InputFetcher.open(
                stateDirectory: settings.stateDirectory, capacityMiB: settings.inputCacheMiB,
                trust: settings.registryCA.map { .caFile($0) } ?? .system)
            inputs.addresses = settings.registryAddresses
            let runner = AllocationRunner(root: settings.stateDirectory + "/allocations")
            await inputs.retain(
                running: runner.known().filter { runner.status($0) == .running }.map(runner.directory))
            return inputs
        } catch {
            logger.error("the input cache cannot be opened: inputs are refused", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The first directory above `path` that other users cannot pass through, if any.
    static func firstClosedAncestor(of path: String) -> String? {
        var ancestor = path
        while let slash = ancestor.lastIndex(of: "/"), slash != ancestor.startIndex {
            ancestor = String(ancestor[..<slash])
            if let status = FileStatus(path: ancestor), status.permissions & 0o001 == 0 { return ancestor }
        }
        return nil
    }
}
