import GRPCCore
import OrreryProto
import SwiftProtobuf
import Testing

@testable import OrchestratorService

/// What an exec's start message must hold before anything is looked up or asked of a device.
@Suite("Exec start rules")
struct ExecStartRulesTests {
    static func start(_ edit: (inout Orrery_Orchestrator_V1_ExecStart) -> Void) -> Orrery_Orchestrator_V1_ExecStart {
        var start = Orrery_Orchestrator_V1_ExecStart.with {
            $0.deploymentID = "dep_aaaaaaaaaaaaaaaaaaaaaaaaaa"
            $0.allocation = "web"
            $0.command = ["ls", "-l"]
        }
        edit(&start)
        return start
    }

    /// Each bad start: what it is, the start, and what its refusal names.
    static let bad: [(name: String, start: Orrery_Orchestrator_V1_ExecStart, says: String)] = [
        ("no allocation", start { $0.allocation = "" }, "allocation"),
        ("no command", start { $0.command = [] }, "command: 1…256"),
        ("an empty program", start { $0.command = [""] }, "command: 1…256"),
        ("257 words", start { $0.command = Array(repeating: "x", count: 257) }, "command: 1…256"),
        ("a program with =", start { $0.command = ["A=1", "ls"] }, "'='"),
        ("a NUL byte", start { $0.command = ["ls", "a\u{0}b"] }, "NUL"),
        ("over 64 KiB", start { $0.command = ["echo", String(repeating: "x", count: 70_000)] }, "64 KiB"),
        (
            "0 rows",
            start {
                $0.size = .with {
                    $0.rows = 0
                    $0.columns = 80
                }
            }, "size"
        ),
        ("a TERM with a space", start { $0.term = "x term" }, "term"),
    ]

    @Test("each bad start is refused with INVALID_ARGUMENT naming its field", arguments: 0..<9)
    func refused(_ index: Int) {
        let (name, start, says) = Self.bad[index]
        do {
            try ExecSessions.validate(start)
            Issue.record("\(name): passed")
        } catch let error as RPCError {
            #expect(error.code == .invalidArgument && error.message.contains(says), "\(name): \(error)")
        } catch {
            Issue.record("\(name): \(error)")
        }
    }

    @Test("a good start passes: a command, a terminal of 24 × 80, TERM xterm-256color")
    func passes() throws {
        try ExecSessions.validate(
            Self.start {
                $0.tty = true
                $0.size = .with {
                    $0.rows = 24
                    $0.columns = 80
                }
                $0.term = "xterm-256color"
            })
    }
}
