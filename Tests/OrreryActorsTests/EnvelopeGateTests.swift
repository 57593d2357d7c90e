import Foundation
import OrreryActors
import OrreryIdentity
import OrreryProto
import Testing

@Suite("Actor envelopes: only signed, authorised, fresh, first-time envelopes reach a workload")
struct EnvelopeGateTests {
    let orchestrator = SigningKey()
    let sender = SigningKey()
    let receiverKey = SigningKey()
    let from = ActorAddress("actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/producer/0")!
    let to = ActorAddress("actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/consumer/1")!
    let now = Int64(Date().timeIntervalSince1970)

    /// The ensemble's delegation: orchestrator → sending actor, `command`, optionally only to `to`.
    func delegation(_ command: String = "/orrery/actor", onlyTo: String? = nil, expiration: Int64? = nil) throws
        -> Delegation
    {
        Delegation.issue(
            by: orchestrator, to: sender.did, subject: orchestrator.did, command: try Command(command),
            policy: try onlyTo.map { try Policy(try IPLDJSON.parse(#"[["==", ".to", "\#($0)"]]"#)) } ?? .empty,
            expiration: expiration ?? now + 3600)
    }

    /// The refusal's kind when `body` is refused; nil when it passes (or fails some other way).
    func refusal(_ body: () throws -> AdmittedEnvelope) -> String? {
        do {
            _ = try body()
            return nil
        } catch let refusal as EnvelopeRefusal {
            return refusal.kind
        } catch {
            return "other: \(error)"
        }
    }

    func gate() -> EnvelopeGate {
        EnvelopeGate(receiver: to, receiverDID: receiverKey.did, trustedRoots: [orchestrator.did])
    }

    func seal(
        _ payload: String = "hello", behavior: String = "greet", key: SigningKey? = nil, proofs: [Delegation]? = nil,
        subject: DID? = nil, to target: ActorAddress? = nil, lifetime: Int64 = 60
    ) throws -> Orrery_Actors_V1_Envelope {
        try ActorEnvelopes.seal(
            payload: Array(payload.utf8), behavior: behavior, from: from, to: target ?? to, replyTo: from,
            key: key ?? sender, receiver: receiverKey.did, subject: subject ?? orchestrator.did,
            proofs: try proofs ?? [delegation()], lifetime: lifetime, now: now)
    }

    @Test("addresses parse and print; malformed ones are refused")
    func addresses() {
        #expect(from.description == "actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/producer/0")
        #expect(from.replica == 0 && from.allocation == "producer")
        for bad in [
            "actor://dep_short/x/0", "actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/X/0",
            "actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/x/01",
            "actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/x", "http://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/x/0",
            "actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/x/-1",
        ] {
            #expect(ActorAddress(bad) == nil, "\(bad)")
        }
    }

    @Test("a signed, authorised envelope is admitted once; its replay is refused")
    func admittedOnce() throws {
        let gate = gate()
        let envelope = try seal()
        let admitted = try gate.admit(envelope, now: now)
        #expect(admitted.from == from && admitted.sender == sender.did && admitted.behavior == "greet")
        #expect(admitted.payload == Array("hello".utf8) && admitted.replyTo == from)
        #expect(throws: EnvelopeRefusal.replayed(admitted.id)) { try gate.admit(envelope, now: now + 1) }
        // A new envelope with the same content is a new message (its own nonce).
        #expect(try gate.admit(try seal(), now: now).id != admitted.id)
    }

    @Test("forged: another key's signature, a changed payload, a tampered invocation")
    func forged() throws {
        let gate = gate()
        // Signed by someone the delegation does not name.
        #expect(refusal { try gate.admit(try seal(key: SigningKey()), now: now) } == "unauthorised")
        var swapped = try seal()
        swapped.payload = Data("goodbye".utf8)
        #expect(throws: EnvelopeRefusal.badSignature("the payload is not the one the sender signed")) {
            try gate.admit(swapped, now: now)
        }
        var tampered = try seal()
        var bytes = [UInt8](tampered.authority)
        bytes[bytes.count / 3] ^= 0x01
        tampered.authority = Data(bytes)
        #expect(throws: EnvelopeRefusal.self) { try gate.admit(tampered, now: now) }
    }

    @Test("unauthorised: an untrusted root, another behavior, a policy naming another receiver, a revoked delegation")
    func unauthorised() throws {
        func refusedAsUnauthorised(_ envelope: Orrery_Actors_V1_Envelope, _ gate: EnvelopeGate? = nil) {
            #expect(refusal { try (gate ?? self.gate()).admit(envelope, now: now) } == "unauthorised")
        }
        let stranger = SigningKey()
        let foreign = Delegation.issue(
            by: stranger, to: sender.did, subject: stranger.did, command: try Command("/orrery/actor"),
            expiration: now + 3600)
        refusedAsUnauthorised(try seal(proofs: [foreign], subject: stranger.did))
        refusedAsUnauthorised(try seal(behavior: "shutdown", proofs: [try delegation("/orrery/actor/greet")]))
        #expect(throws: Never.self) {
            _ = try self.gate().admit(try seal(proofs: [try delegation("/orrery/actor/greet")]), now: now)
        }
        let other = "actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/consumer/2"
        refusedAsUnauthorised(try seal(proofs: [try delegation(onlyTo: other)]))
        #expect(throws: Never.self) {
            _ = try self.gate().admit(try seal(proofs: [try delegation(onlyTo: to.description)]), now: now)
        }
        let revoked = try delegation()
        let revokedGate = EnvelopeGate(
            receiver: to, receiverDID: receiverKey.did, trustedRoots: [orchestrator.did],
            isRevoked: { $0 == revoked.cid })
        refusedAsUnauthorised(try seal(proofs: [revoked]), revokedGate)
    }

    @Test("expired envelopes and expired delegations, misaddressed and oversized envelopes are refused")
    func staleMisaddressedOversized() throws {
        let gate = gate()
        #expect(refusal { try gate.admit(try seal(lifetime: 5), now: now + 60) } == "expired")
        #expect(
            refusal { try gate.admit(try seal(proofs: [try delegation(expiration: now - 10)]), now: now) } == "expired")
        let elsewhere = ActorAddress("actor://dep_aaaaaaaaaaaaaaaaaaaaaaaaaa/consumer/3")!
        #expect(refusal { try gate.admit(try seal(to: elsewhere), now: now) } == "misaddressed")
        let big = String(repeating: "x", count: ActorEnvelopes.maximumPayload + 1)
        #expect(throws: EnvelopeRefusal.oversized(ActorEnvelopes.maximumPayload + 1)) {
            try gate.admit(try seal(big), now: now)
        }
        #expect(throws: EnvelopeRefusal.self) { try seal(behavior: "Not A Behavior") }
    }
}
