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

/// A deployment paid end to end (docs/ARCHITECTURE.md §3): the orchestrator escrows each contract's maximum cost under the
/// consumer's delegation, receipts release what is due to the owner, the rest is refunded and the gateway records
/// the contract as settled in the notary's log; a consumer who cannot pay gets no allocation.
@Suite(
    "Settlement wired into deployments", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct SettledDeploymentTests {
    /// Runs `body` with a registry (liveness every `interval` ms), a notary, a settlement gateway and an orchestrator
    /// that escrows through it, on a throwaway database; all killed afterwards.
    static func withSettledServices(
        _ name: String, interval: Int? = nil,
        _ body: (
            TestDatabase, TestNetwork, URL,
            (registry: RunningService, notary: RunningService, gateway: RunningService, orchestrator: RunningService)
        ) async throws -> Void
    ) async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory(name) { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry =
                    if let interval {
                        try await JobConstellation.startRegistry(database, network, directory, interval: interval)
                    } else {
                        try await JobConstellation.startRegistry(database, network, directory)
                    }
                defer { registry.child.signal(SIGKILL) }
                let gatewayDID = try #require(network.serviceKeys["settlement-gateway"]).did
                let notary = try await JobConstellation.startNotary(
                    database, network, directory.appendingPathComponent("notary"), settlement: gatewayDID)
                defer { notary.child.signal(SIGKILL) }
                var gatewayEnvironment = database.serviceEnvironment.merging(
                    network.environment(for: "settlement-gateway")
                ) { $1 }
                gatewayEnvironment["ORRERY_NOTARY_DID"] = notary.ready.did
                gatewayEnvironment["ORRERY_NOTARY_ADDRESS"] = "127.0.0.1:\(notary.ready.grpcPort)"
                let gateway = try await RunningService.start(
                    "settlement-gateway", environment: gatewayEnvironment, directory: directory)
                defer { gateway.child.signal(SIGKILL) }
                let orchestrator = try await JobConstellation.startOrchestrator(
                    database, network, directory, registry: registry, notary: notary,
                    extraArguments: ["--settlement-address", "127.0.0.1:\(gateway.ready.grpcPort)"])
                defer { orchestrator.child.signal(SIGKILL) }
                try await body(database, network, directory, (registry, notary, gateway, orchestrator))
            }
        }
    }

    @Test(
        "escrowed at contracted, released against recorded receipts, the rest refunded, the contract settled; an unfunded consumer's deployment fails at escrow"
    )
    func settled() async throws {
        try await Self.withSettledServices("orrery-settled") { database, network, directory, services in
            let (registry, notary, gateway, orchestrator) = services
            // 3,600,000 base units per core-hour: 1,000 a second.
            let agent = try await TestAgent.start(
                "paid", owner: #"{"prices": {"per_core_hour": 3600000}}"#,
                orchestrators: ["127.0.0.1:\(orchestrator.ready.grpcPort)"],
                registry: "127.0.0.1:\(registry.ready.grpcPort)", network: network, directory: directory, interval: 250)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            let ledger = try SettlementLedgerTests.Parties(network: network, consumer: consumer.key)
            let parties = try ContractParties(network: network)
            func balance(_ did: String) async throws -> Orrery_Settlement_V1_Balance {
                try await ledger.asOperator(gateway) { try await $0.getBalance(.with { $0.did = did }) }
            }
            func submit(_ script: String) async throws -> Orrery_Orchestrator_V1_Deployment {
                var spec = OrchestratorTests.spec(cores: 1, budget: 100_000_000)
                spec.allocations[0].artifact = .with { $0.text = script }
                spec.allocations[0].resources.ramMib = 64
                spec.allocations[0].resources.diskMib = 0
                spec.allocations[0].maxDurationSeconds = 60
                spec.allocations[0].outputs = ["out.txt"]
                return try await consumer.submit(spec, to: orchestrator)
            }
            func deployment(_ id: String, until states: Set<Orrery_Orchestrator_V1_DeploymentState>) async throws
                -> Orrery_Orchestrator_V1_Deployment
            {
                let deadline = ContinuousClock.now + .seconds(30)
                while true {
                    let current = try await consumer.with(orchestrator) {
                        try await $0.getDeployment(.with { $0.id = id })
                    }
                    if states.contains(current.state) || ContinuousClock.now > deadline { return current }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }

            // Without funds the escrow is refused and the deployment fails before anything runs.
            let unfunded = try await deployment(
                try await submit("printf x > out.txt").id, until: [.failed, .deploying, .running, .completed])
            #expect(unfunded.state == .failed, "\(unfunded.state): \(unfunded.reason)")
            #expect(unfunded.reason.contains("escrow"), "\(unfunded.reason)")

            // Funded: 100,000,000 deposited; the contract's maximum cost (60 s at 1,000/s = 60,000) is held.
            let consumerDID = consumer.key.did.string
            _ = try await ledger.asOperator(gateway) { client in
                try await client.deposit(
                    .with {
                        $0.did = consumerDID
                        $0.amount = "100000000"
                        $0.source = "ledger"
                        $0.idempotencyKey = "fund"
                    })
            }
            let job = try await submit("sleep 3; printf done > out.txt")
            let running = try await deployment(job.id, until: [.running, .completed, .failed])
            #expect([.running, .completed].contains(running.state), "\(running.state): \(running.reason)")
            let contractID = try #require(running.assignments.first?.contractID)
            // Its maximum cost was escrowed for the contract (read from the journal: by now a receipt may have released
            // part of it, or the job may have ended and been refunded on a loaded machine).
            let escrowed = try await ledger.asOperator(gateway) {
                try await $0.getStatement(.with { $0.did = consumerDID })
            }.entries.first { $0.kind == "escrow" && $0.contractID == contractID }
            #expect(
                escrowed?.lines.first { $0.account == "escrow/\(contractID)" }?.amount == "60000",
                "\(String(describing: escrowed))")
            let finished = try await deployment(job.id, until: [.completed, .failed])
            #expect(finished.state == .completed, "\(finished.reason)")

            // Released against the receipts, the rest refunded, then settled in the notary's log.
            let settled = try await {
                let deadline = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < deadline {
                    let record = try await parties.withNotary(notary) {
                        try await $0.getContract(.with { $0.id = contractID })
                    }
                    if record.state == .settled { return record }
                    try await Task.sleep(for: .milliseconds(200))
                }
                return Orrery_Notary_V1_ContractRecord()
            }()
            #expect(settled.state == .settled)
            let after = try await balance(consumerDID)
            let owner = try await balance(agent.ownerDID)
            #expect(after.escrow == "0")
            let paid = 100_000_000 - (Int(after.available) ?? 0)
            // At least the 3 s of sleep at 1,000 a second; the owner got it less the 2 % fee.
            #expect(paid >= 3000 && paid < 60000, "paid \(paid)")
            let statement = try await ledger.asOperator(gateway) {
                try await $0.getStatement(.with { $0.did = consumerDID })
            }
            #expect(statement.entries.map(\.kind).filter { $0 != "release" } == ["deposit", "escrow", "refund"])
            // The fee is 2 % of each release, rounded down per release.
            let releases = statement.entries.filter { $0.kind == "release" }.count
            let fee = paid - (Int(owner.receivable) ?? 0)
            #expect(
                releases >= 1 && fee <= paid * 200 / 10_000 && fee >= paid * 200 / 10_000 - releases,
                "fee \(fee) of \(paid)")

            // Its settlement stream open, the orchestrator still stops promptly on SIGTERM.
            // (The agent goes first: an agent's open line holds the orchestrator's shutdown until the agent hangs up.)
            agent.service.child.signal(SIGKILL)
            try await Task.sleep(for: .milliseconds(500))
            let stopping = ContinuousClock.now
            orchestrator.child.signal(SIGTERM)
            let status = await orchestrator.child.waitForExit(timeout: .seconds(12))
            #expect(status == 0, "the orchestrator exited with \(String(describing: status))")
            #expect(
                ContinuousClock.now - stopping < .seconds(4),
                "it took \(ContinuousClock.now - stopping) to stop: \(orchestrator.child.output.suffix(2000))")
        }
    }

    @Test("a relocated replica's replacement contract is escrowed before its new device starts it")
    func relocatedReplicaEscrowed() async throws {
        let interval = 1000
        try await Self.withSettledServices("orrery-settled-relocation", interval: interval) {
            _, network, directory, services in
            let (registry, _, gateway, orchestrator) = services
            let orchestrators = ["127.0.0.1:\(orchestrator.ready.grpcPort)"]
            let registryAddress = "127.0.0.1:\(registry.ready.grpcPort)"
            let cheap = try await TestAgent.start(
                "cheap", owner: #"{"prices": {"per_core_hour": 3600}}"#, orchestrators: orchestrators,
                registry: registryAddress, network: network, directory: directory, interval: interval)
            defer { cheap.service.child.signal(SIGKILL) }
            let spare = try await TestAgent.start(
                "spare", owner: #"{"prices": {"per_core_hour": 36000}}"#, orchestrators: orchestrators,
                registry: registryAddress, network: network, directory: directory, interval: interval)
            defer { spare.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 2)
            let ledger = try SettlementLedgerTests.Parties(network: network, consumer: consumer.key)
            let consumerDID = consumer.key.did.string
            try await Self.fund(consumerDID, ledger: ledger, gateway: gateway)
            var spec = OrchestratorTests.spec(cores: 1, budget: 100_000_000)
            spec.allocations[0].artifact = .with { $0.text = "echo up; sleep 30" }
            spec.allocations[0].resources.ramMib = 32
            spec.allocations[0].resources.diskMib = 0
            spec.allocations[0].maxDurationSeconds = 60
            spec.allocations[0].outputs = []
            // Both online in the orchestrator's view: the cheap one is the choice.
            try await OrchestratorTests.waitUntilChosen(cheap.did, for: spec, consumer, orchestrator)
            let job = try await consumer.submit(spec, to: orchestrator)
            #expect(job.assignments.map(\.deviceDid) == [cheap.did])
            // Running on the cheap device; its agent dies; the replica runs again on the spare one.
            let events = try await AgentChannelTests.watchKillingOnceRunning(
                job.id, of: consumer, on: orchestrator, kill: cheap.service)
            #expect(events.last?.state == .running, "\(events.map { "\($0.state): \($0.reason)" })")
            #expect(events.last?.deployment.assignments.map(\.deviceDid) == [spare.did])
            let first = try #require(events.first { $0.state == .contracted }?.deployment.assignments.first?.contractID)
            let second = try #require(events.last?.deployment.assignments.first?.contractID)
            #expect(first != second)
            // Running there means its device was told to start it: its contract's escrow is in the ledger already.
            let statement = try await ledger.asOperator(gateway) {
                try await $0.getStatement(.with { $0.did = consumerDID })
            }
            let escrowed = Set(statement.entries.filter { $0.kind == "escrow" }.map(\.contractID))
            #expect(escrowed.contains(first) && escrowed.contains(second), "escrowed: \(escrowed.sorted())")
            _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
            AgentChannelTests.removeSandboxes(of: directory.appendingPathComponent("cheap-state"))
        }
    }

    @Test(
        "a run shorter than the owner's minimum per job pays the minimum; a job cancelled after 5 s is paid for the 5 s through its final receipt"
    )
    func shortAndCancelledPaid() async throws {
        try await Self.withSettledServices("orrery-settled-short") { _, network, directory, services in
            let (registry, notary, gateway, orchestrator) = services
            // 1,000 base units a second, at least 2,000 a run; usage receipts every 3 s.
            let agent = try await TestAgent.start(
                "minimal", owner: #"{"prices": {"per_core_hour": 3600000, "minimum_per_job": 2000}}"#,
                orchestrators: ["127.0.0.1:\(orchestrator.ready.grpcPort)"],
                registry: "127.0.0.1:\(registry.ready.grpcPort)", network: network, directory: directory, interval: 250)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            let ledger = try SettlementLedgerTests.Parties(network: network, consumer: consumer.key)
            let parties = try ContractParties(network: network)
            let consumerDID = consumer.key.did.string
            try await Self.fund(consumerDID, ledger: ledger, gateway: gateway)
            func submit(_ script: String) async throws -> Orrery_Orchestrator_V1_Deployment {
                try await Self.submitPaid(script, seconds: 120, by: consumer, to: orchestrator)
            }
            func running(_ id: String) async throws -> Orrery_Orchestrator_V1_Deployment {
                try await OrchestratorTests.runningOrEnded(id, of: consumer, on: orchestrator)
            }
            /// What the consumer paid so far, once `contract` is settled and nothing is left in escrow.
            func paidOnceSettled(_ contract: String) async throws -> Int {
                var state = Orrery_Notary_V1_ContractState.active
                let deadline = ContinuousClock.now + .seconds(40)
                while state != .settled, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(200))
                    state = try await parties.withNotary(notary) {
                        try await $0.getContract(.with { $0.id = contract }).state
                    }
                }
                #expect(state == .settled, "contract \(contract) is \(state)")
                let balance = try await ledger.asOperator(gateway) {
                    try await $0.getBalance(.with { $0.did = consumerDID })
                }
                #expect(balance.escrow == "0")
                return 100_000_000 - (Int(balance.available) ?? 0)
            }

            // A run of a few milliseconds pays the minimum: 2,000 (its time would come to a few units).
            let short = try await running(try await submit("printf quick").id)
            let shortContract = try #require(short.assignments.first?.contractID)
            #expect(try await paidOnceSettled(shortContract) == 2000)

            // Cancelled after 5 s of running: a usage receipt at 3 s, and the final one the stop brought, for ≥ 5 s.
            let long = try await running(try await submit("sleep 100").id)
            #expect(long.state == .running, "\(long.state): \(long.reason)")
            let longContract = try #require(long.assignments.first?.contractID)
            try await Task.sleep(for: .seconds(5))
            _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = long.id }) }
            let paid = try await paidOnceSettled(longContract) - 2000
            #expect(paid >= 5000 && paid < 60000, "paid \(paid) for a run cancelled after 5 s")
        }
    }

    @Test(
        "a replica that ended without a completion receipt (its device could not journal one) has its contract terminated and its escrow refunded"
    )
    func endedWithoutCompletionReceipt() async throws {
        try await Self.withSettledServices("orrery-settled-no-receipt") { _, network, directory, services in
            let (_, notary, gateway, orchestrator) = services
            let (agent, consumer, ledger) = try await Self.fundedConsumerAndAgent(
                "forgetful", interval: 1000, network: network, directory: directory, services: services)
            defer { agent.service.child.signal(SIGKILL) }
            let consumerDID = consumer.key.did.string
            // It ends only once the test opened the gate (after the journal became unwritable), however slow the machine.
            let job = try await Self.submitPaid(
                "for i in $(seq 600); do [ -e go ] && break; sleep 0.1; done; sleep 1", seconds: 60, by: consumer,
                to: orchestrator)
            var current = try await OrchestratorTests.runningOrEnded(job.id, of: consumer, on: orchestrator)
            try #require(current.state == .running, "\(current.state): \(current.reason)")
            let contractID = try #require(current.assignments.first?.contractID)
            // Before its first receipt (12 s in: receipts every 12 heartbeat intervals), the allocation's receipt journal
            // becomes unwritable: the device can sign no receipt for it, the completion receipt included. Then the
            // workload may end.
            let allocations = directory.appendingPathComponent("forgetful-state/allocations")
            let run = try #require(
                try FileManager.default.contentsOfDirectory(atPath: allocations.path).first { $0.hasPrefix("off_") })
            try FileManager.default.createDirectory(
                at: allocations.appendingPathComponent("\(run)/receipts.pb"), withIntermediateDirectories: false)
            try Data().write(to: allocations.appendingPathComponent("\(run)/work/go"))
            current = try await OrchestratorTests.ended(job.id, of: consumer, on: orchestrator, within: .seconds(30))
            #expect(current.state == .completed, "\(current.reason)")
            // Its contract is terminated (no completion receipt will come) and the escrow refunded in full.
            let parties = try ContractParties(network: network)
            var state = Orrery_Notary_V1_ContractState.active
            let terminated = ContinuousClock.now + .seconds(30)
            while ![.terminated, .settled].contains(state), ContinuousClock.now < terminated {
                try await Task.sleep(for: .milliseconds(200))
                state = try await parties.withNotary(notary) {
                    try await $0.getContract(.with { $0.id = contractID }).state
                }
            }
            #expect([.terminated, .settled].contains(state), "contract \(contractID) is \(state)")
            var escrow = ""
            let refunded = ContinuousClock.now + .seconds(30)
            while escrow != "0", ContinuousClock.now < refunded {
                try await Task.sleep(for: .milliseconds(200))
                escrow = try await ledger.asOperator(gateway) {
                    try await $0.getBalance(.with { $0.did = consumerDID })
                }.escrow
            }
            #expect(escrow == "0", "the escrow is not held for a receipt that will never come")
        }
    }

    @Test(
        "a release whose proof the gateway refuses (its contract's log entry tampered) is an incident: held with the escrow until the operator forgoes it, then refunded"
    )
    func tamperedEntryHeldForTheOperator() async throws {
        try await Self.withSettledServices("orrery-settled-incident") { database, network, directory, services in
            let (_, notary, gateway, orchestrator) = services
            let (agent, consumer, ledger) = try await Self.fundedConsumerAndAgent(
                "honest", interval: 5000, network: network, directory: directory, services: services)
            defer { agent.service.child.signal(SIGKILL) }
            let consumerDID = consumer.key.did.string
            // The agent signs a receipt every 12 intervals (60 s): this job's only receipt is its final one, sent when
            // the test cancels it after the tampering below — before any receipt however slow a loaded machine is.
            let job = try await Self.submitPaid("sleep 300", seconds: 60, by: consumer, to: orchestrator)
            var current = try await OrchestratorTests.runningOrEnded(job.id, of: consumer, on: orchestrator)
            try #require(current.state == .running, "\(current.state): \(current.reason)")
            let contractID = try #require(current.assignments.first?.contractID)
            // Before the receipt: one byte of the contract's log entry changes behind the notary's back.
            let parties = try ContractParties(network: network)
            let contractEntry = try #require(
                try await parties.withNotary(notary) { try await $0.getContract(.with { $0.id = contractID }) }
                    .entryIndexes.first)
            try await database.withClient(schema: "notary") { client in
                try await client.query("ALTER TABLE log_entries DISABLE TRIGGER log_entries_append_only")
                try await client.query(
                    "UPDATE log_entries SET leaf = set_byte(leaf, length(leaf) / 2, get_byte(leaf, length(leaf) / 2) # 1) WHERE idx = \(Int64(contractEntry))"
                )
                try await client.query("ALTER TABLE log_entries ENABLE TRIGGER log_entries_append_only")
            }
            _ = try await consumer.with(orchestrator) { client in
                try await client.cancelDeployment(
                    .with {
                        $0.id = job.id; $0.reason = "enough"
                    })
            }

            // The releases are refused for their proof: held, and with them the escrow — no refund behind the
            // provider's back.
            let cli = TestEnvironment.executable("orrery")
            let operatorArguments = [
                "--orchestrator", "127.0.0.1:\(orchestrator.ready.grpcPort)", "--key",
                directory.appendingPathComponent("credentials/operator.key").path,
            ]
            func held() async throws -> [Orrery_Orchestrator_V1_SettlementIncident] {
                let (status, output) = try await ChildProcess.run(
                    cli, arguments: ["incidents", "list", "--json"] + operatorArguments)
                #expect(status == 0, "\(output)")
                return try Orrery_Orchestrator_V1_ListSettlementIncidentsResponse(jsonString: output).incidents
            }
            var incidents: [Orrery_Orchestrator_V1_SettlementIncident] = []
            // Bounds for a loaded machine: each wait ends as soon as what it waits for is seen.
            let noticed = ContinuousClock.now + .seconds(90)
            while incidents.isEmpty, ContinuousClock.now < noticed {
                try await Task.sleep(for: .milliseconds(200))
                incidents = try await held()
            }
            let incident = try #require(
                incidents.first, "no incident held; the orchestrator said: \(orchestrator.child.output.suffix(3000))")
            #expect(incident.contractID == contractID && incident.resolution.isEmpty, "\(incident)")
            #expect(orchestrator.child.output.contains("settlement incident"))
            current = try await OrchestratorTests.ended(job.id, of: consumer, on: orchestrator, within: .seconds(90))
            #expect(current.state == .cancelled, "\(current.reason)")
            try await Task.sleep(for: .seconds(2))  // the final receipt's release is refused and held too
            let balance = {
                try await ledger.asOperator(gateway) { try await $0.getBalance(.with { $0.did = consumerDID }) }
            }
            #expect(try await balance().escrow == "60000", "the escrow stays held while the incident is open")
            // Only the operator sees and decides incidents.
            await OrchestratorTests.expectStatus(.permissionDenied, containing: "operator") {
                _ = try await consumer.with(orchestrator) { try await $0.listSettlementIncidents(.init()) }
            }

            // The operator forgoes the held releases: the contract's escrow is refunded.
            var escrow = try await balance().escrow
            let refunded = ContinuousClock.now + .seconds(30)
            while escrow != "0", ContinuousClock.now < refunded {
                for open in try await held() where open.resolution.isEmpty {
                    let (status, output) = try await ChildProcess.run(
                        cli,
                        arguments: [
                            "incidents", "resolve", open.contractID, "--entry", String(open.receiptEntry), "--forgo",
                            "--note", "the contract entry does not verify",
                        ] + operatorArguments)
                    #expect(status == 0 && output.contains("forgo"), "\(output)")
                }
                try await Task.sleep(for: .milliseconds(300))
                escrow = try await balance().escrow
            }
            #expect(escrow == "0")
            #expect(try await balance().available == "100000000", "nothing released against the tampered log")
        }
    }

    @Test(
        "`orrery settlement verify` checks the journal's hash chain, signed checkpoints, balances and release proofs; an amount changed behind the gateway's back, and a release's kept proof removed, are named"
    )
    func journalVerified() async throws {
        try await Self.withSettledServices("orrery-settled-verify") { database, network, directory, services in
            let (_, _, gateway, orchestrator) = services
            let (agent, consumer, ledger) = try await Self.fundedConsumerAndAgent(
                "audited", interval: 250, network: network, directory: directory, services: services)
            defer { agent.service.child.signal(SIGKILL) }
            let consumerDID = consumer.key.did.string
            let job = try await Self.submitPaid("sleep 2", seconds: 60, by: consumer, to: orchestrator)
            // Paid and refunded: the escrow is empty again.
            let settled = ContinuousClock.now + .seconds(60)
            var escrow = ""
            while escrow != "0" || escrow.isEmpty, ContinuousClock.now < settled {
                try await Task.sleep(for: .milliseconds(300))
                let current = try await consumer.with(orchestrator) {
                    try await $0.getDeployment(.with { $0.id = job.id })
                }
                if current.state.isTerminal {
                    escrow = try await ledger.asOperator(gateway) {
                        try await $0.getBalance(.with { $0.did = consumerDID })
                    }.escrow
                }
            }
            try #require(escrow == "0", "the job's escrow was not settled")

            let cli = TestEnvironment.executable("orrery")
            let arguments = [
                "settlement", "verify", "--settlement", "127.0.0.1:\(gateway.ready.grpcPort)", "--key",
                directory.appendingPathComponent("credentials/operator.key").path, "--witness",
                directory.appendingPathComponent("witness").path,
            ]
            // Every entry sealed (within about a second) and verified, the releases against their kept proofs.
            var (status, output) = (Int32(-1), "")
            let sealed = ContinuousClock.now + .seconds(20)
            repeat {
                try await Task.sleep(for: .milliseconds(500))
                (status, output) = try await ChildProcess.run(cli, arguments: arguments)
            } while status == 0 && output.contains("not sealed yet") && ContinuousClock.now < sealed
            #expect(status == 0 && output.contains("✔"), "\(output)")
            #expect(!output.contains("not sealed yet"), "\(output)")
            let proven =
                output.split(separator: "\n").first { $0.contains("releases:") }
                .flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? 0
            #expect(proven >= 1, "\(output)")
            // --json: one verdict object with the same counts and exit status.
            @Sendable func verdict(_ output: String) -> [String: Any] {
                (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any] ?? [:]
            }
            let (jsonStatus, jsonOutput) = try await ChildProcess.run(cli, arguments: arguments + ["--json"])
            let verified = verdict(jsonOutput)
            #expect(jsonStatus == 0 && verified["verified"] as? Bool == true, "\(jsonOutput)")
            #expect(verified["proven_releases"] as? Int == proven && (verified["problems"] as? [Any])?.isEmpty == true)
            #expect((verified["head"] as? [String: Any])?["chain_digest"] is String, "\(jsonOutput)")
            // Only the operator audits (a delegation of the command is not enough).
            await OrchestratorTests.expectStatus(.permissionDenied, containing: "operator") {
                try await ledger.with(
                    gateway, key: consumer.key, proofs: try ledger.reader(consumer.key, "audit-journal")
                ) { client in
                    try await client.auditJournal(.init()) { response in
                        for try await _ in response.messages {}
                    }
                }
            }

            // The deposit's 100,000,000 becomes 100,001,000 behind the gateway's back.
            let deposit = try await database.withClient(schema: "settlement") { client in
                try await client.query("ALTER TABLE journal_lines DISABLE TRIGGER journal_lines_append_only")
                try await client.query(
                    """
                    UPDATE journal_lines SET amount = amount + 1000
                    WHERE account_id = \("available/" + consumerDID)
                      AND entry_id = (SELECT id FROM journal_entries WHERE kind = 'deposit')
                    """)
                try await client.query("ALTER TABLE journal_lines ENABLE TRIGGER journal_lines_append_only")
                return try await client.query("SELECT id FROM journal_entries WHERE kind = 'deposit'")
                    .decode(Int64.self).collected().first ?? -1
            }
            (status, output) = try await ChildProcess.run(cli, arguments: arguments)
            #expect(status == 1, "\(output)")
            #expect(output.contains("✘ entry \(deposit) (position 1) was changed after it was sealed"), "\(output)")
            #expect(output.contains("✘ entry \(deposit) does not balance: its lines sum to 1000"), "\(output)")
            #expect(output.contains("✘ account available/\(consumerDID) holds"), "\(output)")
            let (refusedStatus, refusedJSON) = try await ChildProcess.run(cli, arguments: arguments + ["--json"])
            let refused = verdict(refusedJSON)
            #expect(refusedStatus == 1 && refused["verified"] as? Bool == false, "\(refusedJSON)")
            #expect(
                (refused["problems"] as? [String])?.contains { $0.contains("does not balance: its lines sum to 1000") }
                    == true, "\(refusedJSON)")

            // A release's kept proof removed: that release is named as unproven.
            _ = try await database.withClient(schema: "settlement") { client in
                try await client.query(
                    """
                    DELETE FROM release_proofs WHERE request_sha256 =
                        (SELECT request_sha256 FROM journal_entries WHERE kind = 'release' ORDER BY id LIMIT 1)
                    """)
            }
            (status, output) = try await ChildProcess.run(cli, arguments: arguments)
            #expect(status == 1 && output.contains("is not proven: no proof is kept for it"), "\(output)")
        }
    }

    /// An agent charging 1,000 base units a second (3,600,000 per core-hour), heartbeating every `interval` ms and
    /// joined to the fleet, and a consumer funded with 100,000,000 base units. The caller kills the agent.
    static func fundedConsumerAndAgent(
        _ name: String, interval: Int, network: TestNetwork, directory: URL,
        services: (
            registry: RunningService, notary: RunningService, gateway: RunningService, orchestrator: RunningService
        )
    ) async throws -> (TestAgent, OrchestratorTests.Consumer, SettlementLedgerTests.Parties) {
        let agent = try await TestAgent.start(
            name, owner: #"{"prices": {"per_core_hour": 3600000}}"#,
            orchestrators: ["127.0.0.1:\(services.orchestrator.ready.grpcPort)"],
            registry: "127.0.0.1:\(services.registry.ready.grpcPort)", network: network, directory: directory,
            interval: interval)
        let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
        try await OrchestratorTests.waitForFleet(consumer, services.orchestrator, devices: 1)
        let ledger = try SettlementLedgerTests.Parties(network: network, consumer: consumer.key)
        try await fund(consumer.key.did.string, ledger: ledger, gateway: services.gateway)
        return (agent, consumer, ledger)
    }

    /// Deposits 100,000,000 base units for `consumer` (once: the deposit's idempotency key is fixed).
    static func fund(
        _ consumer: String, ledger: SettlementLedgerTests.Parties, gateway: RunningService
    ) async throws {
        _ = try await ledger.asOperator(gateway) { client in
            try await client.deposit(
                .with {
                    $0.did = consumer; $0.amount = "100000000"; $0.source = "ledger"; $0.idempotencyKey = "fund"
                })
        }
    }

    /// Submits a one-core job running `script` for at most `seconds`, its contracts escrowed under the consumer's
    /// delegation of /orrery/settlement/escrow.
    static func submitPaid(
        _ script: String, seconds: UInt32, by consumer: OrchestratorTests.Consumer, to orchestrator: RunningService
    ) async throws -> Orrery_Orchestrator_V1_Deployment {
        var spec = OrchestratorTests.spec(cores: 1, budget: 100_000_000)
        spec.allocations[0].artifact = .with { $0.text = script }
        spec.allocations[0].resources.ramMib = 32
        spec.allocations[0].resources.diskMib = 0
        spec.allocations[0].maxDurationSeconds = seconds
        spec.allocations[0].outputs = []
        return try await consumer.submit(spec, to: orchestrator)
    }
}
