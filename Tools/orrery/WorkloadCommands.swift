import ArgumentParser
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryHTTPClient
import OrreryOCI
import OrreryData
import OrreryWorkloadSpec
import OrreryIdentity
import OrreryRuntimeCore
import OrreryProto
import SwiftProtobuf

/// Where the orchestrator is and who calls it.
struct OrchestratorOptions: ParsableArguments {
    @Option(
        name: .customLong("orchestrator"),
        help: "The orchestrator, host:port (default: the context's, else 127.0.0.1:7403).")
    var orchestratorFlag: String?
    @OptionGroup var caller: CallerOptions
    var orchestrator: String { CLISettings.address(orchestratorFlag, service: "orchestrator") }

    func call<Result: Sendable>(
        _ body: (Orrery_Orchestrator_V1_Orchestrator.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await AuthorizedCall.withClient(orchestrator, service: "orchestrator", caller: caller) { client in
            try await body(Orrery_Orchestrator_V1_Orchestrator.Client(wrapping: client))
        }
    }

    /// The caller's delegation of `command` (`/orrery/notary/propose`: the contracts embed it;
    /// `/orrery/settlement/escrow`: their maximum cost is held under it) to the orchestrator (docs/ARCHITECTURE.md §2), bounded by
    /// the spec's budget and living as long as the work may take (plus a day to settle).
    func consumerAuthority(
        for spec: Orrery_Orchestrator_V1_WorkloadSpec, command: String = "/orrery/notary/propose"
    ) async throws -> Data {
        guard let target = ServiceAddress(orchestrator) else {
            throw ValidationError("'\(orchestrator)' is not host:port")
        }
        let orchestratorDID = try await ServiceProbe.withClient(target, trustRoots: caller.trustRoots) {
            try DID(try await ServiceProbe.info($0).did)
        }
        let consumer = try Inputs.key(caller.key)
        let longest =
            spec.allocations.map { Int64($0.maxDurationSeconds == 0 ? 3600 : $0.maxDurationSeconds) }.max() ?? 3600
        let policy = spec.budget > 0 ? try Policy(try IPLDJSON.parse(#"[["<=", ".amount", \#(spec.budget)]]"#)) : .empty
        let delegation = Delegation.issue(
            by: consumer, to: orchestratorDID, subject: consumer.did, command: try Command(command),
            policy: policy, expiration: Int64(Date().timeIntervalSince1970) + longest + 86_400)
        return Data(try UCANContainer.encode([delegation.envelope.bytes], header: .raw))
    }
}

/// Reads a spec file, with a message a person can act on when it is wrong (every problem, with its line; no usage
/// text, which would bury it).
func readSpec(_ path: String) throws -> Orrery_Orchestrator_V1_WorkloadSpec {
    try WorkloadSpecFile.read(path)
}

extension Orrery_Orchestrator_V1_DeploymentState {
    /// "matched", "running", …
    var name: String {
        switch self {
        case .unspecified: "unspecified"
        case .submitted: "submitted"
        case .matched: "matched"
        case .offered: "offered"
        case .contracted: "contracted"
        case .escrowed: "escrowed"
        case .deploying: "deploying"
        case .running: "running"
        case .completed: "completed"
        case .failed: "failed"
        case .cancelled: "cancelled"
        case .UNRECOGNIZED(let value): "state \(value)"
        }
    }

    var isFinal: Bool { isTerminal }
}

/// `orrery run job.yaml`: submit, then follow the deployment's progress until it runs (or ends).
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Submit a workload spec (YAML or JSON) and follow it until it runs or ends.")

    @Argument(help: "The spec file, or - for standard input.") var spec: String
    @OptionGroup var options: OrchestratorOptions
    @Option(help: "Idempotency key: a retry with the same key returns the same deployment (default: a fresh one).")
    var idempotencyKey = UUID().uuidString
    @Flag(help: "Return once submitted, without following.") var detach = false
    @Flag(help: "Follow until the deployment ends, not just until it runs.") var wait = false
    @Flag(help: "Print the deployment as JSON when done.") var json = false
    @Flag(name: .shortAndLong, help: "Print only the deployment's id, no progress (DEP=$(orrery run -q …)).")
    var quiet = false
    @Option(
        help:
            "Registry logins for private images (Docker's config.json format): a short-lived pull-only token for each image goes with the submission, never the password."
    )
    var registryAuth: String?
    @Option(help: "A PEM file of CA certificates trusted for registries besides the system's (with --registry-auth).")
    var registryCa: String?
    @OptionGroup var s3: S3Options

    func validate() throws {
        guard !(quiet && json) else {
            throw ValidationError("say --quiet (the id) or --json (the deployment), not both")
        }
    }

    func run() async throws {
        let workload = try readSpec(spec)
        // Presigned first: missing S3 credentials are said before anything is asked of the network.
        let dataURLs = try s3.urls(for: workload)
        let authority = try await options.consumerAuthority(for: workload)
        let settlementAuthority = try await options.consumerAuthority(
            for: workload, command: "/orrery/settlement/escrow")
        var pullTokens: [String: String] = [:]
        var inputTokens: [String: String] = [:]
        if let registryAuth {
            let logins = try RegistryAuth(file: registryAuth)
            let trust: TLSTrust = registryCa.map { .caFile($0) } ?? .system
            pullTokens = try await logins.pullTokens(for: workload, trust: trust)
            inputTokens = try await logins.inputTokens(for: workload, trust: trust)
        }
        let deployment = try await options.call { client in
            try await client.submitWorkload(
                .with {
                    $0.spec = workload
                    $0.idempotencyKey = idempotencyKey
                    $0.consumerAuthority = authority
                    $0.settlementAuthority = settlementAuthority
                    $0.imagePullTokens = pullTokens
                    $0.inputUrls = dataURLs.inputs
                    $0.outputUrls = dataURLs.outputs
                    $0.inputTokens = inputTokens
                })
        }
        // Progress on standard error, each line at once, the id first: interrupted, nothing is lost; the data (the
        // deployment) on standard output, so `run --json | jq` reads only JSON.
        let quiet = quiet
        let progress: @Sendable (String) -> Void = { line in
            if !quiet { Console.progress(line) }
        }
        progress("==> deployment \(deployment.id) submitted")
        var last = deployment
        if !detach {
            last = try await options.call { client in
                try await client.watchDeployment(.with { $0.id = deployment.id }) { response in
                    var latest = deployment
                    for try await event in response.messages {
                        progress(eventLine(event))
                        if event.measurement { continue }
                        latest = event.deployment
                        if (event.state == .running && !wait) || event.state.isFinal { break }
                    }
                    return latest
                }
            }
        }
        if quiet {
            Console.out(last.id)
        } else if json {
            Console.out(try last.jsonString())
        } else {
            printAssignments(last)
        }
        if last.state == .failed { throw ExitCode(1) }
    }
}

func printAssignments(_ deployment: Orrery_Orchestrator_V1_Deployment) {
    Console.out("==> \(deployment.id): \(deployment.state.name) — \(deployment.reason)")
    for assignment in deployment.assignments {
        Console.out(
            "    \(assignment.allocation)[\(assignment.replica)]  \(assignment.deviceDid)  \(assignment.hourlyPrice) NTX/h, \(assignment.jobCost) NTX per run"
                + (assignment.contractID.isEmpty ? "" : "  contract \(assignment.contractID)")
        )
        if assignment.hasRun { Console.out("        " + runLine(assignment.run)) }
    }
    for edge in deployment.edgeLatencies where edge.pairs > 0 {
        let estimate = edge.hasPlacementRttMs ? String(format: "%.1f ms", edge.placementRttMs) : "unknown"
        let path = edge.hasPathRttMs ? String(format: "%.1f ms", edge.pathRttMs) : "not measured yet"
        Console.out(
            "    latency \(edge.from) → \(edge.to) (at most \(edge.maxRttMs) ms): devices \(estimate) (placement's estimate), ensemble path \(path) (measured)"
        )
    }
    for route in deployment.routes {
        let kind = route.expose == .private ? "private" : "public"
        Console.out(
            "    \(route.allocation):\(route.portName) (\(route.port), \(kind))  "
                + (route.url.isEmpty ? "host name \(route.label) (this orchestrator runs no ingress)" : route.url))
    }
}

/// A replica's run as one line: state (with its exit status), use so far, cost so far.
func runLine(_ run: Orrery_Orchestrator_V1_ReplicaRun) -> String {
    let state: String
    switch run.state {
    case .starting: state = "starting"
    case .running: state = "running"
    case .exited: state = run.hasExitCode ? "exited \(run.exitCode)" : "exited"
    case .failedToStart: state = "failed to start"
    case .stopping: state = "stopping"
    default: state = "unknown"
    }
    // The device's reason, unless it only repeats the state ("exited 0").
    let repeats = run.reason.isEmpty || run.reason == state || run.state == .running
    var parts = [state + (repeats ? "" : " (\(run.reason))")]
    if run.hasHealth { parts.append(healthText(run.health)) }
    if run.hasUsage {
        let usage = run.usage
        parts.append(
            String(
                format: "%.1f s CPU, %.0f MiB peak, %.1f s wall", usage.cpuSeconds,
                Double(usage.peakMemoryBytes) / 1_048_576, usage.wallSeconds)
                + (usage.oomKilled ? ", killed: out of memory" : ""))
        parts.append("cost so far \(run.costSoFar) NTX")
    }
    return parts.joined(separator: " · ")
}

/// A replica's health as one phrase: "healthy", "starting (restarted 2 times; last: GET … 503)".
func healthText(_ health: Orrery_Orchestrator_V1_ReplicaHealth) -> String {
    var text: String
    switch health.status {
    case .starting: text = "health: starting"
    case .healthy: text = "health: healthy"
    case .unhealthy: text = health.gaveUp ? "health: unhealthy, stopped to move" : "health: unhealthy"
    default: text = "health: unknown"
    }
    var details: [String] = []
    if health.restarts > 0 { details.append("restarted \(health.restarts) time\(health.restarts == 1 ? "" : "s")") }
    if health.status != .healthy, !health.lastFailure.isEmpty { details.append("last: \(health.lastFailure)") }
    if !details.isEmpty { text += " (\(details.joined(separator: "; ")))" }
    return text
}

/// `orrery status [ID]`: one deployment in detail, or the caller's deployments.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a deployment, or list yours.")

    @Argument(help: "A deployment id; none to list.") var id: String?
    @OptionGroup var options: OrchestratorOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        if let id {
            let deployment = try await options.call { try await $0.getDeployment(.with { $0.id = id }) }
            if json {
                print(try deployment.jsonString())
                return
            }
            printAssignments(deployment)
            Console.out("  history:")
            try await deploymentEvents(id, options: options, follow: false) { Console.out(eventLine($0)) }
            return
        }
        let deployments = try await options.call { client in
            var all: [Orrery_Orchestrator_V1_Deployment] = []
            var request = Orrery_Orchestrator_V1_ListDeploymentsRequest.with { $0.pageSize = 500 }
            repeat {
                let page = try await client.listDeployments(request)
                all += page.deployments
                request.pageToken = page.nextPageToken
            } while !request.pageToken.isEmpty
            return all
        }
        if json {
            for deployment in deployments { print(try deployment.jsonString()) }
            return
        }
        print("ID                              STATE       CREATED               NAME")
        for deployment in deployments {
            print(
                deployment.id.padding(toLength: 32, withPad: " ", startingAt: 0)
                    + deployment.state.name.padding(toLength: 12, withPad: " ", startingAt: 0)
                    + timeText(deployment.createdAt) + "  " + deployment.spec.name)
        }
    }
}

