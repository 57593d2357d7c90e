import OrreryRuntime
import Testing

@Suite("Health status book")
struct HealthStatusBookTests {
    @Test("a watch sees the current status first, then each change, and ends when watches finish")
    func watch() async throws {
        let book = HealthStatusBook()
        book.set(.serving, for: "svc")
        let stream = book.watch("svc")
        book.set(.serving, for: "svc")  // no change, no event
        book.set(.notServing, for: "svc")
        book.finishWatches()
        var seen: [HealthStatusBook.Status] = []
        for await status in stream { seen.append(status) }
        #expect(seen == [.serving, .notServing])
    }

    @Test("unknown services are unknown; setAll flips every known one")
    func setAll() {
        let book = HealthStatusBook()
        #expect(book.status(of: "x") == nil)
        #expect(book.overallStatus == .unknown)
        book.set(.serving, for: "")
        book.set(.serving, for: "a")
        book.setAll(.notServing)
        #expect(book.all == ["": .notServing, "a": .notServing])
    }
}
