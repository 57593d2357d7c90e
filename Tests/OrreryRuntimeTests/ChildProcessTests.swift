import Foundation
import OrreryTestSupport
import Testing

@Suite("Test support: child processes")
struct ChildProcessTests {
    @Test("a child that exited is seen to have exited while a process it left behind still holds its descriptors")
    func exitSeenDespiteLeftovers() async throws {
        let started = ContinuousClock.now
        // The shell leaves a sleep behind, which inherits what Foundation watches the shell's exit by.
        let (status, output) = try await ChildProcess.run(
            URL(fileURLWithPath: "/bin/sh"), arguments: ["-c", "sleep 30 & echo $!; exit 3"],
            timeout: .seconds(20))
        if let leftover = Int32(output.trimmingCharacters(in: .whitespacesAndNewlines)) { kill(leftover, SIGKILL) }
        #expect(status == 3, "\(output)")
        #expect(ContinuousClock.now - started < .seconds(20))
    }
}
