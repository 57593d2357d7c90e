import Foundation
import OrreryIdentity
import OrreryTestSupport
import Testing

/// The `orrery` CLI as a person uses it: keys, DIDs, delegations, invocations, verification, operator init.
@Suite("orrery CLI")
struct CLITests {
    func orrery(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await ChildProcess.run(TestEnvironment.executable("orrery"), arguments: arguments)
    }

    @Test("key new/show, did resolve, ucan delegate → invoke → verify, inspect; verify names the spec's error")
    func tokens() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-cli") { directory in
            func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

            let (newStatus, ownerDID) = try await orrery(["key", "new", path("owner.key")])
            #expect(newStatus == 0)
            let owner = ownerDID.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(
                try await orrery(["key", "show", path("owner.key")]).output.trimmingCharacters(
                    in: .whitespacesAndNewlines)
                    == owner)
            #expect(try await orrery(["key", "new", path("owner.key")]).status != 0, "refuses to overwrite")
            let user = try await orrery(["key", "new", path("user.key")]).output.trimmingCharacters(
                in: .whitespacesAndNewlines)

            let (resolveStatus, document) = try await orrery(["did", "resolve", owner])
            #expect(resolveStatus == 0)
            #expect(document == (try DIDDocument(resolving: try DID(owner)).json()) + "\n")
            #expect(try await orrery(["did", "resolve", "did:web:x"]).status != 0)

            let (delegateStatus, delegation) = try await orrery([
                "ucan", "delegate", "--key", path("owner.key"), "--to", user, "--cmd", "/orrery/orchestrator",
                "--pol", #"[["<=", ".budget", 500]]"#, "--exp", "1h",
            ])
            #expect(delegateStatus == 0, "\(delegation)")
            try delegation.write(toFile: path("delegation.ucan"), atomically: true, encoding: .utf8)
            let chain = try DelegationChain.read(delegation)
            #expect(chain.count == 1 && chain[0].issuer.string == owner && chain[0].audience.string == user)

            func invoke(_ budget: Int) async throws -> String {
                let (status, container) = try await orrery([
                    "ucan", "invoke", "--key", path("user.key"), "--aud", owner, "--cmd",
                    "/orrery/orchestrator/submit-workload",
                    "--args", "{\"budget\": \(budget)}", "--proof", path("delegation.ucan"),
                ])
                #expect(status == 0, "\(container)")
                return container
            }
            try await invoke(400).write(toFile: path("ok.ucan"), atomically: true, encoding: .utf8)
            let valid = try await orrery(["ucan", "verify", path("ok.ucan")])
            #expect(valid.status == 0, "\(valid.output)")

            try await invoke(900).write(toFile: path("over.ucan"), atomically: true, encoding: .utf8)
            let over = try await orrery(["ucan", "verify", path("over.ucan")])
            #expect(over.status != 0)
            #expect(over.output.hasPrefix("MatchError"), "\(over.output)")

            let later = Int64(Date().timeIntervalSince1970) + 7200
            let expired = try await orrery(["ucan", "verify", path("ok.ucan"), "--at", String(later)])
            #expect(expired.status != 0)
            #expect(expired.output.hasPrefix("Expired"), "\(expired.output)")
            // --json: one object on stdout, the same verdict and exit status.
            func verdict(_ output: String) -> [String: Any] {
                (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any] ?? [:]
            }
            let validJSON = try await orrery(["ucan", "verify", "--json", path("ok.ucan")])
            #expect(validJSON.status == 0, "\(validJSON.output)")
            #expect(verdict(validJSON.output)["valid"] as? Bool == true, "\(validJSON.output)")
            #expect(verdict(validJSON.output)["command"] as? String == "/orrery/orchestrator/submit-workload")
            #expect(verdict(validJSON.output)["subject"] as? String == owner, "\(validJSON.output)")
            let overJSON = try await orrery(["ucan", "verify", "--json", path("over.ucan")])
            #expect(overJSON.status != 0)
            #expect(verdict(overJSON.output)["valid"] as? Bool == false, "\(overJSON.output)")
            #expect(verdict(overJSON.output)["error"] as? String == "MatchError", "\(overJSON.output)")

            let inspected = try await orrery(["ucan", "inspect", path("ok.ucan")])
            #expect(inspected.status == 0)
            #expect(inspected.output.contains("ucan/inv@1.0.0") && inspected.output.contains("ucan/dlg@1.0.0"))
            #expect(inspected.output.contains("signature valid"))
            let json = try await orrery(["ucan", "inspect", "--json", path("ok.ucan")])
            let parsed = try IPLDJSON.parse(json.output)
            #expect(parsed.listValue?.count == 2)
        }
    }

    @Test("operator init creates the operator, a key and a delegation per service, mode 0600, and is re-runnable")
    func operatorInit() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-op") { directory in
            let credentials = directory.appendingPathComponent("credentials").path
            let first = try await orrery(["operator", "init", credentials])
            #expect(first.status == 0, "\(first.output)")
            let operatorDID = try String(contentsOfFile: credentials + "/operator.did", encoding: .utf8)
                .trimmingCharacters(
                    in: .whitespacesAndNewlines)
            for service in TestNetwork.services {
                let key = credentials + "/\(service)/service.key"
                #expect((try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int) == 0o600)
                let chain = try DelegationChain.read(
                    try String(contentsOfFile: credentials + "/\(service)/delegation.ucan", encoding: .utf8))
                #expect(chain.count == 1)
                #expect(chain[0].issuer.string == operatorDID && chain[0].subject?.string == operatorDID)
                #expect(chain[0].audience == (try KeyFile.read(key)).did)
                let environment = try String(contentsOfFile: credentials + "/\(service)/env", encoding: .utf8)
                #expect(environment.contains("ORRERY_TRUST_OPERATOR=\(operatorDID)"))
            }
            let second = try await orrery(["operator", "init", credentials])
            #expect(second.output == first.output, "re-running keeps the identities")
        }
    }
}
