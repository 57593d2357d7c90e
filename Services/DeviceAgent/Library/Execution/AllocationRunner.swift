internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
internal import OrreryIdentity
internal import OrreryOCI
public import OrreryProto
internal import SwiftProtobuf

/// Runs allocations on this host, each isolated by `SandboxCommand` and limited by a `ControlGroup`, detached from
/// the agent (its own session, its exit status written to a file), so an agent restart neither loses nor
/// duplicates a running allocation: the directory of each allocation is its journal.
///
/// Layout under `root/<id>/`: `allocation.json` (the spec), `artifact/`, `work/`, `launch.sh`, `wrapper.pid`,
/// `stdout.log`, `stderr.log`, `exit_status`, `stop_reason`.
public struct AllocationRunner: Sendable {
    public let root: String
    public let cgroups: ControlGroup.Version?
    /// Pids per allocation (the fork-bomb limit).
    public var pidsLimit = 256
    /// Ranges the owner lets `network: true` workloads reach although they are refused by default.
    public var networkAllowed: [String] = []
    /// How `EXECUTOR_OCI` allocations run; nil when no OCI runtime works here (they are refused).
    public var images: ImageRunner?
    /// Fetches and caches allocations' input files; nil: allocations with inputs are refused.
    public var inputs: InputFetcher?
    /// Uploads outputs to their consumer's S3 bucket; nil: outputs to S3 are reported missing.
    var uploader: OutputUploader?

    public init(root: String, cgroups: ControlGroup.Version? = ControlGroup.detect()) {
        self.root = root
        self.cgroups = cgroups
    }

    /// Where an allocation's things live.
    public func directory(_ id: String) -> String { "\(root)/\(id)" }

    /// The state of an allocation as its files tell it.
    public enum Status: Sendable, Equatable {
        case unknown
        case running
        /// The workload ended with this status (128 + signal when killed).
        case exited(Int32)
        /// The wrapper vanished without a status (the host rebooted, or the agent stopped it).
        case lost
    }

    /// Whether `id` was ever started here.
    public func isKnown(_ id: String) -> Bool {
        FileManager.default.fileExists(atPath: directory(id) + "/allocation.json")
    }

