internal import Foundation
internal import NIOCore
internal import Synchronization

/// The service side of one ingress connection: the responses coming back over the tunnel, followed as they pass
/// to the client (`HTTPResponseTracker`), and who waits for them to reach a point — every response sent, an upgrade
/// decided, the tunnel gone.
final class IngressBackend: Sendable {
    private struct State {
        var tracker = HTTPResponseTracker()
        var ended = false
        var failure: HTTPFramingError?
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let toClient: any IngressClientOutput

    init(toClient: any IngressClientOutput) { self.toClient = toClient }

    /// A request was forwarded: its response comes next in line.
    func expect(_ request: HTTPResponseTracker.Request) { state.withLock { $0.tracker.expect(request) } }

    /// The service's bytes, passed on to the client once followed; bytes that are not a response to a forwarded
    /// request end the tunnel (thrown).
    func deliver(_ data: Data) async throws {
        let output: ByteBuffer
        do {
            output = try state.withLock { state throws(HTTPFramingError) in
                try state.tracker.consume(ByteBuffer(bytes: data))
            }
        } catch {
            state.withLock { $0.failure = error }
            wake()
            throw error
        }
        if output.readableBytes > 0 { try await toClient.write(output) }
        wake()
    }

    /// The tunnel ended: nothing more comes back.
    func end() {
        state.withLock { $0.ended = true }
        wake()
    }

    var isEnded: Bool { state.withLock { $0.ended || $0.failure != nil } }
    var isSwitched: Bool { state.withLock { $0.tracker.isSwitched } }
    /// Requests forwarded and not answered in full.
    var pendingCount: Int { state.withLock { $0.tracker.pending.count } }
    /// A response ends only when the service closes its connection.
    var endsAtClose: Bool { state.withLock { $0.tracker.endsAtClose } }

    /// Waits until every forwarded request was answered in full (true), or the tunnel ended first (false).
    func waitUntilAnswered() async -> Bool {
        await waitUntil { $0.tracker.isIdle || $0.ended || $0.failure != nil }
        return state.withLock { $0.tracker.isIdle && !$0.ended && $0.failure == nil }
    }

    /// Waits for the answer to the upgrade request forwarded last: switched (true) or not (false; also when the
    /// tunnel ended first).
    func waitForUpgrade() async -> Bool {
        await waitUntil { $0.tracker.upgradeAccepted != nil || $0.ended || $0.failure != nil }
        return state.withLock { $0.tracker.upgradeAccepted == true && $0.failure == nil }
    }

    /// Waits until fewer than `limit` requests await their responses (or the tunnel ended).
    func waitUntilFewerPending(than limit: Int) async {
        await waitUntil { $0.tracker.pending.count < limit || $0.ended || $0.failure != nil }
    }

    private func waitUntil(_ condition: (State) -> Bool) async {
        while !state.withLock({ condition($0) }) {
            await withCheckedContinuation { continuation in
                let done = state.withLock { state -> Bool in
                    if condition(state) { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
        }
    }

    private func wake() {
        let waiters = state.withLock { state in
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
