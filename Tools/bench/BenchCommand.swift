import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import SwiftProtobuf

/// `orrery-bench`: the measurements behind `make bench`. Speed is measured here, never in tests.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orrery-bench", abstract: "Measure Orrery's hot paths and write the results.",
        subcommands: [
            IdentityBenchCommand.self, RegistryBenchCommand.self, AgentBenchCommand.self, PlacementBenchCommand.self,
            DeployBenchCommand.self, NotaryBenchCommand.self, SettlementBenchCommand.self,
            ChainSigningBenchCommand.self, ActorBenchCommand.self, AbuseBenchCommand.self, FloodBenchCommand.self,
            ImageBenchCommand.self, OutputBenchCommand.self, ContentStoreBenchCommand.self,
            PortForwardBenchCommand.self, IngressBenchCommand.self, FleetLoadBenchCommand.self,
        ])
}

/// `orrery-bench identity`: signature checks, chain validation, the interceptor's latency.
struct IdentityBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "identity", abstract: "Identity and authorisation.")

    @Option(help: "Where to write the results (Markdown).") var out = "bench-results/identity.md"
    @Option(help: "Seconds per measurement.") var seconds: Double = 2

    func run() async throws {
        var lines: [String] = []
        func report(_ line: String) {
            print(line)
            lines.append(line)
        }
        report("# Identity and authorisation benchmarks")
        report("")
        report(
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release build, one thread unless noted."
        )
        report("")
        let identity = IdentityBench(seconds: seconds)
        // Three interleaved rounds, the median of each: a busy moment hits every measurement alike.
        var samples: [String: [Double]] = [:]
        for _ in 0..<3 {
            samples["raw", default: []].append(identity.rawEd25519())
            for depth in [1, 4] {
                samples["cold\(depth)", default: []].append(try identity.validations(depth: depth, memoized: false))
                samples["memo\(depth)", default: []].append(try identity.validations(depth: depth, memoized: true))
            }
        }
        func median(_ name: String) -> Double { (samples[name] ?? [0]).sorted()[(samples[name]?.count ?? 1) / 2] }
        let raw = median("raw")
        report("| measurement (median of 3 interleaved rounds) | rate | vs raw Ed25519 |")
        report("|---|---|---|")
        report("| raw Ed25519 verification | \(Self.format(raw))/s | 100 % |")
        for depth in [1, 4] {
            let cold = median("cold\(depth)")
            let memoized = median("memo\(depth)")
            report(
                "| invocation, chain depth \(depth), cold (every proof's signature checked) | \(Self.format(cold))/s | \(Self.percent(cold, raw)) |"
            )
            report(
                "| invocation, chain depth \(depth), memoized (one signature: the invocation's) | \(Self.format(memoized))/s | \(Self.percent(memoized, raw)) |"
            )
        }
        report("")
        let latency = try await InterceptorBench(seconds: seconds).run()
        report("| unary call over loopback gRPC (ResolveDid, one connection, sequential) | p50 | p99 |")
        report("|---|---|---|")
        report(
            "| without the capability interceptor | \(Self.micros(latency.open.p50)) | \(Self.micros(latency.open.p99)) |"
        )
        report(
            "| with it (chain depth 1, a fresh invocation signed per call) | \(Self.micros(latency.authorised.p50)) | \(Self.micros(latency.authorised.p99)) |"
        )
        report("| added by authorisation (p50) | \(Self.micros(latency.authorised.p50 - latency.open.p50)) | |")
        report("")
        report("Goal: memoized validation ≥ 80 % of the raw Ed25519 rate.")
        let directory = URL(fileURLWithPath: out).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try (lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }

    static func format(_ rate: Double) -> String {
        rate >= 1000 ? String(format: "%.1fk", rate / 1000) : String(format: "%.0f", rate)
    }

    static func percent(_ rate: Double, _ raw: Double) -> String { String(format: "%.0f %%", 100 * rate / raw) }

    static func micros(_ duration: Duration) -> String {
        let components = duration.components
        return String(format: "%.0f µs", Double(components.seconds) * 1e6 + Double(components.attoseconds) / 1e12)
    }
}

/// Rates of signature checks and chain validations.
struct IdentityBench {
    let seconds: Double

    /// Runs `body` repeatedly for the configured time; returns operations per second.
    func rate(_ body: () throws -> Void) rethrows -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        var count = 0
        let limit = Duration.milliseconds(Int(seconds * 1000))
        while clock.now - start < limit {
            for _ in 0..<64 { try body() }
            count += 64
        }
        let elapsed = (clock.now - start).components
        return Double(count) / (Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
    }

    func rawEd25519() -> Double {
        let key = SigningKey()
        let message = Array(repeating: UInt8(7), count: 300)
        let signature = key.sign(message)
        let publicKey = key.publicKey
        return rate { precondition(publicKey.verify(signature: signature, message: message)) }
    }

    /// A chain of `depth` delegations from an owner, and invocations over it.
    func validations(depth: Int, memoized: Bool) throws -> Double {
        let owner = SigningKey()
        var keys = [owner]
        var chain: [Delegation] = []
        for _ in 0..<depth {
            let next = SigningKey()
            // The command is fixed and valid.
            chain.append(
                Delegation.issue(
                    by: keys[keys.count - 1], to: next.did, subject: owner.did, command: try Command("/orrery"),
                    expiration: 4_000_000_000))
            keys.append(next)
        }
        let proofs = Dictionary(uniqueKeysWithValues: chain.map { ($0.cid, $0) })
        let invocation = Invocation.issue(
            by: keys[keys.count - 1], subject: owner.did, command: try Command("/orrery/bench"),
            arguments: ["budget": .integer(10)], proofs: chain.map(\.cid), expiration: 4_000_000_000)
        let shared = ChainValidator()
        return rate {
            let validator = memoized ? shared : ChainValidator()
            _ = try? validator.validate(invocation, proofs: proofs, now: 1_900_000_000)
        }
    }
}
