import Foundation
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// The journal an actor's agent reads back after its process restarts.
@Suite("Actor journal")
struct ActorJournalTests {
    static func sent(_ id: String, _ sendID: String, expiresAt: Int64) -> ActorJournal.Sent {
        ActorJournal.Sent(id: id, sendID: sendID, mail: Data("mail \(id)".utf8), expiresAt: expiresAt)
    }

    @Test(
        "undelivered sends, delivered send ids, handed-over envelopes and their reply targets come back; settled and expired ones do not"
    )
    func readsBack() throws {
        try TestEnvironment.withTemporaryDirectory("orrery-journal") { directory in
            let path = directory.appendingPathComponent("mail.journal").path
            let now = Int64(Date().timeIntervalSince1970)
            var journal = ActorJournal(path: path)
            journal.sent(Self.sent("e1", "s1", expiresAt: now + 300))
            journal.sent(Self.sent("e2", "s2", expiresAt: now + 300))
            journal.sent(Self.sent("e3", "s3", expiresAt: now + 300))
            journal.sent(Self.sent("old", "s4", expiresAt: now - 1))
            journal.settled("e1", delivered: true)
            journal.settled("e2", delivered: false)
            journal.took("c1", expiresAt: now + 300, replyTo: "actor://dep_x/pong/0")
            journal.took("c-old", expiresAt: now - 1, replyTo: "actor://dep_x/pong/0")
            // A crash in the middle of a line: it is skipped.
            let handle = try #require(FileHandle(forWritingAtPath: path))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(#"{"took":"c2","expi"#.utf8))
            try handle.close()

            let again = ActorJournal(path: path)
            #expect(Set(again.state.outbound.keys) == ["e3"])
            #expect(again.state.outbound["e3"] == Self.sent("e3", "s3", expiresAt: now + 300))
            #expect(again.state.delivered.mapValues(\.id) == ["s1": "e1"])
            #expect(again.state.received == ["c1": now + 300])
            #expect(again.state.replyTargets == ["c1": "actor://dep_x/pong/0"])
            // Read back once more (it was compacted on opening): the same.
            #expect(ActorJournal(path: path).state == again.state)
        }
    }

    @Test("a long-running actor's journal is compacted to what is live")
    func compacts() throws {
        try TestEnvironment.withTemporaryDirectory("orrery-journal") { directory in
            let path = directory.appendingPathComponent("mail.journal").path
            let now = Int64(Date().timeIntervalSince1970)
            var journal = ActorJournal(path: path)
            for index in 0..<5000 {
                journal.sent(Self.sent("e\(index)", "", expiresAt: now + 300))
                journal.settled("e\(index)", delivered: false)
            }
            journal.sent(Self.sent("live", "s", expiresAt: now + 300))
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(text.split(separator: "\n").count < 1100)
            #expect(Set(ActorJournal(path: path).state.outbound.keys) == ["live"])
        }
    }
}
