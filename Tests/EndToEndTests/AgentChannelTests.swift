import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import GRPCCore
import OrreryIdentity
import OrreryLedger
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import SwiftProtobuf
import Testing

/// Real `device-agent` processes with different owner policies answer the orchestrator's offers over their
/// outbound agent channel: a silent device's offer expires, a policy declines, a bid carries the deployment on.
@Suite(
    "Agent channel: offers, bids, declines", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct AgentChannelTests {
    @Test(
        "an expired offer and a declined one move the deployment to the next device; a signed bid contracts it — across two orchestrator replicas"
    )
    func offersAcrossReplicas() async throws {
        try await ServiceBed.run("orrery-agent-channel") { bed in
            let (database, network, registry) = (bed.database, bed.network, bed.registry)
            let first = try await bed.startOrchestrator(extraArguments: ["--offer-timeout-ms", "3000"])
            defer { first.child.signal(SIGKILL) }
            let second = try await bed.startOrchestrator(extraArguments: ["--offer-timeout-ms", "3000"])
            defer { second.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)

            // A device that never answers (joined, but no agent runs its channel): the cheapest.
            let silent = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
            _ = try await silent.withRegistry(registry) { registry in
                try await silent.join(
                    registry,
                    capabilities: .with {
                        $0.architecture = "x86_64"
                        $0.cpuCores = 4
                        $0.ramBytes = 8 << 30
                        $0.diskBytes = 100 << 30
                        $0.prices = .with { $0.perCoreHour = 1 }
                    })
            }
            // Real agents, lines to the first replica only: one that refuses this consumer, one that serves it.
            let picky = try await bed.startAgent(
                "picky",
                owner:
                    #"{"location": {"country": "DE"}, "prices": {"per_core_hour": 10}, "denied_consumers": ["\#(consumer.key.did)"]}"#,
                orchestrators: [first])
            defer { picky.service.child.signal(SIGKILL) }
            let willing = try await bed.startAgent(
                "willing", owner: #"{"location": {"country": "FR"}, "prices": {"per_core_hour": 20}}"#,
                orchestrators: [first])
            defer { willing.service.child.signal(SIGKILL) }
            try await OrchestratorTests.waitForFleet(consumer, second, devices: 3)

            // Submitted through the second replica; the offers reach the agents through the database.
            var spec = OrchestratorTests.spec(cores: 1)
            spec.allocations[0].resources.ramMib = 64
            spec.allocations[0].resources.diskMib = 0
            let submitted = try await consumer.submit(spec, to: second, paid: false)
            #expect(submitted.assignments.map(\.deviceDid) == [silent.key.did.string])
            let events = try await consumer.with(second) { client in
                try await client.watchDeployment(.with { $0.id = submitted.id }) { response in
                    var seen: [Orrery_Orchestrator_V1_DeploymentEvent] = []
                    for try await event in response.messages {
                        seen.append(event)
                        if event.state == .deploying { break }
                    }
                    return seen
                }
            }
            let states = events.map(\.state)
            if states.count != 10 {
                print("PICKY:\n\(picky.service.child.output)\nFIRST:\n\(first.child.output.suffix(3000))")
            }
            #expect(
                states == [
                    .submitted, .matched, .offered, .matched, .offered, .matched, .offered, .contracted, .escrowed,
                    .deploying,
                ], "\(events.map { "\($0.state): \($0.reason)" })")
            try #require(states.count == 10)
            #expect(
                events[3].reason.contains("device \(silent.key.did) declined: no answer before the offer expired"))
            #expect(events[3].deployment.assignments.map(\.deviceDid) == [picky.did])
            #expect(events[5].reason.contains("device \(picky.did) declined: the owner does not serve consumer"))
            #expect(events[5].deployment.assignments.map(\.deviceDid) == [willing.did])
            #expect(events.last?.deployment.assignments.map(\.deviceDid) == [willing.did])
            #expect(events[7].reason.contains("1 contract(s) recorded in the notary's log"), "\(events[7].reason)")
            // The contract: proposed for the consumer under its delegation, accepted by the willing device with its
            // owner's consent, countersigned into the notary's log.
            let contractID = try #require(events.last?.deployment.assignments.first?.contractID)
            #expect(events[7].reason.contains(contractID))
            let record = try await ContractParties(network: network).withNotary(bed.notary) { client in
                try await client.getContract(.with { $0.id = contractID })
            }
            // Active, or already completed when the short job ended before this read.
            #expect([.active, .completed].contains(record.state), "\(record.state)")
            #expect(
                record.contract.deviceDid == willing.did && record.contract.consumerDid == consumer.key.did.string)
            // The contract's maximum is the replica's price on the device that took it.
            #expect(record.contract.price.maxCost == events.last?.deployment.assignments.first?.jobCost)
            #expect(try SignedMessage.verify(record.acceptance).map(\.string) == [willing.did])
            #expect(try SignedMessage.verify(record.proposal).map(\.string) == [first.ready.did])
            #expect(record.entryIndexes.first == 0, "the contract is the log's first entry")

            // The bid is the device's signature over the offer's price, kept with the offer.
            try await database.withClient(schema: "orchestrator") { db in
                let rows = try await db.query(
                    "SELECT bid FROM offers WHERE deployment_id = \(submitted.id) AND bid IS NOT NULL")
                var bids: [Orrery_Common_V1_Signed] = []
                for try await bid in rows.decode(Data.self) {
                    bids.append(try Orrery_Common_V1_Signed(serializedBytes: bid))
                }
                try #require(bids.count == 1)
                let signers = try SignedMessage.verify(bids[0], type: "orrery.orchestrator.v1.Bid")
                #expect(signers.map(\.string) == [willing.did])
            }
        }
    }

    @Test(
        "the device signs usage and completion receipts the notary records in order; the contract completes; a cancelled one is terminated; the agent checks the notary's tree heads"
    )
    func receipts() async throws {
        try await JobConstellation.run("orrery-receipts") { constellation in
            let network = constellation.network
            let directory = constellation.directory
            let registry = constellation.registry
            let notary = constellation.notary
            let orchestrator = constellation.orchestrator
            // Heartbeats every 250 ms: a usage receipt every 3 s.
            let agent = try await TestAgent.start(
                "metered", owner: #"{"prices": {"per_core_hour": 5}}"#,
                orchestrators: ["127.0.0.1:\(orchestrator.ready.grpcPort)"],
                registry: "127.0.0.1:\(registry.ready.grpcPort)", network: network, directory: directory,
                interval: 250)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            let parties = try ContractParties(network: network)

            func submit(_ script: String) async throws -> Orrery_Orchestrator_V1_Deployment {
                var spec = OrchestratorTests.spec(cores: 1)
                spec.allocations[0].artifact = .with { $0.text = script }
                spec.allocations[0].resources.ramMib = 64
                spec.allocations[0].resources.diskMib = 0
                spec.allocations[0].maxDurationSeconds = 60
                spec.allocations[0].outputs = ["out.txt"]
                return try await consumer.submit(spec, to: orchestrator, paid: false)
            }
            func contract(of id: String, until state: Orrery_Notary_V1_ContractState) async throws
                -> Orrery_Notary_V1_ContractRecord
            {
                let deadline = ContinuousClock.now + .seconds(20)
                while true {
                    let deployment = try await consumer.with(orchestrator) {
                        try await $0.getDeployment(.with { $0.id = id })
                    }
                    if let contractID = deployment.assignments.first?.contractID, !contractID.isEmpty {
                        let record = try await parties.withNotary(notary) {
                            try await $0.getContract(.with { $0.id = contractID })
                        }
                        if record.state == state || ContinuousClock.now > deadline { return record }
                    } else if ContinuousClock.now > deadline {
                        return Orrery_Notary_V1_ContractRecord()
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }

            let script = "sleep 4; printf done > out.txt"
            let job = try await submit(script)
            let completed = try await contract(of: job.id, until: .completed)
            #expect(completed.state == .completed, "\(completed.state)")
            #expect(completed.lastReceiptSequence >= 2, "at least one usage receipt, then the completion receipt")
            let leaves = try await parties.withNotary(notary) { try await $0.getEntries(.with { $0.start = 0 }) }
                .leaves
            let entries = try completed.entryIndexes.map { index in
                try Orrery_Notary_V1_LogEntry(
                    serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: leaves[Int(index)]).payload)
            }
            #expect(entries.first?.kind == .contract)
            #expect(entries.dropFirst().dropLast(2).allSatisfy { $0.kind == .usageReceipt } && entries.count >= 4)
            let completionEntry = try #require(entries.dropLast().last)
            #expect(completionEntry.kind == .completionReceipt)
            #expect(try SignedMessage.verify(completionEntry.act).map(\.string) == [agent.did])
            let completion = try Orrery_Notary_V1_CompletionReceipt(serializedBytes: completionEntry.act.payload)
            #expect(completion.exitCode == 0)
            #expect(completion.artifactSha256 == AgentChannelTests.sha256(script))
            #expect(completion.outputs.map(\.path) == ["out.txt"])
            #expect(completion.outputs.first?.sha256 == AgentChannelTests.sha256("done"))
            #expect(completion.usage.wallSeconds >= 4 && completion.usage.ramMibHours > 0)
            let firstUsage = try Orrery_Notary_V1_UsageReceipt(serializedBytes: entries[1].act.payload)
            #expect(firstUsage.sequence == 1 && firstUsage.wallSeconds >= 2.5)
            #expect(entries.last?.kind == .transition)

            // A cancelled job's contract is terminated by the orchestrator; its late receipts are not recorded.
            let stopped = try await submit("sleep 30")
            _ = try await contract(of: stopped.id, until: .active)
            _ = try await consumer.with(orchestrator) {
                try await $0.cancelDeployment(.with { $0.id = stopped.id })
            }
            let terminated = try await contract(of: stopped.id, until: .terminated)
            #expect(terminated.state == .terminated)

            // The agent verified the notary's tree heads as its receipts were recorded.
            let witnessed = try await {
                let deadline = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < deadline {
                    if let data = FileManager.default.contents(
                        atPath: directory.appendingPathComponent("metered-state/notary-tree-head.pb").path),
                        let head = try? Orrery_Notary_V1_SignedTreeHead(serializedBytes: data),
                        head.head.treeSize >= UInt64(entries.count)
                    {
                        return head
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                return Orrery_Notary_V1_SignedTreeHead()
            }()
            #expect(try TreeHeadWitness.verify(witnessed).logDid == notary.ready.did)
        }
    }

    @Test(
        "a job runs isolated on a real agent: logs and outputs arrive, it completes; a failing one fails; a cancelled one is stopped"
    )
    func execution() async throws {
        try await JobConstellation.run("orrery-execution") { constellation in
            let network = constellation.network
            let directory = constellation.directory
            let registry = constellation.registry
            let orchestrator = constellation.orchestrator
            let registryAddress = constellation.registryAddress
            let agent = try await TestAgent.start(
                "worker", owner: #"{"location": {"country": "SE"}, "prices": {"per_core_hour": 5}}"#,
                orchestrators: ["127.0.0.1:\(orchestrator.ready.grpcPort)"], registry: registryAddress,
                network: network,
                directory: directory)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)

            func submit(_ script: String, seconds: UInt32 = 60) async throws -> Orrery_Orchestrator_V1_Deployment {
                var spec = OrchestratorTests.spec(cores: 1)
                spec.allocations[0].artifact = .with { $0.text = script }
                spec.allocations[0].resources.ramMib = 64
                spec.allocations[0].maxDurationSeconds = seconds
                spec.allocations[0].outputs = ["out.txt"]
                return try await consumer.with(orchestrator) { client in
                    try await client.submitWorkload(
                        .with {
                            $0.consumerAuthority = try consumer.authority(for: orchestrator)
                            $0.spec = spec; $0.idempotencyKey = UUID().uuidString
                        })
                }
            }
            func watch(_ id: String, until states: Set<Orrery_Orchestrator_V1_DeploymentState>) async throws
                -> [Orrery_Orchestrator_V1_DeploymentEvent]
            {
                try await consumer.with(orchestrator) { client in
                    try await client.watchDeployment(.with { $0.id = id }) { response in
                        var seen: [Orrery_Orchestrator_V1_DeploymentEvent] = []
                        for try await event in response.messages {
                            seen.append(event)
                            if states.contains(event.state) { break }
                        }
                        return seen
                    }
                }
            }

            // A job that prints and writes its declared output.
            let job = try await submit(
                "echo hello from $(hostname); echo second; echo warning >&2; printf 'forty-two' > out.txt")
            let events = try await watch(job.id, until: [.completed, .failed, .cancelled])
            #expect(
                events.map(\.state) == [
                    .submitted, .matched, .offered, .contracted, .escrowed, .deploying, .running, .completed,
                ], "\(events.map { "\($0.state): \($0.reason)" })")
            let lines = try await consumer.with(orchestrator) { client in
                try await client.streamLogs(.with { $0.id = job.id }) { response in
                    try await response.messages.reduce(into: [Orrery_Orchestrator_V1_LogLine]()) { $0.append($1) }
                }
            }
            let stdout = String(decoding: lines.filter { $0.stream == .stdout }.flatMap(\.data), as: UTF8.self)
            let stderr = String(decoding: lines.filter { $0.stream == .stderr }.flatMap(\.data), as: UTF8.self)
            #expect(stdout == "hello from orrery\nsecond\n", "\(stdout)")
            #expect(stderr == "warning\n")
            let outputs = try await consumer.with(orchestrator) {
                try await $0.getOutputs(.with { $0.id = job.id })
            }
            #expect(outputs.files.map(\.path) == ["out.txt"])
            #expect(outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "forty-two")
            #expect(outputs.files.first?.sha256 == "\(Self.sha256("forty-two"))")
            #expect(outputs.files.first?.allocation == "main")
            // Each replica's run: exited 0, what it used, and what its contract makes due for that (5 NTX an hour).
            let finished = try await consumer.with(orchestrator) {
                try await $0.getDeployment(.with { $0.id = job.id })
            }
            let assignment = try #require(finished.assignments.first)
            let run = assignment.run
            #expect(run.state == .exited && run.hasExitCode && run.exitCode == 0, "\(run)")
            #expect(run.usage.wallSeconds > 0 && run.usage.peakMemoryBytes > 0, "\(run)")
            #expect(assignment.hourlyPrice == 5)
            #expect(
                run.costSoFar
                    == UInt64((Double(assignment.hourlyPrice) * run.usage.wallSeconds / 3600).rounded(.up)),
                "\(run)")
            // The same through the CLI (the operator may read every deployment).
            let cli = TestEnvironment.executable("orrery")
            let connection = [
                "--orchestrator", "127.0.0.1:\(orchestrator.ready.grpcPort)", "--key",
                directory.appendingPathComponent("credentials/operator.key").path,
            ]
            let (statusStatus, status) = try await ChildProcess.run(
                cli, arguments: ["status", job.id] + connection)
            #expect(statusStatus == 0, "\(status)")
            #expect(
                status.contains("exited 0 · ") && status.contains(" s wall · cost so far \(run.costSoFar) NTX"),
                "\(status)")
            let (logsStatus, logs) = try await ChildProcess.run(cli, arguments: ["logs", job.id] + connection)
            #expect(logsStatus == 0)
            #expect(logs.contains("main[0] hello from orrery") && logs.contains("main[0] warning"), "\(logs)")
            // One stream, the last line of it, with the time it arrived; a window that begins later holds nothing.
            let (tailStatus, tail) = try await ChildProcess.run(
                cli,
                arguments: ["logs", job.id, "--stdout", "--tail", "1", "--timestamps", "--since", "1h"] + connection
            )
            #expect(tailStatus == 0)
            let tailLines = tail.split(separator: "\n")
            #expect(tailLines.count == 1 && tailLines[0].hasSuffix("Z main[0] second"), "\(tail)")
            #expect(
                tailLines.first.flatMap { ISO8601DateFormatter.fractional.date(from: String($0.prefix(24))) } != nil
            )
            let (_, errors) = try await ChildProcess.run(cli, arguments: ["logs", job.id, "--stderr"] + connection)
            #expect(errors == "main[0] warning\n", "\(errors)")
            let (_, later) = try await ChildProcess.run(
                cli, arguments: ["logs", job.id, "--since", "2099-01-01T00:00:00Z"] + connection)
            #expect(later.isEmpty, "\(later)")
            let (badStatus, bad) = try await ChildProcess.run(
                cli, arguments: ["logs", job.id, "--since", "yesterday"] + connection)
            #expect(badStatus != 0 && bad.contains("give a duration ago"), "\(bad)")
            // The server checks what another client may send.
            for (request, field) in [
                (
                    Orrery_Orchestrator_V1_StreamLogsRequest.with {
                        $0.id = job.id; $0.tailLines = 100_001
                    }, "tail_lines"
                ),
                (
                    .with {
                        $0.id = job.id; $0.stream = .UNRECOGNIZED(7)
                    }, "stream"
                ),
                (
                    .with {
                        $0.id = job.id; $0.since = .with { $0.seconds = Int64.min }
                    }, "since"
                ),
            ] {
                await OrchestratorTests.expectStatus(.invalidArgument, containing: field) {
                    try await consumer.with(orchestrator) { client in
                        try await client.streamLogs(request) { response in
                            for try await _ in response.messages {}
                        }
                    }
                }
            }
            let downloads = directory.appendingPathComponent("downloads")
            let (outputsStatus, listed) = try await ChildProcess.run(
                cli, arguments: ["outputs", job.id, "--to", downloads.path] + connection)
            #expect(outputsStatus == 0, "\(listed)")
            let (_, listedJSON) = try await ChildProcess.run(
                cli, arguments: ["outputs", job.id, "--json"] + connection)
            #expect(
                listedJSON.contains(#""path":"out.txt""#) && listedJSON.contains(#""size":"9""#)
                    && listedJSON.contains(#""sha256":"\#(Self.sha256("forty-two"))""#), "\(listedJSON)")
            #expect(
                try String(contentsOf: downloads.appendingPathComponent("main-0/out.txt"), encoding: .utf8)
                    == "forty-two")

            // Submitted by the CLI and followed to its end.
            let specFile = directory.appendingPathComponent("job.yaml").path
            try """
            name: from-the-cli
            allocations:
              - {name: cli, executor: process, artifact: {text: "echo via cli"}, resources: {cpu_cores: 1, ram_mib: 32},
                 max_duration_seconds: 60}
            """.write(toFile: specFile, atomically: true, encoding: .utf8)
            let (runStatus, ran) = try await ChildProcess.run(
                cli, arguments: ["run", specFile, "--wait"] + connection)
            #expect(runStatus == 0, "\(ran)")
            #expect(ran.contains("completed") && ran.contains("all 1 allocation(s) exited 0"), "\(ran)")

            // `run --json`: progress on standard error, only the deployment's JSON on standard output.
            let quoted = ([cli.path, "run", specFile, "--wait", "--json"] + connection).map { "'\($0)'" }
            let jsonFile = directory.appendingPathComponent("run.json").path
            let progressFile = directory.appendingPathComponent("run.progress").path
            let (jsonStatus, jsonRun) = try await ChildProcess.run(
                URL(fileURLWithPath: "/bin/bash"),
                arguments: ["-c", quoted.joined(separator: " ") + " > '\(jsonFile)' 2> '\(progressFile)'"])
            #expect(jsonStatus == 0, "\(jsonRun)")
            let printed = try String(contentsOfFile: jsonFile, encoding: .utf8)
            let followed = try String(contentsOfFile: progressFile, encoding: .utf8)
            #expect(try Orrery_Orchestrator_V1_Deployment(jsonString: printed).state == .completed, "\(printed)")
            #expect(followed.hasPrefix("==> deployment dep_") && followed.contains("completed"), "\(followed)")

            // `logs -f | head`: the reader leaving is a normal end, while the job still runs.
            let chatty = try await submit(
                "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done", seconds: 120)
            _ = try await watch(chatty.id, until: [.running, .failed, .cancelled])
            let follow = ([cli.path, "logs", "-f", chatty.id] + connection).map { "'\($0)'" }
            let (pipeStatus, piped) = try await ChildProcess.run(
                URL(fileURLWithPath: "/bin/bash"),
                arguments: ["-c", "set -o pipefail; " + follow.joined(separator: " ") + " | head -n 2"])
            #expect(pipeStatus == 0, "\(piped)")
            #expect(piped.hasPrefix("main[0] line 1\nmain[0] line 2\n") && !piped.contains("Fatal"), "\(piped)")
            let still = try await consumer.with(orchestrator) {
                try await $0.getDeployment(.with { $0.id = chatty.id })
            }
            #expect(still.state == .running, "head ended the CLI, not the job's end: \(still.state)")
            _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = chatty.id }) }

            // Submitted by curl, with a token from `orrery ucan invoke`.
            let (_, token) = try await ChildProcess.run(
                cli,
                arguments: [
                    "ucan", "invoke", "--key", directory.appendingPathComponent("credentials/operator.key").path,
                    "--aud",
                    orchestrator.ready.did, "--cmd", "/orrery/orchestrator/submit-workload", "--args",
                    #"{"idempotency_key": "by-curl"}"#,
                ])
            let (_, authority) = try await ChildProcess.run(
                cli,
                arguments: [
                    "ucan", "delegate", "--key", directory.appendingPathComponent("credentials/operator.key").path,
                    "--to", orchestrator.ready.did, "--cmd", "/orrery/notary/propose", "--exp", "1h",
                ])
            let encodedAuthority = Data(authority.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
                .base64EncodedString()
            let body =
                #"{"consumerAuthority": "\#(encodedAuthority)", "idempotencyKey": "by-curl", "spec": {"name": "from-curl", "allocations": [{"name": "web", "executor": "EXECUTOR_PROCESS", "artifact": {"text": "echo via curl"}, "resources": {"cpuCores": 1, "ramMib": "32"}, "maxDurationSeconds": 60}]}}"#
            let (curlStatus, submitted) = try await ChildProcess.run(
                URL(fileURLWithPath: "/usr/bin/curl"),
                arguments: [
                    "-sS", "-X", "POST", "-H", "Content-Type: application/json", "-H",
                    "Authorization: Bearer \(token.trimmingCharacters(in: .whitespacesAndNewlines))", "--data",
                    body,
                    "http://127.0.0.1:\(orchestrator.ready.httpPort)/orrery.orchestrator.v1.Orchestrator/SubmitWorkload",
                ])
            #expect(curlStatus == 0)
            let viaCurl = try Orrery_Orchestrator_V1_Deployment(jsonString: submitted)
            var curlState = viaCurl.state
            let curlDeadline = ContinuousClock.now + .seconds(20)
            while ![.completed, .failed, .cancelled].contains(curlState), ContinuousClock.now < curlDeadline {
                try await Task.sleep(for: .milliseconds(100))
                let (_, shown) = try await ChildProcess.run(
                    cli, arguments: ["status", viaCurl.id, "--json"] + connection)
                curlState = try Orrery_Orchestrator_V1_Deployment(jsonString: shown).state
            }
            #expect(curlState == .completed)

            // A failing job fails with its status.
            let failing = try await submit("echo about to fail; exit 3")
            let failed = try await watch(failing.id, until: [.completed, .failed, .cancelled])
            #expect(failed.last?.state == .failed)
            #expect(failed.last?.reason.contains("exited 3") == true, "\(failed.last?.reason ?? "")")
            let failedRun = try await consumer.with(orchestrator) {
                try await $0.getDeployment(.with { $0.id = failing.id })
            }.assignments.first?.run
            #expect(failedRun?.state == .exited && failedRun?.exitCode == 3, "\(String(describing: failedRun))")

            // Both outcomes reach the device's reputation in the registry (through the orchestrator's outbox).
            let observer = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
            var reputation = Orrery_Registry_V1_Reputation()
            let counted = ContinuousClock.now + .seconds(10)
            // Four completed (the job, the CLI's two, curl's), one failed; the cancelled one is neither.
            while ContinuousClock.now < counted,
                reputation.completedAllocations < 4 || reputation.failedAllocations < 1
            {
                reputation = try await observer.withRegistry(registry) {
                    try await $0.getDevice(.with { $0.did = agent.did }).reputation
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(reputation.completedAllocations == 4 && reputation.failedAllocations == 1, "\(reputation)")

            // A device cannot record outcomes itself: its token is /orrery/registry, reputation is not in it.
            await OrchestratorTests.expectStatus(.permissionDenied, containing: "/orrery/reputation/record-outcome") {
                _ = try await observer.withRegistry(registry) { registry in
                    try await registry.recordOutcome(
                        .with {
                            $0.deviceDid = observer.key.did.string
                            $0.outcome = .completed
                            $0.idempotencyKey = "self-praise"
                        })
                }
            }

            // A long job, cancelled while it runs, is stopped on the device.
            let long = try await submit("echo started; sleep 60")
            _ = try await watch(long.id, until: [.running])
            // While it runs, the agent exports its CPU time and memory; once it is stopped, both series go.
            let metricsURL = try #require(URL(string: "http://127.0.0.1:\(agent.service.ready.httpPort)/metrics"))
            @Sendable func agentMetrics() async throws -> String {
                String(decoding: try await URLSession.shared.data(from: metricsURL).0, as: UTF8.self)
            }
            var exported = ""
            let metered = try await eventually(timeout: .seconds(30)) {
                exported = try await agentMetrics()
                return exported.split(separator: "\n").contains {
                    $0.hasPrefix("orrery_agent_allocation_cpu_seconds{") && $0.contains(#"allocation="main""#)
                } && exported.contains("orrery_agent_allocation_memory_bytes{")
            }
            #expect(metered, "the running allocation is not in the agent's metrics: \(exported)")
            let cancelled = try await consumer.with(orchestrator) {
                try await $0.cancelDeployment(.with { $0.id = long.id })
            }
            #expect(cancelled.state == .cancelled)
            let allocations = directory.appendingPathComponent("worker-state/allocations").path
            let deadline = ContinuousClock.now + .seconds(15)
            var stopped = false
            while !stopped, ContinuousClock.now < deadline {
                let runs = (try? FileManager.default.contentsOfDirectory(atPath: allocations)) ?? []
                stopped = runs.contains { run in
                    FileManager.default.fileExists(atPath: "\(allocations)/\(run)/stop_reason")
                        && FileManager.default.fileExists(atPath: "\(allocations)/\(run)/report.pb")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(stopped, "the agent stopped the cancelled allocation")
            let unmetered = try await eventually(timeout: .seconds(30)) {
                exported = try await agentMetrics()
                return exported.contains("# TYPE orrery_agent_allocations_running")
                    && !exported.contains("orrery_agent_allocation_cpu_seconds{")
                    && !exported.contains("orrery_agent_allocation_memory_bytes{")
            }
            #expect(unmetered, "a stopped allocation is still in the agent's metrics: \(exported)")
        }
    }

    @Test(
        "kill -9 of an agent while its allocation runs: restarted, it picks the allocation up from its journal, neither lost nor run twice, its logs each line once"
    )
    func agentRestart() async throws {
        try await JobConstellation.run("orrery-agent-restart") { constellation in
            let network = constellation.network
            let directory = constellation.directory
            let orchestrator = constellation.orchestrator
            let registryAddress = constellation.registryAddress
            let agent = try await TestAgent.start(
                "phoenix", owner: #"{"prices": {"per_core_hour": 5}}"#,
                orchestrators: ["127.0.0.1:\(orchestrator.ready.grpcPort)"], registry: registryAddress,
                network: network,
                directory: directory)
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)

            var spec = OrchestratorTests.spec(cores: 1)
            // It ends only once the test opens its gate, after the agent's restart, however slow the machine.
            spec.allocations[0].artifact = .with {
                $0.text =
                    "echo started >> /work/runs.txt; echo before; "
                    + "for i in $(seq 900); do [ -e /work/mid ] && break; sleep 0.1; done; echo during; "
                    + "for i in $(seq 900); do [ -e /work/go ] && break; sleep 0.1; done; "
                    + "echo finished; cat runs.txt > out.txt"
            }
            spec.allocations[0].resources.ramMib = 64
            spec.allocations[0].outputs = ["out.txt"]
            let job = try await consumer.with(orchestrator) { client in
                try await client.submitWorkload(
                    .with {
                        $0.consumerAuthority = try consumer.authority(for: orchestrator)
                        $0.spec = spec; $0.idempotencyKey = UUID().uuidString
                    })
            }
            let deadline = ContinuousClock.now + .seconds(60)
            var state = job.state
            while state != .running, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
                state = try await consumer.with(orchestrator) {
                    try await $0.getDeployment(.with { $0.id = job.id }).state
                }
            }
            #expect(state == .running)
            // "before" reached the orchestrator before the agent dies (positive evidence, however slow the machine).
            #expect(try await Self.stdout(of: job.id, consumer, orchestrator, becomes: "before\n"))
            agent.service.child.signal(SIGKILL)
            _ = await agent.service.child.waitForExit()
            // A line printed while the agent is down: the restarted agent's follower reads it with the lines before.
            let allocations = directory.appendingPathComponent("phoenix-state/allocations")
            let run = try #require(
                try FileManager.default.contentsOfDirectory(atPath: allocations.path).first { $0.hasPrefix("off_") }
            )
            try Data().write(to: allocations.appendingPathComponent("\(run)/work/mid"))
            let stdoutLog = allocations.appendingPathComponent("\(run)/stdout.log")
            #expect(try await Self.file(stdoutLog, becomes: "before\nduring\n"))
            let config = directory.appendingPathComponent("phoenix.json").path
            let restarted = try await RunningService.start(
                "device-agent",
                extraArguments: [
                    "--state-dir", directory.appendingPathComponent("phoenix-state").path, "--config", config,
                ],
                environment: network.environment(for: "device-agent"), directory: directory, configFile: config)
            defer { restarted.child.signal(SIGKILL) }
            try Data().write(to: allocations.appendingPathComponent("\(run)/work/go"))
            let events = try await consumer.with(orchestrator) { client in
                try await client.watchDeployment(.with { $0.id = job.id }) { response in
                    try await response.messages.reduce(into: [Orrery_Orchestrator_V1_DeploymentEvent]()) {
                        $0.append($1)
                    }
                }
            }
            #expect(events.last?.state == .completed, "\(events.map { "\($0.state): \($0.reason)" })")
            let outputs = try await consumer.with(orchestrator) {
                try await $0.getOutputs(.with { $0.id = job.id })
            }
            #expect(
                outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "started\n", "ran once")
            #expect(
                try await Self.stdout(of: job.id, consumer, orchestrator) == "before\nduring\nfinished\n",
                "every line once, in order")
        }
    }

    @Test(
        "kill -9 of an agent: its device goes offline, its stateless allocation is relocated to another feasible device, and the copy left running is stopped when the agent comes back"
    )
    func relocation() async throws {
        // Short enough to notice a dead agent quickly, long enough that a loaded machine keeps live ones online.
        try await ServiceBed.run("orrery-relocation", livenessInterval: 1000) { bed in
            let (database, network, directory, registry) = (bed.database, bed.network, bed.directory, bed.registry)
            let interval = bed.livenessInterval
            let orchestrator = try await bed.startOrchestrator()
            defer { orchestrator.child.signal(SIGKILL) }
            let cheap = try await bed.startAgent(
                "cheap", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [orchestrator], interval: interval)
            defer { cheap.service.child.signal(SIGKILL) }
            let spare = try await bed.startAgent(
                "spare", owner: #"{"prices": {"per_core_hour": 5000}}"#, orchestrators: [orchestrator],
                interval: interval)
            defer { spare.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 2)

            var spec = OrchestratorTests.spec(cores: 1)
            spec.allocations[0].artifact = .with { $0.text = "echo up; sleep 120" }
            spec.allocations[0].resources.ramMib = 32
            spec.allocations[0].maxDurationSeconds = 150
            spec.allocations[0].outputs = []
            // Both online in the orchestrator's view: the cheap one is the choice.
            try await OrchestratorTests.waitUntilChosen(cheap.did, for: spec, consumer, orchestrator)
            let job = try await consumer.with(orchestrator) { client in
                try await client.submitWorkload(
                    .with {
                        $0.consumerAuthority = try consumer.authority(for: orchestrator)
                        $0.spec = spec; $0.idempotencyKey = UUID().uuidString
                    })
            }
            #expect(job.assignments.map(\.deviceDid) == [cheap.did])
            // Running on the cheap device, then that device's agent dies.
            let events = try await Self.watchKillingOnceRunning(
                job.id, of: consumer, on: orchestrator, kill: cheap.service)
            let relocated = events.first { $0.reason.contains("relocated") }
            #expect(
                relocated?.reason.contains("device \(cheap.did) went offline; now on \(spare.did)") == true,
                "\(events.map { "\($0.state): \($0.reason)" })")
            #expect(events.last?.state == .running)
            #expect(events.last?.deployment.assignments.map(\.deviceDid) == [spare.did])
            // The relocation counts against the device it left.
            let observer = try RegistryJoinTests.DeviceClient(operatorKey: network.operatorKey)
            var relocatedAway: UInt64 = 0
            let counted = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < counted, relocatedAway == 0 {
                relocatedAway = try await observer.withRegistry(registry) {
                    try await $0.getDevice(.with { $0.did = cheap.did }).reputation.relocatedAway
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(relocatedAway == 1)
            // The replica's new contract replaces the old one, which the orchestrator terminated.
            let first = try #require(
                events.first { $0.state == .contracted }?.deployment.assignments.first?.contractID)
            let second = try #require(events.last?.deployment.assignments.first?.contractID)
            #expect(first != second && !first.isEmpty)
            let parties = try ContractParties(network: network)
            let replacement = try await parties.withNotary(bed.notary) {
                try await $0.getContract(.with { $0.id = second })
            }
            #expect(replacement.contract.replaces == first && replacement.state == .active)
            #expect(replacement.contract.deviceDid == spare.did)
            var old = try await parties.withNotary(bed.notary) { try await $0.getContract(.with { $0.id = first }) }
            let terminated = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < terminated, old.state != .terminated {
                try await Task.sleep(for: .milliseconds(100))
                old = try await parties.withNotary(bed.notary) { try await $0.getContract(.with { $0.id = first }) }
            }
            #expect(old.state == .terminated)

            // The killed agent's sandbox still runs the old copy. Restarted, the agent picks it up from its journal;
            // the orchestrator no longer assigns it there, so the agent is told to stop it, and does.
            let cheapState = directory.appendingPathComponent("cheap-state")
            let allocations = cheapState.appendingPathComponent("allocations")
            let oldOffer = try #require(
                try FileManager.default.contentsOfDirectory(atPath: allocations.path).first { $0.hasPrefix("off_") }
            )
            let oldRun = allocations.appendingPathComponent(oldOffer)
            let wrapper = try #require(
                Int32(
                    try String(contentsOf: oldRun.appendingPathComponent("wrapper.pid"), encoding: .utf8)
                        .trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(kill(wrapper, 0) == 0, "the old copy still runs before the agent comes back")
            let config = directory.appendingPathComponent("cheap.json").path
            let returned = try await RunningService.start(
                "device-agent",
                extraArguments: [
                    "--state-dir", cheapState.path, "--config", config, "--liveness-interval-ms", String(interval),
                ],
                environment: network.environment(for: "device-agent"), directory: directory, configFile: config)
            defer { returned.child.signal(SIGKILL) }
            let stopped = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < stopped,
                !FileManager.default.fileExists(atPath: oldRun.appendingPathComponent("report.pb").path)
            {
                try await Task.sleep(for: .milliseconds(100))
            }
            let report = try Orrery_Orchestrator_V1_AllocationReport(
                serializedBytes: try Data(contentsOf: oldRun.appendingPathComponent("report.pb")))
            #expect(report.state == .exited && report.exitCode != 0, "\(report)")
            #expect(report.reason.contains("relocated"), "\(report.reason)")
            #expect(kill(wrapper, 0) != 0, "the old copy's sandbox is gone")
            // The orchestrator heard the old copy end; the new one still runs where it moved.
            try await database.withClient(schema: "orchestrator") { db in
                var state: Int16 = -1
                let heard = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < heard, state != 10 {  // OfferStore.State.relocated: the old copy reported its end
                    let rows = try await db.query("SELECT state FROM offers WHERE id = \(oldOffer)")
                    for try await code in rows.decode(Int16.self) { state = code }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(state == 10)
            }
            let current = try await consumer.with(orchestrator) {
                try await $0.getDeployment(.with { $0.id = job.id })
            }
            #expect(current.state == .running && current.assignments.map(\.deviceDid) == [spare.did])
            _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
            Self.removeSandboxes(of: cheapState)
        }
    }

    /// Watches deployment `id` until it runs, kills `agent` with SIGKILL then, and watches on until the deployment
    /// runs again (or ends); returns every event seen.
    static func watchKillingOnceRunning(
        _ id: String, of consumer: OrchestratorTests.Consumer, on orchestrator: RunningService,
        kill agent: RunningService
    ) async throws -> [Orrery_Orchestrator_V1_DeploymentEvent] {
        try await consumer.with(orchestrator) { client in
            try await client.watchDeployment(.with { $0.id = id }) { response in
                var seen: [Orrery_Orchestrator_V1_DeploymentEvent] = []
                var killed = false
                for try await event in response.messages {
                    seen.append(event)
                    if event.state == .running && !killed {
                        agent.child.signal(SIGKILL)
                        killed = true
                    } else if event.state == .running || event.state.isTerminal {
                        break
                    }
                }
                return seen
            }
        }
    }

    /// Kills and removes the sandboxes a killed agent left behind under its `state` directory (they would be gone
    /// with a real host).
    static func removeSandboxes(of state: URL) {
        let runs = state.appendingPathComponent("allocations").path
        for run in (try? FileManager.default.contentsOfDirectory(atPath: runs)) ?? [] {
            if let text = try? String(contentsOfFile: "\(runs)/\(run)/wrapper.pid", encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                kill(-pid, SIGKILL)
            }
            usleep(100_000)
            for controller in ["memory", "cpu", "cpuacct", "pids"] {
                rmdir("/sys/fs/cgroup/\(controller)/orrery/\(run)")
            }
        }
    }

    @Test(
        "an orchestrator killed while a deployment runs: a restarted one (same address) carries it to completed, with the output printed while none ran and the logs each line once"
    )
    func orchestratorRestart() async throws {
        try await ServiceBed.run("orrery-orchestrator-restart") { bed in
            let (network, directory) = (bed.network, bed.directory)
            let first = try await bed.startOrchestrator()
            defer { first.child.signal(SIGKILL) }
            let port = first.ready.grpcPort
            let agent = try await bed.startAgent(
                "steady", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [first])
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, first, devices: 1)
            var spec = OrchestratorTests.spec(cores: 1)
            // Gates the test opens: a line printed while no orchestrator runs, and the end after the agent's
            // reconnection, so the line can only arrive as the resent tail of a running allocation.
            spec.allocations[0].artifact = .with {
                $0.text =
                    "echo early; for i in $(seq 900); do [ -e /work/mid ] && break; sleep 0.1; done; echo late; "
                    + "for i in $(seq 900); do [ -e /work/go ] && break; sleep 0.1; done; printf done > out.txt"
            }
            spec.allocations[0].resources.ramMib = 32
            let job = try await consumer.with(first) { client in
                try await client.submitWorkload(
                    .with {
                        $0.consumerAuthority = try consumer.authority(for: first)
                        $0.spec = spec; $0.idempotencyKey = UUID().uuidString
                    })
            }
            var state = job.state
            let deadline = ContinuousClock.now + .seconds(15)
            while state != .running, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
                state = try await consumer.with(first) {
                    try await $0.getDeployment(.with { $0.id = job.id }).state
                }
            }
            #expect(state == .running)
            // "early" reached the orchestrator before it dies (positive evidence, however slow the machine).
            #expect(try await Self.stdout(of: job.id, consumer, first, becomes: "early\n"))
            first.child.signal(SIGKILL)
            _ = await first.child.waitForExit()
            // "late" is printed while no orchestrator runs: the agent's follower sends it to a line that is down.
            let allocations = directory.appendingPathComponent("steady-state/allocations")
            let run = try #require(
                try FileManager.default.contentsOfDirectory(atPath: allocations.path).first { $0.hasPrefix("off_") }
            )
            try Data().write(to: allocations.appendingPathComponent("\(run)/work/mid"))
            let stdoutLog = allocations.appendingPathComponent("\(run)/stdout.log")
            #expect(try await Self.file(stdoutLog, becomes: "early\nlate\n"))
            let second = try await bed.startOrchestrator(port: port)
            defer { second.child.signal(SIGKILL) }
            // The reconnected agent resends the running allocation's tail; the new orchestrator stores what it lacks.
            #expect(
                try await Self.stdout(of: job.id, consumer, second, becomes: "early\nlate\n"),
                "the line printed while no orchestrator ran is lost")
            try Data().write(to: allocations.appendingPathComponent("\(run)/work/go"))
            let events = try await consumer.with(second) { client in
                try await client.watchDeployment(.with { $0.id = job.id }) { response in
                    try await response.messages.reduce(into: [Orrery_Orchestrator_V1_DeploymentEvent]()) {
                        $0.append($1)
                    }
                }
            }
            #expect(events.last?.state == .completed, "\(events.map { "\($0.state): \($0.reason)" })")
            let outputs = try await consumer.with(second) { try await $0.getOutputs(.with { $0.id = job.id }) }
            #expect(outputs.files.first.map { String(decoding: $0.content, as: UTF8.self) } == "done")
            #expect(try await Self.stdout(of: job.id, consumer, second) == "early\nlate\n", "each line once")
        }
    }

    /// Whether the deployment's stdout as `service` has stored it becomes `expected` within 60 s (polled).
    static func stdout(
        of id: String, _ consumer: OrchestratorTests.Consumer, _ service: RunningService, becomes expected: String
    ) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if try await stdout(of: id, consumer, service) == expected { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// Whether the file at `url` holds exactly `expected` within 60 s (polled).
    static func file(_ url: URL, becomes expected: String) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if (try? String(contentsOf: url, encoding: .utf8)) == expected { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// The deployment's stdout as `service` has stored it.
    static func stdout(of id: String, _ consumer: OrchestratorTests.Consumer, _ service: RunningService) async throws
        -> String
    {
        let lines = try await consumer.with(service) { client in
            try await client.streamLogs(.with { $0.id = id }) { response in
                try await response.messages.reduce(into: [Orrery_Orchestrator_V1_LogLine]()) { $0.append($1) }
            }
        }
        return String(decoding: lines.filter { $0.stream == .stdout }.flatMap(\.data), as: UTF8.self)
    }

    static func sha256(_ text: String) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try? process.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        return String(String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).prefix(64))
    }
}

extension ISO8601DateFormatter {
    /// RFC 3339 with fractional seconds, as `orrery logs --timestamps` prints.
    static var fractional: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
