import Foundation
import GRPCCore
import Logging
import OrreryRuntime
import OrchestratorService
import OrreryActors
import OrreryDatabase
import OrreryIdentity
import OrreryProto
import OrreryTestSupport
import OrreryWorkloadSpec
import PostgresNIO
import SwiftProtobuf
import Testing

/// Actors on real agents: messages between two allocations across a planned move, a stateful counter resumed
/// elsewhere after its host is killed, and a tampered checkpoint archive refused at resume.
@Suite(
    "Actors: messages, moves, checkpoints", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct ActorTests {
    /// A workload script: the mailbox client, then the program.
    static func workload(_ name: String) throws -> String {
        let folder = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/examples/actors")
        let mailbox = try String(contentsOf: folder.appendingPathComponent("mailbox.py"), encoding: .utf8)
        let program = try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
            .replacingOccurrences(of: "from mailbox import Mailbox, text", with: "")
        return mailbox + "\n" + program
    }

    static func allocation(_ name: String, script: String, stateful: Bool, env: [String: String] = [:])
        throws -> Orrery_Orchestrator_V1_AllocationSpec
    {
        .with {
            $0.name = name
            $0.executor = .process
            $0.artifact = .with { $0.text = try! workload(script) }
            $0.command = "python3"
            $0.args = ["/artifact/run"]
            $0.env = env
            $0.stateful = stateful
            $0.resources = .with {
                $0.cpuCores = 2
                $0.ramMib = 64
            }
            $0.maxDurationSeconds = 300
        }
    }

    struct Constellation {
        let database: TestDatabase
        let network: TestNetwork
        /// The test's own directory (removed afterwards).
        let directory: URL
        let registry: RunningService
        let notary: RunningService
        let orchestrator: RunningService
        let agents: [TestAgent]
        let consumer: OrchestratorTests.Consumer
        /// Kills every service and agent, and what the agents' sandboxes still run (a dead host's would go too).
        func stop() {
            for agent in agents { agent.service.child.signal(SIGKILL) }
            for service in [orchestrator, notary, registry] { service.child.signal(SIGKILL) }
            for index in agents.indices { ActorTests.killSandboxes(of: "agent\(index)", in: directory) }
        }
    }

    static func start(
        _ database: TestDatabase, _ network: TestNetwork, _ directory: URL, prices: [Int], interval: Int = 1000,
        relocationMargin: Int = 0, places: [(latitude: Double, longitude: Double)] = [], agentArguments: [String] = []
    ) async throws -> Constellation {
        let registry = try await JobConstellation.startRegistry(database, network, directory, interval: interval)
        let notary = try await JobConstellation.startNotary(
            database, network, directory.appendingPathComponent("notary"))
        let orchestrator = try await JobConstellation.startOrchestrator(
            database, network, directory, registry: registry, notary: notary,
            extraArguments: ["--relocation-margin-percent", "\(relocationMargin)"])
        var agents: [TestAgent] = []
        for (index, price) in prices.enumerated() {
            agents.append(
                try await startAgent(
                    "agent\(index)", price: price, network, directory, registry: registry, orchestrator: orchestrator,
                    interval: interval, at: index < places.count ? places[index] : nil,
                    extraArguments: agentArguments))
        }
        let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
        try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: prices.count)
        return Constellation(
            database: database, network: network, directory: directory, registry: registry, notary: notary,
            orchestrator: orchestrator, agents: agents, consumer: consumer)
    }

    /// A constellation for one test, on a fresh database and directory: `body` gets it; everything stops afterwards.
    static func withConstellation(
        _ name: String, prices: [Int], interval: Int = 1000, relocationMargin: Int = 0,
        places: [(latitude: Double, longitude: Double)] = [], agentArguments: [String] = [],
        _ body: (Constellation) async throws -> Void
    ) async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-actors-\(name)") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let c = try await start(
                    database, network, directory, prices: prices, interval: interval,
                    relocationMargin: relocationMargin,
                    places: places, agentArguments: agentArguments)
                defer { c.stop() }
                try await body(c)
            }
        }
    }

    static func startAgent(
        _ name: String, price: Int, _ network: TestNetwork, _ directory: URL, registry: RunningService,
        orchestrator: RunningService, interval: Int = 1000, at place: (latitude: Double, longitude: Double)? = nil,
        extraArguments: [String] = []
    ) async throws -> TestAgent {
        let location =
            place.map { #", "location": {"latitude": \#($0.latitude), "longitude": \#($0.longitude)}"# } ?? ""
        return try await TestAgent.start(
            name, owner: #"{"prices": {"per_core_hour": \#(price)}\#(location)}"#,
            orchestrators: ["127.0.0.1:\(orchestrator.ready.grpcPort)"],
            registry: "127.0.0.1:\(registry.ready.grpcPort)",
            network: network, directory: directory, interval: interval, extraArguments: extraArguments)
    }

    static func submit(
        _ spec: Orrery_Orchestrator_V1_WorkloadSpec, _ c: Constellation, as consumer: OrchestratorTests.Consumer? = nil
    ) async throws -> Orrery_Orchestrator_V1_Deployment {
        let consumer = consumer ?? c.consumer
        return try await consumer.with(c.orchestrator) { client in
            try await client.submitWorkload(
                .with {
                    $0.consumerAuthority = try consumer.authority(for: c.orchestrator)
                    $0.spec = spec; $0.idempotencyKey = UUID().uuidString
                })
        }
    }

    static func logs(_ id: String, _ c: Constellation) async throws -> String {
        let lines = try await c.consumer.with(c.orchestrator) { client in
            try await client.streamLogs(.with { $0.id = id }) { response in
                try await response.messages.reduce(into: [Orrery_Orchestrator_V1_LogLine]()) { $0.append($1) }
            }
        }
        return String(decoding: lines.flatMap(\.data), as: UTF8.self)
    }

    static func deployment(_ id: String, _ c: Constellation) async throws -> Orrery_Orchestrator_V1_Deployment {
        try await c.consumer.with(c.orchestrator) { try await $0.getDeployment(.with { $0.id = id }) }
    }

    /// The deployment once it ended (completed, failed or cancelled), or as it is after `limit`.
    static func ended(_ id: String, _ c: Constellation, within limit: Duration) async throws
        -> Orrery_Orchestrator_V1_Deployment
    {
        try await OrchestratorTests.ended(id, of: c.consumer, on: c.orchestrator, within: limit)
    }

    /// How many checkpoint archives the orchestrator keeps for a deployment, by the device that made them: once it
    /// is `expected`, or as it is after 20 s.
    static func storedArchives(of deployment: String, in database: TestDatabase, until expected: [String: Int64])
        async throws -> [String: Int64]
    {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let kept = try await database.withClient(schema: "orchestrator") { db in
                let rows = try await db.query(
                    """
                    SELECT o.device_did, count(DISTINCT c.sequence)::bigint FROM checkpoint_chunks c
                    JOIN offers o ON o.id = c.offer_id WHERE o.deployment_id = \(deployment) GROUP BY o.device_did
                    """, logger: Logger(label: "test"))
                var kept: [String: Int64] = [:]
                for try await (device, count) in rows.decode((String, Int64).self) { kept[device] = count }
                return kept
            }
            if kept == expected || ContinuousClock.now > deadline { return kept }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Starts an agent again on the state and config of the one `startAgent` started as `name`.
    static func restartAgent(_ name: String, _ network: TestNetwork, _ directory: URL, interval: Int)
        async throws -> RunningService
    {
        let config = directory.appendingPathComponent("\(name).json").path
        return try await RunningService.start(
            "device-agent",
            extraArguments: [
                "--state-dir", directory.appendingPathComponent("\(name)-state").path, "--config", config,
                "--liveness-interval-ms", "\(interval)",
            ],
            environment: network.environment(for: "device-agent"), directory: directory, configFile: config)
    }

    /// ping sends 1…last to pong, one after the other, `pause` seconds apart, and keeps the answers in answers.txt;
    /// pong (stateful) answers each with the number of pings it has seen.
    /// Ping sends 1 … `last` to pong, `pause` seconds apart; with `holdAfter`, it waits after that answer until the
    /// test opens its gate (`openPingGate`).
    static func pingPong(last: Int, pause: Double = 0.2, holdAfter: Int? = nil) throws
        -> Orrery_Orchestrator_V1_WorkloadSpec
    {
        var spec = OrchestratorTests.spec(cores: 2)
        var pingEnvironment = ["LAST": "\(last)", "PAUSE": "\(pause)"]
        if let holdAfter { pingEnvironment["HOLD_AFTER"] = "\(holdAfter)" }
        spec.allocations = [
            try allocation("ping", script: "ping.py", stateful: false, env: pingEnvironment),
            try allocation("pong", script: "pong.py", stateful: true, env: ["LAST": "\(last)"]),
        ]
        spec.allocations[0].outputs = ["answers.txt"]
        return spec
    }

    /// Waits until ping holds at its gate (`holdAfter`), then opens it: the file its sandbox waits for, in its work
    /// directory on its agent's host. Whatever the test does next happens mid-conversation, however slow the machine.
    static func openPingGate(after number: Int, of job: Orrery_Orchestrator_V1_Deployment, _ c: Constellation)
        async throws
    {
        let holding = try await eventually(timeout: .seconds(60)) {
            try await logs(job.id, c).contains("holding after \(number)\n")
        }
        let output = try await logs(job.id, c)
        #expect(holding, "\(output)")
        let host = try #require(job.assignments.first { $0.allocation == "ping" }?.deviceDid)
        let agent = try #require(c.agents.firstIndex { $0.did == host })
        let allocations = c.directory.appendingPathComponent("agent\(agent)-state/allocations")
        for run in try FileManager.default.contentsOfDirectory(atPath: allocations.path) where run.hasPrefix("off_") {
            try Data().write(to: allocations.appendingPathComponent("\(run)/work/go"))
        }
    }

    /// Waits until ping has logged the answer to ping `number`.
    static func waitForAnswer(_ number: Int, of job: String, _ c: Constellation) async throws {
        let talking = try await eventually(timeout: .seconds(60)) {
            try await logs(job, c).contains("answer \(number):\(number)")
        }
        let output = try await logs(job, c)
        #expect(talking, "\(output)")
    }

    /// The ping-pong deployment completes, and its answers are 1:1 … last:last — each ping answered once, in order.
    static func expectEveryPingAnsweredOnce(_ last: Int, _ job: String, _ c: Constellation) async throws {
        let final = try await ended(job, c, within: .seconds(120))
        let output = try await logs(job, c)
        #expect(final.state == .completed, "\(final.reason)\n\(output)")
        let outputs = try await c.consumer.with(c.orchestrator) { try await $0.getOutputs(.with { $0.id = job }) }
        let answers = outputs.files.first { $0.path == "answers.txt" }.map {
            String(decoding: $0.content, as: UTF8.self)
        }
        #expect(answers == (1...last).map { "\($0):\($0)" }.joined(separator: "\n") + "\n")
    }

    /// Waits until the counter of a running deployment has logged `count`.
    static func waitForCount(_ count: Int, of job: String, _ c: Constellation) async throws {
        let counting = try await eventually(timeout: .seconds(60)) {
            let state = try await deployment(job, c).state
            let output = try await logs(job, c)
            return state == .running && output.contains("count \(count)\n")
        }
        #expect(counting)
    }

    /// The counter moved by itself to `device`: running there, resumed from a count of at least 5, and the watch
    /// stream says why. Returns the deployment as it runs there.
    static func expectMovedByItself(
        _ job: String, to device: String, _ c: Constellation, because reason: String
    ) async throws -> Orrery_Orchestrator_V1_Deployment {
        let moved = try await eventually(timeout: .seconds(60)) {
            let now = try await deployment(job, c)
            let output = try await logs(job, c)
            return now.state == .running && now.assignments.first?.deviceDid == device
                && output.contains("resumed from")
        }
        let now = try await deployment(job, c)
        let output = try await logs(job, c)
        #expect(moved, "\(now.reason)\n\(output)")
        let line = try #require(output.split(separator: "\n").first { $0.hasPrefix("resumed from ") })
        #expect(try #require(Int(line.dropFirst("resumed from ".count))) >= 5)
        let events = try await c.consumer.with(c.orchestrator) { client in
            try await client.watchDeployment(.with { $0.id = job }) { response in
                var seen: [Orrery_Orchestrator_V1_DeploymentEvent] = []
                for try await event in response.messages {
                    seen.append(event)
                    if event.state == .running, event.deployment.assignments.first?.deviceDid == device { break }
                }
                return seen
            }
        }
        #expect(events.contains { $0.reason.contains(reason) }, "\(events.map(\.reason))")
        return now
    }

    /// Kills what a killed agent's sandboxes left running (a dead host would take them along).
    static func killSandboxes(of name: String, in directory: URL) {
        let runs = directory.appendingPathComponent("\(name)-state/allocations").path
        for run in (try? FileManager.default.contentsOfDirectory(atPath: runs)) ?? [] {
            if let text = try? String(contentsOfFile: "\(runs)/\(run)/wrapper.pid", encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                kill(-pid, SIGKILL)
            }
        }
    }

    @Test("two actors on two agents talk; one moves to a third; the conversation goes on, nothing lost or doubled")
    func conversationAcrossAMove() async throws {
        // Nothing here waits on a device being found lost: heartbeats every 3 s keep a loaded machine's slow agent
        // from counting as offline (then no device could take the moved replica).
        try await Self.withConstellation("move", prices: [5, 6, 500], interval: 3000) { c in
            // Ping holds after the 4th answer until the test opens its gate right before the move: 36 answers 0.6 s
            // apart follow (over 20 s), so the move lands mid-conversation however long the test took to get there.
            let last = 40
            let spec = try Self.pingPong(last: last, pause: 0.6, holdAfter: 4)
            let job = try await Self.submit(spec, c)
            // Wait until a few answers went by, then move pong to the device nobody uses.
            let pongHost = try #require(job.assignments.first { $0.allocation == "pong" }?.deviceDid)
            let spare = try #require(
                c.agents.map(\.did).first { did in !job.assignments.contains { $0.deviceDid == did } })
            try await Self.openPingGate(after: 4, of: job, c)
            let moved = try await c.consumer.with(c.orchestrator) { client in
                try await client.moveAllocation(
                    .with {
                        $0.id = job.id
                        $0.allocation = "pong"
                        $0.toDevice = spare
                    })
            }
            #expect(moved.assignments.first { $0.allocation == "pong" }?.deviceDid == spare)
            #expect(moved.reason.contains("moved on request after checkpoint"), "\(moved.reason)")
            #expect(pongHost != spare)
            // Each ping answered once, in order, by a pong that saw each ping once (its count carried over).
            try await Self.expectEveryPingAnsweredOnce(last, job.id, c)
            // The watch stream shows the move.
            let events = try await c.consumer.with(c.orchestrator) { client in
                try await client.watchDeployment(.with { $0.id = job.id }) { response in
                    try await response.messages.reduce(into: [Orrery_Orchestrator_V1_DeploymentEvent]()) {
                        $0.append($1)
                    }
                }
            }
            #expect(events.contains { $0.reason.contains("pong[0] moved") && $0.reason.contains(spare) })
        }
    }

    @Test(
        "a move no device can take is refused and the replica runs on; a replica moved with --to stays there when the automatic mover looks"
    )
    func explicitMoves() async throws {
        try await Self.withConstellation("explicit-move", prices: [5, 500, 6], relocationMargin: 30) { c in
            var spec = OrchestratorTests.spec(cores: 2)
            spec.allocations = [try Self.allocation("counter", script: "counter.py", stateful: true)]
            spec.allocations[0].checkpointIntervalSeconds = 1
            spec.allocations[0].constraints.allowedProviders = [c.agents[0].did, c.agents[1].did]
            let job = try await Self.submit(spec, c)
            #expect(job.assignments.first?.deviceDid == c.agents[0].did)
            #expect(
                try await eventually(timeout: .seconds(60)) { try await Self.deployment(job.id, c).state == .running })
            // To a device its constraints rule out: refused before anything is checkpointed; it runs on.
            await OrchestratorTests.expectStatus(.failedPrecondition, containing: "it runs on where it is") {
                _ = try await c.consumer.with(c.orchestrator) { client in
                    try await client.moveAllocation(
                        .with {
                            $0.id = job.id
                            $0.allocation = "counter"
                            $0.toDevice = c.agents[2].did
                        })
                }
            }
            let after = try await Self.deployment(job.id, c)
            #expect(after.state == .running && after.assignments.first?.deviceDid == c.agents[0].did, "\(after.reason)")
            // Moves and relocations place with what the spec was validated into at submit, stored typed, not with
            // the spec parsed again: with agent 1 denied in the stored request (its spec allows it), a move there is
            // refused too.
            let stored = try await c.database.withClient(schema: "orchestrator") { db in
                try await db.query("SELECT placement_request::text FROM deployments WHERE id = \(job.id)")
                    .decode(String.self).collected().first ?? ""
            }
            #expect(stored.contains(#""allowedProviders""#), "\(stored)")
            try await c.database.withClient(schema: "orchestrator") { db in
                _ = try await db.query(
                    """
                    UPDATE deployments SET placement_request = jsonb_set(placement_request,
                        '{allocations,0,constraints,deniedProviders}', to_jsonb(ARRAY[\(c.agents[1].did)]::text[]))
                    WHERE id = \(job.id)
                    """)
            }
            await OrchestratorTests.expectStatus(.failedPrecondition, containing: "it runs on where it is") {
                _ = try await c.consumer.with(c.orchestrator) { client in
                    try await client.moveAllocation(
                        .with {
                            $0.id = job.id
                            $0.allocation = "counter"
                            $0.toDevice = c.agents[1].did
                        })
                }
            }
            try await c.database.withClient(schema: "orchestrator") { db in
                _ = try await db.query(
                    "UPDATE deployments SET placement_request = \(stored)::jsonb WHERE id = \(job.id)")
            }

            // To the expensive device on request (`orrery move --to … --json`): pinned there, though one 99 % cheaper
            // could take it.
            let key = c.directory.appendingPathComponent("consumer.key").path
            let chain = c.directory.appendingPathComponent("consumer.ucan").path
            try KeyFile.write(c.consumer.key, to: key)
            try DelegationChain.write(c.consumer.chain).write(toFile: chain, atomically: true, encoding: .utf8)
            let (moveStatus, moveOutput) = try await ChildProcess.run(
                TestEnvironment.executable("orrery"),
                arguments: [
                    "move", job.id, "counter", "--to", c.agents[1].did, "--json", "--orchestrator",
                    "127.0.0.1:\(c.orchestrator.ready.grpcPort)", "--key", key, "--proof", chain,
                ])
            #expect(moveStatus == 0, "\(moveOutput)")
            let moved = try Orrery_Orchestrator_V1_Deployment(
                jsonString: moveOutput.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(moved.assignments.first?.deviceDid == c.agents[1].did && moved.assignments.first?.pinned == true)
            // A device joining makes the automatic mover look at every running deployment: it leaves this one.
            let passes = c.orchestrator.child.output.components(separatedBy: "looked for better placements").count
            let newcomer = try await Self.startAgent(
                "newcomer", price: 7, c.network, c.directory, registry: c.registry, orchestrator: c.orchestrator)
            defer { newcomer.service.child.signal(SIGKILL) }
            #expect(
                try await eventually(timeout: .seconds(30)) {
                    c.orchestrator.child.output.components(separatedBy: "looked for better placements").count > passes
                }, "no pass of the automatic mover after a device joined")
            let kept = try await Self.deployment(job.id, c)
            #expect(kept.state == .running && kept.assignments.first?.deviceDid == c.agents[1].did, "\(kept.reason)")
            #expect(!kept.reason.contains("cheaper"), "\(kept.reason)")
            _ = try await c.consumer.with(c.orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
        }
    }

    @Test("an agent killed -9 while its actor talks: restarted, the conversation goes on, nothing lost or doubled")
    func conversationAcrossAnAgentRestart() async throws {
        try await Self.withConstellation("restart", prices: [5, 6], interval: 3000) { c in
            // Heartbeats every 3 s: the restarted agent is back long before its device could be taken offline.
            var restarted: RunningService?
            defer { restarted?.child.signal(SIGKILL) }
            let last = 20
            var spec = try Self.pingPong(last: last)
            spec.allocations[0].constraints.allowedProviders = [c.agents[0].did]
            spec.allocations[1].constraints.allowedProviders = [c.agents[1].did]
            let job = try await Self.submit(spec, c)
            try await Self.waitForAnswer(4, of: job.id, c)
            // pong's agent dies mid-conversation (its sandbox runs on) and comes back on the same state.
            c.agents[1].service.child.signal(SIGKILL)
            _ = await c.agents[1].service.child.waitForExit()
            restarted = try await Self.restartAgent("agent1", c.network, c.directory, interval: 3000)
            // Each ping answered once, in order, by a pong that saw each ping once (its count carried over).
            try await Self.expectEveryPingAnsweredOnce(last, job.id, c)
        }
    }

    @Test(
        "actors whose agents hold lines to different orchestrator replicas talk, and one is moved through the other replica"
    )
    func acrossReplicas() async throws {
        // Heartbeats every 3 s: on a loaded machine a device whose heartbeat is late is not `suspect` (and passed
        // over by placement) after 2 s.
        try await Self.withConstellation("replicas", prices: [5, 500], interval: 3000) { c in
            // ping's device and a spare on the first replica; pong's device only on a second.
            let second = try await JobConstellation.startOrchestrator(
                c.database, c.network, c.directory, registry: c.registry, notary: c.notary,
                extraArguments: ["--relocation-margin-percent", "0"])
            defer { second.child.signal(SIGKILL) }
            let far = try await Self.startAgent(
                "far", price: 6, c.network, c.directory, registry: c.registry, orchestrator: second)
            defer { far.service.child.signal(SIGKILL) }
            try await OrchestratorTests.waitForFleet(c.consumer, c.orchestrator, devices: 3)
            try await OrchestratorTests.waitForFleet(c.consumer, second, devices: 3)
            // As in the move test: ping holds after the 3rd answer until the gate opens right before the move (a run
            // that waited for the 3rd answer instead ended its conversation before a loaded machine asked for the move).
            let last = 40
            var spec = try Self.pingPong(last: last, pause: 0.6, holdAfter: 3)
            spec.allocations[0].constraints.allowedProviders = [c.agents[0].did]
            spec.allocations[1].constraints.allowedProviders = [far.did, c.agents[1].did]
            let job = try await Self.submit(spec, c)
            #expect(job.assignments.first { $0.allocation == "ping" }?.deviceDid == c.agents[0].did)
            #expect(job.assignments.first { $0.allocation == "pong" }?.deviceDid == far.did)
            try await Self.openPingGate(after: 3, of: job, c)
            // Moved through the first replica: its checkpoint request reaches pong's agent through the second.
            let moved = try await c.consumer.with(c.orchestrator) { client in
                try await client.moveAllocation(
                    .with {
                        $0.id = job.id
                        $0.allocation = "pong"
                        $0.toDevice = c.agents[1].did
                    })
            }
            #expect(moved.assignments.first { $0.allocation == "pong" }?.deviceDid == c.agents[1].did)
            // Each ping answered once, in order, by a pong that saw each ping once (its count carried over).
            try await Self.expectEveryPingAnsweredOnce(last, job.id, c)
        }
    }

    @Test(
        "a stateful counter whose host is killed resumes elsewhere from its last checkpoint; a tampered archive is refused"
    )
    func counterResumesAfterKill() async throws {
        for tamper in [false, true] {
            try await Self.withConstellation("counter", prices: [5, 500]) { c in
                var spec = OrchestratorTests.spec(cores: 2)
                spec.allocations = [try Self.allocation("counter", script: "counter.py", stateful: true)]
                spec.allocations[0].checkpointIntervalSeconds = 1
                // Its state takes 0.4 s to write, so requests overlap each other and the schedule's.
                let slowWrite = spec.allocations[0].artifact.text.replacingOccurrences(
                    of: "            with lock:\n                json.dump",
                    with: "            time.sleep(0.4)\n            with lock:\n                json.dump")
                #expect(slowWrite != spec.allocations[0].artifact.text)
                spec.allocations[0].artifact.text = slowWrite
                let job = try await Self.submit(spec, c)
                #expect(job.assignments.first?.deviceDid == c.agents[0].did)
                // Two checkpoints stored, then the host dies.
                #expect(
                    try await eventually(timeout: .seconds(60)) {
                        try await c.database.withClient(schema: "orchestrator") { db in
                            let rows = try await db.query(
                                "SELECT count(*) FROM checkpoints WHERE deployment_id = \(job.id)",
                                logger: Logger(label: "test"))
                            for try await count in rows.decode(Int.self) { return count >= 2 }
                            return false
                        }
                    })
                if !tamper {
                    // On request too, with the CLI (the operator may act on any deployment): each record is
                    // signed by the device and the actor and logged by the notary. Three requests at once, beside
                    // the schedule's: each answered by a checkpoint of its own, taken one after another.
                    let outputs = try await withThrowingTaskGroup(of: (Int32, String).self) { group in
                        for _ in 0..<3 {
                            group.addTask {
                                try await ChildProcess.run(
                                    TestEnvironment.executable("orrery"),
                                    arguments: [
                                        "checkpoint", job.id, "--json", "--orchestrator",
                                        "127.0.0.1:\(c.orchestrator.ready.grpcPort)",
                                        "--key",
                                        c.directory.appendingPathComponent("credentials/operator.key").path,
                                    ])
                            }
                        }
                        return try await group.reduce(into: []) { $0.append($1) }
                    }
                    var answers: [(Orrery_Orchestrator_V1_StoredCheckpoint, Orrery_Actors_V1_Checkpoint)] = []
                    for (status, output) in outputs {
                        #expect(status == 0, "\(output)")
                        let stored = try #require(
                            try Orrery_Orchestrator_V1_CheckpointDeploymentResponse(jsonString: output).checkpoints
                                .first)
                        answers.append(
                            (stored, try Orrery_Actors_V1_Checkpoint(serializedBytes: stored.record.payload)))
                    }
                    #expect(Set(answers.map(\.1.sequence)).count == 3, "\(answers.map(\.1.sequence))")
                    #expect(Set(answers.map(\.1.requestID)).count == 3)
                    for (stored, record) in answers {
                        #expect(record.sequence >= 3 && record.reason == "request" && !record.requestID.isEmpty)
                        #expect(stored.deviceDid == c.agents[0].did)
                    }
                    let (stored, record) = try #require(answers.first)
                    let actor = try DID(record.actorDid)
                    try SignedMessage.verify(
                        stored.record, type: Orrery_Actors_V1_Checkpoint.protoMessageName,
                        requiring: [try DID(c.agents[0].did), actor])
                    #expect(stored.logIndex > 0)
                    let parties = try ContractParties(network: c.network)
                    let leaves = try await parties.withNotary(c.notary) {
                        try await $0.getEntries(
                            .with {
                                $0.start = stored.logIndex; $0.end = stored.logIndex + 1
                            })
                    }.leaves
                    let entry = try Orrery_Notary_V1_LogEntry(
                        serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: try #require(leaves.first))
                            .payload)
                    #expect(entry.kind == .checkpoint && entry.act == stored.record)
                }
                c.agents[0].service.child.signal(SIGKILL)
                Self.killSandboxes(of: "agent0", in: c.directory)
                if tamper {
                    // After the host died (so no newer, intact checkpoint follows): one byte of the stored archive.
                    _ = try await c.database.withClient(schema: "orchestrator") { db in
                        try await db.query(
                            "UPDATE checkpoint_chunks SET data = set_byte(data, 20, (get_byte(data, 20) + 1) % 256)",
                            logger: Logger(label: "test"))
                    }
                }
                var final = try await Self.deployment(job.id, c)
                let deadline = ContinuousClock.now + .seconds(90)
                while ContinuousClock.now < deadline {
                    final = try await Self.deployment(job.id, c)
                    if final.state == .failed { break }
                    if final.state == .running, final.assignments.first?.deviceDid == c.agents[1].did,
                        try await Self.logs(job.id, c).contains("resumed from")
                    {
                        break
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                if tamper {
                    #expect(final.state == .failed)
                    #expect(final.reason.contains("the checkpoint archive was altered"), "\(final.reason)")
                    return
                }
                // Resumed: it counts on from the checkpointed value.
                let lastRevision = final.revision
                let history = try await c.consumer.with(c.orchestrator) { client in
                    try await client.watchDeployment(.with { $0.id = job.id }) { response in
                        var reasons: [String] = []
                        for try await event in response.messages {
                            reasons.append("\(event.state): \(event.reason)")
                            if event.revision >= lastRevision { break }
                        }
                        return reasons
                    }
                }
                #expect(
                    final.state == .running && final.assignments.first?.deviceDid == c.agents[1].did,
                    "\(history.joined(separator: "\n"))")
                // Its first count after resuming is the checkpointed value plus one (other allocations' lines may
                // come between in the merged log).
                let continued = try await eventually(timeout: .seconds(20)) {
                    let lines = try await Self.logs(job.id, c).split(separator: "\n")
                    guard let index = lines.firstIndex(where: { $0.hasPrefix("resumed from ") }),
                        let resumed = Int(lines[index].dropFirst("resumed from ".count)),
                        let next = lines[(index + 1)...].first(where: { $0.hasPrefix("count ") })
                    else { return false }
                    return resumed >= 1 && next == "count \(resumed + 1)"
                }
                let output = try await Self.logs(job.id, c)
                #expect(continued, "\(output)")
                // Once it checkpointed twice on its new host, the archives stored before it moved are gone: only the
                // latest two of the actor are kept.
                let kept = try await Self.storedArchives(of: job.id, in: c.database, until: [c.agents[1].did: 2])
                #expect(kept == [c.agents[1].did: 2])
                _ = try await c.consumer.with(c.orchestrator) {
                    try await $0.cancelDeployment(.with { $0.id = job.id })
                }
            }
        }
    }

    /// A stateful workload whose first checkpoint writes 80 MiB of random bytes (printing their sha256); resumed,
    /// it prints the sha256 of what it found.
    static func bigStateSpec() throws -> Orrery_Orchestrator_V1_WorkloadSpec {
        let folder = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/examples/actors")
        let mailbox = try String(contentsOf: folder.appendingPathComponent("mailbox.py"), encoding: .utf8)
        let program = """
            import hashlib, os, threading, time
            blob = os.path.join(os.environ["ORRERY_CHECKPOINT_DIR"], "blob")
            def digest(path):
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for piece in iter(lambda: f.read(1 << 20), b""):
                        h.update(piece)
                return h.hexdigest()
            print("resumed blob " + digest(blob) if os.path.exists(blob) else "fresh", flush=True)
            def serve():
                box = Mailbox()
                while True:
                    line = box.receive()
                    if line["op"] == "checkpoint":
                        if not os.path.exists(blob):
                            with open(blob + ".part", "wb") as f:
                                for _ in range(80):
                                    f.write(os.urandom(1 << 20))
                            os.rename(blob + ".part", blob)
                            print("blob " + digest(blob), flush=True)
                        box.call(op="checkpointed", id=line["id"])
            threading.Thread(target=serve, daemon=True).start()
            while True:
                time.sleep(1)
            """
        var spec = OrchestratorTests.spec(cores: 2)
        var allocation = try Self.allocation("big", script: "counter.py", stateful: true)
        allocation.artifact.text = mailbox + "\n" + program
        allocation.resources.ramMib = 256
        spec.allocations = [allocation]
        return spec
    }

    /// The sha256 a log line starting with `prefix` names.
    static func digest(after prefix: String, in output: String) -> String? {
        output.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }

    @Test(
        "a checkpoint over 64 MiB goes through the content store; a move resumes from it byte for byte; a stored archive altered is refused"
    )
    func bigCheckpoint() async throws {
        for tamper in [false, true] {
            try await Self.withConstellation("big-checkpoint", prices: [5, 500]) { c in
                let job = try await Self.submit(try Self.bigStateSpec(), c)
                #expect(job.assignments.first?.deviceDid == c.agents[0].did)
                #expect(
                    try await eventually(timeout: .seconds(60)) {
                        try await Self.deployment(job.id, c).state == .running
                    })
                let query = { (sql: PostgresQuery) in
                    try await c.database.withClient(schema: "orchestrator") { db in
                        try await db.query(sql, logger: Logger(label: "test")).decode(Int64.self).collected()
                    }
                }
                if !tamper {
                    let moved = try await c.consumer.with(c.orchestrator) { client in
                        try await client.moveAllocation(
                            .with {
                                $0.id = job.id
                                $0.allocation = "big"
                                $0.toDevice = c.agents[1].did
                            })
                    }
                    #expect(moved.assignments.first?.deviceDid == c.agents[1].did, "\(moved.reason)")
                    var output = ""
                    #expect(
                        try await eventually(timeout: .seconds(60)) {
                            output = try await Self.logs(job.id, c)
                            return output.contains("resumed blob ")
                        }, "\(output)")
                    let written = try #require(Self.digest(after: "blob ", in: output), "\(output)")
                    #expect(Self.digest(after: "resumed blob ", in: output) == written, "\(output)")
                } else {
                    let stored = try await c.consumer.with(c.orchestrator) {
                        try await $0.checkpoint(.with { $0.id = job.id })
                    }
                    #expect(stored.checkpoints.count == 1)
                    c.agents[0].service.child.signal(SIGKILL)
                    Self.killSandboxes(of: "agent0", in: c.directory)
                    // One byte of the stored archive, after its host died (so no newer, intact one follows).
                    let altered = try await query(
                        """
                        WITH changed AS (
                            UPDATE output_chunks SET data = set_byte(data, 20, (get_byte(data, 20) + 1) % 256)
                            WHERE path LIKE '/checkpoints/%' AND "offset" = 0 RETURNING 1
                        ) SELECT count(*)::bigint FROM changed
                        """)
                    #expect(altered == [1])
                    var final = try await Self.deployment(job.id, c)
                    #expect(
                        try await eventually(timeout: .seconds(90)) {
                            final = try await Self.deployment(job.id, c)
                            return final.state == .failed
                        }, "\(final.state): \(final.reason)")
                    #expect(final.reason.contains("the checkpoint archive was altered"), "\(final.reason)")
                }
                // The archive went to the content store, not to checkpoint rows, and is listed as no output.
                let big = try await query(
                    "SELECT size FROM checkpoints WHERE deployment_id = \(job.id) ORDER BY sequence DESC LIMIT 1")
                #expect((big.first ?? 0) > 64 << 20, "\(big)")
                let archives = try await query(
                    """
                    SELECT s.size FROM stored_outputs s JOIN offers o ON o.id = s.offer_id
                    WHERE o.deployment_id = \(job.id) AND s.checkpoint_sequence > 0 AND s.complete
                    """)
                #expect(archives.contains(big.first ?? -1), "\(archives)")
                let rows = try await query(
                    """
                    SELECT count(*)::bigint FROM checkpoint_chunks c JOIN offers o ON o.id = c.offer_id
                    WHERE o.deployment_id = \(job.id)
                    """)
                #expect(rows == [0])
                let listed = try await query(
                    """
                    SELECT count(*)::bigint FROM outputs x JOIN offers o ON o.id = x.offer_id
                    WHERE o.deployment_id = \(job.id)
                    """)
                #expect(listed == [0])
                if !tamper {
                    _ = try await c.consumer.with(c.orchestrator) {
                        try await $0.cancelDeployment(.with { $0.id = job.id })
                    }
                }
            }
        }
    }

    @Test(
        "an agent killed -9 halfway through sending a checkpoint archive over 64 MiB sends the rest after its restart: the record is stored and answers the request"
    )
    func bigCheckpointSurvivesAKill() async throws {
        // Heartbeats every 3 s: the restarted agent is back long before its device could be taken offline.
        try await Self.withConstellation("big-checkpoint-kill", prices: [], interval: 3000) { c in
            let agent = try await TestAgent.start(
                "killed", owner: #"{"prices": {"per_core_hour": 5}}"#,
                orchestrators: ["127.0.0.1:\(c.orchestrator.ready.grpcPort)"],
                registry: "127.0.0.1:\(c.registry.ready.grpcPort)", network: c.network, directory: c.directory,
                interval: 3000, environment: ["ORRERY_CRASH_AT": "agent.checkpoint-half-stored"])
            defer { agent.service.child.signal(SIGKILL) }
            try await OrchestratorTests.waitForFleet(c.consumer, c.orchestrator, devices: 1)
            let job = try await Self.submit(try Self.bigStateSpec(), c)
            #expect(
                try await eventually(timeout: .seconds(60)) { try await Self.deployment(job.id, c).state == .running })
            // Asked for a checkpoint: the agent dies halfway through sending its archive; whoever asked waits.
            let request = Task {
                try await c.consumer.with(c.orchestrator) { try await $0.checkpoint(.with { $0.id = job.id }) }
            }
            let died = await agent.service.child.waitForExit(timeout: .seconds(120))
            #expect(died != nil, "the agent did not reach its crash point")
            let restarted = try await Self.restartAgent("killed", c.network, c.directory, interval: 3000)
            defer { restarted.child.signal(SIGKILL) }
            let stored = try await request.value
            let record = try Orrery_Actors_V1_Checkpoint(
                serializedBytes: try #require(stored.checkpoints.first).record.payload)
            #expect(record.size > 64 << 20 && record.reason == "request", "\(record)")
            #expect(
                restarted.child.output.contains("checkpoint archive resumed"), "\(restarted.child.output.suffix(2000))")
            _ = try await c.consumer.with(c.orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
        }
    }

    @Test("the stateful-counter example runs as an actor and checkpoints on request: a record signed for its address")
    func statefulCounterExample() async throws {
        try await Self.withConstellation("example", prices: [5]) { c in
            let spec = try WorkloadSpecFile.read(
                TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/examples/stateful-counter.yaml").path)
            let job = try await Self.submit(spec, c)
            try await Self.waitForCount(3, of: job.id, c)
            let now = try await Self.deployment(job.id, c)
            let output = try await Self.logs(job.id, c)
            #expect(now.state == .running, "\(now.reason)\n\(output)")
            let stored = try await c.consumer.with(c.orchestrator) {
                try await $0.checkpoint(.with { $0.id = job.id })
            }
            let record = try Orrery_Actors_V1_Checkpoint(
                serializedBytes: try #require(stored.checkpoints.first).record.payload)
            #expect(record.address == "actor://\(job.id)/counter/0" && record.sequence >= 1 && record.size > 0)
            _ = try await c.consumer.with(c.orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
        }
    }

    @Test("a running stateful replica moves by itself to a markedly cheaper device that comes online, and counts on")
    func movesToACheaperDevice() async throws {
        try await Self.withConstellation("cheaper", prices: [500], relocationMargin: 30) { c in
            var spec = OrchestratorTests.spec(cores: 2)
            spec.allocations = [try Self.allocation("counter", script: "counter.py", stateful: true)]
            let job = try await Self.submit(spec, c)
            #expect(job.assignments.first?.deviceDid == c.agents[0].did)
            try await Self.waitForCount(5, of: job.id, c)
            // A device at 1 % of the price joins: the counter moves there (checkpointed, resumed), unasked.
            let cheap = try await Self.startAgent(
                "cheap", price: 5, c.network, c.directory, registry: c.registry, orchestrator: c.orchestrator)
            defer { cheap.service.child.signal(SIGKILL) }
            _ = try await Self.expectMovedByItself(
                job.id, to: cheap.did, c, because: "counter[0] moved: moved to a device 99% cheaper")
            _ = try await c.consumer.with(c.orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
        }
    }

    @Test("a running stateful replica moves by itself to a device as cheap and markedly nearer its latency target")
    func movesToANearerDevice() async throws {
        let madrid = (latitude: 40.42, longitude: -3.70)
        let paris = (latitude: 48.85, longitude: 2.35)
        try await Self.withConstellation("nearer", prices: [100], relocationMargin: 30, places: [madrid]) { c in
            var spec = OrchestratorTests.spec(cores: 2)
            var counter = try Self.allocation("counter", script: "counter.py", stateful: true)
            // Users in Paris: within 100 ms is required, nearer is better.
            counter.constraints.latency = [
                .with {
                    $0.point = .with {
                        $0.latitude = paris.latitude
                        $0.longitude = paris.longitude
                    }
                    $0.maxRttMs = 100
                }
            ]
            spec.allocations = [counter]
            let job = try await Self.submit(spec, c)
            #expect(job.assignments.first?.deviceDid == c.agents[0].did)
            try await Self.waitForCount(5, of: job.id, c)
            // A device in Paris at the same price joins: the counter moves there, unasked.
            let near = try await Self.startAgent(
                "near", price: 100, c.network, c.directory, registry: c.registry, orchestrator: c.orchestrator,
                at: paris)
            defer { near.service.child.signal(SIGKILL) }
            let now = try await Self.expectMovedByItself(
                job.id, to: near.did, c,
                because: "counter[0] moved: moved to a device nearer its latency targets (an estimated 2.0 ms")
            #expect(now.assignments.first?.hourlyPrice == job.assignments.first?.hourlyPrice)
            _ = try await c.consumer.with(c.orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
        }
    }

    @Test(
        "an actor messages another organisation's actor only once that deployment's consumer granted it, and back (orrery actor grant)"
    )
    func acrossDeployments() async throws {
        try await Self.withConstellation("across", prices: [5, 6]) { c in
            // Two organisations: pong is another consumer's.
            let other = try OrchestratorTests.Consumer(operatorKey: c.network.operatorKey)
            var pongSpec = OrchestratorTests.spec(cores: 2)
            pongSpec.allocations = [try Self.allocation("pong", script: "pong.py", stateful: false, env: ["LAST": "3"])]
            let pong = try await Self.submit(pongSpec, c, as: other)
            var pingSpec = OrchestratorTests.spec(cores: 2)
            pingSpec.allocations = [
                try Self.allocation(
                    "ping", script: "ping.py", stateful: false,
                    env: ["LAST": "3", "PONG": "actor://\(pong.id)/pong/0", "PAUSE": "0"])
            ]
            pingSpec.allocations[0].outputs = ["answers.txt"]
            let ping = try await Self.submit(pingSpec, c)
            // Without a grant the send is refused at the sending agent, with the way out in the reason.
            let refused = try await eventually(timeout: .seconds(60)) {
                try await Self.logs(ping.id, c).contains("unauthorised: no grant lets this actor message deployment")
            }
            let before = try await Self.logs(ping.id, c)
            #expect(refused, "\(before)")
            // Each consumer grants the other's actor access to its own deployment, with the CLI.
            let cli = TestEnvironment.executable("orrery")
            func connection(_ consumer: OrchestratorTests.Consumer, _ name: String) throws -> [String] {
                try consumer.cliArguments(c.orchestrator, in: c.directory, name: name)
            }
            let mine = try connection(c.consumer, "consumer")
            let theirs = try connection(other, "other")
            // Pong is listed (to its consumer) once its agent started it and announced its key.
            let pongListed = try await eventually(timeout: .seconds(60)) {
                let (listed, actors) = try await ChildProcess.run(cli, arguments: ["actors", pong.id] + theirs)
                return listed == 0 && actors.contains("actor://\(pong.id)/pong/0  did:key:")
            }
            #expect(pongListed)
            let (foreign, _) = try await ChildProcess.run(cli, arguments: ["actors", pong.id] + mine)
            #expect(foreign != 0, "another consumer's deployment is not listed")
            // The reply direction first: pong must be able to answer the first ping it takes.
            for (from, to, caller) in [
                ("actor://\(pong.id)/pong/0", ping.id, mine), ("actor://\(ping.id)/ping/0", pong.id, theirs),
            ] {
                let (status, output) = try await ChildProcess.run(
                    cli, arguments: ["actor", "grant", "--from", from, "--to-deployment", to] + caller)
                #expect(status == 0 && output.contains("may message the actors of \(to)"), "\(output)")
            }
            // Nobody grants access to someone else's deployment.
            let (intrusion, _) = try await ChildProcess.run(
                cli,
                arguments: ["actor", "grant", "--from", "actor://\(ping.id)/ping/0", "--to-deployment", pong.id] + mine)
            #expect(intrusion != 0)
            // A delegation for the right actor that does not hold the sender to itself is refused, and says so.
            let pingDID = try await c.consumer.with(c.orchestrator) { client in
                try await client.listActors(.with { $0.id = ping.id }).actors.first?.actorDid
            }
            let loose = Delegation.issue(
                by: other.key, to: try DID(try #require(pingDID)), subject: other.key.did,
                command: try Command("/orrery/actor"),
                policy: try Policy(try IPLDJSON.parse(#"[["like", ".to", "actor://\#(pong.id)/*"]]"#)),
                expiration: Int64(Date().timeIntervalSince1970) + 600)
            let refusal = try await other.with(c.orchestrator) { client in
                do {
                    _ = try await client.grantActorAccess(
                        .with {
                            $0.from = "actor://\(ping.id)/ping/0"
                            $0.toDeployment = pong.id
                            $0.delegation = Data(loose.envelope.bytes)
                        })
                    return "granted"
                } catch let error as RPCError {
                    return "\(error.code): \(error.message)"
                }
            }
            #expect(refusal.contains("invalidArgument") && refusal.contains("does not fix .from"), "\(refusal)")
            let final = try await Self.ended(ping.id, c, within: .seconds(60))
            let output = try await Self.logs(ping.id, c)
            #expect(final.state == .completed, "\(final.reason)\n\(output)")
            let outputs = try await c.consumer.with(c.orchestrator) {
                try await $0.getOutputs(.with { $0.id = ping.id })
            }
            #expect(outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "1:1\n2:2\n3:3\n")
        }
    }
}
