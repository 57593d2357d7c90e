internal import NIOPosix
internal import OrreryBasics

/// An image ready to run: its pinned reference, configuration and unpacked root (read-only for its users).
public struct PulledImage: Sendable {
    /// The reference pinned to the digest that was pulled (an index's digest when the reference named one).
    public var reference: ImageReference
    /// The platform's own manifest's digest.
    public var manifestDigest: OCIDigest
    public var configuration: ImageConfiguration
    /// The root filesystem, shared by every allocation of this image on the device: never written.
    public var rootPath: String
    /// Layers downloaded for this pull (0 when every layer was stored already).
    public var downloadedLayers: Int
}

/// Pulls images into a `BlobStore` and unpacks each (by manifest digest) once into a root filesystem that every
/// allocation of it shares read-only. The manifest is fetched from the registry on every pull with the caller's
/// credentials — a stored image is never handed to someone the registry would not show it to — while layers and
/// configurations come from the store when they are there. Unpacked roots are kept while used and evicted least
/// recently used beyond their capacity; one unpacked half when the agent stopped is removed at start.
public actor ImageStore {
    public nonisolated let blobs: BlobStore
    public nonisolated let rootsDirectory: String
    /// Bytes of unpacked roots kept when no allocation uses them.
    public nonisolated let rootCapacity: Int64
    /// The most layers an image may have.
    public static let maximumLayers = 256
    /// Bounds on one image's unpacked size and file count.
    public var limits: (bytes: Int64, entries: Int) = (16 << 30, 1_000_000)

    private struct Root {
        var bytes: Int64
        var lastUsed: UInt64
        var users = 0
    }
    private var roots: [OCIDigest: Root] = [:]
    private var unpacking: [OCIDigest: Task<(Int64, Int), any Error>] = [:]
    private var clock: UInt64 = 0

    /// Called on each new root once unpacked, before it joins the store (and is never written again): the runtime's
    /// mount points, say.
    private let prepareRoot: @Sendable (String) -> Void

    public init(
        directory: String, blobCapacity: Int64, rootCapacity: Int64,
        prepareRoot: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        self.prepareRoot = prepareRoot
        blobs = try BlobStore(directory: directory, capacity: blobCapacity)
        rootsDirectory = directory + "/roots"
        self.rootCapacity = rootCapacity
        // 0711: a container root (another uid) must be able to pass through to its image's root, not list them.
        guard mkdir(rootsDirectory, 0o711) == 0 || errno == EEXIST else {
            throw OCIError.storage("cannot create \(rootsDirectory): \(systemErrorText())")
        }
        let directoryDescriptor = open(rootsDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryDescriptor >= 0 else { throw OCIError.storage("cannot open \(rootsDirectory)") }
        defer { close(directoryDescriptor) }
        for name in FileTree.names(in: directoryDescriptor) {
            // `<hex>` holds a complete root (its `size` file written last); anything else is an interrupted unpack.
            guard let digest = try? OCIDigest(parsing: "sha256:" + name),
                let size = Self.readSize(rootsDirectory + "/" + name + "/size")
            else {
                FileTree.remove(name, in: directoryDescriptor)
                continue
            }
            roots[digest] = Root(bytes: size, lastUsed: 0)
        }
    }

    /// Pulls `reference` for `platform` and returns it in use (until `release`).
    public func pull(
        _ reference: ImageReference, platform: Platform, client: RegistryClient
    ) async throws -> PulledImage {
        try await pull(reference, platforms: [platform], client: client)
    }

    /// Pulls `reference` for the first of `platforms` (in order of preference: the device's own, then those it
    /// emulates) that it offers, and returns it in use (until `release`).
    public func pull(
        _ reference: ImageReference, platforms: [Platform], client: RegistryClient
    ) async throws -> PulledImage {
        let repository = reference.repository
        var fetched = try await client.manifest(repository: repository, reference: reference.manifestReference)
        let pinned = reference.pinned(to: fetched.digest)
        let wanted = platforms.map(\.description).joined(separator: ", ")
        var platforms = platforms
        if case .index(let index) = fetched.content {
            guard
                let (platform, chosen) = platforms.lazy.compactMap({ mine in mine.choose(from: index).map { (mine, $0) }
                    }).first
            else {
                let offered = index.manifests.compactMap { $0.platform?.description }.joined(separator: ", ")
                throw OCIError.noMatchingPlatform(
                    "\(reference) offers no manifest for \(wanted) (it offers \(offered.isEmpty ? "none" : offered))")
            }
            platforms = [platform]
            fetched = try await client.manifest(repository: repository, reference: chosen.digest.description)
        }
        guard case .image(let manifest) = fetched.content else {
            throw OCIError.invalidManifest("\(reference)'s index points at another index")
        }
        guard manifest.config.mediaType == MediaType.ociConfig || manifest.config.mediaType == MediaType.dockerConfig
        else {
            throw OCIError.invalidManifest(
                "\(reference) is not a container image (its config is \(manifest.config.mediaType))")
        }
        // Docker's own bound is 127; past a few hundred a manifest is an attack on the store, not an image.
        guard manifest.layers.count <= Self.maximumLayers else {
            throw OCIError.invalidManifest(
                "\(reference) has \(manifest.layers.count) layers, more than \(Self.maximumLayers): refused")
        }
        let layers = try manifest.layers.map { layer in
            guard let compression = MediaType.layerCompression(layer.mediaType) else {
                throw OCIError.invalidManifest(
                    "\(reference) has a layer of type \(layer.mediaType), which is not supported")
            }
            return (layer, compression)
        }
        var downloaded = 0
        try await blobs.acquire(manifest.config, download: download(manifest.config, repository, client))
        defer { Task { await blobs.release(manifest.config.digest) } }
        let configurationBytes = readToEnd(path: blobs.path(of: manifest.config.digest))
        let configuration = try ImageConfiguration.decode(configurationBytes)
        guard platforms.contains(where: { configuration.os == $0.os && configuration.architecture == $0.architecture })
        else {
            throw OCIError.noMatchingPlatform(
                "\(reference) is built for \(configuration.os)/\(configuration.architecture), not \(wanted)")
        }
        guard configuration.rootfs.diffIDs.count == layers.count else {
            throw OCIError.invalidManifest(
                "\(reference) has \(layers.count) layers but its configuration names \(configuration.rootfs.diffIDs.count)"
            )
        }
        let digest = fetched.digest
        if roots[digest] == nil {
            if let running = unpacking[digest] {
                _ = try await running.value
            } else {
                let task = Task {
                    try await self.unpack(
                        digest, layers: layers, diffIDs: configuration.rootfs.diffIDs, repository: repository,
                        client: client)
                }
                unpacking[digest] = task
                defer { unpacking[digest] = nil }
                downloaded = try await task.value.1
            }
        }
        guard var root = roots[digest] else { throw OCIError.storage("the root of \(reference) left the store") }
        clock += 1
        root.users += 1
        root.lastUsed = clock
        roots[digest] = root
        // Over capacity with the new root in: the least recently used unused ones go (never one in use).
        evictRoots()
        return PulledImage(
            reference: pinned, manifestDigest: digest, configuration: configuration,
            rootPath: rootPath(digest), downloadedLayers: downloaded)
    }

    /// Ends one use of a pulled image's root.
    public func release(_ image: PulledImage) { release(image.manifestDigest) }

    /// Ends one use of the root of the manifest `digest`.
    public func release(_ digest: OCIDigest) {
        guard var root = roots[digest] else { return }
        root.users = max(0, root.users - 1)
        roots[digest] = root
        evictRoots()
    }

    /// Marks a stored root in use again (an allocation still running when the agent restarted); false when the store
    /// does not hold it.
    @discardableResult
    public func retain(_ digest: OCIDigest) -> Bool {
        guard var root = roots[digest] else { return false }
        clock += 1
        root.users += 1
        root.lastUsed = clock
        roots[digest] = root
        return true
    }

    /// The root filesystem directory of an unpacked manifest.
    public nonisolated func rootPath(_ digest: OCIDigest) -> String { rootsDirectory + "/" + digest.hex + "/rootfs" }

    /// Downloads the layers (three at a time) and unpacks them into a new root, which joins the store once complete.
    /// Returns the root's size and how many layers were downloaded.
    private func unpack(
        _ digest: OCIDigest, layers: [(Descriptor, LayerCompression)], diffIDs: [OCIDigest], repository: String,
        client: RegistryClient
    ) async throws -> (Int64, Int) {
        let blobs = self.blobs
        var downloaded = 0
        var acquired: [OCIDigest] = []
        defer {
            let held = acquired
            Task { for layer in held { await blobs.release(layer) } }
        }
        // Every download runs to its end, so that each layer acquired is released, whichever failed first.
        var failure: (any Error)?
        await withTaskGroup(of: Result<(OCIDigest, Bool), any Error>.self) { group in
            var next = 0
            func start() {
                let (layer, _) = layers[next]
                next += 1
                let fetch = download(layer, repository, client)
                group.addTask {
                    do { return .success((layer.digest, try await blobs.acquire(layer, download: fetch))) } catch {
                        return .failure(error)
                    }
                }
            }
            while next < min(3, layers.count) { start() }
            while let result = await group.next() {
                switch result {
                case .success(let (layer, fresh)):
                    acquired.append(layer)
                    if fresh { downloaded += 1 }
                    if next < layers.count, failure == nil { start() }
                case .failure(let error):
                    if failure == nil { failure = error }
                }
            }
        }
        if let failure { throw failure }
        let staging = rootsDirectory + "/" + digest.hex + ".unpacking"
        let limits = RootFilesystemWriter.Limits(bytes: self.limits.bytes, entries: self.limits.entries)
        let layerFiles = layers.enumerated().map {
            (blobs.path(of: $0.element.0.digest), $0.element.1, diffIDs[$0.offset])
        }
        let prepareRoot = self.prepareRoot
        let bytes = try await NIOThreadPool.singleton.runIfActive {
            FileTree.remove(path: staging)
            guard mkdir(staging, 0o711) == 0 else {
                throw OCIError.storage("cannot create \(staging): \(systemErrorText())")
            }
            do {
                let writer = try RootFilesystemWriter(rootPath: staging + "/rootfs", limits: limits)
                for (path, compression, diffID) in layerFiles {
                    try writer.apply(layer: path, compression: compression, diffID: diffID)
                }
                try writer.finish()
                prepareRoot(staging + "/rootfs")
                let size = writer.unpacked
                try Self.writeSize(size, to: staging + "/size")
                guard rename(staging, self.rootsDirectory + "/" + digest.hex) == 0 else {
                    throw OCIError.storage("cannot move the unpacked root into place: \(systemErrorText())")
                }
                return size
            } catch {
                FileTree.remove(path: staging)
                throw error
            }
        }
        clock += 1
        roots[digest] = Root(bytes: bytes, lastUsed: clock)
        return (bytes, downloaded)
    }

    private nonisolated func download(
        _ descriptor: Descriptor, _ repository: String, _ client: RegistryClient
    ) -> @Sendable (String) async throws -> Void {
        { partial in try await client.downloadBlob(repository: repository, descriptor, to: partial) }
    }

    private func evictRoots() {
        var total = roots.values.reduce(0) { $0 + $1.bytes }
        guard total > rootCapacity else { return }
        for (digest, root) in roots.filter({ $0.value.users == 0 }).sorted(by: { $0.value.lastUsed < $1.value.lastUsed }
        )
        where total > rootCapacity {
            FileTree.remove(path: rootsDirectory + "/" + digest.hex)
            roots[digest] = nil
            total -= root.bytes
        }
    }

    private static func readSize(_ path: String) -> Int64? {
        Int64(String(decoding: readToEnd(path: path), as: UTF8.self).trimmed())
    }

    private static func writeSize(_ size: Int64, to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw OCIError.storage("cannot write \(path): \(systemErrorText())") }
        defer { close(descriptor) }
        let bytes = Array(String(size).utf8)
        guard systemWrite(descriptor, bytes) == bytes.count, fsync(descriptor) == 0 else {
            throw OCIError.storage("cannot write \(path): \(systemErrorText())")
        }
    }
}

/// A whole file's bytes; empty when it cannot be read.
func readToEnd(path: String) -> [UInt8] {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return [] }
    defer { close(descriptor) }
    return OrreryBasics.readToEnd(descriptor)
}
