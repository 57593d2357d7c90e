import DeviceAgent
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
        struct Output: Decodable, Equatable {
            var path: String
            var sha256: String
            var size: Int
            var location: String?
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
        _ script: String, cores: Int = 1, ramMiB: Int = 128, diskMiB: Int = 0, network: Bool = false,
        outputs: [String] = [],
        seconds: Int = 30, asUser user: String? = nil, limits: Bool = true, artifact: [String: String]? = nil,
        command: String = ""
    ) async throws -> (outcome: Outcome, output: String) {
        return try await TestEnvironment.withTemporaryDirectory("orrery-sandbox") { directory in
            chmod(directory.path, 0o777)
            let spec: [String: Any] = [
                "name": "test", "executor": "EXECUTOR_PROCESS", "artifact": artifact ?? ["text": script],
                "command": command,
                "resources": ["cpuCores": cores, "ramMib": String(ramMiB), "diskMib": String(diskMiB)],
                "network": network,
                "outputs": outputs,
                "maxDurationSeconds": seconds,
            ]
            let specFile = directory.appendingPathComponent("allocation.json")
            try JSONSerialization.data(withJSONObject: spec).write(to: specFile)
            chmod(specFile.path, 0o644)
            var arguments = [
                "run-local", "--allocation", specFile.path, "--work-root",
                directory.appendingPathComponent("runs").path,
            ]
            if !limits { arguments.append("--no-limits") }
            let binary = TestEnvironment.executable("device-agent")
            let (_, output): (Int32, String)
            if let user {
                // A copy the other user can reach: the build directory may lie under one it cannot enter (/root/…).
                // (Copied by another process: a write descriptor of this one, inherited by a child another test forks
                // meanwhile, would make executing the copy fail with ETXTBSY.)
                let copy = directory.appendingPathComponent("device-agent")
                let (installed, installOutput) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/usr/bin/install"), arguments: ["-m", "755", binary.path, copy.path])
                guard installed == 0 else { throw RunnerFailure(output: installOutput) }
                (_, output) = try await ChildProcess.run(
                    URL(fileURLWithPath: "/usr/sbin/runuser"), arguments: ["-u", user, "--", copy.path] + arguments)
            } else {
                (_, output) = try await ChildProcess.run(binary, arguments: arguments)
            }
            guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("{\"exitCode\"") }) else {
                throw RunnerFailure(output: output)
            }
            return (try JSONDecoder().decode(Outcome.self, from: Data(line.utf8)), output)
        }
    }

    struct RunnerFailure: Error, CustomStringConvertible {
        let output: String
        var description: String { "run-local printed no outcome:\n\(output)" }
    }

    @Test(
        "the host's processes and files are invisible; outputs come back with their sha256 (over 3 MiB: for the content store)",
        .enabled(if: isRoot))
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
        #expect(outcome.outputs.map(\.path) == ["result.txt", "big.bin"])
        #expect(outcome.outputs.first?.sha256 == "f6a214f7a5fcda0c2cee9660b7fc29f5649e3c68aad48e20e950137c98913a68")  // sha256("result")
        #expect(outcome.outputs.first?.location == nil)
        // Over 3 MiB: bound for the orchestrator's content store, named by its sha256 and size.
        #expect(
            outcome.outputs.last
                == .init(
                    path: "big.bin", sha256: "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8",
                    size: 4_194_304, location: "store"))
        #expect(outcome.missingOutputs == ["never.txt: not written"])
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

    /// A Python probe for the sandbox: connects to each `host:port` argument and prints `connected …` or
    /// `refused … <error>` (a timeout is printed as such, never as a refusal).
    static let connectProbe = #"""
        cat > /tmp/probe.py <<'PY'
        import socket, sys
        for target in sys.argv[1:]:
            host, port = target.rsplit(":", 1)
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.settimeout(10)
            try:
                s.connect((host, int(port)))
                print("connected", target, flush=True)
                data = s.recv(100)
                if data: print("received", data.decode(errors="replace").strip(), flush=True)
            except socket.timeout:
                print("timeout", target, flush=True)
            except OSError as error:
                print("refused", target, type(error).__name__, flush=True)
        PY
        """#

    /// A listener on the host that prints its port, then `accepted` for each connection it takes.
    static func hostListener(_ host: String, in directory: URL) throws -> ChildProcess {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/python3"),
            arguments: [
                "-c",
                "import socket\ns=socket.socket()\ns.bind(('\(host)',0))\ns.listen(8)\nprint(s.getsockname()[1],flush=True)\nwhile True:\n c=s.accept()[0]\n print('accepted',flush=True)\n c.close()",
            ], outputDirectory: directory)
    }

    @Test(
        "network: none unless asked; with it, outbound only — not the host's loopback, not its own addresses",
        .enabled(if: isRoot))
    func network() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-listener") { logs in
            let loopback = try Self.hostListener("127.0.0.1", in: logs.appendingPathComponent("loopback"))
            defer { loopback.signal(SIGKILL) }
            let everywhere = try Self.hostListener("0.0.0.0", in: logs.appendingPathComponent("everywhere"))
            defer { everywhere.signal(SIGKILL) }
            let loopbackPort = try await loopback.printedPort()
            let everywherePort = try await everywhere.printedPort()
            let hostAddresses = SandboxNetwork.localAddresses().filter { !$0.contains(":") }
            // Control: both listeners take connections from the host itself.
            let controlTargets = ["127.0.0.1:\(loopbackPort)"] + hostAddresses.map { "\($0):\(everywherePort)" }
            let control = try await ChildProcess.run(
                URL(fileURLWithPath: "/bin/sh"),
                arguments: [
                    "-c", Self.connectProbe + "\npython3 /tmp/probe.py " + controlTargets.joined(separator: " "),
                ])
            #expect(!control.output.contains("refused") && control.output.contains("connected"), "\(control.output)")
            let accepted =
                loopback.output.components(separatedBy: "accepted").count
                + everywhere.output.components(separatedBy: "accepted").count

            let targets =
                ["127.0.0.1:\(loopbackPort)", "10.0.2.2:\(loopbackPort)", "10.0.2.2:\(everywherePort)"]
                + hostAddresses.map { "\($0):\(everywherePort)" }
            let probe = Self.connectProbe + "\npython3 /tmp/probe.py " + targets.joined(separator: " ")
            let (closed, closedOutput) = try await Self.run(probe)
            #expect(closed.exitCode == 0, "\(closedOutput)")
            let (open, openOutput) = try await Self.run(probe, network: true)
            #expect(open.exitCode == 0, "\(openOutput)")
            for output in [closedOutput, openOutput] {
                // Positive evidence: every attempt ended in an error (not a timeout, not a connection).
                for target in targets {
                    #expect(output.contains("refused \(target)"), "\(target): \(output)")
                }
            }
            #expect(!openOutput.contains("connected") && !closedOutput.contains("connected"))
            // Nothing reached either listener from a sandbox.
            #expect(
                loopback.output.components(separatedBy: "accepted").count
                    + everywhere.output.components(separatedBy: "accepted").count == accepted)
        }
    }

    @Test("a sandbox with the network listens in vain: nothing from the host reaches it", .enabled(if: isRoot))
    func noInboundConnections() async throws {
        try await TestEnvironment.withTemporaryDirectory("orrery-inbound") { directory in
            chmod(directory.path, 0o777)
            // A free port on the host, then the workload listens on it in its sandbox (and reaches itself there).
            let port = try TestPorts.unused()
            let script = """
                python3 -c '
                import socket, time
                s = socket.socket(); s.bind(("0.0.0.0", \(port))); s.listen(8)
                c = socket.create_connection(("127.0.0.1", \(port)), timeout=5); print("self connected", flush=True)
                s.accept()[0].close()
                print("listening", flush=True)
                time.sleep(8)
                '
                """
            let spec: [String: Any] = [
                "name": "listen", "executor": "EXECUTOR_PROCESS", "artifact": ["text": script],
                "resources": ["cpuCores": 1, "ramMib": "128"], "network": true, "maxDurationSeconds": 60,
            ]
            let specFile = directory.appendingPathComponent("allocation.json")
            try JSONSerialization.data(withJSONObject: spec).write(to: specFile)
            let runs = directory.appendingPathComponent("runs")
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent("agent"), withIntermediateDirectories: true)
            let agent = try ChildProcess(
                TestEnvironment.executable("device-agent"),
                arguments: ["run-local", "--allocation", specFile.path, "--work-root", runs.path],
                outputDirectory: directory.appendingPathComponent("agent"))
            defer { agent.signal(SIGKILL) }
            // Wait until the workload says it listens (its stdout log under the work root).
            var listening = false
            for _ in 0..<600 where !listening {
                let runsList = (try? FileManager.default.contentsOfDirectory(atPath: runs.path)) ?? []
                listening = runsList.contains { run in
                    ((try? String(contentsOfFile: runs.path + "/\(run)/stdout.log", encoding: .utf8)) ?? "")
                        .contains("listening")
                }
                if !listening { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(listening, "the workload never listened: \(agent.output)")
            let attempt = try await ChildProcess.run(
                URL(fileURLWithPath: "/bin/sh"),
                arguments: ["-c", Self.connectProbe + "\npython3 /tmp/probe.py 127.0.0.1:\(port)"])
            #expect(attempt.output.contains("refused 127.0.0.1:\(port) ConnectionRefusedError"), "\(attempt.output)")
            #expect(await agent.waitForExit(timeout: .seconds(60)) != nil)
            #expect(agent.output.contains("self connected"), "\(agent.output)")
        }
    }

    @Test(
        "with the network, traffic goes out: a test host in its own network namespace answers the sandbox",
        .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")))
    func outboundReachesATestHost() async throws {
        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let block = Int.random(in: 1...62) * 4  // a /30 of TEST-NET-2, our own test host on this machine
        let hostSide = "198.51.100.\(block + 1)"
        let testHost = "198.51.100.\(block + 2)"
        let namespace = "orrery-t\(tag)"
        let ip = URL(fileURLWithPath: "/usr/sbin/ip")
        func ipRun(_ arguments: [String]) async throws {
            let (status, output) = try await ChildProcess.run(ip, arguments: arguments)
            #expect(status == 0, "ip \(arguments.joined(separator: " ")): \(output)")
        }
        // Under the lock netns-hosts.sh takes too: two first `ip netns add`s at once each mount /run/netns over
        // itself, and the second mount hides the namespaces made under the first (setns then fails, EINVAL).
        let (added, addOutput) = try await ChildProcess.run(
            URL(fileURLWithPath: "/usr/bin/flock"),
            arguments: ["/run/lock/orrery-netns.lock", ip.path, "netns", "add", namespace])
        #expect(added == 0, "ip netns add \(namespace): \(addOutput)")
        defer {
            _ = try? Process.run(ip, arguments: ["netns", "del", namespace])
            _ = try? Process.run(ip, arguments: ["link", "del", "vo\(tag)"])
        }
        try await ipRun(["link", "add", "vo\(tag)", "type", "veth", "peer", "name", "vi\(tag)"])
        try await ipRun(["link", "set", "vi\(tag)", "netns", namespace])
        try await ipRun(["addr", "add", "\(hostSide)/30", "dev", "vo\(tag)"])
        try await ipRun(["link", "set", "vo\(tag)", "up"])
        try await ipRun(["-n", namespace, "addr", "add", "\(testHost)/30", "dev", "vi\(tag)"])
        try await ipRun(["-n", namespace, "link", "set", "vi\(tag)", "up"])
        try await ipRun(["-n", namespace, "link", "set", "lo", "up"])
        try await TestEnvironment.withTemporaryDirectory("orrery-testhost") { logs in
            let server = try ChildProcess(
                ip,
                arguments: [
                    "netns", "exec", namespace, "/usr/bin/python3", "-c",
                    "import socket\ns=socket.socket()\ns.bind(('\(testHost)',0))\ns.listen(8)\nprint(s.getsockname()[1],flush=True)\nwhile True:\n c=s.accept()[0]\n c.sendall(b'hello from the test host')\n c.close()",
                ], outputDirectory: logs)
            defer { server.signal(SIGKILL) }
            let port = try await server.printedPort()
            let probe = Self.connectProbe + "\npython3 /tmp/probe.py \(testHost):\(port) \(hostSide):\(port)"
            let (open, output) = try await Self.run(probe, network: true)
            #expect(open.exitCode == 0, "\(output)")
            #expect(output.contains("received hello from the test host"), "\(output)")
            // The host's own end of the link is one of its addresses: refused.
            #expect(output.contains("refused \(hostSide):\(port)"), "\(output)")
            let (closed, closedOutput) = try await Self.run(probe)
            #expect(closed.exitCode == 0 && !closedOutput.contains("received"), "\(closedOutput)")
        }
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

    @Test(
        "every file an allocation writes, its output included, is bounded by its disk size, and so are all of them together",
        .enabled(if: isRoot))
    func diskBound() async throws {
        // 3 MiB to stdout under a 1 MiB disk: stopped at 1 MiB, and the reason says so.
        let (outcome, output) = try await Self.run(
            "head -c 3145728 /dev/zero | tr '\\0' x; echo never", diskMiB: 1)
        #expect(outcome.exitCode != 0, "\(output)")
        #expect(outcome.reason.contains("grew past its disk of 1 MiB"), "\(outcome.reason)")
        #expect(!output.contains("never"))
        // A writer that ignores SIGXFSZ meets EFBIG and lives on: the disk pass stops it, and the reason is the same
        // (whichever comes first, the signal or that pass, a file at the bound is what ended it).
        let (ignoring, ignoringOutput) = try await Self.run(
            "trap '' XFSZ; head -c 3145728 /dev/zero | tr '\\0' x; echo more >&2; sleep 20; echo never", diskMiB: 1)
        #expect(ignoring.exitCode != 0 && !ignoringOutput.contains("never"), "\(ignoringOutput)")
        #expect(ignoring.reason.contains("grew past its disk of 1 MiB"), "\(ignoring.reason)")
        // Within the bound, nothing happens.
        let (small, smallOutput) = try await Self.run("head -c 1000 /dev/zero > /work/f; echo fine", diskMiB: 1)
        #expect(small.exitCode == 0 && smallOutput.contains("fine"), "\(smallOutput)")
        // Four files of 400 KiB, each within the bound, 1.6 MiB together: stopped, and the reason says so.
        let (many, manyOutput) = try await Self.run(
            "for n in 1 2 3 4; do head -c 409600 /dev/urandom > /work/f$n; done; sleep 20; echo never", diskMiB: 1)
        #expect(many.exitCode != 0 && !manyOutput.contains("never"), "\(manyOutput)")
        #expect(many.reason.contains("took more than its disk of 1 MiB"), "\(many.reason)")
    }

    @Test(
        "run-local prints the outcome on a line of its own, also after output that does not end its line",
        .enabled(if: isRoot))
    func outcomeOnItsOwnLine() async throws {
        let (outcome, output) = try await Self.run("printf 'no newline at the end'")
        #expect(outcome.exitCode == 0, "\(output)")
        #expect(output.contains("no newline at the end\n{\"exitCode\""), "\(output)")
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
        try await TestEnvironment.withTemporaryDirectory("orrery-artifacts") { served in
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
}
