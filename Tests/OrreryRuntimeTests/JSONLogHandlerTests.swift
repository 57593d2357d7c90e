import Foundation
import Testing

@testable import OrreryRuntime

@Suite("JSON log lines")
struct JSONLogHandlerTests {
    @Test("timestamps are RFC 3339 UTC with milliseconds and agree with Foundation's clock")
    func timestamp() throws {
        let before = Date()
        let text = JSONLogHandler.timestamp()
        let after = Date()
        #expect(text.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil, "\(text)")
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let parsed = try #require(formatter.date(from: text))
        #expect(parsed >= before.addingTimeInterval(-0.001) && parsed <= after)
    }

    @Test("known instants: the epoch, a leap day, the end of a century, before 1970")
    func knownInstants() {
        #expect(JSONLogHandler.timestamp(unixMilliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(JSONLogHandler.timestamp(unixMilliseconds: 951_782_400_123) == "2000-02-29T00:00:00.123Z")
        #expect(JSONLogHandler.timestamp(unixMilliseconds: 4_102_444_799_999) == "2099-12-31T23:59:59.999Z")
        #expect(JSONLogHandler.timestamp(unixMilliseconds: 1_795_632_000_000) == "2026-11-25T18:40:00.000Z")  // Python datetime
        #expect(JSONLogHandler.timestamp(unixMilliseconds: -86_400_000) == "1969-12-31T00:00:00.000Z")
    }
}
