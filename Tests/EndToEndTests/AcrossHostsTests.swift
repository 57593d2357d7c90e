import Foundation
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// The constellation across hosts: the services (with their own PostgreSQL), two devices behind NAT and a consumer,
/// each in a network namespace of its own joined by a router (`Tools/scripts/netns-hosts.sh`), every gRPC and HTTP
/// connection over TLS with a CA made for the test.
@Suite(
    "Across hosts: services, two devices behind NAT and a consumer on separate networks, every connection over TLS",
    .serialized, .enabled(if: NamespaceHosts.canMake, "needs root, iproute2 and nftables"))
struct AcrossHostsTests {
    /// The services' address on the router's bridge (see netns-hosts.sh).
    static let servicesHost = "10.77.0.10"

    @Test(
        "devices behind NAT join over TLS and cannot be reached inward; a job placed from the consumer's host runs, its device is killed, and it runs on the other host; plaintext and a wrong CA are refused"
    )
    func acrossHosts() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-hosts") { directory in
            let hosts = NamespaceHosts(prefix: "o\(String(getpid() % 100_000))")
            try hosts.up()
            defer { hosts.down() }
            let tls = try await TestCertificates.make(
                in: directory.appendingPathComponent("tls"), ip: Self.servicesHost)

            // The network's edges, first: a device reaches the services' host (masqueraded as the router), and
            // nothing reaches a device from outside its own network.
            try await Self.checkNAT(hosts)

            // The services' host: its own PostgreSQL, then identity, registry, notary and orchestrator on its address.
            let database = try await HostDatabase.start(in: directory.appendingPathComponent("pg"), on: hosts.services)
            defer { database.stop() }
            let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
            func start(
                _ name: String, _ arguments: [String] = [], identity: RunningService? = nil,
                environment added: [String: String] = [:]
            ) async throws -> RunningService {
                var environment = database.environment.merging(network.environment(for: name)) { $1 }
                    .merging(added) { $1 }
                if let identity { environment["ORRERY_IDENTITY_ADDRESS"] = Self.address(identity) }
                return try await RunningService.start(
                    name,
                    extraArguments: [
                        "--grpc-host", Self.servicesHost, "--http-host", Self.servicesHost, "--tls-cert",
                        tls.serverCertificate, "--tls-key", tls.serverKey, "--tls-ca", tls.authority,
                    ] + arguments,
                    environment: environment, directory: directory, networkNamespace: hosts.services)
            }
            let identity = try await start("identity")
            defer { identity.child.signal(SIGKILL) }
            let registry = try await start("registry", ["--liveness-interval-ms", "1000"], identity: identity)
            defer { registry.child.signal(SIGKILL) }
            let gatewayDID = try #require(network.serviceKeys["settlement-gateway"]).did
            let notary = try await start(
                "contract-notary", ["--registry-address", Self.address(registry)], identity: identity,
                environment: ["ORRERY_SETTLEMENT_DID": gatewayDID.string])
            defer { notary.child.signal(SIGKILL) }
            let gateway = try await start(
                "settlement-gateway", identity: identity,
                environment: ["ORRERY_NOTARY_DID": notary.ready.did, "ORRERY_NOTARY_ADDRESS": Self.address(notary)])
            defer { gateway.child.signal(SIGKILL) }
            let orchestrator = try await start(
                "orchestrator",
                [
                    "--registry-address", Self.address(registry), "--notary-address", Self.address(notary),
                    "--settlement-address", Self.address(gateway),
                ],
                identity: identity)
            defer { orchestrator.child.signal(SIGKILL) }
            for service in [identity, registry, notary, gateway, orchestrator] {
                #expect(service.child.output.contains("gRPC listens with TLS"), "\(service.child.output.suffix(2000))")
            }

