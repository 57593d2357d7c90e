import OrreryIdentity
import Testing

@testable import OrchestratorService

/// What a consumer's grant of ensemble network access must say before the orchestrator keeps it.
@Suite("Network grant rules")
struct NetworkGrantRulesTests {
    static let from = "dep_" + String(repeating: "a", count: 26)
    static let to = "dep_" + String(repeating: "b", count: 26)

    static func policy(_ json: String) throws -> Policy { try Policy(try IPLDJSON.parse(json)) }

    static func problems(
        _ delegation: Delegation, consumer: SigningKey, neighbour: SigningKey, now: Int64 = 1_000
    ) -> [String] {
        NetworkGrants.problems(
            delegation, from: from, fromConsumer: neighbour.did.string, to: to, consumer: consumer.did.string,
            now: now)
    }

    @Test("a right grant passes; each wrong issuer, subject, audience, command, policy or time is named")
    func rules() throws {
        let owner = SigningKey()
        let neighbour = SigningKey()
        let tight = try Self.policy(#"[["==", ".from", "\#(Self.from)"], ["==", ".to", "\#(Self.to)"]]"#)
        func issue(
            by issuer: SigningKey? = nil, to audience: DID? = nil, subject: DID? = nil,
            command: String = "/orrery/network/connect", policy: Policy? = nil, expiration: Int64 = 2_000
        ) throws -> Delegation {
            Delegation.issue(
                by: issuer ?? owner, to: audience ?? neighbour.did, subject: subject ?? owner.did,
                command: try Command(command), policy: policy ?? tight, expiration: expiration)
        }
        #expect(Self.problems(try issue(), consumer: owner, neighbour: neighbour) == [])
        #expect(Self.problems(try issue(command: "/orrery/network"), consumer: owner, neighbour: neighbour) == [])
        let stranger = SigningKey()
        let cases: [(Delegation, String)] = [
            (try issue(by: stranger, subject: stranger.did), "is issued by"),
            (try issue(subject: stranger.did), "its subject must be you"),
            (try issue(to: stranger.did), "is for \(stranger.did)"),
            (try issue(command: "/orrery/actor"), "its command /orrery/actor is not"),
            (try issue(expiration: 500), "it has expired"),
            (try issue(policy: try Self.policy(#"[["==", ".to", "\#(Self.to)"]]"#)), "does not fix .from"),
            (try issue(policy: try Self.policy(#"[["==", ".from", "\#(Self.from)"]]"#)), "does not fix .to"),
            (try issue(policy: try Self.policy(#"[["==", ".from", "dep_other"]]"#)), "does not let"),
        ]
        for (delegation, expected) in cases {
            let found = Self.problems(delegation, consumer: owner, neighbour: neighbour)
            #expect(found.contains { $0.contains(expected) }, "\(expected): \(found)")
        }
        // Bytes whose signature is not the issuer's: the envelope's signature (after its 3 head bytes) another key's.
        let genuine = try issue()
        let forged = try Delegation(
            bytes: Array(genuine.envelope.bytes.prefix(3)) + Array(stranger.sign(genuine.envelope.signedBytes))
                + Array(genuine.envelope.bytes.dropFirst(3 + 64)))
        #expect(Self.problems(forged, consumer: owner, neighbour: neighbour).contains("its signature is bad"))
    }
}