    /// The allocations started here (for resuming after a restart).
    public func known() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter(isKnown).sorted()
    }

    /// The spec an allocation was started with.
    public func spec(_ id: String) throws -> Orrery_Orchestrator_V1_AllocationSpec {
        try Orrery_Orchestrator_V1_AllocationSpec(
            jsonUTF8Data: try Data(contentsOf: URL(fileURLWithPath: directory(id) + "/allocation.json")))
    }

    /// Prepares the directories, fetches and checks the artifact, sets up the limits and starts the sandbox.
    /// Starting an allocation that was already started does nothing (a duplicate instruction after a reconnect).
    /// `actor`: the allocation as an actor (its environment and the directories mounted for it).
    /// `pullToken`: a private image's bearer token for its registry (used for this pull only); `data`: the consumer
    /// and the presigned URLs of its s3:// inputs.
    public func start(
        _ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec, actor: ActorSandbox? = nil, pullToken: String? = nil,
        data: DataAccess = DataAccess()
    ) async throws {
        guard Self.isSafeID(id) else { throw RunnerError(message: "'\(id)' is not an allocation id") }
        if isKnown(id) { return }
        let base = directory(id)
        let files = FileManager.default
        for folder in [base, base + "/artifact", base + "/work"] {
            try files.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        // The sandbox may run as another uid inside its user namespace: the work directory is its own (and an
        // image's container root, another uid, passes through the allocation's directory to it).
        chmod(base + "/work", 0o777)
        chmod(base, 0o711)
        let network = SandboxNetwork(allowed: networkAllowed)
        let inputsDirectory = try await fetchInputs(spec, data: data, base: base)
        do {
            let launch: String
            if spec.executor == .oci {
                launch = try await prepareImage(
                    id, spec: spec, base: base, actor: actor, network: network, pullToken: pullToken,
                    inputs: inputsDirectory)
            } else {
                launch = try await prepareProcess(
                    id, spec: spec, base: base, actor: actor, network: network, inputs: inputsDirectory)
            }
            try await launchWrapper(id, spec: spec, base: base, launch: launch, network: network)
        } catch {
            await releaseInputs(base: base)
            throw error
        }
    }

    /// What an allocation may read its data with: whose cache entries it uses, and its s3:// inputs' presigned URLs.
    public struct DataAccess: Sendable {
        public var consumer: String
        public var inputURLs: [String: String]
        /// Private oci:// inputs' pull tokens by input name.
        public var inputTokens: [String: String]

        public init(consumer: String = "", inputURLs: [String: String] = [:], inputTokens: [String: String] = [:]) {
            self.consumer = consumer
            self.inputURLs = inputURLs
            self.inputTokens = inputTokens
        }
    }

    /// Fetches the allocation's inputs; returns the directory the sandbox sees at /inputs (nil without inputs).
    private func fetchInputs(
        _ spec: Orrery_Orchestrator_V1_AllocationSpec, data: DataAccess, base: String
    ) async throws -> String? {
        guard !spec.inputs.isEmpty else { return nil }
        guard let inputs else { throw RunnerError(message: "this device takes no inputs (its input cache is off)") }
        return try await inputs.fetch(
            spec, urls: data.inputURLs, tokens: data.inputTokens, consumer: data.consumer, base: base)
    }

    private func releaseInputs(base: String) async {
        await inputs?.release(base: base)
        try? FileManager.default.removeItem(atPath: base + "/inputs")
    }

    /// Fetches the artifact and returns the bubblewrap command line of a process allocation.
    private func prepareProcess(
        _ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec, base: String, actor: ActorSandbox?,
        network: SandboxNetwork, inputs: String?
    ) async throws -> String {
        let command = try await fetchArtifact(spec, into: base + "/artifact", work: base + "/work")
        var sandbox = SandboxCommand(
            workDirectory: base + "/work", artifactDirectory: base + "/artifact", network: spec.network,
            environment: environment(id, spec: spec, actor: actor), command: command + spec.args)
        if spec.network {
            try prepareNetwork(spec, base: base, network: network)
            sandbox.resolvConf = base + "/resolv.conf"
        }
        if FileManager.default.fileExists(atPath: base + "/hosts") { sandbox.hostsFile = base + "/hosts" }
        sandbox.actorDirectory = actor?.directory
        sandbox.mailboxDirectory = actor?.mailboxDirectory
        sandbox.inputsDirectory = inputs
        sandbox.devices = try gpuDevices(spec)
        return sandbox.arguments.map(shellQuoted).joined(separator: " ")
    }

    /// Pulls the image and writes the OCI bundle of an image allocation; returns the runtime's command line.
    private func prepareImage(
        _ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec, base: String, actor: ActorSandbox?,
        network: SandboxNetwork, pullToken: String?, inputs: String?
    ) async throws -> String {
        guard let images else {
            throw RunnerError(message: "this device runs no OCI images (no working runc or crun)")
        }
        var bundle = OCIBundle(
            rootPath: "", workDirectory: base + "/work", network: spec.network,
            cgroupsPath: cgroups.map { _ in "/orrery/\(id)/oci" },
            fileSizeLimit: spec.resources.diskMib > 0 ? spec.resources.diskMib << 20 : nil,
            hostIDBase: geteuid() == 0 ? OCIBundle.defaultHostIDBase : nil)
        if spec.network {
            try prepareNetwork(spec, base: base, network: network)
            bundle.resolvConf = base + "/resolv.conf"
        }
        if FileManager.default.fileExists(atPath: base + "/hosts") { bundle.hostsFile = base + "/hosts" }
        bundle.actorDirectory = actor?.directory
        bundle.mailboxDirectory = actor?.mailboxDirectory
        bundle.inputsDirectory = inputs
        bundle.devices = try gpuDevices(spec)
        let arguments = try await images.prepare(
            id, spec: spec, base: base, environment: environment(id, spec: spec, actor: actor), bundle: bundle,
            credentials: pullToken.map { .bearer($0) } ?? .anonymous)
        return arguments.map(shellQuoted).joined(separator: " ")
    }

    /// Writes the sandbox network's firewall rules and resolver file.
    private func prepareNetwork(
        _ spec: Orrery_Orchestrator_V1_AllocationSpec, base: String, network: SandboxNetwork
    ) throws {
        guard network.isAvailable else {
            throw RunnerError(
                message:
                    "this host cannot give a sandbox an outbound-only network: slirp4netns, nft and nsenter are needed")
        }
        try Data(network.rules.utf8).write(to: URL(fileURLWithPath: base + "/net.nft"))
        try Data(SandboxNetwork.resolvConf.utf8).write(to: URL(fileURLWithPath: base + "/resolv.conf"))
    }

    /// The variables an allocation gets besides the spec's own.
    private func environment(_ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec, actor: ActorSandbox?)
        -> [String: String]
    {
        var environment = spec.env.merging(actor?.environment ?? [:]) { $1 }
        environment["ORRERY_ALLOCATION"] = id
        environment["ORRERY_WORK_DIR"] = "/work"
        return environment
    }

    /// The GPU device nodes an allocation that asks for GPUs gets.
    private func gpuDevices(_ spec: Orrery_Orchestrator_V1_AllocationSpec) throws -> [String] {
        guard spec.resources.gpu.count > 0 else { return [] }
        let devices = nvidiaDevices()
        guard !devices.isEmpty else {
            throw RunnerError(message: "the allocation asks for \(spec.resources.gpu.count) GPU(s); this host has none")
        }
        return devices
    }

    /// Starts the detached wrapper that joins the allocation's cgroup, bounds its files, runs `launch` (in the
    /// sandbox network when asked) and records its exit status.
    private func launchWrapper(
        _ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec, base: String, launch: String,
        network: SandboxNetwork
    ) async throws {
        let files = FileManager.default
        var procsFiles: [String] = []
        if let cgroups {
            let limits = ResourceLimits(
                memoryBytes: max(spec.resources.ramMib, 4) << 20, cpus: Double(max(spec.resources.cpuCores, 1)),
                pids: pidsLimit)
            procsFiles = try ControlGroup.create(name: id, limits: limits, version: cgroups).procsFiles
        }
        let quotedDirectory = shellQuoted(base)
        // Appended: a restart in place (`restart`) runs this script again and keeps what the logs hold.
        let redirections = ">> \(quotedDirectory)/stdout.log 2>> \(quotedDirectory)/stderr.log < /dev/null"
        let run =
            spec.network
            ? network.launchLines(sandbox: launch, redirections: redirections, directory: quotedDirectory)
            : "\(launch) \(redirections)\nstatus=$?"
        let script = """
            #!/bin/sh
            echo $$ > \(quotedDirectory)/wrapper.pid.tmp && mv \(quotedDirectory)/wrapper.pid.tmp \(quotedDirectory)/wrapper.pid
            \(procsFiles.map { "echo $$ > \(shellQuoted($0)) || exit 125" }.joined(separator: "\n"))
            \(Self.fileSizeLimit(diskMiB: spec.resources.diskMib))
            \(run)
            echo $status > \(quotedDirectory)/exit_status.tmp && mv \(quotedDirectory)/exit_status.tmp \(quotedDirectory)/exit_status

            """
        try Data(script.utf8).write(to: URL(fileURLWithPath: base + "/launch.sh"))
        try Data("\(Date().timeIntervalSince1970)".utf8).write(to: URL(fileURLWithPath: base + "/started_at"))
        try spec.jsonUTF8Data().write(to: URL(fileURLWithPath: base + "/allocation.json"))
        try Self.launchDetached(["/usr/bin/setsid", "-f", "/bin/sh", base + "/launch.sh"])
        // The wrapper announces itself at once (renamed into place, so it is never read half-written); wait for it
        // so `status` never mistakes a starting one for lost.
        let deadline = Date().addingTimeInterval(5)
        while !files.fileExists(atPath: base + "/wrapper.pid"), Date() < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The shell line bounding every file the workload writes — its stdout and stderr logs on the host, what it
    /// writes in /work — to the allocation's `disk_mib` (RLIMIT_FSIZE, in the shell's 512-byte blocks; a write past it
    /// ends the workload with SIGXFSZ). Empty without a disk size.
    static func fileSizeLimit(diskMiB: UInt64) -> String {
        diskMiB > 0 ? "ulimit -f \(diskMiB * 2048)" : ""
    }

    /// Fetches the artifact and returns the command to run: a script given inline or fetched runs with /bin/sh;
    /// a .tar.gz is unpacked into the work directory and the spec's command runs there.
    func fetchArtifact(_ spec: Orrery_Orchestrator_V1_AllocationSpec, into artifact: String, work: String) async throws
        -> [String]
    {
        switch spec.artifact.source {
        case .text(let text):
            let data = Data(text.utf8)
            try check(data, against: spec.artifact.sha256)
            try data.write(to: URL(fileURLWithPath: artifact + "/run"))
            chmod(artifact + "/run", 0o755)
            return spec.command.isEmpty ? ["/bin/sh", "/artifact/run"] : [spec.command]
        case .url(let url):
            let name = (URL(string: url)?.lastPathComponent).flatMap { $0.isEmpty ? nil : $0 } ?? "artifact"
            let safeName = name.replacing("/", with: "_")
            let path = artifact + "/" + safeName
            let fetch = try await ChildCommand.run(
                "/usr/bin/curl", ["-fsSL", "--max-time", "600", "--max-filesize", "\(4 << 30)", "-o", path, url],
                captureOutput: false)
            guard fetch.status == 0 else {
                throw RunnerError(message: "cannot fetch the artifact \(url): \(fetch.errorText)")
            }
            try check(try Data(contentsOf: URL(fileURLWithPath: path)), against: spec.artifact.sha256)
            if safeName.hasSuffix(".tar.gz") || safeName.hasSuffix(".tgz") {
                let unpack = try await ChildCommand.run(
                    "/usr/bin/tar", ["-xzf", path, "-C", work, "--no-same-owner"], captureOutput: false)
                guard unpack.status == 0 else {
                    throw RunnerError(message: "cannot unpack \(safeName): \(unpack.errorText)")
                }
                return [spec.command]
            }
            chmod(path, 0o755)
            return spec.command.isEmpty ? ["/artifact/" + safeName] : [spec.command]
        case nil:
            throw RunnerError(message: "the allocation has no artifact")
        }
    }

    private func check(_ data: Data, against expected: String) throws {
        guard !expected.isEmpty else { return }
        let digest = Hex.sha256(data)
        guard digest == expected else {
            throw RunnerError(message: "the artifact's sha256 is \(digest), the spec says \(expected): refused")
        }
    }

    /// When the allocation was started.
    public func startedAt(_ id: String) -> Date {
        (try? String(contentsOfFile: directory(id) + "/started_at", encoding: .utf8)).flatMap(Double.init).map(
            Date.init(timeIntervalSince1970:)) ?? Date()
    }

    /// What the files say about `id`.
    public func status(_ id: String) -> Status {
        let base = directory(id)
        if let text = try? String(contentsOfFile: base + "/exit_status", encoding: .utf8),
            let code = Int32(text.trimmed())
        {
            return .exited(code)
        }
        guard isKnown(id) else { return .unknown }
        // Between the old wrapper's end and the new one's start, a restart in place is still running (a marker older
        // than a restart can take was left by an agent that died in the middle of one).
        if let marked = FileStatus(path: base + "/restarting"),
            Date().timeIntervalSince1970 - marked.modifiedSince1970 < 60
        {
            return .running
        }
        guard let text = try? String(contentsOfFile: base + "/wrapper.pid", encoding: .utf8),
            let pid = Int32(text.trimmed())
        else { return .lost }
        return kill(pid, 0) == 0 || errno == EPERM ? .running : .lost
    }

    /// Stops an allocation: every process of its group and its wrapper; `reason` is kept for the report.
    public func stop(_ id: String, reason: String) {
        let base = directory(id)
        try? Data(reason.utf8).write(to: URL(fileURLWithPath: base + "/stop_reason"))
        if let cgroups, let group = ControlGroup.existing(name: id, version: cgroups) { group.killAll() }
        if let text = try? String(contentsOfFile: base + "/wrapper.pid", encoding: .utf8),
            let pid = Int32(text.trimmed())
        {
            kill(-pid, SIGKILL)
        }
    }

    /// Restarts a running allocation in place — every process of it ended, its wrapper started again in the same
    /// directory and cgroup (its logs appended to, its metered use and wall time going on) — as a failing health check
    /// asks. Its status stays `running` throughout.
    public func restart(_ id: String) async throws {
        let base = directory(id)
        guard status(id) == .running, stopReason(id) == nil else {
            throw RunnerError(message: "\(id) is not running: nothing to restart")
        }
        try Data().write(to: URL(fileURLWithPath: base + "/restarting"))
        defer { try? FileManager.default.removeItem(atPath: base + "/restarting") }
        let wrapper = (try? String(contentsOfFile: base + "/wrapper.pid", encoding: .utf8)).flatMap {
            Int32($0.trimmed())
        }
        if let cgroups, let group = ControlGroup.existing(name: id, version: cgroups) { group.killAll() }
        if let wrapper {
            // Without cgroups, a sandbox in a session of its own is not in the wrapper's process group.
            for pid in SandboxProbe.descendants(of: wrapper) { kill(pid, SIGKILL) }
            kill(-wrapper, SIGKILL)
        }
        // Gone, and reaped by init (it was started detached): only then is its pid file replaced.
        let deadline = Date().addingTimeInterval(10)
        while let wrapper, kill(wrapper, 0) == 0, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if let wrapper, kill(wrapper, 0) == 0 {
            throw RunnerError(message: "\(id): its processes did not end within 10 s of SIGKILL")
        }
        // An image's container killed so is still known to its runtime under the same id: removed, so that it can
        // run again.
        if let images, FileManager.default.fileExists(atPath: base + "/image") { await images.removeContainer(id) }
        // A wrapper that outlived its sandbox for a moment may have written the status of the killed run.
        try? FileManager.default.removeItem(atPath: base + "/exit_status")
        try? FileManager.default.removeItem(atPath: base + "/wrapper.pid")
        try Self.launchDetached(["/usr/bin/setsid", "-f", "/bin/sh", base + "/launch.sh"])
        let started = Date().addingTimeInterval(5)
        while !FileManager.default.fileExists(atPath: base + "/wrapper.pid"), Date() < started {
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The processes of a running allocation (its cgroup's, or its wrapper's descendants without cgroups).
    public func processes(_ id: String) -> [Int32] {
        if let cgroups, let group = ControlGroup.existing(name: id, version: cgroups) { return group.processes() }
        guard let text = try? String(contentsOfFile: directory(id) + "/wrapper.pid", encoding: .utf8),
            let wrapper = Int32(text.trimmed())
        else { return [] }
        return SandboxProbe.descendants(of: wrapper)
    }

    /// Why it was stopped, if the agent stopped it.
    public func stopReason(_ id: String) -> String? {
        try? String(contentsOfFile: directory(id) + "/stop_reason", encoding: .utf8)
    }

    /// The metered usage so far (zero without cgroups).
    public func usage(_ id: String) -> MeteredUsage {
        guard let cgroups, let group = ControlGroup.existing(name: id, version: cgroups) else { return MeteredUsage() }
        return group.usage()
    }

    /// The memory the allocation uses now; nil without cgroups.
    public func memoryInUse(_ id: String) -> UInt64? {
        guard let cgroups, let group = ControlGroup.existing(name: id, version: cgroups) else { return nil }
        return group.memoryInUse()
    }

    /// Removes the allocation's cgroup once it ended (its files stay as the journal).
    public func release(_ id: String) async {
        if let images, (try? spec(id))?.executor == .oci { await images.release(id, base: directory(id)) }
        await releaseInputs(base: directory(id))
        guard let cgroups, let group = ControlGroup.existing(name: id, version: cgroups) else { return }
        group.killAll()
        group.remove()
    }

    /// The disk an allocation's files take, as `diskUsage` measures it.
    public struct DiskUsage: Sendable, Equatable {
        /// Bytes counted (their sizes, as RLIMIT_FSIZE counts them); past the limit, counting stopped.
        public var bytes: UInt64
        /// Whether one of the files counted reached the limit by itself: its writer met RLIMIT_FSIZE.
        public var fileAtLimit: Bool
    }

    /// The disk an allocation's files take (what it wrote in /work, and its stdout and stderr); counting stops once
    /// past `limit`, so a tree of many files costs no more than it must. Its stdout and stderr are counted first.
    public func diskUsage(_ id: String, limit: UInt64) -> DiskUsage {
        let base = directory(id)
        var usage = DiskUsage(bytes: 0, fileAtLimit: false)
        // lstat: a link counts as itself, never as what it points to; directories are walked, not followed.
        func add(_ path: String) -> Bool {
            guard let status = FileStatus(path: path, followingLinks: false) else { return true }
            if status.isDirectory {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                    guard add(path + "/" + name) else { return false }
                }
                return true
            }
            usage.bytes += status.size
            if status.size >= limit { usage.fileAtLimit = true }
            return usage.bytes <= limit
        }
        guard add(base + "/stdout.log"), add(base + "/stderr.log") else { return usage }
        _ = add(base + "/work")
        return usage
    }

    /// Bytes of a log after `offset` (at most `limit`).
    public func log(_ id: String, stream: String, from offset: UInt64, limit: Int = 64 << 10) -> Data {
        let descriptor = open(directory(id) + "/\(stream).log", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return Data() }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: limit)
        var filled = 0
        while filled < limit {
            let count = bytes[filled...].withUnsafeMutableBytes {
                pread(descriptor, $0.baseAddress, $0.count, off_t(offset) + off_t(filled))
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            filled += count
        }
        return Data(bytes[0..<filled])
    }

    /// A declared output, read from the work directory, with its sha256; nil when missing or outside it.
    /// The largest declared output returned: it travels in one agent-channel message, under gRPC's 4 MiB default.
    public static let outputLimit = 3 << 20

    public func output(_ id: String, path: String, limit: Int = outputLimit) throws -> (sha256: String, data: Data)? {
        guard let file = try outputFile(id, path: path), let status = FileStatus(path: file) else { return nil }
        if status.size > UInt64(limit) {
            throw RunnerError(message: "output \(path) is \(status.size) bytes, more than \(limit)")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        return (Hex.sha256(data), data)
    }

    /// Where a declared output is on the host, its links resolved; nil when it was not written.
    /// - Throws: when it leads outside the work directory.
    public func outputFile(_ id: String, path: String) throws -> String? {
        let work = URL(fileURLWithPath: directory(id) + "/work").standardizedFileURL.resolvingSymlinksInPath()
        let file = work.appendingPathComponent(path).standardizedFileURL.resolvingSymlinksInPath()
        guard file.path.hasPrefix(work.path + "/") else {
            throw RunnerError(message: "output \(path) leads outside the work directory")
        }
        return FileStatus(path: file.path) == nil ? nil : file.path
    }

    /// Where an output goes in its consumer's bucket, and the presigned URL there still sealed to the device (it
    /// is journalled so: a restarted agent uploads what the allocation wrote).
    public struct OutputDestination: Codable, Sendable, Equatable {
        public var location: String
        public var sealedURL: Data

        public init(location: String, sealedURL: Data) {
            self.location = location
            self.sealedURL = sealedURL
        }
    }

    /// Journals an allocation's output destinations by path.
    public func saveOutputDestinations(_ id: String, _ destinations: [String: OutputDestination]) throws {
        try JSONEncoder().encode(destinations).write(
            to: URL(fileURLWithPath: directory(id) + "/output-destinations.json"))
    }

    /// Journals the outputs an allocation uploaded or sends to the content store (what is reported again after a
    /// reconnect).
    func saveUploadedOutputs(_ id: String, _ outputs: [AllocationOutcome.Output]) throws {
        guard !outputs.isEmpty else { return }
        try JSONEncoder().encode(outputs).write(to: URL(fileURLWithPath: directory(id) + "/uploaded-outputs.json"))
    }

    /// The outputs an allocation uploaded to its consumer's bucket.
    func uploadedOutputs(_ id: String) -> [AllocationOutcome.Output] {
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: directory(id) + "/uploaded-outputs.json"))
        else { return [] }
        return (try? JSONDecoder().decode([AllocationOutcome.Output].self, from: data)) ?? []
    }

    /// Journals that the content store answered for good for an output (stored whole, or refused).
    func markStoreUploadEnded(_ id: String, path: String) throws {
        let file = directory(id) + "/store-ended"
        let ended = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        try Data((ended + path + "\n").utf8).write(to: URL(fileURLWithPath: file))
    }

    /// Whether an ended allocation still has outputs on their way to the content store (its directory is kept).
    func hasPendingStoreUploads(_ id: String) -> Bool {
        let bound = uploadedOutputs(id).filter { $0.location == AllocationOutcome.Output.store }.map(\.path)
        return !Set(bound).isSubset(of: endedStoreUploads(id))
    }

    /// The paths of an allocation's outputs the content store answered for good.
    func endedStoreUploads(_ id: String) -> Set<String> {
        Set(
            ((try? String(contentsOfFile: directory(id) + "/store-ended", encoding: .utf8)) ?? "")
                .split(separator: "\n").map(String.init))
    }

    /// An allocation's journalled output destinations by path (none when there are none).
    public func outputDestinations(_ id: String) -> [String: OutputDestination] {
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: directory(id) + "/output-destinations.json"))
        else { return [:] }
        return (try? JSONDecoder().decode([String: OutputDestination].self, from: data)) ?? [:]
    }

    /// Starts `arguments` with /dev/null as its standard streams and no other inherited descriptor (the sandbox
    /// must not see the agent's sockets), and waits for it: `setsid -f` returns at once, leaving the wrapper in a
    /// session of its own that outlives the agent.
    static func launchDetached(_ arguments: [String]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for descriptor in Int32(0)...2 {
            posix_spawn_file_actions_addopen(
                &actions, descriptor, "/dev/null", descriptor == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        closeInheritedDescriptors(&actions)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        guard result == 0 else {
            throw RunnerError(message: "cannot start \(arguments[0]): \(String(cString: strerror(result)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    }

    static func isSafeID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 64
            && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
    }
}

/// What an allocation gets as an actor: its environment (address, DID, mailbox, checkpoint directory), its
/// directory mounted at /orrery and its mailbox socket's directory mounted at /orrery/mailbox.
public struct ActorSandbox: Sendable {
    public var environment: [String: String]
    public var directory: String
    public var mailboxDirectory: String
}

/// An allocation that cannot be run.
public struct RunnerError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
