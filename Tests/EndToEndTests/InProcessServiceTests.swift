import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import RegistryService
import SwiftProtobuf
import Synchronization
import Testing

/// Services built from their settings inside the test process (`InProcessService`), on port 0.
@Suite(
    "Services built in the test process",
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct InProcessServiceTests {
    @Test(
        "two registries built in one process, each on its own database, share no part: a device joined at one is unknown to the other"
    )
    func twoRegistriesShareNothing() async throws {
        try await TestDatabase.withDatabase { first in
            try await TestDatabase.withDatabase { second in
                try await TestEnvironment.withTemporaryDirectory("orrery-in-process") { directory in
                    let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                    let registry = RegistryServer.service(RegistrySettings(livenessInterval: .seconds(600)))
                    let credentials = network.environment(for: "registry")
                    try await InProcessService.run(
                        registry, environment: first.serviceEnvironment.merging(credentials) { $1 },
                        directory: directory
                    ) { one in
                        try await InProcessService.run(
                            registry, environment: second.serviceEnvironment.merging(credentials) { $1 },
                            directory: directory
                        ) { other in
                            #expect(one.grpcPort != other.grpcPort)
                            let device = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
                            let joined = try await device.withRegistry(one) {
                                try await device.join($0, capabilities: RegistryJoinTests.capabilities())
                            }
                            #expect(joined.did == device.key.did.string)
                            let found = try await device.withRegistry(one) {
                                try await $0.getDevice(.with { $0.did = device.key.did.string })
                            }
                            #expect(found.did == device.key.did.string && found.status == .online)
                            // The second registry's handlers read its own database: with one process-wide set of parts
                            // (the first built), they would find the device here too.
                            let elsewhere = await #expect(throws: RPCError.self) {
                                try await device.withRegistry(other) {
                                    try await $0.getDevice(.with { $0.did = device.key.did.string })
                                }
                            }
                            #expect(elsewhere?.code == .notFound, "\(String(describing: elsewhere))")
                        }
                    }
                }
            }
        }
    }

    @Test(
        "a service in the test process whose worker takes 3 s to stop is waited for: the test process is not ended for it (a process's runtime ends itself after 2 s)"
    )
    func slowStopIsWaitedFor() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-in-process-slow") { directory in
            let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
            var description = RegistryServer.description
            description.schema = nil
            let stopped = Mutex<Duration?>(nil)
            let started = Mutex(false)
            let slow = OrreryService(description: description) { _ in
                ServiceParts(
                    rpcServices: [],
                    workers: [
                        BackgroundWorker("stops slowly") {
                            started.withLock { $0 = true }
                            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(50)) }
                            let cancelled = ContinuousClock.now
                            // What a worker finishing a write does: 3 s that cancellation does not shorten.
                            await Task.detached { try? await Task.sleep(for: .seconds(3)) }.value
                            stopped.withLock { $0 = ContinuousClock.now - cancelled }
                        }
                    ])
            }
            let served = try await InProcessService.run(
                slow, environment: network.environment(for: "registry"), directory: directory
            ) { ready in
                let deadline = ContinuousClock.now + .seconds(60)
                while !started.withLock({ $0 }), ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                return ready.grpcPort
            }
            #expect(served > 0 && started.withLock { $0 }, "the worker never started")
            // Positive evidence: the worker finished its 3 s after the service was cancelled, in this process.
            let took = try #require(stopped.withLock { $0 }, "the worker never finished")
            #expect(took >= .seconds(3))
        }
    }
}
