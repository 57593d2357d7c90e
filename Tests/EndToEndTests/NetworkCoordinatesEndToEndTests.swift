import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// Devices report a synthetic RTT matrix through `ReportRtt`; the orchestrator fits network coordinates from it and
/// places an ensemble with a latency edge on devices that are truly close.
@Suite(
    "Network coordinates end to end", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct NetworkCoordinatesEndToEndTests {
    @Test("a latency edge holds on coordinates fitted from ReportRtt samples, against the cheaper far-apart pair")
    func edgeFromReportedSamples() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-vivaldi") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry = try await JobConstellation.startRegistry(database, network, directory)
                defer { registry.child.signal(SIGKILL) }
                let orchestrator = try await JobConstellation.startOrchestrator(
                    database, network, directory, registry: registry)
                defer { orchestrator.child.signal(SIGKILL) }

                // Two clusters 140 ms apart; one core each, so two allocations need two devices. The cheapest device is
                // far away from the second cheapest.
                let sites: [(x: Double, y: Double, price: UInt64)] = [
                    (100, 100, 1), (0, 0, 2), (3, 1, 3), (101, 104, 10), (2, 4, 20), (104, 101, 30),
                ]
                let landmarks: [(name: String, x: Double, y: Double)] = [
                    ("lm-a", 0, 100), ("lm-b", 100, 0), ("lm-c", 50, 50), ("lm-d", -20, -20),
                ]
                func rtt(_ a: (x: Double, y: Double), _ b: (x: Double, y: Double)) -> Double {
                    ((a.x - b.x) * (a.x - b.x) + (a.y - b.y) * (a.y - b.y)).squareRoot() + 1
                }
                var devices: [RegistryJoinTests.DeviceClient] = []
                for site in sites {
                    let device = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
                    _ = try await device.withRegistry(registry) { registry in
                        try await device.join(
                            registry,
                            capabilities: .with {
                                $0.architecture = "x86_64"
                                $0.cpuCores = 1
                                $0.ramBytes = 1 << 30
                                $0.diskBytes = 10 << 30
                                $0.prices = .with { $0.perCoreHour = site.price }
                            })
                    }
                    devices.append(device)
                }
                for (index, device) in devices.enumerated() {
                    var samples = landmarks.map { landmark in
                        Orrery_Registry_V1_RttSample.with {
                            $0.landmark = landmark.name
                            $0.rttMs = rtt((sites[index].x, sites[index].y), (landmark.x, landmark.y))
                        }
                    }
                    for step in 1...2 {
                        let peer = (index + step) % devices.count
                        samples.append(
                            .with {
                                $0.landmark = devices[peer].key.did.string
                                $0.rttMs = rtt((sites[index].x, sites[index].y), (sites[peer].x, sites[peer].y))
                            })
                    }
                    _ = try await device.withRegistry(registry) { registry in
                        try await registry.reportRtt(
                            .with {
                                $0.deviceDid = device.key.did.string
                                $0.samples = samples
                                $0.idempotencyKey = UUID().uuidString
                            })
                    }
                }

                let spec = Orrery_Orchestrator_V1_WorkloadSpec.with {
                    $0.name = "pair"
                    $0.allocations = ["front", "back"].map { name in
                        .with {
                            $0.name = name
                            $0.executor = .process
                            $0.artifact = .with { $0.text = "true" }
                            $0.resources = .with {
                                $0.cpuCores = 1
                                $0.ramMib = 64
                            }
                        }
                    }
                    $0.edges = [
                        .with {
                            $0.from = "front"; $0.to = "back"; $0.maxRttMs = 20
                        }
                    ]
                }
                let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
                var explanation = Orrery_Orchestrator_V1_PlacementExplanation()
                let deadline = ContinuousClock.now + .seconds(20)
                while ContinuousClock.now < deadline {
                    explanation = try await consumer.with(orchestrator) { client in
                        try await client.explainPlacement(.with { $0.spec = spec })
                    }
                    if explanation.placeable && explanation.devicesConsidered == UInt32(sites.count) { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                let described = (try? explanation.jsonString()) ?? ""
                #expect(explanation.placeable, "\(described)")
                let chosen = explanation.allocations.flatMap(\.assignments).map(\.deviceDid)
                let indexes = chosen.compactMap { did in devices.firstIndex { $0.key.did.string == did } }
                #expect(
                    Set(indexes) == [1, 2],
                    "the close pair (0,0)–(3,1), not the cheapest device 140 ms away: \(indexes)")
                if indexes.count == 2 {
                    let truth = rtt(
                        (sites[indexes[0]].x, sites[indexes[0]].y), (sites[indexes[1]].x, sites[indexes[1]].y))
                    #expect(truth <= 20, "true RTT \(truth)")
                }
                // Without the edge the cheapest two devices win, far apart as they are.
                var unconstrained = spec
                unconstrained.edges = []
                let cheapest = try await consumer.with(orchestrator) { client in
                    try await client.explainPlacement(.with { $0.spec = unconstrained })
                }
                let cheapestIndexes = cheapest.allocations.flatMap(\.assignments).compactMap { assignment in
                    devices.firstIndex { $0.key.did.string == assignment.deviceDid }
                }
                #expect(Set(cheapestIndexes) == [0, 1])
            }
        }
    }
}
