import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import RegistryService
import SwiftProtobuf
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
}
