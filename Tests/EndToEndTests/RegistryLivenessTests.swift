import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// Heartbeats, liveness, watches across replicas, queries and RTT on real registries.
@Suite(
    "Registry: liveness, watch, query", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct RegistryLivenessTests {
    typealias DeviceClient = RegistryJoinTests.DeviceClient
    static let interval = 300  // ms

    func startRegistry(
        _ database: TestDatabase, _ network: TestNetwork, _ directory: URL, interval: Int = Self.interval
    ) async throws -> RunningService {
        try await RunningService.start(
            "registry", extraArguments: ["--liveness-interval-ms", String(interval)],
            environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 },
            directory: directory)
    }

    func heartbeat(
        _ device: DeviceClient, _ registry: RunningService, count: Int = 1,
        free: (Orrery_Registry_V1_Heartbeat) -> Orrery_Registry_V1_Heartbeat = { $0 }
    ) async throws -> UInt64 {
        try await device.withRegistry(registry) { client in
            let beat = free(
                .with {
                    $0.deviceDid = device.key.did.string; $0.freeCpuMillicores = 4000; $0.freeRamBytes = 1 << 30
                })
            return try await client.heartbeats(
                request: StreamingClientRequest { writer in
                    for _ in 0..<count { try await writer.write(beat) }
                }
            ).accepted
        }
    }

    func status(_ device: DeviceClient, _ registry: RunningService) async throws -> Orrery_Registry_V1_DeviceStatus {
        try await device.withRegistry(registry) {
            try await $0.getDevice(.with { $0.did = device.key.did.string }).status
        }
    }

    /// Heartbeats through `registry` until `replica` shows the device online (at most 20 s); returns whether it did.
    func heartbeatUntilOnline(
        _ device: DeviceClient, _ registry: RunningService, seenBy replica: RunningService
    ) async throws -> Bool {
        for _ in 0..<80 {
            _ = try await heartbeat(device, registry)
            if try await status(device, replica) == .online { return true }
            try await Task.sleep(for: .milliseconds(250))
        }
        return false
    }

    /// Heartbeats until `registry` reads the device online within `fresh` of sending the heartbeat that read rests on.
    /// On a starved test process an "online" answer can arrive after the registry has already judged the silent
    /// device; a pause begun then would look like a pause that gave no grace.
    func heartbeatUntilFreshlyOnline(
        _ device: DeviceClient, _ registry: RunningService, fresh: Duration
    ) async throws -> Bool {
        for _ in 0..<40 {
            let sent = ContinuousClock.now
            _ = try await heartbeat(device, registry)
            if try await status(device, registry) == .online, ContinuousClock.now - sent < fresh { return true }
            try await Task.sleep(for: .milliseconds(250))
        }
        return false
    }

    /// Polls until `device` has `expected` status, or fails after `limit`.
    func await(
        _ expected: Orrery_Registry_V1_DeviceStatus, _ device: DeviceClient, _ registry: RunningService,
        within limit: Duration = .seconds(5)
    ) async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if try await status(device, registry) == expected { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("device did not become \(expected) within \(limit); it is \(try await status(device, registry))")
    }

    @Test(
        "online → suspect → offline without heartbeats, online again on the next; watched through another replica, resumable"
    )
    func livenessAcrossReplicas() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-liveness") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let writer = try await startRegistry(database, network, directory)
                defer { writer.child.signal(SIGKILL) }
                let reader = try await startRegistry(database, network, directory)
                defer { reader.child.signal(SIGKILL) }
                let device = try DeviceClient(operatorKey: network.operatorKey)
                let watcher = try DeviceClient(operatorKey: network.operatorKey)

                // A watch on the other replica, collecting events as they come.
                let events = WatchLog()
                let watch = Task {
                    do {
                        try await watcher.withRegistry(reader) { client in
                            try await client.watchDevices(.with { $0.afterRevision = 0 }) { response in
                                for try await event in response.messages { events.append(event) }
                            }
                        }
                    } catch {
                        events.end(error)
                    }
                }
                defer { watch.cancel() }
                try await events.wait {
                    $0.contains { if case .snapshotComplete = $0.event { return true } else { return false } }
                }

                _ = try await device.withRegistry(writer) {
                    try await device.join($0, capabilities: RegistryJoinTests.capabilities())
                }
                #expect(try await heartbeat(device, writer, count: 3) == 3)
                // A device is online only until its next missed interval (300 ms here), which a loaded machine's polling
                // can miss: heartbeat until the replica shows it online. The watch below must show the order of states.
                #expect(
                    try await heartbeatUntilOnline(device, writer, seenBy: writer), "the device never showed online")
                // `suspect` lasts one interval: polling can miss it on a loaded machine; the watch below must show it.
                try await self.await(.offline, device, reader, within: .seconds(20))
                #expect(
                    try await heartbeatUntilOnline(device, writer, seenBy: reader),
                    "the device did not come back online after heartbeating again")

                try await events.wait { events in
                    let statuses = events.compactMap { $0.change.hasDevice ? $0.change.device.status : nil }
                    guard let offline = statuses.firstIndex(of: .offline) else { return false }
                    return statuses.starts(with: [.online]) && statuses.contains(.suspect)
                        && statuses[offline...].contains(.online)
                }
                let changes = events.all.filter { $0.change.revision > 0 }.map(\.change)
                #expect(changes.first?.kind == .joined)
                #expect(zip(changes, changes.dropFirst()).allSatisfy { $0.revision < $1.revision })

                // Resuming after a revision gives exactly what came after it.
                let middle = changes[1].revision
                let resumed = try await watcher.withRegistry(reader) { client in
                    try await client.watchDevices(.with { $0.afterRevision = middle }) { response in
                        var seen: [Int64] = []
                        for try await event in response.messages {
                            seen.append(event.change.revision)
                            if seen.count == changes.count - 2 { break }
                        }
                        return seen
                    }
                }
                #expect(resumed == changes.dropFirst(2).map(\.revision))
            }
        }
    }

    /// The registry's `Liveness.reconnectAllowance`: after observation (re)begins, devices get this long beyond the
    /// usual limits to reconnect.
    static let reconnectAllowance: Duration = .seconds(5)

    /// Positive evidence both ways: the silent `device` is still online when a status call that began two intervals
    /// plus the reconnect allowance after `since` reads it (without a grace it is offline at the first sweep, a
    /// quarter interval later), and the registry does judge it later (its sweeper runs). Which of suspect or offline
    /// is seen first depends on how fast the polls are on a loaded machine: not checked.
    func expectGraceThenJudgement(
        _ device: DeviceClient, _ registry: RunningService, since: ContinuousClock.Instant, interval: Int
    ) async throws {
        // Judged at some moment J; a poll that answered "not online" at A (its answer's arrival) proves J ≤ A. A grace
        // of two intervals (and the allowance) before `suspect` holds when no such answer arrives earlier than that after `since`
        // (and the poll before it proves the device was still online then).
        var judgedSeenAt: Duration?
        while ContinuousClock.now - since < .milliseconds(interval * 10) + Self.reconnectAllowance {
            if try await status(device, registry) != .online {
                judgedSeenAt = ContinuousClock.now - since
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        // The registry's log without the connection pool's retries, which fill it while the database is away.
        let log = registry.child.output.split(separator: "\n").filter { !$0.contains("Connection creation failed") }
        let seen = try #require(
            judgedSeenAt, "the registry never judged the silent device: \(log.suffix(40).joined(separator: "\n"))")
        #expect(
            seen >= .milliseconds(interval * 2) + Self.reconnectAllowance,
            "judged \(seen) after the pause: no grace (or none for reconnecting); the registry's log:\n\(log.suffix(60).joined(separator: "\n"))"
        )
    }

    @Test(
        "a registry that was paused (SIGSTOP) judges nobody on the time it could not observe: a full grace after it resumes"
    )
    func stallGrace() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-stall") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                // 4 s: the device is judged only after 8 s of silence, so the "online" the test reads just before it pauses
                // the registry (or cuts its database) is still true when it does, however slow a loaded machine's calls.
                let interval = 4000
                let registry = try await startRegistry(database, network, directory, interval: interval)
                defer { registry.child.signal(SIGKILL) }
                let device = try DeviceClient(operatorKey: network.operatorKey)
                _ = try await device.withRegistry(registry) {
                    try await device.join($0, capabilities: RegistryJoinTests.capabilities())
                }
                // Online, on a heartbeat sent less than an interval ago: not judged before the pause begins.
                #expect(
                    try await heartbeatUntilFreshlyOnline(device, registry, fresh: .milliseconds(interval)))
                registry.child.signal(SIGSTOP)
                // Paused for more than 3 intervals: every device's last heartbeat is older than the offline limit.
                try await Task.sleep(for: .milliseconds(interval * 4))
                let resumed = ContinuousClock.now
                registry.child.signal(SIGCONT)
                try await expectGraceThenJudgement(device, registry, since: resumed, interval: interval)
                #expect(try await heartbeatUntilOnline(device, registry, seenBy: registry))
            }
        }
    }

    /// A registry judging every `interval` ms whose database is reached through a TCP proxy (killed or stopped to
    /// fault it), with one device joined and seen online; `body` gets the database, the directory, the proxy and its
    /// port, the registry and the device. The proxy and the registry are killed afterwards.
    func withRegistryBehindProxy(
        _ name: String, interval: Int,
        _ body: (TestDatabase, URL, ChildProcess, Int, RunningService, DeviceClient) async throws -> Void
    ) async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory(name) { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let (proxy, port) = try await DatabaseOutageTests.startProxy(database, in: directory)
                defer { proxy.signal(SIGKILL) }
                var environment = database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 }
                environment["ORRERY_DB_PORT"] = String(port)
                let registry = try await RunningService.start(
                    "registry", extraArguments: ["--liveness-interval-ms", String(interval)], environment: environment,
                    directory: directory)
                defer { registry.child.signal(SIGKILL) }
                let device = try DeviceClient(operatorKey: network.operatorKey)
                _ = try await device.withRegistry(registry) {
                    try await device.join($0, capabilities: RegistryJoinTests.capabilities())
                }
                #expect(try await heartbeatUntilOnline(device, registry, seenBy: registry))
                try await body(database, directory, proxy, port, registry, device)
            }
        }
    }

    @Test(
        "a registry whose database was unreachable judges nobody on the time it could not write: a full grace after the database answers again"
    )
    func databaseOutageGrace() async throws {
        // 4 s: the device is judged only after 8 s of silence, so the "online" the test reads just before it pauses
        // the registry (or cuts its database) is still true when it does, however slow a loaded machine's calls.
        let interval = 4000
        try await withRegistryBehindProxy("orrery-db-outage-grace", interval: interval) {
            database, directory, proxy, port, registry, device in
            // The database is gone for more than 3 intervals: the device's last heartbeat is older than the limit.
            proxy.signal(SIGKILL)
            _ = await proxy.waitForExit()
            #expect(try await DatabaseOutageTests.waitForHealth(.notServing, of: registry))
            try await Task.sleep(for: .milliseconds(interval * 4))
            let back = ContinuousClock.now
            let (again, _) = try await DatabaseOutageTests.startProxy(database, port: port, in: directory)
            defer { again.signal(SIGKILL) }
            #expect(try await DatabaseOutageTests.waitForHealth(.serving, of: registry))
            try await expectGraceThenJudgement(device, registry, since: back, interval: interval)
            #expect(try await heartbeatUntilOnline(device, registry, seenBy: registry))
        }
    }

    @Test(
        "a database that hangs (its proxy stopped, connections open) holds no liveness pass past its limit: the pass is given up, and once the database answers every device gets a full grace"
    )
    func hangingDatabaseGrace() async throws {
        let interval = 4000
        try await withRegistryBehindProxy("orrery-db-hang-grace", interval: interval) {
            _, _, proxy, _, registry, device in
            // Stopped, the proxy keeps every connection open and answers nothing: queries hang.
            proxy.signal(SIGSTOP)
            #expect(
                try await eventually(timeout: .seconds(60)) {
                    registry.child.output.contains("waited on the database for 10.0 seconds: given up")
                }, "\(registry.child.output.suffix(3000))")
            proxy.signal(SIGCONT)
            let back = ContinuousClock.now
            #expect(try await DatabaseOutageTests.waitForHealth(.serving, of: registry))
            try await expectGraceThenJudgement(device, registry, since: back, interval: interval)
        }
    }

    @Test("a restarted registry gives every device a full grace period: no device is marked offline at start")
    func restartGrace() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-restart") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let interval = 2000
                var registry = try await startRegistry(database, network, directory, interval: interval)
                let device = try DeviceClient(operatorKey: network.operatorKey)
                _ = try await device.withRegistry(registry) {
                    try await device.join($0, capabilities: RegistryJoinTests.capabilities())
                }
                _ = try await heartbeat(device, registry)
                registry.child.signal(SIGTERM)
                #expect(await registry.child.waitForExit() == 0)
                // The device stays silent for longer than 3 intervals while the registry is down.
                try await Task.sleep(for: .milliseconds(interval * 4))
                // Measured from the launch: the registry begins judging somewhere between its launch and its ready file
                // (seen 1.5 s apart on a loaded machine), and its grace counts from there.
                let restarted = ContinuousClock.now
                registry = try await startRegistry(database, network, directory, interval: interval)
                defer { registry.child.signal(SIGKILL) }
                try await expectGraceThenJudgement(device, registry, since: restarted, interval: interval)
                // A heartbeat brings it back (written at the next flush).
                #expect(try await heartbeatUntilOnline(device, registry, seenBy: registry))
            }
        }
    }

    @Test("every query filter, pagination, and refusals of bad filters, heartbeats and RTT reports")
    func queriesAndRefusals() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-query") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                // Devices here never heartbeat: a long interval keeps them online however slow a loaded machine is.
                let registry = try await startRegistry(database, network, directory, interval: 600_000)
                defer { registry.child.signal(SIGKILL) }
                func capabilities(
                    _ cores: UInt32, _ country: String, gpu: String?, price: UInt64, tier: String,
                    arch: String = "x86_64"
                ) -> Orrery_Registry_V1_DeviceCapabilities {
                    var c = RegistryJoinTests.capabilities(cores: cores, country: country)
                    c.architecture = arch
                    c.gpus =
                        gpu.map { model in
                            [
                                .with {
                                    $0.vendor = "NVIDIA"; $0.model = model; $0.vramBytes = 80 << 30
                                }
                            ]
                        } ?? []
                    c.prices.perCoreHour = price
                    c.labels = ["tier": tier]
                    c.location.region = country == "DE" ? "Berlin" : "Paris"
                    return c
                }
                let devices = try (0..<4).map { _ in try DeviceClient(operatorKey: network.operatorKey) }
                let specs = [
                    capabilities(4, "DE", gpu: nil, price: 10, tier: "edge", arch: "aarch64"),
                    capabilities(16, "DE", gpu: "NVIDIA H100", price: 40, tier: "datacenter"),
                    capabilities(32, "FR", gpu: "NVIDIA H100", price: 60, tier: "datacenter"),
                    capabilities(8, "FR", gpu: "NVIDIA L4", price: 20, tier: "edge"),
                ]
                for (device, spec) in zip(devices, specs) {
                    _ = try await device.withRegistry(registry) { try await device.join($0, capabilities: spec) }
                }
                let dids = devices.map(\.key.did.string)
                func query(_ build: (inout Orrery_Registry_V1_QueryDevicesRequest) -> Void) async throws -> Set<String>
                {
                    var request = Orrery_Registry_V1_QueryDevicesRequest()
                    build(&request)
                    return try await devices[0].withRegistry(registry) {
                        Set(try await $0.queryDevices(request).devices.map(\.did))
                    }
                }
                #expect(try await query { _ in } == Set(dids))
                #expect(try await query { $0.minCpuCores = 16 } == [dids[1], dids[2]])
                #expect(try await query { $0.minRamBytes = 33 << 30 } == [])
                #expect(try await query { $0.minDiskBytes = 500 << 30 } == Set(dids))
                #expect(try await query { $0.architecture = "aarch64" } == [dids[0]])
                #expect(try await query { $0.gpuModel = "NVIDIA H100" } == [dids[1], dids[2]])
                #expect(try await query { $0.minGpuCount = 1 } == [dids[1], dids[2], dids[3]])
                #expect(try await query { $0.minGpuVramBytes = 81 << 30 } == [])
                #expect(try await query { $0.countries = ["FR"] } == [dids[2], dids[3]])
                #expect(try await query { $0.rejectCountries = ["FR"] } == [dids[0], dids[1]])
                #expect(try await query { $0.regions = ["Berlin"] } == [dids[0], dids[1]])
                #expect(try await query { $0.maxPricePerCoreHour = 20 } == [dids[0], dids[3]])
                #expect(try await query { $0.labels = ["tier": "datacenter"] } == [dids[1], dids[2]])
                #expect(try await query { $0.statuses = [.offline] } == [])
                #expect(
                    try await query {
                        $0.countries = ["DE"]; $0.minGpuCount = 1; $0.labels = ["tier": "datacenter"]
                    } == [dids[1]])

                // Pagination: one device a page, in DID order, every device exactly once.
                var seen: [String] = []
                var token = ""
                repeat {
                    let page = try await devices[0].withRegistry(registry) { client in
                        try await client.queryDevices(
                            .with {
                                $0.pageSize = 1; $0.pageToken = token
                            })
                    }
                    seen += page.devices.map(\.did)
                    token = page.nextPageToken
                } while !token.isEmpty
                #expect(seen == dids.sorted())

                for bad in [
                    { (r: inout Orrery_Registry_V1_QueryDevicesRequest) in r.pageSize = 5000 },
                    { $0.countries = ["France"] },
                    { $0.pageToken = "bm90LWEtZGlk" },
                ] {
                    #expect(await rpcCode { _ = try await query(bad) } == .invalidArgument)
                }
                let device = devices[3]
                #expect(
                    await rpcCode {
                        _ = try await heartbeat(device, registry) {
                            var b = $0; b.freeRamBytes = 1 << 50; return b
                        }
                    } == .invalidArgument)
                #expect(
                    await rpcCode {
                        _ = try await heartbeat(device, registry) {
                            var b = $0; b.deviceDid = dids[0]; return b
                        }
                    } == .permissionDenied)
                try await device.withRegistry(registry) { client in
                    let report = try await client.reportRtt(
                        .with {
                            $0.deviceDid = device.key.did.string
                            $0.samples = [
                                .with {
                                    $0.landmark = "registry:a"; $0.rttMs = 12.5
                                },
                                .with {
                                    $0.landmark = "orchestrator:b"; $0.rttMs = 30
                                },
                            ]
                            $0.idempotencyKey = "rtt-1"
                        })
                    #expect(report.accepted == 2)
                    #expect(
                        await rpcCode {
                            _ = try await client.reportRtt(
                                .with {
                                    $0.deviceDid = device.key.did.string;
                                    $0.samples = [
                                        .with {
                                            $0.landmark = "x"; $0.rttMs = -1
                                        }
                                    ]; $0.idempotencyKey = "rtt-2"
                                })
                        } == .invalidArgument)
                    #expect(
                        await rpcCode {
                            _ = try await client.reportRtt(
                                .with {
                                    $0.deviceDid = device.key.did.string; $0.idempotencyKey = "rtt-3"
                                })
                        } == .invalidArgument)
                    // A timestamp outside protobuf's range is refused, and the registry lives on (read as a date, one
                    // trapped: a fuzzed request killed the registry). The calls after these prove it still answers.
                    for seconds in [Int64.min, Int64.max, 253_402_300_800] {
                        let bad = Google_Protobuf_Timestamp.with { $0.seconds = seconds }
                        #expect(
                            await rpcCode { _ = try await client.listRttSamples(.with { $0.measuredAfter = bad }) }
                                == .invalidArgument, "measured_after \(seconds)")
                        #expect(
                            await rpcCode {
                                _ = try await client.getAvailability(
                                    .with {
                                        $0.deviceDid = device.key.did.string; $0.from = bad;
                                        $0.to = .with { $0.seconds = 0 }
                                    })
                            } == .invalidArgument, "from \(seconds)")
                    }
                    _ = try await client.leave(
                        .with {
                            $0.deviceDid = device.key.did.string; $0.idempotencyKey = "bye"
                        })
                }
                #expect(
                    await rpcCode { _ = try await heartbeat(device, registry) } == .failedPrecondition,
                    "a heartbeat after leaving")
                try await database.withClient(schema: "registry") { db in
                    let rows = try await db.query("SELECT landmark, rtt_ms FROM rtt_samples ORDER BY landmark")
                    var samples: [String: Double] = [:]
                    for try await (landmark, rtt) in rows.decode((String, Double).self) { samples[landmark] = rtt }
                    #expect(samples == ["orchestrator:b": 30, "registry:a": 12.5])
                }
            }
        }
    }
}

/// Events a watch delivered, for a test to wait on.
final class WatchLog: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var events: [Orrery_Registry_V1_WatchDevicesResponse] = []
    private var ending: (any Error)?

    func append(_ event: Orrery_Registry_V1_WatchDevicesResponse) { lock.withLock { events.append(event) } }
    /// The watch ended with `error` (shown when a wait fails).
    func end(_ error: any Error) { lock.withLock { ending = error } }
    var all: [Orrery_Registry_V1_WatchDevicesResponse] { lock.withLock { events } }

    /// Waits until `condition` holds of the events so far (the bound is for a loaded machine, where a just-started
    /// debug registry took over 10 s to answer its first watch; it ends as soon as the condition holds).
    func wait(
        within limit: Duration = .seconds(60), until condition: ([Orrery_Registry_V1_WatchDevicesResponse]) -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if condition(all) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        let ended = lock.withLock { ending.map { "; the watch ended: \($0)" } ?? "" }
        Issue.record("the watch did not deliver what was expected within \(limit): \(all.count) events\(ended)")
    }
}
