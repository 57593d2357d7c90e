public import ArgumentParser
public import Configuration
public import OrreryRuntime
public import OrreryRuntimeCore

/// What only the identity service reads.
public struct IdentitySettings: ServiceSettings {
    /// The operator's key file, with which this service issues onboarding delegations; nil issues none.
    public var operatorKeyFile: String?

    public struct Options: ParsableArguments {
        @Option(
            help:
                "The operator's key file, to issue onboarding delegations (env ORRERY_OPERATOR_KEY, file operator.key)."
        )
        public var operatorKey: String?

        public init() {}
    }

    public static var defaults: [AbsoluteConfigKey: ConfigValue] { ["operator.key": ""] }

    public static func flags(_ options: Options) -> [AbsoluteConfigKey: ConfigValue] {
        var flags: [AbsoluteConfigKey: ConfigValue] = [:]
        flags.flag("operator.key", options.operatorKey)
        return flags
    }

    public init(reading reader: SettingsReader) throws {
        operatorKeyFile = try reader.optionalString("operator.key")
    }

    public init(operatorKeyFile: String? = nil) {
        self.operatorKeyFile = operatorKeyFile
    }
}
