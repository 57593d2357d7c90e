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

    @Test("a test directory's leftovers (a script run from it, detached, with a child) are killed when it is removed")
    func leftoversKilledWithTheirDirectory() async throws {
        var leftover: Int32 = 0
        var grandchild: Int32 = 0
        try await TestEnvironment.withTemporaryDirectory("orrery-leftovers") { directory in
            let script = directory.appendingPathComponent("launch.sh")
            let pids = directory.appendingPathComponent("pids")
            // Like a sandbox's launch script: it outlives whoever started it (setsid, reparented to init).
            try "sleep 300 & echo $$ $! > \(pids.path).tmp; mv \(pids.path).tmp \(pids.path); wait\n".write(
                to: script, atomically: true, encoding: .utf8)
            let (status, _) = try await ChildProcess.run(
                URL(fileURLWithPath: "/bin/sh"),
                arguments: ["-c", "setsid /bin/sh \(script.path) </dev/null >/dev/null 2>&1 &"])
            #expect(status == 0)
            let deadline = ContinuousClock.now + .seconds(30)
            while !FileManager.default.fileExists(atPath: pids.path), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            let written = try String(contentsOf: pids, encoding: .utf8).split(separator: " ")
            leftover = try #require(Int32(written[0]))
            grandchild = try #require(Int32(written[1].trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(kill(leftover, 0) == 0, "the script runs")
        }
        // The script was killed; its sleep, which does not name the directory, is the script's to end (a sandbox's
        // bubblewrap dies with its parent): here the test ends it.
        let deadline = ContinuousClock.now + .seconds(30)
        while Self.runs(leftover), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!Self.runs(leftover))
        kill(grandchild, SIGKILL)
    }

    /// Whether `pid` runs (a zombie waiting for its parent counts as ended).
    static func runs(_ pid: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        guard let close = status.lastIndex(of: ")") else { return false }
        return !status[status.index(close, offsetBy: 2)...].hasPrefix("Z")
    }
}
