internal import Foundation
internal import Logging
internal import OrreryLedger
public import OrreryRuntime

/// The `device-agent` as the shared runtime starts it: no database, a local state directory, and listeners on
/// loopback only (an edge host opens no network port).
public enum DeviceAgentServer {
    public static let description = ServiceDescription(
        name: "device-agent",
        defaultGRPCPort: 7406,
        defaultHTTPPort: 9406,
        schema: nil,
        loopbackOnly: true,
        createsOwnKey: true
    )

    /// The agent with its local gRPC handlers; its state directory (mode 0700) holds its own key (`device.key`)
    /// and, once joined, its enrollment, from which it keeps the device joined and live.
    public static var service: OrreryService {
        OrreryService(
            description: description,
            backgroundTasks: { environment in
                [{ try await keepJoined(environment) }, { await ExecutablePages.keepReleasing() }]
            },
            makeRPCServices: { environment in
                try StateDirectory.prepare(at: environment.settings.stateDirectory)
                _ = try OwnerPolicy.read(configFile: environment.settings.configFile)
                return [DeviceAgentRPCService(environment: environment)]
            }
        )
    }

    /// Waits for an enrollment (`device-agent join`), then heartbeats until the agent stops.
    static func keepJoined(_ environment: ServiceEnvironment) async throws {
        let stateDirectory = environment.settings.stateDirectory
        var enrollment = try Enrollment.read(stateDirectory: stateDirectory)
        if enrollment == nil {
            environment.logger.notice("not joined yet: run `device-agent join --registry ADDR --token FILE`")
        }
        while enrollment == nil {
            try await Task.sleep(for: .seconds(1))
            enrollment = try Enrollment.read(stateDirectory: stateDirectory)
        }
        guard let enrollment else { return }
        let policy = try OwnerPolicy.read(configFile: environment.settings.configFile)
        let inventory = HostDetector.detect(workDirectory: stateDirectory)
        let connection = try RegistryConnection(enrollment: enrollment, key: environment.key)
        let capabilities = policy.capabilities(of: inventory)
        let loop = HeartbeatLoop(
            connection: connection, capabilities: capabilities, interval: environment.settings.livenessInterval,
            workDirectory: stateDirectory,
            landmarks: try OwnerPolicy.landmarks(configFile: environment.settings.configFile),
            logger: environment.logger)
        let ledger = CommitmentLedger(stateDirectory: stateDirectory)
        let judge = OfferJudge(policy: policy, capabilities: capabilities)
        let orchestrators = try OwnerPolicy.orchestrators(configFile: environment.settings.configFile)
        var runner = AllocationRunner(root: stateDirectory + "/allocations")
        runner.networkAllowed = policy.networkAllow ?? []
        let lines = AgentLines()
        // Usage receipts every 12 heartbeat intervals (a minute by default), a completion receipt at the end.
        let executions = ExecutionManager(
            runner: runner, ledger: ledger, logger: environment.logger,
            receipts: ReceiptBook(key: environment.key, runner: runner),
            witness: TreeHeadWitness(file: stateDirectory + "/notary-tree-head.pb"),
            receiptInterval: environment.settings.livenessInterval * 12,
            actors: ActorDesk(deviceKey: environment.key, root: runner.root, logger: environment.logger, lines: lines),
            lines: lines)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await loop.run() }
            group.addTask { await executions.removeEndedPeriodically(keeping: policy.keepEnded) }
            for address in orchestrators {
                group.addTask {
                    await AgentChannelLoop(
                        address: address, connection: connection, judge: judge, ledger: ledger,
                        executions: executions, logger: environment.logger
                    ).run()
                }
            }
        }
    }
}
