internal import OrreryBasics

/// Whole directory trees, handled through descriptors without following links: an unpacked root can be removed
/// however hostile its contents (links out of it, directories without write permission).
enum FileTree {
    /// The names in an open directory (not `.` and `..`).
    static func names(in directory: Int32) -> [String] {
        let copy = dup(directory)
        guard copy >= 0, let handle = fdopendir(copy) else { return [] }
        defer { closedir(handle) }
        rewinddir(handle)
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes `name` in `parent`, a directory with everything in it; true when it is gone.
    @discardableResult
    static func remove(_ name: String, in parent: Int32, depth: Int = 0) -> Bool {
        var status = stat()
        guard fstatat(parent, name, &status, AT_SYMLINK_NOFOLLOW) == 0 else { return errno == ENOENT }
        if status.st_mode & S_IFMT == S_IFDIR, depth < 1024 {
            let directory = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if directory >= 0 {
                fchmod(directory, 0o700)
                for child in names(in: directory) { remove(child, in: directory, depth: depth + 1) }
                close(directory)
            }
            return unlinkat(parent, name, AT_REMOVEDIR) == 0
        }
        return unlinkat(parent, name, 0) == 0
    }

    /// Removes the tree at `path` (a directory or anything else); true when it is gone.
    @discardableResult
    static func remove(path: String) -> Bool {
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let slash = trimmed.lastIndex(of: "/") else { return remove(trimmed, in: AT_FDCWD) }
        let parentPath = slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
        let parent = open(parentPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard parent >= 0 else { return false }
        defer { close(parent) }
        return remove(String(trimmed[trimmed.index(after: slash)...]), in: parent)
    }
}
