import Foundation

/// Key files for the offline tools: the private key as hex (an optional `0x`, surrounding white space ignored),
/// readable by its owner only.
public enum HexKeyFile {
    public enum Failure: Error, CustomStringConvertible {
        case unreadable(String)
        case tooOpen(String, mode: Int)
        case notHex(String)

        public var description: String {
            switch self {
            case .unreadable(let path): "cannot read the key file \(path)"
            case .tooOpen(let path, let mode):
                "the key file \(path) is readable by others (mode \(String(mode, radix: 8))); chmod 600 it"
            case .notHex(let path): "the key file \(path) does not hold a hex private key"
            }
        }
    }

    /// The key bytes; refuses files with any group or other permission bit.
    public static func read(_ path: String) throws -> [UInt8] {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let data = FileManager.default.contents(atPath: path)
        else { throw Failure.unreadable(path) }
        let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? 0o777
        guard mode & 0o077 == 0 else { throw Failure.tooOpen(path, mode: mode) }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let bytes = Hex.decode(text), !bytes.isEmpty else { throw Failure.notHex(path) }
        return bytes
    }

    /// Writes `bytes` as hex with mode 0600 (created exclusively: an existing file is not overwritten).
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let text = Hex.encode(bytes, prefix: false) + "\n"
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = FileHandle(forWritingAtPath: path)
        else { throw Failure.unreadable(path) }
        defer { try? handle.close() }
        try handle.write(contentsOf: Data(text.utf8))
    }
}
