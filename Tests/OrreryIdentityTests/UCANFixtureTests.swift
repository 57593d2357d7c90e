import Foundation
import OrreryIdentity
import Testing

@Suite("UCAN 1.0.0 fixtures")
struct UCANFixtureTests {
    static func principal(_ name: String) throws -> SigningKey {
        let file = try #require(try Vectors.json("ucan-1.0.0/delegation.json") as? [String: Any])
        let text = try #require((file["principals"] as? [String: String])?[name])
        let bytes = try #require(Base64.decode(text))
        #expect(Array(bytes.prefix(2)) == Varint.encode(0x1300))  // ed25519-priv
        return try SigningKey(seed: Array(bytes.dropFirst(2)))
    }

    @Test("delegation.json: decodes to the listed fields, CID and signature; re-issuing it gives the same bytes")
    func delegation() throws {
        let file = try #require(try Vectors.json("ucan-1.0.0/delegation.json") as? [String: Any])
        let valid = try #require(file["valid"] as? [[String: Any]])
        for vector in valid {
            let token = try #require(vector["token"] as? String)
            let bytes = try #require(Base64.decode(token))
            let delegation = try Delegation(bytes: bytes)
            let envelope = try #require(vector["envelope"] as? [String: Any])
            let payload = try #require(envelope["payload"] as? [String: Any])
            #expect(delegation.cid.string == vector["cid"] as? String)
            #expect(delegation.issuer.string == payload["iss"] as? String)
            #expect(delegation.audience.string == payload["aud"] as? String)
            #expect(delegation.subject?.string == payload["sub"] as? String)
            #expect(delegation.command.string == payload["cmd"] as? String)
            #expect(delegation.expiration == (payload["exp"] as? NSNumber)?.int64Value)
            #expect(delegation.nonce == Base64.decode(try #require(payload["nonce"] as? String)))
            #expect(delegation.envelope.signature == Base64.decode(try #require(envelope["signature"] as? String)))
            #expect(delegation.envelope.signatureIsValid(issuer: delegation.issuer))

            // Ed25519 is deterministic: the same payload signed by bob's key gives the fixture byte for byte.
            let bob = try Self.principal("bob")
            #expect(bob.did == delegation.issuer)
            let reissued = Delegation.issue(
                by: bob, to: delegation.audience, subject: delegation.subject, command: delegation.command,
                policy: delegation.policy, expiration: delegation.expiration, nonce: delegation.nonce)
            #expect(reissued.envelope.bytes == bytes)
            #expect(reissued.cid == delegation.cid)
        }
    }

