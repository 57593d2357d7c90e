public import ArgumentParser
public import Configuration
public import OrreryRuntime
public import OrreryRuntimeCore

/// What only the registry reads.
public struct RegistrySettings: ServiceSettings {
    /// The devices' heartbeat interval: a device is suspect after 2 missed and offline after 3.
    public var livenessInterval: Duration

    public struct Options: ParsableArguments {
        @Option(
            help:
                "Milliseconds between a device's heartbeats; a device is suspect after 2 missed and offline after 3 (env ORRERY_LIVENESS_INTERVAL_MS, file liveness.interval_ms; default 5000)."
        )
        public var livenessIntervalMs: Int?

        public init() {}
    }

    public static var defaults: [AbsoluteConfigKey: ConfigValue] { ["liveness.interval_ms": 5000] }

    public static func flags(_ options: Options) -> [AbsoluteConfigKey: ConfigValue] {
        var flags: [AbsoluteConfigKey: ConfigValue] = [:]
        flags.flag("liveness.interval_ms", options.livenessIntervalMs)
        return flags
    }

    public init(reading reader: SettingsReader) throws {
        livenessInterval = .milliseconds(try reader.integer("liveness.interval_ms", in: 100...600_000))
    }

    public init(livenessInterval: Duration = .seconds(5)) {
        self.livenessInterval = livenessInterval
    }
}
