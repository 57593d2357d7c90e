public import Foundation
public import OrreryIdentity
internal import OrreryRuntimeCore

/// What the end-to-end tests of jobs share: on a fresh test database and directory, a network's credentials and a
/// registry, a contract notary and an orchestrator as real processes (the orchestrator following the registry and
/// proposing contracts to the notary), with device agents joined to them as a test asks (`startAgent`). A test that
/// needs another arrangement (a second orchestrator, a notary restarted on its port) builds it from the same
/// `start…` parts, or from a `ServiceBed`.
public struct JobConstellation: Sendable {
    public let database: TestDatabase
    public let network: TestNetwork
    public let directory: URL
    public let registry: RunningService
    public let notary: RunningService
    public let orchestrator: RunningService

    /// `host:port` of the registry's and the orchestrator's gRPC listeners.
    public var registryAddress: String { "127.0.0.1:\(registry.ready.grpcPort)" }
    public var orchestratorAddress: String { "127.0.0.1:\(orchestrator.ready.grpcPort)" }

    /// Runs `body` with a constellation in a temporary directory named after `name`, with `orchestratorArguments`
    /// given to the orchestrator; every process it started is killed afterwards (agents started with `startAgent`
    /// are the test's to stop).
    public static func run<Result: Sendable>(
        _ name: String, orchestratorArguments: [String] = [], _ body: (JobConstellation) async throws -> Result
    ) async throws -> Result {
        try await ServiceBed.run(name) { bed in
            let orchestrator = try await bed.startOrchestrator(extraArguments: orchestratorArguments)
            defer { orchestrator.child.signal(SIGKILL) }
            return try await body(
                JobConstellation(
                    database: bed.database, network: bed.network, directory: bed.directory, registry: bed.registry,
                    notary: bed.notary, orchestrator: orchestrator))
        }
    }

    /// Starts an agent with `owner` policy JSON and its lines to this constellation's orchestrator (or
    /// `orchestrators`), joined through its registry.
    public func startAgent(
        _ name: String, owner: String, orchestrators: [String]? = nil, interval: Int? = nil,
        extraArguments: [String] = [], environment: [String: String] = [:]
    ) async throws -> TestAgent {
        try await TestAgent.start(
            name, owner: owner, orchestrators: orchestrators ?? [orchestratorAddress], registry: registryAddress,
            network: network, directory: directory, interval: interval, extraArguments: extraArguments,
            environment: environment)
    }

    /// Starts the agent `startAgent` started as `name` again, on its state and configuration (after a kill).
    public func restartAgent(
        _ name: String, extraArguments: [String] = [], environment: [String: String] = [:]
    ) async throws -> RunningService {
        let config = directory.appendingPathComponent("\(name).json").path
        return try await RunningService.start(
            "device-agent",
            extraArguments: [
                "--state-dir", directory.appendingPathComponent("\(name)-state").path, "--config", config,
            ] + extraArguments,
            environment: network.environment(for: "device-agent").merging(environment) { $1 }, directory: directory,
            configFile: config)
    }

    /// A registry whose devices stay online for 20 minutes without heartbeats (fake devices in tests send none;
    /// with a minute, a test slowed past two minutes by a loaded machine saw its devices turn suspect).
    public static func startRegistry(
        _ database: TestDatabase, _ network: TestNetwork, _ directory: URL, interval: Int = 600_000
    ) async throws -> RunningService {
        try await RunningService.start(
            "registry", extraArguments: ["--liveness-interval-ms", String(interval)],
            environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 },
            directory: directory)
    }

    /// An orchestrator following `registry`, proposing contracts to `notary` when given.
    public static func startOrchestrator(
        _ database: TestDatabase, _ network: TestNetwork, _ directory: URL, registry: RunningService,
        notary: RunningService? = nil, extraArguments: [String] = []
    ) async throws -> RunningService {
        try await RunningService.start(
            "orchestrator",
            extraArguments: ["--registry-address", "127.0.0.1:\(registry.ready.grpcPort)"]
                + (notary.map { ["--notary-address", "127.0.0.1:\($0.ready.grpcPort)"] } ?? []) + extraArguments,
            environment: database.serviceEnvironment.merging(network.environment(for: "orchestrator")) { $1 },
            directory: directory)
    }

    /// A contract notary in `directory`: on `port` when given (a restart where it was), releases proven for
    /// `settlement`, availability terms checked against `registry`.
    public static func startNotary(
        _ database: TestDatabase, _ network: TestNetwork, _ directory: URL, settlement: DID? = nil,
        registry: RunningService? = nil, port: Int? = nil
    ) async throws -> RunningService {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var environment = database.serviceEnvironment.merging(network.environment(for: "contract-notary")) { $1 }
        if let settlement { environment["ORRERY_SETTLEMENT_DID"] = settlement.string }
        if let registry { environment["ORRERY_REGISTRY_ADDRESS"] = "127.0.0.1:\(registry.ready.grpcPort)" }
        return try await RunningService.start(
            "contract-notary", extraArguments: port.map { ["--grpc-port", String($0)] } ?? [], environment: environment,
            directory: directory, portZero: port == nil)
    }
}

/// A constellation without an orchestrator, for a test that starts its own (two replicas, one killed and started
/// again): on a fresh test database and directory, a network's credentials, a registry and a contract notary as real
/// processes, killed once `body` ends (orchestrators and agents it starts are the test's to stop).
public struct ServiceBed: Sendable {
    public let database: TestDatabase
    public let network: TestNetwork
    public let directory: URL
    public let registry: RunningService
    public let notary: RunningService
    /// How often, in ms, the registry expects a device's heartbeat.
    public let livenessInterval: Int

