#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// The agent's local state directory: created readable only by the agent's user, refused when others can write it.
enum StateDirectory {
    /// An unusable state directory.
    struct Unusable: Error, CustomStringConvertible {
        let path: String
        let reason: String
        var description: String { "state directory \(path): \(reason)" }
    }

    static func prepare(at path: String) throws {
        let manager = FileManager.default
        if let status = FileStatus(path: path) {
            guard status.isDirectory else { throw Unusable(path: path, reason: "exists and is not a directory") }
        } else {
            do {
                try manager.createDirectory(
                    atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw Unusable(path: path, reason: "cannot be created (\(error))")
            }
        }
        guard let status = FileStatus(path: path) else {
            throw Unusable(path: path, reason: "cannot be examined (\(systemErrorText()))")
        }
        let permissions = status.permissions
        if permissions & 0o022 != 0 {
            throw Unusable(
                path: path, reason: "is writable by other users (mode \(String(permissions, radix: 8))); chmod 700 it")
        }
    }
}
