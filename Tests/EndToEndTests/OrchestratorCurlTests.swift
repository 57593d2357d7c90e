import Foundation
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// The orchestrator's JSON-over-HTTP gateway driven by curl with tokens from `orrery ucan invoke`, as the README
/// shows it.
@Suite(
    "Orchestrator over curl", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct OrchestratorCurlTests {
    struct Reply {
        let status: Int
        let body: String
    }

    @Test("submit, get, watch (NDJSON) and cancel with curl; refusals map to HTTP statuses with a JSON error body")
    func curlSession() async throws {
        try await TestDatabase.withDatabase { database in
            let directory = try TestEnvironment.temporaryDirectory("orrery-curl")
            defer { try? FileManager.default.removeItem(at: directory) }
            let credentials = directory.appendingPathComponent("credentials")
            let network = try TestNetwork(directory: credentials)
            let registry = try await OrchestratorTests.startRegistry(database, network, directory)
            defer { registry.child.signal(SIGKILL) }
            let orchestrator = try await OrchestratorTests.startOrchestrator(
                database, network, directory, registry: registry)
            defer { orchestrator.child.signal(SIGKILL) }
            let devices = try await OrchestratorTests.joinFleet(registry: registry, operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(
                try OrchestratorTests.Consumer(operatorKey: network.operatorKey), orchestrator, devices: 3)

            // The consumer's key and its delegation from the operator, with the CLI.
            let cli = TestEnvironment.executable("orrery")
            func run(_ arguments: [String]) async throws -> String {
                let (status, output) = try await ChildProcess.run(cli, arguments: arguments)
                #expect(status == 0, "orrery \(arguments.joined(separator: " ")): \(output)")
                return output.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let consumerKey = directory.appendingPathComponent("consumer.key").path
            _ = try await run(["key", "new", consumerKey])
            let consumerDID = try await run(["key", "show", consumerKey])
            let proof = directory.appendingPathComponent("consumer.ucan").path
            try await run([
                "ucan", "delegate", "--key", credentials.appendingPathComponent("operator.key").path, "--to",
                consumerDID, "--cmd", "/orrery/orchestrator", "--exp", "1h",
            ]).write(toFile: proof, atomically: true, encoding: .utf8)
            func token(_ command: String, args: String = "{}") async throws -> String {
                try await run([
                    "ucan", "invoke", "--key", consumerKey, "--aud", orchestrator.ready.did, "--cmd", command, "--args",
                    args, "--proof", proof,
                ])
            }
            func curl(_ method: String, _ body: String, token: String?, contentType: String = "application/json")
                async throws -> Reply
            {
                var arguments = [
                    "-sS", "-X", "POST", "-w", "\n%{http_code}", "-H", "Content-Type: \(contentType)", "--data", body,
                    "http://127.0.0.1:\(orchestrator.ready.httpPort)/orrery.orchestrator.v1.Orchestrator/\(method)",
                ]
                if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
                let (status, output) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/usr/bin/curl"), arguments: arguments)
                #expect(status == 0, "\(output)")
                let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
                return Reply(
                    status: Int(lines.last ?? "") ?? 0, body: lines.dropLast().joined(separator: "\n"))
            }

            // The consumer's authority for the orchestrator to propose contracts for it, base64 in JSON.
            let authority = try await run([
                "ucan", "delegate", "--key", consumerKey, "--to", orchestrator.ready.did, "--cmd",
                "/orrery/notary/propose",
                "--exp", "1h",
            ])
            let spec = """
                {"consumerAuthority": "\(Data(authority.utf8).base64EncodedString())",
                 "spec": {"name": "hello", "allocations": [{"name": "main", "executor": "EXECUTOR_PROCESS",
                  "artifact": {"text": "#!/bin/sh\\necho hello\\n"}, "resources": {"cpuCores": 2, "ramMib": "512"},
                  "maxDurationSeconds": 600, "constraints": {"location": {"countries": ["FR", "US"]}}}]},
                 "idempotencyKey": "curl-1"}
                """
            let submitted = try await curl(
                "SubmitWorkload", spec,
                token: try await token("/orrery/orchestrator/submit-workload", args: #"{"idempotency_key": "curl-1"}"#))
            #expect(submitted.status == 200, "\(submitted.body)")
            let deployment = try Orrery_Orchestrator_V1_Deployment(jsonString: submitted.body)
            #expect(deployment.state == .offered)
            #expect(deployment.assignments.map(\.deviceDid) == [devices[1]])
            #expect(deployment.consumerDid == consumerDID)

            let fetched = try await curl(
                "GetDeployment", #"{"id": "\#(deployment.id)"}"#,
                token: try await token("/orrery/orchestrator/get-deployment"))
            #expect(fetched.status == 200)
            #expect(try Orrery_Orchestrator_V1_Deployment(jsonString: fetched.body).id == deployment.id)

            // Watch as newline-delimited JSON; a cancellation ends it.
            let watchToken = try await token("/orrery/orchestrator/watch-deployment")
            async let watched = curl("WatchDeployment", #"{"id": "\#(deployment.id)"}"#, token: watchToken)
            try await Task.sleep(for: .milliseconds(500))
            let cancelled = try await curl(
                "CancelDeployment", #"{"id": "\#(deployment.id)"}"#,
                token: try await token("/orrery/orchestrator/cancel-deployment"))
            #expect(cancelled.status == 200)
            let stream = try await watched
            #expect(stream.status == 200)
            let states = try stream.body.split(separator: "\n").map {
                try Orrery_Orchestrator_V1_DeploymentEvent(jsonString: String($0)).state
            }
            #expect(states == [.submitted, .matched, .offered, .cancelled])

            // Refusals: no token 401, a token for another command 403, unknown id 404, bad JSON 400, bad spec 400,
            // wrong content type 400; each with a JSON error body naming the problem.
            let anonymous = try await curl("GetDeployment", #"{"id": "\#(deployment.id)"}"#, token: nil)
            #expect(anonymous.status == 401)
            #expect(anonymous.body.contains(#""code": "unauthenticated""#))
            let wrongCommand = try await curl(
                "GetDeployment", #"{"id": "\#(deployment.id)"}"#,
                token: try await token("/orrery/orchestrator/list-deployments"))
            #expect(wrongCommand.status == 403)
            let missing = try await curl(
                "GetDeployment", #"{"id": "dep_aaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
                token: try await token("/orrery/orchestrator/get-deployment"))
            #expect(missing.status == 404)
            #expect(missing.body.contains("not_found"))
            let garbled = try await curl(
                "GetDeployment", "{not json", token: try await token("/orrery/orchestrator/get-deployment"))
            #expect(garbled.status == 400)
            let badSpec = try await curl(
                "ExplainPlacement", #"{"spec": {"name": "x", "allocations": [{"name": "a"}]}}"#,
                token: try await token("/orrery/orchestrator/explain-placement"))
            #expect(badSpec.status == 400)
            #expect(badSpec.body.contains("allocations[0].executor: required"), "\(badSpec.body)")
            let plain = try await curl(
                "GetDeployment", "id=1", token: try await token("/orrery/orchestrator/get-deployment"),
                contentType: "text/plain")
            #expect(plain.status == 400)
            #expect(plain.body.contains("Content-Type must be application/json"))
        }
    }
}
