#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryOCI
internal import OrreryProto

/// The OCI runtime bundle of one allocation: its `config.json`, written from the image's configuration and the
/// allocation's spec. The image's root is shared read-only between allocations; /work is the allocation's own
/// directory; /tmp is a fresh tmpfs. The workload runs in new user, PID, mount, IPC, UTS and cgroup namespaces (and a
/// network namespace of its own unless it asked for the network: then it shares the outbound-only namespace the
/// launcher made), as the image's user mapped to an unprivileged host uid, with no capabilities, no new privileges and
/// `SeccompProfile.standard`.
struct OCIBundle {
    /// How the spec and image combine into the process to run.
    struct Process: Equatable {
        var args: [String]
        var env: [String]
        var cwd: String
        var uid: UInt32
        var gid: UInt32
        var additionalGids: [UInt32]
    }

    var rootPath: String
    var workDirectory: String
    var network: Bool
    var resolvConf: String?
    /// The ensemble's names (its partners' loopback addresses), bound at /etc/hosts.
    var hostsFile: String?
    var devices: [String] = []
    var actorDirectory: String?
    var mailboxDirectory: String?
    /// The allocation's input files, mounted read-only at /inputs.
    var inputsDirectory: String?
    /// The cgroup the runtime puts the container in (a child of the allocation's own, so that its usage stays metered
    /// after the runtime removes it); nil without cgroups.
    var cgroupsPath: String?
    /// Mounts added after the standard ones.
    var extraMounts: [OCIRuntimeSpec.Mount] = []
    /// RLIMIT_FSIZE: the allocation's disk size, nil for none.
    var fileSizeLimit: UInt64?
    /// Where container uids start on the host (65,536 of them); nil when the agent is not root (then the container's
    /// root is the agent's own user, alone).
    var hostIDBase: UInt32?

    /// The host ids container root maps to when the agent runs as root.
    static let defaultHostIDBase: UInt32 = 1_000_000

