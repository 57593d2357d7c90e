import Foundation
import OrreryAuth
import OrreryIdentity
import Synchronization
import Testing

@testable import OrchestratorService

/// Who may call a private port: invocations of /orrery/ingress/connect rooted in the deployment's consumer, and the
/// session cookies traded for them.
@Suite("Ingress authority")
struct IngressAuthorityTests {
    let orchestrator = SigningKey()
    let consumer = SigningKey()
    let now = Box(Int64(1_800_000_000))
    let validator = ChainValidator()
    let revocations: RevocationBook
    let authority: IngressAuthority
    let route: IngressRoute

    init() {
        revocations = RevocationBook(validator: validator)
        let clock = now
        authority = IngressAuthority(
            key: orchestrator, validator: validator, revocations: revocations, clock: { clock.withLock { $0 } })
        route = IngressRoute(
            deploymentID: "dep_abcdefghijklmnopqrstuvwxyz", consumer: consumer.did.string, allocation: "web",
            portName: "http", port: 8080, isPrivate: true, label: "web-http-abcdefghijklmnopqrstuvwxyz")
    }

    func container(
        by issuer: SigningKey, subject: DID? = nil, audience: DID? = nil, command: String = IngressAuthority.command,
        deployment: String? = nil, proofs: [Delegation] = [], lifetime: Int64 = 120
    ) throws -> String {
        let at = now.withLock { $0 }
        let invocation = Invocation.issue(
            by: issuer, subject: subject ?? consumer.did, audience: audience ?? orchestrator.did,
            command: try Command(command), arguments: ["deployment": .string(deployment ?? route.deploymentID)],
            proofs: proofs.map(\.cid), expiration: at + lifetime, issuedAt: at)
        return try UCANContainer.encodeText([invocation.envelope.bytes] + proofs.map(\.envelope.bytes))
    }

    @Test("the consumer's own invocation, and one by whoever it delegated to, name their invokers")
    func callers() throws {
        #expect(try authority.caller(bearer: try container(by: consumer), for: route).did == consumer.did.string)
        let friend = SigningKey()
        let delegation = Delegation.issue(
            by: consumer, to: friend.did, subject: consumer.did, command: try Command("/orrery/ingress"),
            expiration: now.withLock { $0 } + 600)
        let caller = try authority.caller(bearer: try container(by: friend, proofs: [delegation]), for: route)
        #expect(caller.did == friend.did.string && caller.tokens == [delegation.cid.description])
        #expect(caller.chainExpires == now.withLock { $0 } + 600)
    }

    @Test("refused: another deployment, another command, another audience, a stranger's root, a long or expired life")
    func refusals() throws {
        let stranger = SigningKey()
        let cases: [(String, IngressRefusal)] = [
            (
                try container(by: consumer, deployment: "dep_zzzzzzzzzzzzzzzzzzzzzzzzzz"),
                .forbidden("the invocation's args.deployment is not dep_abcdefghijklmnopqrstuvwxyz")
            ),
            (
                try container(by: consumer, command: "/orrery/exec/run"),
                .forbidden("the invocation is for /orrery/exec/run, the ingress needs /orrery/ingress/connect")
            ),
            (try container(by: consumer, audience: SigningKey().did), .unauthenticated("")),
            (
                try container(by: stranger, subject: stranger.did),
                .forbidden("the invocation's authority roots in \(stranger.did), not in the deployment's consumer")
            ),
            (try container(by: consumer, lifetime: 3600), .forbidden("")),
        ]
        for (container, expected) in cases {
            let refusal = #expect(throws: IngressRefusal.self) { try authority.caller(bearer: container, for: route) }
            switch (refusal, expected) {
            case (.unauthenticated?, .unauthenticated), (.forbidden?, .forbidden("")): break
            default: #expect(refusal == expected)
            }
        }
        // Signed by someone else than its issuer claims: not authenticated.
        let old = try container(by: consumer, lifetime: 10)
        now.withLock { $0 += 60 }
        #expect(throws: IngressRefusal.self) { try authority.caller(bearer: old, for: route) }
        #expect(throws: IngressRefusal.self) { try authority.caller(bearer: "not a container", for: route) }
    }

    @Test("a session cookie proves its caller on its own host only, until it expires or its chain is revoked")
    func cookies() throws {
        let friend = SigningKey()
        let delegation = Delegation.issue(
            by: consumer, to: friend.did, subject: consumer.did, command: try Command("/orrery/ingress/connect"),
            expiration: now.withLock { $0 } + 7200)
        let caller = try authority.caller(bearer: try container(by: friend, proofs: [delegation]), for: route)
        let host = "web-http-abcdefghijklmnopqrstuvwxyz.apps.test"
        let cookie = authority.cookie(for: caller, host: host)
        #expect(cookie.expires == now.withLock { $0 } + IngressAuthority.cookieLifetime)
        #expect(authority.caller(cookie: cookie.value, host: host) == friend.did.string)
        #expect(authority.caller(cookie: cookie.value, host: "other-http-abcdefghijklmnopqrstuvwxyz.apps.test") == nil)
        // Another orchestrator's signature, or a payload changed, is not ours.
        let foreign = IngressAuthority(key: SigningKey(), validator: validator, revocations: revocations)
        #expect(foreign.caller(cookie: cookie.value, host: host) == nil)
        let parts = cookie.value.split(separator: ".")
        let forged = "v1." + Base64.url(Array("\(host) \(consumer.did) 9999999999".utf8)) + "." + parts[2]
        #expect(authority.caller(cookie: forged, host: host) == nil)
        // Revoking the delegation ends the session.
        revocations.apply(cid: delegation.cid, revision: 1)
        #expect(authority.caller(cookie: cookie.value, host: host) == nil)
        // A cookie lives no longer than its chain, and not past its expiry.
        let short = Delegation.issue(
            by: consumer, to: friend.did, subject: consumer.did, command: try Command("/orrery/ingress/connect"),
            expiration: now.withLock { $0 } + 100)
        let brief = authority.cookie(
            for: try authority.caller(bearer: try container(by: friend, proofs: [short]), for: route), host: host)
        #expect(brief.expires == now.withLock { $0 } + 100)
        now.withLock { $0 += 101 }
        #expect(authority.caller(cookie: brief.value, host: host) == nil)
    }
}

/// A value tests change while the code under test reads it.
final class Box<Value: Sendable>: Sendable {
    private let value: Mutex<Value>

    init(_ value: Value) { self.value = Mutex(value) }

    func withLock<Result>(_ body: (inout Value) -> Result) -> Result { value.withLock { body(&$0) } }
}