            // Two devices, each behind its own NAT, joined over TLS; their lines go out to the orchestrator.
            let cheapState = directory.appendingPathComponent("cheap-state")
            let spareState = directory.appendingPathComponent("spare-state")
            defer {
                AgentChannelTests.removeSandboxes(of: cheapState)
                AgentChannelTests.removeSandboxes(of: spareState)
            }
            func agent(_ name: String, price: Int, on host: String) async throws -> TestAgent {
                try await TestAgent.start(
                    name, owner: #"{"prices": {"per_core_hour": \#(price)}}"#,
                    orchestrators: [Self.address(orchestrator)], registry: Self.address(registry), network: network,
                    directory: directory, interval: 1000, networkNamespace: host,
                    joinArguments: ["--tls-ca", tls.authority])
            }
            let cheap = try await agent("cheap", price: 5, on: hosts.devices[0])
            defer { cheap.service.child.signal(SIGKILL) }
            let spare = try await agent("spare", price: 5000, on: hosts.devices[1])
            defer { spare.service.child.signal(SIGKILL) }

            // The consumer's host: the CLI over TLS (the flag, and ORRERY_TLS_CA), as the operator.
            let consumer = ConsumerHost(
                namespace: hosts.consumer, directory: directory,
                connection: [
                    "--orchestrator", Self.address(orchestrator), "--key",
                    directory.appendingPathComponent("credentials/operator.key").path,
                ], authority: tls.authority)
            let spec = directory.appendingPathComponent("across.yaml")
            try """
            name: across-hosts
            allocations:
              - name: work
                executor: process
                artifact:
                  text: |
                    #!/bin/sh
                    echo up
                    sleep 600
                resources:
                  cpu_cores: 1
                  ram_mib: 32
                  disk_mib: 10
                max_duration_seconds: 900
            constraints:
              max_price_per_hour: 5000
            budget: 10000000
            """.write(to: spec, atomically: true, encoding: .utf8)
            // The consumer (the operator here) is credited, so the contracts' cost can be held in escrow.
            let operatorDID = network.operatorKey.did.string
            let settlement = [
                "--settlement", Self.address(gateway), "--key",
                directory.appendingPathComponent("credentials/operator.key").path, "--tls-ca", tls.authority,
            ]
            let deposited = try await consumer.open(
                ["deposit", operatorDID, "10000000", "--idempotency-key", "fund"] + settlement)
            #expect(deposited.status == 0, "\(deposited.output)")
            // Both devices online in the orchestrator's view, the cheap one chosen.
            let chosen = ContinuousClock.now + .seconds(60)
            var explained = ""
            while ContinuousClock.now < chosen, !explained.contains("on \(cheap.did)") {
                explained = (try await consumer.run(["explain", spec.path])).output
                if !explained.contains("on \(cheap.did)") { try await Task.sleep(for: .milliseconds(250)) }
            }
            #expect(explained.contains("on \(cheap.did)"), "\(explained)")
            let (runStatus, ran) = try await consumer.run(["run", spec.path, "--detach"])
            #expect(runStatus == 0, "\(ran)")
            let id = try #require(ran.split(separator: " ").first { $0.hasPrefix("dep_") }.map(String.init), "\(ran)")
            defer {
                cheap.service.child.signal(SIGKILL)
                spare.service.child.signal(SIGKILL)
            }

