#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import Synchronization

/// The serving status of each gRPC service of this process ("" is the server as a whole), and the watchers that
/// follow it. Shared by the health service, `/healthz` and the shutdown path.
public final class HealthStatusBook: Sendable {
    /// A service's status.
    public enum Status: Sendable, Equatable {
        case serving, notServing, unknown
    }

    private struct State {
        var statuses: [String: Status] = [:]
        var watchers: [UUID: (service: String, continuation: AsyncStream<Status>.Continuation)] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Sets the status of `service` and tells its watchers when it changed.
    public func set(_ status: Status, for service: String) {
        let toNotify = state.withLock { state -> [AsyncStream<Status>.Continuation] in
            guard state.statuses[service] != status else { return [] }
            state.statuses[service] = status
            return state.watchers.values.filter { $0.service == service }.map(\.continuation)
        }
        for continuation in toNotify { continuation.yield(status) }
    }

    /// Sets every known service, and the server, to `status` (e.g. not serving while shutting down).
    public func setAll(_ status: Status) {
        let services = state.withLock { Array($0.statuses.keys) }
        for service in services { set(status, for: service) }
    }

    /// The status of `service`, or nil when the server does not know it.
    public func status(of service: String) -> Status? {
        state.withLock { $0.statuses[service] }
    }

    /// Every known service and its status.
    public var all: [String: Status] {
        state.withLock { $0.statuses }
    }

    /// The status of the server as a whole.
    public var overallStatus: Status {
        status(of: "") ?? .unknown
    }

    /// The current status of `service` (`.unknown` when unknown), then every change, until the consumer stops.
    public func watch(_ service: String) -> AsyncStream<Status> {
        let (stream, continuation) = AsyncStream<Status>.makeStream(bufferingPolicy: .bufferingNewest(16))
        let id = UUID()
        state.withLock { state in
            continuation.yield(state.statuses[service] ?? .unknown)
            state.watchers[id] = (service, continuation)
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Ends every watch (the server is going away).
    public func finishWatches() {
        let continuations = state.withLock { state in
            defer { state.watchers.removeAll() }
            return state.watchers.values.map(\.continuation)
        }
        for continuation in continuations { continuation.finish() }
    }
}
