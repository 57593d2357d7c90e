#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// The OCI runtime (runc or crun) this host runs images with, found at start by running a real container with it:
/// `crun` 1.8 installs but refuses a hybrid cgroup v1 layout, so being installed proves nothing.
public struct OCIRuntime: Sendable, Equatable {
    /// `runc` or `crun`.
    public var name: String
    public var executable: String
    /// The runtime's state directory (`--root`): the agent's own, so that containers of two agents never meet.
    public var stateDirectory: String

    /// Which runtime to use: the first that works (`auto`), a named one, or none (`off`).
    public enum Preference: String, Sendable, CaseIterable {
        case auto, runc, crun, off
    }

    /// The command that runs the bundle in `bundle` as container `id` in the foreground (its exit status the
    /// workload's).
    func runArguments(bundle: String, id: String) -> [String] {
        [executable, "--root", stateDirectory, "run", "--bundle", bundle, "--no-new-keyring", id]
    }

    /// Finds a runtime that runs a container here: each candidate is tried on a bundle whose root binds the host's
    /// /usr and runs `true` under the same namespaces, mappings, limits and filter images get.
    /// - Returns: the runtime, or nil with the reason each candidate failed (for the log and `--help`-level errors).
    public static func detect(
        _ preference: Preference, stateDirectory: String, cgroups: ControlGroup.Version?
    ) async -> (runtime: OCIRuntime?, failures: [String]) {
        let candidates: [String] =
            switch preference {
            case .off: []
            case .auto: ["runc", "crun"]
            case .runc: ["runc"]
            case .crun: ["crun"]
            }
        var failures: [String] = []
        for name in candidates {
            guard
                let executable = ["/usr/sbin/", "/usr/bin/", "/usr/local/sbin/", "/usr/local/bin/", "/sbin/", "/bin/"]
                    .map({ $0 + name }).first(where: { FileManager.default.isExecutableFile(atPath: $0) })
            else {
                failures.append("\(name): not installed")
                continue
            }
            let runtime = OCIRuntime(name: name, executable: executable, stateDirectory: stateDirectory + "/" + name)
            if let failure = await runtime.probe(cgroups: cgroups) {
                failures.append("\(name): \(failure)")
            } else {
                return (runtime, failures)
            }
        }
        return (nil, failures)
    }

    /// Runs `true` in a throwaway container; nil when it worked, else why not.
    func probe(cgroups: ControlGroup.Version?) async -> String? {
        let id = "orrery-probe-\(getpid())"
        let base = stateDirectory + "-probe"
        try? FileManager.default.removeItem(atPath: base)
        defer { try? FileManager.default.removeItem(atPath: base) }
        do {
            try FileManager.default.createDirectory(atPath: base + "/rootfs/usr", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: base + "/work", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
            chmod(base, 0o711)
            chmod(base + "/work", 0o777)
            for top in ["bin", "sbin", "lib", "lib64"] {
                if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/" + top) {
                    try FileManager.default.createSymbolicLink(
                        atPath: base + "/rootfs/" + top, withDestinationPath: target)
                }
            }
            OCIBundle.prepareRoot(base + "/rootfs")
            var group: ControlGroup?
            if let cgroups {
                group = try ControlGroup.create(
                    name: id, limits: ResourceLimits(memoryBytes: 64 << 20, cpus: 1, pids: 64), version: cgroups)
            }
            defer {
                group?.killAll()
                group?.remove()
            }
            var bundle = OCIBundle(
                rootPath: base + "/rootfs", workDirectory: base + "/work", network: false,
                cgroupsPath: cgroups.map { _ in "/orrery/\(id)/oci" },
                hostIDBase: geteuid() == 0 ? OCIBundle.defaultHostIDBase : nil)
            bundle.extraMounts = [.init(destination: "/usr", type: "none", source: "/usr", options: ["rbind", "ro"])]
            try bundle.write(
                .init(args: ["/usr/bin/true"], env: ["PATH=/usr/bin"], cwd: "/", uid: 0, gid: 0, additionalGids: []),
                to: base)
            let outcome = try await ChildCommand.run(
                "/usr/bin/timeout", ["60"] + runArguments(bundle: base, id: id))
            if outcome.status == 0 { return nil }
            let text = (outcome.errorText.isEmpty ? String(decoding: outcome.output, as: UTF8.self) : outcome.errorText)
            return "a test container failed (exit \(outcome.status)): \(text.trimmed().prefix(400))"
        } catch {
            return "a test container could not be prepared: \(error)"
        }
    }
}
