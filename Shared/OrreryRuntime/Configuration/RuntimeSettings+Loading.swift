internal import Configuration
internal import Foundation
internal import Logging
internal import OrreryDatabase
internal import OrreryAuth
internal import SystemPackage

extension RuntimeSettings {
    /// Resolves a service's settings: command-line options override `ORRERY_*` environment variables, which
    /// override the JSON configuration file, which overrides the defaults.
    ///
    /// - Parameters:
    ///   - service: The service being started.
    ///   - options: The parsed command line.
    ///   - environment: The process environment (tests pass their own).
    /// - Throws: `ConfigurationError` naming the first invalid setting and why.
    public static func load(
        for service: ServiceDescription,
        options: RuntimeOptions,
        environment: [String: String]
    ) async throws -> RuntimeSettings {
        let reader = try await makeReader(for: service, options: options, environment: environment)
        var settings = RuntimeSettings(
            grpc: .init(
                host: try host(reader, "grpc.host", loopbackOnly: service.loopbackOnly),
                port: try port(reader, "grpc.port")
            ),
            tls: nil,
            tlsTrustRoots: try string(reader, "tls.ca").nilIfEmpty,
            http: .init(
                host: try host(reader, "http.host", loopbackOnly: service.loopbackOnly),
                port: try port(reader, "http.port")
            ),
            logLevel: try choice(reader, "log.level", Logger.Level.allCases),
            logFormat: try choice(reader, "log.format", LogFormat.allCases),
            database: nil,
            stateDirectory: try nonEmpty(reader, "state.dir"),
            shutdownGrace: .seconds(try integer(reader, "shutdown.grace", in: 1...300)),
            clockSkew: Int64(try integer(reader, "auth.clock_skew", in: 0...60)),
            maximumConnections: try integer(reader, "connections.max", in: 16...1_000_000),
            idleTimeout: .seconds(try integer(reader, "connections.idle_timeout", in: 1...86_400)),
            authenticationFailures: .init(
                rate: Double(try integer(reader, "auth.failures_per_minute", in: 0...100_000_000)) / 60,
                burst: try integer(reader, "auth.failure_burst", in: 1...1_000_000)),
            keyFile: try string(reader, "identity.key").nilIfEmpty,
            trustedOperator: try did(reader, "trust.operator"),
            identityAddress: try address(reader, "identity.address"),
            delegationFile: try string(reader, "identity.delegation").nilIfEmpty,
            operatorKeyFile: try string(reader, "operator.key").nilIfEmpty,
            livenessInterval: .milliseconds(try integer(reader, "liveness.interval_ms", in: 100...600_000)),
            registryAddress: try address(reader, "registry.address"),
            offerTimeout: .milliseconds(try integer(reader, "offer.timeout_ms", in: 100...600_000)),
            notaryAddress: try address(reader, "notary.address"),
            settlementDID: try optionalDID(reader, "settlement.did"),
            notaryDID: try optionalDID(reader, "notary.did"),
            settlementAddress: try address(reader, "settlement.address"),
            relocationMarginPercent: try integer(reader, "relocation.margin_percent", in: 0...90),
            readyFile: options.readyFile,
            configFile: options.config ?? service.defaultConfigFile
        )
        switch (try string(reader, "tls.cert").nilIfEmpty, try string(reader, "tls.key").nilIfEmpty) {
        case (let certificate?, let key?): settings.tls = (certificate, key)
        case (nil, nil): break
        case (nil, _?):
            throw ConfigurationError(
                key: "tls.cert", reason: "tls.key is set but tls.cert is not: give both or neither")
        case (_?, nil):
            throw ConfigurationError(key: "tls.key", reason: "tls.cert is set but tls.key is not: give both or neither")
        }
        if settings.tls == nil && !isLoopback(settings.grpc.host) {
            throw ConfigurationError(
                key: "grpc.host",
                reason:
                    "'\(settings.grpc.host)' is not loopback: a network listener needs tls.cert and tls.key (plaintext is for loopback only)"
            )
        }
        if settings.tls == nil && !isLoopback(settings.http.host) {
            throw ConfigurationError(
                key: "http.host",
                reason:
                    "'\(settings.http.host)' is not loopback: the JSON gateway carries bearer tokens, so a network listener needs tls.cert and tls.key (plaintext is for loopback only)"
            )
        }
        if settings.keyFile == nil && !service.createsOwnKey {
            throw ConfigurationError(
                key: "identity.key", reason: "required: the service's key file (`orrery operator init` provisions one)")
        }
        if service.keepsRevocationLog { settings.identityAddress = nil }
        if service.schema != nil {
            settings.database = DatabaseSettings(
                host: try nonEmpty(reader, "db.host"),
                port: try integer(reader, "db.port", in: 1...65535),
                user: try nonEmpty(reader, "db.user"),
                password: try string(reader, "db.password", isSecret: true).nilIfEmpty,
                database: try nonEmpty(reader, "db.database"),
                tls: try choice(reader, "db.tls", DatabaseSettings.TLSMode.allCases),
                startupTimeout: .seconds(try integer(reader, "db.timeout", in: 1...3600))
            )
        }
        return settings
    }

