#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// Resource limits for one allocation, enforced by the kernel through cgroups.
public struct ResourceLimits: Sendable, Equatable {
    public var memoryBytes: UInt64
    /// CPU time per wall time: 1.0 is one core.
    public var cpus: Double
    public var pids: Int

    public init(memoryBytes: UInt64, cpus: Double, pids: Int) {
        self.memoryBytes = memoryBytes
        self.cpus = cpus
        self.pids = pids
    }
}

/// What the kernel metered for an allocation's cgroup.
public struct MeteredUsage: Sendable, Equatable, Codable {
    public var cpuSeconds: Double = 0
    public var peakMemoryBytes: UInt64 = 0
    /// The memory limit killed a process.
    public var oomKilled = false
    /// A fork failed at the pids limit.
    public var pidsLimitHit = false
}

/// One allocation's control group, on cgroup v1 (one directory per controller, as on this machine) or v2 (one
/// unified directory). Created under `orrery/<name>` in each hierarchy; the sandbox's first process writes its
/// PID into `procsFiles` before it starts the workload, so everything it spawns is limited and metered.
public struct ControlGroup: Sendable {
    public enum Version: Sendable, Equatable {
        case v1(root: String)
        case v2(root: String)
    }

    public let version: Version
    /// One directory per controller (v1) or the single unified one (v2).
    public let directories: [String: String]

    /// The cgroup files the sandbox's first process writes its PID to.
    public var procsFiles: [String] { Set(directories.values).sorted().map { $0 + "/cgroup.procs" } }

    /// Which cgroup version this host mounts at `root`, or nil without a usable one.
    public static func detect(root: String = "/sys/fs/cgroup") -> Version? {
        let files = FileManager.default
        if files.fileExists(atPath: root + "/cgroup.controllers") { return .v2(root: root) }
        if files.fileExists(atPath: root + "/memory/cgroup.procs") { return .v1(root: root) }
        return nil
    }

    /// Creates the group and applies `limits`.
    /// - Throws: `ControlGroupError` when the hierarchy is not writable (an unprivileged agent without a
    ///   delegated subtree).
    public static func create(name: String, limits: ResourceLimits, version: Version) throws -> ControlGroup {
        var directories: [String: String] = [:]
        switch version {
        case .v1(let root):
            for controller in ["memory", "cpu", "cpuacct", "pids"] {
                let mount = "\(root)/\(controller)"
                guard FileManager.default.fileExists(atPath: mount) else { continue }
                let directory = "\(mount)/orrery/\(name)"
                try makeDirectory(directory)
                directories[controller] = directory
            }
            guard let memory = directories["memory"], let cpu = directories["cpu"], let pids = directories["pids"]
            else {
                throw ControlGroupError(message: "cgroup v1 without the memory, cpu and pids controllers")
            }
            try write("\(limits.memoryBytes)", to: memory + "/memory.limit_in_bytes")
            // Swap would let a workload exceed its memory: limit memory+swap too where the kernel accounts it.
            if FileManager.default.fileExists(atPath: memory + "/memory.memsw.limit_in_bytes") {
                try? write("\(limits.memoryBytes)", to: memory + "/memory.memsw.limit_in_bytes")
            }
            let period = 100_000
            try write("\(period)", to: cpu + "/cpu.cfs_period_us")
            try write("\(Int(limits.cpus * Double(period)))", to: cpu + "/cpu.cfs_quota_us")
            try write("\(limits.pids)", to: pids + "/pids.max")
        case .v2(let root):
            let parent = "\(root)/orrery"
            try makeDirectory(parent)
            // Let the children use the controllers (needs a delegated or root-owned subtree).
            try? write("+memory +cpu +pids", to: parent + "/cgroup.subtree_control")
            let directory = "\(parent)/\(name)"
            try makeDirectory(directory)
            directories["unified"] = directory
            try write("\(limits.memoryBytes)", to: directory + "/memory.max")
            try? write("0", to: directory + "/memory.swap.max")
            try write("\(Int(limits.cpus * 100_000)) 100000", to: directory + "/cpu.max")
            try write("\(limits.pids)", to: directory + "/pids.max")
        }
        return ControlGroup(version: version, directories: directories)
    }

    /// Reopens an existing group (after an agent restart).
    public static func existing(name: String, version: Version) -> ControlGroup? {
        var directories: [String: String] = [:]
        switch version {
        case .v1(let root):
            for controller in ["memory", "cpu", "cpuacct", "pids"] {
                let directory = "\(root)/\(controller)/orrery/\(name)"
                if FileManager.default.fileExists(atPath: directory) { directories[controller] = directory }
            }
        case .v2(let root):
            let directory = "\(root)/orrery/\(name)"
            if FileManager.default.fileExists(atPath: directory) { directories["unified"] = directory }
        }
        return directories.isEmpty ? nil : ControlGroup(version: version, directories: directories)
    }

