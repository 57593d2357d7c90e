#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
#if canImport(Glibc)
    internal import Glibc
#endif
internal import Dispatch
internal import OrreryBasics
internal import Synchronization

/// Opens TCP connections to ports inside sandboxes, which the agent's own network namespace cannot reach. For each
/// sandbox one helper runs inside its network namespace — the agent's `connector` command, started there by
/// `nsenter` with a Unix socket pair as its standard input — and answers each request ("PORT TIMEOUT_MS") with the
/// connected socket (`SCM_RIGHTS`) or why it could not connect. The agent then owns the connection. A helper ends
/// when the agent closes its end (`forget`, the agent's own exit); a sandbox started again (a restart in place) has
/// a new namespace and gets a new helper.
final class SandboxConnector: Sendable {
    let nsenter: String
    let agentExecutable: String

    /// A helper: the namespace it serves (and the sandbox process it was found by), the agent's end of its socket,
    /// and the queue its requests go through one at a time (each request's answer is the next message).
    private final class Helper: Sendable {
        let namespace: String
        let member: Int32
        let socket: Int32
        let queue: DispatchQueue

        init(namespace: String, member: Int32, socket: Int32) {
            self.namespace = namespace
            self.member = member
            self.socket = socket
            queue = DispatchQueue(label: "orrery.sandbox-connector")
        }

        func close() { _ = Glibc.close(socket) }
    }

    private let helpers = Mutex<[String: Helper]>([:])

    init(nsenter: String = "/usr/bin/nsenter", agentExecutable: String = SandboxProbe.ownExecutable()) {
        self.nsenter = nsenter
        self.agentExecutable = agentExecutable
    }

    /// A connected, non-blocking socket to `port` inside the sandbox of allocation `id`; `member` finds one of its
    /// processes (asked only when the sandbox has no helper yet, or a new namespace).
    func connect(_ id: String, member: () -> Int32?, port: Int, timeout: Duration) async throws -> Int32 {
        try await ask(id, member: member, "\(port) \(SandboxProbe.milliseconds(timeout))")
    }

    /// A socket listening on loopback `address`:`port` inside the sandbox of allocation `id` (one of whose processes
    /// is `member`): made there, so it takes the sandbox's connections wherever the agent accepts them.
    func listen(_ id: String, member: Int32, address: String, port: Int) async throws -> Int32 {
        try await ask(id, member: { member }, "LISTEN \(address) \(port)")
    }

    /// The descriptor the helper of `id`'s sandbox answers `request` with. The helper already serving it is used
    /// while the process it was found by still lives in its namespace (one link read); otherwise `member` finds the
    /// sandbox's namespace again.
    private func ask(_ id: String, member: () -> Int32?, _ request: String) async throws -> Int32 {
        for attempt in 0..<2 {
            let helper: Helper
            if attempt == 0, let current = helpers.withLock({ $0[id] }),
                SandboxProbe.namespace("net", of: current.member) == current.namespace
            {
                helper = current
            } else {
                guard let member = member() else {
                    throw ConnectFailure(description: "no process of its sandbox runs")
                }
                guard let namespace = SandboxProbe.namespace("net", of: member) else {
                    throw ConnectFailure(description: "its sandbox's network cannot be read")
                }
                helper = try await self.helper(for: id, namespace: namespace, member: member)
            }
            do {
                return try await self.request(helper, text: request)
            } catch let failure as HelperGone where attempt == 0 {
                // It ended (killed with the sandbox, or never started): a new one, once.
                _ = failure
                forget(id, only: helper)
            }
        }
        throw ConnectFailure(description: "the connector in its sandbox does not answer")
    }

    /// Ends the helper of allocation `id` (it ended, or its sandbox was started again).
    func forget(_ id: String) {
        helpers.withLock { $0.removeValue(forKey: id) }?.close()
    }

    private func forget(_ id: String, only helper: Helper) {
        let removed = helpers.withLock { table -> Helper? in
            guard table[id] === helper else { return nil }
            return table.removeValue(forKey: id)
        }
        removed?.close()
    }

    /// The helper serving `namespace` for `id`, started when there is none (or only one for an earlier namespace).
    private func helper(for id: String, namespace: String, member: Int32) async throws -> Helper {
        let (current, stale) = helpers.withLock { table -> (Helper?, Helper?) in
            guard let existing = table[id] else { return (nil, nil) }
            if existing.namespace == namespace { return (existing, nil) }
            table.removeValue(forKey: id)
            return (nil, existing)
        }
        stale?.close()
        if let current { return current }
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw ConnectFailure(description: "cannot make a socket pair: \(String(cString: strerror(errno)))")
        }
        let helper = Helper(namespace: namespace, member: member, socket: pair[0])
        // Detached (`setsid -f`: reaped by init, not waited for here); this returns once the helper closed its
        // standard output and error, its first act.
        do {
            defer { Glibc.close(pair[1]) }
            _ = try await ChildCommand.run(
                "/usr/bin/setsid",
                ["-f", nsenter] + SandboxProbe.enteringNetwork(of: member) + [agentExecutable, "connector"],
                captureOutput: false, standardInput: pair[1])
        } catch {
            helper.close()
            throw ConnectFailure(description: "cannot start the connector in its sandbox: \(error)")
        }
        let winner = helpers.withLock { table -> Helper in
            if let raced = table[id], raced.namespace == namespace { return raced }
            table[id] = helper
            return helper
        }
        if winner !== helper { helper.close() }
        return winner
    }

    /// One request to `helper`, answered with a descriptor or a reason.
    private func request(_ helper: Helper, text: String) async throws -> Int32 {
        try await withCheckedThrowingContinuation { continuation in
            helper.queue.async {
                do {
                    try DescriptorPassing.send(text, over: helper.socket)
                } catch {
                    continuation.resume(throwing: HelperGone())
                    return
                }
                let answer: (text: String, descriptor: Int32?)?
                do {
                    answer = try DescriptorPassing.receive(over: helper.socket)
                } catch {
                    continuation.resume(throwing: HelperGone())
                    return
                }
                guard let answer else {
                    continuation.resume(throwing: HelperGone())
                    return
                }
                if let descriptor = answer.descriptor {
                    continuation.resume(returning: descriptor)
                } else {
                    continuation.resume(throwing: ConnectFailure(description: answer.text))
                }
            }
        }
    }

    /// The helper ended or never answered.
    private struct HelperGone: Error {}

    /// Why a connection into a sandbox could not be made.
    struct ConnectFailure: Error, CustomStringConvertible {
        let description: String
    }
}
