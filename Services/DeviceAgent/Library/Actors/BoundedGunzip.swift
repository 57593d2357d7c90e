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
        guard FileManager.default.createFile(atPath: destination, contents: nil),
            let output = try? AppendOnlyFile(path: destination)
        else { throw Refused(description: "cannot create \(destination)") }
        do {
            try inflate(archive, limit: limit) { try output.append([UInt8]($0)) }
        } catch {
            try? FileManager.default.removeItem(atPath: destination)
            throw error
        }
    }

    /// Inflates `archive`, handing out the bytes a chunk at a time, at most `limit` in all.
    static func inflate(_ archive: Data, limit: Int, _ write: (Data) throws -> Void) throws {
        var stream = z_stream()
        // windowBits 15 + 16: a gzip wrapper.
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Refused(description: "zlib is unavailable")
        }
        defer { inflateEnd(&stream) }
        var input = [UInt8](archive)
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        var written = 0
        try input.withUnsafeMutableBufferPointer { inputBuffer in
            stream.next_in = inputBuffer.baseAddress
            stream.avail_in = uInt(inputBuffer.count)
            var status = Z_OK
            while status != Z_STREAM_END {
                let produced = chunk.withUnsafeMutableBufferPointer { chunkBuffer -> Int in
                    stream.next_out = chunkBuffer.baseAddress
                    stream.avail_out = uInt(chunkBuffer.count)
                    status = CZlib.inflate(&stream, Z_NO_FLUSH)
                    return chunkBuffer.count - Int(stream.avail_out)
                }
                guard status == Z_OK || status == Z_STREAM_END || (status == Z_BUF_ERROR && produced > 0) else {
                    throw Refused(description: "the archive is not valid gzip (zlib status \(status))")
                }
                written += produced
                guard written <= limit else {
                    throw Refused(description: "the archive inflates beyond \(limit) bytes")
                }
                try write(Data(chunk.prefix(produced)))
                if produced == 0, stream.avail_in == 0, status != Z_STREAM_END {
                    throw Refused(description: "the archive is truncated")
                }
            }
        }
    }
}