/// A deployment's transitions so far (every one up to its current revision), then, with `follow`, each new one
/// until it ends; `print` gets each.
func deploymentEvents(
    _ id: String, options: OrchestratorOptions, follow: Bool,
    _ print: @escaping @Sendable (Orrery_Orchestrator_V1_DeploymentEvent) throws -> Void
) async throws {
    try await options.call { client in
        let current = try await client.getDeployment(.with { $0.id = id })
        try await client.watchDeployment(.with { $0.id = id }) { response in
            for try await event in response.messages {
                try print(event)
                if !follow, event.revision >= current.revision { break }
            }
        }
    }
}

/// One transition as a line: time, state, reason.
func eventLine(_ event: Orrery_Orchestrator_V1_DeploymentEvent) -> String {
    let time = timeText(event.at)
    let label = event.measurement ? "latency" : event.state.name
    return "    \(time)  \(label.padding(toLength: 10, withPad: " ", startingAt: 0))  \(event.reason)"
}

/// `orrery events ID`: a deployment's history, and with -f everything that follows (re-attach to a deployment).
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Show every transition of a deployment with its time and reason; -f follows it until it ends.")

    @Argument(help: "The deployment id.") var id: String
    @OptionGroup var options: OrchestratorOptions
    @Flag(name: .shortAndLong, help: "Keep following until the deployment ends.") var follow = false
    @Flag(help: "Print each event as one line of JSON.") var json = false

    func run() async throws {
        let json = json
        try await deploymentEvents(id, options: options, follow: follow) { event in
            if json {
                var line = event
                line.clearDeployment()
                Console.out(try line.jsonString())
            } else {
                Console.out(eventLine(event))
            }
        }
    }
}

