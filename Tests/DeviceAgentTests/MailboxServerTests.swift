import Foundation
import Logging
import OrreryActors
import OrreryIdentity
import OrreryProto
import OrreryTestSupport
import SwiftProtobuf
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

    @Test(
        "forged, replayed, unauthorised, expired and misaddressed envelopes never reach the workload; each sender hears why"
    )
    func onlyValidEnvelopesReachTheWorkload() async throws {
        let directory = URL(fileURLWithPath: "/tmp/orrery-mbx-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let orchestrator = SigningKey()
        let (senderKey, receiverKey, stranger) = (SigningKey(), SigningKey(), SigningKey())
        let sender = try #require(ActorAddress("actor://dep_abcdefghijklmnopqrstuvwxyz/producer/0"))
        let receiver = try #require(ActorAddress("actor://dep_abcdefghijklmnopqrstuvwxyz/worker/0"))
        let reports = ReportLog()
        let host = ActorHost(
            address: receiver, offerID: "off_test", key: receiverKey, received: [:], logger: Logger(label: "test"),
            emit: { message in if case .mail(let mail) = message.kind { reports.append(mail) } })
        let now = Int64(Date().timeIntervalSince1970)
        func delegation(to actor: SigningKey, by issuer: SigningKey = orchestrator) throws -> Delegation {
            Delegation.issue(
                by: issuer, to: actor.did, subject: issuer.did, command: try Command("/orrery/actor"),
                expiration: now + 3600)
        }
        try await host.apply(
            .with {
                $0.offerID = "off_test"
                $0.address = receiver.description
                $0.delegation = Data(try delegation(to: receiverKey).envelope.bytes)
                $0.trustedRoots = [orchestrator.did.string]
            })
        func seal(
            _ text: String, key: SigningKey = senderKey, proofs: [Delegation]? = nil, to: ActorAddress? = nil,
            lifetime: Int64 = 60, issuedAt: Int64? = nil
        ) throws -> Orrery_Actors_V1_Envelope {
            try ActorEnvelopes.seal(
                payload: Array(text.utf8), behavior: "ping", from: sender, to: to ?? receiver, key: key,
                receiver: receiverKey.did, subject: (proofs?.first?.subject) ?? orchestrator.did,
                proofs: try proofs ?? [delegation(to: senderKey)], lifetime: lifetime, now: issuedAt ?? now)
        }
        let valid = try seal("valid")
        var tampered = try seal("tampered")
        tampered.payload = Data("changed".utf8)
        let crafted: [Orrery_Actors_V1_Envelope] = [
            tampered,  // bad signature: the payload is not the one signed
            try seal("stranger", key: stranger),  // signed by a key the delegation is not for: unauthorised
            try seal("untrusted root", proofs: [try delegation(to: senderKey, by: stranger)]),  // unauthorised
            try seal("expired", lifetime: 10, issuedAt: now - 100),  // expired
            try seal("misaddressed", to: sender),  // for another actor
            valid, valid,  // the second is a replay
        ]
        for envelope in crafted { await host.receive(envelope) }
        let socket = directory.appendingPathComponent("mailbox.sock").path
        let server = try await MailboxServer.start(path: socket, host: host, logger: Logger(label: "test"))
        defer { server.close() }
        // The workload asks twice; only one message is there: the second receive waits, so it asks with a timeout.
        let script = """
            import json, socket, sys
            s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
            f.write(b'{"op":"receive"}\\n'); f.flush(); print(f.readline().decode().strip(), flush=True)
            s.settimeout(1.0)
            f.write(b'{"op":"receive"}\\n'); f.flush()
            try:
                print(f.readline().decode().strip(), flush=True)
            except (socket.timeout, TimeoutError):
                print("nothing more", flush=True)
            """
        let (status, output) = try await ChildProcess.run(
            URL(fileURLWithPath: "/usr/bin/python3"), arguments: ["-c", script, socket])
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n").map(String.init)
        let first = try JSONDecoder().decode(MailboxLine.self, from: Data(lines[0].utf8))
        #expect(first.op == "message" && first.payloadBytes == Array("valid".utf8) && first.from == sender.description)
        #expect(lines.last == "nothing more", "\(output)")
        // Each refusal went back to the sender with its reason; the delivery of the valid one too.
        let refusals = reports.all.compactMap { $0.report.delivered ? nil : $0.report.kind }
        #expect(
            refusals.sorted() == ["bad-signature", "expired", "misaddressed", "unauthorised", "unauthorised"],
            "\(reports.all.map(\.report))")
        #expect(reports.all.allSatisfy { $0.to == sender.description })
        #expect(reports.all.contains { $0.report.delivered && $0.report.envelopeID == first.id })
    }
}

/// Mail an actor host sent, collected.
final class ReportLog: @unchecked Sendable {
    // @unchecked: guarded by the lock.
    private let lock = NSLock()
    private var mail: [Orrery_Actors_V1_Mail] = []
    func append(_ item: Orrery_Actors_V1_Mail) { lock.withLock { mail.append(item) } }
    var all: [Orrery_Actors_V1_Mail] { lock.withLock { mail } }
}
