import ArgumentParser
import DeviceAgent
#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
internal import OrreryBasics
#if canImport(Glibc)
    import Glibc
#endif
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf
import Synchronization

/// `device-agent`: Orrery device agent: joins an edge host to the network and runs workloads isolated.
@main
struct DeviceAgentServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device-agent",
        abstract: "Orrery device agent: joins an edge host to the network and runs workloads isolated.",
        subcommands: [
            Serve.self, Identity.self, Join.self, Leave.self, Inventory.self, RunLocal.self, Probe.self, Connector.self,
        ],
        defaultSubcommand: Serve.self
    )
}

/// `device-agent serve` (the default): runs the agent.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the agent (the default).",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults."
    )

    @OptionGroup var options: AgentOptions

    func run() async throws {
        try await DeviceAgentServer.run(options: options)
    }
}

/// `device-agent inventory`: what this host would advertise.
struct Inventory: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the detected hardware as JSON.")

    @Option(help: "The work directory whose disk is reported.") var workDir = "."

    func run() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(HostDetector.detect(workDirectory: workDir)), as: UTF8.self))
    }
}

/// `device-agent probe`: one health check from the network namespace it runs in — the agent starts it inside a
/// sandbox's with `nsenter`. Prints what it found; exits 0 when the check passed, 1 when it failed.
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one health check against 127.0.0.1 (the agent runs it inside a sandbox).",
        shouldDisplay: false)

    @Option(help: "Check that a TCP connection to this port is accepted.") var tcp: Int?
    @Option(help: "Check that a GET on this port answers 200…399.") var http: Int?
    @Option(help: "The path the HTTP check asks for.") var path = "/"
    @Option(help: "How long the check may take, in milliseconds.") var timeoutMs: Int64 = 2000

    func validate() throws {
        guard (tcp == nil) != (http == nil) else { throw ValidationError("give one of --tcp and --http") }
        for port in [tcp, http].compactMap({ $0 }) where !(1...65535).contains(port) {
            throw ValidationError("a port is 1…65535")
        }
        guard (1...60_000).contains(timeoutMs) else { throw ValidationError("--timeout-ms is 1…60000") }
    }

    func run() throws {
        let timeout = Duration.milliseconds(timeoutMs)
        let result =
            if let tcp {
                HealthProbeClient.tcp(port: tcp, timeout: timeout)
            } else {
                HealthProbeClient.http(port: http ?? 0, path: path, timeout: timeout)
            }
        print(result.detail)
        if !result.passed { throw ExitCode.failure }
    }
}

/// `device-agent connector`: the helper the agent starts inside a sandbox's network namespace with `nsenter`, its
/// standard input a Unix socket to the agent. "SOCKET" is answered with a TCP socket made in that namespace, not
/// connected (the agent connects it to 127.0.0.1 itself: a socket keeps the namespace it was made in); "LISTEN
/// ADDRESS PORT" with a socket listening on a loopback ADDRESS:PORT there (a partner's address in the ensemble
/// network); anything else with why not. It ends when the agent closes its end.
struct Connector: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Make sockets for the agent inside a sandbox's network, over standard input (the agent runs it there).",
        shouldDisplay: false)

    func run() throws {
        // Nothing of it goes anywhere: the agent is told only through the socket (and waits for these to close).
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            dup2(null, 1)
            dup2(null, 2)
            if null > 2 { close(null) }
        }
        while true {
            let request: (text: String, descriptor: Int32?)?
            do { request = try DescriptorPassing.receive(over: 0) } catch { throw ExitCode.failure }
            guard let request else { return }
            let parts = request.text.split(separator: " ")
            if parts == ["SOCKET"] {
                // Made here, connected by the agent: a socket keeps the namespace it was made in.
                let socket = socket(
                    AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                    0)
                guard socket >= 0 else {
                    do { try DescriptorPassing.send(String(cString: strerror(errno)), over: 0) } catch {
                        throw ExitCode.failure
                    }
                    continue
                }
                defer { close(socket) }
                do { try DescriptorPassing.send("socket", descriptor: socket, over: 0) } catch {
                    throw ExitCode.failure
                }
                continue
            }
            if parts.count == 3, parts[0] == "LISTEN" {
                switch EnsembleListener.listen(address: String(parts[1]), port: Int(parts[2]) ?? 0) {
                case .success(let socket):
                    defer { close(socket) }
                    do { try DescriptorPassing.send("listening", descriptor: socket, over: 0) } catch {
                        throw ExitCode.failure
                    }
                case .failure(let failure):
                    do { try DescriptorPassing.send(failure.description, over: 0) } catch { throw ExitCode.failure }
                }
                continue
            }
            try? DescriptorPassing.send("a request is SOCKET, or LISTEN ADDRESS PORT", over: 0)
        }
    }
}

/// Where the agent keeps its key and enrollment: `--state-dir`, else `ORRERY_STATE_DIR`, else the system default.
struct StateOptions: ParsableArguments {
    @Option(help: "The agent's state directory (env ORRERY_STATE_DIR).")
    var stateDir: String = ProcessInfo.processInfo.environment["ORRERY_STATE_DIR"] ?? "/var/lib/orrery/device-agent"

