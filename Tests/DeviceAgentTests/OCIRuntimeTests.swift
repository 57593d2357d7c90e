import Foundation
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// The OCI runtime the agent finds by running a real container (runc here: crun refuses this host's hybrid cgroup
/// v1 layout).
@Suite(
    "OCI runtime detection",
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/runc"), "needs runc (make test installs it)"))
struct OCIRuntimeTests {
    @Test("runc runs a test container with the namespaces, mappings, cgroup and filter images get")
    func detectsRunc() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-oci-runtime") { directory in
            let (runtime, failures) = await OCIRuntime.detect(
                .auto, stateDirectory: directory.appendingPathComponent("runtime").path, cgroups: ControlGroup.detect())
            #expect(runtime?.name == "runc", "failures: \(failures)")
            let (none, reasons) = await OCIRuntime.detect(
                .off, stateDirectory: directory.appendingPathComponent("runtime").path, cgroups: ControlGroup.detect())
            #expect(none == nil && reasons.isEmpty)
        }
    }
}