/// `orrery contracts ID`: the contract of each replica of a deployment, its state and its SLA breaches.
struct ContractsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contracts",
        abstract:
            "List a deployment's contracts: one line per replica — contract id, allocation[replica], device, the contract's state and the SLA breaches the notary logged (`orrery contract show` for one in full)."
    )

    @Argument(help: "The deployment id.") var id: String
    @OptionGroup var options: OrchestratorOptions
    @Option(
        name: .customLong("notary"),
        help:
            "The contract notary, host:port (default: the context's, else the one the orchestrator names, else 127.0.0.1:7404)."
    )
    var notaryFlag: String?
    @Flag(help: "Print JSON: each contract's record from the notary (orrery.notary.v1.ContractRecord), one per line.")
    var json = false

    func run() async throws {
        let deployment = try await options.call { try await $0.getDeployment(.with { $0.id = id }) }
        let contracted = deployment.assignments.filter { !$0.contractID.isEmpty }
        if contracted.isEmpty {
            Console.progress("\(id) has no contract yet (\(deployment.state.name))")
            return
        }
        let notary = await CLISettings.discoveredAddress(
            notaryFlag, service: "contract-notary", orchestrator: options.orchestrator,
            trustRoots: options.caller.trustRoots)
        let records: [String: Orrery_Notary_V1_ContractRecord]
        do {
            records = try await AuthorizedCall.withClient(notary, service: "contract-notary", caller: options.caller) {
                client in
                let notary = Orrery_Notary_V1_Notary.Client(wrapping: client)
                var records: [String: Orrery_Notary_V1_ContractRecord] = [:]
                for assignment in contracted {
                    records[assignment.contractID] = try await notary.getContract(
                        .with { $0.id = assignment.contractID })
                }
                return records
            }
        } catch {
            // The orchestrator's part stands on its own: say why the notary's is missing, and show the rest.
            if json { throw error }
            Console.progress("the notary at \(notary) did not answer (\(error)): states and breaches are not shown")
            records = [:]
        }
        if json {
            for assignment in contracted {
                if let record = records[assignment.contractID] { Console.out(try record.jsonString()) }
            }
            return
        }
        for assignment in contracted {
            var line =
                "\(assignment.contractID)  \(assignment.allocation)[\(assignment.replica)]  \(assignment.deviceDid)"
            if let record = records[assignment.contractID] {
                line += "  \(record.state.name)  " + Self.breaches(record)
            }
            Console.out(line)
        }
    }

    /// "no SLA breach", or each breach: what was observed against what the contract required, and its penalty.
    static func breaches(_ record: Orrery_Notary_V1_ContractRecord) -> String {
        guard !record.breaches.isEmpty else { return "no SLA breach" }
        let named = record.breaches.map { breach in
            switch breach.kind {
            case .availability:
                "availability \(percent(breach.observed)) < \(percent(breach.required)) (penalty \(breach.penalty) NTX)"
            case .relocations:
                "relocations \(Int(breach.observed)) > \(Int(breach.required)) (penalty \(breach.penalty) NTX)"
            default: "\(breach.kind) (penalty \(breach.penalty) NTX)"
            }
        }
        return "SLA breach\(named.count == 1 ? "" : "es"): " + named.joined(separator: "; ")
    }

    private static func percent(_ fraction: Double) -> String { String(format: "%.2f%%", fraction * 100) }
}

