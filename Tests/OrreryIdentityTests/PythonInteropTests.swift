import Foundation
import OrreryIdentity
import OrreryTestSupport
import Testing

/// Our tokens checked by independent Python libraries, and theirs by us; tampered copies fail on both sides.
@Suite("UCAN interoperability with Python (dag-cbor, PyNaCl, multiformats, base58)")
struct PythonInteropTests {
    struct Verdict: Decodable {
        let cid: String
        let tag: String
        let iss: String
        let cmd: String
        let valid: Bool
        let canonical: Bool
    }

    struct Made: Decodable {
        let owner: String
        let invoker: String
        let delegation: String
        let invocation: String
        let delegation_cid: String
        let invocation_cid: String
    }

    func python(_ arguments: [String]) async throws -> String {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/ucan_interop.py").path
        let (status, output) = try await ChildProcess.run(TestEnvironment.python, arguments: [script] + arguments)
        #expect(status == 0, "\(output)")
        return output
    }

    @Test("tokens made in Swift verify in Python with the same CIDs; a tampered copy does not")
    func swiftToPython() async throws {
        let owner = SigningKey()
        let invoker = SigningKey()
        let delegation = Delegation.issue(
            by: owner, to: invoker.did, subject: owner.did, command: try Command("/orrery/registry"),
            policy: try Policy(try IPLDJSON.parse(#"[["<=", ".budget", 500], ["like", ".name", "gpu-*"]]"#)),
            expiration: 1_900_000_000, meta: ["note": .string("ünïcode ✓"), "n": .float(1.5)])
        let invocation = Invocation.issue(
            by: invoker, subject: owner.did, audience: owner.did, command: try Command("/orrery/registry/get-device"),
            arguments: ["budget": .integer(400), "name": .string("gpu-1"), "blob": .bytes([0, 1, 2])],
            proofs: [delegation.cid], expiration: 1_900_000_000, issuedAt: 1_800_000_000)
        var tampered = invocation.envelope.bytes
        tampered[tampered.count - 2] ^= 0x01
        let output = try await python([
            "verify", Hex.encode(delegation.envelope.bytes), Hex.encode(invocation.envelope.bytes),
            Hex.encode(tampered),
        ])
        let verdicts = try output.split(separator: "\n").map {
            try JSONDecoder().decode(Verdict.self, from: Data($0.utf8))
        }
        #expect(verdicts.count == 3)
        #expect(verdicts[0].valid && verdicts[0].canonical)
        #expect(verdicts[0].cid == delegation.cid.string)
        #expect(verdicts[0].tag == "ucan/dlg@1.0.0" && verdicts[0].iss == owner.did.string)
        #expect(verdicts[1].valid && verdicts[1].canonical)
        #expect(verdicts[1].cid == invocation.cid.string)
        #expect(verdicts[1].cmd == "/orrery/registry/get-device")
        #expect(!verdicts[2].valid)
    }

    @Test("tokens made in Python verify in Swift, with the same CIDs, and their chain validates; a tampered copy fails")
    func pythonToSwift() async throws {
        let made = try JSONDecoder().decode(Made.self, from: Data(try await python(["make"]).utf8))
        let delegation = try Delegation(bytes: try #require(Hex.decode(made.delegation)))
        let invocation = try Invocation(bytes: try #require(Hex.decode(made.invocation)))
        #expect(delegation.cid.string == made.delegation_cid)
        #expect(invocation.cid.string == made.invocation_cid)
        #expect(delegation.issuer.string == made.owner)
        #expect(invocation.issuer.string == made.invoker)
        #expect(DAGCBOR.encode(try DAGCBOR.decode(delegation.envelope.bytes)) == delegation.envelope.bytes)
        let now = Int64(Date().timeIntervalSince1970)
        try ChainValidator().validate(invocation, proofs: [delegation.cid: delegation], now: now)

        var tampered = try #require(Hex.decode(made.delegation))
        tampered[5] ^= 0x01  // inside the signature
        let forged = try Delegation(bytes: tampered)
        do {
            try ChainValidator().validate(invocation, proofs: [forged.cid: forged], now: now)
            Issue.record("a tampered Python delegation validated")
        } catch let error as UCANError {
            // The forged copy has another CID, so the invocation's proof is not found; verified alone, it fails.
            #expect(error.name == .unavailableProof)
        }
        #expect(!forged.envelope.signatureIsValid(issuer: forged.issuer))
    }
}