    /// Defaults < file < environment < flags, as swift-configuration providers (the first that has a key wins).
    private static func makeReader(
        for service: ServiceDescription,
        options: RuntimeOptions,
        environment: [String: String]
    ) async throws -> ConfigReader {
        var flags: [AbsoluteConfigKey: ConfigValue] = [:]
        func flag(_ key: AbsoluteConfigKey, _ value: String?) {
            if let value { flags[key] = ConfigValue(.string(value), isSecret: false) }
        }
        func flag(_ key: AbsoluteConfigKey, _ value: Int?) {
            if let value { flags[key] = ConfigValue(.int(value), isSecret: false) }
        }
        flag("grpc.host", options.grpcHost)
        flag("grpc.port", options.grpcPort)
        flag("http.host", options.httpHost)
        flag("http.port", options.httpPort)
        flag("log.level", options.logLevel)
        flag("log.format", options.logFormat)
        flag("db.host", options.dbHost)
        flag("db.port", options.dbPort)
        flag("db.user", options.dbUser)
        flag("db.database", options.dbDatabase)
        flag("db.tls", options.dbTls)
        flag("db.timeout", options.dbTimeout)
        flag("state.dir", options.stateDir)
        flag("shutdown.grace", options.shutdownGrace)
        flag("auth.clock_skew", options.clockSkew)
        flag("auth.failures_per_minute", options.authFailuresPerMinute)
        flag("auth.failure_burst", options.authFailureBurst)
        flag("connections.max", options.maxConnections)
        flag("connections.idle_timeout", options.idleTimeout)
        flag("tls.cert", options.tlsCert)
        flag("tls.key", options.tlsKey)
        flag("tls.ca", options.tlsCa)
        flag("identity.key", options.identityKey)
        flag("operator.key", options.operatorKey)
        flag("liveness.interval_ms", options.livenessIntervalMs)
        flag("registry.address", options.registryAddress)
        flag("offer.timeout_ms", options.offerTimeoutMs)
        flag("notary.address", options.notaryAddress)
        flag("settlement.did", options.settlementDid)
        flag("notary.did", options.notaryDid)
        flag("settlement.address", options.settlementAddress)
        flag("relocation.margin_percent", options.relocationMarginPercent)
        flag("trust.operator", options.trustOperator)
        flag("identity.address", options.identityAddress)
        flag("identity.delegation", options.identityDelegation)

        let defaults: [AbsoluteConfigKey: ConfigValue] = [
            "grpc.host": "127.0.0.1",
            "grpc.port": .init(.int(service.defaultGRPCPort), isSecret: false),
            "http.host": "127.0.0.1",
            "http.port": .init(.int(service.defaultHTTPPort), isSecret: false),
            "log.level": "info",
            "log.format": "auto",
            "db.host": "127.0.0.1",
            "db.port": 5432,
            "db.user": "orrery",
            "db.password": .init(.string(""), isSecret: true),
            "db.database": "orrery",
            "db.tls": "disable",
            "db.timeout": 30,
            "state.dir": .init(.string("/var/lib/orrery/\(service.name)"), isSecret: false),
            "shutdown.grace": 10,
            "auth.clock_skew": 30,
            "auth.failures_per_minute": 960,  // FailedAuthenticationThrottle.Limits.standard
            "auth.failure_burst": 64,
            "connections.max": 4096,
            "connections.idle_timeout": 120,
            "tls.cert": "",
            "tls.key": "",
            "tls.ca": "",
            "identity.key": "",
            "operator.key": "",
            "liveness.interval_ms": 5000,
            "registry.address": "",
            "offer.timeout_ms": 10000,
            "notary.address": "",
            "settlement.did": "",
            "notary.did": "",
            "settlement.address": "",
            "relocation.margin_percent": 30,
            "trust.operator": "",
            "identity.address": "",
            "identity.delegation": "",
        ]

        let filePath = options.config ?? service.defaultConfigFile
        let file: FileProvider<JSONSnapshot>
        do {
            // An explicitly named file must exist; the default one is optional.
            file = try await FileProvider<JSONSnapshot>(
                filePath: FilePath(filePath),
                allowMissing: options.config == nil
            )
        } catch {
            throw ConfigurationError(key: "config", reason: "cannot read \(filePath): \(describe(error))")
        }
        let environmentProvider = EnvironmentVariablesProvider(
            environmentVariables: environment,
            secretsSpecifier: .specific(["ORRERY_DB_PASSWORD"])
        ).prefixKeys(with: "orrery")
        return ConfigReader(providers: [
            InMemoryProvider(name: "command line", values: flags),
            environmentProvider,
            file,
            InMemoryProvider(name: "defaults", values: defaults),
        ])
    }

