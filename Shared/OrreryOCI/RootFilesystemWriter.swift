internal import OrreryBasics

/// Unpacks image layers, in order, into one root directory, treating every layer as hostile:
/// - a member's path is taken relative to the root; a path with `..` is refused;
/// - parent directories are resolved inside the root (a link in the path is followed as the container will see
///   it, absolute links from the root), and a path that climbs out of the root through a link is refused;
/// - the last component is never written through: an existing file, link or directory there is replaced;
/// - links are kept as written; a hard link must name a file already inside the root;
/// - OCI whiteouts (`.wh.NAME`) and opaque directories (`.wh..wh..opq`) hide what lower layers put there;
/// - device nodes are dropped, setuid and setgid bits cleared, extended attributes (file capabilities among them)
///   not applied, owners not applied (the sandbox's user namespace maps its root to the agent's user);
/// - the uncompressed stream is bounded (a decompression bomb is refused) and hashed against the layer's diff ID.
/// Every file operation goes through a directory descriptor opened without following links.
final class RootFilesystemWriter {
    struct Limits: Sendable {
        /// Uncompressed bytes over all layers.
        var bytes: Int64
        /// Members over all layers.
        var entries: Int
        static let maximumDepth = 256
        static let maximumLinkHops = 40
    }

    let rootPath: String
    private let root: Int32
    private var limits: Limits
    private var entryCount = 0
    private var unpackedBytes: Int64 = 0
    /// Uncompressed bytes of the layers applied so far.
    var unpacked: Int64 { unpackedBytes }
    /// Device nodes left out.
    private(set) var droppedDevices = 0
    /// The mode each directory gets once every layer is in (they are 0700 meanwhile, so that a read-only
    /// directory of a lower layer can still be written into), by resolved path.
    private var directoryModes: [String: UInt32] = ["": 0o755]

