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

/// Ends a gRPC connection that is idle or silent, on its event loop:
/// - idle: no call open for `idleLimit` — the connection is asked to quiesce (GOAWAY, then closed once its calls
///   are done, or after gRPC's grace time), as gRPC's own `maxIdleTime` would; still open with no call
///   `quiesceLimit` later, it is closed outright. That timer is not used because
///   grpc-swift-nio-transport 2.9 never releases it when the connection closes (its handler and timer keep each
///   other alive: about 275 bytes lost per connection).
/// - silent: nothing at all has arrived for `silenceLimit` — a socket that never speaks (no HTTP/2 preface), or a
///   peer that stopped answering — the connection is closed outright. A live gRPC peer is never silent that long,
///   since the server pings it after `keepalive` of silence and its acknowledgement is a read.
///
/// It also pauses reading when the `ConnectionTarpit` asks (the connection's source is refused by the
/// failed-authentication throttle): reads asked for meanwhile are held and issued when the pause ends.
final class ConnectionIdleGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = Any
    typealias OutboundOut = Any

    private let idleLimit: TimeAmount
    private let silenceLimit: TimeAmount
    private let quiesceLimit: TimeAmount
    private let tarpit: ConnectionTarpit?
    private var quiescedAt: NIODeadline?
    private var peer: String?
    private var context: ChannelHandlerContext?
    private var pausedUntil: NIODeadline?
    private var readHeld = false
    private var lastRead = NIODeadline.now()
    private var idleSince: NIODeadline? = .now()
    private var openCalls = 0
    private var quiescing = false
    private var check: Scheduled<Void>?

    /// - Parameter quiesceLimit: How long a connection asked to leave may stay with no call open before it is
    ///   closed outright (gRPC closes it sooner once the peer acknowledges the GOAWAY's ping; a peer that never does
    ///   — one dripping a HEADERS frame a byte at a time, say — would otherwise stay).
    init(
        idleLimit: Duration, silenceLimit: Duration, quiesceLimit: Duration = .seconds(15),
        tarpit: ConnectionTarpit? = nil
    ) {
        self.idleLimit = TimeAmount(idleLimit)
        self.silenceLimit = TimeAmount(silenceLimit)
        self.quiesceLimit = TimeAmount(quiesceLimit)
        self.tarpit = tarpit
    }

    /// Counts the call carried by `stream` (an HTTP/2 stream channel of this guard's connection) until it closes.
    static func track(stream: any Channel) {
        guard let connection = stream.parent else { return }
        stream.eventLoop.assertInEventLoop()
        guard let guardHandler = try? connection.pipeline.syncOperations.handler(type: ConnectionIdleGuard.self)
        else { return }
        guardHandler.callOpened()
        stream.closeFuture.assumeIsolated().whenComplete { _ in guardHandler.callClosed() }
    }

    private func callOpened() {
        openCalls += 1
        idleSince = nil
    }

    private func callClosed() {
        openCalls -= 1
        if openCalls == 0 { idleSince = .now() }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastRead = .now()
        idleSince = .now()
        schedule(context)
        if let tarpit, let peer = OrreryRequestContext.peer(of: context.channel.remoteAddress) {
            self.peer = peer
            tarpit.register(self, peer: peer, eventLoop: context.eventLoop)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        forget()
    }

    private func forget() {
        if let tarpit, let peer { tarpit.unregister(peer: peer) }
        peer = nil
        context = nil
    }

    /// Holds every read asked for during `duration`; the last one asked is issued when it ends.
    func pauseReading(for duration: Duration) {
        guard let context, context.channel.isActive else { return }
        let until = NIODeadline.now() + TimeAmount(duration)
        if let pausedUntil, pausedUntil >= until { return }
        pausedUntil = until
        context.eventLoop.assumeIsolated().scheduleTask(deadline: until) { [self] in
            guard let pausedUntil, NIODeadline.now() >= pausedUntil else { return }
            self.pausedUntil = nil
            if readHeld, let context = self.context {
                readHeld = false
                context.read()
            }
        }
    }

    func read(context: ChannelHandlerContext) {
        if pausedUntil != nil {
            readHeld = true
            return
        }
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        forget()
        context.fireChannelInactive()
    }

    private func schedule(_ context: ChannelHandlerContext) {
        var due = lastRead + silenceLimit
        if !quiescing, let idleSince { due = min(due, idleSince + idleLimit) }
        if let quiescedAt { due = min(due, quiescedAt + quiesceLimit) }
        check = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [self] in
            guard context.channel.isActive else { return }
            let now = NIODeadline.now()
            if now >= lastRead + silenceLimit {
                context.close(promise: nil)
                return
            }
            if let quiescedAt, now >= quiescedAt + quiesceLimit {
                if openCalls == 0 {
                    context.close(promise: nil)
                    return
                }
                self.quiescedAt = nil  // calls began after all: gRPC's own grace ends them
            }
            if !quiescing, let idleSince, now >= idleSince + idleLimit {
                quiescing = true
                quiescedAt = now
                context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
            schedule(context)
        }
    }
}
