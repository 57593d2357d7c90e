import ArgumentParser
import Foundation
import OrreryIdentity
import OrreryRuntimeCore
import UnixSignals

/// `orrery-fleet`: many virtual devices in one process, speaking the real protocols to a real registry and
/// orchestrator, so the control plane can be measured at a scale no test machine has agents for.
@main
struct FleetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orrery-fleet",
        abstract: "Simulate a fleet of devices against a running registry and orchestrator.",
        discussion: """
            Every device has its own key and its owner's delegation (derived from --seed, so the same seed is the \
            same fleet: a fleet joined once is reused, --join missing), joins by challenge, streams heartbeats with \
            what it has free, reports round trips, and keeps an agent line to the orchestrator on which it answers \
            offers with signed bids, runs what it is deployed for the `sleep N` its script names, reports it, and \
            signs usage and completion receipts. Only the sandbox is simulated.
            Failures (--silent, --partitioned, --leaving) strike at --failures-at seconds or on SIGUSR1.
            """)

    @Option(help: "The registry, host:port.") var registry: String
    @Option(help: "The orchestrator, host:port (omit: devices join and heartbeat but open no agent line).")
    var orchestrator: String?
    @Option(help: "The operator's key file: it grants each simulated owner its standing.") var operatorKey: String
    @Option(help: "A CA bundle (PEM) to verify the services' TLS certificates; plaintext without.") var tlsCa: String?
    @Option(help: "How many devices.") var devices = 1000
    @Option(help: "The fleet's seed: the same seed derives the same keys and hardware.") var seed: UInt64 = 1
    @Option(help: "A JSON profile of hardware classes and countries (the built-in one without).") var profile: String?
    @Option(help: "Devices per simulated owner.") var devicesPerOwner = 100
    @Option(help: "Devices sharing one HTTP/2 connection (each keeps two streams open; services allow 100).")
    var devicesPerConnection = 40
    @Option(help: "always: every device joins; missing: only those the registry lacks (a fleet run again).")
    var join: JoinMode = .missing
    @Option(help: "Joins in flight at once.") var joinConcurrency = 64
    @Option(help: "Seconds between a device's heartbeats (the registry's interval).") var heartbeatInterval: Double = 5
    @Option(help: "Seconds between a running replica's usage receipts.") var receiptInterval: Double = 60
    @Option(help: "Seconds a job runs whose script names no `sleep N` (default: until stopped).")
    var defaultJobSeconds: Double?
    @Option(help: "Seconds a device takes to answer an offer (a slow device or link).") var answerDelay: Double = 0
    @Option(help: "Seconds between a device's inventories while a bid waits for its Deploy (6× otherwise).")
    var inventoryInterval: Double = 10
    @Option(help: "Seconds to run once every device is live (0: until SIGTERM or SIGINT).") var duration: Double = 0
    @Option(help: "Fraction of devices that vanish at the failure moment (no Leave, their replicas gone).")
    var silent: Double = 0
    @Option(help: "Fraction of devices cut off at the failure moment, back after --partition-seconds.")
    var partitioned: Double = 0
    @Option(help: "Seconds a partitioned device stays cut off.") var partitionSeconds: Double = 60
    @Option(help: "Fraction of devices that leave the registry at the failure moment.") var leaving: Double = 0
    @Option(help: "A file of device DIDs, one a line, read when failures strike: those devices vanish too.")
    var silenceFile: String?
    @Option(help: "Seconds after the fleet is live when failures strike (omit: on SIGUSR1 only).")
    var failuresAt: Double?
    @Option(help: "Fraction of devices that leave each minute and join again a minute later.")
    var churnPerMinute: Double = 0
    @Option(help: "Write this JSON file once every device joined (and opened its line).") var readyFile: String?
    @Option(help: "Write the run's report (JSON) here at the end.") var report: String?
    @Option(help: "Seconds between status lines on standard error.") var statusEvery: Double = 10

    enum JoinMode: String, ExpressibleByArgument { case always, missing }

    func validate() throws {
        guard devices > 0, devices <= 1_000_000 else { throw ValidationError("--devices is 1…1,000,000") }
        for (name, value) in [("--silent", silent), ("--partitioned", partitioned), ("--leaving", leaving)] {
            guard (0...1).contains(value) else { throw ValidationError("\(name) is a fraction, 0…1") }
        }
        guard silent + partitioned + leaving <= 1 else {
            throw ValidationError("--silent, --partitioned and --leaving add up to more than the whole fleet")
        }
        guard heartbeatInterval >= 0.1, receiptInterval >= 1, joinConcurrency > 0, devicesPerConnection > 0,
            answerDelay >= 0, inventoryInterval >= 0.5
        else {
            throw ValidationError(
                "--heartbeat-interval ≥ 0.1, --receipt-interval ≥ 1, --join-concurrency and --devices-per-connection ≥ 1, --answer-delay ≥ 0, --inventory-interval ≥ 0.5"
            )
        }
        guard ServiceAddress(registry) != nil, orchestrator.map({ ServiceAddress($0) != nil }) ?? true else {
            throw ValidationError("--registry and --orchestrator are host:port")
        }
    }

    func run() async throws {
        Self.raiseDescriptorLimit()
        let profile = try self.profile.map(FleetProfile.read) ?? .standard
        let operatorKey = try KeyFile.read(self.operatorKey)
        let trustRoots = try tlsCa.map { try String(contentsOfFile: $0, encoding: .utf8) }
        let roster = try FleetRoster(
            seed: seed, operatorKey: operatorKey, devices: devices, devicesPerOwner: devicesPerOwner)
        guard let registryAddress = ServiceAddress(registry) else { throw ValidationError("--registry is host:port") }
        let registryLanes = try await ConnectionLanes(
            address: registryAddress, devices: devices, devicesPerConnection: devicesPerConnection,
            subject: operatorKey.did, trustRoots: trustRoots)
        var orchestratorLanes: ConnectionLanes?
        if let orchestrator, let address = ServiceAddress(orchestrator) {
            orchestratorLanes = try await ConnectionLanes(
                address: address, devices: devices, devicesPerConnection: devicesPerConnection,
                subject: operatorKey.did, trustRoots: trustRoots)
        }
        let world = FleetWorld(
            registry: registryLanes, orchestrator: orchestratorLanes,
            heartbeatInterval: .milliseconds(Int(heartbeatInterval * 1000)),
            receiptInterval: .milliseconds(Int(receiptInterval * 1000)), defaultJobSeconds: defaultJobSeconds,
            answerDelay: .milliseconds(Int(answerDelay * 1000)),
            inventoryInterval: .milliseconds(Int(inventoryInterval * 1000)), counters: FleetCounters(),
            journal: PlacementJournal())
        let fleet = try (0..<devices).map { index in
            let (capabilities, country) = profile.capabilities(of: index, seed: seed)
            return VirtualDevice(
                member: try roster.member(index), capabilities: capabilities, country: country, world: world)
        }
        let simulation = FleetSimulation(
            fleet: fleet, world: world, options: self,
            liveness: try await LivenessWatch.start(
                registry: registryAddress, operatorKey: operatorKey, trustRoots: trustRoots, fleet: fleet,
                heartbeatInterval: world.heartbeatInterval))
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await registryLanes.run() }
            if let orchestratorLanes { group.addTask { await orchestratorLanes.run() } }
            try await simulation.run()
            simulation.liveness.stop()
            registryLanes.shutdown()
            orchestratorLanes?.shutdown()
            group.cancelAll()
        }
    }

    /// As many descriptors as the hard limit allows: every connection is one.
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}
