import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import OrreryDatabase
import OrreryIdentity
import GRPCCore
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import Logging
import PostgresNIO
import SwiftProtobuf
import Synchronization
import Testing

/// PostgreSQL unreachable under a running service (its connection goes through a proxy the test kills and starts
/// again): health says so and calls fail at once, instead of SERVING while every call hangs.
@Suite(
    "Database outage: health follows the database, calls fail fast", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct DatabaseOutageTests {
    static var proxyScript: String {
        TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/tcp_proxy.py").path
    }

    /// A proxy from `port` (0: any) to the test database; returns it and the port it listens on.
    static func startProxy(_ database: TestDatabase, port: Int = 0, in directory: URL) async throws -> (
        ChildProcess, Int
    ) {
        let proxy = try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/python3"),
            arguments: [proxyScript, String(port), database.settings.host, String(database.settings.port)],
            outputDirectory: directory)
        return (proxy, try await proxy.printedPort())
    }

    @Test(
        "PostgreSQL unreachable: NOT_SERVING on gRPC health and /healthz, calls refused at once with UNAVAILABLE; back: SERVING and answering"
    )
    func outage() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-db-outage") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                var (proxy, port) = try await Self.startProxy(database, in: directory)
                defer { proxy.signal(SIGKILL) }
                var environment = database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 }
                environment["ORRERY_DB_PORT"] = String(port)
                let registry = try await RunningService.start(
                    "registry", environment: environment, directory: directory)
                defer { registry.child.signal(SIGKILL) }
                let observer = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
                let unknown = SigningKey().did.string
                await OrchestratorTests.expectStatus(.notFound, containing: "no device") {
                    _ = try await observer.withRegistry(registry) { try await $0.getDevice(.with { $0.did = unknown }) }
                }

                // The database goes away: health turns NOT_SERVING, and a call is refused at once.
                proxy.signal(SIGKILL)
                _ = await proxy.waitForExit()
                try #require(try await Self.waitForHealth(.notServing, of: registry))
                #expect(try await Self.healthz(registry) == 503)
                await OrchestratorTests.expectStatus(.unavailable, containing: "database is unreachable") {
                    _ = try await observer.withRegistry(registry) { try await $0.getDevice(.with { $0.did = unknown }) }
                }

                // Back: SERVING again, and the call answered as before.
                (proxy, port) = try await Self.startProxy(database, port: port, in: directory)
                #expect(try await Self.waitForHealth(.serving, of: registry))
                #expect(try await Self.healthz(registry) == 200)
                await OrchestratorTests.expectStatus(.notFound, containing: "no device") {
                    _ = try await observer.withRegistry(registry) { try await $0.getDevice(.with { $0.did = unknown }) }
                }
                #expect(registry.child.output.contains("the database does not answer"))

                // A database that hangs (the proxy stopped: connections open, nothing answered) is unreachable too.
                proxy.signal(SIGSTOP)
                try #require(try await Self.waitForHealth(.notServing, of: registry))
                await OrchestratorTests.expectStatus(.unavailable, containing: "database is unreachable") {
                    _ = try await observer.withRegistry(registry) { try await $0.getDevice(.with { $0.did = unknown }) }
                }
                proxy.signal(SIGCONT)
                #expect(try await Self.waitForHealth(.serving, of: registry))
            }
        }
    }

    @Test(
        "a busy database is not an unreachable one: every pooled connection waiting on a lock, health stays SERVING (the watch has a connection of its own) and the waiting calls are answered once the lock goes"
    )
    func busyNotUnreachable() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-db-busy") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let environment = database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 }
                let registry = try await RunningService.start(
                    "registry", environment: environment, directory: directory)
                defer { registry.child.signal(SIGKILL) }
                let observer = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
                let unknown = SigningKey().did.string

                try await database.withClient(schema: "registry") { client in
                    // The devices table locked by another transaction: every GetDevice waits on it, holding one of
                    // the registry's pooled connections — more calls than the pool has connections.
                    let locked = AsyncStream<Void>.makeStream()
                    let unlock = AsyncStream<Void>.makeStream()
                    let holder = Task {
                        try await client.transaction(logger: Logger(label: "test.lock")) { connection in
                            try await connection.query(
                                "LOCK TABLE devices IN ACCESS EXCLUSIVE MODE", logger: Logger(label: "test.lock"))
                            locked.continuation.yield()
                            for await _ in unlock.stream { break }
                        }
                    }
                    for await _ in locked.stream { break }
                    let answered = Counter()
                    let calls = Task {
                        try await observer.withRegistry(registry) { registry in
                            try await withThrowingTaskGroup(of: RPCError.Code?.self) { group in
                                for _ in 0..<40 {
                                    group.addTask {
                                        defer { answered.increment() }
                                        do {
                                            _ = try await registry.getDevice(.with { $0.did = unknown })
                                            return nil
                                        } catch let error as RPCError {
                                            return error.code
                                        }
                                    }
                                }
                                var codes: [RPCError.Code?] = []
                                for try await code in group { codes.append(code) }
                                return codes
                            }
                        }
                    }
                    // Long past the watch's two missed probes (2 s each): its own connection answers, so SERVING.
                    try await Task.sleep(for: .seconds(8))
                    let status = try await Self.health(of: registry)
                    #expect(answered.value == 0, "the calls waited on the lock: the pool was busy")
                    #expect(status == .serving, "a busy pool was taken for an unreachable database")
                    unlock.continuation.yield()
                    try await holder.value
                    let codes = try await calls.value
                    #expect(codes.count == 40 && codes.allSatisfy { $0 == .notFound }, "\(codes)")
                }
                #expect(!registry.child.output.contains("the database does not answer"))
            }
        }
    }

    /// A count shared by concurrent tasks.
    final class Counter: Sendable {
        private let count = Mutex(0)
        func increment() { count.withLock { $0 += 1 } }
        var value: Int { count.withLock { $0 } }
    }

    /// Watches the registry's gRPC health until it reports `status` (true), or 20 s pass (false).
    static func waitForHealth(
        _ status: Grpc_Health_V1_HealthCheckResponse.ServingStatus, of service: RunningService
    ) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if try await health(of: service) == status { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// The registry service's status on the gRPC health service of `service`.
    static func health(of service: RunningService) async throws -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
        try await ServiceProbe.withClient(service.grpcAddress) { client in
            try await Grpc_Health_V1_Health.Client(wrapping: client).check(
                .with { $0.service = "orrery.registry.v1.Registry" }
            ).status
        }
    }

    /// The status of the service's `/healthz`.
    static func healthz(_ service: RunningService) async throws -> Int {
        let url = try #require(URL(string: "http://127.0.0.1:\(service.ready.httpPort)/healthz"))
        let (_, response) = try await URLSession.shared.data(from: url)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }
}
