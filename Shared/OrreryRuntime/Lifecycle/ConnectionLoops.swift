public import GRPCCore
public import NIOCore
public import OrreryRuntimeCore
internal import Synchronization

/// The event loop each accepted gRPC connection runs on, found again by the addresses a handler's `ServerContext`
/// names. A call that carries bytes between connections (a tunnel) runs its task there: a frame read from the
/// connection resumes the task on the thread that read it, and its writes to that connection go out without waking
/// another thread.
public enum ConnectionLoops {
    private static let loops = Mutex<[String: EventLoopTaskExecutor]>([:])
    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// Records an accepted connection until it closes.
    static func accepted(_ channel: any Channel) {
        guard let key = key(local: channel.localAddress, remote: channel.remoteAddress) else { return }
        let executor = executor(for: channel.eventLoop)
        loops.withLock { $0[key] = executor }
        channel.closeFuture.whenComplete { _ in
            _ = loops.withLock { $0.removeValue(forKey: key) }
        }
    }

    /// Whether the connection of `context`'s call is known now.
    static func knows(_ context: ServerContext) -> Bool { executor(for: context) != nil }

    /// The executor of the event loop the call of `context` arrived on; nil when it is not known (a connection not
    /// accepted by a `ServiceRunner` server, or a Unix socket).
    public static func executor(for context: ServerContext) -> EventLoopTaskExecutor? {
        loops.withLock { $0[context.localPeer + " " + context.remotePeer] }
    }

    /// The loop the current task runs its connection's work on (set by `onCallLoop` and `onLoop`), if any.
    @TaskLocal public static var current: EventLoopTaskExecutor?

    /// Runs `body` with its task preferring the event loop of the call of `context` (as it would run without it when
    /// that loop is not known).
    public static func onCallLoop<Result: Sendable>(
        of context: ServerContext, _ body: () async throws -> Result
    ) async throws -> Result {
        guard let executor = executor(for: context) else { return try await body() }
        return try await onLoop(executor, body)
    }

    /// Runs `body` with its task preferring `executor`, which `current` names meanwhile.
    public static func onLoop<Result: Sendable>(
        _ executor: EventLoopTaskExecutor, _ body: () async throws -> Result
    ) async rethrows -> Result {
        try await $current.withValue(executor) { try await withTaskExecutorPreference(executor) { try await body() } }
    }

    /// Starts `body` as a task of its own on the current task's loop (the global executor without one): no other
    /// thread is woken to run it.
    @discardableResult
    public static func task<Success: Sendable>(_ body: sending @escaping () async -> Success)
        -> Task<Success, Never>
    {
        Task(executorPreference: current) { await body() }
    }

    /// Calls `action` after `delay` unless the returned timer is cancelled first: a timer of the current task's loop
    /// when it has one (no task, no thread woken), else a sleeping task.
    public static func after(_ delay: Duration, _ action: @escaping @Sendable () -> Void) -> Timer {
        if let loop = current?.eventLoop {
            let nanoseconds = delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000
            let scheduled = loop.scheduleTask(in: .nanoseconds(nanoseconds)) { action() }
            return Timer { scheduled.cancel() }
        }
        let sleeper = Task {
            try await Task.sleep(for: delay)
            action()
        }
        return Timer { sleeper.cancel() }
    }

    /// A pending `after`.
    public struct Timer: Sendable {
        fileprivate let cancelling: @Sendable () -> Void

        /// The action is not called (unless it began already).
        public func cancel() { cancelling() }
    }

    /// One executor per event loop.
    public static func executor(for loop: any EventLoop) -> EventLoopTaskExecutor {
        executors.withLock { executors in
            if let known = executors[ObjectIdentifier(loop)] { return known }
            let made = EventLoopTaskExecutor(loop)
            executors[ObjectIdentifier(loop)] = made
            return made
        }
    }

    /// The addresses as gRPC's `ServerContext` writes them (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`).
    private static func key(local: SocketAddress?, remote: SocketAddress?) -> String? {
        guard let local = describe(local), let remote = describe(remote) else { return nil }
        return local + " " + remote
    }

    private static func describe(_ address: SocketAddress?) -> String? {
        guard let address, let port = address.port else { return nil }
        switch address {
        case .v4(let inet): return "ipv4:\(inet.host):\(port)"
        case .v6(let inet): return "ipv6:[\(inet.host)]:\(port)"
        case .unixDomainSocket: return nil
        }
    }
}