    private static func describe(_ error: any Error) -> String {
        "\(error)".replacingOccurrences(of: "\n", with: " ")
    }

    private static func string(_ reader: ConfigReader, _ key: ConfigKey, isSecret: Bool = false) throws -> String {
        do {
            return try reader.requiredString(forKey: key, isSecret: isSecret)
        } catch {
            throw ConfigurationError(key: key.description, reason: "expected a string (\(describe(error)))")
        }
    }

    private static func nonEmpty(_ reader: ConfigReader, _ key: ConfigKey) throws -> String {
        let value = try string(reader, key)
        guard !value.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw ConfigurationError(key: key.description, reason: "must not be empty")
        }
        return value
    }

    private static func integer(_ reader: ConfigReader, _ key: ConfigKey, in range: ClosedRange<Int>) throws -> Int {
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

    private static func did(_ reader: ConfigReader, _ key: ConfigKey) throws -> String {
        let value = try string(reader, key)
        guard value.hasPrefix("did:key:z"), value.count > 20 else {
            throw ConfigurationError(
                key: key.description,
                reason: value.isEmpty
                    ? "required: the operator's did:key (see `orrery operator init`)" : "'\(value)' is not a did:key")
        }
        return value
    }

    private static func optionalDID(_ reader: ConfigReader, _ key: ConfigKey) throws -> String? {
        let value = try string(reader, key)
        if value.isEmpty { return nil }
        guard value.hasPrefix("did:key:z"), value.count > 20 else {
            throw ConfigurationError(key: key.description, reason: "'\(value)' is not a did:key")
        }
        return value
    }

    private static func address(_ reader: ConfigReader, _ key: ConfigKey) throws -> String? {
        let value = try string(reader, key)
        if value.isEmpty { return nil }
        guard ServiceAddress(value) != nil else {
            throw ConfigurationError(key: key.description, reason: "'\(value)' is not host:port")
        }
        return value
    }

    private static func port(_ reader: ConfigReader, _ key: ConfigKey) throws -> Int {
        try integer(reader, key, in: 0...65535)
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    private static func host(_ reader: ConfigReader, _ key: ConfigKey, loopbackOnly: Bool) throws -> String {
        let value = try nonEmpty(reader, key)
        if loopbackOnly && !isLoopback(value) {
            throw ConfigurationError(
                key: key.description,
                reason:
                    "'\(value)' is not a loopback address; this service opens no network port (use 127.0.0.1 or ::1)"
            )
        }
        return value
    }

    private static func choice<Choice: RawRepresentable>(
        _ reader: ConfigReader,
        _ key: ConfigKey,
        _ choices: [Choice]
    ) throws -> Choice where Choice.RawValue == String {
        let value = try string(reader, key)
        guard let match = choices.first(where: { $0.rawValue == value.lowercased() }) else {
            let allowed = choices.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(key: key.description, reason: "'\(value)' is not one of: \(allowed)")
        }
        return match
    }
}

extension String {
    fileprivate var nilIfEmpty: String? { isEmpty ? nil : self }
}
