import Synchronization
import Testing

@testable import OrchestratorService

/// The orchestrator's short memory of database reads: used while fresh, read again after, only what `keep` says
/// remembered, and bounded.
@Suite("Recent reads")
struct RecentReadsTests {
    @Test("a read is used while fresh (nil too), read again once stale; a read keep refuses is not remembered")
    func freshness() async throws {
        let reads = RecentReads<String, Int>(freshness: .seconds(60))
        let count = Mutex(0)
        func read(_ value: Int?) -> () async throws -> Int? {
            {
                count.withLock { $0 += 1 }; return value
            }
        }
        #expect(try await reads.value(for: "a", read: read(1)) == 1)
        #expect(try await reads.value(for: "a", read: read(2)) == 1)
        #expect(try await reads.value(for: "none", read: read(nil)) == nil)
        #expect(try await reads.value(for: "none", read: read(3)) == nil)
        #expect(count.withLock { $0 } == 2)
        // Not kept: the next look-up reads again.
        #expect(try await reads.value(for: "b", read: read(4), keep: { _ in false }) == 4)
        #expect(try await reads.value(for: "b", read: read(5)) == 5)
        #expect(count.withLock { $0 } == 4)
        // Stale: read again.
        let brief = RecentReads<String, Int>(freshness: .milliseconds(50))
        #expect(try await brief.value(for: "a", read: read(6)) == 6)
        try await Task.sleep(for: .milliseconds(100))
        #expect(brief.recall("a") == nil)
        #expect(try await brief.value(for: "a", read: read(7)) == 7)
    }

    @Test("past its capacity the stale entries go, then all: it never holds more")
    func bounded() {
        let reads = RecentReads<Int, Int>(freshness: .seconds(60), capacity: 3)
        for key in 0..<3 { reads.remember(key, for: key) }
        #expect((0..<3).allSatisfy { reads.recall($0)?.value == $0 })
        reads.remember(3, for: 3)
        #expect(reads.recall(3)?.value == 3)
        #expect((0..<3).allSatisfy { reads.recall($0) == nil })
    }
}
