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
/// `nsenter` with a Unix socket pair as its standard input — and answers each request with a descriptor passed back
/// (`SCM_RIGHTS`) or why it could not make one. A socket keeps the namespace it was made in, so the helper makes
/// sockets ahead of need ("SOCKET", a few at a time) and the agent connects them itself: a new connection costs a
/// connect on loopback, no round trip to the helper. A helper ends when the agent closes its end (`forget`, the
/// agent's own exit); a sandbox started again (a restart in place) has a new namespace and gets a new helper.
final class SandboxConnector: Sendable {
    let nsenter: String
    let agentExecutable: String

    /// Unconnected sockets a helper makes at a time; more are asked for when fewer than half are left.
    static let spareBatch = 8

    /// A helper: the namespace it serves (and the sandbox process it was found by), the agent's end of its socket,
    /// the queue its requests go through one at a time (each request's answer is the next message), and the sockets
    /// it made that are not connected yet.
    private final class Helper: Sendable {
        let namespace: String
        let member: Int32
        let socket: Int32
        let queue: DispatchQueue
        /// Where a connection not made at once is waited for.
        let waits: DispatchQueue
        private let spares = Mutex<(sockets: [Int32], asking: Bool, closed: Bool)>(([], false, false))

        init(namespace: String, member: Int32, socket: Int32) {
            self.namespace = namespace
            self.member = member
            self.socket = socket
            queue = DispatchQueue(label: "orrery.sandbox-connector")
            waits = DispatchQueue(label: "orrery.sandbox-connect-waits")
        }

        /// A socket made ahead of need, and whether more should be asked for now (the caller then asks, once).
        func takeSpare() -> (socket: Int32?, askMore: Bool) {
            spares.withLock { spares in
                let socket = spares.sockets.popLast()
                let askMore = !spares.closed && !spares.asking && spares.sockets.count < SandboxConnector.spareBatch / 2
                if askMore { spares.asking = true }
                return (socket, askMore)
            }
        }

        /// Sockets the helper made (closed at once when the helper is gone); ends an ask.
        func addSpares(_ sockets: [Int32]) {
            let unwanted = spares.withLock { spares -> [Int32] in
                spares.asking = false
                guard !spares.closed else { return sockets }
                spares.sockets += sockets
                return []
            }
            for socket in unwanted { _ = Glibc.close(socket) }
        }

        /// Whether it was closed (read on its queue: its socket is not used after).
        var isClosed: Bool { spares.withLock { $0.closed } }

        /// Closes its sockets, once: the spares at once, its own after the requests already on its queue (none after
        /// reads it, and a second close never comes: a descriptor number is never used once it may belong to
        /// something else).
        func close() {
            let left = spares.withLock { spares -> [Int32]? in
                guard !spares.closed else { return nil }
                defer { spares = ([], false, true) }
                return spares.sockets
            }
            guard let left else { return }
            for socket in left { _ = Glibc.close(socket) }
            queue.async { _ = Glibc.close(self.socket) }
        }
    }

    private let helpers = Mutex<[String: Helper]>([:])

    init(nsenter: String = "/usr/bin/nsenter", agentExecutable: String = SandboxProbe.ownExecutable()) {
        self.nsenter = nsenter
        self.agentExecutable = agentExecutable
    }

