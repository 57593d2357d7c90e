internal import Metrics
internal import NIOCore
internal import Synchronization

/// Stops reading from connections whose source is refused by the failed-authentication throttle: a refused caller's
/// further calls then wait in its own socket buffer, costing the server nothing, instead of each one being read,
/// decoded and answered. The gRPC connections register themselves (through `ConnectionIdleGuard`) under their peer
/// address in gRPC's notation, which is what the capability check knows the caller by.
public final class ConnectionTarpit: Sendable {
    /// The shortest pause: a flood from one connection is read at most once a second.
    static let minimumPause: Duration = .seconds(1)
    /// The longest pause, so that a connection is never held past what a client waits for an answer.
    static let maximumPause: Duration = .seconds(10)

    private let connections = Mutex<[String: NIOLoopBound<ConnectionIdleGuard>]>([:])
    private let paused = Counter(label: "orrery_connections_paused_total")

    public init() {}

    /// Pauses reading from `peer`'s connection for `duration` (clamped to 1…10 s); nothing if it is not a
    /// registered connection (the HTTP listener's, or already closed).
    public func pause(peer: String, for duration: Duration) {
        guard let connection = connections.withLock({ $0[peer] }) else { return }
        let pause = min(max(duration, Self.minimumPause), Self.maximumPause)
        paused.increment()
        connection.eventLoop.execute { connection.value.pauseReading(for: pause) }
    }

    func register(_ guardHandler: ConnectionIdleGuard, peer: String, eventLoop: any EventLoop) {
        let bound = NIOLoopBound(guardHandler, eventLoop: eventLoop)
        connections.withLock { $0[peer] = bound }
    }

    func unregister(peer: String) {
        connections.withLock { _ = $0.removeValue(forKey: peer) }
    }

    /// Connections registered now (for tests).
    var registeredCount: Int { connections.withLock { $0.count } }
}
