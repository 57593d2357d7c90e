internal import CZlib
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// Inflates a gzip archive (RFC 1952) into a file, refusing to write more than a limit: a checkpoint that a
/// malicious or broken host packed as a "gzip bomb" is refused before it fills the disk.
enum BoundedGunzip {
    struct Refused: Error, CustomStringConvertible {
        let description: String
    }

    /// Writes the inflated `archive` to `destination` (created or truncated); at most `limit` bytes.
    /// - Throws: `Refused` when it inflates past `limit`, is not gzip or is truncated (the file is removed then).
    static func inflate(_ archive: Data, to destination: String, limit: Int) throws {
        var given = false
        try inflate(
            reading: {
                defer { given = true }
                return given ? nil : [UInt8](archive)
            }, to: destination, limit: limit)
    }

    /// Inflates the gzip file `source` into `destination`, reading and writing a piece at a time; at most `limit`
    /// bytes.
    static func inflate(file source: String, to destination: String, limit: Int) throws {
        let descriptor = open(source, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw Refused(description: "cannot read \(source): \(systemErrorText())") }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        try inflate(
            reading: {
                while true {
                    let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                    if count < 0, errno == EINTR { continue }
                    guard count >= 0 else {
                        throw Refused(description: "cannot read \(source): \(systemErrorText())")
                    }
                    return count == 0 ? nil : Array(buffer[0..<count])
                }
            }, to: destination, limit: limit)
    }

    private static func inflate(reading next: () throws -> [UInt8]?, to destination: String, limit: Int) throws {
        guard FileManager.default.createFile(atPath: destination, contents: nil),
            let output = try? AppendOnlyFile(path: destination)
        else { throw Refused(description: "cannot create \(destination)") }
        do {
            try inflate(reading: next, limit: limit) { try output.append([UInt8]($0)) }
        } catch {
            try? FileManager.default.removeItem(atPath: destination)
            throw error
        }
    }

    /// Inflates `archive`, handing out the bytes a chunk at a time, at most `limit` in all.
    static func inflate(_ archive: Data, limit: Int, _ write: (Data) throws -> Void) throws {
        var given = false
        try inflate(
            reading: {
                defer { given = true }
                return given ? nil : [UInt8](archive)
            }, limit: limit, write)
    }

    /// Inflates what `next` hands out piece by piece (nil at the end), at most `limit` bytes in all.
    private static func inflate(reading next: () throws -> [UInt8]?, limit: Int, _ write: (Data) throws -> Void)
        throws
    {
        var stream = z_stream()
        // windowBits 15 + 16: a gzip wrapper.
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Refused(description: "zlib is unavailable")
        }
        defer { inflateEnd(&stream) }
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        var written = 0
        var status = Z_OK
        while status != Z_STREAM_END {
            guard var input = try next(), !input.isEmpty else {
                throw Refused(description: "the archive is truncated")
            }
            try input.withUnsafeMutableBufferPointer { inputBuffer in
                stream.next_in = inputBuffer.baseAddress
                stream.avail_in = uInt(inputBuffer.count)
                // Inflates this piece wholly (or to the stream's end) before the next is read.
                while status != Z_STREAM_END {
                    let produced = chunk.withUnsafeMutableBufferPointer { chunkBuffer -> Int in
                        stream.next_out = chunkBuffer.baseAddress
                        stream.avail_out = uInt(chunkBuffer.count)
                        status = CZlib.inflate(&stream, Z_NO_FLUSH)
                        return chunkBuffer.count - Int(stream.avail_out)
                    }
                    guard
                        status == Z_OK || status == Z_STREAM_END || (status == Z_BUF_ERROR && produced > 0)
                            || (status == Z_BUF_ERROR && stream.avail_in == 0)
                    else {
                        throw Refused(description: "the archive is not valid gzip (zlib status \(status))")
                    }
                    written += produced
                    guard written <= limit else {
                        throw Refused(description: "the archive inflates beyond \(limit) bytes")
                    }
                    if produced > 0 { try write(Data(chunk.prefix(produced))) }
                    if stream.avail_in == 0, stream.avail_out != 0 { break }
                }
            }
            stream.next_in = nil
        }
    }
}
