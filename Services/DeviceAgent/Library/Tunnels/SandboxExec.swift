#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
#if canImport(Glibc)
    internal import Glibc
#endif
internal import Dispatch
internal import GRPCCore
internal import Logging
internal import NIOCore
internal import NIOPosix
internal import OrreryBasics
internal import OrreryIdentity
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization

/// Commands run inside this device's sandboxes that an orchestrator asked for over its line (`OpenExec`, for a
/// consumer's `orrery exec`): each an `ExecSession` call of its own on the line's HTTP/2 connection. The command runs
/// as the workload's user, with no capabilities and no new privileges, inside the sandbox's namespaces and cgroup —
/// entered with `nsenter` for a process sandbox, with the OCI runtime's `exec` (the container's seccomp filter too)
/// for an image — on a fresh pseudo-terminal when asked. When it ends the device signs an `ExecSession` record (the
/// invocation's CID, the command's SHA-256, start, end, exit status) for the notary's log.
final class SandboxExec: Sendable {
    let runner: AllocationRunner
    let logger: Logger
    /// Signs the session records; nil: this device signs none, and runs no exec.
    let key: SigningKey?
    /// The contract an allocation runs under.
    let contract: @Sendable (String) -> String
    /// The owner's `allow_exec`.
    let allowed: Bool
    /// Sessions open at once on this device, at most `limit`.
    private let open = Mutex(0)
    let limit: Int
    let nsenter = "/usr/bin/nsenter"
    let setpriv = "/usr/bin/setpriv"
    let setsid = "/usr/bin/setsid"

    init(
        runner: AllocationRunner, logger: Logger, key: SigningKey?, contract: @escaping @Sendable (String) -> String,
        allowed: Bool, limit: Int = 64
    ) {
        self.runner = runner
        self.logger = logger
        self.key = key
        self.contract = contract
        self.allowed = allowed
        self.limit = limit
    }

    /// The most bytes one frame carries.
    static let frameLimit = 64 << 10
    /// How long output is still read once the command ended (a child it left behind may hold its output open).
    static let drainLimit = Duration.seconds(2)

    /// Why a session could not start: the reason, and the gRPC status the caller gets.
    struct Refusal: Error {
        let code: RPCError.Code
        let reason: String
    }

    /// Runs the command `request` names and carries it over an `ExecSession` call on `line` until it ended; a command
    /// that cannot start is answered with the reason.
    func run<Line: Orrery_Orchestrator_V1_AgentChannel.ClientProtocol>(
        _ request: Orrery_Orchestrator_V1_OpenExec, over line: Line
    ) async {
        let admitted = open.withLock { count -> Bool in
            guard count < limit else { return false }
            count += 1
            return true
        }
        defer { if admitted { open.withLock { $0 -= 1 } } }
        let startedAt = Date()
        let session: Session
        do {
            guard admitted else {
                throw Refusal(code: .resourceExhausted, reason: "this device runs \(limit) exec sessions already")
            }
            // Journaled before its command starts, until its record is kept: an agent killed at any moment after
            // signs it when it starts again (a session it never got to start is logged as killed, not lost).
            journal(sessionRecord(request, startedAt: startedAt), offer: request.offerID)
            do {
                session = try start(request)
            } catch {
                forgetJournal(request.execID, offer: request.offerID)
                throw error
            }
        } catch {
            let refusal =
                error as? Refusal ?? Refusal(code: .unavailable, reason: "the command could not start: \(error)")
            logger.info(
                "an exec session was refused",
                metadata: ["offer": "\(request.offerID)", "reason": "\(refusal.reason)"])
            let opened = Orrery_Orchestrator_V1_ExecFrame.with {
                $0.opened = .with {
                    $0.execID = request.execID
                    $0.error = refusal.reason
                    $0.code = Int32(refusal.code.rawValue)
                }
            }
            try? await line.execSession(
                requestProducer: { writer in try await writer.write(opened) }, onResponse: { _ in })
            return
        }
        logger.info(
            "exec session started",
            metadata: [
                "offer": "\(request.offerID)", "session": "\(request.execID)", "tty": "\(request.tty)",
                "invoker": "\(request.invokerDid)",
            ])
        defer { session.end() }
        do {
            try await carry(session, request: request, startedAt: startedAt, over: line)
        } catch {
            logger.info("an exec session ended", metadata: ["session": "\(request.execID)", "error": "\(error)"])
        }
        // A command that started is logged however its session ended (the call never opened, the line broke before
        // its end): killed now, its record kept for the next line to take.
        if !session.isKept {
            session.kill()
            let ending = await session.ended()
            keep(record(request, startedAt: startedAt, ending: ending), session: request.execID, offer: request.offerID)
            session.markKept()
            forgetJournal(request.execID, offer: request.offerID)
        }
    }