/// `orrery cancel ID`.
struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel a deployment.")

    @Argument(help: "The deployment id.") var id: String
    @OptionGroup var options: OrchestratorOptions
    @Option(help: "Why, for the record.") var reason = ""

    func run() async throws {
        let deployment = try await options.call { client in
            try await client.cancelDeployment(
                .with {
                    $0.id = id
                    $0.reason = reason
                })
        }
        print("\(deployment.id): \(deployment.state.name) — \(deployment.reason)")
    }
}

/// `orrery renew DEP`: fresh presigned URLs and pull tokens for a running deployment, made here from the consumer's
/// credentials as `orrery run` makes them, for replicas deployed or moved from now on.
struct RenewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "renew",
        abstract:
            "Give a running deployment fresh presigned URLs and image pull tokens (for replicas started or moved from now on)."
    )

    @Argument(help: "The deployment id.") var id: String
    @OptionGroup var options: OrchestratorOptions
    @Option(help: "Registry logins for private images (Docker's config.json format), as for orrery run.")
    var registryAuth: String?
    @Option(help: "A PEM file of CA certificates trusted for registries besides the system's (with --registry-auth).")
    var registryCa: String?
    @OptionGroup var s3: S3Options
    @Flag(help: "Print the answer as JSON.") var json = false

    func run() async throws {
        let deployment = try await options.call { client in try await client.getDeployment(.with { $0.id = id }) }
        let dataURLs = try s3.urls(for: deployment.spec)
        var pullTokens: [String: String] = [:]
        var inputTokens: [String: String] = [:]
        if let registryAuth {
            let logins = try RegistryAuth(file: registryAuth)
            let trust: TLSTrust = registryCa.map { .caFile($0) } ?? .system
            pullTokens = try await logins.pullTokens(for: deployment.spec, trust: trust)
            inputTokens = try await logins.inputTokens(for: deployment.spec, trust: trust)
        }
        guard !pullTokens.isEmpty || !inputTokens.isEmpty || !dataURLs.inputs.isEmpty || !dataURLs.outputs.isEmpty
        else {
            throw ValidationError(
                "\(id) uses no S3 data, and --registry-auth gave no pull token for its images: nothing to renew")
        }
        let renewed = try await options.call { client in
            try await client.renewDeploymentSecrets(
                .with {
                    $0.id = id
                    $0.imagePullTokens = pullTokens
                    $0.inputUrls = dataURLs.inputs
                    $0.outputUrls = dataURLs.outputs
                    $0.inputTokens = inputTokens
                })
        }
        if json {
            Console.out(try renewed.jsonString())
        } else {
            Console.out(
                "\(id): \(renewed.urls) presigned URLs (valid \(s3.presignHours) h) and \(renewed.pullTokens) pull tokens held for replicas started or moved from now on"
            )
        }
    }
}

