import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// What an agent and the orchestrators agree on across lines: a Deploy starts once however many replicas send it,
/// each line has its own outbox, and capacity promised to an offer that was withdrawn is free again.
@Suite(
    "Agent lines: one start per Deploy, a line per orchestrator replica, promises reconciled", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct AgentLinesTests {
    @Test(
        "an agent with lines to two orchestrator replicas gets each Deploy from one of them; that replica killed while the device starts it, the other takes the instruction over, the device starts it once, and the job completes"
    )
    func twoLines() async throws {
        try await ServiceBed.run("orrery-two-lines") { bed in
            let (network, directory) = (bed.network, bed.directory)
            let first = try await bed.startOrchestrator()
            defer { first.child.signal(SIGKILL) }
            let second = try await bed.startOrchestrator()
            defer { second.child.signal(SIGKILL) }
            let agent = try await bed.startAgent(
                "twin", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [first, second])
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, second, devices: 1)
            // Both replicas hold a line of the device (each delivers the Deploy on its own line).
            try await Self.waitForLines(of: agent, count: 2)

            // The artifact's download is held until the test lets it go: the replica that sends the Deploy dies while
            // the device starts it, and the other takes over once its claim lapsed (5 s), while the device is still
            // starting it (not a fixed delay, which a loaded machine can outlast).
            let script = "#!/bin/sh\necho started >> /work/runs.txt; sleep 2; cat /work/runs.txt > out.txt\n"
            let served = directory.appendingPathComponent("job.sh")
            let gate = directory.appendingPathComponent("release-download")
            try script.write(to: served, atomically: true, encoding: .utf8)
            let server = try ChildProcess(
                URL(fileURLWithPath: "/usr/bin/python3"), arguments: ["-c", Self.gatedServer, served.path, gate.path],
                outputDirectory: directory)
            defer { server.signal(SIGKILL) }
            let port = try await server.printedPort()
            var spec = OrchestratorTests.spec(cores: 1)
            spec.allocations[0].artifact = .with {
                $0.url = "http://127.0.0.1:\(port)/job.sh"
                $0.sha256 = AgentChannelTests.sha256(script)
            }
            spec.allocations[0].command = "/artifact/job.sh"
            spec.allocations[0].resources.ramMib = 64
            spec.allocations[0].outputs = ["out.txt"]
            let job = try await consumer.submit(spec, to: first, paid: false)
            // One replica claims and sends the Deploy; the other, holding a line to the same device, sees it held.
            func logged(_ service: RunningService, _ what: String) -> Bool {
                service.child.output.split(separator: "\n").contains {
                    $0.contains(what) && $0.contains(#""message":"deploy:off_"#)
                }
            }
            var sender: RunningService?
            let sent = ContinuousClock.now + .seconds(30)
            while sender == nil, ContinuousClock.now < sent {
                try await Task.sleep(for: .milliseconds(50))
                sender = [first, second].first { logged($0, "sent to agent") }
            }
            let instructor = try #require(sender, "no replica sent the Deploy")
            // The replica logs "sent" as it hands the Deploy to its line: killed at once, the bytes may never leave
            // it. The device asking for the artifact is the evidence that it received the Deploy and is starting it.
            let fetching = ContinuousClock.now + .seconds(30)
            while !server.output.contains("GET /job.sh"), ContinuousClock.now < fetching {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(server.output.contains("GET /job.sh"), "the device never asked for the artifact")
            let other = instructor.ready.grpcPort == first.ready.grpcPort ? second : first
            let held = ContinuousClock.now + .seconds(4)
            while !logged(other, "another replica delivers this instruction"), ContinuousClock.now < held {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(
                logged(other, "another replica delivers this instruction"), "\(other.child.output.suffix(3000))")
            #expect(!logged(other, "sent to agent"), "both replicas sent the Deploy")
            instructor.child.signal(SIGKILL)
            // The other replica takes the instruction over and sends it; only then does the download finish.
            let takeover = ContinuousClock.now + .seconds(60)
            while !logged(other, "sent to agent"), ContinuousClock.now < takeover {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(logged(other, "sent to agent"), "\(other.child.output.suffix(3000))")
            let repeated = ContinuousClock.now + .seconds(30)
            while !agent.service.child.output.contains("a repeated deploy of an allocation still starting"),
                ContinuousClock.now < repeated
            {
                try await Task.sleep(for: .milliseconds(50))
            }
            try Data().write(to: gate)
            let events = try await consumer.with(other) { client in
                try await client.watchDeployment(.with { $0.id = job.id }) { response in
                    try await response.messages.reduce(into: [Orrery_Orchestrator_V1_DeploymentEvent]()) {
                        $0.append($1)
                    }
                }
            }
            #expect(events.last?.state == .completed, "\(events.map { "\($0.state): \($0.reason)" })")
            let outputs = try await consumer.with(other) { try await $0.getOutputs(.with { $0.id = job.id }) }
            #expect(
                outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "started\n", "ran once")
            // The other replica took over the instruction, and the device, still starting it, started nothing twice.
            #expect(
                agent.service.child.output.contains("a repeated deploy of an allocation still starting"),
                "\(agent.service.child.output.suffix(3000))")
            #expect(!agent.service.child.output.contains("failed to start"), "\(agent.service.child.output)")
            // Tree heads from two replicas cross in flight: none of that is taken for a rewritten log.
            #expect(!agent.service.child.output.contains("not consistent with what this device saw"))
        }
    }

    @Test(
        "an offer withdrawn after the device bid (its deployment failed elsewhere) frees the capacity the device promised to it — at once, not at its next inventory"
    )
    func withdrawnPromise() async throws {
        try await JobConstellation.run(
            "orrery-withdrawn-promise", orchestratorArguments: ["--offer-timeout-ms", "2000"]
        ) { constellation in
            let database = constellation.database
            let network = constellation.network
            let directory = constellation.directory
            let registry = constellation.registry
            let orchestrator = constellation.orchestrator
            // Its inventory (which the orchestrator would answer with a Stop) only every 10 minutes: the Stop that
            // frees the promise here is the one sent when the offer is withdrawn.
            let agent = try await constellation.startAgent(
                "promiser", owner: #"{"prices": {"per_core_hour": 5}}"#,
                extraArguments: ["--inventory-interval-ms", "600000"])
            defer { agent.service.child.signal(SIGKILL) }
            // A device that never answers, the only one with the label the second allocation needs.
            let silent = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
            _ = try await silent.withRegistry(registry) { client in
                try await silent.join(
                    client,
                    capabilities: .with {
                        $0.architecture = "x86_64"
                        $0.cpuCores = 4
                        $0.ramBytes = 8 << 30
                        $0.diskBytes = 100 << 30
                        $0.labels = ["role": "silent"]
                        $0.prices = .with { $0.perCoreHour = 1 }
                    })
            }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 2)
            let observer = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
            let cores = try await observer.withRegistry(registry) {
                try await $0.getDevice(.with { $0.did = agent.did }).capabilities.cpuCores
            }

            // Every core of the agent's device for one allocation, the other on the silent device: the agent bids,
            // the silent device's offer lapses, nothing else can take it, and the deployment fails.
            var spec = OrchestratorTests.spec(cores: cores)
            spec.allocations[0].resources.ramMib = 32
            spec.allocations[0].outputs = []
            spec.allocations[0].artifact = .with { $0.text = "true" }
            spec.allocations[0].constraints.allowedProviders = [agent.did]
            var other = spec.allocations[0]
            other.name = "beside"
            other.resources.cpuCores = 1
            other.constraints = .with { $0.labels = ["role": "silent"] }
            spec.allocations.append(other)
            let doomed = try await submit(spec, consumer: consumer, orchestrator: orchestrator)
            #expect(Set(doomed.assignments.map(\.deviceDid)) == [agent.did, silent.key.did.string])
            let ended = try await Self.watchUntilEnd(doomed.id, consumer: consumer, orchestrator: orchestrator)
            #expect(ended?.state == .failed, "\(ended.map { "\($0.state): \($0.reason)" } ?? "no end")")
            let found = try await database.withClient(schema: "orchestrator") { db -> String? in
                let rows = try await db.query(
                    "SELECT id FROM offers WHERE deployment_id = \(doomed.id) AND device_did = \(agent.did) AND bid IS NOT NULL"
                )
                for try await id in rows.decode(String.self) { return id }
                return nil
            }
            let promisedOffer = try #require(found, "the agent bid on its offer")

            // The agent is told the offer is gone and frees what it promised, with the orchestrator's reason.
            let ledger = directory.appendingPathComponent("promiser-state/commitments.json")
            var held: Int?
            let released = ContinuousClock.now + .seconds(40)
            repeat {
                try await Task.sleep(for: .milliseconds(200))
                held = Self.promisedCores(ledger, offer: promisedOffer)
            } while held != 0 && ContinuousClock.now < released
            #expect(held == 0, "the withdrawn offer still holds \(held.map(String.init) ?? "no record of") cores")
            #expect(agent.service.child.output.contains("withdrawn: "), "\(agent.service.child.output.suffix(3000))")

            // So a job that needs the whole device again runs there.
            var whole = OrchestratorTests.spec(cores: cores)
            whole.allocations[0].resources.ramMib = 32
            whole.allocations[0].outputs = []
            whole.allocations[0].artifact = .with { $0.text = "echo whole" }
            let job = try await submit(whole, consumer: consumer, orchestrator: orchestrator)
            let end = try await Self.watchUntilEnd(job.id, consumer: consumer, orchestrator: orchestrator)
            #expect(end?.state == .completed, "\(end.map { "\($0.state): \($0.reason)" } ?? "no end")")
            #expect(end?.deployment.assignments.map(\.deviceDid) == [agent.did])
        }
    }

    @Test("a device that cannot journal its promise (its state directory unwritable) declines the offer and says why")
    func unjournalledPromiseDeclined() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-unjournalled") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry = try await JobConstellation.startRegistry(database, network, directory)
                defer { registry.child.signal(SIGKILL) }
                let orchestrator = try await JobConstellation.startOrchestrator(
                    database, network, directory, registry: registry, extraArguments: ["--offer-timeout-ms", "20000"])
                defer { orchestrator.child.signal(SIGKILL) }
                let agent = try await TestAgent.start(
                    "cramped", owner: #"{"prices": {"per_core_hour": 5}}"#,
                    orchestrators: ["127.0.0.1:\(orchestrator.ready.grpcPort)"],
                    registry: "127.0.0.1:\(registry.ready.grpcPort)", network: network, directory: directory)
                defer { agent.service.child.signal(SIGKILL) }
                let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
                try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
                // The promise journal cannot be written any more (a directory where the file goes: even root fails).
                let journal = directory.appendingPathComponent("cramped-state/commitments.json")
                try? FileManager.default.removeItem(at: journal)
                try FileManager.default.createDirectory(at: journal, withIntermediateDirectories: false)
                var spec = OrchestratorTests.spec(cores: 1)
                spec.allocations[0].resources.ramMib = 32
                spec.allocations[0].outputs = []
                let job = try await submit(spec, consumer: consumer, orchestrator: orchestrator)
                let end = try await Self.watchUntilEnd(job.id, consumer: consumer, orchestrator: orchestrator)
                #expect(end?.state == .failed)
                #expect(
                    end?.reason.contains("declined: this device cannot record its commitment") == true,
                    "\(end?.reason ?? "no end")")
            }
        }
    }

    private func submit(
        _ spec: Orrery_Orchestrator_V1_WorkloadSpec, consumer: OrchestratorTests.Consumer,
        orchestrator: RunningService
    ) async throws -> Orrery_Orchestrator_V1_Deployment {
        try await consumer.submit(spec, to: orchestrator, paid: false)
    }

    /// An HTTP server that answers every GET with the file it is given, late (2 s, or the seconds it is given);
    /// prints its port.
    /// Serves the file `argv[1]`, each answer held until the file `argv[2]` exists (at most 5 minutes).
    static let gatedServer = """
        import http.server, os, socketserver, sys, time
        body = open(sys.argv[1], 'rb').read()
        class Gated(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                print('GET', self.path, flush=True)
                deadline = time.monotonic() + 300
                while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        server = socketserver.ThreadingTCPServer(('127.0.0.1', 0), Gated)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """

    /// The deployment's last event once it ended (the watch closes then).
    static func watchUntilEnd(
        _ id: String, consumer: OrchestratorTests.Consumer, orchestrator: RunningService
    ) async throws -> Orrery_Orchestrator_V1_DeploymentEvent? {
        try await consumer.with(orchestrator) { client in
            try await client.watchDeployment(.with { $0.id = id }) { response in
                var last: Orrery_Orchestrator_V1_DeploymentEvent?
                for try await event in response.messages { last = event }
                return last
            }
        }
    }

    /// The cores the agent's commitment ledger holds for `offer` (nil when it has no record of it).
    static func promisedCores(_ ledger: URL, offer: String) -> Int? {
        guard let data = try? Data(contentsOf: ledger),
            let promises = (try? JSONSerialization.jsonObject(with: data)) as? [String: [String: Any]],
            let resources = promises[offer]?["resources"] as? [String: Any]
        else { return nil }
        return resources["cores"] as? Int
    }

    /// Waits until the agent logged `count` open agent channels.
    static func waitForLines(of agent: TestAgent, count: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if agent.service.child.output.components(separatedBy: "agent channel open").count - 1 >= count { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("the agent opened fewer than \(count) lines: \(agent.service.child.output.suffix(2000))")
    }
}