    /// A started command and how to end it.
    final class Session: Sendable {
        let process: ExecProcess
        /// The cgroup directories the session's processes run in (a process sandbox's), removed at its end.
        let groups: [String]
        /// The file the OCI runtime writes the command's host PID to (an image's).
        let pidFile: String?

        /// How the command ended, once it did; whether its record is kept.
        private let state = Mutex<(ending: ExecProcess.Ending?, kept: Bool)>((nil, false))

        init(process: ExecProcess, groups: [String], pidFile: String?) {
            self.process = process
            self.groups = groups
            self.pidFile = pidFile
        }

        /// Waits for the command to end (once; later calls get the same ending).
        func ended() async -> ExecProcess.Ending {
            if let ending = state.withLock({ $0.ending }) { return ending }
            let ending = await process.wait()
            state.withLock { $0.ending = $0.ending ?? ending }
            return ending
        }

        var isKept: Bool { state.withLock { $0.kept } }
        func markKept() { state.withLock { $0.kept = true } }

        /// Kills every process of the session (what the command left running too).
        func kill() {
            for _ in 0..<10 {
                var pids = Set<Int32>()
                for group in groups {
                    let text = (try? String(contentsOfFile: group + "/cgroup.procs", encoding: .utf8)) ?? ""
                    for line in text.split(separator: "\n") { if let pid = Int32(line) { pids.insert(pid) } }
                }
                if let pidFile, let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                    let pid = Int32(text.trimmed()), pid > 1
                {
                    pids.insert(pid)
                    pids.formUnion(SandboxProbe.descendants(of: pid))
                }
                pids.formUnion(SandboxProbe.descendants(of: process.pid))
                if pids.isEmpty { break }
                for pid in pids { Glibc.kill(pid, SIGKILL) }
                // Without a group or the runtime's PID file, what reparented away is out of reach: one pass.
                if groups.isEmpty && pidFile == nil { break }
                usleep(20_000)
            }
            Glibc.kill(process.pid, SIGKILL)
        }

        /// Kills the processes in `groups` and the one `pidFile` names (with its descendants) — of those, only the
        /// ones still in the allocation's cgroup (a PID from an earlier run may be another process's now) — then
        /// removes both.
        static func reap(groups: [String], pidFile: String?, allocation: String) {
            for _ in 0..<10 {
                var pids = Set<Int32>()
                for group in groups {
                    let text = (try? String(contentsOfFile: group + "/cgroup.procs", encoding: .utf8)) ?? ""
                    for line in text.split(separator: "\n") { if let pid = Int32(line) { pids.insert(pid) } }
                }
                if let pidFile, let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                    let pid = Int32(text.trimmed()), pid > 1
                {
                    let named = [pid] + SandboxProbe.descendants(of: pid)
                    pids.formUnion(
                        named.filter { pid in
                            let cgroup = (try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)) ?? ""
                            return cgroup.contains("/orrery/" + allocation)
                        })
                }
                if pids.isEmpty { break }
                for pid in pids { Glibc.kill(pid, SIGKILL) }
                usleep(20_000)
            }
            for group in groups { rmdir(group) }
            if let pidFile { unlink(pidFile) }
        }

