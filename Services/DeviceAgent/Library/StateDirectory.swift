internal import Foundation

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
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw Unusable(path: path, reason: "exists and is not a directory") }
        } else {
            do {
                try manager.createDirectory(
                    atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw Unusable(path: path, reason: "cannot be created (\(error.localizedDescription))")
            }
        }
        let attributes = try manager.attributesOfItem(atPath: path)
        if let permissions = attributes[.posixPermissions] as? Int, permissions & 0o022 != 0 {
            throw Unusable(
                path: path, reason: "is writable by other users (mode \(String(permissions, radix: 8))); chmod 700 it")
        }
    }
}
