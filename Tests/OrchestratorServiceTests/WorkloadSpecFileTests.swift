import Foundation
import OrchestratorService
import OrreryPlacement
import OrreryProto
import OrreryTestSupport
import OrreryWorkloadSpec
import Testing

@Suite("Workload spec files")
struct WorkloadSpecFileTests {
    @Test(
        "a spec file's mistakes are named all at once: file, line and column, the field's path, the nearest field name or the allowed values"
    )
    func problemsAtOnce() throws {
        let text = """
            name: x
            allocations:
              - name: a
                executor: docker
                max_duraton_seconds: 5
                resources: {cpu_cores: -1, ram_mib: lots}
                replicas: [2]
            """
        do {
            _ = try WorkloadSpecFile.parse(text, source: "job.yaml")
            Issue.record("a spec with four mistakes parsed")
        } catch let error as WorkloadSpecFile.ParseError {
            let lines = error.description.split(separator: "\n").map(String.init)
            #expect(lines.count == 6, "\(error)")
            #expect(
                lines.contains(
                    "  job.yaml:4:15: allocations[0].executor: `docker` is not one of `process`, `oci`"),
                "\(error)")
            #expect(
                lines.contains(
                    "  job.yaml:5:5: allocations[0]: unknown field `max_duraton_seconds` — did you mean `max_duration_seconds`?"
                ), "\(error)")
            #expect(
                lines.contains {
                    $0.hasPrefix("  job.yaml:6:28: allocations[0].resources.cpu_cores: expected a whole number ≥ 0")
                },
                "\(error)")
            #expect(
                lines.contains(
                    "  job.yaml:6:41: allocations[0].resources.ram_mib: expected a whole number, got `lots`"),
                "\(error)")
            #expect(lines.contains { $0.contains("allocations[0].replicas: expected a whole number, got a list") })
        }
    }

    @Test("every example in Deploy/examples parses and validates")
    func examples() throws {
        let folder = TestEnvironment.repositoryRoot.appendingPathComponent("Deploy/examples")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".yaml") }
        #expect(
            Set(files) == [
                "cpu-batch.yaml", "ensemble-latency.yaml", "gpu-job.yaml", "stateful-counter.yaml", "web-service.yaml",
                "web-app.yaml",
            ])
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
        let app = try WorkloadSpecFile.read(folder.appendingPathComponent("web-app.yaml").path)
        #expect(app.allocations[0].ports.map(\.expose) == [.public, .private])
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
