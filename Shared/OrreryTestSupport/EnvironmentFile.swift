public import Foundation

/// The `KEY=VALUE` lines a helper script writes for its caller (pg-throwaway.sh's and ha-cluster.sh's `env`).
public enum EnvironmentFile {
    /// The file's variables; a value in double quotes loses them. Lines without `=` are skipped.
    public static func read(_ url: URL) throws -> [String: String] {
        var values: [String: String] = [:]
        for line in try String(contentsOf: url, encoding: .utf8).split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            values[parts[0]] = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return values
    }
}
