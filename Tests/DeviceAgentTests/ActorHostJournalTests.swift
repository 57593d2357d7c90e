import Foundation
import Logging
import OrreryActors
import OrreryIdentity
import OrreryProto
import OrreryTestSupport
import SwiftProtobuf
import Testing

@testable import DeviceAgent

/// An actor host after its agent's process restarted: what it sent and was not delivered goes again, a send repeated
/// under its id by a reconnected workload is answered and not sent twice, what it handed over stays a replay and can
/// be replied to.
@Suite("Actor host across an agent restart")
struct ActorHostJournalTests {
    @Test("undelivered sends are resent after a restart; a repeated send id is not sent twice unless it was refused")
    func restart() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-host-journal") { directory in
            let journalPath = directory.appendingPathComponent("mail.journal").path
            let (orchestrator, key, peer) = (SigningKey(), SigningKey(), SigningKey())
            let me = try #require(ActorAddress("actor://dep_abcdefghijklmnopqrstuvwxyz/ping/0"))
            let other = try #require(ActorAddress("actor://dep_abcdefghijklmnopqrstuvwxyz/pong/0"))
            let grant = Orrery_Actors_V1_ActorGrant.with {
                $0.offerID = "off_test"
                $0.address = me.description
                $0.delegation = Data(
                    Delegation.issue(
                        by: orchestrator, to: key.did, subject: orchestrator.did,
                        command: try! Command("/orrery/actor"),
                        expiration: Int64(Date().timeIntervalSince1970) + 3600
                    ).envelope.bytes)
                $0.directory = [other.description: peer.did.string, me.description: key.did.string]
                $0.trustedRoots = [orchestrator.did.string]
            }
            func host(_ log: ReportLog) async throws -> ActorHost {
                let host = ActorHost(
                    address: me, offerID: "off_test", key: key, received: [:], journal: ActorJournal(path: journalPath),
                    logger: Logger(label: "test"),
                    emit: { message in if case .mail(let mail) = message.kind { log.append(mail) } })
                try await host.apply(grant)
                return host
            }
            func send(_ host: ActorHost, _ id: String) async -> MailboxLine {
                await host.handle(
                    MailboxLine(op: "send", id: id, to: other.description, behavior: "ping", payload: Array("hi".utf8)))
            }

            let firstLog = ReportLog()
            let first = try await host(firstLog)
            let sent = await send(first, "s1")
            #expect(sent.op == "sent")
            let envelope = try #require(sent.toMessage)
            #expect(await send(first, "s1").toMessage == envelope)
            #expect(firstLog.all.count == 1, "a repeated id is answered, not sent again")

            // The agent's process dies; a new one reads the journal.
            let secondLog = ReportLog()
            let second = try await host(secondLog)
            #expect(await second.undelivered == 1)
            await second.resend()
            #expect(secondLog.all.map { ActorEnvelopes.identity(of: $0.envelope)?.string } == [envelope])
            #expect(await send(second, "s1").toMessage == envelope)
            #expect(secondLog.all.count == 1)
            // Refused by the receiver: the id is free again, and a new envelope goes.
            await second.report(
                .with {
                    $0.envelopeID = envelope
                    $0.delivered = false
                    $0.reason = "unauthorised: test"
                    $0.kind = "unauthorised"
                })
            let again = await send(second, "s1")
            #expect(again.op == "sent" && again.toMessage != envelope)
            #expect(secondLog.all.count == 2)
            // Delivered: settled for good, nothing is resent after another restart.
            await second.report(
                .with {
                    $0.envelopeID = again.toMessage ?? ""
                    $0.delivered = true
                })
            let third = try await host(ReportLog())
            #expect(await third.undelivered == 0)
            #expect(await send(third, "s1").toMessage == again.toMessage)

            // A message handed to the workload just before a restart can still be replied to after it.
            let message = try #require(again.toMessage)
            await third.handedOver(MailboxLine(op: "message", id: message, from: other.description, behavior: "ping"))
            let fourthLog = ReportLog()
            let fourth = try await host(fourthLog)
            let reply = await fourth.handle(
                MailboxLine(op: "reply", id: "r1", toMessage: message, payload: Array("pong".utf8)))
            #expect(reply.op == "sent", "\(reply)")
            #expect(fourthLog.all.last?.to == other.description)
        }
    }
}
