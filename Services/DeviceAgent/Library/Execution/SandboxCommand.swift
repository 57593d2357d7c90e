#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// The bubblewrap command line that runs an allocation isolated: new user, PID, mount, IPC, UTS, cgroup and network
/// namespaces (always: a sandbox that asks for the network gets an outbound-only one, `SandboxNetwork`); the host's
/// /usr read-only and a few /etc files programs need; a fresh /proc, /dev and /tmp; the allocation's own work
/// directory at /work; the environment from the spec only. Nothing else of the host — its processes, homes, /var,
/// its loopback, the agent's state — is visible.
public struct SandboxCommand: Sendable {
    public var workDirectory: String
    public var artifactDirectory: String
    public var network: Bool
    public var environment: [String: String]
    public var command: [String]
    /// GPU device nodes passed through (an allocation that asked for GPUs gets the host's NVIDIA devices).
    public var devices: [String] = []
    /// The actor's directory (its mailbox socket and checkpoint directory), mounted read-write at /orrery.
    public var actorDirectory: String?
    /// The directory of the actor's mailbox socket, mounted at /orrery/mailbox.
    public var mailboxDirectory: String?
    /// The allocation's input files, mounted read-only at /inputs.
    public var inputsDirectory: String?
    public var bubblewrap = "/usr/bin/bwrap"
    /// With `network`: the resolv.conf to bind (naming the sandbox network's resolver).
    public var resolvConf: String?
    /// The ensemble's names (its partners' loopback addresses), bound at /etc/hosts instead of the host's.
    public var hostsFile: String?

    /// /etc entries a program commonly needs; the rest of /etc stays hidden.
    static let etcEntries = [
        "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
        "/etc/ssl", "/etc/ca-certificates", "/etc/nsswitch.conf",
    ]

    public init(
        workDirectory: String, artifactDirectory: String, network: Bool, environment: [String: String],
        command: [String]
    ) {
        self.workDirectory = workDirectory
        self.artifactDirectory = artifactDirectory
        self.network = network
        self.environment = environment
        self.command = command
    }

    public var arguments: [String] {
        var arguments = [bubblewrap, "--unshare-all"]
        // With the network, bubblewrap starts inside a network namespace of the sandbox's own (`SandboxNetwork`),
        // which it keeps: not the host's.
        if network { arguments += ["--share-net"] }
        // Started by root, the workload still runs as nobody in its own user namespace, with no capability.
        if geteuid() == 0 { arguments += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"] }
        arguments += ["--die-with-parent", "--new-session", "--hostname", "orrery", "--ro-bind", "/usr", "/usr"]
        // Debian merges /bin, /lib… into /usr: recreate the links; bind real directories elsewhere.
        for top in ["bin", "sbin", "lib", "lib64", "lib32"] {
            let path = "/" + top
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
                arguments += ["--symlink", target, path]
            } else if FileManager.default.fileExists(atPath: path) {
                arguments += ["--ro-bind", path, path]
            }
        }
        for entry in Self.etcEntries { arguments += ["--ro-bind-try", entry, entry] }
        if network {
            arguments += ["--ro-bind-try", resolvConf ?? "/etc/resolv.conf", "/etc/resolv.conf"]
        }
        if let hostsFile {
            arguments += ["--ro-bind", hostsFile, "/etc/hosts"]
        } else if network {
            arguments += ["--ro-bind-try", "/etc/hosts", "/etc/hosts"]
        }
        arguments += [
            "--proc", "/proc", "--dev", "/dev",
        ]
        for device in devices { arguments += ["--dev-bind", device, device] }
        arguments += [
            "--tmpfs", "/tmp",
            "--bind", workDirectory, "/work", "--ro-bind", artifactDirectory, "/artifact",
        ]
        if let inputsDirectory { arguments += ["--ro-bind", inputsDirectory, "/inputs"] }
        if let actorDirectory { arguments += ["--bind", actorDirectory, "/orrery"] }
        if let mailboxDirectory { arguments += ["--bind", mailboxDirectory, "/orrery/mailbox"] }
        arguments += [
            "--chdir", "/work",
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/work",
            "--setenv", "TMPDIR", "/tmp",
        ]
        for (key, value) in environment.sorted(by: { $0.key < $1.key }) { arguments += ["--setenv", key, value] }
        return arguments + ["--"] + command
    }
}

/// The host's NVIDIA device nodes (`/dev/nvidia0`, `/dev/nvidiactl`, `/dev/nvidia-uvm`, …); none without a GPU.
func nvidiaDevices(in directory: String = "/dev") -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasPrefix("nvidia") }.sorted()
        .map { "\(directory)/\($0)" }
}

/// Quotes a word for /bin/sh.
func shellQuoted(_ word: String) -> String {
    "'" + word.replacing("'", with: "'\\''") + "'"
}
