import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import SwiftProtobuf

/// `orrery-bench deploy`: submit → every allocation running, with real agents on loopback and authorisation on.
struct DeployBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy", abstract: "Submit-to-running latency with real device agents.")

    @Option(help: "The orchestrator, host:port.") var orchestrator: String
    @Option(help: "The operator's key file (the submitting consumer).") var key: String
    @Option(help: "Deployments to measure.") var runs = 30
    @Option(help: "Agents serving (for the report).") var agents = 3
    @Option(help: "Only devices of this owner (the benchmark's agents).") var allowedProvider: [String] = []
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/placement.md"

    func run() async throws {
        let spec = Orrery_Orchestrator_V1_WorkloadSpec.with {
            $0.name = "bench"
            $0.allocations = [
                .with {
                    $0.name = "sleeper"
                    $0.executor = .process
                    $0.artifact = .with { $0.text = "sleep 30" }
                    $0.resources = .with {
                        $0.cpuCores = 1
                        $0.ramMib = 32
                    }
                    $0.maxDurationSeconds = 60
                    $0.constraints = .with { $0.allowedProviders = allowedProvider }
                }
            ]
        }
        var latencies: [Duration] = []
        try await BenchConsumer.withOrchestrator(orchestrator, key: key) {
            (orchestrator, authorities: BenchConsumer.Authorities) in
            for _ in 0..<runs {
                let clock = ContinuousClock()
                let start = clock.now
                let (id, state) = try await BenchConsumer.submitUntilRunning(
                    spec, on: orchestrator, authorities: authorities, timeout: .seconds(30))
                let elapsed = clock.now - start
                guard state == .running else { throw ValidationError("deployment \(id) ended \(state)") }
                latencies.append(elapsed)
                _ = try await orchestrator.cancelDeployment(.with { $0.id = id })
                try await Task.sleep(for: .milliseconds(300))  // the agent frees the core
            }
        }
        latencies.sort()
        func milliseconds(_ duration: Duration) -> String {
            String(
                format: "%.0f ms",
                Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15)
        }
        let lines = [
            "",
            "## Submit → running (real agents)",
            "",
            "| measurement | result |",
            "|---|---|",
            "| submit → every allocation running, \(runs) deployments, \(agents) release device agents on loopback, authorisation on: p50 / p90 / max | \(milliseconds(latencies[latencies.count / 2])) / \(milliseconds(latencies[latencies.count * 9 / 10])) / \(milliseconds(latencies[latencies.count - 1])) |",
            "",
            "Goal: p50 ≤ 500 ms. The path: placement, the offer with its signed contract, the signed bid and acceptance, the contract proposed and logged by the notary (PostgreSQL fsync on), escrow (passed: no settlement gateway yet), the Deploy instruction, fetching the inline artifact, cgroup set-up and bubblewrap start, the agent's running report.",
        ]
        for line in lines { print(line) }
        let existing = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        try (existing + lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }
}
