internal import OrreryBasics

/// The agent's content-addressed blob store: each layer or configuration once on disk however many images share
/// it (`blobs/sha256/<hex>`, read-only), downloads in progress beside it (`incoming/`, continued after a restart),
/// concurrent requests for one blob coalesced into one download, and a size bound kept by evicting the least
/// recently used blobs — never one in use. What it holds survives agent restarts; recency is the files' mtime.
public actor BlobStore {
    public nonisolated let directory: String
    /// The most bytes of blobs kept; a blob in use is never evicted, so the store can exceed it while many are.
    public nonisolated let capacity: Int64

    private struct Entry {
        var size: Int64
        var lastUsed: Double
        var users = 0
    }
    private var entries: [OCIDigest: Entry] = [:]
    private var downloads: [OCIDigest: Task<Void, any Error>] = [:]

    /// Bytes held.
    public var size: Int64 { entries.values.reduce(0) { $0 + $1.size } }

    /// Opens (creating) the store at `directory`, reading what it holds.
    public init(directory: String, capacity: Int64) throws {
        self.directory = directory
        self.capacity = capacity
        // The store's own directory may be passed through (0711: an image store keeps its roots beside the blobs);
        // the blobs are the agent's alone.
        for (path, mode) in [
            (directory, mode_t(0o711)), (directory + "/blobs", 0o700), (directory + "/blobs/sha256", 0o700),
            (directory + "/incoming", 0o700),
        ] {
            guard mkdir(path, mode) == 0 || errno == EEXIST else {
                throw OCIError.storage("cannot create \(path): \(systemErrorText())")
            }
        }
        let blobs = open(directory + "/blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { if blobs >= 0 { close(blobs) } }
        for name in blobs >= 0 ? FileTree.names(in: blobs) : [] {
            let path = directory + "/blobs/sha256/" + name
            guard let digest = try? OCIDigest(parsing: "sha256:" + name),
                let status = FileStatus(path: path, followingLinks: false), status.isRegularFile
            else {
                unlink(path)
                continue
            }
            entries[digest] = Entry(size: Int64(status.size), lastUsed: status.modifiedSince1970)
        }
    }

    /// Where a stored blob is.
    public nonisolated func path(of digest: OCIDigest) -> String { directory + "/blobs/sha256/" + digest.hex }

    public func contains(_ digest: OCIDigest) -> Bool { entries[digest] != nil }

    /// Makes sure the blob `descriptor` names is stored and marks it in use until `release`: a stored blob is used as
    /// it is; otherwise `download` fills a partial file (given its path; it must leave exactly the verified blob
    /// there), which then joins the store. Callers asking for a blob already being downloaded wait for that one
    /// download. A descriptor's size may be an upper bound when the exact size is not known.
    /// - Returns: whether the blob was downloaded for this call (false: it was stored, or another call fetched it).
    @discardableResult
    public func acquire(
        _ descriptor: Descriptor, download: @escaping @Sendable (_ partialPath: String) async throws -> Void
    ) async throws -> Bool {
        let digest = descriptor.digest
        if entries[digest] != nil {
            use(digest)
            return false
        }
        guard descriptor.size <= capacity else {
            throw OCIError.storage(
                "the blob \(digest) is \(descriptor.size) bytes, more than the store's capacity of \(capacity)")
        }
        if let running = downloads[digest] {
            try await running.value
            guard entries[digest] != nil else { throw OCIError.storage("the blob \(digest) left the store") }
            use(digest)
            return false
        }
        let partial = directory + "/incoming/" + digest.hex
        let final = path(of: digest)
        let task = Task {
            try await download(partial)
            guard chmod(partial, 0o444) == 0, rename(partial, final) == 0 else {
                throw OCIError.storage("cannot move \(partial) into the store: \(systemErrorText())")
            }
            // Registered here, on the store's actor, before any waiter resumes, with the size on disk (a blob whose
            // size was not known beforehand — an input — has a bound as its descriptor's size).
            let size = FileStatus(path: final, followingLinks: false).map { Int64($0.size) } ?? descriptor.size
            self.entries[digest] = Entry(size: size, lastUsed: Self.now())
        }
        downloads[digest] = task
        defer { downloads[digest] = nil }
        try await task.value
        use(digest)
        evict()
        return true
    }

    /// Marks a stored blob in use again (held by an allocation found running after a restart); false when it is not
    /// stored.
    @discardableResult
    public func retain(_ digest: OCIDigest) -> Bool {
        guard entries[digest] != nil else { return false }
        use(digest)
        return true
    }

    /// Ends one use of a blob acquired before.
    public func release(_ digest: OCIDigest) {
        guard var entry = entries[digest] else { return }
        entry.users = max(0, entry.users - 1)
        entries[digest] = entry
        evict()
    }

    private func use(_ digest: OCIDigest) {
        guard var entry = entries[digest] else { return }
        entry.users += 1
        entry.lastUsed = Self.now()
        entries[digest] = entry
        // The mtime is the recency a restarted agent reads back.
        // UTIME_NOW (a C macro Swift does not import): "set this time to now".
        let utimeNow = (1 << 30) - 1
        var times = [timespec(tv_sec: 0, tv_nsec: utimeNow), timespec(tv_sec: 0, tv_nsec: utimeNow)]
        _ = utimensat(AT_FDCWD, path(of: digest), &times, AT_SYMLINK_NOFOLLOW)
    }

    /// Removes least recently used blobs nobody uses until the store is within its capacity.
    private func evict() {
        var total = size
        guard total > capacity else { return }
        let idle = entries.filter { $0.value.users == 0 }.sorted { $0.value.lastUsed < $1.value.lastUsed }
        for (digest, entry) in idle where total > capacity {
            unlink(path(of: digest))
            entries[digest] = nil
            total -= entry.size
        }
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
