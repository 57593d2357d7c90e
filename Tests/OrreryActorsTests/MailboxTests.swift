import Foundation
import OrreryActors
import OrreryIdentity
import OrreryProto
import SwiftProtobuf
import Testing

@Suite("Actor mailboxes: the workload's line protocol and envelopes held during a move")
struct MailboxTests {
    let address = ActorAddress("actor://dep_bbbbbbbbbbbbbbbbbbbbbbbbbb/worker/0")!

    @Test("requests from a workload are parsed and checked; answers are one line of JSON")
    func lines() throws {
        let send = try MailboxLine.request(
            #"{"op":"send","id":"m1","to":"actor://dep_bbbbbbbbbbbbbbbbbbbbbbbbbb/worker/0","behavior":"add","payload":"AQID"}"#
        )
        #expect(send.op == "send" && send.payloadBytes == [1, 2, 3])
        let reply = try MailboxLine.request(#"{"op":"reply","id":"r1","to_message":"bafy123","payload":""}"#)
        #expect(reply.toMessage == "bafy123" && reply.payloadBytes == [])
        #expect(try MailboxLine.request(#"{"op":"receive"}"#).op == "receive")
        let refused: [(String, String)] = [
            (#"{"op":"send","id":"m1","to":"nowhere","behavior":"add","payload":""}"#, "actor address"),
            (
                #"{"op":"send","id":"m1","to":"actor://dep_bbbbbbbbbbbbbbbbbbbbbbbbbb/worker/0","behavior":"Add!","payload":""}"#,
                "behavior"
            ),
            (
                #"{"op":"send","to":"actor://dep_bbbbbbbbbbbbbbbbbbbbbbbbbb/worker/0","behavior":"add","payload":""}"#,
                "id"
            ),
            (
                #"{"op":"send","id":"m1","to":"actor://dep_bbbbbbbbbbbbbbbbbbbbbbbbbb/worker/0","behavior":"add","payload":"%%"}"#,
                "base64"
            ),
            (#"{"op":"reply","id":"r1","payload":""}"#, "to_message"),
            (#"{"op":"shout"}"#, "unknown op"),
            ("not json", "JSON"),
        ]
        for (line, reason) in refused {
            #expect(throws: MailboxLine.Invalid.self, "\(line)") { try MailboxLine.request(line) }
            do { _ = try MailboxLine.request(line) } catch { #expect(error.reason.contains(reason), "\(error.reason)") }
        }
        #expect(throws: MailboxLine.Invalid.self) {
            try MailboxLine.request(String(repeating: " ", count: MailboxLine.maximumLength + 1))
        }
        let message = MailboxLine(
            op: "message", id: "bafy1", from: address.description, behavior: "add", payload: [9],
            replyTo: address.description)
        #expect(message.encoded.hasSuffix("}\n") && !message.encoded.dropLast().contains("\n"))
        let decoded = try JSONDecoder().decode(MailboxLine.self, from: Data(message.encoded.utf8))
        #expect(decoded == message && decoded.payloadBytes == [9])
    }

    @Test(
        "held envelopes come back in order after the move; expired ones are dropped and counted; a full queue says so")
    func held() throws {
        var held = HeldEnvelopes(limitPerActor: 3, byteLimitPerActor: 1 << 20)
        func envelope(_ byte: UInt8) -> Orrery_Actors_V1_Envelope { .with { $0.payload = Data([byte]) } }
        #expect(held.hold(envelope(1), for: address, expiresAt: 100, now: 0) == .held)
        #expect(held.hold(envelope(2), for: address, expiresAt: 10, now: 0) == .held)
        #expect(held.hold(envelope(3), for: address, expiresAt: 100, now: 0) == .held)
        #expect(held.hold(envelope(4), for: address, expiresAt: 100, now: 0) == .full)
        #expect(held.count(for: address) == 3)
        let released = held.release(address, now: 50)
        #expect(released.map { [UInt8]($0.payload) } == [[1], [3]])
        #expect(held.droppedExpired == 1)
        #expect(held.count(for: address) == 0 && held.release(address, now: 50).isEmpty)
        var small = HeldEnvelopes(limitPerActor: 10, byteLimitPerActor: 4)
        #expect(small.hold(.with { $0.payload = Data([1, 2, 3]) }, for: address, expiresAt: 9, now: 0) == .held)
        #expect(small.hold(.with { $0.payload = Data([1, 2]) }, for: address, expiresAt: 9, now: 0) == .full)
    }

    @Test("an envelope's expiry is read without validating it")
    func expiration() throws {
        let key = SigningKey()
        let sealed = try ActorEnvelopes.seal(
            payload: [1], behavior: "ping", from: address, to: address, key: key, receiver: key.did, subject: key.did,
            proofs: [], lifetime: 30, now: 1000)
        #expect(ActorEnvelopes.expiration(of: sealed) == 1030)
        #expect(ActorEnvelopes.expiration(of: .with { $0.authority = Data([1, 2, 3]) }) == nil)
    }
}
