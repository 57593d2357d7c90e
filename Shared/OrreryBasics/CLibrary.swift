// The C library, for targets that use Foundation's essentials (which, unlike all of Foundation, do not re-export
// it): files, descriptors, processes, errno.
#if canImport(Glibc)
    @_exported public import Glibc
#elseif canImport(Musl)
    @_exported public import Musl
#elseif canImport(Darwin)
    @_exported public import Darwin
#endif

/// The C library's text for an `errno` value, e.g. "No such file or directory".
public func systemErrorText(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}

/// `printf`-style formatting through the C library (`vsnprintf`), for the few places that need its exact output,
/// e.g. every digit of a large double (`%.0f`) or a zero-padded hex code (`%04x`).
public func cFormat(_ format: String, _ arguments: any CVarArg...) -> String {
    withVaList(arguments) { list in
        var buffer = [CChar](repeating: 0, count: 512)
        let needed = buffer.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress, $0.count, format, list) }
        guard needed >= 0 else { return "" }
        if Int(needed) < buffer.count {
            return String(decoding: buffer.prefix(Int(needed)).map(UInt8.init(bitPattern:)), as: UTF8.self)
        }
        return withVaList(arguments) { again in
            var large = [CChar](repeating: 0, count: Int(needed) + 1)
            _ = large.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress, $0.count, format, again) }
            return String(decoding: large.prefix(Int(needed)).map(UInt8.init(bitPattern:)), as: UTF8.self)
        }
    }
}

/// `write(2)` of `bytes` to `descriptor`: the count written, or -1 (see `errno`). A free function under another name,
/// for types that have a `write` of their own.
public func systemWrite(_ descriptor: Int32, _ bytes: [UInt8]) -> Int {
    bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
}

/// A system call failed: which, on what, and the C library's reason.
public struct SystemCallError: Error, CustomStringConvertible {
    public let operation: String
    public let path: String
    public let code: Int32

    public init(_ operation: String, path: String, code: Int32 = errno) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    public var description: String { "\(operation) \(path): \(systemErrorText(code))" }
}

/// A file opened for appending (created with `permissions` when missing), closed when the last reference goes.
public final class AppendOnlyFile {
    public let path: String
    private let descriptor: Int32

    public init(path: String, permissions: mode_t = 0o600) throws {
        let opened = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, permissions)
        guard opened >= 0 else { throw SystemCallError("open", path: path) }
        self.path = path
        descriptor = opened
    }

    /// Appends all of `bytes` (retrying short writes).
    public func append(_ bytes: [UInt8]) throws {
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw SystemCallError("write", path: path) }
            written += count
        }
    }

    deinit { close(descriptor) }
}

/// Everything `descriptor` gives until its end (or an error other than EINTR).
public func readToEnd(_ descriptor: Int32) -> [UInt8] {
    var collected: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 << 10)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { return collected }
        collected += buffer[0..<count]
    }
}
