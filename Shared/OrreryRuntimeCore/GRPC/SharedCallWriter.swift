public import GRPCCore
internal import Synchronization

/// One call's writer (a server's responses, a client's requests) when tasks of other calls write to it too — a
/// tunnel's device side fed by the consumer's call, and back.
///
/// grpc-swift ends a call's stream when its handler (or request producer) returns, and a message written after that
/// is a fatal error in the transport ("Server can't send a message if it's closed"), which takes the whole process
/// down. So the call's own task closes this writer before it returns (`serving` does it on every path): writes
/// already under way finish first, and later ones fail with `RPCError(.cancelled)` instead of reaching the stream.
public final class SharedCallWriter<Element: Sendable>: Sendable {
    private struct State {
        var closed = false
        var writing = 0
        var drained: [CheckedContinuation<Void, Never>] = []
    }

    private let writer: RPCWriter<Element>
    private let state = Mutex(State())

    public init(_ writer: RPCWriter<Element>) { self.writer = writer }

    /// Runs `body` with `writer` shared, and closes it (waiting for writes under way) however `body` ends.
    public static func serving<Result: Sendable>(
        _ writer: RPCWriter<Element>, _ body: (SharedCallWriter<Element>) async throws -> Result
    ) async throws -> Result {
        let shared = SharedCallWriter(writer)
        let result: Result
        do {
            result = try await body(shared)
        } catch {
            await shared.close()
            throw error
        }
        await shared.close()
        return result
    }

    /// Writes `element`, unless the call's own task closed the writer.
    public func write(_ element: Element) async throws {
        let admitted = state.withLock { state in
            guard !state.closed else { return false }
            state.writing += 1
            return true
        }
        guard admitted else { throw RPCError(code: .cancelled, message: "the call this writes to has ended") }
        defer { writeEnded() }
        try await writer.write(element)
    }

    /// Whether the call's own task closed the writer.
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Refuses every later write and returns once the writes under way ended.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let drainedNow = state.withLock { state in
                state.closed = true
                guard state.writing > 0 else { return true }
                state.drained.append(continuation)
                return false
            }
            if drainedNow { continuation.resume() }
        }
    }

    private func writeEnded() {
        let waiting = state.withLock { state in
            state.writing -= 1
            guard state.closed, state.writing == 0 else { return [CheckedContinuation<Void, Never>]() }
            defer { state.drained = [] }
            return state.drained
        }
        for continuation in waiting { continuation.resume() }
    }
}
