#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
#if canImport(Glibc)
    internal import Glibc
#endif
internal import OrreryBasics
internal import OrreryProto

/// Runs a replica's health check where its service listens: inside its sandbox's own network namespace. The agent
/// starts its own `probe` command there through `nsenter` (entering the sandbox's user namespace too when the agent
/// does not own the network one), so the check reaches the sandbox's 127.0.0.1 and nothing of the host's.
struct SandboxProbe: Sendable {
    var nsenter = "/usr/bin/nsenter"
    /// This program (its `probe` command runs the check).
    var agentExecutable: String

    init(agentExecutable: String = SandboxProbe.ownExecutable()) {
        self.agentExecutable = agentExecutable
    }

    /// Runs `check` against the sandbox one of whose processes is `member`, within `timeout`.
    func run(_ check: Orrery_Orchestrator_V1_HealthCheck, timeout: Duration, member: Int32) async
        -> HealthProbeClient
        .Result
    {
        let target: [String] = {
            switch check.probe {
            case .http(let http):
                return ["--http", String(http.port), "--path", http.path.isEmpty ? "/" : http.path]
            case .tcp(let tcp):
                return ["--tcp", String(tcp.port)]
            case .exec, nil:
                // An exec check runs through `SandboxExec.probe`.
                return []
            }
        }()
        guard !target.isEmpty else { return .init(passed: false, detail: "the check names no probe") }
        let arguments =
            Self.enteringNetwork(of: member)
            + [agentExecutable, "probe", "--timeout-ms", String(Self.milliseconds(timeout))] + target
        do {
            let outcome = try await ChildCommand.run(nsenter, arguments)
            let said = String(decoding: outcome.output, as: UTF8.self).trimmed()
            switch outcome.status {
            case 0: return .init(passed: true, detail: said)
            case 1: return .init(passed: false, detail: said)
            default:
                return .init(
                    passed: false,
                    detail: "the check could not run in the sandbox (status \(outcome.status)): \(outcome.errorText)")
            }
        } catch {
            return .init(passed: false, detail: "the check could not run: \(error)")
        }
    }

    /// `nsenter`'s arguments (up to its `--`) that run a command in the network namespace of `member` — entering its
    /// user namespace first when the agent does not own the network one (an agent not run as root).
    static func enteringNetwork(of member: Int32) -> [String] {
        if namespace("user", of: member) != namespace("user", of: getpid()) {
            return ["--target", String(member), "--user", "--preserve-credentials", "--net", "--"]
        }
        return ["--target", String(member), "--net", "--"]
    }

    /// A process of the sandbox of `processes` that is in a network namespace other than the agent's (the
    /// sandbox's), if any still runs.
    static func networkMember(among processes: [Int32]) -> Int32? {
        let own = namespace("net", of: getpid())
        return processes.first { pid in
            guard let theirs = namespace("net", of: pid) else { return false }
            return theirs != own
        }
    }

    /// The processes descending from `root` (its children, theirs, …), read from /proc.
    static func descendants(of root: Int32) -> [Int32] {
        var children: [Int32: [Int32]] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            // "pid (name) state ppid …": the name may hold anything, so read after its last parenthesis.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, let parent = Int32(fields[1]) else { continue }
            children[parent, default: []].append(pid)
        }
        var found: [Int32] = []
        var queue = [root]
        while let next = queue.popLast(), found.count < 10_000 {
            for child in children[next] ?? [] {
                found.append(child)
                queue.append(child)
            }
        }
        return found
    }

    /// The namespace `kind` of `pid` ("net:[4026531992]"), nil when it cannot be read.
    static func namespace(_ kind: String, of pid: Int32) -> String? { linkTarget("/proc/\(pid)/ns/\(kind)") }

    /// The path of the running executable.
    static func ownExecutable() -> String {
        linkTarget("/proc/self/exe") ?? CommandLine.arguments.first ?? "device-agent"
    }

    /// What the symbolic link at `path` points to, nil when it cannot be read.
    private static func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}
