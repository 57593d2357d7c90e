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

/// `orrery port-forward`: a local port whose connections reach a service in a real sandbox, each as its own stream
/// through the orchestrator and the device's outbound line; read with Python's own HTTP client.
@Suite(
    "Port-forward: TCP to a replica over its device's line", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct PortForwardTests {
    /// A 4 MiB random file and an HTTP server on 127.0.0.1:8080 inside the sandbox.
    static let server = """
        #!/bin/sh
        head -c 4194304 /dev/urandom > /work/big.bin
        echo ok > /work/ok
        exec python3 -m http.server 8080 --bind 127.0.0.1 --directory /work
        """

    /// Fetches `/big.bin` through `port` `count` times at once and prints each body's sha256 and size.
    static let client = """
        import hashlib, sys, threading, urllib.request
        port, count = int(sys.argv[1]), int(sys.argv[2])
        results = [None] * count
        def fetch(i):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/big.bin", timeout=120) as answer:
                body = answer.read()
                results[i] = f"{hashlib.sha256(body).hexdigest()} {len(body)}"
        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(count)]
        for t in threads: t.start()
        for t in threads: t.join()
        for r in results: print(r)
        sys.exit(0 if all(results) else 1)
        """

    @Test(
        "a 4 MiB file fetched through orrery port-forward by Python, alone and 8 at once, byte for byte; another consumer, the operator, an undeclared port and a replica not running are refused"
    )
    func forwards() async throws {
        try await JobConstellation.run("orrery-port-forward") { constellation in
            let network = constellation.network
            let directory = constellation.directory
            let orchestrator = constellation.orchestrator
            let agent = try await constellation.startAgent("host", owner: #"{"prices": {"per_core_hour": 5}}"#)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)

            let job = try await Self.serve("files", consumer, orchestrator)
            let allocationDirectory = try await HealthCheckTests.allocationDirectory(of: "host", in: directory)
            let served = try Data(contentsOf: allocationDirectory.appendingPathComponent("work/big.bin"))
            let sandboxNetwork = try #require(Self.sandboxNetwork(of: allocationDirectory.lastPathComponent))
            let expected = "\(Hex.sha256(served)) \(served.count)"
            #expect(served.count == 4 << 20)

            let forwarder = try Self.forward(job.id, as: consumer, in: constellation)
            defer { forwarder.signal(SIGKILL) }
            let port = try await Self.forwardedPort(of: forwarder)
            let script = directory.appendingPathComponent("fetch.py")
            try Self.client.write(to: script, atomically: true, encoding: .utf8)
            for count in [1, 8] {
                let (status, output) = try await ChildProcess.run(
                    TestEnvironment.python, arguments: [script.path, String(port), String(count)])
                #expect(status == 0, "\(output)\n\(forwarder.output)")
                let lines = output.split(separator: "\n").map(String.init)
                #expect(lines == Array(repeating: expected, count: count), "\(output)")
            }
            #expect(forwarder.output.contains("connection to web/0:8080 on \(agent.did)"), "\(forwarder.output)")
            // Nine connections, one connector in the sandbox's namespace: started once, used for each.
            #expect(Self.connectors(in: sandboxNetwork) == 1)

            // Refusals, each with its status.
            func refusal(
                _ caller: OrchestratorTests.Consumer, _ open: Orrery_Orchestrator_V1_PortForwardOpen
            ) async throws -> RPCError? {
                do {
                    try await caller.with(orchestrator) { client in
                        try await client.portForward(
                            requestProducer: { writer in try await writer.write(.with { $0.open = open }) },
                            onResponse: { response in for try await _ in response.messages {} })
                    }
                    return nil
                } catch let error as RPCError {
                    return error
                }
            }
            let open = Orrery_Orchestrator_V1_PortForwardOpen.with {
                $0.deploymentID = job.id
                $0.allocation = "web"
                $0.port = 8080
            }
            let stranger = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            let notTheirs = try await refusal(stranger, open)
            #expect(notTheirs?.code == .notFound, "\(String(describing: notTheirs))")
            var undeclared = open
            undeclared.port = 22
            let noPort = try await refusal(consumer, undeclared)
            #expect(
                noPort?.code == .invalidArgument
                    && noPort?.message.contains("declares no port 22 (its ports: http 8080)") == true,
                "\(String(describing: noPort))")
            var absent = open
            absent.replica = 3
            let notRunning = try await refusal(consumer, absent)
            #expect(notRunning?.code == .failedPrecondition, "\(String(describing: notRunning))")
            // A second open on an open connection is refused at once (it does not wait for the replica to close).
            let twice: RPCError?
            do {
                try await consumer.with(orchestrator) { client in
                    try await client.portForward(
                        requestProducer: { writer in
                            try await writer.write(.with { $0.open = open })
                            try await writer.write(.with { $0.open = open })
                            try await Task.sleep(for: .seconds(60))
                        },
                        onResponse: { response in for try await _ in response.messages {} })
                }
                twice = nil
            } catch let error as RPCError {
                twice = error
            }
            #expect(
                twice?.code == .invalidArgument && twice?.message.contains("after open, only data messages") == true,
                "\(String(describing: twice))")
            // The operator may read the deployment's status, but not reach into its services.
            let operatorForwarder = try ChildProcess(
                TestEnvironment.executable("orrery"),
                arguments: [
                    "port-forward", job.id, "web:8080", "0", "--orchestrator", constellation.orchestratorAddress,
                    "--key", directory.appendingPathComponent("credentials/operator.key").path,
                ],
                outputDirectory: directory)
            defer { operatorForwarder.signal(SIGKILL) }
            let operatorPort = try await Self.forwardedPort(of: operatorForwarder)
            let (operatorStatus, _) = try await ChildProcess.run(
                TestEnvironment.python, arguments: [script.path, String(operatorPort), "1"])
            #expect(operatorStatus != 0)
            // The deployment ended: its connector ends with it.
            try await consumer.with(orchestrator) { _ = try await $0.cancelDeployment(.with { $0.id = job.id }) }
            let gone = ContinuousClock.now + .seconds(60)
            while Self.connectors(in: sandboxNetwork) > 0, ContinuousClock.now < gone {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(Self.connectors(in: sandboxNetwork) == 0)
            _ = try await operatorForwarder.firstLine(timeout: .seconds(60)) { line -> Bool? in
                line.contains("a forwarded connection failed: notFound: no deployment \(job.id) of yours") ? true : nil
            }
        }
    }

    @Test(
        "an owner's max_connections bounds the connections into its sandboxes: each that ended gave its place back (orrery_agent_sandbox_connections), one past the bound is refused with the reason, and a place freed serves again"
    )
    func connectionBound() async throws {
        try await JobConstellation.run("orrery-port-forward-bound") { constellation in
            let directory = constellation.directory
            let orchestrator = constellation.orchestrator
            let agent = try await constellation.startAgent(
                "host", owner: #"{"prices": {"per_core_hour": 5}, "max_connections": 2}"#)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            let job = try await Self.serve("bounded", consumer, orchestrator)
            let forwarder = try Self.forward(job.id, as: consumer, in: constellation)
            defer { forwarder.signal(SIGKILL) }
            let port = try await Self.forwardedPort(of: forwarder)
            let script = directory.appendingPathComponent("fetch.py")
            try Self.client.write(to: script, atomically: true, encoding: .utf8)
            func fetch() async throws -> Int32 {
                try await ChildProcess.run(TestEnvironment.python, arguments: [script.path, String(port), "1"]).0
            }
            // The device's own count of the connections it carries, once it reads `wanted` (the last read otherwise).
            let metrics = try #require(URL(string: "http://127.0.0.1:\(agent.service.ready.httpPort)/metrics"))
            func carried(_ wanted: Int) async throws -> Int {
                var count = -1
                let deadline = ContinuousClock.now + .seconds(60)
                while count != wanted, ContinuousClock.now < deadline {
                    let text = String(decoding: try await URLSession.shared.data(from: metrics).0, as: UTF8.self)
                    count =
                        text.split(separator: "\n").first { $0.hasPrefix("orrery_agent_sandbox_connections ") }
                        .flatMap { Int(Double($0.split(separator: " ").last ?? "") ?? -1) } ?? -1
                    if count != wanted { try await Task.sleep(for: .milliseconds(100)) }
                }
                return count
            }

            // Six connections one after the other, twice the bound: each ended and gave its place back.
            for _ in 0..<6 {
                #expect(try await fetch() == 0, "\(forwarder.output)")
                #expect(try await carried(0) == 0)
            }
            // Two held (a request head not ended: the server waits for the rest) fill the bound.
            var held: [Int32] = []
            defer { for socket in held { close(socket) } }
            for _ in 0..<2 {
                let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                held.append(socket)
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = in_port_t(UInt16(port).bigEndian)
                address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
                try #require(connected == 0)
                let head = Array("GET /ok HTTP/1.1\r\nHost: web\r\n".utf8)
                #expect(send(socket, head, head.count, 0) == head.count)
            }
            #expect(try await carried(2) == 2)
            // A third is refused by the device, which says why.
            #expect(try await fetch() != 0)
            _ = try await forwarder.firstLine(timeout: .seconds(60)) { line -> Bool? in
                line.contains("this device carries 2 connections into its sandboxes already") ? true : nil
            }
            // One held ends: its place serves again.
            close(held.removeFirst())
            #expect(try await carried(1) == 1)
            #expect(try await fetch() == 0, "\(forwarder.output)")
        }
    }

    /// Submits `server` as allocation `web` of a deployment named `name` (HTTP on 8080, checked on `/ok`) and waits
    /// until it runs healthy.
    static func serve(
        _ name: String, _ consumer: OrchestratorTests.Consumer, _ orchestrator: RunningService
    ) async throws -> Orrery_Orchestrator_V1_Deployment {
        let spec = HealthCheckTests.webSpec(name: name, server: Self.server)
        let job = try await consumer.submit(spec, to: orchestrator, paid: false)
        _ = try await HealthCheckTests.until(job.id, consumer, orchestrator, "running and healthy") {
            $0.run.state == .running && $0.run.health.status == .healthy
        }
        return job
    }

    /// `orrery port-forward DEPLOYMENT web:8080 0` run by `consumer` (its key and chain written to files first).
    static func forward(
        _ deployment: String, as consumer: OrchestratorTests.Consumer, in constellation: JobConstellation
    ) throws -> ChildProcess {
        let key = constellation.directory.appendingPathComponent("consumer.key").path
        let proof = constellation.directory.appendingPathComponent("consumer.ucan").path
        try KeyFile.write(consumer.key, to: key)
        try DelegationChain.write(consumer.chain).write(toFile: proof, atomically: true, encoding: .utf8)
        return try ChildProcess(
            TestEnvironment.executable("orrery"),
            arguments: [
                "port-forward", deployment, "web:8080", "0", "--orchestrator", constellation.orchestratorAddress,
                "--key", key, "--proof", proof,
            ],
            outputDirectory: constellation.directory)
    }

    /// The local port `orrery port-forward` says it listens on ("Forwarding 127.0.0.1:PORT -> …").
    static func forwardedPort(of forwarder: ChildProcess) async throws -> Int {
        try await forwarder.firstLine { line -> Int? in
            guard line.hasPrefix("Forwarding 127.0.0.1:") else { return nil }
            return Int(line.dropFirst("Forwarding 127.0.0.1:".count).prefix { $0.isNumber })
        }
    }

    /// The network namespace (`net:[inode]`) of allocation `offer`'s sandbox: that of a process in its cgroup
    /// (which names the offer) other than this process's own.
    static func sandboxNetwork(of offer: String) -> String? {
        let own = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        for entry in processes() {
            guard let cgroup = try? String(contentsOfFile: "/proc/\(entry)/cgroup", encoding: .utf8),
                cgroup.contains(offer),
                let network = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/ns/net"),
                network != own
            else { continue }
            return network
        }
        return nil
    }

    /// How many of the agents' connectors serve the sandbox network `network` (other suites' sandboxes have their
    /// own).
    static func connectors(in network: String) -> Int {
        processes().filter { entry in
            guard let arguments = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/ns/net")) == network
            else { return false }
            let words = arguments.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return words.last == "connector" && words.contains { $0.hasSuffix("/device-agent") }
        }.count
    }

    private static func processes() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { Int32($0) != nil }
    }
}
