import GRPCCore
import OrreryRuntimeCore
import Synchronization
import Testing

/// A call's writer shared with other calls' tasks: nothing reaches the stream once the call's own task closed it.
@Suite("Shared call writer")
struct SharedCallWriterTests {
    @Test("close waits for a write under way; a write after close fails CANCELLED and never reaches the stream")
    func closeWaitsAndRefuses() async throws {
        let stream = HeldWriter()
        let shared = SharedCallWriter(RPCWriter<Int>(wrapping: stream))
        try await shared.write(1)
        stream.hold()
        let underWay = Task { try await shared.write(2) }
        try await stream.waitUntilHeld()
        let closed = Mutex(false)
        let closing = Task {
            await shared.close()
            closed.withLock { $0 = true }
        }
        // The close is waiting for write 2: it returns only once that write ended.
        while !shared.isClosed { await Task.yield() }
        #expect(!closed.withLock { $0 })
        stream.release()
        try await underWay.value
        await closing.value
        #expect(closed.withLock { $0 })
        let refused = await #expect(throws: RPCError.self) { try await shared.write(3) }
        #expect(refused?.code == .cancelled)
        #expect(stream.written == [1, 2])
    }

    @Test("serving closes the writer however its body ends, and hands back the body's result or error")
    func servingCloses() async throws {
        let stream = HeldWriter()
        let escaped = Mutex<SharedCallWriter<Int>?>(nil)
        let answer = try await SharedCallWriter.serving(RPCWriter<Int>(wrapping: stream)) { shared in
            escaped.withLock { $0 = shared }
            try await shared.write(7)
            return 42
        }
        #expect(answer == 42)
        let kept = try #require(escaped.withLock { $0 })
        #expect(kept.isClosed)
        await #expect(throws: RPCError.self) { try await kept.write(8) }
        struct Failed: Error {}
        await #expect(throws: Failed.self) {
            try await SharedCallWriter.serving(RPCWriter<Int>(wrapping: stream)) { shared in
                escaped.withLock { $0 = shared }
                throw Failed()
            }
        }
        #expect(escaped.withLock { $0 }?.isClosed == true)
        #expect(stream.written == [7])
    }
}

/// A writer that records what it is given, and can hold a write until released.
private final class HeldWriter: RPCWriterProtocol, Sendable {
    private struct State {
        var written: [Int] = []
        var holding = false
        var held: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    var written: [Int] { state.withLock { $0.written } }

    func hold() { state.withLock { $0.holding = true } }

    func waitUntilHeld() async throws {
        while state.withLock({ $0.held == nil }) { try await Task.sleep(for: .milliseconds(1)) }
    }

    func release() {
        let held = state.withLock { state in
            state.holding = false
            defer { state.held = nil }
            return state.held
        }
        held?.resume()
    }

    func write(_ element: Int) async throws {
        if state.withLock({ $0.holding }) {
            await withCheckedContinuation { continuation in state.withLock { $0.held = continuation } }
        }
        state.withLock { $0.written.append(element) }
    }

    func write(contentsOf elements: some Sequence<Int>) async throws {
        for element in elements { try await write(element) }
    }
}
