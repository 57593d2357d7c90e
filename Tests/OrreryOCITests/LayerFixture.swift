import Foundation
import OrreryTestSupport

@testable import OrreryOCI

/// Layers written by Python's tarfile (an independent tar writer) from a list of members.
struct LayerFixture {
    struct Written: Decodable {
        var diffID: OCIDigest
        var digest: OCIDigest
        var size: Int64

        enum CodingKeys: String, CodingKey {
            case diffID = "diff_id", digest, size
        }
    }

    /// A member as `oci_layer.py` reads it.
    static func file(_ name: String, _ data: String, mode: Int = 0o644) -> [String: Any] {
        ["name": name, "type": "file", "data": data, "mode": mode]
    }
    static func directory(_ name: String, mode: Int = 0o755) -> [String: Any] {
        ["name": name, "type": "dir", "mode": mode]
    }
    static func link(_ name: String, to target: String, hard: Bool = false) -> [String: Any] {
        ["name": name, "type": hard ? "hardlink" : "symlink", "target": target]
    }

    /// Writes a layer of `members` to `path`.
    static func write(
        _ members: [[String: Any]], to path: String, compression: LayerCompression = .gzip, format: String = "pax"
    ) async throws -> Written {
        let input = try JSONSerialization.data(withJSONObject: members)
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/oci_layer.py").path
        let inputPath = path + ".members.json"
        try input.write(to: URL(fileURLWithPath: inputPath))
        let (status, output) = try await ChildProcess.run(
            URL(fileURLWithPath: "/bin/sh"),
            arguments: [
                "-c", "exec \"$0\" \"$1\" \"$2\" \"$3\" \"$4\" < \"$5\"", TestEnvironment.python.path, script, path,
                compression.rawValue, format, inputPath,
            ])
        guard status == 0, let line = output.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw Failure(description: "oci_layer.py failed (\(status)): \(output)")
        }
        return try JSONDecoder().decode(Written.self, from: Data(line.utf8))
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }
}