/// `orrery explain job.yaml`: where it would run, or why it cannot.
struct ExplainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Explain where a spec would be placed, or which constraints eliminate the devices and what to relax.")

    @Argument(help: "The spec file, or - for standard input.") var spec: String
    @OptionGroup var options: OrchestratorOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let workload = try readSpec(spec)
        let explanation = try await options.call { try await $0.explainPlacement(.with { $0.spec = workload }) }
        if json {
            print(try explanation.jsonString())
            if !explanation.placeable { throw ExitCode(1) }
            return
        }
        print(
            explanation.placeable
                ? "placeable: \(explanation.totalCost) NTX\(explanation.provenOptimal ? " (cheapest feasible)" : "")"
                : "not placeable: \(explanation.reason)")
        print("devices considered: \(explanation.devicesConsidered)")
        for allocation in explanation.allocations {
            let needs = allocation.needed > 1 ? " (needs \(allocation.needed) distinct devices)" : ""
            print(
                "  \(allocation.name): \(allocation.candidates) candidate\(allocation.candidates == 1 ? "" : "s")\(needs)"
            )
            // Every constraint that blocks, each with the devices failing it (a device may fail several).
            for failing in allocation.failing {
                print("    - \(failing.devices) fail \(failing.constraint)")
            }
            for assignment in allocation.assignments {
                print(
                    "    → replica \(assignment.replica) on \(assignment.deviceDid) (\(assignment.hourlyPrice) NTX/h)")
            }
        }
        if !explanation.relaxations.isEmpty {
            print("nearest relaxations:")
            for relaxation in explanation.relaxations {
                let scope = relaxation.allocation.isEmpty ? "" : "\(relaxation.allocation): "
                let count = relaxation.devicesAdmitted
                let admits = count > 0 ? " (admits \(count) device\(count == 1 ? "" : "s"))" : ""
                print("  - \(scope)\(relaxation.suggestion)\(admits)")
            }
        }
        if !explanation.placeable { throw ExitCode(1) }
    }
}

