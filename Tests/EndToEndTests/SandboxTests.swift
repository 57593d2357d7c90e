import Foundation
import OrreryTestSupport
import Testing

/// The isolation and limits of `device-agent run-local`, which runs an allocation exactly as the agent runs
/// deployed work: bubblewrap namespaces and cgroup limits. One test per limit; one as an unprivileged user.
@Suite("Sandbox: isolation and limits", .serialized)
struct SandboxTests {
    struct Outcome: Decodable {
        struct Usage: Decodable {
            var cpuSeconds: Double
            var peakMemoryBytes: UInt64
            var oomKilled: Bool
            var pidsLimitHit: Bool
        }
        struct Output: Decodable {
            var path: String
            var sha256: String
            var size: Int
        }
        var exitCode: Int32
        var reason: String
        var usage: Usage
        var wallSeconds: Double
        var outputs: [Output]
        var missingOutputs: [String]
    }

    static var isRoot: Bool { getuid() == 0 }

    /// Runs `script` as an allocation; returns its outcome and everything it printed.
    static func run(
        _ script: String, cores: Int = 1, ramMiB: Int = 128, network: Bool = false, outputs: [String] = [],
        seconds: Int = 30, asUser user: String? = nil, limits: Bool = true, artifact: [String: String]? = nil,
        command: String = ""
    ) async throws -> (outcome: Outcome, output: String) {
        let directory = try TestEnvironment.temporaryDirectory("orrery-sandbox")
        defer { try? FileManager.default.removeItem(at: directory) }
        chmod(directory.path, 0o777)
        let spec: [String: Any] = [
            "name": "test", "executor": "EXECUTOR_PROCESS", "artifact": artifact ?? ["text": script],
            "command": command,
            "resources": ["cpuCores": cores, "ramMib": String(ramMiB)], "network": network, "outputs": outputs,
            "maxDurationSeconds": seconds,
        ]
        let specFile = directory.appendingPathComponent("allocation.json")
        try JSONSerialization.data(withJSONObject: spec).write(to: specFile)
        chmod(specFile.path, 0o644)
        var arguments = [
            "run-local", "--allocation", specFile.path, "--work-root", directory.appendingPathComponent("runs").path,
        ]
        if !limits { arguments.append("--no-limits") }
        let binary = TestEnvironment.executable("device-agent")
        let (_, output): (Int32, String)
        if let user {
            (_, output) = try await ChildProcess.run(
                URL(fileURLWithPath: "/usr/sbin/runuser"), arguments: ["-u", user, "--", binary.path] + arguments)
        } else {
            (_, output) = try await ChildProcess.run(binary, arguments: arguments)
        }
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("{\"exitCode\"") }) else {
            throw RunnerFailure(output: output)
        }
        return (try JSONDecoder().decode(Outcome.self, from: Data(line.utf8)), output)
    }

    struct RunnerFailure: Error, CustomStringConvertible {
        let output: String
        var description: String { "run-local printed no outcome:\n\(output)" }
    }

    @Test("the host's processes and files are invisible; outputs come back with their sha256", .enabled(if: isRoot))
    func hostInvisible() async throws {
        let (outcome, output) = try await Self.run(
            """
            echo "host=$(hostname)"
            echo "pids=$(ls /proc | grep -c '^[0-9]')"
            for path in /home /root /var /etc/passwd /etc/hostname /tmp/orrery-sandbox; do
              [ -e "$path" ] && echo "visible $path"
            done
            echo "user=$(id -u)"
            grep CapEff /proc/self/status
            printf 'result' > result.txt
            head -c 4194304 /dev/zero > big.bin
            exit 0
            """, outputs: ["result.txt", "never.txt", "big.bin"])
        #expect(outcome.exitCode == 0, "\(output)")
        #expect(output.contains("host=orrery"))
        let pids = output.split(separator: "\n").first { $0.hasPrefix("pids=") }.flatMap { Int($0.dropFirst(5)) } ?? 99
        // bubblewrap's init, the shell, the command substitution, ls and grep: the sandbox's own, nothing else.
        #expect(pids <= 6, "only the sandbox's own processes: \(pids)")
        #expect(!output.contains("visible "), "\(output)")
        // Started by a root agent, the workload is nobody in its own user namespace, without capabilities.
        #expect(output.contains("user=65534"), "\(output)")
        #expect(output.contains("CapEff:\t0000000000000000"), "\(output)")
        #expect(outcome.outputs.map(\.path) == ["result.txt"])
        #expect(outcome.outputs.first?.sha256 == "f6a214f7a5fcda0c2cee9660b7fc29f5649e3c68aad48e20e950137c98913a68")  // sha256("result")
        #expect(
            outcome.missingOutputs == [
                "never.txt: not written", "big.bin: output big.bin is 4194304 bytes, more than 3145728",
            ])
    }

    @Test("a memory hog is killed at its memory limit", .enabled(if: isRoot))
    func memoryLimit() async throws {
        // tail keeps the whole (newline-free) input in memory.
        let (outcome, output) = try await Self.run("head -c 400000000 /dev/zero | tail > /dev/null", ramMiB: 64)
        #expect(outcome.exitCode == 137, "\(output)")
        #expect(outcome.usage.oomKilled, "\(output)")
        #expect(outcome.reason == "killed: the memory limit of 64 MiB was exceeded", "\(outcome.reason)")
        #expect(outcome.usage.peakMemoryBytes <= 64 << 20 + 1 << 20, "\(outcome.usage.peakMemoryBytes)")
    }

    @Test("a fork bomb is contained by the process limit", .enabled(if: isRoot))
    func forkBomb() async throws {
        let (outcome, output) = try await Self.run(
            // Long sleeps, so the limit (256) is reached however slowly a loaded machine forks; then they are stopped.
            "i=0; while [ $i -lt 400 ]; do sleep 60 & i=$((i+1)); done 2>/dev/null; kill $(jobs -p) 2>/dev/null; echo done"
        )
        #expect(outcome.usage.pidsLimitHit, "\(output)")
        #expect(outcome.reason.contains("process limit"), "\(outcome.reason)")
    }

    @Test(
        "a CPU quota shows in the metered usage: two busy loops on a one-core quota use about one core",
        .enabled(if: isRoot))
    func cpuQuota() async throws {
        let (outcome, output) = try await Self.run(
            "(timeout 2 sh -c 'while :; do :; done') & timeout 2 sh -c 'while :; do :; done'; wait", cores: 1)
        #expect(outcome.wallSeconds >= 1.9, "\(output)")
        let share = outcome.usage.cpuSeconds / outcome.wallSeconds
        #expect(share <= 1.15, "cpu seconds per second \(share)")
        // Metered at all (a loaded machine may give the loops much less than their quota).
        #expect(outcome.usage.cpuSeconds > 0.05, "cpu seconds \(outcome.usage.cpuSeconds)")
    }

    @Test("the network is refused unless the spec asks for it", .enabled(if: isRoot))
    func network() async throws {
        let logs = try TestEnvironment.temporaryDirectory("orrery-listener")
        defer { try? FileManager.default.removeItem(at: logs) }
        let listener = try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/python3"),
            arguments: [
                "-c",
                "import socket\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(8)\nprint(s.getsockname()[1],flush=True)\nwhile True: s.accept()[0].close()",
            ], outputDirectory: logs)
        defer { listener.signal(SIGKILL) }
        let port = try await listener.printedPort()
        let probe = "bash -c 'echo > /dev/tcp/127.0.0.1/\(port)' && echo connected || echo refused"
        let (closed, closedOutput) = try await Self.run(probe)
        #expect(closedOutput.contains("refused") && !closedOutput.contains("connected"), "\(closedOutput)")
        #expect(closed.exitCode == 0)
        let (_, openOutput) = try await Self.run(probe, network: true)
        #expect(openOutput.contains("connected"), "\(openOutput)")
    }

    @Test("an unprivileged agent still isolates: run as nobody, the host stays invisible", .enabled(if: isRoot))
    func unprivileged() async throws {
        let (outcome, output) = try await Self.run(
            """
            echo "host=$(hostname) user=$(id -u)"
            echo "pids=$(ls /proc | grep -c '^[0-9]')"
            [ -e /home ] && echo "visible /home"
            exit 0
            """, asUser: "nobody", limits: false)
        #expect(outcome.exitCode == 0, "\(output)")
        #expect(output.contains("host=orrery user=65534"), "\(output)")
        #expect(!output.contains("visible"))
    }

    @Test("the maximum duration stops an allocation", .enabled(if: isRoot))
    func maxDuration() async throws {
        let (outcome, _) = try await Self.run("sleep 30", seconds: 1)
        #expect(outcome.exitCode != 0)
        #expect(outcome.reason.contains("maximum duration of 1 s"), "\(outcome.reason)")
        #expect(outcome.wallSeconds < 10)
    }

    @Test("a URL artifact is fetched and run only when its sha256 matches", .enabled(if: isRoot))
    func urlArtifact() async throws {
        let served = try TestEnvironment.temporaryDirectory("orrery-artifacts")
        defer { try? FileManager.default.removeItem(at: served) }
        let script = "#!/bin/sh\necho fetched and checked\n"
        try script.write(to: served.appendingPathComponent("job.sh"), atomically: true, encoding: .utf8)
        let server = try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/python3"),
            arguments: [
                "-c",
                "import http.server, socketserver, functools, sys\nh = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\ns = socketserver.TCPServer(('127.0.0.1', 0), h)\nprint(s.server_address[1], flush=True)\ns.serve_forever()",
                served.path,
            ], outputDirectory: served)
        defer { server.signal(SIGKILL) }
        let port = try await server.printedPort()
        let url = "http://127.0.0.1:\(port)/job.sh"
        let digest = AgentChannelTests.sha256(script)
        let (good, goodOutput) = try await Self.run("", artifact: ["url": url, "sha256": digest])
        #expect(good.exitCode == 0, "\(goodOutput)")
        #expect(goodOutput.contains("fetched and checked"))
        let wrong = String(repeating: "0", count: 64)
        do {
            _ = try await Self.run("", artifact: ["url": url, "sha256": wrong])
            Issue.record("ran an artifact whose sha256 does not match")
        } catch let failure as RunnerFailure {
            #expect(
                failure.output.contains("the artifact's sha256 is \(digest), the spec says \(wrong): refused"),
                "\(failure.output)")
            #expect(!failure.output.contains("fetched and checked"))
        }
    }
}
