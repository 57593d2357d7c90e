import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// Real `device-agent` processes with different owner policies answer the orchestrator's offers over their
/// outbound agent channel: a silent device's offer expires, a policy declines, a bid carries the deployment on.
@Suite(
    "Agent channel: offers, bids, declines", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct AgentChannelTests {
    struct Agent {
        let service: RunningService
        let did: String
    }

    /// Starts an agent with `owner` policy JSON, joined through `registry` with operator → owner → device.
    static func startAgent(
        _ name: String, owner: String, orchestrators: [String], registry: String, network: TestNetwork, directory: URL
    ) async throws -> Agent {
        let state = directory.appendingPathComponent("\(name)-state").path
        let config = directory.appendingPathComponent("\(name).json").path
        let list = orchestrators.map { "\"\($0)\"" }.joined(separator: ", ")
        try #"{"owner": \#(owner), "orchestrators": [\#(list)]}"#.write(
            toFile: config, atomically: true, encoding: .utf8)
        let binary = TestEnvironment.executable("device-agent")
        let (_, idOutput) = try await ChildProcess.run(binary, arguments: ["id", "--state-dir", state])
        let did = try DID(idOutput.trimmingCharacters(in: .whitespacesAndNewlines))
        let ownerKey = SigningKey()
        let expiry = Int64(Date().timeIntervalSince1970) + 3600
        let chain = [
            Delegation.issue(
                by: network.operatorKey, to: ownerKey.did, subject: network.operatorKey.did,
                command: try Command("/orrery/registry"), expiration: expiry),
            Delegation.issue(
                by: ownerKey, to: did, subject: network.operatorKey.did, command: try Command("/orrery/registry"),
                expiration: expiry),
        ]
        let token = directory.appendingPathComponent("\(name).ucan").path
        try DelegationChain.write(chain).write(toFile: token, atomically: true, encoding: .utf8)
        let service = try await RunningService.start(
            "device-agent", extraArguments: ["--state-dir", state, "--config", config],
            environment: network.environment(for: "device-agent"), directory: directory, configFile: config)
        let (status, output) = try await ChildProcess.run(
            binary,
            arguments: ["join", "--registry", registry, "--token", token, "--state-dir", state, "--config", config])
        #expect(status == 0, "\(output)")
        return Agent(service: service, did: did.string)
    }

    @Test(
        "an expired offer and a declined one move the deployment to the next device; a signed bid contracts it — across two orchestrator replicas"
    )
    func offersAcrossReplicas() async throws {
        try await TestDatabase.withDatabase { database in
            let directory = try TestEnvironment.temporaryDirectory("orrery-agent-channel")
            defer { try? FileManager.default.removeItem(at: directory) }
            let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
            let registry = try await RunningService.start(
                "registry", extraArguments: ["--liveness-interval-ms", "60000"],
                environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 },
                directory: directory)
            defer { registry.child.signal(SIGKILL) }
            let registryAddress = "127.0.0.1:\(registry.ready.grpcPort)"
            let environment = database.serviceEnvironment.merging(network.environment(for: "orchestrator")) { $1 }
            let arguments = ["--registry-address", registryAddress, "--offer-timeout-ms", "1500"]
            let first = try await RunningService.start(
                "orchestrator", extraArguments: arguments, environment: environment, directory: directory)
            defer { first.child.signal(SIGKILL) }
            let second = try await RunningService.start(
                "orchestrator", extraArguments: arguments, environment: environment, directory: directory)
            defer { second.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)

            // A device that never answers (joined, but no agent runs its channel): the cheapest.
            let silent = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
            _ = try await silent.withRegistry(registry) { registry in
                try await silent.join(
                    registry,
                    capabilities: .with {
                        $0.architecture = "x86_64"
                        $0.cpuCores = 4
                        $0.ramBytes = 8 << 30
                        $0.diskBytes = 100 << 30
                        $0.prices = .with { $0.perCoreHour = 1 }
                    })
            }
            // Real agents, lines to the first replica only: one that refuses this consumer, one that serves it.
            let picky = try await Self.startAgent(
                "picky",
                owner:
                    #"{"location": {"country": "DE"}, "prices": {"per_core_hour": 10}, "denied_consumers": ["\#(consumer.key.did)"]}"#,
                orchestrators: ["127.0.0.1:\(first.ready.grpcPort)"], registry: registryAddress, network: network,
                directory: directory)
            defer { picky.service.child.signal(SIGKILL) }
            let willing = try await Self.startAgent(
                "willing", owner: #"{"location": {"country": "FR"}, "prices": {"per_core_hour": 20}}"#,
                orchestrators: ["127.0.0.1:\(first.ready.grpcPort)"], registry: registryAddress, network: network,
                directory: directory)
            defer { willing.service.child.signal(SIGKILL) }
            try await OrchestratorTests.waitForFleet(consumer, second, devices: 3)

            // Submitted through the second replica; the offers reach the agents through the database.
            var spec = OrchestratorTests.spec(cores: 1)
            spec.allocations[0].resources.ramMib = 64
            spec.allocations[0].resources.diskMib = 0
            let submitted = try await consumer.with(second) { client in
                try await client.submitWorkload(
                    .with {
                        $0.spec = spec
                        $0.idempotencyKey = UUID().uuidString
                    })
            }
            #expect(submitted.assignments.map(\.deviceDid) == [silent.key.did.string])
            let events = try await consumer.with(second) { client in
                try await client.watchDeployment(.with { $0.id = submitted.id }) { response in
                    var seen: [Orrery_Orchestrator_V1_DeploymentEvent] = []
                    for try await event in response.messages {
                        seen.append(event)
                        if event.state == .deploying { break }
                    }
                    return seen
                }
            }
            let states = events.map(\.state)
            if states.count != 10 {
                print("PICKY:\n\(picky.service.child.output)\nFIRST:\n\(first.child.output.suffix(3000))")
            }
            #expect(
                states == [
                    .submitted, .matched, .offered, .matched, .offered, .matched, .offered, .contracted, .escrowed,
                    .deploying,
                ], "\(events.map { "\($0.state): \($0.reason)" })")
            try #require(states.count == 10)
            #expect(events[3].reason.contains("device \(silent.key.did) declined: no answer before the offer expired"))
            #expect(events[3].deployment.assignments.map(\.deviceDid) == [picky.did])
            #expect(events[5].reason.contains("device \(picky.did) declined: the owner does not serve consumer"))
            #expect(events[5].deployment.assignments.map(\.deviceDid) == [willing.did])
            #expect(events.last?.deployment.assignments.map(\.deviceDid) == [willing.did])
            #expect(events[7].reason.contains("signed bids"))

            // The bid is the device's signature over the offer's price, kept with the offer.
            try await database.withClient(schema: "orchestrator") { db in
                let rows = try await db.query(
                    "SELECT bid FROM offers WHERE deployment_id = \(submitted.id) AND state = 1")
                var bids: [Orrery_Common_V1_Signed] = []
                for try await bid in rows.decode(Data.self) {
                    bids.append(try Orrery_Common_V1_Signed(serializedBytes: bid))
                }
                #expect(bids.count == 1)
                let signers = try SignedMessage.verify(bids[0], type: "orrery.orchestrator.v1.Bid")
                #expect(signers.map(\.string) == [willing.did])
            }
        }
    }
}
