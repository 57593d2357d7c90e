import Foundation
import OrreryIdentity
import Testing

@Suite("Chain validation: memoization, revocation, powerlines, policies")
struct ChainValidatorTests {
    let operatorKey = SigningKey()
    let orchestrator = SigningKey()
    let consumer = SigningKey()
    let now: Int64 = 1_800_000_000

    func chain(policy: Policy = .empty) throws -> (Delegation, Delegation) {
        let root = Delegation.issue(
            by: operatorKey, to: orchestrator.did, subject: operatorKey.did, command: try Command("/orrery"),
            expiration: now + 3600)
        let second = Delegation.issue(
            by: orchestrator, to: consumer.did, subject: operatorKey.did, command: try Command("/orrery/orchestrator"),
            policy: policy, expiration: now + 600)
        return (root, second)
    }

    func invoke(_ proofs: [Delegation], command: String = "/orrery/orchestrator/submit", args: [String: IPLD] = [:])
        throws -> Invocation
    {
        Invocation.issue(
            by: consumer, subject: operatorKey.did, command: try Command(command), arguments: args,
            proofs: proofs.map(\.cid), expiration: now + 60)
    }

    @Test("a chain validates once, is memoized, and a revocation both refuses and forgets it")
    func memoAndRevocation() throws {
        let validator = ChainValidator()
        let (root, second) = try chain()
        let proofs = [root.cid: root, second.cid: second]
        try validator.validate(try invoke([root, second]), proofs: proofs, now: now)
        #expect(validator.memoizedChainCount == 1)
        // A second invocation over the same chain uses the memo (it needs no proofs' signatures again).
        try validator.validate(try invoke([root, second]), proofs: proofs, now: now)
        #expect(validator.memoizedChainCount == 1)

        let revoked: Set<CID> = [second.cid]
        #expect(throws: UCANError(.revoked, "\(second.cid) has been revoked")) {
            try validator.validate(try invoke([root, second]), proofs: proofs, now: now) { revoked.contains($0) }
        }
        validator.forget(second.cid)
        #expect(validator.memoizedChainCount == 0)
    }

    @Test("memoized chains still check time, command and policy for each invocation")
    func memoDoesNotSkipPerInvocationChecks() throws {
        let validator = ChainValidator()
        let policy = try Policy(.list([.list([.string("<="), .string(".budget"), .integer(500)])]))
        let (root, second) = try chain(policy: policy)
        let proofs = [root.cid: root, second.cid: second]
        try validator.validate(try invoke([root, second], args: ["budget": .integer(400)]), proofs: proofs, now: now)
        #expect(throws: UCANError.self) {
            try validator.validate(
                try invoke([root, second], args: ["budget": .integer(501)]), proofs: proofs, now: now)
        }
        do {
            try validator.validate(
                try invoke([root, second], command: "/orrery/registry/join"), proofs: proofs, now: now)
            Issue.record("a command outside the delegation passed")
        } catch let error as UCANError {
            #expect(error.name == .invalidCommand)
        }
        do {
            try validator.validate(try invoke([root, second]), proofs: proofs, now: now + 601)
            Issue.record("an expired delegation passed")
        } catch let error as UCANError {
            #expect(error.name == .expired)
        }
    }

    @Test("a powerline delegation takes the subject of the chain before it")
    func powerline() throws {
        let (root, _) = try chain()
        let powerline = Delegation.issue(
            by: orchestrator, to: consumer.did, subject: nil, command: try Command("/"), expiration: nil)
        try ChainValidator().validate(
            try invoke([root, powerline]), proofs: [root.cid: root, powerline.cid: powerline], now: now)
    }

    @Test("a tampered token fails its signature")
    func tampered() throws {
        let (root, second) = try chain()
        var bytes = second.envelope.bytes
        // [0x82, 0x58, 0x40, <64 signature bytes>, …]: flipping a signature byte keeps the encoding valid.
        #expect(Array(bytes.prefix(3)) == [0x82, 0x58, 0x40])
        bytes[10] ^= 0x01
        let forged = try Delegation(bytes: bytes)
        do {
            try ChainValidator().validate(
                try invoke([root, forged]), proofs: [root.cid: root, forged.cid: forged], now: now)
            Issue.record("a tampered delegation passed")
        } catch let error as UCANError {
            #expect(error.name == .invalidSignature)
        }
    }
}
