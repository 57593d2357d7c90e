internal import CZlib
internal import CZstd
internal import Crypto
internal import OrreryBasics

/// Bytes read in order, a buffer at a time: a file, a decompressor over another source, a hash beside one.
protocol ByteSource: AnyObject {
    /// Fills the start of `buffer`; returns how many bytes, 0 at the end.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A file read from its start.
final class FileSource: ByteSource {
    private let descriptor: Int32
    let path: String

    init(path: String) throws {
        let opened = open(path, O_RDONLY | O_CLOEXEC)
        guard opened >= 0 else { throw OCIError.storage("cannot open \(path): \(systemErrorText())") }
        descriptor = opened
        self.path = path
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let count = Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw OCIError.storage("cannot read \(path): \(systemErrorText())") }
            return count
        }
    }

    deinit { close(descriptor) }
}

/// Counts and hashes the bytes passing through, and refuses more than a limit: the uncompressed layer's digest is
/// its diff ID, and a layer that inflates past the limit is a decompression bomb.
final class MeteredSource: ByteSource {
    private let inner: any ByteSource
    private var hasher = SHA256()
    private(set) var count: Int64 = 0
    let limit: Int64

    init(_ inner: any ByteSource, limit: Int64) {
        self.inner = inner
        self.limit = limit
    }

    var digest: OCIDigest { OCIDigest(sha256: hasher.finalize()) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let produced = try inner.read(into: buffer)
        count += Int64(produced)
        guard count <= limit else {
            throw OCIError.unsafeLayer("the layer unpacks to more than \(limit) bytes: refused as a decompression bomb")
        }
        hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<produced]))
        return produced
    }

    /// Reads (and hashes) what is left: tar archives end with padding a reader need not look at.
    func drain() throws {
        var scratch = [UInt8](repeating: 0, count: 64 << 10)
        while try scratch.withUnsafeMutableBytes({ try read(into: $0) }) > 0 {}
    }
}

/// gzip (RFC 1952), members one after another as `gzip` concatenates them.
final class GzipSource: ByteSource {
    private let inner: any ByteSource
    private var stream = z_stream()
    private var input = [UInt8](repeating: 0, count: 128 << 10)
    private var inputStart = 0
    private var inputEnd = 0
    private var finished = false
    /// Inside a member: input ending now means the layer is truncated.
    private var memberOpen = false

    init(_ inner: any ByteSource) throws {
        self.inner = inner
        // windowBits 15 + 16: a gzip wrapper.
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw OCIError.storage("zlib is unavailable")
        }
    }

    deinit { inflateEnd(&stream) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while !finished {
            if inputStart == inputEnd {
                inputEnd = try input.withUnsafeMutableBytes { try inner.read(into: $0) }
                inputStart = 0
                if inputEnd == 0 {
                    guard !memberOpen else { throw OCIError.unsafeLayer("the gzip layer is truncated") }
                    finished = true
                    break
                }
            }
            memberOpen = true
            let (produced, status, consumed) = input.withUnsafeMutableBytes { inputBuffer in
                let start = inputBuffer.baseAddress.map { $0 + inputStart }?.assumingMemoryBound(to: Bytef.self)
                stream.next_in = start
                stream.avail_in = uInt(inputEnd - inputStart)
                stream.next_out = buffer.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(buffer.count)
                let status = inflate(&stream, Z_NO_FLUSH)
                return (buffer.count - Int(stream.avail_out), status, (inputEnd - inputStart) - Int(stream.avail_in))
            }
            inputStart += consumed
            switch status {
            case Z_STREAM_END:
                // Another member may follow.
                inflateReset(&stream)
                memberOpen = false
            case Z_OK, Z_BUF_ERROR:
                break
            default:
                throw OCIError.unsafeLayer("the layer is not valid gzip (zlib status \(status))")
            }
            if produced > 0 { return produced }
        }
        return 0
    }
}

/// zstd frames (RFC 8878), one after another.
final class ZstdSource: ByteSource {
    private let inner: any ByteSource
    private let context: OpaquePointer
    private var input = [UInt8](repeating: 0, count: 128 << 10)
    private var inputStart = 0
    private var inputEnd = 0
    private var frameOpen = false

    init(_ inner: any ByteSource) throws {
        self.inner = inner
        guard let context = ZSTD_createDCtx() else { throw OCIError.storage("zstd is unavailable") }
        self.context = context
        // Frames that need more than 128 MiB of window are refused rather than allocated (zstd's default bound).
        ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, 27)
    }

    deinit { ZSTD_freeDCtx(context) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            if inputStart == inputEnd {
                inputEnd = try input.withUnsafeMutableBytes { try inner.read(into: $0) }
                inputStart = 0
                if inputEnd == 0 {
                    guard !frameOpen else { throw OCIError.unsafeLayer("the zstd layer is truncated") }
                    return 0
                }
            }
            let (produced, hint, consumed) = input.withUnsafeMutableBytes { inputBuffer in
                var source = ZSTD_inBuffer(
                    src: inputBuffer.baseAddress.map { UnsafeRawPointer($0) }, size: inputEnd, pos: inputStart)
                var destination = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
                let hint = ZSTD_decompressStream(context, &destination, &source)
                return (destination.pos, hint, source.pos - inputStart)
            }
            if ZSTD_isError(hint) != 0 {
                let name = String(cString: ZSTD_getErrorName(hint))
                throw OCIError.unsafeLayer("the layer is not valid zstd (\(name))")
            }
            inputStart += consumed
            // 0: a frame ended here; anything else: it goes on.
            frameOpen = hint != 0
            if produced > 0 { return produced }
        }
    }
}
