import ArgumentParser
import Foundation
import GRPCCore
import OrreryProto
import SwiftProtobuf

/// `orrery-bench actors`: envelopes between actors on two real agents (round trip p50/p99, pipelined throughput),
/// and the time from a host's death to its stateful allocation running again on another device.
struct ActorBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "actors", abstract: "Actor messaging latency and throughput; failure-to-running time.")

    @Option(help: "The orchestrator, host:port.") var orchestrator: String
    @Option(help: "The operator's key file (the submitting consumer).") var key: String
    @Option(help: "Three device DIDs: ping's (killed last), pong's, and the spare the counter resumes on.")
    var device: [String]
    @Option(help: "The pid of the first device's agent, killed -9 for the failure measurement.") var killPid: Int32
    @Option(help: "That agent's state directory (its sandboxes are killed too, as a dead host's would be).")
    var killState: String
    @Option(help: "The agents' and registry's heartbeat interval, ms (for the report).") var livenessMs = 1000
    @Option(help: "Where the example actors are.") var workloads = "Deploy/examples/actors"
    @Option(help: "A fourth device, whose agent's line is held by a second orchestrator replica (its mail is relayed).")
    var farDevice: String?
    @Option(help: "Sequential round trips.") var messages = 300
    @Option(help: "Pipelined messages.") var burst = 500
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/actors.md"

    func run() async throws {
        guard device.count == 3 else { throw ValidationError("--device three times: ping's, pong's, the spare") }
        let (ping, pong, spare) = (device[0], device[1], device[2])
        func script(_ name: String) throws -> String {
            let mailbox = try String(contentsOfFile: "\(workloads)/mailbox.py", encoding: .utf8)
            let program = try String(contentsOfFile: "\(workloads)/\(name)", encoding: .utf8)
            return mailbox + "\n" + program.replacingOccurrences(of: "from mailbox import Mailbox, text", with: "")
        }
        func allocation(_ name: String, _ file: String, on devices: [String], env: [String: String]) throws
            -> Orrery_Orchestrator_V1_AllocationSpec
        {
            let text = try script(file)
            return .with {
                $0.name = name
                $0.executor = .process
                $0.artifact = .with { $0.text = text }
                $0.command = "python3"
                $0.args = ["/artifact/run"]
                $0.env = env
                $0.resources = .with {
                    $0.cpuCores = 1
                    $0.ramMib = 64
                }
                $0.maxDurationSeconds = 600
                $0.constraints = .with { $0.allowedProviders = devices }
            }
        }
        /// ping on the first device sends `messages` pings one after the other, then `burst` without waiting, to
        /// pong on `pongDevice`.
        func conversation(pong pongDevice: String, burst: Int) throws -> Orrery_Orchestrator_V1_WorkloadSpec {
            var spec = Orrery_Orchestrator_V1_WorkloadSpec.with { $0.name = "bench-actors" }
            spec.allocations = [
                try allocation(
                    "ping", "ping.py", on: [ping],
                    env: ["LAST": "\(messages)", "BURST": "\(burst)", "PAUSE": "0"]),
                try allocation("pong", "pong.py", on: [pongDevice], env: ["LAST": "\(messages + burst)"]),
            ]
            spec.allocations[0].outputs = ["rtt.txt", "burst.txt"]
            spec.allocations[1].stateful = true
            return spec
        }
        var counter = Orrery_Orchestrator_V1_WorkloadSpec.with { $0.name = "bench-counter" }
        counter.allocations = [try allocation("counter", "counter.py", on: [ping, spare], env: [:])]
        counter.allocations[0].stateful = true
        counter.allocations[0].checkpointIntervalSeconds = 1

        let (rtts, pipelined, failure, relayed) = try await BenchConsumer.withOrchestrator(orchestrator, key: key) {
            client, authority in
            /// Runs a conversation to its end; returns its sorted round trips and its burst's "count seconds".
            func converse(_ spec: Orrery_Orchestrator_V1_WorkloadSpec) async throws -> ([Double], [Double]) {
                let talk = try await client.submitWorkload(
                    .with {
                        $0.spec = spec
                        $0.idempotencyKey = UUID().uuidString
                        $0.consumerAuthority = authority
                    })
                let ended = try await Self.watch(client, talk.id, timeout: .seconds(600)) { $0.state.isTerminal }
                guard ended.state == .completed else {
                    throw ValidationError("the conversation ended \(ended.state): \(ended.reason)")
                }
                let files = try await client.getOutputs(.with { $0.id = talk.id }).files
                func file(_ path: String) -> String {
                    files.first { $0.path == path }.map { String(decoding: $0.content, as: UTF8.self) } ?? ""
                }
                let rtts = file("rtt.txt").split(separator: "\n").compactMap { Double($0) }.sorted()
                guard rtts.count == messages else {
                    throw ValidationError("the ping actor reported \(rtts.count) round trips")
                }
                return (rtts, file("burst.txt").split(whereSeparator: \.isWhitespace).compactMap { Double($0) })
            }
            let (rtts, burstFields) = try await converse(try conversation(pong: pong, burst: burst))
            guard burstFields.count == 2 else { throw ValidationError("the ping actor reported no burst") }
            // Through a second orchestrator replica: pong's agent holds its line there.
            var relayed: [Double]?
            if let farDevice { relayed = try await converse(try conversation(pong: farDevice, burst: 0)).0 }

            // The counter runs on the first device; once it checkpointed, that host dies.
            let count = try await client.submitWorkload(
                .with {
                    $0.spec = counter
                    $0.idempotencyKey = UUID().uuidString
                    $0.consumerAuthority = authority
                })
            let running = try await Self.watch(client, count.id, timeout: .seconds(60)) {
                $0.state == .running || $0.state.isTerminal
            }
            guard running.state == .running, running.deployment.assignments.first?.deviceDid == ping else {
                throw ValidationError(
                    "the counter is \(running.state) on \(running.deployment.assignments.first?.deviceDid ?? "?")")
            }
            let stored = try await client.checkpoint(.with { $0.id = count.id }).checkpoints.first
            let size = (try? Orrery_Actors_V1_Checkpoint(serializedBytes: stored?.record.payload ?? Data()))?.size ?? 0
            let clock = ContinuousClock()
            let killed = clock.now
            kill(killPid, SIGKILL)
            Self.killSandboxes(in: killState)
            let after = try await Self.events(client, count.id, after: running.revision, timeout: .seconds(120)) {
                event in
                (event.state == .running && event.deployment.assignments.first?.deviceDid == spare)
                    || event.state.isTerminal
            }
            let detected = after.first { $0.event.reason.contains("relocated") }.map { $0.at - killed }
            guard let resumed = after.last?.event, let back = after.last.map({ $0.at - killed }),
                resumed.state == .running
            else {
                throw ValidationError("the counter did not resume: \(after.last?.event.reason ?? "no event")")
            }
            _ = try await client.cancelDeployment(.with { $0.id = count.id })
            return (rtts, (count: burstFields[0], seconds: burstFields[1]), (detected, back, size), relayed)
        }
        func percentile(_ p: Double, of rtts: [Double] = rtts) -> String {
            String(format: "%.2f ms", rtts[min(rtts.count - 1, Int(Double(rtts.count) * p))])
        }
        func seconds(_ duration: Duration?) -> String {
            guard let duration else { return "—" }
            let components = duration.components
            return String(format: "%.2f s", Double(components.seconds) + Double(components.attoseconds) / 1e18)
        }
        let lines = [
            "# Actor benchmarks",
            "",
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release build: an orchestrator\(farDevice == nil ? "" : " (and a second replica of it, holding a fourth agent's line)"), a notary, a registry and three device agents on loopback (heartbeats every \(livenessMs) ms), PostgreSQL with fsync on, workloads in bubblewrap sandboxes talking to their agents over the mailbox socket (Python clients from `Deploy/examples/actors`).",
            "",
            "| measurement | result |",
            "|---|---|",
            "| envelope round trip between actors on two agents (ping → pong → reply, each sealed, routed through the orchestrator, gated and acknowledged), \(messages) sequential: p50 / p99 / max | \(percentile(0.5)) / \(percentile(0.99)) / \(String(format: "%.2f ms", rtts.last ?? 0)) |",
            relayed.map {
                "| the same, pong's agent connected to a second orchestrator replica (each envelope and report relayed through PostgreSQL: a row announced with NOTIFY, taken by that replica), \(messages) sequential: p50 / p99 / max | \(percentile(0.5, of: $0)) / \(percentile(0.99, of: $0)) / \(String(format: "%.2f ms", $0.last ?? 0)) |"
            } ?? "| (no second orchestrator replica given: no relayed round trips) | — |",
            "| pipelined: \(Int(pipelined.count)) pings sent without waiting, all \(Int(pipelined.count)) answers received | \(String(format: "%.0f", pipelined.count / pipelined.seconds)) round trips/s (\(String(format: "%.2f s", pipelined.seconds))) |",
            "| a stateful counter's host killed -9 → the orchestrator relocates it (the registry marked the device offline) | \(seconds(failure.0)) |",
            "| host killed -9 → running again on another device from its latest checkpoint (\(failure.2)-byte archive) | \(seconds(failure.1)) |",
            "",
            "Goal for the failure: within 3 heartbeat intervals (\(3 * livenessMs) ms here) plus the checkpoint's transfer time.",
            "",
        ]
        for line in lines { print(line) }
        try lines.joined(separator: "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }

    /// Follows a deployment's events after `after` until `done` holds for one; returns the events so far, each with
    /// when it arrived here.
    static func events(
        _ client: BenchConsumer.Client, _ id: String, after: Int64 = 0, timeout: Duration,
        until done: @escaping @Sendable (Orrery_Orchestrator_V1_DeploymentEvent) -> Bool
    ) async throws -> [(event: Orrery_Orchestrator_V1_DeploymentEvent, at: ContinuousClock.Instant)] {
        var options = CallOptions.defaults
        options.timeout = timeout
        return try await client.watchDeployment(
            .with {
                $0.id = id
                $0.afterRevision = after
            }, options: options
        ) { response in
            var seen: [(event: Orrery_Orchestrator_V1_DeploymentEvent, at: ContinuousClock.Instant)] = []
            for try await event in response.messages {
                seen.append((event, ContinuousClock.now))
                if done(event) { return seen }
            }
            throw ValidationError("the watch of \(id) ended early")
        }
    }

    /// The event that ended a watch.
    static func watch(
        _ client: BenchConsumer.Client, _ id: String, timeout: Duration,
        until done: @escaping @Sendable (Orrery_Orchestrator_V1_DeploymentEvent) -> Bool
    ) async throws -> Orrery_Orchestrator_V1_DeploymentEvent {
        guard let last = try await events(client, id, timeout: timeout, until: done).last?.event else {
            throw ValidationError("no event for \(id)")
        }
        return last
    }

    /// What a dead host takes with it: the sandboxes its agent left running.
    static func killSandboxes(in state: String) {
        let runs = state + "/allocations"
        for run in (try? FileManager.default.contentsOfDirectory(atPath: runs)) ?? [] {
            if let text = try? String(contentsOfFile: "\(runs)/\(run)/wrapper.pid", encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                kill(-pid, SIGKILL)
            }
        }
    }
}
