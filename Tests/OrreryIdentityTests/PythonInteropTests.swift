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

/// The policy language's integer comparisons at every width boundary (2^31, 2^53, 2^63, 2^64, 2^256 and their
/// neighbours, both signs), against Python's arbitrary-precision integers.
@Suite("Policy integers against Python")
struct PolicyIntegerInteropTests {
    @Test("every operator over every boundary pair agrees with Python's exact integers")
    func boundaries() async throws {
        let powers = ["2147483648", "9007199254740992", "9223372036854775808", "18446744073709551616",
            "115792089237316195423570985008687907853269984665640564039457584007913129639936"]
        var values: [String] = ["0", "1", "-1"]
        for power in powers {
            let exact = try #require(ExactInteger(decimal: power))
            // The power, one below it and one above it, in both signs (powers of two end in 2, 6 or 8: no carry).
            let last = Int(String(power.last ?? "0")) ?? 0
            let below = String(power.dropLast()) + String(last - 1)
            let above = String(power.dropLast()) + String(last + 1)
            for text in [exact.description, below, above] where ExactInteger(decimal: text) != nil {
                values += [text, "-" + text]
            }
        }
        let operators = ["==", "!=", "<", "<=", ">", ">="]
        var cases: [[String]] = []
        for op in operators {
            for value in values {
                for bound in values { cases.append([op, value, bound]) }
            }
        }
        var swift: [Bool] = []
        for entry in cases {
            let bound = try #require(ExactInteger(decimal: entry[2]))
            let value = try #require(ExactInteger(decimal: entry[1]))
            let policy = try Policy(.list([.list([.string(entry[0]), .string(".n"), .exact(bound)])]))
            swift.append(policy.matches(.map(["n": .exact(value)])))
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cases-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try JSONSerialization.data(withJSONObject: cases).write(to: file)
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/policy_compare.py").path
        let (status, output) = try await ChildProcess.run(TestEnvironment.python, arguments: [script, file.path])
        #expect(status == 0, "\(output)")
        let line = try #require(output.split(separator: "\n").last.map(String.init))
        let python = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [Bool])
        #expect(python.count == cases.count && cases.count > 1000)
        for (index, entry) in cases.enumerated() where index < python.count && python[index] != swift[index] {
            Issue.record("\(entry[1]) \(entry[0]) \(entry[2]): Swift \(swift[index]), Python \(python[index])")
        }
    }
}
