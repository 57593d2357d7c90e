#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// What the agent keeps after `device-agent join`: the registry it joined and the capability it joins with
/// (the owner's delegation chain to this device), in its state directory, so a restart resumes as the same device.
public struct Enrollment: Codable, Sendable, Equatable {
    public var registry: String
    /// The delegation chain (a UCAN container), root first.
    public var chain: String
    /// PEM roots for a TLS registry; nil for plaintext.
    public var trustRoots: String?

    public init(registry: String, chain: String, trustRoots: String?) {
        self.registry = registry
        self.chain = chain
        self.trustRoots = trustRoots
    }

    public static func path(stateDirectory: String) -> String { stateDirectory + "/enrollment.json" }

    public static func read(stateDirectory: String) throws -> Enrollment? {
        guard let data = FileManager.default.contents(atPath: path(stateDirectory: stateDirectory)) else { return nil }
        return try JSONDecoder().decode(Enrollment.self, from: data)
    }

    public func write(stateDirectory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let url = URL(fileURLWithPath: Self.path(stateDirectory: stateDirectory))
        try encoder.encode(self).write(to: url, options: .atomic)
        chmod(url.path, 0o600)
    }

    public static func remove(stateDirectory: String) throws {
        let path = path(stateDirectory: stateDirectory)
        if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
    }
}
