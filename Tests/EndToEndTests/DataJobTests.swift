import Foundation
import GRPCCore
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import OrreryTestSupport
import OrreryWorkloadSpec
import SwiftProtobuf
import Testing

/// Jobs that read and write data sets: inputs from a real S3-compatible server (moto on loopback) and from plain
/// http, outputs of 200 MiB uploaded to the consumer's bucket, all through `orrery run` with the consumer's own
/// credentials — the devices see presigned URLs only — and checked against boto3, the receipts and the CLI's download.
@Suite("Data jobs", .serialized)
struct DataJobTests {
    static let script = """
        set -e
        sha256sum /inputs/train.csv /inputs/docs/notes.txt > /work/summary.txt
        if touch /inputs/x 2>/dev/null; then echo writable >> /work/summary.txt; else echo read-only >> /work/summary.txt; fi
        head -c 209715200 /dev/zero | tr '\\0' 'z' > /work/big.bin
        """

    static func spec(
        trainSHA: String, notesSHA: String, notesURL: String, outputsTo: String, script: String = script
    ) -> String {
        """
        name: data
        allocations:
          - name: main
            executor: EXECUTOR_PROCESS
            artifact:
              text: |
        \(script.split(separator: "\n").map { "        " + $0 }.joined(separator: "\n"))
            resources: {cpu_cores: 1, ram_mib: 256, disk_mib: 512}
            max_duration_seconds: 600
            inputs:
              - {name: train.csv, source: "s3://data/train.csv", sha256: "\(trainSHA)"}
              - {name: notes, source: "\(notesURL)", sha256: "\(notesSHA)", mount: /inputs/docs/notes.txt}
            outputs: [summary.txt, big.bin]
            outputs_to: "\(outputsTo)"
        """
    }

