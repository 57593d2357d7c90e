import Testing

@testable import OrchestratorService

@Suite("Once gate: waiters pass once it opens, or when cancelled", .timeLimit(.minutes(1)))
struct OnceGateTests {
    @Test("a waiter before the gate opens is resumed when it opens; one after passes at once; a cancelled one returns")
    func opensOnce() async {
        let gate = OnceGate()
        let before = Task {
            await gate.wait()
            return Task.isCancelled
        }
        let cancelled = Task { await gate.wait() }
        cancelled.cancel()
        await cancelled.value  // returns although the gate is still closed
        gate.open()
        #expect(await before.value == false)
        await gate.wait()  // open: passes at once
    }
}
