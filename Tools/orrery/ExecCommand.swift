import ArgumentParser
import Dispatch
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf

/// `orrery exec DEP ALLOCATION[/REPLICA] -- COMMAND…`: runs a command inside a running replica's sandbox (as
/// `kubectl exec` does), on a fresh terminal when this one is a terminal, and exits with its exit status.
struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command inside a running replica's sandbox.",
        discussion: """
            The command runs as the workload's user, with no capabilities and no new privileges, inside the \
            sandbox's namespaces and cgroup (and an image's seccomp filter). With a terminal on both standard input \
            and output (or --tty) it gets a fresh terminal of its own, and this one is switched to raw mode while it \
            runs; otherwise standard input, output and error are carried as they are. As the deployment's consumer \
            no chain is needed; someone the consumer delegated /orrery/exec/run (or /orrery/exec) to passes that \
            delegation with --chain. Each session is logged in the notary's log (the command only by its SHA-256).
            """)

    @Argument(help: "The deployment (dep_…).") var id: String
    @Argument(help: "ALLOCATION[/REPLICA]: without /REPLICA a running one (a healthy one first).") var target: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []
    @Option(
        name: .customLong("orchestrator"),
        help: "The orchestrator, host:port (default: the context's, else 127.0.0.1:7403).")
    var orchestratorFlag: String?
    @Option(name: .customLong("key"), help: "Your key file (default: $ORRERY_KEY, else the context's).")
    var keyFlag: String?
    @OptionGroup var tls: TLSOptions
    @Option(help: "A file with your delegation from the deployment's consumer (repeatable, root first).")
    var chain: [String] = []
    @Flag(
        name: [.customShort("t"), .long],
        help: "Give the command a terminal (the default when standard input and output are terminals).")
    var tty = false
    @Flag(name: [.customShort("T"), .customLong("no-tty")], help: "Give the command no terminal, even from one.")
    var noTTY = false
    @Flag(name: .shortAndLong, help: "Print the session id and its entry in the notary's log on standard error.")
    var verbose = false

    /// The replica's side as parsed from `target`.
    static func parse(_ text: String) -> (allocation: String, replica: UInt32?)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), !parts[0].isEmpty else { return nil }
        guard parts.count == 2 else { return (String(parts[0]), nil) }
        guard let replica = UInt32(parts[1]) else { return nil }
        return (String(parts[0]), replica)
    }

    func validate() throws {
        try CLISettings.requireKey(keyFlag)
        guard id.hasPrefix("dep_") else { throw ValidationError("'\(id)' is not a deployment id (dep_…)") }
        guard Self.parse(target) != nil else {
            throw ValidationError("'\(target)' is not ALLOCATION[/REPLICA] (e.g. web, web/1)")
        }
        guard !command.isEmpty else { throw ValidationError("give the command after --, e.g. -- ls -l /work") }
        guard !(tty && noTTY) else { throw ValidationError("--tty or --no-tty, not both") }
    }

    func run() async throws {
        guard let (allocation, replica) = Self.parse(target) else { throw ExitCode.validationFailure }
        let address = CLISettings.address(orchestratorFlag, service: "orchestrator")
        guard let target = ServiceAddress(address) else { throw ValidationError("'\(address)' is not host:port") }
        let orchestratorDID = try await ServiceProbe.withClient(target, trustRoots: tls.trustRoots) {
            try DID(try await ServiceProbe.info($0).did)
        }
        let key = try Inputs.key(CLISettings.key(keyFlag) ?? "")
        let proofs = try Inputs.chain(chain)
        let now = Int64(Date().timeIntervalSince1970)
        let invocation = Invocation.issue(
            by: key, subject: proofs.first?.issuer ?? key.did, audience: orchestratorDID,
            command: try Command("/orrery/exec/run"), arguments: ["deployment": .string(id)],
            proofs: proofs.map(\.cid), expiration: now + 120, issuedAt: now)
        let container = try UCANContainer.encodeText([invocation.envelope.bytes] + proofs.map(\.envelope.bytes))
        let terminal = tty || (!noTTY && isatty(STDIN_FILENO) == 1 && isatty(STDOUT_FILENO) == 1)
        let start = Orrery_Orchestrator_V1_ExecStart.with {
            $0.deploymentID = id
            $0.allocation = allocation
            if let replica { $0.replica = replica }
            $0.command = command
            $0.tty = terminal
            if terminal {
                if let size = LocalTerminal.size() { $0.size = size }
                $0.term = ProcessInfo.processInfo.environment["TERM"] ?? "xterm"
            }
        }
        let raw = terminal && isatty(STDIN_FILENO) == 1 ? LocalTerminal.makeRaw() : nil
        defer { raw?.restore() }
        let exit = try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: target.target, transportSecurity: ServiceProbe.security(trustRoots: tls.trustRoots),
                config: ServiceProbe.prompt)
        ) { client in
            try await Orrery_Orchestrator_V1_Orchestrator.Client(wrapping: client).exec(
                metadata: Self.authorization(container),
                requestProducer: { writer in
                    try await writer.write(.with { $0.start = start })
                    try await Self.sendInput(to: writer, terminal: terminal)
                },
                onResponse: { response in
                    var exit: Orrery_Orchestrator_V1_ExecExit?
                    for try await message in response.messages {
                        switch message.kind {
                        case .started(let started):
                            if verbose {
                                Console.progress(
                                    "exec session \(started.sessionID) (invocation \(started.invocationCid)) in \(allocation)/\(started.replica) on \(started.deviceDid)"
                                )
                            }
                        case .stdout(let data): Console.write(data)
                        case .stderr(let data): Console.write(data, errorStream: true)
                        case .exit(let ended): exit = ended
                        case nil: continue
                        }
                    }
                    return exit
                })
        }
        raw?.restore()
        guard let exit else { throw WrongService(description: "the session ended without an exit status") }
        if exit.hasLogIndex, verbose {
            Console.progress("logged in the notary's log as entry \(exit.logIndex)")
        } else if !exit.logError.isEmpty {
            Console.progress("orrery exec: \(exit.logError)")
        }
        if exit.exitCode != 0 { throw ExitCode(exit.exitCode) }
    }

    static func authorization(_ container: String) -> Metadata {
        var metadata = Metadata()
        metadata.addString("Bearer " + container, forKey: "authorization")
        return metadata
    }

    /// Standard input in messages of at most 64 KiB until it ends (then `stdin_end`), and terminal resizes while a
    /// terminal is used; it returns when input ended (the call stays open for the output).
    static func sendInput(to writer: RPCWriter<Orrery_Orchestrator_V1_ExecRequest>, terminal: Bool) async throws {
        let input = StandardInputReader()
        try await withThrowingTaskGroup(of: Void.self) { group in
            if terminal {
                group.addTask {
                    for await size in LocalTerminal.resizes() {
                        try await writer.write(.with { $0.resize = size })
                    }
                }
            }
            group.addTask {
                for await chunk in input.chunks {
                    try await writer.write(.with { $0.stdin = chunk })
                    input.taken()
                }
                try Task.checkCancellation()
                try await writer.write(.with { $0.stdinEnd = true })
            }
            // Input ending ends nothing else: the resizes go on until the call ends (this task is cancelled then).
            try await group.next()
            if terminal { try await group.next() }
        }
    }
}