        /// Kills what is left and removes the session's groups and files.
        func end() {
            kill()
            if let terminal = process.terminal { close(terminal) }
            for group in groups { rmdir(group) }
            if let pidFile { unlink(pidFile) }
        }
    }

    /// Kills what exec sessions of an earlier run of the agent left (it was killed while they ran: nothing ends them
    /// then): the processes in sessions' cgroups below each allocation's, and those the OCI runtime's PID files name.
    func reapOrphans() {
        for id in runner.known() {
            var groups: [String] = []
            if let cgroups = runner.cgroups, let group = ControlGroup.existing(name: id, version: cgroups) {
                for directory in Set(group.directories.values) {
                    for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
                    where Self.isSessionID(name) {
                        groups.append(directory + "/" + name)
                    }
                }
            }
            let directory = runner.directory(id)
            let pidFiles = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter {
                $0.hasSuffix(".pid") && Self.isSessionID(String($0.dropLast(4)))
            }
            for file in pidFiles {
                Session.reap(groups: [], pidFile: directory + "/" + file, allocation: id)
            }
            if !groups.isEmpty {
                Session.reap(groups: groups, pidFile: nil, allocation: id)
                logger.notice(
                    "ended exec sessions an earlier run left",
                    metadata: ["offer": "\(id)", "sessions": "\(groups.count)"])
            }
        }
        signJournaled()
    }

    /// A started session's record as far as it is known (no end yet), kept as `<offer>/<session>.open` beside the
    /// records until the session's own record is kept. It holds what the record holds — never the command's words.
    func journal(_ session: Orrery_Notary_V1_ExecSession, offer: String) {
        guard Self.isSessionID(session.sessionID), AllocationRunner.isSafeID(offer) else { return }
        let directory = recordDirectory + "/" + offer
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try session.serializedData().write(
                to: URL(fileURLWithPath: directory + "/" + session.sessionID + ".open"), options: .atomic)
        } catch {
            logger.error(
                "cannot journal an exec session", metadata: ["session": "\(session.sessionID)", "error": "\(error)"])
        }
    }

    func forgetJournal(_ session: String, offer: String) {
        guard Self.isSessionID(session), AllocationRunner.isSafeID(offer) else { return }
        unlink(recordDirectory + "/" + offer + "/" + session + ".open")
        rmdir(recordDirectory + "/" + offer)  // only when nothing else is kept for it
    }

    /// Signs the record of every session an earlier run of the agent journaled and never ended (it was killed while
    /// they ran; `reapOrphans` killed what they left): ended now, by SIGKILL. Kept like any record until logged.
    func signJournaled() {
        let directory = recordDirectory
        for offer in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            for file in (try? FileManager.default.contentsOfDirectory(atPath: directory + "/" + offer)) ?? []
            where file.hasSuffix(".open") {
                let path = directory + "/" + offer + "/" + file
                defer { unlink(path) }
                // Its own record kept already (the agent died right after): that one stands.
                guard let data = FileManager.default.contents(atPath: path),
                    let session = try? Orrery_Notary_V1_ExecSession(serializedBytes: data),
                    file == session.sessionID + ".open",
                    !FileManager.default.fileExists(atPath: directory + "/" + offer + "/" + session.sessionID + ".pb")
                else { continue }
                keep(
                    sign(session, ending: ExecProcess.Ending(exitCode: 128 + SIGKILL, signal: SIGKILL)),
                    session: session.sessionID, offer: offer)
                logger.notice(
                    "signed the record of an exec session an earlier run left",
                    metadata: ["offer": "\(offer)", "session": "\(session.sessionID)"])
            }
        }
    }

    /// Where the records no orchestrator confirmed logged yet are kept: `<offer>/<session>.pb`.
    var recordDirectory: String {
        URL(fileURLWithPath: runner.root).deletingLastPathComponent().appendingPathComponent("exec-records").path
    }

    /// Keeps a session's record until it is logged.
    func keep(_ record: Orrery_Common_V1_Signed, session: String, offer: String) {
        guard Self.isSessionID(session), AllocationRunner.isSafeID(offer) else { return }
        let directory = recordDirectory + "/" + offer
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try record.serializedData().write(
                to: URL(fileURLWithPath: directory + "/" + session + ".pb"), options: .atomic)
        } catch {
            logger.error(
                "cannot keep an exec session's record", metadata: ["session": "\(session)", "error": "\(error)"])
        }
    }

    /// An orchestrator logged session `session`'s record: it is forgotten.
    func logged(_ session: String) {
        guard Self.isSessionID(session) else { return }
        let directory = recordDirectory
        for offer in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let path = directory + "/" + offer + "/" + session + ".pb"
            if unlink(path) == 0 { rmdir(directory + "/" + offer) }
        }
    }

    /// The records not confirmed logged yet, with their allocations (at most `limit`).
    func pendingRecords(limit: Int = 100) -> [(offer: String, record: Orrery_Common_V1_Signed)] {
        var found: [(String, Orrery_Common_V1_Signed)] = []
        let directory = recordDirectory
        for offer in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            for file in (try? FileManager.default.contentsOfDirectory(atPath: directory + "/" + offer)) ?? []
            where file.hasSuffix(".pb") {
                guard found.count < limit,
                    let data = FileManager.default.contents(atPath: directory + "/" + offer + "/" + file),
                    let record = try? Orrery_Common_V1_Signed(serializedBytes: data)
                else { continue }
                found.append((offer, record))
            }
        }
        return found
    }

    /// exe_ and 32 lowercase hex digits.
    static func isSessionID(_ text: String) -> Bool {
        text.hasPrefix("exe_") && text.utf8.count == 36
            && text.utf8.dropFirst(4).allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// An `exec` health check: `command` run inside the sandbox of `id` (confined as a session is, its output
    /// discarded but for the first KiB, which explains a failure), passing when it exits 0 within `timeout`. The spec
    /// declares it like the workload itself, so the owner's `allow_exec` (for consumers' sessions) does not apply,
    /// and it is not logged.
    func probe(_ id: String, command: [String], timeout: Duration) async -> HealthProbeClient.Result {
        let request = Orrery_Orchestrator_V1_OpenExec.with {
            $0.execID = Self.newSessionID()
            $0.offerID = id
            $0.command = command
        }
        let session: Session
        do {
            session = try start(request, checking: false)
        } catch let refusal as Refusal {
            return .init(passed: false, detail: "the check could not run: \(refusal.reason)")
        } catch {
            return .init(passed: false, detail: "the check could not run: \(error)")
        }
        defer { session.end() }
        if let input = session.process.input { close(input) }
        let output = Self.readAll(session.process.output)
        let errors = Self.readAll(session.process.errors)
        let timer = Task {
            try await Task.sleep(for: timeout)
            session.kill()
            return true
        }
        let ending = await session.process.wait()
        timer.cancel()
        let timedOut = (try? await timer.value) == true
        // What it left running would hold its output open.
        session.kill()
        let said = String(decoding: (await output.value) + (await errors.value), as: UTF8.self).trimmed()
        if ending.exitCode == 0 { return .init(passed: true, detail: said) }
        if timedOut {
            return .init(passed: false, detail: "the command did not end within \(timeout.components.seconds) s")
        }
        return .init(passed: false, detail: "exit status \(ending.exitCode)\(said.isEmpty ? "" : ": \(said)")")
    }

    /// A new session id: exe_ and 32 lowercase hex digits.
    static func newSessionID() -> String {
        "exe_" + Hex.encode((0..<16).map { _ in UInt8.random(in: 0...255) })
    }

    /// Reads `descriptor` to its end on a Dispatch thread, keeping the first KiB, and closes it.
    private static func readAll(_ descriptor: Int32?) -> Task<[UInt8], Never> {
        Task {
            guard let descriptor else { return [] }
            return await withCheckedContinuation { continuation in
                DispatchQueue.global().async {
                    var kept: [UInt8] = []
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    while true {
                        let count = read(descriptor, &buffer, buffer.count)
                        if count < 0, errno == EINTR { continue }
                        guard count > 0 else { break }
                        if kept.count < 1024 { kept += buffer[0..<min(count, 1024 - kept.count)] }
                    }
                    close(descriptor)
                    continuation.resume(returning: kept)
                }
            }
        }
    }

    /// Starts the command inside the sandbox of the running allocation the request names (`checking`: a consumer's
    /// session, which the owner's policy must allow and this device must be able to sign the record of).
    func start(_ request: Orrery_Orchestrator_V1_OpenExec, checking: Bool = true) throws -> Session {
        if checking {
            guard allowed else {
                throw Refusal(
                    code: .permissionDenied, reason: "the owner of this device does not allow exec (allow_exec)")
            }
            guard key != nil else { throw Refusal(code: .unavailable, reason: "this device signs no exec records") }
        }
        let id = request.offerID
        guard AllocationRunner.isSafeID(id), runner.isKnown(id), runner.status(id) == .running else {
            throw Refusal(code: .failedPrecondition, reason: "allocation \(id.prefix(80)) does not run on this device")
        }
        guard Self.isSessionID(request.execID) else {
            throw Refusal(code: .invalidArgument, reason: "exec_id is exe_ and 32 lowercase hex digits")
        }
        guard let program = request.command.first, !program.isEmpty, !program.contains("="),
            request.command.allSatisfy({ !$0.utf8.contains(0) }), request.command.count <= 256
        else {
            throw Refusal(
                code: .invalidArgument, reason: "the command is 1…256 words without NUL bytes, its program without '='")
        }
        let spec = try runner.spec(id)
        let size = request.tty ? Self.size(request.size) : nil
        let term = Self.term(request.term)
        if spec.executor == .oci {
            return try startInContainer(id, request: request, size: size, term: term)
        }
        return try startInSandbox(id, spec: spec, request: request, size: size, term: term)
    }

    /// A process sandbox: `nsenter` into all of its namespaces (from its first process), `setpriv` to the workload's
    /// user without capabilities and with no-new-privileges, a session of its own on the terminal, the workload's
    /// environment only — after joining a cgroup of the session's own below the allocation's.
    private func startInSandbox(
        _ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec, request: Orrery_Orchestrator_V1_OpenExec,
        size: ExecProcess.Size?, term: String
    ) throws -> Session {
        guard let member = Self.sandboxMember(among: runner.processes(id)) else {
            throw Refusal(code: .failedPrecondition, reason: "no process of its sandbox runs")
        }
        guard let user = Self.insideIdentity(of: member) else {
            throw Refusal(code: .unavailable, reason: "the sandbox's user cannot be read")
        }
        var groups: [String] = []
        if let cgroups = runner.cgroups, let group = ControlGroup.existing(name: id, version: cgroups) {
            for directory in Set(group.directories.values).sorted() {
                let child = directory + "/" + request.execID
                guard mkdir(child, 0o755) == 0 || errno == EEXIST else {
                    let code = errno
                    for made in groups { rmdir(made) }
                    throw Refusal(
                        code: .unavailable, reason: "cannot make the session's cgroup: \(systemErrorText(code))")
                }
                groups.append(child)
            }
        }
        var environment = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/work", "TMPDIR=/tmp"]
        for (name, value) in spec.env.sorted(by: { $0.key < $1.key }) where !name.contains("=") {
            environment.append("\(name)=\(value)")
        }
        environment += ["ORRERY_ALLOCATION=\(id)", "ORRERY_WORK_DIR=/work"]
        if size != nil { environment.append("TERM=\(term)") }
        let inside =
            [
                nsenter, "--target", String(member), "--all", "--preserve-credentials", "--root", "--",
                setpriv, "--reuid", String(user.uid), "--regid", String(user.gid), "--keep-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs", "--",
                setsid,
            ] + (size != nil ? ["--ctty"] : []) + ["--", "/usr/bin/env", "-i", "-C", "/work"] + environment
            + request.command
        // The first process joins the session's cgroup, then becomes nsenter: everything it starts is counted
        // against the allocation's limits and killed with the session.
        let join = groups.map { "echo $$ > \(shellQuoted($0 + "/cgroup.procs")) || exit 125" }.joined(separator: "\n")
        let arguments = ["/bin/sh", "-c", join + "\nexec \"$@\"", "sh"] + inside
        do {
            let process = try ExecProcess.start(
                arguments, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], terminal: size)
            return Session(process: process, groups: groups, pidFile: nil)
        } catch {
            for group in groups { rmdir(group) }
            throw Refusal(code: .unavailable, reason: "\(error)")
        }
    }

    /// An image: the OCI runtime's `exec` into the container, with the container's user, capabilities (none),
    /// seccomp filter and cgroup; no-new-privileges; a terminal of the runtime's own when asked (its size follows this
    /// one's).
    private func startInContainer(
        _ id: String, request: Orrery_Orchestrator_V1_OpenExec, size: ExecProcess.Size?, term: String
    ) throws -> Session {
        guard let runtime = runner.images?.runtime else {
            throw Refusal(code: .unavailable, reason: "this device runs no OCI images now")
        }
        let pidFile = runner.directory(id) + "/\(request.execID).pid"
        var arguments =
            [runtime.executable, "--root", runtime.stateDirectory, "exec", "--no-new-privs", "--pid-file", pidFile]
        if size != nil { arguments += ["--tty", "--env", "TERM=\(term)"] }
        arguments += [ImageRunner.containerID(id)] + request.command
        // With a terminal the runtime needs one of its own to relay: ours, as its controlling terminal, so that a
        // resize reaches it (SIGWINCH).
        // (This process leads its own session already: setsid forks, and waits to pass the runtime's status on.)
        if size != nil { arguments = [setsid, "--wait", "--ctty", "--"] + arguments }
        do {
            let process = try ExecProcess.start(
                arguments, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], terminal: size)
            return Session(process: process, groups: [], pidFile: pidFile)
        } catch {
            throw Refusal(code: .unavailable, reason: "\(error)")
        }
    }

    /// Carries the session over an `ExecSession` call: output out as it comes, input and resizes in; once the command
    /// ended and its output was read (or `drainLimit` passed), the signed record goes last.
    private func carry<Line: Orrery_Orchestrator_V1_AgentChannel.ClientProtocol>(
        _ session: Session, request: Orrery_Orchestrator_V1_OpenExec, startedAt: Date, over line: Line
    ) async throws {
        let process = session.process
        let opened = Orrery_Orchestrator_V1_ExecFrame.with { $0.opened = .with { $0.execID = request.execID } }
        try await Streams.with(process) { streams in
            try await line.execSession(
                requestProducer: { writer in
                    try await writer.write(opened)
                    let ending = await withTaskGroup(of: ExecProcess.Ending?.self) { group in
                        group.addTask {
                            await Self.pump(streams.output, to: writer) { data in .with { $0.stdout = data } }
                            return nil
                        }
                        if let errors = streams.errors {
                            group.addTask {
                                await Self.pump(errors, to: writer) { data in .with { $0.stderr = data } }
                                return nil
                            }
                        }
                        let ending = await session.ended()
                        // What it left running may hold the output open: read on a little, then kill it.
                        let drained = Task {
                            try await Task.sleep(for: Self.drainLimit)
                            session.kill()
                        }
                        while await group.next() != nil {}
                        drained.cancel()
                        return ending
                    }
                    // Kept until an orchestrator says it is in the notary's log (ExecLogged): a line lost now loses
                    // nothing.
                    let record = self.record(request, startedAt: startedAt, ending: ending)
                    self.keep(record, session: request.execID, offer: request.offerID)
                    session.markKept()
                    self.forgetJournal(request.execID, offer: request.offerID)
                    try await writer.write(.with { $0.exited = record })
                },
                onResponse: { response in
                    // Whatever ends the orchestrator's side (its end, a broken line) ends the command.
                    defer { session.kill() }
                    for try await frame in response.messages {
                        switch frame.kind {
                        case .stdin(let data):
                            try? await streams.input.write(ByteBuffer(bytes: data))
                        case .stdinEnd:
                            if process.terminal != nil {
                                // A terminal's end of input is its EOF character (Ctrl-D) at the start of a line.
                                try? await streams.input.write(ByteBuffer(bytes: [0x04]))
                            } else {
                                streams.input.finish()
                            }
                        case .resize(let size): process.resize(Self.size(size))
                        case .close:
                            // The command is killed; its record still goes last on this call (and is kept until
                            // logged, however the call ends).
                            session.kill()
                        case .opened, .stdout, .stderr, .exited, .relay, nil: continue
                        }
                    }
                })
        }
    }

    /// The command's streams as channels: input and output (one channel on a terminal), and its errors without one.
    private struct Streams: Sendable {
        let input: NIOAsyncChannelOutboundWriter<ByteBuffer>
        let output: NIOAsyncChannelInboundStream<ByteBuffer>
        let errors: NIOAsyncChannelInboundStream<ByteBuffer>?

        /// Runs `body` with the process's streams; the channels close when it returns.
        static func with(_ process: ExecProcess, _ body: @Sendable (Streams) async throws -> Void) async throws {
            let bootstrap = NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.allowRemoteHalfClosure, value: true)
            let wrap: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, ByteBuffer>> = { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
            if let terminal = process.terminal {
                // The channel owns a copy: the original stays the agent's, for resizes.
                let copy = dup(terminal)
                guard copy >= 0 else { throw ExecProcess.CannotStart(description: "cannot copy the terminal") }
                let channel = try await bootstrap.takingOwnershipOfDescriptor(
                    inputOutput: copy, channelInitializer: wrap)
                try await channel.executeThenClose { inbound, outbound in
                    try await body(Streams(input: outbound, output: inbound, errors: nil))
                }
                return
            }
            guard let input = process.input, let output = process.output, let errors = process.errors else {
                throw ExecProcess.CannotStart(description: "the command has no standard streams")
            }
            let channel = try await bootstrap.takingOwnershipOfDescriptors(
                input: output, output: input, channelInitializer: wrap)
            // Each channel is given up only through its `executeThenClose` (NIO traps on a dropped open writer), so
            // the second is made inside the first.
            try await channel.executeThenClose { inbound, outbound in
                let errorChannel = try await bootstrap.takingOwnershipOfDescriptor(
                    input: errors, channelInitializer: wrap)
                try await errorChannel.executeThenClose { errorInbound, _ in
                    try await body(Streams(input: outbound, output: inbound, errors: errorInbound))
                }
            }
        }
    }

    /// Sends what `stream` reads as frames of at most `frameLimit` bytes until it ends (a terminal whose last user
    /// closed it reads as an error: its end too).
    private static func pump(
        _ stream: NIOAsyncChannelInboundStream<ByteBuffer>, to writer: RPCWriter<Orrery_Orchestrator_V1_ExecFrame>,
        frame: @Sendable (Data) -> Orrery_Orchestrator_V1_ExecFrame
    ) async {
        do {
            for try await var buffer in stream {
                while buffer.readableBytes > 0,
                    let slice = buffer.readSlice(length: min(buffer.readableBytes, frameLimit))
                {
                    try await writer.write(frame(Data(slice.readableBytesView)))
                }
            }
        } catch {}
    }

    /// The session's record, signed by the device.
    func record(_ request: Orrery_Orchestrator_V1_OpenExec, startedAt: Date, ending: ExecProcess.Ending)
        -> Orrery_Common_V1_Signed
    {
        sign(sessionRecord(request, startedAt: startedAt), ending: ending)
    }

    /// What the record says from the start: the contract, the session, who invoked it, the command's digest.
    func sessionRecord(_ request: Orrery_Orchestrator_V1_OpenExec, startedAt: Date) -> Orrery_Notary_V1_ExecSession {
        .with {
            $0.contractID = contract(request.offerID)
            $0.sessionID = request.execID
            $0.invocationCid = request.invocationCid
            $0.invokerDid = request.invokerDid
            $0.commandSha256 = CommandDigest.of(request.command)
            $0.tty = request.tty
            $0.startedAt = .init(date: startedAt)
        }
    }

    /// `session` ended now as `ending`, signed by the device.
    func sign(_ session: Orrery_Notary_V1_ExecSession, ending: ExecProcess.Ending) -> Orrery_Common_V1_Signed {
        var ended = session
        ended.endedAt = .init(date: max(Date(), session.startedAt.date))
        ended.exitCode = ending.exitCode
        ended.signal = ending.signal
        return SignedMessage.make(
            type: Orrery_Notary_V1_ExecSession.protoMessageName, payload: (try? ended.serializedData()) ?? Data(),
            signers: key.map { [$0] } ?? [])
    }

    /// A terminal size within 1…1000 each way (24 × 80 when unset).
    static func size(_ size: Orrery_Orchestrator_V1_TerminalSize) -> ExecProcess.Size {
        ExecProcess.Size(
            rows: size.rows == 0 ? 24 : UInt16(min(size.rows, 1000)),
            columns: size.columns == 0 ? 80 : UInt16(min(size.columns, 1000)))
    }

    /// The TERM to give: the asked one when it is a plain name, else xterm.
    static func term(_ asked: String) -> String {
        let allowed = asked.utf8.allSatisfy {
            (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0)
                || [45, 43, 46, 95].contains($0)
        }
        return !asked.isEmpty && asked.utf8.count <= 64 && allowed ? asked : "xterm"
    }

    /// A process of the sandbox: in a PID and mount namespace other than the agent's (and, for an agent run as root,
    /// a user namespace too) — never the host's, whatever else the allocation's processes are.
    static func sandboxMember(among processes: [Int32]) -> Int32? {
        let own = getpid()
        let kinds = geteuid() == 0 ? ["pid", "mnt", "user"] : ["pid", "mnt"]
        return processes.first { pid in
            kinds.allSatisfy { kind in
                guard let theirs = SandboxProbe.namespace(kind, of: pid) else { return false }
                return theirs != SandboxProbe.namespace(kind, of: own)
            }
        }
    }

    /// The user and group `pid` runs as, as its own user namespace names them.
    static func insideIdentity(of pid: Int32) -> (uid: UInt32, gid: UInt32)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func field(_ name: String) -> UInt32? {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }?.split(whereSeparator: \.isWhitespace)
                .dropFirst().first.flatMap { UInt32($0) }
        }
        guard let uid = field("Uid"), let gid = field("Gid"),
            let insideUID = inside(uid, map: "/proc/\(pid)/uid_map"),
            let insideGID = inside(gid, map: "/proc/\(pid)/gid_map")
        else { return nil }
        return (insideUID, insideGID)
    }

    /// The ID inside a user namespace that `outside` (as the agent sees it) maps to, from the namespace's map file.
    static func inside(_ outside: UInt32, map path: String) -> UInt32? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let numbers = line.split(whereSeparator: \.isWhitespace).compactMap { UInt64($0) }
            guard numbers.count == 3 else { continue }
            let (insideStart, outsideStart, count) = (numbers[0], numbers[1], numbers[2])
            if UInt64(outside) >= outsideStart, UInt64(outside) < outsideStart + count {
                return UInt32(exactly: insideStart + UInt64(outside) - outsideStart)
            }
        }
        return nil
    }
}
