import Foundation
import OrchestratorService
import OrreryIdentity
import OrreryPlacement
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import SwiftProtobuf
import Testing

@Suite(
    "orrery run, status, cancel, explain", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct OrchestratorCLITests {
    @Test("explain and run an example spec, list and show it, cancel it; an unplaceable spec exits 1 with relaxations")
    func cliSession() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-cli-run") { directory in
                let credentials = directory.appendingPathComponent("credentials")
                let network = try TestNetwork(directory: credentials)
                let registry = try await JobConstellation.startRegistry(database, network, directory)
                defer { registry.child.signal(SIGKILL) }
                // No device answers offers here: a long offer timeout keeps the offer standing until the cancel (with
                // the default 10 s, a loaded machine let three offers expire and the deployment fail before it).
                let orchestrator = try await JobConstellation.startOrchestrator(
                    database, network, directory, registry: registry, extraArguments: ["--offer-timeout-ms", "600000"])
                defer { orchestrator.child.signal(SIGKILL) }
                let devices = try await OrchestratorTests.joinFleet(
                    registry: registry, operatorKey: network.operatorKey)
                try await OrchestratorTests.waitForFleet(
                    try OrchestratorTests.Consumer(operatorKey: network.operatorKey), orchestrator, devices: 3)

                let cli = TestEnvironment.executable("orrery")
                // The operator calls with its own key (no proof needed).
                let connection = [
                    "--orchestrator", "127.0.0.1:\(orchestrator.ready.grpcPort)", "--key",
                    credentials.appendingPathComponent("operator.key").path,
                ]
                let example = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/examples/cpu-batch.yaml")
                    .path
                let (explainStatus, explained) = try await ChildProcess.run(
                    cli, arguments: ["explain", example] + connection)
                #expect(explainStatus == 0, "\(explained)")
                #expect(
                    explained.contains("placeable: ") && explained.contains("→ replica 0 on \(devices[0])"),
                    "\(explained)")

                let (runStatus, ran) = try await ChildProcess.run(
                    cli, arguments: ["run", example, "--detach"] + connection)
                #expect(runStatus == 0, "\(ran)")
                let id = try #require(ran.split(separator: " ").first { $0.hasPrefix("dep_") }.map(String.init))
                // Submit places and offers; when the background driver races it to the offer (a loaded machine), the
                // answer may still say matched — placed, on the cheapest device either way.
                #expect(
                    (ran.contains(": offered — ") || ran.contains(": matched — "))
                        && ran.contains("count[0]  \(devices[0])"),
                    "\(ran)")

                let (listStatus, listed) = try await ChildProcess.run(cli, arguments: ["status"] + connection)
                #expect(listStatus == 0)
                #expect(listed.contains(id) && listed.contains("word-count"), "\(listed)")
                // The devices here have no agent to bid: it stays offered.
                var shownState = Orrery_Orchestrator_V1_DeploymentState.unspecified
                let offeredBy = ContinuousClock.now + .seconds(30)
                while shownState != .offered, ContinuousClock.now < offeredBy {
                    let (showStatus, shown) = try await ChildProcess.run(
                        cli, arguments: ["status", id, "--json"] + connection)
                    #expect(showStatus == 0)
                    shownState = try Orrery_Orchestrator_V1_Deployment(jsonString: shown).state
                    if shownState != .offered { try await Task.sleep(for: .milliseconds(200)) }
                }
                #expect(shownState == .offered)
                let (cancelStatus, cancelled) = try await ChildProcess.run(
                    cli, arguments: ["cancel", id, "--reason", "test over"] + connection)
                #expect(cancelStatus == 0)
                #expect(cancelled.contains("cancelled — cancelled by the consumer: test over"), "\(cancelled)")
                // Its history: every transition with its reason, as lines or JSON, and in `status ID`.
                let (eventsStatus, events) = try await ChildProcess.run(cli, arguments: ["events", id] + connection)
                let states = events.split(separator: "\n").compactMap {
                    $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first
                }
                #expect(eventsStatus == 0 && states.first == "submitted" && states.last == "cancelled", "\(events)")
                #expect(events.contains("cancelled by the consumer: test over"), "\(events)")
                let (_, jsonEvents) = try await ChildProcess.run(cli, arguments: ["events", id, "--json"] + connection)
                let parsed = try jsonEvents.split(separator: "\n").map {
                    try Orrery_Orchestrator_V1_DeploymentEvent(jsonString: String($0))
                }
                #expect(parsed.map(\.state).first == .submitted && parsed.last?.state == .cancelled, "\(jsonEvents)")
                #expect(parsed.count == states.count)
                let (_, detailed) = try await ChildProcess.run(cli, arguments: ["status", id] + connection)
                #expect(
                    detailed.contains("  history:") && detailed.contains("cancelled by the consumer"), "\(detailed)")

                let impossible = directory.appendingPathComponent("impossible.yaml").path
                try """
                name: too-big
                allocations:
                  - {name: big, executor: process, artifact: {text: "true"}, resources: {cpu_cores: 64, ram_mib: 1024}}
                """.write(toFile: impossible, atomically: true, encoding: .utf8)
                let (noStatus, notPlaceable) = try await ChildProcess.run(
                    cli, arguments: ["explain", impossible] + connection)
                #expect(noStatus == 1)
                #expect(notPlaceable.contains("ask for at most 16 cpu cores"), "\(notPlaceable)")
                #expect(notPlaceable.contains("- 3 fail cpu cores"), "\(notPlaceable)")
                // The same exit status with --json, and the whole explanation on standard output.
                let (jsonStatus, jsonExplained) = try await ChildProcess.run(
                    cli, arguments: ["explain", impossible, "--json"] + connection)
                #expect(jsonStatus == 1, "\(jsonExplained)")
                let explanation = try Orrery_Orchestrator_V1_PlacementExplanation(jsonString: jsonExplained)
                #expect(
                    !explanation.placeable && explanation.allocations.first?.failing.first?.devices == 3,
                    "\(jsonExplained) — the orchestrator said: \(orchestrator.child.output.suffix(2000))")
                let (badStatus, bad) = try await ChildProcess.run(
                    cli, arguments: ["run", TestEnvironment.repositoryRoot.path + "/README.md"] + connection)
                #expect(badStatus != 0, "\(bad)")
                // A spec file's mistakes, every one with its line, and no usage text burying them.
                let typo = directory.appendingPathComponent("typo.yaml").path
                try """
                name: typo
                allocations:
                  - {name: a, executor: process, artifact: {text: "true"}, resources: {cpu_cores: 1, ram_mib: 32},
                     max_duraton_seconds: 60}
                """.write(toFile: typo, atomically: true, encoding: .utf8)
                let (typoStatus, typoOutput) = try await ChildProcess.run(
                    cli, arguments: ["explain", typo] + connection)
                #expect(typoStatus != 0)
                #expect(
                    typoOutput.contains(
                        "typo.yaml:4:6: allocations[0]: unknown field `max_duraton_seconds` — did you mean")
                        && !typoOutput.contains("USAGE") && !typoOutput.contains("Usage:"), "\(typoOutput)")

                // Without flags: the key from ORRERY_KEY, or everything from a named context.
                let config = ["XDG_CONFIG_HOME": directory.appendingPathComponent("config").path]
                let operatorKey = credentials.appendingPathComponent("operator.key").path
                let orchestratorAddress = "127.0.0.1:\(orchestrator.ready.grpcPort)"
                let (noKeyStatus, noKey) = try await ChildProcess.run(
                    cli, arguments: ["status", "--orchestrator", orchestratorAddress], environment: config)
                #expect(noKeyStatus != 0 && noKey.contains("no key: give --key FILE, set ORRERY_KEY"), "\(noKey)")
                let (envStatus, fromEnvironment) = try await ChildProcess.run(
                    cli, arguments: ["status", "--orchestrator", orchestratorAddress],
                    environment: config.merging(["ORRERY_KEY": operatorKey]) { $1 })
                #expect(envStatus == 0 && fromEnvironment.contains(id), "\(fromEnvironment)")
                let (setStatus, set) = try await ChildProcess.run(
                    cli,
                    arguments: ["context", "set", "test", "--orchestrator", orchestratorAddress, "--key", operatorKey],
                    environment: config)
                #expect(setStatus == 0 && set.contains("(in use)"), "\(set)")
                let (contextStatus, fromContext) = try await ChildProcess.run(
                    cli, arguments: ["status"], environment: config)
                #expect(contextStatus == 0 && fromContext.contains(id), "\(fromContext)")
                let (_, contexts) = try await ChildProcess.run(
                    cli, arguments: ["context", "list"], environment: config)
                #expect(contexts.contains("* test  \(orchestratorAddress)"), "\(contexts)")
                // The context names only the orchestrator: the registry is the one the orchestrator's Info names.
                let (infoStatus, info) = try await ChildProcess.run(cli, arguments: ["info", orchestratorAddress])
                let registryAddress = "127.0.0.1:\(registry.ready.grpcPort)"
                #expect(infoStatus == 0 && info.contains("calls   registry at \(registryAddress)"), "\(info)")
                let (devicesStatus, listedDevices) = try await ChildProcess.run(
                    cli, arguments: ["devices"], environment: config)
                #expect(
                    devicesStatus == 0 && devices.allSatisfy { listedDevices.contains($0) }, "\(listedDevices)")
                let (_, version) = try await ChildProcess.run(cli, arguments: ["version"])
                #expect(version.hasPrefix("orrery 0.1.0 (build "), "\(version)")

                // Another service's address is named as such, before anything is signed; a malformed id says what is wrong.
                let (wrongStatus, wrong) = try await ChildProcess.run(
                    cli,
                    arguments: [
                        "status", "--orchestrator", "127.0.0.1:\(registry.ready.grpcPort)", "--key",
                        credentials.appendingPathComponent("operator.key").path,
                    ])
                #expect(wrongStatus != 0, "\(wrong)")
                #expect(
                    wrong.contains("127.0.0.1:\(registry.ready.grpcPort) is the registry, not the orchestrator")
                        && !wrong.contains("unimplemented") && !wrong.contains("Usage:"), "\(wrong)")
                let (malformedStatus, malformed) = try await ChildProcess.run(
                    cli, arguments: ["status", "dep_doesnotexist"] + connection)
                #expect(
                    malformedStatus != 0 && malformed.contains("a deployment id is dep_ and 26 characters"),
                    "\(malformed)")
            }
        }
    }
}
