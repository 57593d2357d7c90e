import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import OrreryTestSupport
import SwiftProtobuf
import Testing

/// `orrery exec`: commands run inside a real sandbox through the orchestrator and the device's outbound line — as
/// the workload's user in its namespaces and cgroup, without capabilities — each logged in the notary's log.
@Suite(
    "Exec: commands inside a running sandbox", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct ExecTests {
    /// A service that records who it is and where it runs, then waits.
    static let workload = """
        #!/bin/sh
        id -u > /work/uid
        readlink /proc/self/ns/pid > /work/pidns
        readlink /proc/self/ns/mnt > /work/mntns
        readlink /proc/self/ns/net > /work/netns
        exec sleep 3600
        """

    /// The checks `orrery exec` runs in the sandbox: each line compared with what the workload recorded.
    static let probe = [
        "sh", "-c",
        """
        echo "uid $(id -u) $(cat /work/uid)"
        echo "pid $(readlink /proc/self/ns/pid) $(cat /work/pidns)"
        echo "mnt $(readlink /proc/self/ns/mnt) $(cat /work/mntns)"
        echo "net $(readlink /proc/self/ns/net) $(cat /work/netns)"
        grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs):' /proc/self/status
        echo "cgroup $(grep -E '^[0-9]+:(pids|memory|):' /proc/self/cgroup | head -1)"
        echo "fds $(ls /proc/self/fd | tr '\\n' ' ')"
        env | sort | sed 's/^/env /'
        echo "to stderr" >&2
        exit 7
        """,
    ]

    @Test(
        "orrery exec without a terminal: the workload's user, namespaces and cgroup, no capabilities, no new privileges, none of the agent's descriptors or environment; its exit status; logged in the notary's log by the invocation's CID and the command's SHA-256 (Python's hashlib agrees)"
    )
    func execWithoutTerminal() async throws {
        try await JobConstellation.run("orrery-exec") { constellation in
            let (agent, consumer, job) = try await Self.runningService(constellation)
            defer { agent.service.child.signal(SIGKILL) }
            let directory = constellation.directory
            let key = directory.appendingPathComponent("consumer.key").path
            try KeyFile.write(consumer.key, to: key)
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.executable("orrery"),
                arguments: [
                    "exec", job.id, "web", "--orchestrator", constellation.orchestratorAddress, "--key", key, "-v",
                    "--",
                ] + Self.probe)
            #expect(status == 7, "\(output)")
            let lines = output.split(separator: "\n").map(String.init)
            func line(_ prefix: String) -> [String] {
                lines.first { $0.hasPrefix(prefix + " ") }.map { $0.split(separator: " ").dropFirst().map(String.init) }
                    ?? []
            }
            for kind in ["uid", "pid", "mnt", "net"] {
                let seen = line(kind)
                #expect(seen.count == 2 && seen[0] == seen[1] && !seen[0].isEmpty, "\(kind): \(output)")
            }
            // Not the host's namespaces.
            let hostPID = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid")
            #expect(line("pid").first != hostPID)
            for capability in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
                #expect(lines.contains { $0.hasPrefix(capability) && $0.hasSuffix("0000000000000000") }, "\(output)")
            }
            #expect(lines.contains { $0.hasPrefix("NoNewPrivs:") && $0.hasSuffix("1") }, "\(output)")
            // In a cgroup of the session's own, below the allocation's (the sandbox's cgroup namespace is rooted there).
            #expect(line("cgroup").first?.contains(":/exe_") == true, "\(output)")
            // Standard input, output and error, and the directory ls reads: nothing of the agent's.
            #expect(line("fds") == ["0", "1", "2", "3"], "\(output)")
            let environment = Set(
                lines.filter { $0.hasPrefix("env ") }.map { $0.dropFirst(4).split(separator: "=")[0] })
            #expect(
                environment == ["HOME", "PATH", "TMPDIR", "PWD", "ORRERY_ALLOCATION", "ORRERY_WORK_DIR", "MODE"],
                "\(output)")
            #expect(lines.contains("env MODE=serving"), "\(output)")
            #expect(lines.contains("to stderr"), "\(output)")

            // The session's entry in the notary's log: signed by the device, naming the invocation and the command's
            // digest, never the command.
            let session = try #require(
                lines.compactMap { line -> (String, String)? in
                    guard line.hasPrefix("exec session ") else { return nil }
                    let words = line.split(separator: " ").map(String.init)
                    guard let invocation = words.firstIndex(of: "(invocation") else { return nil }
                    return (words[2], String(words[invocation + 1].dropLast()))
                }.first, "\(output)")
            let index = try #require(
                lines.first { $0.hasPrefix("logged in the notary's log as entry ") }.flatMap {
                    UInt64($0.dropFirst("logged in the notary's log as entry ".count))
                }, "\(output)")
            let parties = try ContractParties(network: constellation.network)
            let leaf = try await parties.withNotary(constellation.notary) {
                try await $0.getEntries(
                    .with {
                        $0.start = index
                        $0.end = index + 1
                    }
                ).leaves
            }
            let entry = try Orrery_Notary_V1_LogEntry(
                serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: try #require(leaf.first)).payload)
            #expect(entry.kind == .execSession)
            try SignedMessage.verify(
                entry.act, type: Orrery_Notary_V1_ExecSession.protoMessageName, requiring: [try DID(agent.did)])
            let record = try Orrery_Notary_V1_ExecSession(serializedBytes: entry.act.payload)
            #expect(record.sessionID == session.0)
            #expect(record.invocationCid == session.1)
            #expect(record.invokerDid == consumer.key.did.string)
            #expect(record.exitCode == 7 && record.signal == 0 && !record.tty)
            #expect(record.endedAt.seconds >= record.startedAt.seconds)
            #expect(record.contractID == job.assignments.first?.contractID)
            #expect(entry.contractID == record.contractID)
            let (_, digest) = try await ChildProcess.run(
                TestEnvironment.python,
                arguments: [
                    "-c",
                    "import hashlib, sys; print(hashlib.sha256(b''.join(w.encode() + b'\\0' for w in sys.argv[1:])).hexdigest())",
                ] + Self.probe)
            #expect(record.commandSha256 == digest.trimmingCharacters(in: .whitespacesAndNewlines))
            // Logged, so the device no longer keeps it (it kept it until the orchestrator said so on the line).
            let kept = constellation.directory.appendingPathComponent("host-state/exec-records")
            func keptRecords() -> [String] {
                ((try? FileManager.default.subpathsOfDirectory(atPath: kept.path)) ?? []).filter { $0.hasSuffix(".pb") }
            }
            let forgottenBy = ContinuousClock.now + .seconds(60)
            while !keptRecords().isEmpty, ContinuousClock.now < forgottenBy {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(keptRecords().isEmpty, "\(keptRecords())")
            #expect(FileManager.default.fileExists(atPath: kept.path), "the device never kept the record")
            // The log is public: the command's words are nowhere in the entry.
            #expect(!String(decoding: try #require(leaf.first), as: UTF8.self).contains("NoNewPrivs"))
        }
    }

    @Test(
        "exec with a terminal (its size, resizes, Ctrl-C to the foreground job) and with standard input over pipes; a bad resize ends the call INVALID_ARGUMENT; refused without a capability, under the operator's, for another deployment, to a stranger; allowed to the consumer's delegate"
    )
    func execTerminalInputAndAuthority() async throws {
        try await JobConstellation.run("orrery-exec-tty") { constellation in
            let (agent, consumer, job) = try await Self.runningService(constellation)
            defer { agent.service.child.signal(SIGKILL) }
            let orchestrator = constellation.orchestrator
            let orchestratorDID = try DID(orchestrator.ready.did)

            // Standard input over pipes, ended by stdin_end.
            let piped = try await Self.exec(
                orchestrator, key: consumer.key, deployment: job.id, command: ["cat"],
                input: [.with { $0.stdin = Data("hello\nworld\n".utf8) }, .with { $0.stdinEnd = true }])
            #expect(piped.stdout == "hello\nworld\n" && piped.exit?.exitCode == 0, "\(piped)")
            #expect(piped.exit?.hasLogIndex == true, "\(piped)")

            // A terminal: its size, a resize, a foreground job interrupted by Ctrl-C, then the shell's exit status.
            let terminal = try await Self.exec(
                orchestrator, key: consumer.key, deployment: job.id, command: ["sh"], tty: true,
                input: [
                    .with { $0.stdin = Data("stty size\n".utf8) },
                    .with {
                        $0.resize = .with {
                            $0.rows = 40
                            $0.columns = 120
                        }
                    },
                    .with { $0.stdin = Data("stty size; sleep 600\n".utf8) },
                    .with { $0.stdin = Data([0x03]) },
                    .with { $0.stdin = Data("echo back $((6 * 7))\nexit 4\n".utf8) },
                ], pauses: true)
            #expect(terminal.stdout.contains("30 100"), "\(terminal)")
            #expect(terminal.stdout.contains("40 120"), "\(terminal)")
            #expect(terminal.stdout.contains("back 42"), "\(terminal)")
            #expect(terminal.exit?.exitCode == 4 && terminal.exit?.signal == 0, "\(terminal)")
            let record = try Orrery_Notary_V1_ExecSession(
                serializedBytes: try #require(terminal.exit).record.payload)
            #expect(record.tty && record.exitCode == 4)

            // A bad message once the command runs closes the session, and the call ends with its refusal (not with
            // silence): a resize of 0 rows.
            let badResize = await #expect(throws: RPCError.self) {
                try await Self.exec(
                    orchestrator, key: consumer.key, deployment: job.id, command: ["sleep", "600"],
                    input: [
                        .with {
                            $0.resize = .with {
                                $0.rows = 0
                                $0.columns = 80
                            }
                        }
                    ])
            }
            #expect(
                badResize?.code == .invalidArgument && badResize?.message.contains("resize") == true,
                "\(String(describing: badResize))")

            // Refusals, each with its status, before anything runs.
            let noCapability = try await Self.refusal(orchestrator, authorization: nil, deployment: job.id)
            #expect(noCapability?.code == .unauthenticated, "\(String(describing: noCapability))")
            let operatorKey = constellation.network.operatorKey
            let operatorRooted = try await Self.refusal(
                orchestrator, authorization: Self.invocation(by: operatorKey, to: orchestratorDID, deployment: job.id),
                deployment: job.id)
            #expect(
                operatorRooted?.code == .permissionDenied
                    && operatorRooted?.message.contains("not in the deployment's consumer") == true,
                "\(String(describing: operatorRooted))")
            let otherDeployment = try await Self.refusal(
                orchestrator,
                authorization: Self.invocation(
                    by: consumer.key, to: orchestratorDID, deployment: "dep_aaaaaaaaaaaaaaaaaaaaaaaaaa"),
                deployment: job.id)
            #expect(
                otherDeployment?.code == .permissionDenied
                    && otherDeployment?.message.contains("args.deployment must name") == true,
                "\(String(describing: otherDeployment))")
            let stranger = SigningKey()
            let strangers = try await Self.refusal(
                orchestrator, authorization: Self.invocation(by: stranger, to: orchestratorDID, deployment: job.id),
                deployment: job.id)
            #expect(strangers?.code == .notFound, "\(String(describing: strangers))")
            // Whoever the consumer delegated /orrery/exec/run to may exec; the record names the delegate.
            let delegation = Delegation.issue(
                by: consumer.key, to: stranger.did, subject: consumer.key.did, command: try Command("/orrery/exec/run"),
                policy: .empty, expiration: Int64(Date().timeIntervalSince1970) + 600)
            let delegated = try await Self.exec(
                orchestrator, key: stranger, proofs: [delegation], deployment: job.id, command: ["echo", "delegated"],
                input: [.with { $0.stdinEnd = true }])
            #expect(delegated.stdout == "delegated\n" && delegated.exit?.exitCode == 0, "\(delegated)")
            let delegatedRecord = try Orrery_Notary_V1_ExecSession(
                serializedBytes: try #require(delegated.exit).record.payload)
            #expect(delegatedRecord.invokerDid == stranger.did.string)
        }
    }

    @Test("an owner whose policy says allow_exec: false refuses exec (PERMISSION_DENIED, with the reason)")
    func ownerForbidsExec() async throws {
        try await JobConstellation.run("orrery-exec-forbidden") { constellation in
            let (agent, consumer, job) = try await Self.runningService(
                constellation, owner: #"{"prices": {"per_core_hour": 5}, "allow_exec": false}"#)
            defer { agent.service.child.signal(SIGKILL) }
            let orchestratorDID = try DID(constellation.orchestrator.ready.did)
            let refused = try await Self.refusal(
                constellation.orchestrator,
                authorization: Self.invocation(by: consumer.key, to: orchestratorDID, deployment: job.id),
                deployment: job.id)
            #expect(
                refused?.code == .permissionDenied && refused?.message.contains("does not allow exec") == true,
                "\(String(describing: refused))")
        }
    }

    @Test(
        "an exec health check: the command runs inside the sandbox; healthy while it exits 0, restarted in place once it fails"
    )
    func execHealthCheck() async throws {
        try await JobConstellation.run("orrery-exec-health") { constellation in
            let agent = try await constellation.startAgent("host", owner: #"{"prices": {"per_core_hour": 5}}"#)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
            let orchestrator = constellation.orchestrator
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            var spec = OrchestratorTests.spec(cores: 1, name: "exec-health")
            spec.allocations[0].name = "web"
            spec.allocations[0].artifact = .with {
                $0.text = "#!/bin/sh\necho run >> /work/runs\ntouch /work/healthy\nexec sleep 3600\n"
            }
            spec.allocations[0].outputs = []
            spec.allocations[0].health = .with {
                // Inside the sandbox: /work is the allocation's, and the check is the workload's user.
                $0.exec = .with {
                    $0.command = [
                        "sh", "-c", "test -f /work/healthy && test \"$(id -u)\" = \"$(stat -c %u /work/runs)\"",
                    ]
                }
                $0.intervalSeconds = 1
                $0.timeoutSeconds = 1
                $0.unhealthyThreshold = 2
            }
            let job = try await consumer.submit(spec, to: orchestrator, paid: false)
            _ = try await HealthCheckTests.until(job.id, consumer, orchestrator, "running and healthy") {
                $0.run.state == .running && $0.run.health.status == .healthy
            }
            let run = try await HealthCheckTests.allocationDirectory(of: "host", in: constellation.directory)
            try FileManager.default.removeItem(at: run.appendingPathComponent("work/healthy"))
            let restarted = try await HealthCheckTests.until(job.id, consumer, orchestrator, "restarted, healthy again")
            {
                $0.run.health.restarts == 1 && $0.run.health.status == .healthy
            }
            #expect(restarted.run.state == .running)
            #expect(restarted.run.health.lastFailure.contains("exit status 1"), "\(restarted.run.health)")
            #expect(try String(contentsOf: run.appendingPathComponent("work/runs"), encoding: .utf8) == "run\nrun\n")
            _ = try await consumer.with(orchestrator) { try await $0.cancelDeployment(.with { $0.id = job.id }) }
        }
    }

    @Test(
        "kill -9 of the orchestrator while a session runs: the command is killed with the line, the device keeps the record (signal 9) and hands it to the restarted orchestrator, which logs it; the device then forgets it"
    )
    func recordSurvivesOrchestratorKill() async throws {
        try await ServiceBed.run("orrery-exec-kill") { bed in
            var orchestrator = try await bed.startOrchestrator()
            let agent = try await bed.startAgent(
                "host", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [orchestrator], interval: 1000)
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: bed.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, orchestrator, devices: 1)
            var spec = OrchestratorTests.spec(cores: 1, name: "exec-kill")
            spec.allocations[0].name = "web"
            spec.allocations[0].artifact = .with { $0.text = "#!/bin/sh\nexec sleep 3600\n" }
            spec.allocations[0].outputs = []
            let job = try await consumer.submit(spec, to: orchestrator, paid: false)
            _ = try await HealthCheckTests.until(job.id, consumer, orchestrator, "running") { $0.run.state == .running }
            let run = try await HealthCheckTests.allocationDirectory(of: "host", in: bed.directory)
            let started = run.appendingPathComponent("work/exec-started")
            let first = orchestrator
            let session = Task {
                try await Self.exec(
                    first, key: consumer.key, deployment: job.id,
                    command: ["sh", "-c", "touch /work/exec-started; exec sleep 600"], input: [])
            }
            defer { session.cancel() }
            try #require(try await Self.appears(started), "the session never started")

            orchestrator.child.signal(SIGKILL)
            _ = await orchestrator.child.waitForExit(timeout: .seconds(30))
            // The device kept the record of the session the line's loss ended.
            let records = bed.directory.appendingPathComponent("host-state/exec-records/\(run.lastPathComponent)")
            var kept: Orrery_Notary_V1_ExecSession?
            let keptBy = ContinuousClock.now + .seconds(60)
            while kept == nil, ContinuousClock.now < keptBy {
                // (Its journal, `.open`, may still be beside it for a moment.)
                if let file = (try? FileManager.default.contentsOfDirectory(atPath: records.path))?.first(where: {
                    $0.hasSuffix(".pb")
                }),
                    let data = FileManager.default.contents(atPath: records.appendingPathComponent(file).path)
                {
                    kept = try Orrery_Notary_V1_ExecSession(
                        serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: data).payload)
                } else {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            let record = try #require(kept, "no record kept in \(records.path)")
            #expect(record.signal == SIGKILL && record.exitCode == 128 + SIGKILL, "\(record)")

            // Started again where it was: the device's line comes back, its record is logged, and it forgets it.
            orchestrator = try await bed.startOrchestrator(port: orchestrator.ready.grpcPort)
            defer { orchestrator.child.signal(SIGKILL) }
            let forgottenBy = ContinuousClock.now + .seconds(120)
            while FileManager.default.fileExists(atPath: records.appendingPathComponent(record.sessionID + ".pb").path),
                ContinuousClock.now < forgottenBy
            {
                try await Task.sleep(for: .milliseconds(200))
            }
            let logged = try await Self.loggedSessions(bed.notary, network: bed.network)
            #expect(logged.map(\.sessionID) == [record.sessionID], "\(logged)")
            #expect(logged.first?.signal == SIGKILL)
            #expect(
                !FileManager.default.fileExists(atPath: records.appendingPathComponent(record.sessionID + ".pb").path),
                "the device still holds the logged record")
        }
    }

    @Test(
        "exec through an orchestrator replica that does not hold the device's line: relayed through the one that does; output, exit status and the log entry as directly"
    )
    func relayedBetweenReplicas() async throws {
        try await ServiceBed.run("orrery-exec-relay") { bed in
            let front = try await bed.startOrchestrator()
            defer { front.child.signal(SIGKILL) }
            let holder = try await bed.startOrchestrator()
            defer { holder.child.signal(SIGKILL) }
            let agent = try await bed.startAgent(
                "host", owner: #"{"prices": {"per_core_hour": 5}}"#, orchestrators: [holder])
            defer { agent.service.child.signal(SIGKILL) }
            let consumer = try OrchestratorTests.Consumer(operatorKey: bed.network.operatorKey)
            try await OrchestratorTests.waitForFleet(consumer, front, devices: 1)
            var spec = OrchestratorTests.spec(cores: 1, name: "exec-relay")
            spec.allocations[0].name = "web"
            spec.allocations[0].artifact = .with { $0.text = "#!/bin/sh\nexec sleep 3600\n" }
            spec.allocations[0].outputs = []
            let job = try await consumer.submit(spec, to: front, paid: false)
            _ = try await HealthCheckTests.until(job.id, consumer, front, "running") { $0.run.state == .running }
            let relayed = try await Self.exec(
                front, key: consumer.key, deployment: job.id, command: ["sh", "-c", "cat; echo relayed >&2; exit 6"],
                input: [.with { $0.stdin = Data("through the holder\n".utf8) }, .with { $0.stdinEnd = true }])
            #expect(relayed.stdout == "through the holder\n" && relayed.stderr == "relayed\n", "\(relayed)")
            #expect(relayed.exit?.exitCode == 6 && relayed.exit?.hasLogIndex == true, "\(relayed)")
            #expect(relayed.started?.deviceDid == agent.did)
            // A command the device cannot start is refused through the relay with the device's status.
            let missing = try await Self.exec(
                front, key: consumer.key, deployment: job.id, command: ["no-such-program-here"],
                input: [.with { $0.stdinEnd = true }])
            #expect(missing.exit?.exitCode == 127, "\(missing)")
        }
    }

    @Test(
        "kill -9 of the agent while a session runs: its sandbox runs on, and the restarted agent kills what the session left (its cgroup emptied and removed) and signs the session's record from its journal, which is logged"
    )
    func agentRestartEndsOrphanedSession() async throws {
        try await JobConstellation.run("orrery-exec-agent-kill") { constellation in
            let (agent, consumer, job) = try await Self.runningService(constellation)
            let run = try await HealthCheckTests.allocationDirectory(of: "host", in: constellation.directory)
            let started = run.appendingPathComponent("work/exec-started")
            let orchestrator = constellation.orchestrator
            let session = Task {
                try await Self.exec(
                    orchestrator, key: consumer.key, deployment: job.id,
                    command: ["sh", "-c", "touch /work/exec-started; exec sleep 600"], input: [])
            }
            defer { session.cancel() }
            try #require(try await Self.appears(started), "the session never started")
            // The session's own cgroup (of the pids controller, on cgroup v1; the unified one on v2) and its processes.
            let offer = run.lastPathComponent
            let groups = ["/sys/fs/cgroup/pids/orrery/\(offer)", "/sys/fs/cgroup/orrery/\(offer)"].filter {
                FileManager.default.fileExists(atPath: $0)
            }
            let sessionGroup = try #require(
                groups.flatMap { group in
                    ((try? FileManager.default.contentsOfDirectory(atPath: group)) ?? []).filter {
                        $0.hasPrefix("exe_")
                    }.map { group + "/" + $0 }
                }.first, "no session cgroup under \(groups)")
            let pids = try String(contentsOfFile: sessionGroup + "/cgroup.procs", encoding: .utf8)
                .split(separator: "\n").compactMap { Int32($0) }
            #expect(!pids.isEmpty)

            agent.service.child.signal(SIGKILL)
            _ = await agent.service.child.waitForExit(timeout: .seconds(30))
            // Nothing ends the session while no agent runs.
            #expect(pids.allSatisfy(Self.isAlive), "the session's processes died with the agent")
            let restarted = try await constellation.restartAgent("host")
            defer { restarted.child.signal(SIGKILL) }
            let reapedBy = ContinuousClock.now + .seconds(60)
            while FileManager.default.fileExists(atPath: sessionGroup), ContinuousClock.now < reapedBy {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(!FileManager.default.fileExists(atPath: sessionGroup), "the session's cgroup is still there")
            #expect(!pids.contains(where: Self.isAlive), "a process of the session still runs")
            // The workload itself runs on.
            let observed = try await HealthCheckTests.until(job.id, consumer, orchestrator, "still running") {
                $0.run.state == .running
            }
            #expect(observed.run.state == .running)
            // The session journaled when it started: the restarted agent signs its record (ended by SIGKILL), which
            // is logged in the notary's log like any other.
            let sessionID = URL(fileURLWithPath: sessionGroup).lastPathComponent
            var logged: [Orrery_Notary_V1_ExecSession] = []
            let loggedBy = ContinuousClock.now + .seconds(120)
            while logged.isEmpty, ContinuousClock.now < loggedBy {
                logged = try await Self.loggedSessions(constellation.notary, network: constellation.network).filter {
                    $0.sessionID == sessionID
                }
                if logged.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(logged.count == 1 && logged.first?.signal == SIGKILL, "\(logged)")
            #expect(logged.first?.invokerDid == consumer.key.did.string)
        }
    }

    // MARK: Helpers

    /// The exec sessions the notary's log holds, in log order.
    static func loggedSessions(_ notary: RunningService, network: TestNetwork) async throws
        -> [Orrery_Notary_V1_ExecSession]
    {
        try await ContractParties(network: network).withNotary(notary) { notary in
            let leaves = try await notary.getEntries(.with { $0.start = 0 }).leaves
            return try leaves.compactMap { leaf -> Orrery_Notary_V1_ExecSession? in
                let entry = try Orrery_Notary_V1_LogEntry(
                    serializedBytes: try Orrery_Common_V1_Signed(serializedBytes: leaf).payload)
                guard entry.kind == .execSession else { return nil }
                return try Orrery_Notary_V1_ExecSession(serializedBytes: entry.act.payload)
            }
        }
    }

    /// Whether `file` exists within a minute (a loaded machine is slow to start things).
    static func appears(_ file: URL) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while !FileManager.default.fileExists(atPath: file.path), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        return FileManager.default.fileExists(atPath: file.path)
    }

    /// Whether `pid` runs (a zombie, dead but not yet reaped by whoever inherited it, does not).
    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
    }

    /// An agent, a consumer, and its running `web` service (the workload above).
    static func runningService(
        _ constellation: JobConstellation, owner: String = #"{"prices": {"per_core_hour": 5}}"#
    ) async throws -> (TestAgent, OrchestratorTests.Consumer, Orrery_Orchestrator_V1_Deployment) {
        let agent = try await constellation.startAgent("host", owner: owner)
        let consumer = try OrchestratorTests.Consumer(operatorKey: constellation.network.operatorKey)
        try await OrchestratorTests.waitForFleet(consumer, constellation.orchestrator, devices: 1)
        var spec = OrchestratorTests.spec(cores: 1, name: "exec")
        spec.allocations[0].name = "web"
        spec.allocations[0].artifact = .with { $0.text = Self.workload }
        spec.allocations[0].env = ["MODE": "serving"]
        spec.allocations[0].outputs = []
        let submitted = try await consumer.submit(spec, to: constellation.orchestrator, paid: false)
        let running = try await HealthCheckTests.until(submitted.id, consumer, constellation.orchestrator, "running") {
            $0.run.state == .running
        }
        // The workload wrote what the checks compare with.
        let directory = try await HealthCheckTests.allocationDirectory(of: "host", in: constellation.directory)
        _ = try await appears(directory.appendingPathComponent("work/netns"))
        return (agent, consumer, running.deployment)
    }

    /// An invocation of /orrery/exec/run for `deployment` by `key` (rooted in `proofs`' first issuer, else itself).
    static func invocation(
        by key: SigningKey, to orchestrator: DID, deployment: String, proofs: [Delegation] = []
    ) throws -> String {
        let now = Int64(Date().timeIntervalSince1970)
        let invocation = Invocation.issue(
            by: key, subject: proofs.first?.issuer ?? key.did, audience: orchestrator,
            command: try Command("/orrery/exec/run"), arguments: ["deployment": .string(deployment)],
            proofs: proofs.map(\.cid), expiration: now + 120, issuedAt: now)
        return "Bearer "
            + (try UCANContainer.encodeText([invocation.envelope.bytes] + proofs.map(\.envelope.bytes)))
    }

    /// What a session printed and how it ended.
    struct Outcome: Sendable, CustomStringConvertible {
        var stdout = ""
        var stderr = ""
        var started: Orrery_Orchestrator_V1_ExecStarted?
        var exit: Orrery_Orchestrator_V1_ExecExit?
        var description: String {
            "stdout: \(stdout.debugDescription) stderr: \(stderr.debugDescription) exit: \(String(describing: exit))"
        }
    }

    /// Runs `command` in `web` of `deployment` over a plain gRPC client, sending `input` (each message after the
    /// output so far settled, with `pauses`), and collects what came back.
    static func exec(
        _ orchestrator: RunningService, key: SigningKey, proofs: [Delegation] = [], deployment: String,
        command: [String], tty: Bool = false, input: [Orrery_Orchestrator_V1_ExecRequest], pauses: Bool = false
    ) async throws -> Outcome {
        let authorization = try invocation(
            by: key, to: try DID(orchestrator.ready.did), deployment: deployment, proofs: proofs)
        return try await call(orchestrator, authorization: authorization) { client in
            var metadata = Metadata()
            metadata.addString(authorization, forKey: "authorization")
            return try await client.exec(
                metadata: metadata,
                requestProducer: { writer in
                    try await writer.write(
                        .with {
                            $0.start = .with {
                                $0.deploymentID = deployment
                                $0.allocation = "web"
                                $0.command = command
                                $0.tty = tty
                                if tty {
                                    $0.size = .with {
                                        $0.rows = 30
                                        $0.columns = 100
                                    }
                                }
                            }
                        })
                    for message in input {
                        // Each line is typed once the one before had time to run (a loaded machine is slow).
                        if pauses { try await Task.sleep(for: .seconds(2)) }
                        try await writer.write(message)
                    }
                    // Held open until the session ends: the end of input is stdin_end, not the stream's end.
                    try await Task.sleep(for: .seconds(300))
                },
                onResponse: { response in
                    var outcome = Outcome()
                    for try await message in response.messages {
                        // The protocol's first message is `started`; output only after it.
                        let isStarted: Bool
                        if case .started = message.kind { isStarted = true } else { isStarted = false }
                        if outcome.started == nil && !isStarted {
                            Issue.record("\(String(describing: message.kind)) came before started")
                        }
                        switch message.kind {
                        case .started(let started): outcome.started = started
                        case .stdout(let data): outcome.stdout += String(decoding: data, as: UTF8.self)
                        case .stderr(let data): outcome.stderr += String(decoding: data, as: UTF8.self)
                        case .exit(let exit): outcome.exit = exit
                        case nil: continue
                        }
                    }
                    return outcome
                })
        }
    }

    /// The error an exec of `echo` under `authorization` (none: no header) ends with, nil when it ran.
    static func refusal(_ orchestrator: RunningService, authorization: String?, deployment: String) async throws
        -> RPCError?
    {
        do {
            try await call(orchestrator, authorization: authorization) { client in
                var metadata = Metadata()
                if let authorization { metadata.addString(authorization, forKey: "authorization") }
                try await client.exec(
                    metadata: metadata,
                    requestProducer: { writer in
                        try await writer.write(
                            .with {
                                $0.start = .with {
                                    $0.deploymentID = deployment
                                    $0.allocation = "web"
                                    $0.command = ["echo", "ran"]
                                }
                            })
                        try await writer.write(.with { $0.stdinEnd = true })
                    },
                    onResponse: { response in for try await _ in response.messages {} })
            }
            return nil
        } catch let error as RPCError {
            return error
        }
    }

    static func call<Result: Sendable>(
        _ orchestrator: RunningService, authorization: String?,
        _ body: (Orrery_Orchestrator_V1_Orchestrator.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: .ipv4(address: "127.0.0.1", port: orchestrator.ready.grpcPort), transportSecurity: .plaintext)
        ) { client in try await body(Orrery_Orchestrator_V1_Orchestrator.Client(wrapping: client)) }
    }
}
