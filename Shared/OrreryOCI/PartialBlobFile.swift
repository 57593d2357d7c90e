internal import Crypto
internal import OrreryBasics

/// A blob being downloaded: a file appended to while its sha256 is computed, which survives the process (a
/// restarted agent continues it: the bytes already there are hashed again when it is opened).
final class PartialBlobFile {
    let path: String
    private var descriptor: Int32
    private var hasher = SHA256()
    private(set) var size: Int64 = 0

    /// Opens (or creates) `path`; a file longer than `expectedSize` is started again.
    init(path: String, expectedSize: Int64) throws {
        let opened = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard opened >= 0 else { throw OCIError.storage("cannot open \(path): \(systemErrorText())") }
        self.path = path
        descriptor = opened
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            size += Int64(count)
        }
        if size > expectedSize { try restart() }
    }

    /// The digest of what the file holds so far.
    var digest: OCIDigest { OCIDigest(sha256: hasher.finalize()) }

    /// Appends `bytes` to the file and the hash.
    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var written = 0
        while written < bytes.count {
            let count = write(descriptor, bytes.baseAddress.map { $0 + written }, bytes.count - written)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw OCIError.storage("cannot write \(path): \(systemErrorText())") }
            written += count
        }
        hasher.update(bufferPointer: bytes)
        size += Int64(bytes.count)
    }

    /// Empties the file (the server sent the whole blob rather than the range asked for).
    func restart() throws {
        guard ftruncate(descriptor, 0) == 0, lseek(descriptor, 0, SEEK_SET) == 0 else {
            throw OCIError.storage("cannot truncate \(path): \(systemErrorText())")
        }
        hasher = SHA256()
        size = 0
    }

    /// Flushes the bytes to the disk, so that a blob renamed into the store after this survives a power loss.
    func sync() throws {
        guard fsync(descriptor) == 0 else { throw OCIError.storage("cannot sync \(path): \(systemErrorText())") }
    }

    /// Removes the file: its bytes are not the blob.
    func discard() {
        unlink(path)
        _ = try? restart()
    }

    func close() {
        guard descriptor >= 0 else { return }
        _ = Glibc.close(descriptor)
        descriptor = -1
    }

    deinit { close() }
}
