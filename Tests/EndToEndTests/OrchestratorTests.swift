import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// A real registry and real orchestrators over PostgreSQL, devices joined with proof of possession, a consumer
/// calling with its own capability.
@Suite(
    "Orchestrator: placement and deployments", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct OrchestratorTests {
    /// A consumer holding operator → consumer `/orrery/orchestrator`.
    struct Consumer {
        let key = SigningKey()
        let chain: [Delegation]

        init(operatorKey: SigningKey) throws {
            chain = [
                Delegation.issue(
                    by: operatorKey, to: key.did, subject: operatorKey.did,
                    command: try Command("/orrery/orchestrator"),
                    expiration: Int64(Date().timeIntervalSince1970) + 3600)
            ]
        }

        /// consumer → orchestrator `/orrery/notary/propose`: what a submission carries so the orchestrator can
        /// propose contracts on the consumer's behalf.
        func authority(
            for orchestrator: RunningService, budget: Int? = nil, command: String = "/orrery/notary/propose"
        ) throws -> Data {
            let delegation = Delegation.issue(
                by: key, to: try DID(orchestrator.ready.did), subject: key.did,
                command: try Command(command),
                policy: try budget.map { try Policy(try IPLDJSON.parse(#"[["<=", ".amount", \#($0)]]"#)) } ?? .empty,
                expiration: Int64(Date().timeIntervalSince1970) + 3600)
            return Data(try UCANContainer.encode([delegation.envelope.bytes]))
        }

        /// Submits `spec` to `orchestrator` with the authority a paid job carries: contracts proposed and (with
        /// `paid`) escrow held on the consumer's behalf; `idempotencyKey` makes a retry return the same deployment.
        func submit(
            _ spec: Orrery_Orchestrator_V1_WorkloadSpec, to orchestrator: RunningService, paid: Bool = true,
            idempotencyKey: String = UUID().uuidString
        ) async throws -> Orrery_Orchestrator_V1_Deployment {
            try await with(orchestrator) { client in
                try await client.submitWorkload(
                    .with {
                        $0.consumerAuthority = try authority(for: orchestrator)
                        if paid {
                            $0.settlementAuthority = try authority(
                                for: orchestrator, command: "/orrery/settlement/escrow")
                        }
                        $0.spec = spec
                        $0.idempotencyKey = idempotencyKey
                    })
            }
        }

        /// The `orrery` CLI's arguments to act as this consumer against `orchestrator`: its key and chain written to
        /// files named after `name` in `directory`.
        func cliArguments(_ orchestrator: RunningService, in directory: URL, name: String) throws -> [String] {
            let key = directory.appendingPathComponent("\(name).key").path
            let chainFile = directory.appendingPathComponent("\(name).ucan").path
            try KeyFile.write(self.key, to: key)
            try DelegationChain.write(chain).write(toFile: chainFile, atomically: true, encoding: .utf8)
            return ["--orchestrator", "127.0.0.1:\(orchestrator.ready.grpcPort)", "--key", key, "--proof", chainFile]
        }

        func with<Result: Sendable>(
            _ orchestrator: RunningService,
            _ body: (Orrery_Orchestrator_V1_Orchestrator.Client<HTTP2ClientTransport.Posix>) async throws -> Result
        ) async throws -> Result {
            let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
            let signer = InvocationSigner(
                key: key, subject: chain[0].issuer, audience: try DID(orchestrator.ready.did), proofs: chain,
                catalog: catalog)
            return try await withGRPCClient(
                transport: try .http2NIOPosix(
                    target: .ipv4(address: "127.0.0.1", port: orchestrator.ready.grpcPort),
                    transportSecurity: .plaintext),
                interceptors: [signer]
            ) { client in
                try await body(Orrery_Orchestrator_V1_Orchestrator.Client(wrapping: client))
            }
        }
    }

    /// Three devices: a cheap small one in Germany, a mid-priced one in France, a GPU machine in the US.
    static let fleet:
        [(country: String, latitude: Double, longitude: Double, cores: UInt32, price: UInt64, gpus: Int)] = [
            ("DE", 52.52, 13.40, 4, 100, 0),
            ("FR", 48.85, 2.35, 8, 150, 0),
            ("US", 40.71, -74.0, 16, 400, 2),
        ]

    static func joinFleet(
        registry: RunningService, operatorKey: SigningKey
    ) async throws -> [String] {
        var dids: [String] = []
        for member in fleet {
            let device = try RegistryJoinTests.DeviceClient(operatorKey: operatorKey)
            let capabilities = Orrery_Registry_V1_DeviceCapabilities.with {
                $0.architecture = "x86_64"
                $0.cpuModel = "test"
                $0.cpuCores = member.cores
                $0.ramBytes = UInt64(member.cores) * 4 << 30
                $0.diskBytes = 200 << 30
                $0.os = "linux"
                $0.kernel = "6"
                $0.location = .with {
                    $0.country = member.country
                    $0.latitude = member.latitude
                    $0.longitude = member.longitude
                }
                $0.prices = .with {
                    $0.perCoreHour = member.price
                    $0.perGbRamHour = 10
                    $0.perGpuHour = 5000
                }
                $0.gpus = (0..<member.gpus).map { _ in
                    .with {
                        $0.vendor = "NVIDIA"
                        $0.model = "NVIDIA A100-SXM4-80GB"
                        $0.vramBytes = 80 << 30
                    }
                }
            }
            _ = try await device.withRegistry(registry) { try await device.join($0, capabilities: capabilities) }
            dids.append(device.key.did.string)
        }
        return dids
    }

    static func spec(
        cores: UInt32 = 2, countries: [String] = [], budget: UInt64 = 0, duration: UInt32 = 3600, name: String = "batch"
    ) -> Orrery_Orchestrator_V1_WorkloadSpec {
        .with {
            $0.name = name
            $0.budget = budget
            $0.allocations = [
                .with {
                    $0.name = "main"
                    $0.executor = .process
                    $0.artifact = .with { $0.text = "#!/bin/sh\necho hello > out.txt\n" }
                    $0.resources = .with {
                        $0.cpuCores = cores
                        $0.ramMib = 1024
                    }
                    $0.maxDurationSeconds = duration
                    $0.outputs = ["out.txt"]
                    $0.constraints = .with { $0.location = .with { $0.countries = countries } }
                }
            ]
        }
    }

    /// The deployment once it runs or ended, or as it is after 30 s.
    static func runningOrEnded(_ id: String, of consumer: Consumer, on orchestrator: RunningService) async throws
        -> Orrery_Orchestrator_V1_Deployment
    {
        var current = try await consumer.with(orchestrator) { try await $0.getDeployment(.with { $0.id = id }) }
        let deadline = ContinuousClock.now + .seconds(30)
        while current.state != .running, !current.state.isTerminal, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            current = try await consumer.with(orchestrator) { try await $0.getDeployment(.with { $0.id = id }) }
        }
        return current
    }

    /// The deployment once it ended (completed, failed or cancelled), or as it is after `limit`.
    static func ended(
        _ id: String, of consumer: Consumer, on orchestrator: RunningService, within limit: Duration = .seconds(30)
    ) async throws -> Orrery_Orchestrator_V1_Deployment {
        var current = try await consumer.with(orchestrator) { try await $0.getDeployment(.with { $0.id = id }) }
        let deadline = ContinuousClock.now + limit
        while !current.state.isTerminal, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            current = try await consumer.with(orchestrator) { try await $0.getDeployment(.with { $0.id = id }) }
        }
        return current
    }

    /// Waits until placement puts `spec`'s first replica on `device` (the orchestrator's view of the fleet caught up
    /// with the devices the test started), up to `limit`.
    static func waitUntilChosen(
        _ device: String, for spec: Orrery_Orchestrator_V1_WorkloadSpec, _ consumer: Consumer,
        _ orchestrator: RunningService, within limit: Duration = .seconds(15)
    ) async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let explanation = try await consumer.with(orchestrator) { client in
                try await client.explainPlacement(.with { $0.spec = spec })
            }
            if explanation.allocations.first?.assignments.first?.deviceDid == device { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("placement did not choose \(device) within \(limit)")
    }

    /// Waits until the orchestrator has the registry's snapshot (ExplainPlacement stops answering UNAVAILABLE) with
    /// `devices` devices in it: generously, since a CI machine running every suite at once may take many seconds for
    /// a fleet's joins and beats to reach the orchestrator's view.
    static func waitForFleet(_ consumer: Consumer, _ orchestrator: RunningService, devices: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        var considered: UInt32?
        while ContinuousClock.now < deadline {
            considered = try? await consumer.with(orchestrator) {
                try await $0.explainPlacement(.with { $0.spec = spec() }).devicesConsidered
            }
            if considered == UInt32(devices) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record(
            "the orchestrator never saw \(devices) devices in 60 s (last: \(considered.map(String.init) ?? "no answer"))"
        )
    }

    static func expectStatus(_ code: RPCError.Code, containing text: String, _ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("expected \(code)")
        } catch let error as RPCError {
            #expect(error.code == code, "\(error)")
            #expect(error.message.contains(text), "\(error.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("explain, submit, get, list, watch and cancel over gRPC; every bad input refused with its field path")
    func deploymentLifecycle() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-orchestrator") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry = try await JobConstellation.startRegistry(database, network, directory)
                defer { registry.child.signal(SIGKILL) }
                // No device answers offers here: a long offer timeout keeps the offer standing (no second placement)
                // however slowly a loaded machine gets from submission to cancellation.
                let orchestrator = try await JobConstellation.startOrchestrator(
                    database, network, directory, registry: registry, extraArguments: ["--offer-timeout-ms", "600000"])
                defer { orchestrator.child.signal(SIGKILL) }
                let devices = try await Self.joinFleet(registry: registry, operatorKey: network.operatorKey)
                let consumer = try Consumer(operatorKey: network.operatorKey)
                try await Self.waitForFleet(consumer, orchestrator, devices: 3)

                try await consumer.with(orchestrator) { client in
                    // Explain: the cheapest device in the accepted countries, with what each constraint eliminated.
                    let europe = try await client.explainPlacement(
                        .with { $0.spec = Self.spec(countries: ["DE", "FR"]) })
                    #expect(europe.placeable)
                    #expect(europe.allocations[0].assignments.map(\.deviceDid) == [devices[0]])
                    #expect(europe.allocations[0].eliminated.map(\.constraint) == ["country"])
                    #expect(europe.totalCost == 2 * 100 + 10)  // 2 cores at 100 + 1 GiB at 10, one hour
                    let huge = try await client.explainPlacement(.with { $0.spec = Self.spec(cores: 32) })
                    #expect(!huge.placeable)
                    #expect(huge.relaxations.map(\.suggestion).contains("ask for at most 16 cpu cores"))

                    // Submit: placed at once, the assignment recorded.
                    let key = UUID().uuidString
                    let submitted = try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try consumer.authority(for: orchestrator)
                            $0.spec = Self.spec(countries: ["FR", "US"])
                            $0.idempotencyKey = key
                        })
                    #expect(submitted.state == .offered, "\(submitted.reason)")
                    #expect(submitted.assignments.map(\.deviceDid) == [devices[1]])
                    #expect(submitted.consumerDid == consumer.key.did.string)
                    // A retry with the same key is the same deployment; a different spec with it is refused.
                    let retried = try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try consumer.authority(for: orchestrator)
                            $0.spec = Self.spec(countries: ["FR", "US"])
                            $0.idempotencyKey = key
                        })
                    #expect(retried.id == submitted.id)
                    await Self.expectStatus(.alreadyExists, containing: "different spec") {
                        _ = try await client.submitWorkload(
                            .with {
                                $0.consumerAuthority = try consumer.authority(for: orchestrator)
                                $0.spec = Self.spec(cores: 3)
                                $0.idempotencyKey = key
                            })
                    }
                    #expect(try await client.getDeployment(.with { $0.id = submitted.id }) == submitted)
                    let listed = try await client.listDeployments(.with { $0.states = [.offered] })
                    #expect(listed.deployments.map(\.id) == [submitted.id])

                    // Watch from the start: submitted, matched, offered (no agent answers here), then the cancellation
                    // ends the stream.
                    async let events: [Orrery_Orchestrator_V1_DeploymentEvent] = consumer.with(orchestrator) {
                        watcher in
                        try await watcher.watchDeployment(.with { $0.id = submitted.id }) { response in
                            var seen: [Orrery_Orchestrator_V1_DeploymentEvent] = []
                            for try await event in response.messages { seen.append(event) }
                            return seen
                        }
                    }
                    try await Task.sleep(for: .milliseconds(300))
                    let cancelled = try await client.cancelDeployment(
                        .with {
                            $0.id = submitted.id
                            $0.reason = "changed my mind"
                        })
                    #expect(cancelled.state == .cancelled)
                    #expect(cancelled.reason == "cancelled by the consumer: changed my mind")
                    let watched = try await events
                    #expect(watched.map(\.state) == [.submitted, .matched, .offered, .cancelled])
                    #expect(watched.map(\.revision) == watched.map(\.revision).sorted())
                    // Resumed after the third event: only the last one.
                    let resumed = try await client.watchDeployment(
                        .with {
                            $0.id = submitted.id
                            $0.afterRevision = watched[2].revision
                        }
                    ) { response in try await response.messages.reduce(into: []) { $0.append($1.state) } }
                    #expect(resumed == [.cancelled])
                    // Cancelling again changes nothing.
                    #expect(
                        try await client.cancelDeployment(.with { $0.id = submitted.id }).revision == cancelled.revision
                    )

                    // An unplaceable spec is recorded as failed, with the reason and the nearest relaxation.
                    let impossible = try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try consumer.authority(for: orchestrator)
                            $0.spec = Self.spec(cores: 12, countries: ["DE", "FR"])
                            $0.idempotencyKey = UUID().uuidString
                        })
                    #expect(impossible.state == .failed)
                    #expect(
                        impossible.reason.contains("cannot be placed")
                            && impossible.reason.contains("at most 8 cpu cores"))

                    // Bad input: each refusal names the field.
                    var bad = Self.spec()
                    bad.allocations[0].resources.cpuCores = 0
                    bad.allocations[0].executor = .unspecified
                    bad.edges = [
                        .with {
                            $0.from = "main"; $0.to = "missing"; $0.maxRttMs = 10
                        }
                    ]
                    await Self.expectStatus(.invalidArgument, containing: "allocations[0].resources.cpu_cores: 1…1024")
                    {
                        _ = try await client.submitWorkload(
                            .with {
                                $0.consumerAuthority = try consumer.authority(for: orchestrator)
                                $0.spec = bad; $0.idempotencyKey = UUID().uuidString
                            })
                    }
                    await Self.expectStatus(
                        .invalidArgument, containing: "edges[0].to: no allocation is named 'missing'"
                    ) {
                        _ = try await client.explainPlacement(.with { $0.spec = bad })
                    }
                    await Self.expectStatus(.invalidArgument, containing: "below the cheapest possible price") {
                        _ = try await client.submitWorkload(
                            .with {
                                $0.consumerAuthority = try consumer.authority(for: orchestrator)
                                $0.spec = Self.spec(budget: 50)
                                $0.idempotencyKey = UUID().uuidString
                            })
                    }
                    await Self.expectStatus(
                        .invalidArgument, containing: "consumer_authority: the consumer's delegation"
                    ) {
                        _ = try await client.submitWorkload(
                            .with {
                                $0.spec = Self.spec()
                                $0.idempotencyKey = UUID().uuidString
                            })
                    }
                    await Self.expectStatus(.invalidArgument, containing: "none of its delegations is from") {
                        _ = try await client.submitWorkload(
                            .with {
                                $0.spec = Self.spec()
                                $0.idempotencyKey = UUID().uuidString
                                $0.consumerAuthority = try Consumer(operatorKey: network.operatorKey).authority(
                                    for: orchestrator)
                            })
                    }
                    await Self.expectStatus(.invalidArgument, containing: "idempotency_key") {
                        _ = try await client.submitWorkload(.with { $0.spec = Self.spec() })
                    }
                    await Self.expectStatus(.invalidArgument, containing: "id: a deployment id") {
                        _ = try await client.getDeployment(.with { $0.id = "nope" })
                    }
                }
                // Another consumer does not see the first one's deployments.
                let stranger = try Consumer(operatorKey: network.operatorKey)
                try await stranger.with(orchestrator) { client in
                    let theirs = try await client.listDeployments(.init())
                    #expect(theirs.deployments.isEmpty)
                }
                let first = try await consumer.with(orchestrator) { try await $0.listDeployments(.init()).deployments }
                #expect(first.count == 2)
                await Self.expectStatus(.notFound, containing: "no deployment") {
                    _ = try await stranger.with(orchestrator) {
                        try await $0.getDeployment(.with { $0.id = first[0].id })
                    }
                }
            }
        }
    }

    @Test(
        "a deployment submitted before the orchestrator could place it is placed by a later replica; replicas share watches"
    )
    func replicasAndResume() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-orchestrators") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let environment = database.serviceEnvironment.merging(network.environment(for: "orchestrator")) { $1 }
                let registry = try await JobConstellation.startRegistry(database, network, directory)
                defer { registry.child.signal(SIGKILL) }
                let devices = try await Self.joinFleet(registry: registry, operatorKey: network.operatorKey)
                let consumer = try Consumer(operatorKey: network.operatorKey)

                // A replica that cannot see the registry accepts the submission and leaves it waiting.
                let blind = try await RunningService.start(
                    "orchestrator", environment: environment, directory: directory)
                let waiting = try await consumer.with(blind) { client in
                    try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try consumer.authority(for: blind)
                            $0.spec = Self.spec()
                            $0.idempotencyKey = UUID().uuidString
                        })
                }
                #expect(waiting.state == .submitted)
                await blind.child.stop()

                // Two replicas that can: either advances it; a watch on one sees what the other did. The devices here have
                // no agent line, so the offer would expire after the default 10 s (and the deployment move on) before a
                // loaded machine gets to the watch: it waits for them as long as the test runs.
                let registryAddress = [
                    "--registry-address", "127.0.0.1:\(registry.ready.grpcPort)", "--offer-timeout-ms", "600000",
                ]
                let first = try await RunningService.start(
                    "orchestrator", extraArguments: registryAddress, environment: environment, directory: directory)
                defer { first.child.signal(SIGKILL) }
                let second = try await RunningService.start(
                    "orchestrator", extraArguments: registryAddress, environment: environment, directory: directory)
                defer { second.child.signal(SIGKILL) }
                let deadline = ContinuousClock.now + .seconds(20)
                var placed = waiting
                while ContinuousClock.now < deadline, placed.state == .submitted || placed.state == .matched {
                    try await Task.sleep(for: .milliseconds(100))
                    placed = try await consumer.with(second) {
                        try await $0.getDeployment(.with { $0.id = waiting.id })
                    }
                }
                #expect(placed.state == .offered, "\(placed.reason)")
                #expect(placed.assignments.map(\.deviceDid) == [devices[0]])

                try await Self.waitForFleet(consumer, first, devices: 3)
                async let watched: [Orrery_Orchestrator_V1_DeploymentState] = consumer.with(first) { client in
                    try await client.watchDeployment(
                        .with {
                            $0.id = waiting.id; $0.afterRevision = placed.revision
                        }
                    ) {
                        try await $0.messages.reduce(into: []) { $0.append($1.state) }
                    }
                }
                try await Task.sleep(for: .milliseconds(300))
                _ = try await consumer.with(second) { try await $0.cancelDeployment(.with { $0.id = waiting.id }) }
                #expect(try await watched == [.cancelled])
            }
        }
    }
}
