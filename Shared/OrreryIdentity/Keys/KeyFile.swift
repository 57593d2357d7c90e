internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics

/// Key files: the 32-byte Ed25519 seed as hex, readable and writable by its owner only (mode 0600).
public enum KeyFile {
    /// Reads a key file, refusing one that other users can read or write.
    /// - Throws: `KeyFileError` with a message naming the file and what to do.
    public static func read(_ path: String) throws -> SigningKey {
        try SigningKey(seed: try readBytes(path))
    }

    /// Writes `key` to a new file with mode 0600; refuses to overwrite an existing file.
    public static func write(_ key: SigningKey, to path: String) throws {
        try writeBytes(key.seed, to: path)
    }

    /// The hex-encoded private key bytes of a key file of any kind (Ed25519 seed, secp256k1 scalar), refusing a file
    /// other users can read or write.
    public static func readBytes(_ path: String) throws -> [UInt8] {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw KeyFileError.unreadable(path, String(cString: strerror(errno)))
        }
        if status.st_mode & 0o077 != 0 {
            throw KeyFileError.tooOpen(path, mode: Int(status.st_mode & 0o777))
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw KeyFileError.unreadable(path, "not readable text")
        }
        guard let bytes = Hex.decode(text.trimmed()), !bytes.isEmpty else {
            throw KeyFileError.malformed("\(path) does not hold a hex private key")
        }
        return bytes
    }

    /// Writes private key bytes as hex to a new file with mode 0600; refuses to overwrite an existing file.
    public static func writeBytes(_ bytes: [UInt8], to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else {
            throw KeyFileError.unwritable(path, String(cString: strerror(errno)))
        }
        defer { close(descriptor) }
        let text = Array((Hex.encode(bytes) + "\n").utf8)
        guard systemWrite(descriptor, text) == text.count else {
            throw KeyFileError.unwritable(path, String(cString: strerror(errno)))
        }
    }

    /// Reads the key at `path`, creating it first when the file does not exist.
    public static func readOrCreate(_ path: String) throws -> SigningKey {
        if FileManager.default.fileExists(atPath: path) { return try read(path) }
        let key = SigningKey()
        try write(key, to: path)
        return key
    }
}

/// Why a key file could not be used.
public enum KeyFileError: Error, Equatable, CustomStringConvertible, Sendable {
    case unreadable(String, String)
    case unwritable(String, String)
    case tooOpen(String, mode: Int)
    case malformed(String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): return "cannot read key file \(path): \(reason)"
        case .unwritable(let path, let reason): return "cannot write key file \(path): \(reason)"
        case .tooOpen(let path, let mode):
            return
                "key file \(path) is readable by other users (mode \(String(mode, radix: 8))); run: chmod 600 \(path)"
        case .malformed(let reason): return "malformed key: \(reason)"
        }
    }
}

/// Lower-case hexadecimal.
public enum Hex {
    /// `0x` and lower-case digits, as Ethereum tools write bytes.
    public static func prefixed(_ bytes: some Sequence<UInt8>) -> String { "0x" + encode(bytes) }

    /// The SHA-256 digest of `data` in lower-case hex (how artifacts, outputs and checkpoints name their content).
    public static func sha256(_ data: some DataProtocol) -> String { encode(SHA256.hash(data: data)) }

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var output: [UInt8] = []
        for byte in bytes {
            output.append(digits[Int(byte >> 4)])
            output.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Decodes hex (either case, optional `0x`), or nil.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var characters = Array(text.utf8)
        if characters.starts(with: Array("0x".utf8)) { characters.removeFirst(2) }
        guard characters.count % 2 == 0 else { return nil }
        func value(_ character: UInt8) -> UInt8? {
            switch character {
            case 0x30...0x39: return character - 0x30
            case 0x61...0x66: return character - 0x61 + 10
            case 0x41...0x46: return character - 0x41 + 10
            default: return nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(characters.count / 2)
        var index = 0
        while index < characters.count {
            guard let high = value(characters[index]), let low = value(characters[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }
}