    /// Combines the image's configuration with the spec: a spec `command` replaces the image's Entrypoint (and its
    /// Cmd), spec `args` replace its Cmd — as Kubernetes does; the spec's environment is added to the image's; the
    /// working directory is the image's, or /work when it names none; the user is the image's (`uid`, `uid:gid`,
    /// or names looked up in the image's /etc/passwd and /etc/group), root when it names none.
    /// - Throws: `RunnerError` when nothing is left to run or the user is not in the image.
    static func process(
        image: ImageConfiguration, spec: Orrery_Orchestrator_V1_AllocationSpec, extraEnvironment: [String: String],
        rootPath: String
    ) throws -> Process {
        let config = image.config
        let entrypoint = spec.command.isEmpty ? (config?.entrypoint ?? []) : [spec.command]
        let arguments = spec.args.isEmpty ? (spec.command.isEmpty ? (config?.cmd ?? []) : []) : spec.args
        let args = entrypoint + arguments
        guard !args.isEmpty else {
            throw RunnerError(message: "the image names no Entrypoint or Cmd and the spec no command: nothing to run")
        }
        var environment: [(String, String)] = []
        func set(_ key: String, _ value: String) {
            environment.removeAll { $0.0 == key }
            environment.append((key, value))
        }
        for entry in config?.env ?? [] {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            set(String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
        if !environment.contains(where: { $0.0 == "PATH" }) {
            set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        }
        for (key, value) in spec.env.sorted(by: { $0.key < $1.key }) { set(key, value) }
        for (key, value) in extraEnvironment.sorted(by: { $0.key < $1.key }) { set(key, value) }
        if !environment.contains(where: { $0.0 == "HOME" }) { set("HOME", "/work") }
        let user = try resolveUser(config?.user ?? "", rootPath: rootPath)
        let workingDirectory = config?.workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/work"
        return Process(
            args: args, env: environment.map { "\($0.0)=\($0.1)" }, cwd: workingDirectory, uid: user.uid,
            gid: user.gid, additionalGids: user.groups)
    }

    /// An image's `User`: empty (root), `uid`, `uid:gid`, `name`, `name:group`, looked up in the image's own files.
    static func resolveUser(_ text: String, rootPath: String) throws -> (uid: UInt32, gid: UInt32, groups: [UInt32]) {
        guard !text.isEmpty else { return (0, 0, []) }
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let passwd = entries(rootPath + "/etc/passwd")
        let group = entries(rootPath + "/etc/group")
        let uid: UInt32
        var gid: UInt32?
        if let number = UInt32(parts[0]) {
            uid = number
            gid = passwd.first { UInt32($0[safe: 2]) == number }.flatMap { UInt32($0[safe: 3]) }
        } else if let entry = passwd.first(where: { $0.first == parts[0] }), let number = UInt32(entry[safe: 2]) {
            uid = number
            gid = UInt32(entry[safe: 3])
        } else {
            throw RunnerError(message: "the image's user \(parts[0]) is not in its /etc/passwd")
        }
        if parts.count > 1 {
            if let number = UInt32(parts[1]) {
                gid = number
            } else if let entry = group.first(where: { $0.first == parts[1] }), let number = UInt32(entry[safe: 2]) {
                gid = number
            } else {
                throw RunnerError(message: "the image's group \(parts[1]) is not in its /etc/group")
            }
        }
        return (uid, gid ?? 0, [])
    }

    /// The colon-separated lines of an /etc file in the image (not following a link out of it: the file is read
    /// only when it is a regular file).
    private static func entries(_ path: String) -> [[String]] {
        guard FileStatus(path: path, followingLinks: false)?.isRegularFile == true,
            let text = try? String(contentsOfFile: path, encoding: .utf8)
        else { return [] }
        return text.split(separator: "\n").map {
            $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        }
    }

    /// The runtime spec for `process`.
    func spec(_ process: Process) -> OCIRuntimeSpec {
        // Open files: 65,536, or the agent's own hard limit when lower (a user namespace cannot raise it).
        var limit = rlimit()
        let files = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? min(UInt64(limit.rlim_max), 65536) : 1024
        var rlimits = [OCIRuntimeSpec.Process.Rlimit(type: "RLIMIT_NOFILE", hard: files, soft: files)]
        if let fileSizeLimit {
            rlimits.append(.init(type: "RLIMIT_FSIZE", hard: fileSizeLimit, soft: fileSizeLimit))
        }
        var namespaces = ["pid", "ipc", "uts", "mount", "user", "cgroup"]
        if !network { namespaces.append("network") }
        let mapping: OCIRuntimeSpec.Linux.IDMapping =
            hostIDBase.map { .init(containerID: 0, hostID: $0, size: 65536) }
            ?? .init(containerID: 0, hostID: UInt32(getuid()), size: 1)
        let groupMapping: OCIRuntimeSpec.Linux.IDMapping =
            hostIDBase.map { .init(containerID: 0, hostID: $0, size: 65536) }
            ?? .init(containerID: 0, hostID: UInt32(getgid()), size: 1)
        var mounts: [OCIRuntimeSpec.Mount] = [
            .init(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
            .init(
                destination: "/dev", type: "tmpfs", source: "tmpfs",
                options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            .init(
                destination: "/dev/pts", type: "devpts", source: "devpts",
                options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
            .init(
                destination: "/dev/shm", type: "tmpfs", source: "shm",
                options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            .init(
                destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
            .init(
                destination: "/sys", type: "none", source: "/sys",
                options: ["rbind", "nosuid", "noexec", "nodev", "ro"]),
            .init(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"]),
            .init(
                destination: "/work", type: "none", source: workDirectory, options: ["rbind", "rw", "nosuid", "nodev"]),
        ]
        if let inputsDirectory {
            mounts.append(
                .init(
                    destination: "/inputs", type: "none", source: inputsDirectory,
                    options: ["rbind", "ro", "nosuid", "nodev"]))
        }
        if network, let resolvConf {
            mounts.append(
                .init(destination: "/etc/resolv.conf", type: "none", source: resolvConf, options: ["bind", "ro"]))
        }
        if let hostsFile {
            mounts.append(.init(destination: "/etc/hosts", type: "none", source: hostsFile, options: ["bind", "ro"]))
        }
        if let actorDirectory {
            mounts.append(
                .init(destination: "/orrery", type: "none", source: actorDirectory, options: ["rbind", "rw"]))
        }
        if let mailboxDirectory {
            mounts.append(
                .init(destination: "/orrery/mailbox", type: "none", source: mailboxDirectory, options: ["rbind", "rw"]))
        }
        mounts += extraMounts
        var devices: [OCIRuntimeSpec.Linux.Device] = []
        var rules: [OCIRuntimeSpec.Linux.Resources.DeviceRule] = []
        for path in self.devices {
            var status = stat()
            guard stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFCHR else { continue }
            // glibc's encoding of a device number (its major() and minor() macros, which Swift does not import).
            let device = UInt64(status.st_rdev)
            let major = Int64(((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff)))
            let minor = Int64((device & 0xff) | ((device >> 12) & ~UInt64(0xff)))
            devices.append(.init(path: path, type: "c", major: major, minor: minor, fileMode: 0o666, uid: 0, gid: 0))
            rules.append(.init(allow: true, type: "c", major: major, minor: minor, access: "rwm"))
        }
        return OCIRuntimeSpec(
            process: .init(
                user: .init(
                    uid: process.uid, gid: process.gid,
                    additionalGids: process.additionalGids.isEmpty ? nil : process.additionalGids),
                args: process.args, env: process.env, cwd: process.cwd, rlimits: rlimits),
            root: .init(path: rootPath, readonly: true),
            mounts: mounts,
            linux: .init(
                namespaces: namespaces.map { .init(type: $0) }, uidMappings: [mapping], gidMappings: [groupMapping],
                devices: devices.isEmpty ? nil : devices,
                resources: rules.isEmpty ? nil : .init(devices: [.init(allow: false, access: "rwm")] + rules),
                cgroupsPath: cgroupsPath,
                maskedPaths: [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                ],
                readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
                seccomp: .standard))
    }

    /// Writes `config.json` into `bundleDirectory`.
    func write(_ process: Process, to bundleDirectory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try encoder.encode(spec(process)).write(to: URL(fileURLWithPath: bundleDirectory + "/config.json"))
    }

    /// The mount points the runtime needs in a root it may not write (read-only, shared, owned by the host's root
    /// while the container's root is another uid): created once, when the image is unpacked, by the agent.
    static let mountPoints = ["proc", "dev", "sys", "tmp", "work", "inputs", "orrery", "etc"]

    /// Creates the mount points in an unpacked root (a link there is left alone: the runtime resolves it inside
    /// the root) and an empty /etc/resolv.conf to bind over.
    static func prepareRoot(_ rootPath: String) {
        for name in mountPoints where FileStatus(path: rootPath + "/" + name, followingLinks: false) == nil {
            mkdir(rootPath + "/" + name, 0o755)
        }
        for file in ["resolv.conf", "hosts"] {
            let path = rootPath + "/etc/" + file
            if FileStatus(path: rootPath + "/etc", followingLinks: false)?.isDirectory == true,
                FileStatus(path: path, followingLinks: false) == nil
            {
                let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                if descriptor >= 0 { close(descriptor) }
            }
        }
    }
}

extension Array where Element == String {
    fileprivate subscript(safe index: Int) -> String { indices.contains(index) ? self[index] : "" }
}
