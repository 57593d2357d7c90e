import Foundation
import OrreryProto
import SwiftProtobuf
import Testing

@testable import OrchestratorService

@Suite("Which stored output a log request returns: since, one stream, the last lines")
struct LogWindowTests {
    static func piece(
        _ text: String, replica: UInt32 = 0, stream: Orrery_Orchestrator_V1_LogStream = .stdout, at seconds: Double
    ) -> LogWindow.Piece {
        (
            .with {
                $0.allocation = "main"
                $0.replica = replica
                $0.stream = stream
                $0.data = Data(text.utf8)
            }, Date(timeIntervalSince1970: seconds)
        )
    }

    static func text(
        _ pieces: [LogWindow.Piece], replica: UInt32 = 0, stream: Orrery_Orchestrator_V1_LogStream = .stdout
    )
        -> String
    {
        String(
            decoding: pieces.filter { $0.line.replica == replica && $0.line.stream == stream }.flatMap(\.line.data),
            as: UTF8.self)
    }

    let stored: [LogWindow.Piece] = [
        piece("one\ntwo\nth", at: 1), piece("ree\n", stream: .stderr, at: 2), piece("ree\nfour\n", at: 3),
        piece("a\nb\n", replica: 1, at: 4), piece("five", at: 5), piece("oops\n", stream: .stderr, at: 6),
    ]

    @Test("no window: everything, in arrival order")
    func everything() {
        let all = LogWindow.select(stored, since: nil, stream: .unspecified, tailLines: 0)
        #expect(all.map(\.at) == stored.map(\.at))
        #expect(Self.text(all) == "one\ntwo\nthree\nfour\nfive")
    }

    @Test("the last N lines of each replica's stream, cut at a line's start; a last line without newline counts")
    func tail() {
        let two = LogWindow.select(stored, since: nil, stream: .unspecified, tailLines: 2)
        #expect(Self.text(two) == "four\nfive")
        #expect(Self.text(two, replica: 1) == "a\nb\n")
        #expect(Self.text(two, stream: .stderr) == "ree\noops\n")
        let three = LogWindow.select(stored, since: nil, stream: .stdout, tailLines: 3)
        #expect(Self.text(three) == "three\nfour\nfive")
        #expect(three.first?.line.data == Data("th".utf8), "the piece holding the cut starts at the line")
        #expect(Self.text(three, stream: .stderr).isEmpty)
        // More lines asked for than there are: all of them.
        #expect(Self.text(LogWindow.select(stored, since: nil, stream: .stdout, tailLines: 50)) == Self.text(stored))
        let one = LogWindow.select([Self.piece("x\ny\n", at: 1)], since: nil, stream: .unspecified, tailLines: 1)
        #expect(Self.text(one) == "y\n")
    }

    @Test("since drops what arrived before it; one stream drops the other; tail counts within what is left")
    func sinceAndStream() {
        let late = LogWindow.select(stored, since: Date(timeIntervalSince1970: 3), stream: .unspecified, tailLines: 0)
        #expect(late.map(\.at) == [3, 4, 5, 6].map { Date(timeIntervalSince1970: $0) })
        let errors = LogWindow.select(stored, since: nil, stream: .stderr, tailLines: 0)
        #expect(errors.allSatisfy { $0.line.stream == .stderr } && errors.count == 2)
        let lateTail = LogWindow.select(stored, since: Date(timeIntervalSince1970: 3), stream: .stdout, tailLines: 1)
        #expect(Self.text(lateTail) == "five")
    }
}
