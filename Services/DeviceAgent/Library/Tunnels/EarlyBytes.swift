internal import NIOCore
internal import Synchronization

/// A sandbox's new connection to an ensemble partner waits a moment for its first bytes, so that they ride with the
/// `peer` frame (and the partner device's `open`) instead of following a round trip later: a request on a new
/// connection then costs two message hops fewer. The wait is learnt per listening port: a port whose connections do
/// not speak first (a server-first protocol: SMTP, MySQL …) stops waiting after one such connection, and starts
/// again once a connection there sends bytes before any came back to it (a client-first protocol whose client was
/// slow once).
final class EarlyBytesHabit: Sendable {
    /// How long a connection's first bytes are waited for, from the moment it is active on the agent's loop.
    static let wait = TimeAmount.milliseconds(2)
    private let speaksFirst = Mutex(true)

    /// Whether connections to this port send their first bytes at once (so a new one is waited for).
    var waits: Bool { speaksFirst.withLock { $0 } }

    func learn(speaksFirst value: Bool) { speaksFirst.withLock { $0 = value } }
}

/// The first handler of an accepted sandbox connection: when its port's connections speak first, it takes the
/// connection's first bytes (at most 64 KiB; the rest goes on) when they come within `EarlyBytesHabit.wait` of the
/// connection going active, and hands them to `firstBytes` instead of passing them on; otherwise, or once the wait is
/// over, every byte passes. Either way it tells the habit what it saw: a connection not waited for spoke first when
/// its first bytes came before any byte went to it. Runs on the channel's event loop only.
final class EarlyBytesHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let habit: EarlyBytesHabit
    private let waiting: Bool
    private let promise: EventLoopPromise<Outcome>
    private var timeout: Scheduled<Void>?
    private var active = false
    /// Whether a byte went to the sandbox's side before its first bytes came.
    private var answeredFirst = false
    /// Whether the first bytes (or the wait's end) were seen.
    private var settled = false

    /// What became of a connection's first bytes.
    enum Outcome: Sendable {
        /// Taken: they ride in the first frame.
        case early(ByteBuffer)
        /// Waited for, and they did not come within the wait (a server-first protocol, or a slow client).
        case late
        /// Not waited for: this port's connections do not speak first.
        case notWaited
        /// The connection closed (or its side ended) before a byte.
        case closed
    }

    /// What became of the connection's first bytes, once known (at once when nobody waits on this port).
    var firstBytes: EventLoopFuture<Outcome> { promise.futureResult }

    init(habit: EarlyBytesHabit, eventLoop: any EventLoop) {
        self.habit = habit
        waiting = habit.waits
        promise = eventLoop.makePromise()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Nothing is waited for; its first bytes only teach the habit.
        if !waiting { promise.succeed(.notWaited) }
        if context.channel.isActive { started(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        started(context)
        context.fireChannelActive()
    }

    /// The connection is active: the wait (if any) begins.
    private func started(_ context: ChannelHandlerContext) {
        guard !active else { return }
        active = true
        guard waiting else { return }
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: EarlyBytesHabit.wait) { [self] in
            settle(.late, spokeFirst: false)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) { settle(.closed) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !settled else {
            context.fireChannelRead(data)
            return
        }
        var buffer = unwrapInboundIn(data)
        guard waiting else {
            settle(.notWaited, spokeFirst: !answeredFirst)
            context.fireChannelRead(wrapInboundOut(buffer))
            return
        }
        let early = buffer.readSlice(length: min(buffer.readableBytes, SandboxTunnels.frameLimit)) ?? ByteBuffer()
        settle(.early(early), spokeFirst: true)
        if buffer.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(buffer)) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if !settled { answeredFirst = true }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        settle(.closed)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Its side closed before a byte: nothing rides early.
        if case ChannelEvent.inputClosed = event { settle(.closed) }
        context.fireUserInboundEventTriggered(event)
    }

    /// The first bytes came (taken, when `.early`), the wait ended, or the connection closed: from here every byte
    /// passes.
    private func settle(_ outcome: Outcome, spokeFirst: Bool? = nil) {
        guard !settled else { return }
        settled = true
        timeout?.cancel()
        if let spokeFirst { habit.learn(speaksFirst: spokeFirst) }
        // Without a wait it was answered (`notWaited`) when the handler was added.
        if waiting { promise.succeed(outcome) }
    }
}
