internal import CZlib

/// Gzip (RFC 1952) through the system zlib, for the UCAN container's compressed forms.
public enum Gzip {
    /// The largest inflated container accepted: tokens are small, and a bomb must not exhaust memory.
    public static let maximumInflatedSize = 4 << 20

    static func compress(_ input: [UInt8]) throws -> [UInt8] {
        var stream = z_stream()
        // windowBits 15 + 16 selects the gzip wrapper.
        guard
            deflateInit2_(
                &stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
                Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else {
            throw UCANError(.malformedToken, "gzip is unavailable")
        }
        defer { deflateEnd(&stream) }
        var input = input
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 32)
        let status = input.withUnsafeMutableBufferPointer { inputBuffer in
            output.withUnsafeMutableBufferPointer { outputBuffer in
                stream.next_in = inputBuffer.baseAddress
                stream.avail_in = uInt(inputBuffer.count)
                stream.next_out = outputBuffer.baseAddress
                stream.avail_out = uInt(outputBuffer.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { throw UCANError(.malformedToken, "gzip failed (\(status))") }
        return Array(output.prefix(Int(stream.total_out)))
    }

    static func decompress(_ input: [UInt8], maximumSize: Int = maximumInflatedSize) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw UCANError(.malformedToken, "gzip is unavailable")
        }
        defer { inflateEnd(&stream) }
        var input = input
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var status: Int32 = Z_OK
        try input.withUnsafeMutableBufferPointer { inputBuffer in
            stream.next_in = inputBuffer.baseAddress
            stream.avail_in = uInt(inputBuffer.count)
            while status != Z_STREAM_END {
                let produced = chunk.withUnsafeMutableBufferPointer { chunkBuffer -> Int in
                    stream.next_out = chunkBuffer.baseAddress
                    stream.avail_out = uInt(chunkBuffer.count)
                    status = inflate(&stream, Z_NO_FLUSH)
                    return chunkBuffer.count - Int(stream.avail_out)
                }
                guard status == Z_OK || status == Z_STREAM_END else {
                    throw UCANError(.malformedToken, "the container is not valid gzip")
                }
                output += chunk.prefix(produced)
                guard output.count <= maximumSize else {
                    throw UCANError(.malformedToken, "the container inflates beyond \(maximumSize) bytes")
                }
                if produced == 0 && stream.avail_in == 0 && status != Z_STREAM_END {
                    throw UCANError(.malformedToken, "the gzip stream is truncated")
                }
            }
        }
        return output
    }
}
