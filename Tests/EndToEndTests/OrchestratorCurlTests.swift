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
            try await TestEnvironment.withTemporaryDirectory("orrery-curl") { directory in
                let credentials = directory.appendingPathComponent("credentials")
                let network = try TestNetwork(directory: credentials)
                let registry = try await JobConstellation.startRegistry(database, network, directory)
                defer { registry.child.signal(SIGKILL) }
                // No device answers offers here: a long offer timeout keeps the offer standing however slow the machine.
                let orchestrator = try await JobConstellation.startOrchestrator(
                    database, network, directory, registry: registry, extraArguments: ["--offer-timeout-ms", "600000"])
                defer { orchestrator.child.signal(SIGKILL) }
                let devices = try await OrchestratorTests.joinFleet(
                    registry: registry, operatorKey: network.operatorKey)
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
                        "ucan", "invoke", "--key", consumerKey, "--aud", orchestrator.ready.did, "--cmd", command,
                        "--args",
                        args, "--proof", proof,
                    ])
                }
                func curl(
                    _ method: String, _ body: String, token: String?, contentType: String = "application/json",
                    verb: String = "POST", scheme: String = "Bearer", bodyFile: String? = nil,
                    path: String = "/orrery.orchestrator.v1.Orchestrator/"
                )
                    async throws -> Reply
                {
                    var arguments = [
                        "-sS", "-X", verb, "-w", "\n%{http_code}", "-H", "Content-Type: \(contentType)",
                        "--data-binary", bodyFile.map { "@" + $0 } ?? body,
                        "http://127.0.0.1:\(orchestrator.ready.httpPort)\(path)\(method)",
                    ]
                    if let token { arguments += ["-H", "Authorization: \(scheme) \(token)"] }
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
                    token: try await token(
                        "/orrery/orchestrator/submit-workload", args: #"{"idempotency_key": "curl-1"}"#))
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
                #expect(plain.status == 415)
                #expect(plain.body.contains("Content-Type must be application/json"))
                let lookalike = try await curl(
                    "GetDeployment", #"{"id": "\#(deployment.id)"}"#,
                    token: try await token("/orrery/orchestrator/get-deployment"), contentType: "application/jsonx")
                #expect(lookalike.status == 415)
                let withCharset = try await curl(
                    "GetDeployment", #"{"id": "\#(deployment.id)"}"#,
                    token: try await token("/orrery/orchestrator/get-deployment"),
                    contentType: "Application/JSON; charset=utf-8", scheme: "bearer")
                #expect(
                    withCharset.status == 200, "a media type parameter and a lower-case scheme: \(withCharset.body)")

                // Methods and paths no route serves: 405 with Allow for a method asked with GET, 404 for nothing.
                let get = try await curl("GetDeployment", "", token: nil, verb: "GET")
                #expect(get.status == 405 && get.body.contains("POST only"), "\(get.body)")
                let nowhere = try await curl("Nowhere", "{}", token: nil, path: "/not/")
                #expect(nowhere.status == 404 && nowhere.body.contains(#""code": "not_found""#), "\(nowhere.body)")

                // Bodies: short enum names as the README promises, errors with the field's path, strict UTF-8, size.
                let short = try await curl(
                    "ExplainPlacement",
                    #"{"spec": {"name": "x", "allocations": [{"name": "a", "executor": "process", "artifact": {"text": "true"}, "resources": {"cpuCores": 1, "ramMib": "64"}, "constraints": {"spread": "across_devices"}}]}}"#,
                    token: try await token("/orrery/orchestrator/explain-placement"))
                #expect(short.status == 200, "\(short.body)")
                let wrongType = try await curl(
                    "ExplainPlacement",
                    #"{"spec": {"name": "x", "allocations": [{"name": "a", "resources": {"cpuCores": "lots"}}]}}"#,
                    token: try await token("/orrery/orchestrator/explain-placement"))
                #expect(wrongType.status == 400)
                #expect(wrongType.body.contains("at .spec.allocations[0].resources.cpuCores"), "\(wrongType.body)")
                let huge = try await curl(
                    "ExplainPlacement",
                    #"{"spec": {"name": "x", "allocations": [{"name": "a", "resources": {"cpuCores": 1e400}}]}}"#,
                    token: try await token("/orrery/orchestrator/explain-placement"))
                #expect(huge.status == 400 && huge.body.contains("cpuCores"), "\(huge.body)")
                let invalidUTF8 = directory.appendingPathComponent("invalid.json")
                try Data([0x7B, 0x22, 0x69, 0x64, 0x22, 0x3A, 0x22, 0xC3, 0x28, 0x22, 0x7D]).write(to: invalidUTF8)
                let notUTF8 = try await curl(
                    "GetDeployment", "", token: try await token("/orrery/orchestrator/get-deployment"),
                    bodyFile: invalidUTF8.path)
                #expect(notUTF8.status == 400 && notUTF8.body.contains("not valid UTF-8"), "\(notUTF8.body)")
                let oversized = directory.appendingPathComponent("oversized.json")
                try Data(("{\"id\": \"" + String(repeating: "x", count: 5 << 20) + "\"}").utf8).write(to: oversized)
                let tooLarge = try await curl(
                    "GetDeployment", "", token: try await token("/orrery/orchestrator/get-deployment"),
                    bodyFile: oversized.path)
                #expect(tooLarge.status == 413 && tooLarge.body.contains("resource_exhausted"), "\(tooLarge.body)")
            }
        }
    }
}
