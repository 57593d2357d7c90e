internal import Metrics
public import NIOCore
internal import Synchronization
#if canImport(Glibc)
    internal import Glibc
#endif

/// How many connections one process holds open, across its gRPC and HTTP listeners: a connection past the limit is
/// closed as soon as it is accepted, so idle or abusive peers cannot take the memory valid callers need.
public final class ConnectionBudget: Sendable {
    /// The most connections open at once.
    public let limit: Int
    private let open = Atomic<Int>(0)
    private let refused = Counter(label: "orrery_connections_refused_total")
    private let openGauge = Gauge(label: "orrery_connections_open")

    public init(limit: Int) {
        self.limit = limit
    }

    /// Connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }

    /// Counts `channel` until it closes, or closes it at once when the process is at its limit.
    public func admit(_ channel: any Channel) {
        let (_, now) = open.add(1, ordering: .relaxed)
        guard now <= limit else {
            open.subtract(1, ordering: .relaxed)
            refused.increment()
            channel.close(promise: nil)
            return
        }
        openGauge.record(now)
        channel.closeFuture.whenComplete { [self] _ in
            let (_, left) = open.subtract(1, ordering: .relaxed)
            openGauge.record(left)
        }
    }
}

/// Admits each HTTP connection against the process's `ConnectionBudget` when it is set up (Hummingbird adds it to
/// every connection's pipeline); it passes everything through.
final class ConnectionBudgetHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = Any
    private let budget: ConnectionBudget

    init(budget: ConnectionBudget) {
        self.budget = budget
    }

    func handlerAdded(context: ChannelHandlerContext) {
        budget.admit(context.channel)
    }
}

/// Closes a connection from which nothing at all has arrived for `limit`: a socket that never speaks (no HTTP/2
/// preface), or a peer that stopped answering. A live gRPC peer is never silent that long, since the server pings it
/// after `keepalive` of silence and its acknowledgement is a read; gRPC's own idle handling only asks a peer to leave
/// (GOAWAY and a ping) and waits for an answer a silent socket never gives.
final class SilentConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let limit: TimeAmount
    private var lastRead = NIODeadline.now()
    private var check: Scheduled<Void>?

    init(limit: Duration) {
        self.limit = TimeAmount(limit)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastRead = .now()
        schedule(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        context.fireChannelInactive()
    }

    private func schedule(_ context: ChannelHandlerContext) {
        let due = lastRead + limit
        check = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [self] in
            guard context.channel.isActive else { return }
            if NIODeadline.now() >= lastRead + limit {
                context.close(promise: nil)
            } else {
                schedule(context)
            }
        }
    }
}

/// Gives memory freed after a burst back to the system: glibc keeps freed heap pages in its arenas, so a process that
/// held thousands of connections stays that large after they close. Every 10 s, once the process holds fewer
/// connections than at the last look, the heap is trimmed (`malloc_trim`, a few milliseconds for a heap this size).
enum MemoryReturn {
    private typealias Trim = @convention(c) (Int) -> Int32
    /// glibc's `malloc_trim`, found at run time (absent from other C libraries).
    private static let trim: Trim? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim").map {
        unsafeBitCast($0, to: Trim.self)
    }

    static func run(budget: ConnectionBudget) async {
        var last = budget.openConnections
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(10))
            let now = budget.openConnections
            if now < last { trim?(0) }
            last = now
        }
    }
}
