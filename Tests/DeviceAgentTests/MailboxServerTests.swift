import Foundation
import Logging
import OrreryActors
import OrreryIdentity
import OrreryProto
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// The agent's mailbox socket, driven by a Python client as a workload would: every request answered on its line,
/// bad ones refused with a reason, the connection kept.
@Suite("Mailbox socket")
struct MailboxServerTests {
    @Test(
        "bad lines, sends without authority and unrequested checkpoints are refused; a checkpoint is asked and answered"
    )
    func refusalsAndCheckpoint() async throws {
        let directory = URL(fileURLWithPath: "/tmp/orrery-mbx-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let address = try #require(ActorAddress("actor://dep_abcdefghijklmnopqrstuvwxyz/worker/0"))
        let host = ActorHost(
            address: address, offerID: "off_test", key: SigningKey(), received: [:], logger: Logger(label: "test"),
            emit: { _ in })
        let socket = directory.appendingPathComponent("mailbox.sock").path
        let server = try await MailboxServer.start(path: socket, host: host, logger: Logger(label: "test"))
        defer { server.close() }
        let requests = [
            "not json",
            #"{"op":"shout"}"#,
            #"{"op":"send","id":"s1","to":"actor://dep_abcdefghijklmnopqrstuvwxyz/other/0","behavior":"ping","payload":""}"#,
            #"{"op":"checkpointed","id":"ck-9"}"#,
            #"{"op":"receive"}"#,
            #"{"op":"checkpointed","id":"ck-1"}"#,
        ]
        // The client sends each line and prints each answer; the receive waits until the checkpoint is asked.
        let script = """
            import json, socket, sys
            s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
            for line in sys.argv[2:]:
                f.write((line + "\\n").encode()); f.flush(); print(f.readline().decode().strip(), flush=True)
            """
        async let run = ChildProcess.run(
            URL(fileURLWithPath: "/usr/bin/python3"), arguments: ["-c", script, socket] + requests)
        try await Task.sleep(for: .milliseconds(300))
        let delivered = await host.checkpoint(id: "ck-1", pause: false, timeout: .seconds(30))
        let (status, output) = try await run
        #expect(status == 0, "\(output)")
        #expect(delivered != nil, "the workload answered the checkpoint request")
        let answers = try output.split(separator: "\n").map {
            try JSONDecoder().decode(MailboxLine.self, from: Data($0.utf8))
        }
        #expect(answers.map(\.op) == ["refused", "refused", "refused", "refused", "checkpoint", "ok"], "\(output)")
        #expect(answers[0].reason?.contains("not a JSON object") == true)
        #expect(answers[1].reason?.contains("unknown op 'shout'") == true)
        #expect(answers[2].id == "s1" && answers[2].reason?.contains("no authority to send yet") == true)
        #expect(answers[3].reason?.contains("no checkpoint 'ck-9' was requested") == true)
        #expect(answers[4].id == "ck-1")
    }
}
