internal import Synchronization

/// A gate that opens once and stays open: whoever waits before then is resumed when it opens (or when its task is
/// cancelled), whoever waits after passes at once. It holds a tunnel's device bytes until their consumer is ready, and
/// a session's output until the message that must come first (the caller's `started`, a relay's `opened`) went out.
final class OnceGate: Sendable {
    private struct State {
        var open = false
        var next = 0
        var waiting: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    /// Tasks waiting now (for tests: a waiter is known to wait before the gate opens).
    var waiterCount: Int { state.withLock { $0.waiting.count } }

    /// Opens the gate, now and for good.
    func open() {
        let waiting = state.withLock { state in
            state.open = true
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for waiter in waiting { waiter.resume() }
    }

    /// Returns once the gate is open, or the task is cancelled.
    func wait() async {
        let id = state.withLock { state in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.open || Task.isCancelled { return true }
                    state.waiting[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: id) }?.resume()
        }
    }
}
