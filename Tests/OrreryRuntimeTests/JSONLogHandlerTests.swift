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
}