/// Reads standard input on a thread of its own, one chunk at a time: the next read waits until the last chunk was
/// taken, so a large input is never held in memory.
final class StandardInputReader: Sendable {
    let chunks: AsyncStream<Data>
    private let semaphore = DispatchSemaphore(value: 0)

    init() {
        let (stream, continuation) = AsyncStream<Data>.makeStream()
        chunks = stream
        let taken = semaphore
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let count = read(STDIN_FILENO, &buffer, buffer.count)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { break }
                continuation.yield(Data(buffer[0..<count]))
                taken.wait()
            }
            continuation.finish()
        }
    }

    /// The last chunk was sent: read the next.
    func taken() { semaphore.signal() }
}

/// This process's terminal: its size, raw mode, and its resizes.
enum LocalTerminal {
    static func size() -> Orrery_Orchestrator_V1_TerminalSize? {
        var window = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &window) == 0, window.ws_row > 0, window.ws_col > 0 else {
            return nil
        }
        return .with {
            $0.rows = UInt32(min(window.ws_row, 1000))
            $0.columns = UInt32(min(window.ws_col, 1000))
        }
    }

    /// The terminal's settings before raw mode, to restore.
    final class Saved: Sendable {
        private let settings: termios
        init(_ settings: termios) { self.settings = settings }
        func restore() {
            var settings = settings
            _ = tcsetattr(STDIN_FILENO, TCSADRAIN, &settings)
        }
    }

    /// Switches standard input's terminal to raw mode (the remote terminal does the editing and the signals).
    static func makeRaw() -> Saved? {
        var settings = termios()
        guard tcgetattr(STDIN_FILENO, &settings) == 0 else { return nil }
        let saved = Saved(settings)
        cfmakeraw(&settings)
        _ = tcsetattr(STDIN_FILENO, TCSADRAIN, &settings)
        return saved
    }

    /// The terminal's new size after each SIGWINCH.
    static func resizes() -> AsyncStream<Orrery_Orchestrator_V1_TerminalSize> {
        AsyncStream { continuation in
            signal(SIGWINCH, SIG_IGN)
            let watch = SignalWatch(DispatchSource.makeSignalSource(signal: SIGWINCH, queue: .global()))
            watch.source.setEventHandler { if let size = size() { continuation.yield(size) } }
            continuation.onTermination = { _ in watch.source.cancel() }
            watch.source.resume()
        }
    }

    /// A signal source, used only through Dispatch's own thread-safe calls.
    private final class SignalWatch: @unchecked Sendable {
        let source: any DispatchSourceSignal
        init(_ source: any DispatchSourceSignal) { self.source = source }
    }
}
