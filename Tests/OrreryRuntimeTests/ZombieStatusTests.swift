import Foundation
import OrreryTestSupport
import Testing

/// `ChildProcess` reads an exited child's status from `/proc` while Foundation has not noticed the exit yet.
@Suite("A child's exit status read from /proc before it is reaped")
struct ZombieStatusTests {
    /// Spawns `/bin/sh -c script` without Foundation (nobody reaps it): its pid.
    static func spawn(_ script: String) throws -> pid_t {
        var pid: pid_t = 0
        let arguments = ["/bin/sh", "-c", script]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let spawned = posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ)
        try #require(spawned == 0)
        return pid
    }

    /// The status once the child is a zombie (waits up to 10 s for it to exit).
    static func statusOnceExited(_ pid: pid_t) async throws -> Int32? {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if let status = ChildProcess.exitStatusOfZombie(pid) { return status }
            try await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    @Test("an exit code, a killing signal, and nothing while it runs; the child is still reaped afterwards")
    func statuses() async throws {
        let exited = try Self.spawn("exit 7")
        #expect(try await Self.statusOnceExited(exited) == 7)
        let killed = try Self.spawn("kill -9 $$")
        #expect(try await Self.statusOnceExited(killed) == 9)
        let running = try Self.spawn("sleep 30")
        try await Task.sleep(for: .milliseconds(200))
        #expect(ChildProcess.exitStatusOfZombie(running) == nil)
        kill(running, SIGKILL)
        // Reading did not reap: waitpid still collects each.
        for pid in [exited, killed, running] {
            var status: Int32 = 0
            #expect(waitpid(pid, &status, 0) == pid)
        }
    }
}
