#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
public import OrreryHTTPClient
public import OrreryOCI
public import OrreryProto

/// What the agent needs to run `EXECUTOR_OCI` allocations: the OCI runtime that works here, the image store, and
/// whom to trust for registries. It pulls an allocation's image (the digest the orchestrator pinned: a moved tag
/// never changes what a contract names), writes the allocation's bundle, and keeps the image's root in use until
/// the allocation is released — across agent restarts, by the `image` file in the allocation's directory.
public struct ImageRunner: Sendable {
    public let runtime: OCIRuntime
    public let store: ImageStore
    /// Registries' certificates: the system's roots, or a CA file the owner names (a private registry).
    public let trust: TLSTrust
    /// This device's OCI platform.
    public let platform: Platform
    /// Foreign platforms run through user-mode emulation (the owner opted in, and the kernel has their handler).
    public var emulated: [Platform] = []
    /// Every platform run here, the device's own first (an image offering it is pulled for it).
    public var platforms: [Platform] { [platform] + emulated }
    /// Where registries may be (public addresses only unless the owner allows any).
    public var addresses: AddressPolicy = .publicOnly

    public init(runtime: OCIRuntime, store: ImageStore, trust: TLSTrust, platform: Platform) {
        self.runtime = runtime
        self.store = store
        self.trust = trust
        self.platform = platform
    }

    /// Opens the image store under `stateDirectory` (`capacityMiB` for blobs, as much again for unpacked roots).
    public static func open(
        runtime: OCIRuntime, stateDirectory: String, capacityMiB: Int, trust: TLSTrust, machine: String
    ) throws -> ImageRunner {
        guard let platform = Platform.linux(machine: machine) else {
            throw RunnerError(message: "OCI has no platform name for this machine (\(machine))")
        }
        let capacity = Int64(capacityMiB) << 20
        let store = try ImageStore(
            directory: stateDirectory + "/images", blobCapacity: capacity, rootCapacity: capacity,
            prepareRoot: OCIBundle.prepareRoot)
        return ImageRunner(runtime: runtime, store: store, trust: trust, platform: platform)
    }

    /// Pulls the allocation's image and writes its bundle in `base/bundle`; returns the command that runs it.
    func prepare(
        _ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec, base: String, environment: [String: String],
        bundle template: OCIBundle, credentials: RegistryCredentials = .anonymous
    ) async throws -> [String] {
        var reference: ImageReference
        do {
            reference = try ImageReference(parsing: spec.image)
            if !spec.imageDigest.isEmpty { reference = reference.pinned(to: try OCIDigest(parsing: spec.imageDigest)) }
        } catch {
            throw RunnerError(message: "the image \(spec.image): \(error)")
        }
        var client = RegistryClient(host: reference.apiHost, trust: trust, credentials: credentials)
        client.addresses = addresses
        let image: PulledImage
        do {
            image = try await store.pull(reference, platforms: platforms, client: client)
        } catch {
            throw RunnerError(message: "the image \(reference) cannot be used: \(error)")
        }
        do {
            try Data(image.manifestDigest.description.utf8).write(to: URL(fileURLWithPath: base + "/image"))
            var bundle = template
            bundle.rootPath = image.rootPath
            let process = try OCIBundle.process(
                image: image.configuration, spec: spec, extraEnvironment: environment, rootPath: image.rootPath)
            try FileManager.default.createDirectory(atPath: base + "/bundle", withIntermediateDirectories: true)
            try bundle.write(process, to: base + "/bundle")
        } catch {
            await store.release(image)
            throw error
        }
        return runtime.runArguments(bundle: base + "/bundle", id: Self.containerID(id))
    }

    /// Pulls the image and writes the bundle of an allocation without a network, cgroup or actor (what `make bench`
    /// times: from the instruction to a started container); returns the command that runs it.
    public func prepare(
        _ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec, base: String
    ) async throws -> [String] {
        try FileManager.default.createDirectory(atPath: base + "/work", withIntermediateDirectories: true)
        chmod(base, 0o711)
        chmod(base + "/work", 0o777)
        let template = OCIBundle(
            rootPath: "", workDirectory: base + "/work", network: false,
            hostIDBase: geteuid() == 0 ? OCIBundle.defaultHostIDBase : nil)
        return try await prepare(id, spec: spec, base: base, environment: [:], bundle: template)
    }

    /// The runtime's name for an allocation's container.
    static func containerID(_ id: String) -> String { "orrery-" + id }

    /// Removes what the runtime may have left of an allocation's container (after a kill, `runc run` cannot clean up
    /// after itself, and a container of the same id could not start again).
    func removeContainer(_ id: String) async {
        _ = try? await ChildCommand.run(
            runtime.executable, ["--root", runtime.stateDirectory, "delete", "--force", Self.containerID(id)])
    }

    /// Ends an allocation's use of its image and removes what the runtime may have left of its container.
    func release(_ id: String, base: String) async {
        await removeContainer(id)
        guard let text = try? String(contentsOfFile: base + "/image", encoding: .utf8),
            let digest = try? OCIDigest(parsing: text.trimmed())
        else { return }
        try? FileManager.default.removeItem(atPath: base + "/image")
        await store.release(digest)
    }

    /// Marks the images of allocations still running (found after a restart) in use again.
    func retain(running bases: [String]) async {
        for base in bases {
            guard let text = try? String(contentsOfFile: base + "/image", encoding: .utf8),
                let digest = try? OCIDigest(parsing: text.trimmed())
            else { continue }
            await store.retain(digest)
        }
    }
}
