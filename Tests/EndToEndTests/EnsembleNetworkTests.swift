import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// The ensemble network end to end: two allocations of one deployment on two agents, one calling the other by name
/// over TCP through both devices' lines; another deployment's sandbox, on the partner's own device, reaches nothing.
@Suite(
    "Ensemble network: partners by name across devices", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct EnsembleNetworkTests {
    /// A line-echo server on 127.0.0.1:6379 inside its sandbox ("PONG " and the line), and on 2525 one that speaks
    /// first, as SMTP does ("220 cache ready", then "250 " and the client's line).
    static let cache = """
        #!/bin/sh
        exec python3 -c '
        import socketserver, threading
        class Echo(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    self.wfile.write(b"PONG " + line)
                    self.wfile.flush()
        class Greeter(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 cache ready\\n")
                self.wfile.flush()
                self.wfile.write(b"250 " + self.rfile.readline())
                self.wfile.flush()
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        greeter = socketserver.ThreadingTCPServer(("127.0.0.1", 2525), Greeter)
        threading.Thread(target=greeter.serve_forever, daemon=True).start()
        socketserver.ThreadingTCPServer(("127.0.0.1", 6379), Echo).serve_forever()
        '
        """

    /// Resolves `cache`, sends "PING" to cache:6379 until it is answered, and writes the address and the answer to
    /// /work/reply; greets cache:2525 three times, each on a new connection, reading its greeting before saying
    /// anything, and writes what it heard to /work/greetings; then calls 6379 again every half second (each on a
    /// connection of its own).
    static let web = """
        #!/bin/sh
        exec python3 -c '
        import socket, time
        for attempt in range(900):
            try:
                address = socket.gethostbyname("cache")
                with socket.create_connection(("cache", 6379), timeout=10) as connection:
                    connection.sendall(b"PING\\n")
                    reply = connection.makefile().readline().strip()
                if not reply:
                    raise OSError("closed before an answer")
                open("/work/reply", "w").write(address + " " + reply + "\\n")
                break
            except OSError as error:
                print("not yet:", error, flush=True)
                time.sleep(0.2)
        heard = []
        for turn in range(3):
            with socket.create_connection(("cache", 2525), timeout=10) as connection:
                answers = connection.makefile("rb")
                greeting = answers.readline().strip()
                connection.sendall(b"HELO web\\n")
                heard.append(greeting.decode() + " / " + answers.readline().strip().decode())
        open("/work/greetings", "w").write("\\n".join(heard) + "\\n")
        for again in range(7200):
            time.sleep(0.5)
            try:
                with socket.create_connection(("cache", 6379), timeout=10) as connection:
                    connection.sendall(b"PING\\n")
                    connection.makefile().readline()
            except OSError:
                pass
        '
        """

    /// Another deployment's sandbox trying the same name and the partners' addresses.
    static let intruder = """
        #!/bin/sh
        python3 -c '
        import socket
        seen = []
        try:
            socket.gethostbyname("cache")
            seen.append("resolved")
        except OSError:
            seen.append("no-name")
        for address in ("127.77.0.2", "127.77.0.3"):
            try:
                socket.create_connection((address, 6379), timeout=5).close()
                seen.append("connected")
            except OSError:
                seen.append("refused")
        open("/work/result", "w").write(" ".join(seen) + "\\n")
        '
        sleep 3600
        """

    static func allocation(
        _ name: String, script: String, role: String, ports: [Orrery_Orchestrator_V1_Port] = []
    ) -> Orrery_Orchestrator_V1_AllocationSpec {
        .with {
            $0.name = name
            $0.executor = .process
            $0.artifact = .with { $0.text = script }
            $0.resources = .with {
                $0.cpuCores = 1
                $0.ramMib = 128
                $0.diskMib = 32
            }
            $0.maxDurationSeconds = 3600
            $0.ports = ports
            $0.constraints = .with { $0.labels = ["role": role] }
        }
    }

    @Test(
        "web calls cache:6379 by name on another device; the latency edge between them shows placement's estimate and the measured ensemble path; a third deployment's sandbox on cache's own device can neither resolve it nor reach the partners' addresses"
    )
    func partnersByName() async throws {
        try await JobConstellation.run("orrery-ensemble") { constellation in
            let orchestrator = constellation.orchestrator
            let directory = constellation.directory
            let cacheHost = try await constellation.startAgent(
                "cachehost",
                owner:
                    #"{"prices": {"per_core_hour": 5}, "labels": {"role": "cache"}, "location": {"latitude": 52.52, "longitude": 13.40}}"#
            )
            defer { cacheHost.service.child.signal(SIGKILL) }
            let webHost = try await constellation.startAgent(
                "webhost",
                owner:
                    #"{"prices": {"per_core_hour": 5}, "labels": {"role": "web"}, "location": {"latitude": 48.14, "longitude": 11.58}}"#
            )
            defer { webHost.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 2)

            let spec = Orrery_Orchestrator_V1_WorkloadSpec.with {
                $0.name = "web-with-cache"
                $0.allocations = [
                    Self.allocation(
                        "cache", script: Self.cache, role: "cache",
                        ports: [
                            .with {
                                $0.name = "redis"
                                $0.port = 6379
                                $0.protocol = .tcp
                            },
                            .with {
                                $0.name = "smtp"
                                $0.port = 2525
                                $0.protocol = .tcp
                            },
                        ]),
                    Self.allocation("web", script: Self.web, role: "web"),
                ]
                // The bound is not this test's subject: generous, since two agents on one loaded machine may have
                // network coordinates as far apart as 150 ms (else geography places them, Berlin and Munich).
                $0.edges = [
                    .with {
                        $0.from = "web"
                        $0.to = "cache"
                        $0.maxRttMs = 60_000
                    }
                ]
            }
            let job = try await consumer.submit(spec, to: orchestrator, paid: false)
            let running = try await OrchestratorTests.runningOrEnded(job.id, of: consumer, on: orchestrator)
            #expect(running.state == .running, "\(running.reason)")
            let devices = Dictionary(uniqueKeysWithValues: running.assignments.map { ($0.allocation, $0.deviceDid) })
            #expect(devices["cache"] == cacheHost.did && devices["web"] == webHost.did)
            let reply = try await Self.file(
                "work/reply", under: directory.appendingPathComponent("webhost-state/allocations"))
            #expect(reply == "127.77.0.2 PONG PING\n")
            // A protocol where the server speaks first works through the first bytes' wait.
            let greetings = try await Self.file(
                "work/greetings", under: directory.appendingPathComponent("webhost-state/allocations"))
            #expect(greetings == String(repeating: "220 cache ready / 250 HELO web\n", count: 3), "\(greetings)")
            // Its connections (it calls again and again) are handed to the PeerTunnel calls web's agent keeps open
            // ahead of need, once they are open; a PING rides with its connection's open (early), while 2525's
            // first connection waited in vain (late) and its later ones did not wait (not_waited).
            let metricsURL = try #require(URL(string: "http://127.0.0.1:\(webHost.service.ready.httpPort)/metrics"))
            func counter(_ metrics: String, _ series: String) -> Double {
                metrics.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap {
                    $0.split(separator: " ").last.flatMap { Double($0) }
                } ?? 0
            }
            let warm = #"orrery_agent_partner_connections_total{how="warm"}"#
            let early = #"orrery_agent_partner_first_bytes_total{how="early"}"#
            let late = #"orrery_agent_partner_first_bytes_total{how="late"}"#
            let notWaited = #"orrery_agent_partner_first_bytes_total{how="not_waited"}"#
            func seen(_ metrics: String) -> Bool {
                counter(metrics, warm) >= 1 && counter(metrics, early) >= 1 && counter(metrics, late) >= 1
                    && counter(metrics, notWaited) >= 2
            }
            var metrics = ""
            let warmBy = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < warmBy {
                metrics = String(decoding: try await URLSession.shared.data(from: metricsURL).0, as: UTF8.self)
                if seen(metrics) { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(seen(metrics), "\(metrics)")
            // The edge as it stands: placement's device-to-device estimate, and the path the connection took, as the
            // orchestrator measured both devices' lines (each pinged when it opens, then every 10 s).
            var edge = Orrery_Orchestrator_V1_EdgeLatency()
            let measuredBy = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < measuredBy {
                let status = try await consumer.with(orchestrator) {
                    try await $0.getDeployment(.with { $0.id = job.id })
                }
                edge = status.edgeLatencies.first ?? edge
                if edge.hasPathRttMs { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(edge.from == "web" && edge.to == "cache" && edge.maxRttMs == 60_000 && edge.pairs == 1, "\(edge)")
            #expect(edge.hasPlacementRttMs && edge.placementRttMs > 0 && edge.placementRttMs <= 60_000, "\(edge)")
            #expect(edge.hasPathRttMs && edge.pathRttMs > 0 && edge.pathRttMs < 10_000, "\(edge)")
            // The watch stream carries them too: a measurement event (no transition) once they are known.
            let measurement = try await consumer.with(orchestrator) { client in
                try await client.watchDeployment(.with { $0.id = job.id }) { response in
                    for try await event in response.messages where event.measurement { return event }
                    return Orrery_Orchestrator_V1_DeploymentEvent()
                }
            }
            #expect(measurement.measurement && measurement.revision == running.revision, "\(measurement)")
            #expect(measurement.deployment.edgeLatencies.first?.hasPathRttMs == true, "\(measurement)")
            #expect(measurement.reason.hasPrefix("web → cache: devices "), "\(measurement.reason)")

            // Another deployment, on the cache's own device: no name, and nothing listens at the partners' addresses
            // in its sandbox.
            var other = spec
            other.name = "intruder"
            other.edges = []
            other.allocations = [Self.allocation("intruder", script: Self.intruder, role: "cache")]
            let intruder = try await consumer.submit(other, to: orchestrator, paid: false)
            let result = try await Self.file(
                "work/result", under: directory.appendingPathComponent("cachehost-state/allocations"))
            #expect(result == "no-name refused refused\n")
            for id in [job.id, intruder.id] {
                _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = id }) }
            }
        }
    }

    /// Another consumer's sandbox calling `shared:6379` (the name its spec's `reaches` gives cache of another
    /// deployment) until answered: the first connection closed unanswered is noted in /work/first, the answer (with the
    /// address) in /work/reply.
    static let neighbour = """
        #!/bin/sh
        exec python3 -c '
        import socket, time
        first = True
        for attempt in range(3000):
            try:
                address = socket.gethostbyname("shared")
                with socket.create_connection(("shared", 6379), timeout=10) as connection:
                    connection.sendall(b"PING\\n")
                    reply = connection.makefile().readline().strip()
                if not reply:
                    raise OSError("closed before an answer")
                open("/work/reply", "w").write(address + " " + reply + "\\n")
                break
            except OSError as error:
                # (Refused at first while the device sets the listener up; then closed unanswered until granted.)
                if first and "closed before" in str(error):
                    open("/work/first", "w").write(str(error) + "\\n")
                    first = False
                time.sleep(0.2)
        time.sleep(3600)
        '
        """

    @Test(
        "another consumer's allocation reaches cache by the name its spec's reaches give it only once cache's consumer granted it (orrery network grant): closed before, answered after; a grant for someone else's deployment or a loose policy is refused"
    )
    func grantedAcrossDeployments() async throws {
        try await JobConstellation.run("orrery-ensemble-grant") { constellation in
            let orchestrator = constellation.orchestrator
            let directory = constellation.directory
            let cacheHost = try await constellation.startAgent(
                "cachehost", owner: #"{"prices": {"per_core_hour": 5}, "labels": {"role": "cache"}}"#)
            defer { cacheHost.service.child.signal(SIGKILL) }
            let clientHost = try await constellation.startAgent(
                "clienthost", owner: #"{"prices": {"per_core_hour": 5}, "labels": {"role": "web"}}"#)
            defer { clientHost.service.child.signal(SIGKILL) }
            let owner = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            let neighbour = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            try await OrchestratorTests.waitForFleet(owner, orchestrator, devices: 2)

            let cacheSpec = Orrery_Orchestrator_V1_WorkloadSpec.with {
                $0.name = "cache"
                $0.allocations = [
                    Self.allocation(
                        "cache", script: Self.cache, role: "cache",
                        ports: [
                            .with {
                                $0.name = "redis"
                                $0.port = 6379
                                $0.protocol = .tcp
                            }
                        ])
                ]
            }
            let cache = try await owner.submit(cacheSpec, to: orchestrator, paid: false)
            let cacheRunning = try await OrchestratorTests.runningOrEnded(cache.id, of: owner, on: orchestrator)
            #expect(cacheRunning.state == .running, "\(cacheRunning.reason)")
            var clientAllocation = Self.allocation("client", script: Self.neighbour, role: "web")
            clientAllocation.reaches = [
                .with {
                    $0.name = "shared"
                    $0.deploymentID = cache.id
                    $0.allocation = "cache"
                    $0.ports = [6379]
                }
            ]
            let clientSpec = Orrery_Orchestrator_V1_WorkloadSpec.with {
                $0.name = "neighbour"
                $0.allocations = [clientAllocation]
            }
            let client = try await neighbour.submit(clientSpec, to: orchestrator, paid: false)
            let allocations = directory.appendingPathComponent("clienthost-state/allocations")
            // Not granted: the name resolves, and the connection is closed unanswered — the orchestrator refused it.
            let first = try await Self.file("work/first", under: allocations)
            #expect(first == "closed before an answer\n", "\(first)")
            let refusedBy = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < refusedBy, !clientHost.service.child.output.contains("has not granted") {
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(clientHost.service.child.output.contains("has not granted \(client.id) access"))

            // The cache's consumer grants the neighbour's deployment access, with the CLI.
            let cli = TestEnvironment.executable("orrery")
            func connection(_ consumer: OrchestratorTests.Consumer, _ name: String) throws -> [String] {
                try consumer.cliArguments(orchestrator, in: directory, name: name)
            }
            let grant = [
                "network", "grant", "--from", client.id, "--consumer", neighbour.key.did.string, "--to", cache.id,
            ]
            // Not by the neighbour, for a deployment that is not its own.
            let (intrusion, intrusionOutput) = try await ChildProcess.run(
                cli, arguments: grant + (try connection(neighbour, "neighbour")))
            #expect(intrusion != 0, "\(intrusionOutput)")
            let (granted, grantedOutput) = try await ChildProcess.run(
                cli, arguments: grant + (try connection(owner, "owner")))
            #expect(granted == 0 && grantedOutput.contains("may reach \(cache.id)"), "\(grantedOutput)")
            let reply = try await Self.file("work/reply", under: allocations)
            #expect(reply == "127.78.0.2 PONG PING\n", "\(reply)")

            // A delegation that does not hold .from to the neighbour's deployment is refused, and says so.
            let loose = Delegation.issue(
                by: owner.key, to: neighbour.key.did, subject: owner.key.did,
                command: try Command("/orrery/network/connect"),
                policy: try Policy(try IPLDJSON.parse(#"[["==", ".to", "\#(cache.id)"]]"#)),
                expiration: Int64(Date().timeIntervalSince1970) + 600)
            let refusal = try await owner.with(orchestrator) { grpc in
                do {
                    _ = try await grpc.grantNetworkAccess(
                        .with {
                            $0.fromDeployment = client.id
                            $0.toDeployment = cache.id
                            $0.delegation = Data(loose.envelope.bytes)
                        })
                    return "granted"
                } catch let error as RPCError {
                    return "\(error.code): \(error.message)"
                }
            }
            #expect(refusal.contains("invalidArgument") && refusal.contains("does not fix .from"), "\(refusal)")
            for (id, consumer) in [(client.id, neighbour), (cache.id, owner)] {
                _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = id }) }
            }
        }
    }

    /// The contents of `path` in whichever allocation directory under `allocations` has it (2 minutes at most).
    static func file(_ path: String, under allocations: URL) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            for run in (try? FileManager.default.contentsOfDirectory(atPath: allocations.path)) ?? [] {
                let file = allocations.appendingPathComponent(run).appendingPathComponent(path)
                if let text = try? String(contentsOf: file, encoding: .utf8), text.hasSuffix("\n") { return text }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("no allocation under \(allocations.path) wrote \(path) within 2 minutes")
        throw CancellationError()
    }
}