/// `orrery logs [-f] ID`: the deployment's output, each line prefixed by its allocation and replica.
struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Print a deployment's output (stdout and stderr of every allocation).",
        discussion: """
            The orchestrator keeps the last MiB of each replica's stdout and stderr. Lines go to this command's \
            stdout or stderr as they came from the workload's.
            """)

    @Argument(help: "The deployment id.") var id: String
    @OptionGroup var options: OrchestratorOptions
    @Flag(name: .shortAndLong, help: "Keep following until the deployment ends.") var follow = false
    @Option(name: [.customShort("n"), .long], help: "Only the last N lines of each replica's stream.")
    var tail: Int?
    @Option(help: "Only output received since then: a duration ago (90s, 5m, 2h, 1d) or an RFC 3339 time.")
    var since: String?
    @Flag(help: "Only the workloads' stdout.") var stdout = false
    @Flag(help: "Only the workloads' stderr.") var stderr = false
    @Flag(help: "Prefix each line with the time the orchestrator received it (RFC 3339, UTC).") var timestamps = false

    func validate() throws {
        if stdout && stderr { throw ValidationError("--stdout and --stderr: choose one (without either, both)") }
        if let tail, !(1...100_000).contains(tail) {
            throw ValidationError("--tail: a number of lines from 1 to 100000")
        }
        if let since { _ = try Self.moment(since, now: Date()) }
    }

    /// The moment `text` names: a duration before `now` (`90s`, `5m`, `2h`, `1d`) or an RFC 3339 time.
    static func moment(_ text: String, now: Date) throws -> Date {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last.flatMap({ units[$0] }), let amount = Double(text.dropLast()), amount >= 0 {
            return now.addingTimeInterval(-amount * unit)
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) ?? ISO8601DateFormatter().date(from: text) { return date }
        throw ValidationError(
            "--since \(text): give a duration ago (90s, 5m, 2h, 1d) or an RFC 3339 time (2026-12-04T10:00:00Z)")
    }

    func run() async throws {
        let start = try since.map { try Self.moment($0, now: Date()) }
        let format = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        try await options.call { client in
            try await client.streamLogs(
                .with {
                    $0.id = id
                    $0.follow = follow
                    $0.tailLines = UInt32(tail ?? 0)
                    if let start { $0.since = Google_Protobuf_Timestamp(date: start) }
                    $0.stream = stdout ? .stdout : stderr ? .stderr : .unspecified
                }
            ) { response in
                for try await line in response.messages {
                    let time = timestamps ? timeText(line.receivedAt, format.format) + " " : ""
                    let prefix = "\(time)\(line.allocation)[\(line.replica)] "
                    let text = String(decoding: line.data, as: UTF8.self)
                    let prefixed = text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().map {
                        index, part in
                        index == 0 || !part.isEmpty ? prefix + part : ""
                    }.joined(separator: "\n")
                    Console.write(Data(prefixed.utf8), errorStream: line.stream == .stderr)
                }
            }
        }
    }
}

