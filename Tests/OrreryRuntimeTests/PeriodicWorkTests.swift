import Logging
import OrreryRuntimeCore
import Synchronization
import Testing

@Suite("Periodic work: pass, pause, again")
struct PeriodicWorkTests {
    @Test("a failed pass is tried again after the pause, and cancelling the task ends the work")
    func retriesAndEnds() async throws {
        let passes = Atomic<Int>(0)
        let work = PeriodicWork("test work", every: .milliseconds(10), logger: Logger(label: "test")) {
            // The first two passes fail, as a database that does not answer yet would.
            if passes.add(1, ordering: .relaxed).newValue <= 2 { throw Unavailable() }
        }
        let running = Task { await work.run() }
        let deadline = ContinuousClock.now + .seconds(60)
        while passes.load(ordering: .relaxed) < 5, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(passes.load(ordering: .relaxed) >= 5, "the work went on after two failed passes")
        running.cancel()
        await running.value  // returns: cancellation ends it
        let ended = passes.load(ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(100))
        #expect(passes.load(ordering: .relaxed) == ended)
    }

    @Test("work that pauses first does no pass before its interval; a CancellationError from a pass ends it")
    func pausesFirstAndStopsOnCancellationError() async throws {
        let passes = Atomic<Int>(0)
        let started = ContinuousClock.now
        let firstPass = Mutex<Duration?>(nil)
        let work = PeriodicWork(
            "test work", every: .milliseconds(200), pausesFirst: true, logger: Logger(label: "test")
        ) {
            firstPass.withLock { $0 = $0 ?? (ContinuousClock.now - started) }
            passes.add(1, ordering: .relaxed)
            throw CancellationError()  // what a pass throws once the object it works for is gone
        }
        await work.run()  // returns by itself: the pass ended it
        #expect(passes.load(ordering: .relaxed) == 1)
        let waited = try #require(firstPass.withLock { $0 })
        #expect(waited >= .milliseconds(200), "first pass after \(waited)")
    }

    @Test("work done once: failed attempts are tried again, the first that succeeds ends it")
    func onceEndsAfterSuccess() async throws {
        let attempts = Atomic<Int>(0)
        let work = PeriodicWork(
            "test work", untilDoneRetryingAfter: .milliseconds(10), logger: Logger(label: "test")
        ) {
            if attempts.add(1, ordering: .relaxed).newValue <= 2 { throw Unavailable() }
        }
        await work.run()  // returns by itself once the third attempt succeeded
        #expect(attempts.load(ordering: .relaxed) == 3)
    }

    struct Unavailable: Error {}
}
