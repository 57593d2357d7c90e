public import ArgumentParser
public import Configuration
public import OrreryRuntimeCore

/// The settings one service reads beyond the shared ones (`RuntimeSettings`): its own command-line options, their
/// configuration keys and defaults, and the typed values. Each key resolves like every setting — command line over
/// `ORRERY_*` environment variable (the key in capitals, dots as underscores) over the JSON file over the default —
/// and an invalid value stops start-up with the key named (`ConfigurationError`).
///
/// A setting of one service is declared in that service's library only: `registry --help` shows what the registry
/// reads and nothing of the orchestrator's.
public protocol ServiceSettings: Sendable {
    /// The service's own command-line options.
    associatedtype Options: ParsableArguments
    /// Every key the service reads, with its default (an empty string for a setting that is unset by default).
    static var defaults: [AbsoluteConfigKey: ConfigValue] { get }
    /// The options given on the command line, by key (an option not given is absent).
    static func flags(_ options: Options) -> [AbsoluteConfigKey: ConfigValue]
    /// The typed settings, read through `reader`.
    init(reading reader: SettingsReader) throws
}

/// A service that reads no setting of its own.
public struct NoServiceSettings: ServiceSettings {
    public struct Options: ParsableArguments {
        public init() {}
    }
    public static var defaults: [AbsoluteConfigKey: ConfigValue] { [:] }
    public static func flags(_ options: Options) -> [AbsoluteConfigKey: ConfigValue] { [:] }
    public init(reading reader: SettingsReader) throws {}
    public init() {}
}

extension Dictionary where Key == AbsoluteConfigKey, Value == ConfigValue {
    /// Adds a command-line option's value under `key` when it was given.
    public mutating func flag(_ key: AbsoluteConfigKey, _ value: String?) {
        if let value { self[key] = ConfigValue(.string(value), isSecret: false) }
    }

    /// Adds a command-line option's value under `key` when it was given.
    public mutating func flag(_ key: AbsoluteConfigKey, _ value: Int?) {
        if let value { self[key] = ConfigValue(.int(value), isSecret: false) }
    }
}
