import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The six real executables on port 0 against a real PostgreSQL, probed by grpc-swift-2 and Python's grpcio.
@Suite(
    "The constellation", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct ConstellationTests {
    static let services: [(executable: String, grpcService: String, schema: String?)] = [
        ("identity", "orrery.identity.v1.Identity", "identity"),
        ("registry", "orrery.registry.v1.Registry", "registry"),
        ("orchestrator", "orrery.orchestrator.v1.Orchestrator", "orchestrator"),
        ("contract-notary", "orrery.notary.v1.Notary", "notary"),
        ("settlement-gateway", "orrery.settlement.v1.Settlement", "settlement"),
        ("device-agent", "orrery.agent.v1.DeviceAgent", nil),
    ]

    func python(_ arguments: [String]) async throws -> String {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/grpc_probe.py").path
        let (status, output) = try await ChildProcess.run(TestEnvironment.python, arguments: [script] + arguments)
        #expect(status == 0, "python \(arguments): \(output)")
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func httpGet(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
        let url = try #require(URL(string: "http://127.0.0.1:\(port)\(path)"))
        let (data, response) = try await URLSession.shared.data(from: url)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    @Test("all six start on port 0, migrate, serve health, reflection, Info and metrics, and stop cleanly on SIGTERM")
    func constellation() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-e2e") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let constellation = try await TestConstellation.start(
                    database: database, network: network, directory: directory)
                defer { constellation.kill() }
                let running = constellation.services

                for service in Self.services {
                    let instance = try #require(running[service.executable])
                    #expect(instance.ready.service == service.executable)
                    #expect(instance.ready.grpcPort > 0 && instance.ready.httpPort > 0)
                    #expect(instance.ready.pid == instance.child.pid)

                    // grpc-swift-2: health, reflection (v1) and Info.
                    try await ServiceProbe.withClient(instance.grpcAddress) { client in
                        #expect(try await ServiceProbe.health(client) == .serving)
                        #expect(try await ServiceProbe.health(client, service: service.grpcService) == .serving)
                        await #expect(throws: RPCError.self) {
                            try await ServiceProbe.health(client, service: "no.such.Service")
                        }
                        let listed = try await ServiceProbe.listServices(client)
                        // The orchestrator also holds the device agents' channel.
                        let extra: Set<String> =
                            service.executable == "orchestrator" ? ["orrery.orchestrator.v1.AgentChannel"] : []
                        #expect(
                            Set(listed)
                                == extra.union([
                                    service.grpcService, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                                    "grpc.reflection.v1alpha.ServerReflection",
                                ]))
                        let info = try await ServiceProbe.info(client)
                        #expect(info.name == service.executable)
                        #expect(info.did == instance.ready.did)
                        if let key = network.serviceKeys[service.executable] { #expect(info.did == key.did.string) }
                        #expect(info.did.hasPrefix("did:key:z6Mk"))
                        #expect(info.version == ServiceInfo.version)
                        #expect(info.uptimeSeconds >= 0)
                    }

                    // Python grpcio: the independent health client and the reflection client (v1alpha).
                    let address = "127.0.0.1:\(instance.ready.grpcPort)"
                    #expect(try await python(["health", address]) == "SERVING")
                    #expect(try await python(["health", address, service.grpcService]) == "SERVING")
                    let described = try await python(["services", address])
                    let methods = try JSONDecoder().decode([String: [String]].self, from: Data(described.utf8))
                    #expect(methods[service.grpcService]?.contains("Info") == true)
                    #expect(methods["grpc.health.v1.Health"] == ["Check", "List", "Watch"])

                    // Prometheus text and liveness on the HTTP port.
                    let metrics = try await httpGet(instance.ready.httpPort, "/metrics")
                    #expect(metrics.status == 200)
                    #expect(metrics.body.contains("grpc_server_handled_total"))
                    #expect(metrics.body.contains(service.grpcService + "/Info"))
                    let liveness = try await httpGet(instance.ready.httpPort, "/healthz")
                    #expect(liveness.status == 200)
                }

                // Each schema was created and migrated by its own service.
                try await database.withClient { client in
                    let rows = try await client.query(
                        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'schema_migrations' ORDER BY 1"
                    )
                    var schemas: [String] = []
                    for try await schema in rows.decode(String.self) { schemas.append(schema) }
                    #expect(schemas == ["identity", "notary", "orchestrator", "registry", "settlement"])
                }

                // The agent's state directory exists and only its user can read it.
                let attributes = try FileManager.default.attributesOfItem(
                    atPath: directory.appendingPathComponent("agent-state").path)
                #expect((attributes[.posixPermissions] as? Int) == 0o700)

                // SIGTERM: each exits 0 within the 10-second bound.
                for service in running.values { service.child.signal(SIGTERM) }
                for (name, service) in running {
                    let status = await service.child.waitForExit(timeout: .seconds(12))
                    #expect(status == 0, "\(name) exited with \(String(describing: status)):\n\(service.child.output)")
                }
            }
        }
    }

    @Test("SIGTERM: an open Health.Watch stream sees NOT_SERVING and ends cleanly, then the process exits 0")
    func gracefulShutdown() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-stop") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry = try await RunningService.start(
                    "registry",
                    environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 },
                    directory: directory)
                defer { registry.child.signal(SIGKILL) }
                let seen = try await ServiceProbe.withClient(registry.grpcAddress) { client in
                    let health = Grpc_Health_V1_Health.Client(wrapping: client)
                    return try await health.watch(.with { $0.service = "orrery.registry.v1.Registry" }) { response in
                        var statuses: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
                        for try await message in response.messages {
                            statuses.append(message.status)
                            if statuses.count == 1 { registry.child.signal(SIGTERM) }
                        }
                        return statuses
                    }
                }
                #expect(seen == [.serving, .notServing])
                let status = await registry.child.waitForExit(timeout: .seconds(12))
                #expect(status == 0, "\(registry.child.output)")
            }
        }
    }

    @Test("SIGTERM to a service whose worker does not stop: ended by its watchdog — grace, 5 s, a log line, exit 1")
    func stopWatchdog() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-stall") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry = try await RunningService.start(
                    "registry", extraArguments: ["--shutdown-grace", "1"],
                    environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 }
                        .merging(["ORRERY_STALL_WORKER_STOP": "liveness"]) { $1 },
                    directory: directory)
                defer { registry.child.signal(SIGKILL) }
                let asked = ContinuousClock.now
                registry.child.signal(SIGTERM)
                // Without the watchdog the stalled worker holds the process for an hour.
                let status = await registry.child.waitForExit(timeout: .seconds(120))
                #expect(status == 1, "\(registry.child.output.suffix(2000))")
                #expect(ContinuousClock.now - asked >= .seconds(6), "ended before its grace and allowance")
                #expect(
                    registry.child.output.contains("did not stop within 6.0 seconds of being asked to")
                        && !registry.child.output.contains("Fatal error"), "\(registry.child.output.suffix(2000))")
            }
        }
    }

    @Test(
        "TLS: a service given a certificate serves gRPC over TLS to grpc-swift and to Python's grpcio; plaintext fails")
    func tls() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-tls") { directory in
                let certificate = directory.appendingPathComponent("cert.pem").path
                let key = directory.appendingPathComponent("key.pem").path
                let (status, output) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/usr/bin/openssl"),
                    arguments: [
                        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days",
                        "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", certificate,
                    ])
                #expect(status == 0, "\(output)")
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry = try await RunningService.start(
                    "registry", extraArguments: ["--tls-cert", certificate, "--tls-key", key],
                    environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 },
                    directory: directory)
                defer { registry.child.signal(SIGKILL) }
                let address = ServiceAddress(host: "localhost", port: registry.ready.grpcPort)
                let status1 = try await ServiceProbe.withClient(address, trustRoots: certificate) {
                    try await ServiceProbe.health($0)
                }
                #expect(status1 == .serving)
                #expect(
                    try await python(["health-tls", "localhost:\(registry.ready.grpcPort)", certificate]) == "SERVING")
                await #expect(throws: (any Error).self) {
                    try await ServiceProbe.withClient(registry.grpcAddress) { try await ServiceProbe.health($0) }
                }
                #expect(registry.child.output.contains("gRPC listens with TLS"))
            }
        }
    }

    @Test("an invalid setting stops start-up with exit 78 and one line naming it")
    func invalidSetting() async throws {
        let (status, output) = try await ChildProcess.run(
            TestEnvironment.executable("registry"), arguments: ["--config", "/dev/null/none.json"],
            environment: ["ORRERY_GRPC_PORT": "not-a-port"])
        #expect(status == 78)
        #expect(output.contains("config"), "\(output)")

        try await TestEnvironment.withTemporaryDirectory("orrery-cfg") { directory in
            let config = directory.appendingPathComponent("c.json")
            try Data("{}".utf8).write(to: config)
            let (portStatus, portOutput) = try await ChildProcess.run(
                TestEnvironment.executable("registry"), arguments: ["--config", config.path],
                environment: ["ORRERY_GRPC_PORT": "not-a-port"])
            #expect(portStatus == 78)
            let lines = portOutput.split(separator: "\n")
            #expect(
                lines.count == 1 && lines[0].contains("grpc.port") && lines[0].contains("ORRERY_GRPC_PORT"),
                "\(portOutput)"
            )

            let (agentStatus, agentOutput) = try await ChildProcess.run(
                TestEnvironment.executable("device-agent"),
                arguments: ["--config", config.path, "--grpc-host", "0.0.0.0"])
            #expect(agentStatus == 78)
            #expect(agentOutput.contains("not a loopback address"))
            // The owner's policy is a setting too.
            let policy = directory.appendingPathComponent("owner.json")
            try Data(#"{"owner": {"max_connections": 0}}"#.utf8).write(to: policy)
            let (policyStatus, policyOutput) = try await ChildProcess.run(
                TestEnvironment.executable("device-agent"),
                arguments: [
                    "--config", policy.path, "--state-dir", directory.appendingPathComponent("agent-state").path,
                ])
            #expect(policyStatus == 78, "\(policyOutput)")
            #expect(policyOutput.contains("owner.max_connections"), "\(policyOutput)")

            let (usageStatus, _) = try await ChildProcess.run(
                TestEnvironment.executable("identity"), arguments: ["--no-such-flag"])
            #expect(usageStatus == 64)
        }
    }

    @Test("an unreachable PostgreSQL stops start-up with exit 69 and says where it looked")
    func databaseUnreachable() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-nodb") { directory in
            let config = directory.appendingPathComponent("c.json")
            try Data(#"{"db": {"host": "127.0.0.1", "port": 1}}"#.utf8).write(to: config)
            let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.executable("contract-notary"),
                arguments: ["--config", config.path, "--grpc-port", "0", "--http-port", "0", "--db-timeout", "2"],
                environment: network.environment(for: "contract-notary"))
            #expect(status == 69, "\(output)")
            #expect(output.contains("127.0.0.1:1"))
        }
    }

    @Test("a background worker that fails for good ends its service with exit 1, naming the worker")
    func workerFailingForGood() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-worker-fails") { directory in
                let config = directory.appendingPathComponent("c.json")
                try Data("{}".utf8).write(to: config)
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                // The registry's liveness sweeper fails as soon as it starts: the process must not stay up without it.
                let (status, output) = try await ChildProcess.run(
                    TestEnvironment.executable("registry"),
                    arguments: ["--config", config.path, "--grpc-port", "0", "--http-port", "0"],
                    environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 }
                        .merging(["ORRERY_FAIL_WORKER": "liveness"]) { $1 })
                #expect(status == 1, "\(output)")
                #expect(output.contains("the liveness failed for good"), "\(output)")
            }
        }
    }

    @Test("--help documents every setting with its environment variable")
    func help() async throws {
        let (status, output) = try await ChildProcess.run(
            TestEnvironment.executable("orchestrator"), arguments: ["--help"])
        #expect(status == 0)
        for variable in [
            "ORRERY_GRPC_HOST", "ORRERY_GRPC_PORT", "ORRERY_HTTP_HOST", "ORRERY_HTTP_PORT", "ORRERY_LOG_LEVEL",
            "ORRERY_LOG_FORMAT", "ORRERY_DB_HOST", "ORRERY_DB_PORT", "ORRERY_DB_USER", "ORRERY_DB_PASSWORD",
            "ORRERY_DB_DATABASE", "ORRERY_DB_TLS", "ORRERY_DB_TIMEOUT", "ORRERY_IDENTITY_KEY", "ORRERY_TRUST_OPERATOR",
            "ORRERY_IDENTITY_ADDRESS", "ORRERY_IDENTITY_DELEGATION", "ORRERY_STATE_DIR", "ORRERY_SHUTDOWN_GRACE",
        ] {
            #expect(output.contains(variable), "--help lacks \(variable)")
        }
    }

    /// Each service's own settings, and some of the others'.
    static let ownOptions: [String: [String]] = [
        "identity": ["--operator-key"],
        "registry": ["--liveness-interval-ms"],
        "orchestrator": [
            "--registry-address", "--offer-timeout-ms", "--notary-address", "--settlement-address",
            "--relocation-margin-percent",
        ],
        "contract-notary": ["--registry-address", "--settlement-did"],
        "settlement-gateway": ["--notary-address", "--notary-did"],
    ]

    @Test(
        "each service shows and takes its own settings only: another service's option is a usage error, an invalid own setting names its flag and variable",
        arguments: ["identity", "registry", "orchestrator", "contract-notary", "settlement-gateway"])
    func ownSettingsOnly(service: String) async throws {
        let executable = TestEnvironment.executable(service)
        let own = Self.ownOptions[service] ?? []
        let others = Set(Self.ownOptions.values.joined()).subtracting(own)
        let (status, help) = try await ChildProcess.run(executable, arguments: ["--help"])
        #expect(status == 0)
        #expect(help.contains("SETTINGS OF EVERY SERVICE") || help.contains("Settings of every service"), "\(help)")
        for option in own { #expect(help.contains(option), "\(service) --help lacks \(option)") }
        for option in others.sorted() {
            #expect(!help.contains(option), "\(service) --help shows \(option), another service's setting")
            let (refused, output) = try await ChildProcess.run(executable, arguments: [option, "1"])
            #expect(refused == 64 && output.contains("Unknown option"), "\(service) \(option): \(refused) \(output)")
        }
    }

    @Test("an invalid setting of one service's own is refused with exit 78 naming its key, flag and variable")
    func invalidOwnSetting() async throws {
        // The shared settings hold together (a key path, an operator DID); only the registry's own one is wrong.
        let (status, output) = try await ChildProcess.run(
            TestEnvironment.executable("registry"),
            arguments: ["--identity-key", "/nonexistent/service.key", "--trust-operator", SigningKey().did.string],
            environment: ["ORRERY_LIVENESS_INTERVAL_MS": "5"])
        #expect(status == 78, "\(output)")
        #expect(
            output.contains("liveness.interval_ms (--liveness-interval-ms, ORRERY_LIVENESS_INTERVAL_MS"), "\(output)")
    }
}
