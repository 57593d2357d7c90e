import Testing

@testable import OrchestratorService

@Suite("Once gate: waiters pass once it opens, or when cancelled", .timeLimit(.minutes(1)))
struct OnceGateTests {
    /// Yields until `gate` has `count` waiters (they are known to wait, not to have passed).
    static func waitForWaiters(_ gate: OnceGate, _ count: Int) async throws {
        while gate.waiterCount != count { try await Task.sleep(for: .milliseconds(1)) }
    }

    @Test("a waiter before the gate opens is resumed when it opens; one after passes at once; a cancelled one returns")
    func opensOnce() async throws {
        let gate = OnceGate()
        let before = Task {
            await gate.wait()
            return Task.isCancelled
        }
        let cancelled = Task { await gate.wait() }
        try await Self.waitForWaiters(gate, 2)
        // Cancelled while waiting: it returns although the gate is still closed, and no longer counts as waiting.
        cancelled.cancel()
        await cancelled.value
        #expect(gate.waiterCount == 1)
        gate.open()
        #expect(await before.value == false)
        #expect(gate.waiterCount == 0)
        await gate.wait()  // open: passes at once
        // A task cancelled before it waits passes at once too.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await OnceGate().wait()
        }
        await early.value
    }
}
