import Foundation
import OrreryProto
import SwiftProtobuf
import Testing

@testable import DeviceAgent

@Suite("GPU passthrough and metering")
struct GPUPassthroughTests {
    @Test("the host's NVIDIA device nodes are found and bound into the sandbox after /dev")
    func devices() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dev-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["nvidia0", "nvidiactl", "nvidia-uvm", "null", "sda"] {
            _ = FileManager.default.createFile(atPath: directory.appendingPathComponent(name).path, contents: nil)
        }
        let found = nvidiaDevices(in: directory.path)
        #expect(found.map { URL(fileURLWithPath: $0).lastPathComponent } == ["nvidia-uvm", "nvidia0", "nvidiactl"])
        var sandbox = SandboxCommand(
            workDirectory: "/w", artifactDirectory: "/a", network: false, environment: [:], command: ["true"])
        sandbox.devices = found
        let arguments = sandbox.arguments
        let dev = try #require(arguments.firstIndex(of: "--dev"))
        let bind = try #require(arguments.firstIndex(of: "--dev-bind"))
        #expect(bind > dev, "bound after the fresh /dev is mounted")
        #expect(arguments.filter { $0 == "--dev-bind" }.count == 3)
        #expect(
            SandboxCommand(workDirectory: "/w", artifactDirectory: "/a", network: false, environment: [:], command: [])
                .arguments.contains("--dev-bind") == false)
    }

    @Test("an allocation asking for GPUs on a host without any is refused before it starts")
    func noGPU() async throws {
        guard nvidiaDevices().isEmpty else { return }  // a GPU host: nothing to refuse
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gpu-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let runner = AllocationRunner(root: directory.path, cgroups: nil)
        let spec = Orrery_Orchestrator_V1_AllocationSpec.with {
            $0.artifact = .with { $0.text = "nvidia-smi" }
            $0.resources = .with {
                $0.cpuCores = 1
                $0.ramMib = 64
                $0.gpu = .with { $0.count = 1 }
            }
        }
        await #expect(throws: RunnerError.self) { try await runner.start("gpu-job", spec: spec) }
    }

    @Test("GPU time is the GPUs held for the wall time")
    func gpuSeconds() {
        let outcome = AllocationOutcome(
            exitCode: 0, reason: "exited 0", usage: MeteredUsage(), wallSeconds: 12.5, outputs: [], missingOutputs: [])
        #expect(ExecutionManager.gpuSeconds(outcome, gpus: 2) == 25)
        #expect(ExecutionManager.gpuSeconds(outcome, gpus: 0) == 0)
    }
}