    @Test("invocation.json: the 7 valid chains pass and the 13 invalid ones fail with the spec's error name")
    func invocations() throws {
        let file = try #require(try Vectors.json("ucan-1.0.0/invocation.json") as? [String: Any])
        let valid = try #require(file["valid"] as? [[String: Any]])
        let invalid = try #require(file["invalid"] as? [[String: Any]])
        #expect(valid.count == 7)
        #expect(invalid.count == 13)
        func run(_ vector: [String: Any]) throws -> (() throws -> ChainValidator.Validated) {
            let invocationBytes = try #require(Vectors.dagJSONBytes(vector["invocation"]))
            let proofs = try #require(vector["proofs"] as? [Any]).map {
                try Delegation(bytes: Vectors.dagJSONBytes($0) ?? [])
            }
            let time = try #require((vector["time"] as? NSNumber)?.int64Value)
            return {
                let invocation = try Invocation(bytes: invocationBytes)
                return try ChainValidator().validate(
                    invocation, proofs: Dictionary(uniqueKeysWithValues: proofs.map { ($0.cid, $0) }), now: time)
            }
        }
        for vector in valid {
            let name = vector["name"] as? String ?? "?"
            #expect(throws: Never.self, "\(name)") { _ = try run(vector)() }
        }
        for vector in invalid {
            let name = vector["name"] as? String ?? "?"
            let expected = try #require((vector["error"] as? [String: Any])?["name"] as? String)
            do {
                _ = try run(vector)()
                Issue.record("\(name): expected \(expected), but it validated")
            } catch let error as UCANError {
                #expect(error.name.rawValue == expected, "\(name): \(error)")
            }
        }
    }

    @Test("policy.json: every valid policy matches its args and every invalid one does not")
    func policies() throws {
        let text = String(decoding: try Vectors.data("ucan-1.0.0/policy.json"), as: UTF8.self)
        let file = try Vectors.lenientIPLD(text)
        let valid = try #require(file["valid"]?.listValue)
        let invalid = try #require(file["invalid"]?.listValue)
        var checked = 0
        for (cases, expected) in [(valid, true), (invalid, false)] {
            for vector in cases {
                let args = try #require(vector["args"])
                for policy in try #require(vector["policies"]?.listValue) {
                    let parsed = try Policy(policy)
                    #expect(parsed.matches(args) == expected, "\(policy) on \(args)")
                    checked += 1
                }
            }
        }
        #expect(checked == 25)
    }

    @Test("policy language: selectors, comparisons, quantifiers, like, and refusals of malformed policies")
    func policyLanguage() throws {
        let args = try Vectors.lenientIPLD(
            #"{"from": "alice@example.com", "to": ["bob@example.com", "carol@not.example.com", "dan@example.com"], "n": 5, "b": {"/": 1}, "m": {"x": 1, "y": 2}}"#
        )
        func holds(_ json: String) throws -> Bool { try Policy(try Vectors.lenientIPLD(json)).matches(args) }
        #expect(try holds(#"[["==", ".to[1]", "carol@not.example.com"]]"#))
        #expect(try holds(#"[["==", ".to[-1]", "dan@example.com"]]"#))
        #expect(try holds(#"[["==", ".to[99]?", null]]"#))
        #expect(try !holds(#"[["==", ".to[99]", null]]"#))
        #expect(try holds(#"[["==", ".to[1:]", ["carol@not.example.com", "dan@example.com"]]]"#))
        #expect(try holds(#"[["==", ".to[:-2]", ["bob@example.com"]]]"#))
        #expect(try holds(#"[["==", ".[\"from\"]", "alice@example.com"]]"#))
        #expect(try holds(#"[["==", ".missing", null]]"#))
        #expect(try !holds(#"[["==", ".missing.deeper", null]]"#))
        // Resolution stops at the first failing segment unless that segment is optional (the spec's rule).
        #expect(try !holds(#"[["==", ".missing?.deeper", null]]"#))
        #expect(try holds(#"[["==", ".missing.deeper?", null]]"#))
        #expect(try holds(#"[["all", ".m", [">", ".", 0]], ["==", ".m[]", [1, 2]]]"#))
        #expect(try holds(#"[["<=", ".n", 5], [">", ".n", 4.5], ["!=", ".n", "5"]]"#))
        #expect(try !holds(#"[["<", ".from", 5]]"#))
        #expect(try !holds(#"[["like", ".n", "*"]]"#))
        #expect(try !holds(#"[["any", ".n", ["==", ".", 5]]]"#))
        #expect(try holds(#"[["any", ".to", ["like", ".", "*@not.*"]]]"#))
        for bad in [
            #"[["~=", ".a", 1]]"#, #"[["==", "a", 1]]"#, #"[["==", ".a..b", 1]]"#, #"[["<", ".a", "x"]]"#,
            #"[["and", 1]]"#, #"{"a": 1}"#,
        ] {
            #expect(throws: PolicyError.self, "\(bad)") { try Policy(try Vectors.lenientIPLD(bad)) }
        }
    }

    @Test("commands cover by whole segments: /a covers /a/b, not /ab; / covers everything")
    func commands() throws {
        #expect(try Command("/a").covers(Command("/a/b")))
        #expect(try Command("/a").covers(Command("/a")))
        #expect(try !Command("/a").covers(Command("/ab")))
        #expect(try Command("/").covers(Command("/orrery/registry/join")))
        #expect(try !Command("/a/b").covers(Command("/a")))
        for bad in ["a", "/a/", "/A", "//a", ""] {
            #expect(throws: UCANError.self, "\(bad)") { try Command(bad) }
        }
    }

    @Test("container vectors: every encoding decodes to its tokens; ours round-trip through every header")
    func containers() throws {
        var decoded: [[[UInt8]]] = []
        for name in ["Bytes", "BytesGzipped", "Base64StdPadding", "Base64URL"] {
            let bytes = Array(try Vectors.data("ucan-container/\(name)"))
            decoded.append(try UCANContainer.decode(bytes))
        }
        // Each file carries its own ten tokens (rc.1 UCANs): each decodes to ten signed envelopes.
        for tokens in decoded {
            #expect(tokens.count == 10)
            for token in tokens {
                guard case .list(let parts) = try DAGCBOR.decode(token), parts.count == 2, case .bytes = parts[0] else {
                    Issue.record("a container entry is not a signed envelope")
                    continue
                }
            }
        }
        // The vectors list their tokens unsorted; the container spec asks encoders to sort them bytewise, so ours
        // differs from the vector only in order.
        let sorted = decoded[0].sorted { $0.lexicographicallyPrecedes($1) }
        for header in UCANContainer.Header.allCases {
            let encoded = try UCANContainer.encode(decoded[0].reversed(), header: header)
            #expect(encoded.first == header.rawValue)
            #expect(try UCANContainer.decode(encoded) == sorted)
        }
        let raw = Array(try Vectors.data("ucan-container/Bytes"))
        #expect(try UCANContainer.encode(decoded[0], header: .raw).count == raw.count)
        #expect(throws: UCANError.self) { try UCANContainer.decode([0x41, 0x00]) }
        #expect(throws: UCANError.self) { try UCANContainer.decode("C!!!") }
    }

    @Test("only the 1.0.0 tags are accepted: an rc.1 token is refused")
    func rcTokensRefused() throws {
        let tokens = try UCANContainer.decode(Array(try Vectors.data("ucan-container/Bytes")))
        do {
            _ = try UCANEnvelope(bytes: tokens[0])
            Issue.record("an rc.1 token was accepted")
        } catch let error as UCANError {
            #expect(error.name == .malformedToken)
            #expect(error.reason.contains("rc.1"))
        }
    }
}