    /// What the kernel metered so far.
    public func usage() -> MeteredUsage {
        var usage = MeteredUsage()
        switch version {
        case .v1:
            if let cpuacct = directories["cpuacct"], let nanoseconds = Self.number(cpuacct + "/cpuacct.usage") {
                usage.cpuSeconds = Double(nanoseconds) / 1e9
            }
            if let memory = directories["memory"] {
                usage.peakMemoryBytes = Self.number(memory + "/memory.max_usage_in_bytes") ?? 0
                let control = (try? String(contentsOfFile: memory + "/memory.oom_control", encoding: .utf8)) ?? ""
                usage.oomKilled = (Self.field(control, "oom_kill") ?? 0) > 0
            }
            if let pids = directories["pids"] {
                let events = (try? String(contentsOfFile: pids + "/pids.events", encoding: .utf8)) ?? ""
                usage.pidsLimitHit = (Self.field(events, "max") ?? 0) > 0
            }
        case .v2:
            guard let directory = directories["unified"] else { break }
            let cpu = (try? String(contentsOfFile: directory + "/cpu.stat", encoding: .utf8)) ?? ""
            usage.cpuSeconds = Double(Self.field(cpu, "usage_usec") ?? 0) / 1e6
            usage.peakMemoryBytes = Self.number(directory + "/memory.peak") ?? 0
            let memoryEvents = (try? String(contentsOfFile: directory + "/memory.events", encoding: .utf8)) ?? ""
            usage.oomKilled = (Self.field(memoryEvents, "oom_kill") ?? 0) > 0
            let pidsEvents = (try? String(contentsOfFile: directory + "/pids.events", encoding: .utf8)) ?? ""
            usage.pidsLimitHit = (Self.field(pidsEvents, "max") ?? 0) > 0
        }
        return usage
    }

    /// The memory the group's processes use now (page cache included, as the limit counts it); nil unmetered.
    public func memoryInUse() -> UInt64? {
        switch version {
        case .v1: directories["memory"].flatMap { Self.number($0 + "/memory.usage_in_bytes") }
        case .v2: directories["unified"].flatMap { Self.number($0 + "/memory.current") }
        }
    }

    /// The processes still in the group and in the groups below it (an OCI runtime puts a container in its own
    /// child group).
    public func processes() -> [Int32] {
        var pids: Set<Int32> = []
        for directory in Set(directories.values) {
            for group in [directory] + Self.descendants(of: directory) {
                let text = (try? String(contentsOfFile: group + "/cgroup.procs", encoding: .utf8)) ?? ""
                for line in text.split(separator: "\n") { if let pid = Int32(line) { pids.insert(pid) } }
            }
        }
        return pids.sorted()
    }

    /// The groups below `directory`, deepest last (a few levels: ours and a runtime's).
    static func descendants(of directory: String, depth: Int = 0) -> [String] {
        guard depth < 4 else { return [] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.map { directory + "/" + $0 }.filter {
            FileStatus(path: $0, followingLinks: false)?.isDirectory == true
        }
        .flatMap { [$0] + descendants(of: $0, depth: depth + 1) }
    }

    /// Kills every process in the group.
    public func killAll() {
        if case .v2 = version, let directory = directories["unified"],
            FileManager.default.fileExists(atPath: directory + "/cgroup.kill")
        {
            try? Self.write("1", to: directory + "/cgroup.kill")
            return
        }
        // v1: freeze-free best effort, repeated while processes fork.
        for _ in 0..<10 {
            let pids = processes()
            if pids.isEmpty { return }
            for pid in pids { kill(pid, SIGKILL) }
            usleep(20_000)
        }
    }

    /// Removes the (empty) group and any (empty) groups below it.
    public func remove() {
        for directory in Set(directories.values) {
            for group in Self.descendants(of: directory).reversed() { rmdir(group) }
            rmdir(directory)
        }
    }

    static func makeDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw ControlGroupError(message: "cannot create cgroup \(path): \(error)")
        }
    }

    static func write(_ value: String, to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw ControlGroupError(message: "cannot open \(path) for writing: \(systemErrorText())")
        }
        defer { close(descriptor) }
        // A control file takes one value per write(2).
        guard systemWrite(descriptor, Array(value.utf8)) >= 0 else {
            throw ControlGroupError(message: "cannot write '\(value)' to \(path): \(systemErrorText())")
        }
    }

    static func number(_ path: String) -> UInt64? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
            UInt64($0.trimmed())
        }
    }

    /// The value of `key` in a "key value" per line file.
    static func field(_ text: String, _ key: String) -> UInt64? {
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == key { return UInt64(parts[1]) }
        }
        return nil
    }
}

/// A cgroup that cannot be set up.
public struct ControlGroupError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
