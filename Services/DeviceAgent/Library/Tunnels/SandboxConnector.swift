#if canImport(Glibc)
    internal import Glibc
#endif
internal import OrreryBasics

/// Opens TCP connections to ports inside a sandbox, which the agent's own network namespace cannot reach: the agent's
/// `connect` command, started in the sandbox's network namespace by `nsenter`, connects to 127.0.0.1 there and passes
/// the connected socket back over a Unix socket pair (its standard input). The agent then owns the connection; the
/// helper has ended.
struct SandboxConnector: Sendable {
    var nsenter = "/usr/bin/nsenter"
    var agentExecutable = SandboxProbe.ownExecutable()

    /// A connected, non-blocking socket to `port` inside the sandbox one of whose processes is `member`.
    func connect(member: Int32, port: Int, timeout: Duration) async throws -> Int32 {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw ConnectFailure(description: "cannot make a socket pair: \(String(cString: strerror(errno)))")
        }
        defer { close(pair[0]) }
        let outcome: ChildCommand.Outcome
        do {
            defer { close(pair[1]) }
            outcome = try await ChildCommand.run(
                nsenter,
                SandboxProbe.enteringNetwork(of: member) + [
                    agentExecutable, "connect", "--port", String(port), "--timeout-ms",
                    String(SandboxProbe.milliseconds(timeout)),
                ],
                standardInput: pair[1])
        }
        guard outcome.status == 0 else {
            let said = String(decoding: outcome.output, as: UTF8.self).trimmed()
            throw ConnectFailure(
                description: said.isEmpty ? "the connection could not be made: \(outcome.errorText)" : said)
        }
        do {
            return try DescriptorPassing.receive(over: pair[0])
        } catch {
            throw ConnectFailure(description: error.description)
        }
    }

    /// Why a connection into a sandbox could not be made.
    struct ConnectFailure: Error, CustomStringConvertible {
        let description: String
    }
}
