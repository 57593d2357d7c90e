internal import Foundation

/// A setting that stops start-up: which one, and why, in one line a person can act on.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The setting's key, e.g. `grpc.port`.
    public var key: String
    /// What is wrong with it.
    public var reason: String

    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }

    public var description: String {
        let environmentName = "ORRERY_" + key.uppercased().replacingOccurrences(of: ".", with: "_")
        let flag = "--" + key.replacingOccurrences(of: ".", with: "-")
        return "invalid setting \(key) (\(flag), \(environmentName) or \(key) in the config file): \(reason)"
    }
}
