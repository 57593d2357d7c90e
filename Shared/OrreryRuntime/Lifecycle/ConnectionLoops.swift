public import GRPCCore
public import NIOCore
public import OrreryRuntimeCore
internal import Synchronization

/// The event loop each accepted gRPC connection runs on, found again by the addresses a handler's `ServerContext`
/// names. A call that carries bytes between connections (a tunnel) runs its task there: a frame read from the
/// connection resumes the task on the thread that read it, and its writes to that connection go out without waking
/// another thread.
public enum ConnectionLoops {
    /// By the connection's addresses: the connection (so that a closed one forgets only itself) and its loop.
    private static let loops = Mutex<[String: (connection: ObjectIdentifier, executor: EventLoopTaskExecutor)]>([:])
    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// Records an accepted connection until it closes.
    static func accepted(_ channel: any Channel) {
        guard let key = key(local: channel.localAddress, remote: channel.remoteAddress) else { return }
        let connection = ObjectIdentifier(channel)
        let executor = executor(for: channel.eventLoop)
        loops.withLock { $0[key] = (connection, executor) }
        channel.closeFuture.whenComplete { _ in
            // A later connection between the same addresses may have taken the key meanwhile: it stays.
            loops.withLock { loops in
                if loops[key]?.connection == connection { loops[key] = nil }
            }
        }
    }

    /// Whether the connection of `context`'s call is known now.
    static func knows(_ context: ServerContext) -> Bool { executor(for: context) != nil }

    /// The executor of the event loop the call of `context` arrived on; nil when it is not known (a connection not
    /// accepted by a `ServiceRunner` server, or a Unix socket).
    public static func executor(for context: ServerContext) -> EventLoopTaskExecutor? {
        loops.withLock { $0[context.localPeer + " " + context.remotePeer]?.executor }
    }

    /// Runs `body` with its task preferring the event loop of the call of `context` (as it would run without it when
    /// that loop is not known).
    public static func onCallLoop<Result: Sendable>(
        of context: ServerContext, _ body: () async throws -> Result
    ) async throws -> Result {
        guard let executor = executor(for: context) else { return try await body() }
        return try await withTaskExecutorPreference(executor) { try await body() }
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