    @Test(
        "inputs from S3 (presigned by the CLI) and http are verified and mounted read-only; a 200 MiB output goes to the consumer's bucket, named with its sha256 and size in the completion receipt and fetched back by `orrery outputs`; a second run reads its inputs from the cache; a wrong digest fails the start; no credential or signature in any log"
    )
    func inputsAndOutputsThroughS3() async throws {
        try await S3Fixture.with { s3 in
            let trust = ["--images-registry-addresses", "any"]
            try await JobConstellation.run("orrery-data-job") { constellation in
                let agent = try await constellation.startAgent(
                    "data", owner: #"{"location": {"country": "SE"}, "prices": {"per_core_hour": 5}}"#,
                    extraArguments: trust)
                defer { agent.service.child.signal(SIGKILL) }
                let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
                try await OrchestratorTests.waitForFleet(consumer, constellation.orchestrator, devices: 1)
                let directory = constellation.directory

                // The consumer's data, uploaded with boto3: a private object and a public one read over http.
                let train = directory.appendingPathComponent("train.csv")
                try Data((0..<50_000).map { "row \($0),\($0 * 7)\n" }.joined().utf8).write(to: train)
                let trainObject = try await s3.put(train.path, bucket: "data", key: "train.csv")
                let notes = directory.appendingPathComponent("notes.txt")
                try Data("notes for the run\n".utf8).write(to: notes)
                let notesObject = try await s3.put(notes.path, bucket: "public", key: "notes.txt", public: true)
                _ = try await s3.put(notes.path, bucket: "results", key: "placeholder")
                let notesURL = s3.ready.endpoint + "/public/notes.txt"

                let key = constellation.network.directory.appendingPathComponent("operator.key").path
                let common = ["--orchestrator", constellation.orchestratorAddress, "--key", key]
                func run(_ spec: String, name: String) async throws -> (Int32, String) {
                    let file = directory.appendingPathComponent(name).path
                    try spec.write(toFile: file, atomically: true, encoding: .utf8)
                    return try await ChildProcess.run(
                        TestEnvironment.executable("orrery"), arguments: ["run", "-q", "--wait", file] + common,
                        environment: s3.environment, timeout: .seconds(400))
                }
                func deploymentID(_ output: String) -> String {
                    output.split(separator: "\n").last.map(String.init) ?? ""
                }

                let (status, output) = try await run(
                    Self.spec(
                        trainSHA: trainObject.sha256, notesSHA: notesObject.sha256, notesURL: notesURL,
                        outputsTo: "s3://results/runs/first"), name: "first.yaml")
                let first = deploymentID(output)
                if status != 0 {
                    let (_, shown) = try await ChildProcess.run(
                        TestEnvironment.executable("orrery"), arguments: ["status", first, "--json"] + common)
                    Issue.record("the first run failed: \(output)\n\(shown.prefix(4000))")
                    return
                }

                // The outputs, read back with boto3: the inputs' digests as the sandbox saw them, read-only.
                let summaryFile = directory.appendingPathComponent("summary.txt").path
                try await s3.get(bucket: "results", key: "runs/first/main/0/summary.txt", into: summaryFile)
                let summary = try String(contentsOfFile: summaryFile, encoding: .utf8)
                #expect(summary.contains("\(trainObject.sha256)  /inputs/train.csv"), "\(summary)")
                #expect(summary.contains("\(notesObject.sha256)  /inputs/docs/notes.txt"), "\(summary)")
                #expect(summary.hasSuffix("read-only\n"), "\(summary)")
                let big = try await s3.get(
                    bucket: "results", key: "runs/first/main/0/big.bin",
                    into: directory.appendingPathComponent("big-boto3.bin").path)
                #expect(big.size == 200 << 20)

                // `orrery outputs` lists where each is and fetches it from the bucket, checked.
                let (listed, listing) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"), arguments: ["outputs", first, "--json"] + common)
                #expect(listed == 0, "\(listing)")
                #expect(listing.contains(#""location":"s3:\/\/results\/runs\/first\/main\/0\/big.bin""#), "\(listing)")
                #expect(listing.contains(#""sha256":"\#(big.sha256)""#), "\(listing)")
                let fetched = directory.appendingPathComponent("fetched")
                let (downloaded, downloadOutput) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"),
                    arguments: ["outputs", first, "--to", fetched.path] + common, environment: s3.environment)
                #expect(downloaded == 0, "\(downloadOutput)")
                let bigFetched = fetched.appendingPathComponent("main-0/big.bin").path
                let fetchedSize = try FileManager.default.attributesOfItem(atPath: bigFetched)[.size] as? Int
                #expect(fetchedSize == 200 << 20)

                // The completion receipt the device signed names both outputs with their sha256, size and place.
                let parties = try ContractParties(network: constellation.network)
                let (_, firstStatus) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"), arguments: ["status", first, "--json"] + common)
                let deployment = try Orrery_Orchestrator_V1_Deployment(
                    jsonString: String(firstStatus.drop { $0 != "{" }),
                    options: {
                        var options = JSONDecodingOptions(); options.ignoreUnknownFields = true; return options
                    }())
                let contractID = try #require(deployment.assignments.first?.contractID)
                let completion = try await parties.withNotary(constellation.notary) { notary in
                    let record = try await notary.getContract(.with { $0.id = contractID })
                    let leaves = try await notary.getEntries(.with { $0.start = 0 }).leaves
                    for index in record.entryIndexes.reversed() {
                        let entry = try Orrery_Notary_V1_LogEntry(
                            serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: leaves[Int(index)]).payload)
                        if entry.kind == .completionReceipt {
                            return try Orrery_Notary_V1_CompletionReceipt(serializedBytes: entry.act.payload)
                        }
                    }
                    return Orrery_Notary_V1_CompletionReceipt()
                }
                let bigReceipt = completion.outputs.first { $0.path == "big.bin" }
                #expect(bigReceipt?.sha256 == big.sha256)
                #expect(bigReceipt?.size == 200 << 20)
                #expect(bigReceipt?.location == "s3://results/runs/first/main/0/big.bin")

                // A second run of the same consumer with the same inputs fetches neither again.
                let fetchesBefore = s3.requests().filter {
                    $0.hasPrefix("GET /data/train.csv") || $0.hasPrefix("GET /public/notes.txt")
                }.count
                #expect(fetchesBefore == 2)
                let (again, againOutput) = try await run(
                    Self.spec(
                        trainSHA: trainObject.sha256, notesSHA: notesObject.sha256, notesURL: notesURL,
                        outputsTo: "s3://results/runs/second"), name: "second.yaml")
                #expect(again == 0, "\(againOutput)")
                let fetchesAfter = s3.requests().filter {
                    $0.hasPrefix("GET /data/train.csv") || $0.hasPrefix("GET /public/notes.txt")
                }.count
                #expect(fetchesAfter == fetchesBefore)

                // An input whose bytes are not its sha256: the start fails and says which input and why.
                let wrong = String(repeating: "0", count: 64)
                let (failed, failedOutput) = try await run(
                    Self.spec(
                        trainSHA: wrong, notesSHA: notesObject.sha256, notesURL: notesURL,
                        outputsTo: "s3://results/runs/third"), name: "third.yaml")
                #expect(failed != 0)
                let failedDeployment = deploymentID(failedOutput)
                let (_, shown) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"), arguments: ["status", failedDeployment, "--json"] + common)
                #expect(shown.contains("DEPLOYMENT_STATE_FAILED"), "\(shown.prefix(2000))")
                #expect(shown.contains("input train.csv"), "\(shown.prefix(3000))")

                // The S3 secret never left the CLI; the URLs' signatures are in no service's log.
                let texts = [
                    ("orchestrator", constellation.orchestrator.child.output), ("agent", agent.service.child.output),
                    ("notary", constellation.notary.child.output),
                ]
                for (name, text) in texts {
                    #expect(!text.contains(s3.ready.secretKey), "the secret key is in the \(name)'s output")
                    #expect(!text.contains("X-Amz-Signature"), "a presigned URL is in the \(name)'s output")
                }
            }
        }
    }

    @Test(
        "a submission naming S3 data is refused without its presigned URLs, or with URLs for what it does not name, before anything is stored"
    )
    func presignedURLsRequired() async throws {
        try await JobConstellation.run("orrery-data-refusals") { constellation in
            let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            let orchestrator = constellation.orchestrator
            var spec = OrchestratorTests.spec(cores: 1)
            spec.allocations[0].inputs = [
                .with {
                    $0.name = "train"
                    $0.source = "s3://data/train.csv"
                    $0.sha256 = String(repeating: "ab", count: 32)
                }
            ]
            spec.allocations[0].outputs = ["r.bin"]
            spec.allocations[0].outputsTo = "s3://results/run"
            let allocation = spec.allocations[0].name
            func submit(inputs: [String: String], outputs: [String: String]) async throws {
                _ = try await consumer.with(orchestrator) { client in
                    try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try consumer.authority(for: orchestrator)
                            $0.settlementAuthority = try consumer.authority(
                                for: orchestrator, command: "/orrery/settlement/escrow")
                            $0.spec = spec
                            $0.idempotencyKey = UUID().uuidString
                            $0.inputUrls = inputs
                            $0.outputUrls = outputs
                        })
                }
            }
            let url = "https://data.s3.example.org/train.csv?X-Amz-Signature=abc"
            let cases: [([String: String], [String: String], String)] = [
                ([:], ["\(allocation)/0/r.bin": url], "input_urls[\(allocation)/train]: required"),
                (["\(allocation)/train": url], [:], "output_urls[\(allocation)/0/r.bin]: required"),
                (
                    ["\(allocation)/train": url, "\(allocation)/other": url], ["\(allocation)/0/r.bin": url],
                    "input_urls[\(allocation)/other]: names no s3:// input of the spec"
                ),
                (
                    ["\(allocation)/train": url], ["\(allocation)/1/r.bin": url, "\(allocation)/0/r.bin": url],
                    "output_urls[\(allocation)/1/r.bin]: names no"
                ),
                (
                    ["\(allocation)/train": "file:///etc/passwd"], ["\(allocation)/0/r.bin": url],
                    "a presigned http(s) URL"
                ),
            ]
            for (inputs, outputs, message) in cases {
                await #expect {
                    try await submit(inputs: inputs, outputs: outputs)
                } throws: { error in
                    guard let error = error as? RPCError else { return false }
                    return error.code == .invalidArgument && error.message.contains(message)
                }
            }
            let deployments = try await consumer.with(orchestrator) {
                try await $0.listDeployments(.with { _ in })
            }
            #expect(deployments.deployments.isEmpty)
        }
    }

    @Test(
        "without outputs_to, a 200 MiB output streams into the orchestrator's content store in chunks, is listed with its sha256 and size once whole, and `orrery outputs` reads it back checked; past the consumer's quota it is refused"
    )
    func outputsToTheContentStore() async throws {
        try await JobConstellation.run(
            "orrery-content-store", orchestratorArguments: ["--outputs-store-mib-per-consumer", "300"]
        ) { constellation in
            let agent = try await constellation.startAgent(
                "store", owner: #"{"location": {"country": "SE"}, "prices": {"per_core_hour": 5}}"#)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, constellation.orchestrator, devices: 1)
            let directory = constellation.directory
            let key = constellation.network.directory.appendingPathComponent("operator.key").path
            let common = ["--orchestrator", constellation.orchestratorAddress, "--key", key]
            let spec = """
                name: store
                allocations:
                  - name: main
                    executor: EXECUTOR_PROCESS
                    artifact:
                      text: |
                        head -c 209715200 /dev/zero | tr '\\0' 'q' > /work/big.bin
                        echo small > /work/small.txt
                    resources: {cpu_cores: 1, ram_mib: 256, disk_mib: 512}
                    max_duration_seconds: 600
                    outputs: [big.bin, small.txt]
                """
            let specFile = directory.appendingPathComponent("store.yaml").path
            try spec.write(toFile: specFile, atomically: true, encoding: .utf8)
            func run() async throws -> String {
                let (status, output) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"), arguments: ["run", "-q", "--wait", specFile] + common,
                    timeout: .seconds(400))
                #expect(status == 0, "\(output)")
                return output.split(separator: "\n").last.map(String.init) ?? ""
            }
            func listing(_ deployment: String) async throws -> String {
                try await ChildProcess.run(
                    TestEnvironment.executable("orrery"), arguments: ["outputs", deployment, "--json"] + common
                ).output
            }
            let first = try await run()
            // The device streams it after the allocation ended: listed once the store holds it whole.
            var listed = ""
            let deadline = ContinuousClock.now + .seconds(300)
            while ContinuousClock.now < deadline {
                listed = try await listing(first)
                if listed.contains(#""location":"store""#) { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            let expected = String(repeating: "q", count: 200 << 20)
            let expectedSHA = AgentChannelTests.sha256(expected)
            #expect(listed.contains(#""sha256":"\#(expectedSHA)""#), "\(listed)")
            #expect(listed.contains(#""size":"209715200""#), "\(listed)")
            #expect(listed.contains(#""path":"small.txt""#), "\(listed)")

            let fetched = directory.appendingPathComponent("fetched")
            let (read, readOutput) = try await ChildProcess.run(
                TestEnvironment.executable("orrery"), arguments: ["outputs", first, "--to", fetched.path] + common)
            #expect(read == 0, "\(readOutput)")
            let big = fetched.appendingPathComponent("main-0/big.bin").path
            #expect((try FileManager.default.attributesOfItem(atPath: big)[.size] as? Int) == 200 << 20)
            #expect(
                try String(contentsOfFile: fetched.appendingPathComponent("main-0/small.txt").path, encoding: .utf8)
                    == "small\n")

            // The same bytes as newline-delimited JSON over the HTTP gateway, from an offset.
            let (_, invocation) = try await ChildProcess.run(
                TestEnvironment.executable("orrery"),
                arguments: [
                    "ucan", "invoke", "--key", key, "--aud", constellation.orchestrator.ready.did, "--cmd",
                    "/orrery/orchestrator/read-output", "--args", "{}",
                ])
            let offset = (200 << 20) - 5
            let (curled, json) = try await ChildProcess.run(
                URL(fileURLWithPath: "/usr/bin/curl"),
                arguments: [
                    "-sS", "-X", "POST", "-H", "Content-Type: application/json", "-H",
                    "Authorization: Bearer \(invocation.trimmingCharacters(in: .whitespacesAndNewlines))",
                    "--data-binary",
                    #"{"id": "\#(first)", "allocation": "main", "replica": 0, "path": "big.bin", "offset": "\#(offset)"}"#,
                    "http://127.0.0.1:\(constellation.orchestrator.ready.httpPort)/orrery.orchestrator.v1.Orchestrator/ReadOutput",
                ])
            #expect(curled == 0, "\(json.prefix(500))")
            let chunks = try json.split(separator: "\n").map {
                try Orrery_Orchestrator_V1_OutputChunk(jsonString: String($0))
            }
            #expect(chunks.map(\.offset) == [UInt64(offset)], "\(json.prefix(500))")
            #expect(chunks.first?.data == Data("qqqqq".utf8))

            // 200 MiB more would pass the 300 MiB quota: refused, and the device says so.
            let second = try await run()
            let refusedDeadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < refusedDeadline,
                !agent.service.child.output.contains("the orchestrator refused an output")
            {
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(
                agent.service.child.output.contains("more pass its quota of 314572800"),
                "\(agent.service.child.output.suffix(3000))")
            let secondListing = try await listing(second)
            #expect(!secondListing.contains(#""path":"big.bin""#), "\(secondListing)")
            #expect(secondListing.contains(#""path":"small.txt""#), "\(secondListing)")
        }
    }

    @Test(
        "an agent killed -9 halfway through streaming an output to the content store resumes after its restart from what the store holds, a damaged chunk is taken back and sent again, and the output arrives whole"
    )
    func contentStoreUploadSurvivesAKill() async throws {
        try await JobConstellation.run("orrery-content-store-kill") { constellation in
            let agent = try await constellation.startAgent(
                "killed", owner: #"{"location": {"country": "SE"}, "prices": {"per_core_hour": 5}}"#,
                environment: ["ORRERY_CRASH_AT": "agent.output-half-stored"])
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, constellation.orchestrator, devices: 1)
            var spec = OrchestratorTests.spec(cores: 1)
            spec.allocations[0].artifact = .with { $0.text = "head -c 67108864 /dev/zero | tr '\\0' 'k' > big.bin" }
            spec.allocations[0].resources.ramMib = 256
            spec.allocations[0].resources.diskMib = 256
            spec.allocations[0].maxDurationSeconds = 300
            spec.allocations[0].outputs = ["big.bin"]
            let deployment = try await consumer.submit(spec, to: constellation.orchestrator, paid: false)

            // It dies at the crash point: half of the output is stored.
            let died = await agent.service.child.waitForExit(timeout: .seconds(240))
            #expect(died != nil, "the agent did not reach its crash point")
            #expect(agent.service.child.output.contains("agent.output-half-stored"))
            // Restarted, it sends one chunk damaged (past the half the store holds): the store takes it back, the
            // agent sends it again.
            let restarted = try await constellation.restartAgent(
                "killed", environment: ["ORRERY_DAMAGE_CHUNK_AT": "\(56 << 20)"])
            defer { restarted.child.signal(SIGKILL) }

            var files: [Orrery_Orchestrator_V1_OutputFile] = []
            let deadline = ContinuousClock.now + .seconds(240)
            while ContinuousClock.now < deadline, !files.contains(where: { $0.path == "big.bin" }) {
                files = try await consumer.with(constellation.orchestrator) {
                    try await $0.getOutputs(.with { $0.id = deployment.id }).files
                }
                try await Task.sleep(for: .milliseconds(500))
            }
            let big = try #require(files.first { $0.path == "big.bin" }, "\(restarted.child.output.suffix(3000))")
            #expect(big.location == "store")
            #expect(big.size == 64 << 20)
            #expect(big.sha256 == AgentChannelTests.sha256(String(repeating: "k", count: 64 << 20)))
            // Read back through ReadOutput from the middle: the bytes the file has there.
            let tail = try await consumer.with(constellation.orchestrator) { client in
                try await client.readOutput(
                    .with {
                        $0.id = deployment.id
                        $0.allocation = big.allocation
                        $0.replica = big.replica
                        $0.path = "big.bin"
                        $0.offset = (64 << 20) - 10
                    }
                ) { response in
                    try await response.messages.reduce(into: Data()) { $0 += $1.data }
                }
            }
            #expect(tail == Data(repeating: UInt8(ascii: "k"), count: 10))
            #expect(restarted.child.output.contains("output stored by the orchestrator"))
            #expect(restarted.child.output.contains("ORRERY_DAMAGE_CHUNK_AT: a chunk leaves damaged"))
        }
    }

    @Test(
        "orrery renew hands a running deployment fresh presigned URLs: its replica, relocated after its host died, uploads its output with them; a renewal by another consumer, for an output the spec lacks, or of an ended deployment is refused"
    )
    func renewedURLs() async throws {
        try await S3Fixture.with { s3 in
            try await ActorTests.withConstellation(
                "renew", prices: [5, 500], agentArguments: ["--images-registry-addresses", "any"]
            ) { c in
                let placeholder = c.directory.appendingPathComponent("placeholder")
                try Data("x".utf8).write(to: placeholder)
                _ = try await s3.put(placeholder.path, bucket: "results", key: "placeholder")
                let spec = """
                    name: renew
                    allocations:
                      - name: main
                        executor: EXECUTOR_PROCESS
                        artifact: {text: "sleep 12; echo renewed > /work/out.txt"}
                        resources: {cpu_cores: 1, ram_mib: 64}
                        max_duration_seconds: 300
                        outputs: [out.txt]
                        outputs_to: "s3://results/renew"
                    """
                let file = c.directory.appendingPathComponent("renew.yaml").path
                try spec.write(toFile: file, atomically: true, encoding: .utf8)
                // The CLI speaks as the constellation's consumer.
                let key = c.directory.appendingPathComponent("consumer.key").path
                let chain = c.directory.appendingPathComponent("consumer.ucan").path
                try KeyFile.write(c.consumer.key, to: key)
                try DelegationChain.write(c.consumer.chain).write(toFile: chain, atomically: true, encoding: .utf8)
                let common = [
                    "--orchestrator", "127.0.0.1:\(c.orchestrator.ready.grpcPort)", "--key", key, "--proof", chain,
                ]
                // Submitted with URLs for a store that is not there: the first device could not upload its output.
                let (submitted, output) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"),
                    arguments: ["run", "-q", file, "--s3-endpoint", "http://127.0.0.1:9"] + common,
                    environment: s3.environment, timeout: .seconds(120))
                #expect(submitted == 0, "\(output)")
                let id = output.split(separator: "\n").last.map(String.init) ?? ""
                let placed = try await ActorTests.deployment(id, c)
                #expect(placed.assignments.first?.deviceDid == c.agents[0].did, "\(placed)")

                // Renewed with the consumer's real store, then the first device dies.
                let (renewed, renewal) = try await ChildProcess.run(
                    TestEnvironment.executable("orrery"), arguments: ["renew", id, "--json"] + common,
                    environment: s3.environment)
                #expect(renewed == 0, "\(renewal)")
                let answer = try Orrery_Orchestrator_V1_RenewDeploymentSecretsResponse(
                    jsonString: renewal.trimmingCharacters(in: .whitespacesAndNewlines))
                #expect(answer.urls == 1 && answer.pullTokens == 0)
                c.agents[0].service.child.signal(SIGKILL)
                ActorTests.killSandboxes(of: "agent0", in: c.directory)

                // Relocated to the second device, which uploads with the renewed URL: the object is there.
                let ended = try await ActorTests.ended(id, c, within: .seconds(150))
                #expect(ended.state == .completed, "\(ended.state): \(ended.reason)")
                #expect(ended.assignments.first?.deviceDid == c.agents[1].did)
                let fetched = c.directory.appendingPathComponent("out.txt").path
                _ = try await s3.get(bucket: "results", key: "renew/main/0/out.txt", into: fetched)
                #expect(try String(contentsOfFile: fetched, encoding: .utf8) == "renewed\n")

                // Refused: another consumer (it does not see the deployment), nothing to renew, an output the spec
                // lacks, an ended deployment.
                var second = try WorkloadSpecFile.read(file)
                second.allocations[0].artifact.text = "sleep 300"
                let owner = c.consumer
                let running = try await owner.with(c.orchestrator) { client in
                    try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try owner.authority(for: c.orchestrator)
                            $0.spec = second
                            $0.idempotencyKey = UUID().uuidString
                            $0.outputUrls = ["main/0/out.txt": "http://127.0.0.1:9/results/renew/main/0/out.txt"]
                        })
                }
                func renew(
                    as consumer: OrchestratorTests.Consumer, _ outputs: [String: String]
                ) async throws -> Orrery_Orchestrator_V1_RenewDeploymentSecretsResponse {
                    try await consumer.with(c.orchestrator) { client in
                        try await client.renewDeploymentSecrets(
                            .with {
                                $0.id = running.id
                                $0.outputUrls = outputs
                            })
                    }
                }
                let other = try OrchestratorTests.Consumer(operatorKey: c.network.operatorKey)
                await OrchestratorTests.expectStatus(.notFound, containing: "no deployment") {
                    _ = try await renew(as: other, ["main/0/out.txt": "http://127.0.0.1:9/x"])
                }
                await OrchestratorTests.expectStatus(.invalidArgument, containing: "nothing to renew") {
                    _ = try await renew(as: owner, [:])
                }
                await OrchestratorTests.expectStatus(.invalidArgument, containing: "output_urls[main/0/nope]") {
                    _ = try await renew(as: owner, ["main/0/nope": "http://127.0.0.1:9/x"])
                }
                #expect(try await renew(as: owner, ["main/0/out.txt": "http://127.0.0.1:9/y"]).urls == 1)
                _ = try await owner.with(c.orchestrator) { try await $0.cancelDeployment(.with { $0.id = running.id }) }
                await OrchestratorTests.expectStatus(.failedPrecondition, containing: "has ended") {
                    _ = try await renew(as: owner, ["main/0/out.txt": "http://127.0.0.1:9/z"])
                }
            }
        }
    }
}
