import Foundation
import OrchestratorService
import OrreryIdentity
import OrreryPlacement
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import SwiftProtobuf
import Testing

@Suite("Workload spec files")
struct WorkloadSpecFileTests {
    @Test("every example in Deploy/examples parses and validates")
    func examples() throws {
        let folder = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/examples")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".yaml") }
        #expect(Set(files) == ["cpu-batch.yaml", "ensemble-latency.yaml", "gpu-job.yaml", "stateful-counter.yaml"])
        for file in files {
            let spec = try WorkloadSpecFile.read(folder.appendingPathComponent(file).path)
            let request = try WorkloadSpecValidator.validate(spec)
            #expect(!request.allocations.isEmpty, "\(file)")
        }
        let ensemble = try WorkloadSpecFile.read(folder.appendingPathComponent("ensemble-latency.yaml").path)
        #expect(ensemble.allocations[0].constraints.spread == .acrossDevices)
        #expect(ensemble.edges[0].maxRttMs == 30)
        let gpu = try WorkloadSpecFile.read(folder.appendingPathComponent("gpu-job.yaml").path)
        #expect(gpu.allocations[0].resources.gpu.vramMib == 40960)
        #expect(gpu.allocations[0].executor == .process)
    }

    @Test("YAML and JSON say the same; a wrong field or value is named")
    func formats() throws {
        let yaml = try WorkloadSpecFile.parse(
            """
            name: x
            allocations:
              - {name: a, executor: process, artifact: {text: "echo"}, resources: {cpu_cores: 1, ram_mib: 1}}
            """)
        let json = try WorkloadSpecFile.parse(
            #"{"name": "x", "allocations": [{"name": "a", "executor": "EXECUTOR_PROCESS", "artifact": {"text": "echo"}, "resources": {"cpuCores": 1, "ramMib": "1"}}]}"#
        )
        #expect(yaml == json)
        #expect(throws: WorkloadSpecFile.ParseError.self) { try WorkloadSpecFile.parse("name: x\nallocatons: []") }
        #expect(throws: WorkloadSpecFile.ParseError.self) { try WorkloadSpecFile.parse("- a list") }
        #expect(throws: WorkloadSpecFile.ParseError.self) {
            try WorkloadSpecFile.parse("name: x\nallocations: [{executor: teleport}]")
        }
    }
}

@Suite(
    "orrery run, status, cancel, explain", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct OrchestratorCLITests {
    @Test("explain and run an example spec, list and show it, cancel it; an unplaceable spec exits 1 with relaxations")
    func cliSession() async throws {
        try await TestDatabase.withDatabase { database in
            let directory = try TestEnvironment.temporaryDirectory("orrery-cli-run")
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

            let cli = TestEnvironment.executable("orrery")
            // The operator calls with its own key (no proof needed).
            let connection = [
                "--orchestrator", "127.0.0.1:\(orchestrator.ready.grpcPort)", "--key",
                credentials.appendingPathComponent("operator.key").path,
            ]
            let example = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/examples/cpu-batch.yaml").path
            let (explainStatus, explained) = try await ChildProcess.run(
                cli, arguments: ["explain", example] + connection)
            #expect(explainStatus == 0, "\(explained)")
            #expect(
                explained.contains("placeable: ") && explained.contains("→ replica 0 on \(devices[0])"), "\(explained)")

            let (runStatus, ran) = try await ChildProcess.run(
                cli, arguments: ["run", example, "--detach"] + connection)
            #expect(runStatus == 0, "\(ran)")
            let id = try #require(ran.split(separator: " ").first { $0.hasPrefix("dep_") }.map(String.init))
            #expect(ran.contains("offered") && ran.contains("count[0]  \(devices[0])"), "\(ran)")

            let (listStatus, listed) = try await ChildProcess.run(cli, arguments: ["status"] + connection)
            #expect(listStatus == 0)
            #expect(listed.contains(id) && listed.contains("word-count"), "\(listed)")
            let (showStatus, shown) = try await ChildProcess.run(cli, arguments: ["status", id, "--json"] + connection)
            #expect(showStatus == 0)
            #expect(try Orrery_Orchestrator_V1_Deployment(jsonString: shown).state == .offered)
            let (cancelStatus, cancelled) = try await ChildProcess.run(
                cli, arguments: ["cancel", id, "--reason", "test over"] + connection)
            #expect(cancelStatus == 0)
            #expect(cancelled.contains("cancelled — cancelled by the consumer: test over"), "\(cancelled)")

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
            let (badStatus, bad) = try await ChildProcess.run(
                cli, arguments: ["run", TestEnvironment.repositoryRoot.path + "/README.md"] + connection)
            #expect(badStatus != 0, "\(bad)")
        }
    }
}
