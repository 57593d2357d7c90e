/// One member of a tar archive, its names already taken from PAX or GNU long-name records where given.
struct TarEntry {
    enum Kind: Equatable {
        case file, hardLink, symbolicLink, characterDevice, blockDevice, directory, fifo
    }
    var path: String
    var kind: Kind
    /// Permission bits and setuid/setgid/sticky, as archived.
    var mode: UInt32
    var size: Int64
    var linkTarget: String
    var modified: Int64
}

/// Reads a tar stream (POSIX ustar with PAX extended headers, GNU long names, old v7) from a source, member by
/// member; each member's data is read (or skipped) before the next header. Checksums are checked; sizes and names
/// are bounded.
final class TarReader {
    private let source: any ByteSource
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    /// The longest name or PAX header read.
    static let maximumHeaderData = 1 << 20

    init(_ source: any ByteSource) { self.source = source }

    /// The next member; nil at the archive's end (two zero blocks, or the stream's end at a block boundary).
    func next() throws -> TarEntry? {
        try skip(remaining + padding)
        remaining = 0
        padding = 0
        var longName: String?
        var longLink: String?
        var pax: [String: String] = [:]
        while true {
            guard let block = try readBlock() else { return nil }
            if block.allSatisfy({ $0 == 0 }) { return nil }
            try verifyChecksum(block)
            let type = block[156]
            let size = try Self.number(block[124..<136], field: "size")
            guard size >= 0 else { throw OCIError.unsafeLayer("a tar member has a negative size") }
            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "L"), UInt8(ascii: "K"), UInt8(ascii: "g"):
                guard size <= Self.maximumHeaderData else {
                    throw OCIError.unsafeLayer("a tar extended header of \(size) bytes is refused")
                }
                let data = try readExactly(Int(size))
                try skip(Self.paddingAfter(size))
                switch type {
                case UInt8(ascii: "x"): pax.merge(try Self.paxRecords(data)) { $1 }
                case UInt8(ascii: "L"): longName = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
                case UInt8(ascii: "K"): longLink = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
                default: break  // A global header: nothing in it changes how members unpack here.
                }
                continue
            default:
                break
            }
            let kind: TarEntry.Kind
            switch type {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): kind = .file
            case UInt8(ascii: "1"): kind = .hardLink
            case UInt8(ascii: "2"): kind = .symbolicLink
            case UInt8(ascii: "3"): kind = .characterDevice
            case UInt8(ascii: "4"): kind = .blockDevice
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "6"): kind = .fifo
            default:
                throw OCIError.unsafeLayer("a tar member of type '\(Character(Unicode.Scalar(type)))' is not supported")
            }
            var path = Self.string(block[0..<100])
            let isUstar = block[257..<262].elementsEqual("ustar".utf8)
            if isUstar {
                let prefix = Self.string(block[345..<500])
                if !prefix.isEmpty { path = prefix + "/" + path }
            }
            if let longName { path = longName }
            if let name = pax["path"] { path = name }
            var linkTarget = Self.string(block[157..<257])
            if let longLink { linkTarget = longLink }
            if let link = pax["linkpath"] { linkTarget = link }
            var entrySize = size
            if let text = pax["size"] {
                guard let value = Int64(text), value >= 0 else {
                    throw OCIError.unsafeLayer("a PAX size \(text.prefix(30)) is not a number")
                }
                entrySize = value
            }
            // Links, directories and devices carry no data whatever their size field says.
            if kind != .file { entrySize = 0 }
            // An old v7 archive marks a directory by a trailing '/' on a regular member.
            let resolvedKind = kind == .file && path.hasSuffix("/") ? .directory : kind
            let mode = UInt32(truncatingIfNeeded: try Self.number(block[100..<108], field: "mode")) & 0o7777
            var modified = try Self.number(block[136..<148], field: "mtime")
            if let text = pax["mtime"], let seconds = Int64(text.split(separator: ".")[0]) { modified = seconds }
            remaining = resolvedKind == .file ? entrySize : 0
            padding = Self.paddingAfter(remaining)
            return TarEntry(
                path: path, kind: resolvedKind, mode: mode, size: remaining, linkTarget: linkTarget,
                modified: modified)
        }
    }

    /// Reads the current member's data into `buffer`; 0 once all of it was read.
    func readData(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard remaining > 0 else { return 0 }
        let wanted = Int(min(Int64(buffer.count), remaining))
        let count = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<wanted]))
        guard count > 0 else { throw OCIError.unsafeLayer("the layer's tar stream ends inside a member") }
        remaining -= Int64(count)
        return count
    }

    private func readBlock() throws -> [UInt8]? {
        var block = [UInt8](repeating: 0, count: 512)
        var filled = 0
        while filled < 512 {
            let count = try block.withUnsafeMutableBytes {
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...]))
            }
            if count == 0 {
                guard filled == 0 else { throw OCIError.unsafeLayer("the layer's tar stream ends inside a header") }
                return nil
            }
            filled += count
        }
        return block
    }

    private func readExactly(_ count: Int) throws -> [UInt8] {
        var data = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let read = try data.withUnsafeMutableBytes {
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...]))
            }
            guard read > 0 else { throw OCIError.unsafeLayer("the layer's tar stream ends inside a header") }
            filled += read
        }
        return data
    }

    private func skip(_ count: Int64) throws {
        var left = count
        var scratch = [UInt8](repeating: 0, count: 64 << 10)
        while left > 0 {
            let wanted = Int(min(Int64(scratch.count), left))
            let read = try scratch.withUnsafeMutableBytes {
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<wanted]))
            }
            guard read > 0 else { throw OCIError.unsafeLayer("the layer's tar stream ends inside a member") }
            left -= Int64(read)
        }
    }

    private func verifyChecksum(_ block: [UInt8]) throws {
        let stored = try Self.number(block[148..<156], field: "checksum")
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for (index, byte) in block.enumerated() {
            let value = (148..<156).contains(index) ? 32 : byte
            unsigned += Int64(value)
            signed += Int64(Int8(bitPattern: value))
        }
        guard stored == unsigned || stored == signed else {
            throw OCIError.unsafeLayer("a tar header's checksum is wrong: the layer is corrupt")
        }
    }

    static func paddingAfter(_ size: Int64) -> Int64 { (512 - size % 512) % 512 }

    static func string(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An octal number (spaces and NULs around it), or GNU's base-256 form (first byte's high bit set).
    static func number(_ field: ArraySlice<UInt8>, field name: String) throws -> Int64 {
        guard let first = field.first else { return 0 }
        if first & 0x80 != 0 {
            guard first & 0x40 == 0 else { throw OCIError.unsafeLayer("a negative base-256 tar \(name) is refused") }
            var value: Int64 = Int64(first & 0x3f)
            for byte in field.dropFirst() {
                guard value < Int64.max >> 8 else { throw OCIError.unsafeLayer("a tar \(name) is too large") }
                value = value << 8 | Int64(byte)
            }
            return value
        }
        var value: Int64 = 0
        var digits = 0
        for byte in field {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                guard value < Int64.max >> 3 else { throw OCIError.unsafeLayer("a tar \(name) is too large") }
                value = value << 3 | Int64(byte - UInt8(ascii: "0"))
                digits += 1
            case 0, UInt8(ascii: " "):
                if digits > 0 { return value }
            default:
                throw OCIError.unsafeLayer("a tar header's \(name) field is not a number: the layer is corrupt")
            }
        }
        return value
    }

    /// PAX records: `<length> <key>=<value>\n`, the length counting the whole record.
    static func paxRecords(_ data: [UInt8]) throws -> [String: String] {
        var records: [String: String] = [:]
        var index = 0
        while index < data.count {
            guard let space = data[index...].firstIndex(of: UInt8(ascii: " ")),
                let length = Int(String(decoding: data[index..<space], as: UTF8.self)), length > 0,
                index + length <= data.count, data[index + length - 1] == UInt8(ascii: "\n"),
                let equals = data[(space + 1)..<(index + length)].firstIndex(of: UInt8(ascii: "="))
            else {
                if data[index...].allSatisfy({ $0 == 0 }) { break }
                throw OCIError.unsafeLayer("a PAX extended header is malformed")
            }
            let key = String(decoding: data[(space + 1)..<equals], as: UTF8.self)
            let value = String(decoding: data[(equals + 1)..<(index + length - 1)], as: UTF8.self)
            records[key] = value
            index += length
        }
        return records
    }
}