    /// `host:port` of the registry's and the notary's gRPC listeners.
    public var registryAddress: String { "127.0.0.1:\(registry.ready.grpcPort)" }
    public var notaryAddress: String { "127.0.0.1:\(notary.ready.grpcPort)" }
    /// What an orchestrator of this bed is started with: the test database and the orchestrator's credentials.
    public var orchestratorEnvironment: [String: String] {
        database.serviceEnvironment.merging(network.environment(for: "orchestrator")) { $1 }
    }

    /// Runs `body` with a bed in a temporary directory named after `name`, whose registry expects a heartbeat every
    /// `livenessInterval` ms (by default devices that never heartbeat stay online, see
    /// `JobConstellation.startRegistry`).
    public static func run<Result: Sendable>(
        _ name: String, livenessInterval: Int = 600_000, _ body: (ServiceBed) async throws -> Result
    ) async throws -> Result {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory(name) { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry = try await JobConstellation.startRegistry(
                    database, network, directory, interval: livenessInterval)
                defer { registry.child.signal(SIGKILL) }
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"))
                defer { notary.child.signal(SIGKILL) }
                return try await body(
                    ServiceBed(
                        database: database, network: network, directory: directory, registry: registry,
                        notary: notary, livenessInterval: livenessInterval))
            }
        }
    }

    /// An orchestrator following this bed's registry and proposing contracts to its notary, with
    /// `extraArguments` and `environment` added: on gRPC `port` when given (a restart where one ran), else on port 0.
    public func startOrchestrator(
        extraArguments: [String] = [], environment: [String: String] = [:], port: Int? = nil
    ) async throws -> RunningService {
        try await RunningService.start(
            "orchestrator",
            extraArguments: ["--registry-address", registryAddress, "--notary-address", notaryAddress]
                + (port.map { ["--grpc-port", String($0)] } ?? []) + extraArguments,
            environment: orchestratorEnvironment.merging(environment) { $1 }, directory: directory,
            portZero: port == nil)
    }

    /// An agent with `owner` policy JSON and lines to `orchestrators`, joined through this bed's registry.
    public func startAgent(
        _ name: String, owner: String, orchestrators: [RunningService], interval: Int? = nil,
        extraArguments: [String] = [], environment: [String: String] = [:]
    ) async throws -> TestAgent {
        try await TestAgent.start(
            name, owner: owner, orchestrators: orchestrators.map { "127.0.0.1:\($0.ready.grpcPort)" },
            registry: registryAddress, network: network, directory: directory, interval: interval,
            extraArguments: extraArguments, environment: environment)
    }
}

/// A real `device-agent` process joined to a registry under operator → owner → device.
public struct TestAgent: Sendable {
    public let service: RunningService
    public let did: String
    /// The DID of the owner it joined under.
    public var ownerDID: String = ""

    public init(service: RunningService, did: String, ownerDID: String = "") {
        self.service = service
        self.did = did
        self.ownerDID = ownerDID
    }

    /// A join the registry refused.
    public struct JoinFailed: Error, CustomStringConvertible {
        public let description: String
    }

    /// Starts an agent with `owner` policy JSON and lines to `orchestrators`, joined through `registry`; heartbeats
    /// every `interval` ms when given. In `networkNamespace` when given (the agent and its join), with
    /// `joinArguments` added to the join (`--tls-ca`).
    public static func start(
        _ name: String, owner: String, orchestrators: [String], registry: String, network: TestNetwork, directory: URL,
        interval: Int? = nil, extraArguments: [String] = [], environment: [String: String] = [:],
        networkNamespace: String? = nil, joinArguments: [String] = []
    ) async throws -> TestAgent {
        let state = directory.appendingPathComponent("\(name)-state").path
        let config = directory.appendingPathComponent("\(name).json").path
        let list = orchestrators.map { "\"\($0)\"" }.joined(separator: ", ")
        try #"{"owner": \#(owner), "orchestrators": [\#(list)]}"#.write(
            toFile: config, atomically: true, encoding: .utf8)
        let binary = TestEnvironment.executable("device-agent")
        let (_, idOutput) = try await ChildProcess.run(binary, arguments: ["id", "--state-dir", state])
        let did = try DID(idOutput.trimmingCharacters(in: .whitespacesAndNewlines))
        let ownerKey = SigningKey()
        let expiry = Int64(Date().timeIntervalSince1970) + 3600
        let chain = [
            Delegation.issue(
                by: network.operatorKey, to: ownerKey.did, subject: network.operatorKey.did,
                command: try Command("/orrery/registry"), expiration: expiry),
            Delegation.issue(
                by: ownerKey, to: did, subject: network.operatorKey.did, command: try Command("/orrery/registry"),
                expiration: expiry),
        ]
        let token = directory.appendingPathComponent("\(name).ucan").path
        try DelegationChain.write(chain).write(toFile: token, atomically: true, encoding: .utf8)
        let service = try await RunningService.start(
            "device-agent",
            extraArguments: ["--state-dir", state, "--config", config]
                + (interval.map { ["--liveness-interval-ms", String($0)] } ?? []) + extraArguments,
            environment: network.environment(for: "device-agent").merging(environment) { $1 }, directory: directory,
            configFile: config, networkNamespace: networkNamespace)
        let (status, output) = try await ChildProcess.run(
            binary,
            arguments: ["join", "--registry", registry, "--token", token, "--state-dir", state, "--config", config]
                + joinArguments, networkNamespace: networkNamespace)
        guard status == 0 else {
            service.child.signal(SIGKILL)
            throw JoinFailed(description: "device-agent join exited \(status): \(output)")
        }
        return TestAgent(service: service, did: did.string, ownerDID: ownerKey.did.string)
    }
}
