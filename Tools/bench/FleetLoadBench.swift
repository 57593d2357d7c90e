import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import SwiftProtobuf
import Synchronization

/// `orrery-bench fleet-load`: the consumer's side of the fleet benchmarks, against an orchestrator whose devices are
/// `orrery-fleet`'s — deployments submitted at fixed rates (submit → running, sustained), an 8-allocation ensemble's
/// placement time, and long-running services for a mass event to move.
struct FleetLoadBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet-load", abstract: "Deployments at fixed rates over a simulated fleet.")

    @Option(help: "The orchestrator, host:port.") var orchestrator: String
    @Option(help: "The operator's key file (the submitting consumer).") var key: String
    @Option(help: "Simulated devices behind the orchestrator (for the report).") var devices: Int
    @Option(help: "Deployments per second to try, in turn (comma-separated; empty: none).") var rates = "25,50,100"
    @Option(help: "Seconds each rate is held.") var seconds: Double = 60
    @Option(help: "Seconds each submitted job runs (its script's `sleep`).") var jobSeconds = 30
    @Option(help: "8-allocation ensembles to place (ExplainPlacement) for the placement time.") var ensembles = 100
    @Option(help: "Long-running services to submit and wait for (a mass event's work); 0: none.") var services = 0
    @Option(help: "Where to write the services' deployment ids, one a line.") var servicesFile: String?
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/fleet.md"

    func run() async throws {
        let consumer = try await FleetConsumer(address: orchestrator, keyPath: key, connections: 16)
        var lines: [String] = []
        try await consumer.running {
            if services > 0 {
                let ids = try await consumer.startServices(services)
                try ids.joined(separator: "\n").write(
                    toFile: servicesFile ?? "/dev/null", atomically: false, encoding: .utf8)
                print("\(ids.count) services running")
            }
            let rates = self.rates.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            if !rates.isEmpty {
                lines += [
                    "",
                    "| deployments offered per second (\(Int(seconds)) s each) | reached running per second | submit → running p50 / p99 / max | not running (why) |",
                    "|---|---|---|---|",
                ]
                for rate in rates {
                    let result = try await consumer.sustain(rate: rate, seconds: seconds, jobSeconds: jobSeconds)
                    let line =
                        "| \(Int(rate)) | \(String(format: "%.1f", Double(result.latencies.count) / seconds)) | \(Self.ms(result.quantile(0.5))) / \(Self.ms(result.quantile(0.99))) / \(Self.ms(result.latencies.last ?? 0)) | \(result.failures.isEmpty ? "0" : result.failureSummary) |"
                    print(line)
                    lines.append(line)
                }
            }
            if ensembles > 0 {
                let times = try await consumer.placeEnsembles(ensembles).sorted()
                let q = { (p: Double) in times[min(times.count - 1, Int(Double(times.count) * p))] }
                lines += [
                    "",
                    "| ExplainPlacement of an 8-allocation ensemble with 9 latency edges over \(devices) devices (round trip, \(times.count) calls) | p50 \(Self.ms(q(0.5))) / p99 \(Self.ms(q(0.99))) / max \(Self.ms(times.last ?? 0)) |",
                ]
            }
        }
        if !lines.isEmpty { try publishResults(lines, to: out) }
    }

    static func ms(_ seconds: Double) -> String { String(format: "%.0f ms", seconds * 1000) }
}

/// The operator as a consumer over several connections (each carries at most 100 streams: every deployment watched
/// until it runs is one).
final class FleetConsumer: Sendable {
    typealias Client = Orrery_Orchestrator_V1_Orchestrator.Client<HTTP2ClientTransport.Posix>

    private let clients: [GRPCClient<HTTP2ClientTransport.Posix>]
    private let authorities: BenchConsumer.Authorities