    /// The device key, created on first use.
    func key() throws -> SigningKey {
        try FileManager.default.createDirectory(
            atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        do {
            return try KeyFile.readOrCreate(stateDir + "/device.key")
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

/// `device-agent id`: this device's DID (its owner delegates to it).
struct Identity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "id", abstract: "Print this device's DID (creating its key on first use).")

    @OptionGroup var state: StateOptions

    func run() throws {
        print(try state.key().did)
    }
}

/// `device-agent join --registry ADDR --token FILE`.
struct Join: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join a registry with the owner's delegation to this device; the running agent then keeps it live.",
        discussion:
            "TOKEN holds the chain operator → owner → device (e.g. `orrery ucan delegate --to $(device-agent id) --cmd /orrery/registry --proof owner.ucan`)."
    )

    @OptionGroup var state: StateOptions
    @Option(help: "The registry's gRPC address, host:port.") var registry: String
    @Option(help: "The file with the delegation chain to this device.") var token: String
    @Option(help: "The agent's config file (its owner policy).") var config: String = "/etc/orrery/device-agent.json"
    @Option(help: "PEM roots to verify the registry's TLS certificate (plaintext without).") var tlsCa: String?

    func run() async throws {
        let key = try state.key()
        guard let chain = try? String(contentsOfFile: token, encoding: .utf8) else {
            throw ValidationError("cannot read \(token)")
        }
        let enrollment = Enrollment(
            registry: registry, chain: chain.trimmed(), trustRoots: tlsCa)
        let policy: OwnerPolicy
        do { policy = try OwnerPolicy.read(configFile: config) } catch { throw ValidationError("\(error)") }
        let connection: RegistryConnection
        do { connection = try RegistryConnection(enrollment: enrollment, key: key) } catch {
            throw ValidationError("\(error)")
        }
        let device = try await connection.join(
            capabilities: policy.capabilities(of: HostDetector.detect(workDirectory: state.stateDir)))
        try enrollment.write(stateDirectory: state.stateDir)
        print("joined \(device.did) (owner \(device.ownerDid)) at revision \(device.revision)")
    }
}

/// `device-agent leave`.
struct Leave: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Leave the registry (the device drains) and forget the enrollment.")

    @OptionGroup var state: StateOptions

    func run() async throws {
        guard let enrollment = try Enrollment.read(stateDirectory: state.stateDir) else {
            throw ValidationError("this device has not joined (no enrollment in \(state.stateDir))")
        }
        try await RegistryConnection(enrollment: enrollment, key: try state.key()).leave()
        try Enrollment.remove(stateDirectory: state.stateDir)
        print("left")
    }
}

/// `device-agent run-local`: runs one allocation on this host, isolated and limited exactly as the agent runs
/// deployed work, printing its output and then its outcome as JSON.
struct RunLocal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run-local",
        abstract: "Run one allocation (an AllocationSpec in JSON) here, isolated, and print how it ended.")

    @Option(help: "The allocation spec, proto3 JSON (a file, or - for standard input).") var allocation: String
    @Option(help: "Where allocations are kept.") var workRoot =
        FileManager.default.temporaryDirectory.path + "/orrery-run-local"
    @Flag(help: "Run without cgroup limits (when the host gives this user no cgroup).") var noLimits = false

    func run() async throws {
        let data =
            allocation == "-"
            ? Data(readToEnd(STDIN_FILENO)) : try Data(contentsOf: URL(fileURLWithPath: allocation))
        let spec = try Orrery_Orchestrator_V1_AllocationSpec(jsonUTF8Data: data)
        try FileManager.default.createDirectory(atPath: workRoot, withIntermediateDirectories: true)
        let runner = AllocationRunner(root: workRoot, cgroups: noLimits ? nil : ControlGroup.detect())
        let id = "local-" + UUID().uuidString.prefix(8).lowercased()
        try await runner.start(id, spec: spec)
        // Whether what went to stdout so far ends a line: the outcome must start one of its own.
        let stdoutEndsLine = Mutex(true)
        let outcome = try await AllocationMonitor(runner: runner).follow(
            id, startedAt: runner.startedAt(id),
            maxDuration: spec.maxDurationSeconds == 0 ? nil : .seconds(Int(spec.maxDurationSeconds))
        ) { stream, _, chunk in
            // Straight to the descriptor: nothing was printed through stdio before the outcome below.
            _ = systemWrite(stream == "stdout" ? STDOUT_FILENO : STDERR_FILENO, [UInt8](chunk))
            if stream == "stdout", let last = chunk.last { stdoutEndsLine.withLock { $0 = last == UInt8(ascii: "\n") } }
        }
        if !stdoutEndsLine.withLock({ $0 }) { print() }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(outcome), as: UTF8.self))
        print("work directory: \(runner.directory(id))/work")
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode > 255 ? 1 : outcome.exitCode) }
    }
}
