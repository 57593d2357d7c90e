#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

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

    /// Each shared setting's command-line flag (`RuntimeOptions`' names), where it is not the key with dots and
    /// underscores as dashes (as every service's own settings are named).
    static let flags: [String: String] = [
        "grpc.host": "--grpc-host",
        "grpc.port": "--grpc-port",
        "http.host": "--http-host",
        "http.port": "--http-port",
        "log.level": "--log-level",
        "log.format": "--log-format",
        "db.host": "--db-host",
        "db.port": "--db-port",
        "db.user": "--db-user",
        "db.database": "--db-database",
        "db.tls": "--db-tls",
        "db.timeout": "--db-timeout",
        "state.dir": "--state-dir",
        "shutdown.grace": "--shutdown-grace",
        "auth.clock_skew": "--clock-skew",
        "auth.failures_per_minute": "--auth-failures-per-minute",
        "auth.failure_burst": "--auth-failure-burst",
        "connections.max": "--max-connections",
        "connections.idle_timeout": "--idle-timeout",
        "tls.cert": "--tls-cert",
        "tls.key": "--tls-key",
        "tls.ca": "--tls-ca",
        "identity.key": "--identity-key",
        "trust.operator": "--trust-operator",
        "identity.address": "--identity-address",
        "identity.delegation": "--identity-delegation",
    ]

    public var description: String {
        let environmentName = "ORRERY_" + key.uppercased().replacing(".", with: "_")
        let flag = Self.flags[key] ?? "--" + key.replacing(".", with: "-").replacing("_", with: "-")
        return "invalid setting \(key) (\(flag), \(environmentName) or \(key) in the config file): \(reason)"
    }
}