            // Running on one device's host (the cheap one, unless it was not online at that moment: on a loaded
            // machine its 1 s heartbeats can be late, and placement then rightly takes the other — seen once in
            // CI); then that device's agent dies, and the job runs on the other.
            let first = try await consumer.waitForRunning(id, onOneOf: [cheap, spare])
            let history = try await consumer.run(["events", id]).output
            let (gone, other) = try #require(
                first.map { $0.did == cheap.did ? (cheap, spare) : (spare, cheap) }, "\(history)")
            gone.service.child.signal(SIGKILL)
            let onOther = try await consumer.waitForRunning(id, on: other.did, viaEnvironment: true)
            // The CA kept in a context serves as well as the flag.
            let saved = try await consumer.inContext(
                ["context", "set", "hosts", "--tls-ca", tls.authority] + consumer.connection)
            #expect(saved.status == 0, "\(saved.output)")
            let events = try await consumer.inContext(["events", id])
            #expect(onOther, "\(events.output)")
            #expect(
                events.status == 0 && events.output.contains("device \(gone.did) went offline; now on \(other.did)"),
                "\(events.output)")

            // Refused: a plaintext call to a TLS listener, and a certificate from another CA.
            let healthy = try await consumer.open(["health", Self.address(orchestrator), "--tls-ca", tls.authority])
            #expect(healthy.status == 0 && healthy.output.contains("serving"), "\(healthy.output)")
            let plaintext = try await consumer.open(["health", Self.address(orchestrator)])
            #expect(plaintext.status != 0 && plaintext.output.contains("it may serve TLS only"), "\(plaintext.output)")
            let foreign = try await consumer.open([
                "health", Self.address(orchestrator), "--tls-ca", tls.otherAuthority,
            ])
            #expect(
                foreign.status != 0 && foreign.output.contains("TLS certificate is not signed by a CA in --tls-ca"),
                "\(foreign.output)")
            // The HTTP listeners (metrics, health) are TLS too: curl with the CA, without it, and plaintext.
            let healthURL = "https://\(Self.servicesHost):\(orchestrator.ready.httpPort)/healthz"
            let curled = try await consumer.curl(["--cacert", tls.authority, healthURL])
            #expect(curled.status == 0 && curled.output.hasPrefix("ok"), "\(curled.output)")
            let untrusted = try await consumer.curl(["--cacert", tls.otherAuthority, healthURL])
            #expect(untrusted.status == 60, "curl exits 60 on a certificate it cannot verify: \(untrusted.output)")
            let plainHTTP = try await consumer.curl([
                "http://\(Self.servicesHost):\(orchestrator.ready.httpPort)/healthz"
            ])
            #expect(plainHTTP.status != 0 || !plainHTTP.output.hasPrefix("ok"), "\(plainHTTP.output)")

            // Authorised calls refuse the wrong CA too, before anything is signed or sent.
            let refused = try await consumer.open(
                ["status", id] + consumer.connection + ["--tls-ca", tls.otherAuthority])
            #expect(
                refused.status != 0 && refused.output.contains("not signed by a CA"), "\(refused.output)")
            let cancelled = try await consumer.run(["cancel", id, "--reason", "test over"])
            #expect(cancelled.status == 0, "\(cancelled.output)")
            // Settled across the move: nothing stays in escrow, and the journal passes the operator's audit.
            var balance = Orrery_Settlement_V1_Balance()
            let settled = ContinuousClock.now + .seconds(60)
            repeat {
                let shown = try await consumer.open(["balance", "--json"] + settlement)
                if shown.status == 0, let read = try? Orrery_Settlement_V1_Balance(jsonString: shown.output) {
                    balance = read
                }
                if balance.escrow != "0" { try await Task.sleep(for: .milliseconds(250)) }
            } while balance.escrow != "0" && ContinuousClock.now < settled
            #expect(balance.escrow == "0", "\(balance)")
            let audit = try await consumer.open(["settlement", "verify"] + settlement)
            #expect(audit.status == 0, "\(audit.output)")
        }
    }

    static func address(_ service: RunningService) -> String { "\(servicesHost):\(service.ready.grpcPort)" }

    /// A device's connection out reaches the services' host from the router's address (masqueraded); a connection
    /// into a device's network from the services' host fails at once (rejected by the router), while the same
    /// listener answers the router itself — so the refusal is the NAT's, not a missing listener.
    static func checkNAT(_ hosts: NamespaceHosts) async throws {
        let python = URL(fileURLWithPath: "/usr/bin/python3")
        let directory = try TestEnvironment.temporaryDirectory("orrery-nat")
        defer { try? FileManager.default.removeItem(at: directory) }
        let listen = """
            import socket, sys
            s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()
            print(s.getsockname()[1], flush=True)
            for _ in range(int(sys.argv[2])):
                c, peer = s.accept(); print("peer", peer[0], flush=True); c.close()
            """
        let connect = """
            import socket, sys
            try:
                socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20).close(); print("connected")
            except OSError as e:
                print("errno", e.errno)
            """
        // Outward: masqueraded.
        let outside = try ChildProcess(
            python, arguments: ["-c", listen, servicesHost, "1"], outputDirectory: directory,
            networkNamespace: hosts.services)
        defer { outside.signal(SIGKILL) }
        let outsidePort = try await outside.printedPort()
        let out = try await ChildProcess.run(
            python, arguments: ["-c", connect, servicesHost, String(outsidePort)], networkNamespace: hosts.devices[0])
        #expect(out.output.contains("connected"), "\(out.output)")
        let seen = try await outside.firstLine { $0.hasPrefix("peer ") ? String($0.dropFirst(5)) : nil }
        #expect(seen == "10.77.0.1", "the services' host saw the device as \(seen), not the router's address")
        // Inward: refused by the router for the services' host, answered for the router.
        let inside = try ChildProcess(
            python, arguments: ["-c", listen, "0.0.0.0", "1"], outputDirectory: directory,
            networkNamespace: hosts.devices[0])
        defer { inside.signal(SIGKILL) }
        let insidePort = String(try await inside.printedPort())
        let inward = try await ChildProcess.run(
            python, arguments: ["-c", connect, "10.78.1.2", insidePort], networkNamespace: hosts.services)
        #expect(inward.output.contains("errno \(EHOSTUNREACH)"), "\(inward.output)")
        let fromRouter = try await ChildProcess.run(
            python, arguments: ["-c", connect, "10.78.1.2", insidePort], networkNamespace: hosts.router)
        #expect(fromRouter.output.contains("connected"), "\(fromRouter.output)")
    }
}

