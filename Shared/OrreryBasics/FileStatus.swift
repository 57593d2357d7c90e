/// What `stat(2)` (or `lstat(2)`) says about a file, read without Foundation. (Foundation's essentials give file
/// attributes as other types than all of Foundation does; a cast that fails must never skip a check silently.)
public struct FileStatus: Sendable, Equatable {
    /// Bytes, as `RLIMIT_FSIZE` counts them.
    public var size: UInt64
    /// The permission bits (`mode & 0o7777`).
    public var permissions: Int
    public var isDirectory: Bool
    public var isRegularFile: Bool
    public var isSymbolicLink: Bool
    /// The last modification, in seconds since 1970.
    public var modifiedSince1970: Double

    /// The file at `path`; nil when it does not exist or cannot be examined. With `followingLinks` false, a link is
    /// described itself (`lstat`).
    public init?(path: String, followingLinks: Bool = true) {
        var status = stat()
        guard (followingLinks ? stat(path, &status) : lstat(path, &status)) == 0 else { return nil }
        let type = status.st_mode & S_IFMT
        size = UInt64(max(0, status.st_size))
        permissions = Int(status.st_mode & 0o7777)
        isDirectory = type == S_IFDIR
        isRegularFile = type == S_IFREG
        isSymbolicLink = type == S_IFLNK
        #if canImport(Darwin)
            modifiedSince1970 = Double(status.st_mtimespec.tv_sec) + Double(status.st_mtimespec.tv_nsec) / 1e9
        #else
            modifiedSince1970 = Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9
        #endif
    }
}
