import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// Real `device-agent` processes joining a real registry: join, heartbeats, kill -9, restart, registry restart, leave.
@Suite(
    "Device agent: join and liveness", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct DeviceAgentJoinTests {
    static let interval = 500  // ms: short enough to be quick, long enough for a loaded CI machine

    @Test(
        "an agent joins with its owner's delegation, stays live, survives kill -9 and a registry restart as the same device, and leaves"
    )
    func lifecycle() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-agent") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registryEnvironment = database.serviceEnvironment.merging(network.environment(for: "registry")) {
                    $1
                }
                var registry = try await RunningService.start(
                    "registry", extraArguments: ["--liveness-interval-ms", String(Self.interval)],
                    environment: registryEnvironment, directory: directory)
                defer { registry.child.signal(SIGKILL) }
                let registryAddress = "127.0.0.1:\(registry.ready.grpcPort)"

                // An orchestrator replica as a second landmark.
                let orchestrator = try await RunningService.start(
                    "orchestrator",
                    environment: database.serviceEnvironment.merging(network.environment(for: "orchestrator")) { $1 },
                    directory: directory)
                defer { orchestrator.child.signal(SIGKILL) }
                let orchestratorAddress = "127.0.0.1:\(orchestrator.ready.grpcPort)"

                // The owner's policy, the landmarks, and the agent's state.
                let state = directory.appendingPathComponent("agent-state").path
                let config = directory.appendingPathComponent("agent.json").path
                try """
                {"owner": {"location": {"country": "NL", "region": "Amsterdam", "latitude": 52.37, "longitude": 4.9},
                           "prices": {"per_core_hour": 15, "minimum_per_job": 5}, "labels": {"tier": "edge"}, "share": 0.5},
                 "landmarks": ["\(registryAddress)", "\(orchestratorAddress)"]}
                """.write(toFile: config, atomically: true, encoding: .utf8)
                let agentBinary = TestEnvironment.executable("device-agent")
                let (idStatus, idOutput) = try await ChildProcess.run(
                    agentBinary, arguments: ["id", "--state-dir", state])
                #expect(idStatus == 0)
                let deviceDID = try DID(idOutput.trimmingCharacters(in: .whitespacesAndNewlines))

                // operator → owner → device, as `orrery ucan delegate` would make it.
                let owner = SigningKey()
                let now = Int64(Date().timeIntervalSince1970)
                let ownerGrant = Delegation.issue(
                    by: network.operatorKey, to: owner.did, subject: network.operatorKey.did,
                    command: try Command("/orrery/registry"), expiration: now + 3600)
                let deviceGrant = Delegation.issue(
                    by: owner, to: deviceDID, subject: network.operatorKey.did,
                    command: try Command("/orrery/registry"),
                    expiration: now + 3600)
                let token = directory.appendingPathComponent("device.ucan").path
                try DelegationChain.write([ownerGrant, deviceGrant]).write(
                    toFile: token, atomically: true, encoding: .utf8)

                func startAgent() async throws -> RunningService {
                    try await RunningService.start(
                        "device-agent",
                        extraArguments: [
                            "--state-dir", state, "--liveness-interval-ms", String(Self.interval), "--config", config,
                        ],
                        environment: network.environment(for: "device-agent"), directory: directory, configFile: config)
                }
                var agent = try await startAgent()
                defer { agent.child.signal(SIGKILL) }
                let (joinStatus, joinOutput) = try await ChildProcess.run(
                    agentBinary,
                    arguments: [
                        "join", "--registry", registryAddress, "--token", token, "--state-dir", state, "--config",
                        config,
                    ])
                #expect(joinStatus == 0, "\(joinOutput)")
                #expect(joinOutput.contains("joined \(deviceDID)"))

                let watcher = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
                func device() async throws -> Orrery_Registry_V1_Device {
                    try await watcher.withRegistry(registry) {
                        try await $0.getDevice(.with { $0.did = deviceDID.string })
                    }
                }
                // Returns as soon as the registry says `expected`. The limit is generous: in a full CI run on 2 cores
                // this test took 250 s where it takes 12 s alone, and one wait of 30 s ran out.
                func waitFor(
                    _ expected: Orrery_Registry_V1_DeviceStatus, _ step: String, within limit: Duration = .seconds(120)
                ) async throws {
                    let deadline = ContinuousClock.now + limit
                    var seen: [Orrery_Registry_V1_DeviceStatus] = []
                    while ContinuousClock.now < deadline {
                        let status = try await device().status
                        if status == expected { return }
                        if seen.last != status { seen.append(status) }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    Issue.record("\(step): the device did not become \(expected) within \(limit) (it was \(seen))")
                }

                try await waitFor(.online, "after the join")
                let joined = try await device()
                #expect(joined.ownerDid == owner.did.string)
                #expect(joined.capabilities.location.country == "NL" && joined.capabilities.labels == ["tier": "edge"])
                #expect(joined.capabilities.prices.perCoreHour == 15)
                #expect(
                    joined.capabilities.cpuCores == UInt32(max(1, ProcessInfo.processInfo.activeProcessorCount / 2)),
                    "share 0.5")
                // Heartbeats keep coming: well past 3 intervals later, newer ones arrived and the device is online (a
                // loaded machine may delay one heartbeat past 2 intervals and a sweep may judge it suspect meanwhile;
                // the next one brings it back, which is what this waits for).
                try await Task.sleep(for: .milliseconds(Self.interval * 5))
                try await waitFor(.online, "heartbeats keep coming")
                let later = try await device()
                #expect(
                    later.lastHeartbeatAt.date.timeIntervalSince(joined.lastHeartbeatAt.date)
                        >= Double(Self.interval * 3) / 1000,
                    "heartbeats at \(joined.lastHeartbeatAt.date) and \(later.lastHeartbeatAt.date)")
                // What its heartbeats report free, as the registry and `orrery devices` show it (every status listed: at a
                // 500 ms interval a loaded machine can make the device suspect for a moment between the two reads).
                #expect(
                    later.hasFree && later.free.cpuMillicores == later.capabilities.cpuCores * 1000, "\(later.free)")
                #expect(later.free.ramBytes > 0 && later.free.ramBytes <= later.capabilities.ramBytes, "\(later.free)")
                let operatorKey = directory.appendingPathComponent("credentials/operator.key").path
                let (listed, table) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"),
                    arguments: ["devices", "--registry", registryAddress, "--key", operatorKey, "--all"])
                #expect(listed == 0, "\(table)")
                let row = table.split(separator: "\n").first { $0.hasPrefix(deviceDID.string) } ?? ""
                #expect(
                    table.contains("CORES free/all")
                        && row.contains(" \(later.capabilities.cpuCores)/\(later.capabilities.cpuCores) "), "\(table)")
                let (_, json) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"),
                    arguments: ["devices", "--registry", registryAddress, "--key", operatorKey, "--all", "--json"])
                let listedDevice = try Orrery_Registry_V1_Device(
                    jsonString: json.trimmingCharacters(in: .whitespacesAndNewlines))
                #expect(listedDevice.free.cpuMillicores == later.free.cpuMillicores, "\(json)")
                // Round trips to both landmarks arrived.
                try await database.withClient(schema: "registry") { db in
                    let rows = try await db.query(
                        "SELECT landmark, rtt_ms FROM rtt_samples WHERE device_did = \(deviceDID.string) ORDER BY landmark"
                    )
                    var landmarks: [String: Double] = [:]
                    for try await (landmark, rtt) in rows.decode((String, Double).self) { landmarks[landmark] = rtt }
                    #expect(Set(landmarks.keys) == [registryAddress, orchestratorAddress])
                    #expect(landmarks.values.allSatisfy { $0 > 0 && $0 < 1000 })
                }

                // kill -9: the registry notices; a restart resumes as the same device.
                agent.child.signal(SIGKILL)
                _ = await agent.child.waitForExit()
                try await waitFor(.offline, "after kill -9")
                agent = try await startAgent()
                #expect(agent.ready.did == deviceDID.string)
                try await waitFor(.online, "the agent restarted")

                // The registry restarts under the running agent: the device is never marked offline, and the agent's
                // heartbeats reach the new registry (positive evidence that it reconnected, not only that nobody judged).
                let restartedAt = Date()
                registry.child.signal(SIGTERM)
                #expect(await registry.child.waitForExit() == 0)
                registry = try await RunningService.start(
                    "registry",
                    extraArguments: [
                        "--liveness-interval-ms", String(Self.interval), "--grpc-port", String(registry.ready.grpcPort),
                    ],
                    environment: registryEnvironment, directory: directory, portZero: false)
                var statuses: [Orrery_Registry_V1_DeviceStatus] = []
                let watchUntil = ContinuousClock.now + .milliseconds(Self.interval * 8)
                while ContinuousClock.now < watchUntil {
                    statuses.append(try await device().status)
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(!statuses.contains(.offline), "\(statuses)")
                let reconnectDeadline = ContinuousClock.now + .seconds(20)
                var lastHeartbeat = try await device().lastHeartbeatAt.date
                while lastHeartbeat <= restartedAt, ContinuousClock.now < reconnectDeadline {
                    try await Task.sleep(for: .milliseconds(100))
                    lastHeartbeat = try await device().lastHeartbeatAt.date
                }
                #expect(lastHeartbeat > restartedAt, "no heartbeat reached the restarted registry")
                try await waitFor(.online, "the registry restarted")

                let (leaveStatus, leaveOutput) = try await ChildProcess.run(
                    agentBinary, arguments: ["leave", "--state-dir", state])
                #expect(leaveStatus == 0, "\(leaveOutput)")
                #expect(try await device().status == .left)
                #expect(!FileManager.default.fileExists(atPath: state + "/enrollment.json"))
            }
        }
    }
}