/// The namespaces `Tools/scripts/netns-hosts.sh` makes under one prefix.
struct NamespaceHosts {
    /// Whether this machine lets a test make them: root, iproute2 and nftables.
    static var canMake: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
            && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft")
    }

    let prefix: String
    // Each host's namespace as the file of the process holding it (/proc/PID/ns/net): entered so, it does not
    // depend on /run/netns, whose names another test's mount changes were seen to hide.
    var router: String { holder("rt") }
    var services: String { holder("svc") }
    var consumer: String { holder("con") }
    var devices: [String] { [holder("a1"), holder("a2")] }

    private func holder(_ host: String) -> String {
        let pid =
            (try? String(contentsOfFile: "/run/orrery-netns/\(prefix)/\(prefix)-\(host).pid", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "0"
        return "/proc/\(pid)/ns/net"
    }

    private var script: String {
        TestEnvironment.repositoryRoot.appendingPathComponent("Tools/scripts/netns-hosts.sh").path
    }

    func up() throws {
        let status = Self.runNow(script, ["up", prefix])
        guard status == 0 else {
            throw ChildProcessError.exitedEarly(name: "netns-hosts.sh up", status: status, output: "")
        }
    }

    func down() { _ = Self.runNow(script, ["down", prefix]) }

    /// Runs a program to its end (for set-up and clean-up, where nothing else waits).
    static func runNow(_ program: String, _ arguments: [String], environment: [String: String] = [:]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        do { try process.run() } catch { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// A throwaway PostgreSQL on a host's own loopback (`pg-throwaway.sh` run inside its namespace).
struct HostDatabase {
    let directory: URL
    let environment: [String: String]

    /// Starts it in `directory` (stopped again when it fails to start).
    static func start(in directory: URL, on namespace: String) async throws -> HostDatabase {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tools/scripts/pg-throwaway.sh")
        let started: (status: Int32, output: String)
        do {
            started = try await ChildProcess.run(
                script, arguments: ["start", directory.path],
                environment: ["PG_EXTRA_OPTIONS": "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"],
                timeout: .seconds(120), networkNamespace: namespace)
        } catch {
            _ = NamespaceHosts.runNow(script.path, ["stop", directory.path])
            throw error
        }
        guard started.status == 0 else {
            _ = NamespaceHosts.runNow(script.path, ["stop", directory.path])
            throw ChildProcessError.exitedEarly(name: "pg-throwaway.sh", status: started.status, output: started.output)
        }
        let values = try EnvironmentFile.read(directory.appendingPathComponent("env"))
        let port = try #require(values["ORRERY_PG_PORT"])
        let password = try #require(values["ORRERY_PG_PASSWORD"])
        return HostDatabase(
            directory: directory,
            environment: [
                "ORRERY_DB_HOST": "127.0.0.1", "ORRERY_DB_PORT": port, "ORRERY_DB_USER": "orrery",
                "ORRERY_DB_DATABASE": "orrery", "ORRERY_DB_PASSWORD": password,
            ])
    }

    func stop() {
        _ = NamespaceHosts.runNow(
            TestEnvironment.repositoryRoot.appendingPathComponent("Tools/scripts/pg-throwaway.sh").path,
            ["stop", directory.path])
    }
}

/// A test CA, a certificate it signed for the services' address, and another CA nobody trusts.
struct TestCertificates {
    let authority: String
    let serverCertificate: String
    let serverKey: String
    let otherAuthority: String

    static func make(in directory: URL, ip: String) async throws -> TestCertificates {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        func openssl(_ arguments: [String]) async throws {
            let (status, output) = try await ChildProcess.run(
                URL(fileURLWithPath: "/usr/bin/openssl"), arguments: arguments)
            guard status == 0 else {
                throw ChildProcessError.exitedEarly(name: "openssl", status: status, output: output)
            }
        }
        let newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for name in ["ca", "other-ca"] {
            try await openssl(
                ["req", "-x509"] + newKey + [
                    "-days", "2", "-subj", "/CN=Orrery test \(name)", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", path("\(name).key"), "-out",
                    path("\(name).pem"),
                ])
        }
        try await openssl(
            ["req"] + newKey + [
                "-subj", "/CN=orrery services", "-keyout", path("server.key"), "-out", path("server.csr"),
            ])
        try "subjectAltName=IP:\(ip)\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n".write(
            toFile: path("server.ext"), atomically: true, encoding: .utf8)
        try await openssl([
            "x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", path("server.ext"), "-out", path("server.pem"),
        ])
        return TestCertificates(
            authority: path("ca.pem"), serverCertificate: path("server.pem"), serverKey: path("server.key"),
            otherAuthority: path("other-ca.pem"))
    }
}

/// The consumer's host: the CLI (and curl) run in its namespace, with contexts files of the test's own.
struct ConsumerHost {
    let namespace: String
    let directory: URL
    let connection: [String]
    let authority: String

    /// Runs `orrery ARGUMENTS` with the connection flags and `--tls-ca` (or, with `viaEnvironment`, ORRERY_TLS_CA).
    func run(_ arguments: [String], viaEnvironment: Bool = false) async throws -> (status: Int32, output: String) {
        var environment: [String: String] = [:]
        var flags = connection
        if viaEnvironment { environment["ORRERY_TLS_CA"] = authority } else { flags += ["--tls-ca", authority] }
        return try await orrery(arguments + flags, environment: environment, contexts: "none")
    }

    /// Runs `orrery ARGUMENTS` as given, without a context.
    func open(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await orrery(arguments, contexts: "none")
    }

    /// Runs `orrery ARGUMENTS` as given, with the test's contexts file (`context set`, then calls in that context).
    func inContext(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await orrery(arguments, contexts: "config")
    }

    private func orrery(_ arguments: [String], environment: [String: String] = [:], contexts: String) async throws
        -> (status: Int32, output: String)
    {
        try await ChildProcess.run(
            TestEnvironment.executable("orrery"), arguments: arguments,
            environment: environment.merging(
                ["XDG_CONFIG_HOME": directory.appendingPathComponent(contexts).path]) { $1 },
            timeout: .seconds(60), networkNamespace: namespace)
    }

    func curl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await ChildProcess.run(
            URL(fileURLWithPath: "/usr/bin/curl"), arguments: ["-sS", "--max-time", "20"] + arguments,
            timeout: .seconds(60), networkNamespace: namespace)
    }

    /// Waits (up to 90 s) until deployment `id` runs with its replica on `device`; says whether it did.
    func waitForRunning(_ id: String, on device: String, viaEnvironment: Bool = false) async throws -> Bool {
        try await waitForRunning(id, onOneOf: [device], viaEnvironment: viaEnvironment) != nil
    }

    /// Waits (up to 90 s) until deployment `id` runs with its replica on one of `agents`; that agent, or nil.
    func waitForRunning(_ id: String, onOneOf agents: [TestAgent]) async throws -> TestAgent? {
        guard let device = try await waitForRunning(id, onOneOf: agents.map(\.did), viaEnvironment: false) else {
            return nil
        }
        return agents.first { $0.did == device }
    }

    private func waitForRunning(_ id: String, onOneOf devices: [String], viaEnvironment: Bool) async throws
        -> String?
    {
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            let (status, shown) = try await run(["status", id, "--json"], viaEnvironment: viaEnvironment)
            if status == 0, let deployment = try? Orrery_Orchestrator_V1_Deployment(jsonString: shown),
                deployment.state == .running, deployment.assignments.count == 1,
                let device = deployment.assignments.first?.deviceDid, devices.contains(device)
            {
                return device
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        return nil
    }
}
