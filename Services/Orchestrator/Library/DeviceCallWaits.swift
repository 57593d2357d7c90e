internal import GRPCCore
internal import Synchronization

/// Callers waiting, each for the call a device opens for it when asked on its line (a `Tunnel` for a port-forward or
/// the ingress, an `ExecSession` for an exec): registered before the device is asked, so an answer never finds
/// nobody waiting; bounded in time; given up when the caller is cancelled.
final class DeviceCallWaits<Pending: Sendable, Answer: Sendable>: Sendable {
    private struct Entry {
        var device: String
        var pending: Pending
        var continuation: CheckedContinuation<Answer, any Error>
    }

    private let table = Mutex<[String: Entry]>([:])

    /// Registers a wait for `device`'s call `id` (with `pending`, what the answer needs), then runs `ask` (sends the
    /// request on the line); the answer, or `timeout`'s error after `limit`.
    func wait(
        for id: String, device: String, pending: Pending, within limit: Duration, timeout: RPCError,
        ask: () -> Void
    ) async throws -> Answer {
        let expiry = Task {
            try await Task.sleep(for: limit)
            self.fail(id, timeout)
        }
        defer { expiry.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                table.withLock { $0[id] = Entry(device: device, pending: pending, continuation: continuation) }
                ask()
            }
        } onCancel: {
            self.fail(id, CancellationError())
        }
    }

    /// The wait for `device`'s call `id`, taken out (nil when nobody waits for it from that device): what it needs,
    /// and how to answer it.
    func take(_ id: String, device: String) -> (pending: Pending, answer: CheckedContinuation<Answer, any Error>)? {
        table.withLock { table in
            guard table[id]?.device == device, let entry = table.removeValue(forKey: id) else { return nil }
            return (entry.pending, entry.continuation)
        }
    }

    /// Whether someone waits for call `id`.
    func waits(for id: String) -> Bool { table.withLock { $0[id] != nil } }

    private func fail(_ id: String, _ error: any Error) {
        table.withLock { $0.removeValue(forKey: id) }?.continuation.resume(throwing: error)
    }
}
