import Foundation
import Logging
import Testing

@testable import OrreryRuntime
@testable import OrreryRuntimeCore

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

    @Test("a log line is JSON that Foundation's parser reads back exactly: escapes, control characters, nesting")
    func lineEncoding() throws {
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{07} nul \u{00} ümlaut 🚀 </script>"
        let value: Logger.Metadata.Value = .dictionary([
            "text": .string(awkward),
            "list": .array([.string("a"), .stringConvertible(42), .dictionary(["inner": .string("x\ry")])]),
            "z": .string(""),
        ])
        var line = ""
        JSONLogHandler.append(value, to: &line)
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(parsed["text"] as? String == awkward)
        #expect(parsed["z"] as? String == "")
        let list = try #require(parsed["list"] as? [Any])
        #expect(list.count == 3)
        #expect(list[0] as? String == "a")
        #expect(list[1] as? String == "42")
        #expect((list[2] as? [String: Any])?["inner"] as? String == "x\ry")
        // Keys sorted, one line: a reader can diff and grep them.
        #expect(!line.contains("\n"))
        #expect(line.hasPrefix("{\"list\":"))
    }
}
