import ArgumentParser
import Foundation
import GRPCCore
import OrreryProto
import SwiftProtobuf

/// `orrery-bench content-store`: an output of `--mebibytes` (no outputs_to) streamed by a real agent over its line
/// into the orchestrator's content store (PostgreSQL, fsync on), from the allocation's end to the output listed whole
/// (its sha256 checked by the store); then read back with ReadOutput.
struct ContentStoreBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "content-store", abstract: "Outputs into the orchestrator's content store and back.")

    @Option(help: "The orchestrator, host:port.") var orchestrator: String
    @Option(help: "The operator's key file (the submitting consumer).") var key: String
    @Option(help: "MiB of the output.") var mebibytes = 1024
    @Option(help: "Only devices of this owner (the benchmark's agents).") var allowedProvider: [String] = []
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/outputs.md"

    func run() async throws {
        let size = UInt64(mebibytes) << 20
        let spec = Orrery_Orchestrator_V1_WorkloadSpec.with {
            $0.name = "bench-store"
            $0.allocations = [
                .with {
                    $0.name = "writer"
                    $0.executor = .process
                    $0.artifact = .with { $0.text = "head -c \(size) /dev/urandom > big.bin" }
                    $0.resources = .with {
                        $0.cpuCores = 1
                        $0.ramMib = 64
                        $0.diskMib = UInt64(mebibytes + 64)
                    }
                    $0.maxDurationSeconds = 600
                    $0.outputs = ["big.bin"]
                    $0.constraints = .with { $0.allowedProviders = allowedProvider }
                }
            ]
        }
        let clock = ContinuousClock()
        let (stored, read) = try await BenchConsumer.withOrchestrator(orchestrator, key: key) {
            (orchestrator, authorities: BenchConsumer.Authorities) in
            let deployment = try await orchestrator.submitWorkload(
                .with {
                    $0.spec = spec
                    $0.idempotencyKey = UUID().uuidString
                    $0.consumerAuthority = authorities.propose
                    $0.settlementAuthority = authorities.escrow
                })
            let state = try await orchestrator.watchDeployment(.with { $0.id = deployment.id }) { response in
                for try await event in response.messages where event.state.isTerminal { return event.state }
                return Orrery_Orchestrator_V1_DeploymentState.unspecified
            }
            guard state == .completed else { throw ValidationError("deployment \(deployment.id) ended \(state)") }
            // From the allocation's end (its receipt names the digest; the device then streams it) to listed whole.
            let ended = clock.now
            var file: Orrery_Orchestrator_V1_OutputFile?
            while file == nil {
                guard clock.now - ended < .seconds(600) else { throw ValidationError("the output never arrived") }
                file = try await orchestrator.getOutputs(.with { $0.id = deployment.id }).files.first {
                    $0.path == "big.bin" && $0.location == "store"
                }
                if file == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            let stored = clock.now - ended
            guard let file, file.size == size else { throw ValidationError("the output is not \(size) bytes") }
            let readStart = clock.now
            let bytes = try await orchestrator.readOutput(
                .with {
                    $0.id = deployment.id
                    $0.allocation = file.allocation
                    $0.replica = file.replica
                    $0.path = file.path
                }
            ) { response in
                try await response.messages.reduce(into: UInt64(0)) { $0 += UInt64($1.data.count) }
            }
            guard bytes == size else { throw ValidationError("read \(bytes) of \(size) bytes") }
            return (stored, clock.now - readStart)
        }
        func seconds(_ duration: Duration) -> Double { ImageBenchCommand.seconds(duration) }
        let lines = [
            "",
            "## The orchestrator's content store",
            "",
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release build: a \(mebibytes) MiB output of random bytes (no outputs_to) streamed by a real agent over its line into PostgreSQL (fsync on), everything on this machine.",
            "",
            "| measurement | time | rate |",
            "|---|---|---|",
            String(
                format:
                    "| allocation ended → output listed whole (chunks stored, sha256 checked) | %.1f s | %.0f MiB/s |",
                seconds(stored), Double(mebibytes) / seconds(stored)),
            String(
                format: "| ReadOutput of all of it | %.1f s | %.0f MiB/s |", seconds(read),
                Double(mebibytes) / seconds(read)),
            "",
            "Goal (issue \"Images and data\"): 1 GiB into the orchestrator's own store at 100 MiB/s or more.",
        ]
        try publishResults(lines, to: out)
    }
}