/// `orrery outputs ID --to DIR`: the declared outputs, each checked against its sha256, written under
/// DIR/<allocation>-<replica>/.
struct OutputsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outputs",
        abstract:
            "Download a deployment's declared outputs (from the orchestrator, or from your S3 bucket with outputs_to), checked against their sha256 and size."
    )

    @Argument(help: "The deployment id.") var id: String
    @OptionGroup var options: OrchestratorOptions
    @Option(help: "Where to write them (default: list only).") var to: String?
    @Flag(
        help:
            "Print the list as JSON: allocation, replica, path, sha256, size and location of each (not the contents).")
    var json = false
    @OptionGroup var s3: S3Options

    func run() async throws {
        let response = try await options.call { try await $0.getOutputs(.with { $0.id = id }) }
        var listed: [[String: String]] = []
        for file in response.files {
            let size = file.location.isEmpty ? UInt64(file.content.count) : file.size
            if file.location.isEmpty, Hex.sha256(file.content) != file.sha256 {
                throw ValidationError("\(file.allocation)[\(file.replica)] \(file.path): sha256 mismatch, not written")
            }
            let name = "\(file.allocation)-\(file.replica)/\(file.path)"
            if json {
                listed.append([
                    "allocation": file.allocation, "replica": String(file.replica), "path": file.path,
                    "sha256": file.sha256, "size": String(size), "location": file.location,
                ])
            } else {
                let place = file.location.isEmpty ? "" : " at \(file.location)"
                print("\(file.sha256)  \(name)  (\(size) bytes\(place))")
            }
            guard let to else { continue }
            let base = URL(fileURLWithPath: to).appendingPathComponent("\(file.allocation)-\(file.replica)")
            let target = base.appendingPathComponent(file.path).standardizedFileURL
            guard target.path.hasPrefix(base.standardizedFileURL.path + "/") else {
                throw ValidationError("\(file.path) leads outside \(base.path): not written")
            }
            try FileManager.default.createDirectory(
                at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            if file.location.isEmpty {
                try file.content.write(to: target)
            } else if file.location == "store" {
                try await readStored(file, to: target.path, name: name)
            } else {
                try await download(file, to: target.path, name: name)
            }
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: ["files": listed], options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }

    /// Reads an output from the orchestrator's content store into `target`, continuing a partial download left by an
    /// earlier attempt, each chunk and the whole checked against their sha256; written under its name only once right.
    private func readStored(_ file: Orrery_Orchestrator_V1_OutputFile, to target: String, name: String) async throws {
        let partial = target + ".partial"
        if !FileManager.default.fileExists(atPath: partial) {
            guard FileManager.default.createFile(atPath: partial, contents: nil) else {
                throw ValidationError("\(name): cannot write \(partial)")
            }
        }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: partial))
        defer { try? handle.close() }
        var hasher = SHA256()
        var offset: UInt64 = 0
        // What an earlier attempt left is hashed again (and kept).
        while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
            hasher.update(data: data)
            offset += UInt64(data.count)
        }
        if offset > file.size {
            try handle.truncate(atOffset: 0)
            hasher = SHA256()
            offset = 0
        }
        Console.progress(
            "==> \(name): \(file.size) bytes from the orchestrator's store\(offset > 0 ? ", from \(offset)" : "")")
        let (start, resumed, total) = (offset, hasher, file.size)
        let (arrived, finalHasher) = try await options.call { client in
            try await client.readOutput(
                .with {
                    $0.id = id
                    $0.allocation = file.allocation
                    $0.replica = file.replica
                    $0.path = file.path
                    $0.offset = start
                }
            ) { response in
                var (offset, hasher, reported) = (start, resumed, start)
                for try await chunk in response.messages {
                    guard chunk.offset == offset, Hex.sha256(chunk.data) == chunk.chunkSha256,
                        offset + UInt64(chunk.data.count) <= total
                    else { throw ValidationError("\(name): a chunk at \(chunk.offset) is not the next or not intact") }
                    try handle.write(contentsOf: chunk.data)
                    hasher.update(data: chunk.data)
                    offset += UInt64(chunk.data.count)
                    if offset - reported >= 64 << 20 || offset == total {
                        Console.progress("    \(offset >> 20) of \(total >> 20) MiB")
                        reported = offset
                    }
                }
                return (offset, hasher)
            }
        }
        (offset, hasher) = (arrived, finalHasher)
        let digest = Hex.encode(hasher.finalize())
        guard offset == file.size, digest == file.sha256 else {
            try? FileManager.default.removeItem(atPath: partial)
            throw ValidationError(
                "\(name): \(offset) bytes with sha256 \(digest) arrived, not \(file.size) with \(file.sha256): not written"
            )
        }
        try handle.synchronize()
        guard rename(partial, target) == 0 else { throw ValidationError("\(name): cannot write \(target)") }
    }

    /// Fetches an output from the consumer's bucket through a URL presigned here, resumable and checked against the
    /// sha256 and size the device's receipt names; written under its name only once it is right.
    private func download(_ file: Orrery_Orchestrator_V1_OutputFile, to target: String, name: String) async throws {
        let presigner = try s3.presigner(for: "\(file.location)")
        guard let location = try? S3Location(parsing: file.location),
            let url = presigner.presign("GET", location, lifetime: 3600),
            let digest = try? OCIDigest(parsing: "sha256:" + file.sha256)
        else { throw ValidationError("\(name): the orchestrator names an unusable location \(file.location)") }
        Console.progress("==> \(name): \(file.size) bytes from \(file.location)")
        let expected = ExpectedBlob(
            digest: digest, size: Int64(clamping: file.size), maximumSize: Int64(clamping: file.size))
        do {
            try await WebBlob.download(url, expected, to: target + ".partial")
        } catch {
            throw ValidationError("\(name): \(error)")
        }
        guard rename(target + ".partial", target) == 0 else {
            throw ValidationError("\(name): cannot write \(target)")
        }
    }
}