    init(address: String, keyPath: String, connections: Int) async throws {
        guard let target = ServiceAddress(address) else { throw ValidationError("\(address) is not host:port") }
        let key = try KeyFile.read(keyPath)
        let audience = try await ServiceProbe.withClient(target) { try DID(try await ServiceProbe.info($0).did) }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(key: key, subject: key.did, audience: audience, proofs: [], catalog: catalog)
        clients = try (0..<connections).map { _ in
            GRPCClient(
                transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext),
                interceptors: [signer])
        }
        authorities = try BenchConsumer.Authorities(key: key, orchestrator: audience)
    }

    /// Runs `body` while the connections are up.
    func running(_ body: () async throws -> Void) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for client in clients { group.addTask { try await client.runConnections() } }
            defer { for client in clients { client.beginGracefulShutdown() } }
            try await body()
        }
    }

    private func client(_ index: Int) -> Client { Client(wrapping: clients[index % clients.count]) }

    /// What one rate achieved: each deployment's submit → running time, and why the others did not run.
    struct Sustained {
        var latencies: [Double] = []
        var failures: [String: Int] = [:]

        func quantile(_ q: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))]
        }

        var failureSummary: String {
            "\(failures.values.reduce(0, +)): "
                + failures.sorted { $0.value > $1.value }.prefix(3).map { "\($1)× \($0)" }
                .joined(separator: "; ")
        }
    }

    /// Submits `rate` jobs a second for `seconds`, each watched until it runs (60 s at most).
    func sustain(rate: Double, seconds: Double, jobSeconds: Int) async throws -> Sustained {
        let spec = Self.job(seconds: jobSeconds)
        let result = Guarded(Sustained())
        let clock = ContinuousClock()
        let end = clock.now + .milliseconds(Int(seconds * 1000))
        let step = Duration.nanoseconds(Int64(1e9 / rate))
        var next = clock.now
        var index = 0
        await withDiscardingTaskGroup { group in
            while clock.now < end {
                let client = client(index)
                index += 1
                group.addTask {
                    let outcome = await self.submitAndWait(spec, client)
                    result.update {
                        switch outcome {
                        case .success(let seconds): $0.latencies.append(seconds)
                        case .failure(let why): $0.failures[why.description, default: 0] += 1
                        }
                    }
                }
                next += step
                try? await Task.sleep(until: next)
            }
        }
        var sustained = result.value
        sustained.latencies.sort()
        return sustained
    }

    struct NotRunning: Error, CustomStringConvertible { let description: String }

    private func submitAndWait(_ spec: Orrery_Orchestrator_V1_WorkloadSpec, _ client: Client) async -> Result<
        Double, NotRunning
    > {
        let start = ContinuousClock.now
        do {
            let (_, state) = try await BenchConsumer.submitUntilRunning(
                spec, on: client, authorities: authorities, timeout: .seconds(60))
            guard state == .running else { return .failure(NotRunning(description: "ended \(state)")) }
            return .success(FleetConsumer.seconds(ContinuousClock.now - start))
        } catch let error as RPCError {
            return .failure(NotRunning(description: "\(error.code): \(error.message.prefix(80))"))
        } catch {
            return .failure(NotRunning(description: "\(error)".prefix(80).description))
        }
    }

    /// Submits `count` services that run until stopped; their ids once each runs.
    func startServices(_ count: Int) async throws -> [String] {
        let spec = {
            var spec = Self.job(seconds: 0)
            spec.name = "fleet-service"
            spec.allocations[0].artifact = .with { $0.text = "#!/bin/sh\nexec serve\n" }
            spec.allocations[0].maxDurationSeconds = 3600
            return spec
        }()
        let ids = Guarded<[String]>([])
        try await withThrowingDiscardingTaskGroup { group in
            for index in 0..<count {
                let client = client(index)
                group.addTask {
                    let (id, state) = try await BenchConsumer.submitUntilRunning(
                        spec, on: client, authorities: self.authorities, timeout: .seconds(120))
                    guard state == .running else { throw ValidationError("service \(id) ended \(state)") }
                    ids.update { $0.append(id) }
                }
                try await Task.sleep(for: .milliseconds(200))  // 5 submissions a second: below what it sustains
            }
        }
        return ids.value
    }

    /// Round trips of ExplainPlacement for an 8-allocation ensemble with 9 latency edges, one at a time.
    func placeEnsembles(_ count: Int) async throws -> [Double] {
        let names = (0..<8).map { "part-\($0)" }
        let spec = Orrery_Orchestrator_V1_WorkloadSpec.with {
            $0.name = "fleet-ensemble"
            $0.allocations = names.enumerated().map { index, name in
                var allocation = Self.job(seconds: 60).allocations[0]
                allocation.name = name
                allocation.resources.cpuCores = UInt32(1 + index % 4)
                return allocation
            }
            // A chain through all eight, closed into a ring, and one chord: 9 edges.
            let pairs = (0..<7).map { ($0, $0 + 1) } + [(7, 0), (2, 5)]
            $0.edges = pairs.map { from, to in
                .with {
                    $0.from = names[from]
                    $0.to = names[to]
                    $0.maxRttMs = 150
                }
            }
        }
        var times: [Double] = []
        for index in 0..<count {
            let start = ContinuousClock.now
            let explanation = try await client(index).explainPlacement(.with { $0.spec = spec })
            times.append(Self.seconds(ContinuousClock.now - start))
            if index == 0 && !explanation.placeable {
                throw ValidationError("the ensemble is not placeable: \(explanation.reason)")
            }
        }
        return times
    }

    static func job(seconds: Int) -> Orrery_Orchestrator_V1_WorkloadSpec {
        .with {
            $0.name = "fleet-job"
            $0.allocations = [
                .with {
                    $0.name = "main"
                    $0.executor = .process
                    $0.artifact = .with { $0.text = "#!/bin/sh\nsleep \(seconds)\n" }
                    $0.resources = .with {
                        $0.cpuCores = 1
                        $0.ramMib = 256
                    }
                    $0.maxDurationSeconds = UInt32(max(60, seconds * 2 + 60))
                }
            ]
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// A value several tasks update, behind a lock.
final class Guarded<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>

    init(_ value: Value) { storage = Mutex(value) }

    func update(_ change: (inout Value) -> Void) { storage.withLock { change(&$0) } }

    var value: Value { storage.withLock { $0 } }
}