    /// A connected, non-blocking socket to `port` inside the sandbox of allocation `id`; `member` finds one of its
    /// processes (asked only when the sandbox has no helper yet, or a new namespace).
    func connect(_ id: String, member: () -> Int32?, port: Int, timeout: Duration) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        let (socket, helper) = try await spareSocket(id, member: member)
        let made: Result<Void, HealthProbeClient.Problem>
        switch HealthProbeClient.begin(socket, port: port) {
        case .success(false): made = .success(())
        // On loopback the answer is there at once, nearly always: when it is not, the sandbox's own thread for such
        // waits waits for it (one thread per sandbox, as many connections as it likes).
        case .success(true) where HealthProbeClient.isSettled(socket):
            made = HealthProbeClient.finish(socket, until: deadline)
        case .success(true):
            made = await withCheckedContinuation { waited in
                helper.waits.async { waited.resume(returning: HealthProbeClient.finish(socket, until: deadline)) }
            }
        case .failure(let problem): made = .failure(problem)
        }
        if case .failure(let problem) = made {
            _ = Glibc.close(socket)
            throw ConnectFailure(description: "tcp \(port): \(problem.text)")
        }
        return socket
    }

    /// A TCP socket made inside the sandbox of allocation `id` and not connected yet: one made ahead of need (more
    /// asked for in the background when they run low), or, when none is left, the next one the helper makes.
    private func spareSocket(_ id: String, member: () -> Int32?) async throws -> (Int32, Helper) {
        for attempt in 0..<2 {
            let helper = try await self.helper(id, member: member, fresh: attempt > 0)
            let (spare, askMore) = helper.takeSpare()
            if askMore {
                helper.queue.async { helper.addSpares(Self.requests(helper, text: "SOCKET", count: Self.spareBatch)) }
            }
            if let spare { return (spare, helper) }
            do {
                return (try await request(helper, text: "SOCKET"), helper)
            } catch let failure as HelperGone where attempt == 0 {
                _ = failure
                forget(id, only: helper)
            }
        }
        throw ConnectFailure(description: "the connector in its sandbox does not answer")
    }

    /// A socket listening on loopback `address`:`port` inside the sandbox of allocation `id` (one of whose processes
    /// is `member`): made there, so it takes the sandbox's connections wherever the agent accepts them.
    func listen(_ id: String, member: Int32, address: String, port: Int) async throws -> Int32 {
        try await ask(id, member: { member }, "LISTEN \(address) \(port)")
    }

    /// The descriptor the helper of `id`'s sandbox answers `request` with (a new helper once, when it is gone).
    private func ask(_ id: String, member: () -> Int32?, _ request: String) async throws -> Int32 {
        for attempt in 0..<2 {
            let helper = try await self.helper(id, member: member, fresh: attempt > 0)
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

    /// The helper serving `id`'s sandbox: the one already serving it while the process it was found by still lives
    /// in its namespace (one link read), unless `fresh`; otherwise `member` finds the sandbox's namespace again.
    private func helper(_ id: String, member: () -> Int32?, fresh: Bool) async throws -> Helper {
        if !fresh, let current = helpers.withLock({ $0[id] }),
            SandboxProbe.namespace("net", of: current.member) == current.namespace
        {
            return current
        }
        guard let member = member() else {
            throw ConnectFailure(description: "no process of its sandbox runs")
        }
        guard let namespace = SandboxProbe.namespace("net", of: member) else {
            throw ConnectFailure(description: "its sandbox's network cannot be read")
        }
        return try await helper(for: id, namespace: namespace, member: member)
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
                continuation.resume(with: Result { try Self.exchange(helper, text: text) })
            }
        }
    }

    /// `count` of the same request to `helper` at once (on its queue), answered with descriptors: as many as it
    /// made (none when it is gone).
    private static func requests(_ helper: Helper, text: String, count: Int) -> [Int32] {
        guard !helper.isClosed else { return [] }
        var sent = 0
        while sent < count, (try? DescriptorPassing.send(text, over: helper.socket)) != nil { sent += 1 }
        var made: [Int32] = []
        // Every answer is read, so that the next request's answer is the next message.
        var answered = 0
        for _ in 0..<sent {
            guard let answer = try? DescriptorPassing.receive(over: helper.socket) else { break }
            answered += 1
            if let descriptor = answer.descriptor { made.append(descriptor) }
        }
        // A helper that left answers unread is not asked again (the next request is answered by `forget`'s
        // successor).
        if answered < sent || sent < count { helper.close() }
        return made
    }

    /// Sends `text` to `helper` and reads its answer (on its queue): the descriptor, or why there is none.
    private static func exchange(_ helper: Helper, text: String) throws -> Int32 {
        guard !helper.isClosed else { throw HelperGone() }
        do { try DescriptorPassing.send(text, over: helper.socket) } catch { throw HelperGone() }
        let answer: (text: String, descriptor: Int32?)?
        do { answer = try DescriptorPassing.receive(over: helper.socket) } catch { throw HelperGone() }
        guard let answer else { throw HelperGone() }
        guard let descriptor = answer.descriptor else { throw ConnectFailure(description: answer.text) }
        return descriptor
    }

    /// The helper ended or never answered.
    private struct HelperGone: Error {}

    /// Why a connection into a sandbox could not be made.
    struct ConnectFailure: Error, CustomStringConvertible {
        let description: String
    }
}
