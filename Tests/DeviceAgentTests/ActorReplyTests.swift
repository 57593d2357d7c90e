import Foundation
import Logging
import OrreryActors
import OrreryIdentity
import OrreryProto
import OrreryTestSupport
import SwiftProtobuf
import Testing

@testable import DeviceAgent

/// An actor answers a message from an actor that started after it: the sender's key, proven by its admitted
/// envelope, is where the reply goes before the orchestrator's directory names it.
@Suite("Actor replies")
struct ActorReplyTests {
    @Test("a reply to a sender the directory does not list yet goes to the key its envelope proved")
    func replyBeforeTheDirectoryKnowsTheSender() async throws {
        let orchestrator = SigningKey()
        let (pingKey, pongKey) = (SigningKey(), SigningKey())
        let ping = try #require(ActorAddress("actor://dep_abcdefghijklmnopqrstuvwxyz/ping/0"))
        let pong = try #require(ActorAddress("actor://dep_abcdefghijklmnopqrstuvwxyz/pong/0"))
        func grant(_ address: ActorAddress, _ key: SigningKey, directory: [String: String]) throws
            -> Orrery_Actors_V1_ActorGrant
        {
            .with {
                $0.offerID = "off_\(address.allocation)"
                $0.address = address.description
                $0.delegation = Data(
                    Delegation.issue(
                        by: orchestrator, to: key.did, subject: orchestrator.did,
                        command: try! Command("/orrery/actor"),
                        expiration: Int64(Date().timeIntervalSince1970) + 3600
                    ).envelope.bytes)
                $0.directory = directory
                $0.trustedRoots = [orchestrator.did.string]
            }
        }
        let pingMail = ReportLog()
        let pingHost = ActorHost(
            address: ping, offerID: "off_ping", key: pingKey, received: [:], journal: nil,
            logger: Logger(label: "test"),
            emit: { message in if case .mail(let mail) = message.kind { pingMail.append(mail) } })
        try await pingHost.apply(
            try grant(
                ping, pingKey, directory: [ping.description: pingKey.did.string, pong.description: pongKey.did.string]))
        let pongMail = ReportLog()
        let pongHost = ActorHost(
            address: pong, offerID: "off_pong", key: pongKey, received: [:], journal: nil,
            logger: Logger(label: "test"),
            emit: { message in if case .mail(let mail) = message.kind { pongMail.append(mail) } })
        // pong's directory was sent before ping started: it does not name ping.
        try await pongHost.apply(try grant(pong, pongKey, directory: [pong.description: pongKey.did.string]))

        let sent = await pingHost.handle(
            MailboxLine(op: "send", id: "s1", to: pong.description, behavior: "ping", payload: Array("1".utf8)))
        #expect(sent.op == "sent", "\(sent)")
        let envelope = try #require(pingMail.all.last?.envelope)
        await pongHost.receive(envelope)
        let message = try #require(sent.toMessage)
        // Not to an actor it never heard from…
        let stranger = try #require(ActorAddress("actor://dep_abcdefghijklmnopqrstuvwxyz/other/0"))
        let refused = await pongHost.handle(
            MailboxLine(op: "send", id: "s2", to: stranger.description, behavior: "x", payload: Array("?".utf8)))
        #expect(refused.op != "sent")
        // …but the reply to ping goes, sealed to ping's key.
        let reply = await pongHost.handle(
            MailboxLine(op: "reply", id: "r1", toMessage: message, payload: Array("1:1".utf8)))
        #expect(reply.op == "sent", "\(reply)")
        let answer = try #require(pongMail.all.last)
        #expect(answer.to == ping.description)
        await pingHost.receive(answer.envelope)
        #expect(await pingHost.queued == 1, "ping admitted the reply")

        // A grant sent before pong registered, arriving late: ping still knows pong's key.
        try await pingHost.apply(try grant(ping, pingKey, directory: [ping.description: pingKey.did.string]))
        #expect(await pingHost.currentGrant?.directory[pong.description] == pongKey.did.string)
        let again = await pingHost.handle(
            MailboxLine(op: "send", id: "s3", to: pong.description, behavior: "ping", payload: Array("2".utf8)))
        #expect(again.op == "sent", "\(again)")
    }
}
