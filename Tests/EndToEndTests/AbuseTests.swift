import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryPlacement
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// Attacks from outside, bounded for `make test`: every RPC of every service fed random and structure-aware request
/// bytes under a valid capability (each run with a fixed seed plus a new one, printed, so a failure can be replayed
/// with `ORRERY_FUZZ_SEED`), and SIGTERM while calls are in flight.
@Suite(
    "Abuse: fuzzed requests, SIGTERM under load", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct AbuseTests {
    typealias Generator = SplitMix64

    /// Random bytes, or a well-formed protobuf encoding of random fields (valid tags and wire types, random
    /// varints at width boundaries, length-delimited runs that nest or do not): what a decoder must refuse or accept
    /// without harm.
    static func request(_ generator: inout Generator, structured: Bool) -> [UInt8] {
        if !structured {
            return (0..<Int.random(in: 0...64, using: &generator)).map { _ in
                UInt8.random(in: 0...255, using: &generator)
            }
        }
        var bytes: [UInt8] = []
        func varint(_ value: UInt64) {
            var value = value
            while value >= 0x80 {
                bytes.append(UInt8(value & 0x7F) | 0x80)
                value >>= 7
            }
            bytes.append(UInt8(value))
        }
        let boundaries: [UInt64] = [0, 1, 1 << 31, (1 << 31) - 1, 1 << 53, 1 << 63, UInt64.max, (1 << 32) - 1]
        for _ in 0..<Int.random(in: 1...8, using: &generator) {
            let field = UInt64.random(in: 1...20, using: &generator)
            switch Int.random(in: 0...3, using: &generator) {
            case 0:
                varint(field << 3)
                varint(boundaries.randomElement(using: &generator) ?? 0)
            case 1:
                varint(field << 3 | 2)
                let length = Int.random(in: 0...40, using: &generator)
                varint(UInt64(length))
                for _ in 0..<length { bytes.append(UInt8.random(in: 0...255, using: &generator)) }
            case 2:
                varint(field << 3 | 2)
                let inner = request(&generator, structured: Bool.random(using: &generator))
                varint(UInt64(inner.count))
                bytes += inner
            default:
                varint(field << 3 | 1)
                for _ in 0..<8 { bytes.append(UInt8.random(in: 0...255, using: &generator)) }
            }
        }
        return bytes
    }

    /// The start of a crash report in a service's output (Swift's backtracer prints after the fatal error), or its end.
    static func crashReport(_ output: String) -> String {
        guard let start = output.range(of: "Fatal error") ?? output.range(of: " crashed:") else {
            return String(output.suffix(3000))
        }
        return String(output[start.lowerBound...].prefix(3000))
    }

    static func seeds() -> [UInt64] {
        if let given = ProcessInfo.processInfo.environment["ORRERY_FUZZ_SEED"].flatMap(UInt64.init) { return [given] }
        return [0x0A11_CE5E_ED00_0001, UInt64.random(in: 0...UInt64.max)]
    }

    @Test("every RPC of every service survives random and structure-aware request bytes under a valid capability")
    func fuzzEveryMethod() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-fuzz") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let constellation = try await TestConstellation.start(
                    ["identity", "registry", "orchestrator", "contract-notary", "settlement-gateway"],
                    database: database,
                    network: network, directory: directory)
                defer { constellation.kill() }
                let catalog = try MethodCatalog(
                    descriptorSet: try #require(Data(base64Encoded: OrreryDescriptorSet.base64)))
                let tester = SigningKey()
                let operatorKey = network.operatorKey
                let grant = Delegation.issue(
                    by: operatorKey, to: tester.did, subject: operatorKey.did, command: try Command("/orrery"),
                    expiration: Int64(Date().timeIntervalSince1970) + 3600)
                for seed in Self.seeds() {
                    print("fuzz seed \(seed) (replay with ORRERY_FUZZ_SEED=\(seed))")
                    var generator = Generator(seed: seed)
                    var calls = 0
                    var codes: [String: Int] = [:]
                    for (name, service) in constellation.services.sorted(by: { $0.key < $1.key }) {
                        let audience = try DID(service.ready.did)
                        let listed = try await ServiceProbe.withClient(service.grpcAddress) {
                            try await ServiceProbe.listServices($0)
                        }
                        let entries = catalog.entries.values.filter { entry in
                            listed.contains(where: { entry.fullName.hasPrefix($0 + "/") }) && !entry.isOpen
                                && !entry.selfAuthorised
                        }.sorted { $0.fullName < $1.fullName }
                        for entry in entries {
                            for round in 0..<8 {
                                let bytes = Self.request(&generator, structured: round % 2 == 1)
                                let now = Int64(Date().timeIntervalSince1970)
                                let invocation = Invocation.issue(
                                    by: tester, subject: operatorKey.did, audience: audience, command: entry.command,
                                    proofs: [grant.cid], expiration: now + 120, issuedAt: now)
                                let authorization =
                                    "Bearer "
                                    + (try UCANContainer.encodeText([invocation.envelope.bytes, grant.envelope.bytes]))
                                let code = try await Self.call(service.grpcAddress, entry, bytes, authorization)
                                calls += 1
                                codes[code.map { "\($0)" } ?? "ok", default: 0] += 1
                                // A handler may refuse anything, but never with an unclassified error; and a decoder's
                                // refusal is not a crash.
                                #expect(
                                    code != .unknown,
                                    "\(name) \(entry.fullName) seed \(seed) round \(round) bytes \(bytes): \(String(describing: code))"
                                )
                            }
                        }
                        #expect(
                            service.child.isRunning,
                            "\(name) died under fuzzing (seed \(seed)): \(Self.crashReport(service.child.output))")
                        let health = try await ServiceProbe.withClient(service.grpcAddress) {
                            try await ServiceProbe.health($0)
                        }
                        #expect(health == .serving, "\(name) after fuzzing (seed \(seed))")
                    }
                    print("fuzz seed \(seed): \(calls) calls, \(codes.sorted { $0.key < $1.key })")
                    #expect(calls > 300)
                }
            }
        }
    }

    /// Calls `entry` with raw request bytes; the status code it ended with (nil: OK). Streams are given 1.5 s: one still
    /// open then has accepted the request (deadline exceeded is its code).
    static func call(_ address: ServiceAddress, _ entry: MethodCatalog.Entry, _ bytes: [UInt8], _ authorization: String)
        async throws -> RPCError.Code?
    {
        var metadata = Metadata()
        metadata.addString(authorization, forKey: "authorization")
        let parts = entry.fullName.split(separator: "/")
        let descriptor = MethodDescriptor(fullyQualifiedService: String(parts[0]), method: String(parts[1]))
        var options = CallOptions.defaults
        options.timeout = .milliseconds(1500)
        let request = StreamingClientRequest<[UInt8]>(metadata: metadata) { writer in try await writer.write(bytes) }
        return try await ServiceProbe.withClient(address) { client in
            do {
                return try await client.bidirectionalStreaming(
                    request: request, descriptor: descriptor, serializer: RawBytes(), deserializer: RawBytes(),
                    options: options
                ) { response -> RPCError.Code? in
                    switch response.accepted {
                    case .failure(let error): return error.code
                    case .success(let contents):
                        for try await _ in contents.bodyParts {}
                        return nil
                    }
                }
            } catch let error as RPCError {
                return error.code
            }
        }
    }

    @Test("SIGTERM while calls are in flight: the orchestrator exits 0 within its grace period")
    func sigtermUnderLoad() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-sigterm-load") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let registry = try await JobConstellation.startRegistry(database, network, directory)
                defer { registry.child.signal(SIGKILL) }
                let orchestrator = try await JobConstellation.startOrchestrator(
                    database, network, directory, registry: registry, extraArguments: ["--shutdown-grace", "3"])
                defer { orchestrator.child.signal(SIGKILL) }
                _ = try await OrchestratorTests.joinFleet(registry: registry, operatorKey: network.operatorKey)
                let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
                try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 3)
                // An ensemble nobody can place (1 ms between every pair), whose explanation re-solves once per edge: without
                // its bound and its cancellation, minutes of CPU per call that no shutdown could interrupt.
                var spec = OrchestratorTests.spec()
                let template = spec.allocations[0]
                spec.allocations = (0..<12).map { index in
                    var allocation = template
                    allocation.name = "a\(index)"
                    allocation.replicas = 3
                    allocation.constraints.spread = .acrossDevices
                    return allocation
                }
                spec.edges = (0..<12).flatMap { from in
                    ((from + 1)..<12).map { to in
                        Orrery_Orchestrator_V1_LatencyEdge.with {
                            $0.from = "a\(from)"
                            $0.to = "a\(to)"
                            $0.maxRttMs = 1
                        }
                    }
                }
                let unplaceable = spec
                let load = Task {
                    await withTaskGroup(of: Void.self) { group in
                        for _ in 0..<24 {
                            group.addTask {
                                while !Task.isCancelled {
                                    _ = try? await consumer.with(orchestrator) {
                                        try await $0.explainPlacement(.with { $0.spec = unplaceable })
                                    }
                                }
                            }
                        }
                    }
                }
                defer { load.cancel() }
                try await Task.sleep(for: .seconds(2))
                let stopping = ContinuousClock.now
                orchestrator.child.signal(SIGTERM)
                let status = await orchestrator.child.waitForExit(timeout: .seconds(30))
                #expect(status == 0, "exit \(String(describing: status)): \(orchestrator.child.output.suffix(2000))")
                #expect(ContinuousClock.now - stopping < .seconds(20))
                #expect(
                    !orchestrator.child.output.contains("Cancellation took longer")
                        && !orchestrator.child.output.contains("did not stop within"))
            }
        }
    }
}