    /// Creates the root directory at `rootPath` (which must not exist).
    init(rootPath: String, limits: Limits) throws {
        guard mkdir(rootPath, 0o700) == 0 else {
            throw OCIError.storage("cannot create \(rootPath): \(systemErrorText())")
        }
        let opened = open(rootPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard opened >= 0 else { throw OCIError.storage("cannot open \(rootPath): \(systemErrorText())") }
        self.rootPath = rootPath
        root = opened
        self.limits = limits
    }

    deinit { close(root) }

    /// Applies one layer from its blob, checking its uncompressed digest against `diffID`.
    func apply(layer path: String, compression: LayerCompression, diffID: OCIDigest) throws {
        let file = try FileSource(path: path)
        let decompressed: any ByteSource =
            switch compression {
            case .uncompressed: file
            case .gzip: try GzipSource(file)
            case .zstd: try ZstdSource(file)
            }
        let metered = MeteredSource(decompressed, limit: limits.bytes - unpackedBytes)
        let tar = TarReader(metered)
        var createdInLayer: Set<String> = []
        while let entry = try tar.next() {
            entryCount += 1
            guard entryCount <= limits.entries else {
                throw OCIError.unsafeLayer("the image has more than \(limits.entries) files: refused")
            }
            try apply(entry, from: tar, createdInLayer: &createdInLayer)
        }
        try metered.drain()
        unpackedBytes += metered.count
        guard metered.digest == diffID else {
            throw OCIError.digestMismatch(
                "the layer \(path.split(separator: "/").last ?? "") unpacks to \(metered.digest), its image says \(diffID): refused"
            )
        }
    }

    /// Gives every directory its mode from the image (0755 for those the layers did not list).
    func finish() throws {
        for (path, mode) in directoryModes.sorted(by: { $0.key.count > $1.key.count }) {
            let components = path.split(separator: "/").map(String.init)
            guard let descriptor = try? openDirectory(components) else { continue }
            fchmod(descriptor, mode_t(mode))
            close(descriptor)
        }
    }

    private func apply(_ entry: TarEntry, from tar: TarReader, createdInLayer: inout Set<String>) throws {
        let components = try Self.components(of: entry.path)
        guard let name = components.last else {
            if entry.kind == .directory { directoryModes[""] = Self.safeMode(entry.mode) }
            return
        }
        let parentComponents = Array(components.dropLast())
        if name.hasPrefix(".wh.") {
            if name == ".wh..wh..opq" {
                try clearDirectory(parentComponents, keeping: createdInLayer)
            } else if !name.hasPrefix(".wh..wh.") {
                let hidden = String(name.dropFirst(4))
                if !createdInLayer.contains((parentComponents + [hidden]).joined(separator: "/")),
                    let (parent, _) = try resolve(parentComponents, creating: false)
                {
                    defer { close(parent) }
                    try removeIfPresent(parent, hidden)
                }
            }
            return
        }
        createdInLayer.insert(components.joined(separator: "/"))
        if entry.kind == .characterDevice || entry.kind == .blockDevice {
            droppedDevices += 1
            return
        }
        guard let (parent, resolvedParent) = try resolve(parentComponents, creating: true) else { return }
        defer { close(parent) }
        let resolvedPath = (resolvedParent + [name]).joined(separator: "/")
        var existing = stat()
        let exists = fstatat(parent, name, &existing, AT_SYMLINK_NOFOLLOW) == 0
        switch entry.kind {
        case .directory:
            if exists, existing.st_mode & S_IFMT != S_IFDIR { try remove(parent, name) }
            if !exists || existing.st_mode & S_IFMT != S_IFDIR {
                guard mkdirat(parent, name, 0o700) == 0 else { throw failure("mkdir", entry.path) }
            }
            directoryModes[resolvedPath] = Self.safeMode(entry.mode)
        case .file:
            if exists { try remove(parent, name) }
            let descriptor = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else { throw failure("create", entry.path) }
            defer { close(descriptor) }
            var buffer = [UInt8](repeating: 0, count: 256 << 10)
            while true {
                let count = try buffer.withUnsafeMutableBytes { try tar.readData(into: $0) }
                guard count > 0 else { break }
                try buffer.withUnsafeBytes {
                    try writeAll(descriptor, UnsafeRawBufferPointer(rebasing: $0[0..<count]), entry.path)
                }
            }
            fchmod(descriptor, mode_t(Self.safeMode(entry.mode)))
            var times = [
                timespec(tv_sec: Int(entry.modified), tv_nsec: 0), timespec(tv_sec: Int(entry.modified), tv_nsec: 0),
            ]
            futimens(descriptor, &times)
        case .symbolicLink:
            guard !entry.linkTarget.isEmpty, entry.linkTarget.utf8.count <= 4096 else {
                throw OCIError.unsafeLayer("the link \(entry.path) has an empty or overlong target")
            }
            if exists { try remove(parent, name) }
            guard symlinkat(entry.linkTarget, parent, name) == 0 else { throw failure("symlink", entry.path) }
        case .hardLink:
            let targetComponents = try Self.components(of: entry.linkTarget)
            guard let targetName = targetComponents.last,
                let (targetParent, _) = try resolve(Array(targetComponents.dropLast()), creating: false)
            else {
                throw OCIError.unsafeLayer(
                    "the hard link \(entry.path) names \(entry.linkTarget), which is not in the image")
            }
            defer { close(targetParent) }
            var target = stat()
            guard fstatat(targetParent, targetName, &target, AT_SYMLINK_NOFOLLOW) == 0,
                target.st_mode & S_IFMT != S_IFDIR
            else {
                throw OCIError.unsafeLayer(
                    "the hard link \(entry.path) names \(entry.linkTarget), which is not a file in the image")
            }
            if exists {
                if existing.st_ino == target.st_ino, existing.st_dev == target.st_dev { return }
                try remove(parent, name)
            }
            guard linkat(targetParent, targetName, parent, name, 0) == 0 else { throw failure("link", entry.path) }
        case .fifo:
            if exists { try remove(parent, name) }
            guard mkfifoat(parent, name, mode_t(entry.mode & 0o777)) == 0 else { throw failure("mkfifo", entry.path) }
        case .characterDevice, .blockDevice:
            break
        }
    }

    /// A member's path as components; `.` dropped, `..` refused, depth bounded.
    static func components(of path: String) throws -> [String] {
        let components = path.split(separator: "/").filter { $0 != "." }.map(String.init)
        guard !components.contains("..") else {
            throw OCIError.unsafeLayer("the member \(path.prefix(200)) climbs out of the root with '..': refused")
        }
        guard components.count <= Limits.maximumDepth, path.utf8.count <= 4096 else {
            throw OCIError.unsafeLayer("the member \(path.prefix(200))… is nested too deep: refused")
        }
        return components
    }

    /// Permission bits without setuid and setgid.
    static func safeMode(_ mode: UInt32) -> UInt32 { mode & 0o1777 }

    /// Opens the directory `components` names, following links inside the root, creating missing directories when
    /// asked. Returns the descriptor and the path it resolved to (no links in it); nil when it does not exist and
    /// `creating` is false.
    /// - Throws: `OCIError.unsafeLayer` when a link leads out of the root, or a component is not a directory.
    private func resolve(_ components: [String], creating: Bool) throws -> (Int32, [String])? {
        var pending = components[...]
        var resolved: [String] = []
        var current = dup(root)
        var hops = 0
        while let component = pending.popFirst() {
            if component == "." || component.isEmpty { continue }
            if component == ".." {
                guard !resolved.isEmpty else {
                    close(current)
                    throw OCIError.unsafeLayer(
                        "\(components.joined(separator: "/")) leads out of the image's root through a link: refused")
                }
                resolved.removeLast()
                close(current)
                current = try openDirectory(resolved)
                continue
            }
            var status = stat()
            if fstatat(current, component, &status, AT_SYMLINK_NOFOLLOW) != 0 {
                guard errno == ENOENT, creating else {
                    close(current)
                    return nil
                }
                guard mkdirat(current, component, 0o700) == 0 else {
                    close(current)
                    throw failure("mkdir", (resolved + [component]).joined(separator: "/"))
                }
                directoryModes[(resolved + [component]).joined(separator: "/")] = 0o755
            } else if status.st_mode & S_IFMT == S_IFLNK {
                hops += 1
                guard hops <= Limits.maximumLinkHops else {
                    close(current)
                    throw OCIError.unsafeLayer("\(components.joined(separator: "/")) passes through too many links")
                }
                let target = try readLink(current, component)
                let targetComponents = target.split(separator: "/").map(String.init)
                pending = (targetComponents + pending)[...]
                if target.hasPrefix("/") {
                    resolved = []
                    close(current)
                    current = dup(root)
                }
                continue
            } else if status.st_mode & S_IFMT != S_IFDIR {
                close(current)
                throw OCIError.unsafeLayer(
                    "\((resolved + [component]).joined(separator: "/")) is not a directory, yet a member is inside it")
            }
            let next = openat(current, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            close(current)
            guard next >= 0 else { throw failure("open", (resolved + [component]).joined(separator: "/")) }
            current = next
            resolved.append(component)
        }
        return (current, resolved)
    }

    /// Opens a directory by a resolved path, refusing any link on the way.
    private func openDirectory(_ components: [String]) throws -> Int32 {
        var current = dup(root)
        for component in components {
            let next = openat(current, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            close(current)
            guard next >= 0 else { throw failure("open", components.joined(separator: "/")) }
            current = next
        }
        return current
    }

    private func readLink(_ directory: Int32, _ name: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = buffer.withUnsafeMutableBufferPointer { pointer -> Int in
            guard let base = pointer.baseAddress else { return -1 }
            return readlinkat(directory, name, base, 4096)
        }
        guard count >= 0 else { throw failure("readlink", name) }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes everything in a directory that this layer did not put there itself.
    private func clearDirectory(_ components: [String], keeping: Set<String>) throws {
        guard let (directory, _) = try resolve(components, creating: true) else { return }
        defer { close(directory) }
        let prefix = components.isEmpty ? "" : components.joined(separator: "/") + "/"
        for name in FileTree.names(in: directory) where !keeping.contains(prefix + name) {
            try remove(directory, name)
        }
    }

    private func removeIfPresent(_ parent: Int32, _ name: String) throws {
        var status = stat()
        guard fstatat(parent, name, &status, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        try remove(parent, name)
    }

    private func remove(_ parent: Int32, _ name: String) throws {
        guard FileTree.remove(name, in: parent) else { throw failure("remove", name) }
    }

    private func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, _ path: String) throws {
        var written = 0
        while written < bytes.count {
            let count = write(descriptor, bytes.baseAddress.map { $0 + written }, bytes.count - written)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw failure("write", path) }
            written += count
        }
    }

    private func failure(_ operation: String, _ path: String) -> OCIError {
        .storage("cannot \(operation) \(path) in the image's root: \(systemErrorText())")
    }
}
