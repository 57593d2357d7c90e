import Foundation
import GRPCCore
import OrreryDatabase
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// The crash matrix: a paid job while one service is killed -9 at one stage of its life and restarted, for each
/// service and stage. A crash point (`ORRERY_CRASH_AT`) makes the kill land where no outside signal lands reliably
/// (between two transactions, or between a commit and its answer); the registry, off the job's path once it is
/// placed, is killed from outside while the job runs. Each case proves from the deployment's watch stream (its
/// transitions, with the times the orchestrator recorded them) that the kill landed in its stage, then checks what
/// must hold whatever dies: the job completes, its replica ran once, its contract is settled with nothing left in
/// escrow and its owner paid, and the notary's log and the settlement journal verify.
///
/// `make test` runs one case per service; `make test-crash` (ORRERY_CRASH_MATRIX=all) runs every case.
@Suite(
    "Crash matrix: kill -9 of each service at each stage of a paid job", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct CrashMatrixTests {
    enum Service: String, Sendable {
        case registry, notary = "contract-notary", gateway = "settlement-gateway", orchestrator
        case agent = "device-agent"
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let service: Service
        /// The crash point armed in that service; nil: killed from outside once the stage is seen.
        let point: String?
        /// The deployment's state when the service dies.
        let stage: Orrery_Orchestrator_V1_DeploymentState
        /// In the fast subset `make test` runs.
        var fast = false
        /// How long the job runs (long enough, for a receipt case, that a usage receipt is recorded while it runs).
        var seconds = 6

        var testDescription: String { "\(service.rawValue) killed at \(point ?? "the stage") while \(stage)" }
    }

    static let matrix: [Case] = [
        Case(service: .orchestrator, point: "orchestrator.contracted", stage: .contracted),
        Case(service: .orchestrator, point: "orchestrator.escrowed", stage: .escrowed),
        Case(service: .orchestrator, point: "orchestrator.deploying", stage: .deploying, fast: true),
        Case(service: .orchestrator, point: "orchestrator.running", stage: .running),
        Case(service: .orchestrator, point: "orchestrator.completed", stage: .completed),
        Case(service: .notary, point: "notary.contract-accepted", stage: .offered, fast: true),
        // Receipts every 12 heartbeat intervals (12 s here): the first is recorded while the 16 s job runs.
        Case(service: .notary, point: "notary.receipt-recorded", stage: .running, seconds: 16),
        Case(service: .gateway, point: "settlement.escrowed", stage: .contracted, fast: true),
        // The first release follows the first usage receipt (12 s into the 16 s job).
        Case(service: .gateway, point: "settlement.released", stage: .running, seconds: 16),
        Case(service: .gateway, point: "settlement.refunded", stage: .completed),
        Case(service: .agent, point: "agent.deploy-received", stage: .deploying),
        Case(service: .agent, point: "agent.started", stage: .deploying, fast: true),
        Case(service: .agent, point: "agent.ended", stage: .running),
        // Killed from outside once the test sees `running`: the job runs 20 s, as a loaded machine's polling once
        // first saw it `completed` after 6.
        Case(service: .registry, point: nil, stage: .running, fast: true, seconds: 20),
    ]

    static var cases: [Case] {
        ProcessInfo.processInfo.environment["ORRERY_CRASH_MATRIX"] == "all" ? matrix : matrix.filter(\.fast)
    }

    @Test(
        "a service killed -9 at a stage of a paid job and restarted: completed once, paid, settled, verified",
        arguments: cases)
    func killedAndRestarted(_ crash: Case) async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-crash-\(crash.service.rawValue)") { directory in
                let c = try await Constellation.start(database, directory, arming: crash)
                defer { c.stopAll() }
                let consumer = try OrchestratorTests.Consumer(operatorKey: c.network.operatorKey)
                try await OrchestratorTests.waitForFleet(consumer, c.service(.orchestrator), devices: 1)
                let ledger = try SettlementLedgerTests.Parties(network: c.network, consumer: consumer.key)
                try await SettledDeploymentTests.fund(
                    consumer.key.did.string, ledger: ledger, gateway: c.service(.gateway))
                // Each run leaves a line in runs.txt (kept in the allocation's directory) and returns it as out.txt.
                var spec = OrchestratorTests.spec(cores: 1, budget: 100_000_000)
                spec.allocations[0].artifact = .with {
                    $0.text = "echo started >> runs.txt; sleep \(crash.seconds); cat runs.txt > out.txt"
                }
                spec.allocations[0].resources.ramMib = 32
                spec.allocations[0].resources.diskMib = 0
                spec.allocations[0].maxDurationSeconds = 120
                spec.allocations[0].outputs = ["out.txt"]
                let (submission, jobSpec) = (UUID().uuidString, spec)
                @Sendable func submit() async throws -> Orrery_Orchestrator_V1_Deployment {
                    try await consumer.submit(jobSpec, to: c.service(.orchestrator), idempotencyKey: submission)
                }
                // Submit advances a deployment as far as it goes at once, so an orchestrator armed to die at a stage may
                // die inside it: then, as any client would, the submission is retried with its key after the restart.
                var submitted: Orrery_Orchestrator_V1_Deployment?
                do {
                    submitted = try await submit()
                } catch let error as RPCError where error.code == .unavailable && crash.service == .orchestrator {
                    submitted = nil
                }

                // The kill: at the armed crash point, or from outside once the stage is seen.
                let doomed = c.service(crash.service)
                if crash.point == nil {
                    let seen = try await OrchestratorTests.runningOrEnded(
                        try #require(submitted).id, of: consumer, on: c.service(.orchestrator))
                    try #require(seen.state == crash.stage, "\(seen.state): \(seen.reason)")
                    doomed.child.signal(SIGKILL)
                }
                let status = await doomed.child.waitForExit(timeout: .seconds(90))
                let died = Date()
                try #require(
                    status == SIGKILL, "\(crash.service.rawValue) did not die: \(doomed.child.output.suffix(3000))")
                if crash.point != nil {
                    #expect(doomed.child.output.contains("dying at a crash point"))
                }
                try await c.restart(crash.service)
                var job = submitted ?? Orrery_Orchestrator_V1_Deployment()
                if submitted == nil { job = try await submit() }

                // It ends, and its history shows where the kill landed.
                let events = try await Self.history(job.id, consumer: consumer, orchestrator: c.service(.orchestrator))
                let landed = events.last { $0.at.date <= died }?.state
                #expect(
                    landed == crash.stage, "died at \(died) in \(String(describing: landed)): \(Self.describe(events))")
                #expect(events.last?.state == .completed, "\(Self.describe(events))")
                let final = try #require(events.last?.deployment)
                let contractID = try #require(final.assignments.first?.contractID)

                // Ran once: one line in runs.txt, one start across every process of the agent.
                let outputs = try await consumer.with(c.service(.orchestrator)) {
                    try await $0.getOutputs(.with { $0.id = job.id })
                }
                #expect(outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "started\n")
                let starts = c.agentOutputs().components(separatedBy: "\"allocation started\"").count - 1
                #expect(starts == 1, "started \(starts) times")

                // Paid and settled: the contract settled in the log, nothing left in escrow, the owner paid.
                let parties = try ContractParties(network: c.network)
                var record = Orrery_Notary_V1_ContractRecord()
                let settled = ContinuousClock.now + .seconds(60)
                while record.state != .settled, ContinuousClock.now < settled {
                    try await Task.sleep(for: .milliseconds(300))
                    record = try await parties.withNotary(c.service(.notary)) {
                        try await $0.getContract(.with { $0.id = contractID })
                    }
                }
                #expect(record.state == .settled, "\(record.state)")
                let (consumerBalance, ownerBalance) = try await ledger.asOperator(c.service(.gateway)) { client in
                    (
                        try await client.getBalance(.with { $0.did = consumer.key.did.string }),
                        try await client.getBalance(.with { $0.did = c.agentOwner })
                    )
                }
                #expect(consumerBalance.escrow == "0")
                // At least the time it slept at 1,000 a second, less the 2 % fee.
                #expect(
                    (Int(ownerBalance.receivable) ?? 0) >= crash.seconds * 980, "owner paid \(ownerBalance.receivable)")

                // The log and the journal verify.
                let cli = TestEnvironment.executable("orrery")
                let operatorKey = directory.appendingPathComponent("credentials/operator.key").path
                var (verified, output) = try await ChildProcess.run(
                    cli,
                    arguments: [
                        "ledger", "verify", "--notary", "127.0.0.1:\(c.service(.notary).ready.grpcPort)", "--key",
                        operatorKey, "--witness", directory.appendingPathComponent("tree-head.pb").path,
                    ])
                #expect(verified == 0, "\(output)")
                let sealed = ContinuousClock.now + .seconds(20)
                repeat {
                    try await Task.sleep(for: .milliseconds(500))
                    (verified, output) = try await ChildProcess.run(
                        cli,
                        arguments: [
                            "settlement", "verify", "--settlement", "127.0.0.1:\(c.service(.gateway).ready.grpcPort)",
                            "--key", operatorKey, "--witness", directory.appendingPathComponent("journal").path,
                        ])
                } while verified == 0 && output.contains("not sealed yet") && ContinuousClock.now < sealed
                #expect(verified == 0 && !output.contains("not sealed yet"), "\(output)")
            }
        }
    }

    /// Every transition of the deployment once it ended (the watch replays them from the start), across restarts.
    static func history(
        _ id: String, consumer: OrchestratorTests.Consumer, orchestrator: RunningService
    ) async throws -> [Orrery_Orchestrator_V1_DeploymentEvent] {
        let deadline = ContinuousClock.now + .seconds(120)
        var current: Orrery_Orchestrator_V1_Deployment?
        while !(current?.state.isTerminal ?? false), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(300))
            // The orchestrator may still be starting again: try until the deadline.
            current =
                (try? await consumer.with(orchestrator) { try await $0.getDeployment(.with { $0.id = id }) })
                ?? current
        }
        try #require(current?.state.isTerminal == true, "still \(String(describing: current?.state)) after 2 minutes")
        return try await consumer.with(orchestrator) { client in
            try await client.watchDeployment(.with { $0.id = id }) { response in
                try await response.messages.reduce(into: [Orrery_Orchestrator_V1_DeploymentEvent]()) { $0.append($1) }
            }
        }
    }

    static func describe(_ events: [Orrery_Orchestrator_V1_DeploymentEvent]) -> String {
        events.map { "\($0.at.date) \($0.state): \($0.reason)" }.joined(separator: "\n")
    }

    /// Registry, notary, settlement gateway, orchestrator and one agent, each restartable on its own port and state.
    final class Constellation: @unchecked Sendable {
        let database: TestDatabase
        let directory: URL
        let network: TestNetwork
        private var running: [Service: RunningService] = [:]
        /// Every process of the agent, the killed one included.
        private var agentProcesses: [RunningService] = []
        private(set) var agentOwner = ""
        private var environments: [Service: [String: String]] = [:]
        private var arguments: [Service: [String]] = [:]

        private init(database: TestDatabase, directory: URL, network: TestNetwork) {
            self.database = database
            self.directory = directory
            self.network = network
        }

        func service(_ service: Service) -> RunningService {
            guard let running = running[service] else { fatalError("\(service) was not started") }
            return running
        }

        func agentOutputs() -> String { agentProcesses.map(\.child.output).joined(separator: "\n") }

        func stopAll() {
            for service in running.values { service.child.signal(SIGKILL) }
            for agent in agentProcesses { agent.child.signal(SIGKILL) }
        }

        static func start(_ database: TestDatabase, _ directory: URL, arming crash: Case) async throws
            -> Constellation
        {
            let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
            let c = Constellation(database: database, directory: directory, network: network)
            let armed = crash.point.map { ["ORRERY_CRASH_AT": $0] } ?? [:]
            func environment(_ service: Service) -> [String: String] {
                database.serviceEnvironment.merging(network.environment(for: service.rawValue)) { $1 }
            }
            c.environments[.registry] = environment(.registry)
            // Judged offline after 9 s of silence (agents beat every second): a killed agent restarted on a loaded
            // machine is back long before, so no case turns into a relocation with nowhere to go.
            c.arguments[.registry] = ["--liveness-interval-ms", "3000"]
            try await c.launch(.registry, armed: crash.service == .registry ? armed : [:])
            let gatewayDID = try #require(network.serviceKeys["settlement-gateway"]).did
            var notaryEnvironment = environment(.notary)
            notaryEnvironment["ORRERY_SETTLEMENT_DID"] = gatewayDID.string
            c.environments[.notary] = notaryEnvironment
            c.arguments[.notary] = []
            try await c.launch(.notary, armed: crash.service == .notary ? armed : [:])
            var gatewayEnvironment = environment(.gateway)
            gatewayEnvironment["ORRERY_NOTARY_DID"] = c.service(.notary).ready.did
            gatewayEnvironment["ORRERY_NOTARY_ADDRESS"] = "127.0.0.1:\(c.service(.notary).ready.grpcPort)"
            c.environments[.gateway] = gatewayEnvironment
            c.arguments[.gateway] = []
            try await c.launch(.gateway, armed: crash.service == .gateway ? armed : [:])
            c.environments[.orchestrator] = environment(.orchestrator)
            c.arguments[.orchestrator] = [
                "--registry-address", "127.0.0.1:\(c.service(.registry).ready.grpcPort)", "--notary-address",
                "127.0.0.1:\(c.service(.notary).ready.grpcPort)", "--settlement-address",
                "127.0.0.1:\(c.service(.gateway).ready.grpcPort)",
            ]
            try await c.launch(.orchestrator, armed: crash.service == .orchestrator ? armed : [:])
            // 3,600,000 base units per core-hour: 1,000 a second. Heartbeats every second.
            let agent = try await TestAgent.start(
                "crash", owner: #"{"prices": {"per_core_hour": 3600000}}"#,
                orchestrators: ["127.0.0.1:\(c.service(.orchestrator).ready.grpcPort)"],
                registry: "127.0.0.1:\(c.service(.registry).ready.grpcPort)", network: network, directory: directory,
                interval: 1000)
            c.agentOwner = agent.ownerDID
            c.agentProcesses.append(agent.service)
            c.running[.agent] = agent.service
            if crash.service == .agent {
                // Started again with the crash point armed, on the state it joined with.
                agent.service.child.signal(SIGKILL)
                _ = await agent.service.child.waitForExit()
                try await c.restart(.agent, armed: armed)
            }
            return c
        }

        /// Starts a server on its port (the one it had, when it ran before).
        private func launch(_ service: Service, armed: [String: String]) async throws {
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent(service.rawValue), withIntermediateDirectories: true)
            let port = running[service].map { ["--grpc-port", String($0.ready.grpcPort)] } ?? []
            let environment = (environments[service] ?? [:]).merging(armed) { $1 }
            let started = try await RunningService.start(
                service.rawValue, extraArguments: (arguments[service] ?? []) + port, environment: environment,
                directory: directory.appendingPathComponent(service.rawValue), portZero: port.isEmpty)
            running[service] = started
        }

        /// Starts `service` again after it died (on the same port, state and configuration).
        func restart(_ service: Service, armed: [String: String] = [:]) async throws {
            guard service == .agent else {
                try await launch(service, armed: armed)
                return
            }
            let config = directory.appendingPathComponent("crash.json").path
            let agent = try await RunningService.start(
                "device-agent",
                extraArguments: [
                    "--state-dir", directory.appendingPathComponent("crash-state").path, "--config", config,
                    "--liveness-interval-ms", "1000",
                ],
                environment: network.environment(for: "device-agent").merging(armed) { $1 }, directory: directory,
                configFile: config)
            agentProcesses.append(agent)
            running[.agent] = agent
        }
    }
}
