internal import Configuration
internal import Logging
internal import OrreryDatabase
internal import OrreryAuth
internal import OrreryRuntimeCore

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
        let loaded: (shared: RuntimeSettings, own: NoServiceSettings) = try await load(
            for: service, options: options, own: NoServiceSettings.Options(), environment: environment)
        return loaded.shared
    }

    /// Resolves a service's shared settings and its own (`Own`), each from the same command line, environment and
    /// configuration file.
    public static func load<Own: ServiceSettings>(
        for service: ServiceDescription,
        options: RuntimeOptions,
        own ownOptions: Own.Options,
        environment: [String: String]
    ) async throws -> (shared: RuntimeSettings, own: Own) {
        let reader = try makeReader(
            for: service, options: options, ownFlags: Own.flags(ownOptions), ownDefaults: Own.defaults,
            environment: environment)
        let shared = try read(reader, for: service, options: options)
        return (shared, try Own(reading: reader))
    }

    private static func read(_ reader: SettingsReader, for service: ServiceDescription, options: RuntimeOptions)
        throws -> RuntimeSettings
    {
        var settings = RuntimeSettings(
            grpc: .init(
                host: try reader.host("grpc.host", loopbackOnly: service.loopbackOnly),
                port: try reader.port("grpc.port")
            ),
            tls: nil,
            tlsTrustRoots: try reader.optionalString("tls.ca"),
            http: .init(
                host: try reader.host("http.host", loopbackOnly: service.loopbackOnly),
                port: try reader.port("http.port")
            ),
            logLevel: try reader.choice("log.level", Logger.Level.allCases),
            logFormat: try reader.choice("log.format", LogFormat.allCases),
            database: nil,
            stateDirectory: try reader.nonEmpty("state.dir"),
            shutdownGrace: .seconds(try reader.integer("shutdown.grace", in: 1...300)),
            clockSkew: Int64(try reader.integer("auth.clock_skew", in: 0...60)),
            maximumConnections: try reader.integer("connections.max", in: 16...1_000_000),
            idleTimeout: .seconds(try reader.integer("connections.idle_timeout", in: 1...86_400)),
            authenticationFailures: .init(
                rate: Double(try reader.integer("auth.failures_per_minute", in: 0...100_000_000)) / 60,
                burst: try reader.integer("auth.failure_burst", in: 1...1_000_000)),
            keyFile: try reader.optionalString("identity.key"),
            trustedOperator: try reader.did("trust.operator"),
            identityAddress: try reader.address("identity.address"),
            delegationFile: try reader.optionalString("identity.delegation"),
            readyFile: options.readyFile,
            configFile: options.config ?? service.defaultConfigFile
        )
        switch (try reader.optionalString("tls.cert"), try reader.optionalString("tls.key")) {
        case (let certificate?, let key?): settings.tls = (certificate, key)
        case (nil, nil): break
        case (nil, _?):
            throw ConfigurationError(
                key: "tls.cert", reason: "tls.key is set but tls.cert is not: give both or neither")
        case (_?, nil):
            throw ConfigurationError(key: "tls.key", reason: "tls.cert is set but tls.key is not: give both or neither")
        }
        if settings.tls == nil && !SettingsReader.isLoopback(settings.grpc.host) {
            throw ConfigurationError(
                key: "grpc.host",
                reason:
                    "'\(settings.grpc.host)' is not loopback: a network listener needs tls.cert and tls.key (plaintext is for loopback only)"
            )
        }
        if settings.tls == nil && !SettingsReader.isLoopback(settings.http.host) {
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
                host: try reader.nonEmpty("db.host"),
                port: try reader.integer("db.port", in: 1...65535),
                user: try reader.nonEmpty("db.user"),
                password: try reader.optionalString("db.password", isSecret: true),
                database: try reader.nonEmpty("db.database"),
                tls: try reader.choice("db.tls", DatabaseSettings.TLSMode.allCases),
                startupTimeout: .seconds(try reader.integer("db.timeout", in: 1...3600))
            )
        }
        return settings
    }

    /// Defaults < file < environment < flags, as swift-configuration providers (the first that has a key wins).
    private static func makeReader(
        for service: ServiceDescription,
        options: RuntimeOptions,
        ownFlags: [AbsoluteConfigKey: ConfigValue],
        ownDefaults: [AbsoluteConfigKey: ConfigValue],
        environment: [String: String]
    ) throws -> SettingsReader {
        var flags = ownFlags
        func flag(_ key: AbsoluteConfigKey, _ value: String?) { flags.flag(key, value) }
        func flag(_ key: AbsoluteConfigKey, _ value: Int?) { flags.flag(key, value) }
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
        flag("trust.operator", options.trustOperator)
        flag("identity.address", options.identityAddress)
        flag("identity.delegation", options.identityDelegation)

        let shared: [AbsoluteConfigKey: ConfigValue] = [
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
            "trust.operator": "",
            "identity.address": "",
            "identity.delegation": "",
        ]

        // An explicitly named file must exist; the default one is optional.
        return try SettingsReader(
            flags: flags, environment: environment, configFile: options.config ?? service.defaultConfigFile,
            configFileRequired: options.config != nil, defaults: shared.merging(ownDefaults) { shared, _ in shared },
            secrets: ["db.password"])
    }
}
