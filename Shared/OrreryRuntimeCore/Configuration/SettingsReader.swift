public import Configuration

/// A process's settings from four sources, the first that has a key winning: command-line flags, `ORRERY_*`
/// environment variables, the JSON configuration file, defaults. Each read checks the value and throws a
/// `ConfigurationError` naming the key and what is wrong.
public struct SettingsReader: Sendable {
    private let reader: ConfigReader

    /// - Parameters:
    ///   - flags: Values given on the command line.
    ///   - environment: The process environment; `ORRERY_GRPC_PORT` is the key `grpc.port`.
    ///   - configFile: The JSON file; when `configFileRequired` is false a missing file is skipped.
    ///   - defaults: Every key's default.
    ///   - secrets: Keys whose values are never printed (`db.password`).
    public init(
        flags: [AbsoluteConfigKey: ConfigValue], environment: [String: String], configFile: String,
        configFileRequired: Bool, defaults: [AbsoluteConfigKey: ConfigValue], secrets: Set<String> = []
    ) throws {
        let environmentProvider = EnvironmentVariablesProvider(
            environmentVariables: environment,
            secretsSpecifier: .specific(Set(secrets.map { "ORRERY_" + $0.uppercased().replacing(".", with: "_") }))
        ).prefixKeys(with: "orrery")
        var providers: [any ConfigProvider] = [
            InMemoryProvider(name: "command line", values: flags), environmentProvider,
        ]
        if let file = try JSONConfigFile.values(path: configFile, allowMissing: !configFileRequired, secrets: secrets) {
            providers.append(InMemoryProvider(name: configFile, values: file))
        }
        providers.append(InMemoryProvider(name: "defaults", values: defaults))
        reader = ConfigReader(providers: providers)
    }

    /// A string (possibly empty).
    public func string(_ key: ConfigKey, isSecret: Bool = false) throws -> String {
        do {
            return try reader.requiredString(forKey: key, isSecret: isSecret)
        } catch {
            throw ConfigurationError(key: key.description, reason: "expected a string (\(Self.describe(error)))")
        }
    }

    /// A string, nil when empty.
    public func optionalString(_ key: ConfigKey, isSecret: Bool = false) throws -> String? {
        let value = try string(key, isSecret: isSecret)
        return value.isEmpty ? nil : value
    }

    /// A string with more than whitespace in it.
    public func nonEmpty(_ key: ConfigKey) throws -> String {
        let value = try string(key)
        guard value.contains(where: { !$0.isWhitespace }) else {
            throw ConfigurationError(key: key.description, reason: "must not be empty")
        }
        return value
    }

    /// A whole number within `range`.
    public func integer(_ key: ConfigKey, in range: ClosedRange<Int>) throws -> Int {
        let value: Int
        do {
            value = try reader.requiredInt(forKey: key)
        } catch {
            throw ConfigurationError(
                key: key.description, reason: "expected a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        guard range.contains(value) else {
            throw ConfigurationError(
                key: key.description, reason: "\(value) is outside \(range.lowerBound)…\(range.upperBound)")
        }
        return value
    }

    /// A TCP port; 0 asks the system for a free one.
    public func port(_ key: ConfigKey) throws -> Int {
        try integer(key, in: 0...65535)
    }

    /// A host to listen on; with `loopbackOnly`, only a loopback address.
    public func host(_ key: ConfigKey, loopbackOnly: Bool) throws -> String {
        let value = try nonEmpty(key)
        if loopbackOnly && !Self.isLoopback(value) {
            throw ConfigurationError(
                key: key.description,
                reason:
                    "'\(value)' is not a loopback address; this service opens no network port (use 127.0.0.1 or ::1)"
            )
        }
        return value
    }

    /// One of `choices`, by raw value, case-insensitively.
    public func choice<Choice: RawRepresentable>(_ key: ConfigKey, _ choices: [Choice]) throws -> Choice
    where Choice.RawValue == String {
        let value = try string(key)
        guard let match = choices.first(where: { $0.rawValue == value.lowercased() }) else {
            let allowed = choices.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(key: key.description, reason: "'\(value)' is not one of: \(allowed)")
        }
        return match
    }

    /// A did:key that must be set (the operator's).
    public func did(_ key: ConfigKey) throws -> String {
        let value = try string(key)
        guard Self.looksLikeDIDKey(value) else {
            throw ConfigurationError(
                key: key.description,
                reason: value.isEmpty
                    ? "required: the operator's did:key (see `orrery operator init`)" : "'\(value)' is not a did:key")
        }
        return value
    }

    /// A did:key, nil when unset.
    public func optionalDID(_ key: ConfigKey) throws -> String? {
        let value = try string(key)
        if value.isEmpty { return nil }
        guard Self.looksLikeDIDKey(value) else {
            throw ConfigurationError(key: key.description, reason: "'\(value)' is not a did:key")
        }
        return value
    }

    /// A `host:port` address, nil when unset.
    public func address(_ key: ConfigKey) throws -> String? {
        let value = try string(key)
        if value.isEmpty { return nil }
        guard ServiceAddress(value) != nil else {
            throw ConfigurationError(key: key.description, reason: "'\(value)' is not host:port")
        }
        return value
    }

    /// Whether `host` names the loopback interface.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    private static func looksLikeDIDKey(_ value: String) -> Bool {
        value.hasPrefix("did:key:z") && value.count > 20
    }

    private static func describe(_ error: any Error) -> String {
        "\(error)".replacing("\n", with: " ")
    }
}
