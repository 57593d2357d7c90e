import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
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

    @Test(
        "one service group: the workers start in order once the service serves, and on a graceful stop the servers stop first, then the workers in reverse, then the database"
    )
    func oneGroupStartsInOrderAndStopsInReverse() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-in-process-order") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let events = Mutex<[String]>([])
                let grpcPort = Mutex<Int?>(nil)
                let service = OrreryService(description: RegistryServer.description) { environment in
                    let workers = ["first", "second", "third"].map { name in
                        BackgroundWorker(name) {
                            events.withLock { $0.append("start \(name), serving: \(environment.serving.isServing)") }
                            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
                            var stop = "stop \(name)"
                            if name == "third", let port = grpcPort.withLock({ $0 }) {
                                // The first worker stopped: the gRPC listener is already closed.
                                stop += ", gRPC connect: \(Self.connectError(port: port))"
                            }
                            if name == "first", let client = environment.database {
                                // The last worker stopped: the database client still answers.
                                // (Out of the cancelled worker's task, as a worker finishing its last write would.)
                                let logger = environment.logger
                                let answered = await Task.detached {
                                    var count = 0
                                    do {
                                        for try await _ in try await client.query("SELECT 1", logger: logger) {
                                            count += 1
                                        }
                                    } catch {
                                        return "\(error)"
                                    }
                                    return "rows: \(count)"
                                }.value
                                stop += ", database \(answered)"
                            }
                            events.withLock { $0.append(stop) }
                        }
                    }
                    return ServiceParts(rpcServices: [], workers: workers)
                }
                // The order is the subject, not the time: a grace long enough for a loaded machine (past it, the group is
                // cancelled at once, the database with it — the 10 s default was seen to pass while every suite ran).
                try await InProcessService.run(
                    service, arguments: ["--shutdown-grace", "120"],
                    environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 },
                    directory: directory, gracefully: true
                ) { ready in
                    grpcPort.withLock { $0 = ready.grpcPort }
                    #expect(Self.connectError(port: ready.grpcPort) == "connected")
                    let deadline = ContinuousClock.now + .seconds(60)
                    while events.withLock({ $0.count }) < 3, ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                let seen = events.withLock { $0 }
                let starts = seen.filter { $0.hasPrefix("start") }
                // Started in order (each waits for the one before it is started, but not for it to do anything: the
                // order of their first lines may differ), each only once the process served.
                #expect(
                    Set(starts) == [
                        "start first, serving: true", "start second, serving: true", "start third, serving: true",
                    ], "\(seen)")
                let stops = seen.filter { $0.hasPrefix("stop") }
                #expect(
                    stops == [
                        "stop third, gRPC connect: \(POSIXErrorCode.ECONNREFUSED)", "stop second",
                        "stop first, database rows: 1",
                    ], "\(seen)")
            }
        }
    }

    /// "connected", or the error a TCP connection to `port` on loopback failed with.
    private static func connectError(port: Int) -> String {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return "no socket" }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if result == 0 { return "connected" }
        return POSIXErrorCode(rawValue: errno).map { "\($0)" } ?? "errno \(errno)"
    }
}
