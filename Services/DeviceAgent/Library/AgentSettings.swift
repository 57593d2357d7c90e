public import ArgumentParser
internal import Configuration
public import Logging
public import OrreryHTTPClient
public import OrreryRuntimeCore

/// What the device agent reads, and nothing else: its loopback listeners, logging, state directory, heartbeat
/// interval and shutdown grace. Resolved command line < `ORRERY_*` environment < JSON file < defaults, each value
/// checked; the owner's policy (prices, location, orchestrators) is read from the same file by `OwnerPolicy`.
public struct AgentSettings: Sendable, Equatable {
    /// The gRPC listener (Info, health, reflection), loopback only.
    public var grpc: Listen
    /// The HTTP listener (`/metrics`, `/healthz`), loopback only.
    public var http: Listen
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    /// Holds the device key, the enrollment, the allocations and their journals (mode 0700).
    public var stateDirectory: String
    public var shutdownGrace: Duration
    /// Between heartbeats; usage receipts go every 12 intervals.
    public var livenessInterval: Duration
    /// Between the inventories (what runs here, what is promised) sent on each line while a bid waits for its Deploy;
    /// six times as long otherwise. The orchestrator answers one with a Stop for what it no longer assigns here.
    public var inventoryInterval: Duration
    public var readyFile: String?
    /// The configuration file named, or the default one.
    public var configFile: String
    /// Which OCI runtime runs images (`auto`: the first of runc and crun that runs a test container here).
    public var ociRuntime: OCIRuntime.Preference
    /// MiB of image layers kept (as much again of unpacked roots), least recently used evicted first.
    public var imageCacheMiB: Int
    /// MiB of input files kept, least recently used evicted first.
    public var inputCacheMiB: Int
    /// MiB a checkpoint archive may have, taken here or resumed from.
    public var checkpointLimitMiB: Int
    /// MiB a checkpoint archive may inflate to when it is unpacked for a resume.
    public var checkpointUnpackedLimitMiB: Int
    /// A PEM file of CA certificates trusted for registries besides the system's (a private registry's); nil: the
    /// system's only.
    public var registryCA: String?
    /// Where the registries a consumer's image comes from, and its inputs' servers, may be: public addresses only (so
    /// a consumer cannot make the device fetch from its owner's own network), or any.
    public var registryAddresses: AddressPolicy

    /// A host and port to listen on; port 0 asks the system for a free one.
    public struct Listen: Sendable, Equatable {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// The agent's name (config file, metrics, logs).
    public static let serviceName = "device-agent"
    static let defaultGRPCPort = 7406
    static let defaultHTTPPort = 9406

    /// Resolves the agent's settings.
    /// - Throws: `ConfigurationError` naming the first invalid setting and why.
    public static func load(options: AgentOptions, environment: [String: String]) throws -> AgentSettings {
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
        flag("state.dir", options.stateDir)
        flag("shutdown.grace", options.shutdownGrace)
        flag("liveness.interval_ms", options.livenessIntervalMs)
        flag("inventory.interval_ms", options.inventoryIntervalMs)
        flag("oci.runtime", options.ociRuntime)
        flag("images.cache_mib", options.imagesCacheMib)
        flag("inputs.cache_mib", options.inputsCacheMib)
        flag("checkpoints.limit_mib", options.checkpointsLimitMib)
        flag("checkpoints.unpacked_limit_mib", options.checkpointsUnpackedLimitMib)
        flag("images.registry_ca", options.imagesRegistryCa)
        flag("images.registry_addresses", options.imagesRegistryAddresses)
        let defaults: [AbsoluteConfigKey: ConfigValue] = [
            "grpc.host": "127.0.0.1",
            "grpc.port": .init(.int(defaultGRPCPort), isSecret: false),
            "http.host": "127.0.0.1",
            "http.port": .init(.int(defaultHTTPPort), isSecret: false),
            "log.level": "info",
            "log.format": "auto",
            "state.dir": "/var/lib/orrery/device-agent",
            "shutdown.grace": 10,
            "liveness.interval_ms": 5000,
            "inventory.interval_ms": 10000,
            "oci.runtime": "auto",
            "images.cache_mib": .init(.int(10240), isSecret: false),
            "inputs.cache_mib": .init(.int(10240), isSecret: false),
            "checkpoints.limit_mib": .init(.int(4096), isSecret: false),
            "checkpoints.unpacked_limit_mib": .init(.int(16384), isSecret: false),
            "images.registry_ca": "",
            "images.registry_addresses": "public",
        ]
        let configFile = options.config ?? "/etc/orrery/\(serviceName).json"
        let reader = try SettingsReader(
            flags: flags, environment: environment, configFile: configFile, configFileRequired: options.config != nil,
            defaults: defaults)
        return AgentSettings(
            grpc: .init(host: try reader.host("grpc.host", loopbackOnly: true), port: try reader.port("grpc.port")),
            http: .init(host: try reader.host("http.host", loopbackOnly: true), port: try reader.port("http.port")),
            logLevel: try reader.choice("log.level", Logger.Level.allCases),
            logFormat: try reader.choice("log.format", LogFormat.allCases),
            stateDirectory: try reader.nonEmpty("state.dir"),
            shutdownGrace: .seconds(try reader.integer("shutdown.grace", in: 1...300)),
            livenessInterval: .milliseconds(try reader.integer("liveness.interval_ms", in: 100...600_000)),
            inventoryInterval: .milliseconds(try reader.integer("inventory.interval_ms", in: 500...600_000)),
            readyFile: options.readyFile,
            configFile: configFile,
            ociRuntime: try reader.choice("oci.runtime", OCIRuntime.Preference.allCases),
            imageCacheMiB: try reader.integer("images.cache_mib", in: 64...(64 << 20)),
            inputCacheMiB: try reader.integer("inputs.cache_mib", in: 16...(64 << 20)),
            checkpointLimitMiB: try reader.integer("checkpoints.limit_mib", in: 1...(1 << 20)),
            checkpointUnpackedLimitMiB: try reader.integer("checkpoints.unpacked_limit_mib", in: 1...(4 << 20)),
            registryCA: try reader.optionalString("images.registry_ca"),
            registryAddresses: try reader.choice("images.registry_addresses", AddressPolicy.allCases))
    }
}

/// The command-line options of `device-agent serve`: only what the agent reads. Each overrides the environment
/// variable and the configuration-file key named in its help.
public struct AgentOptions: ParsableArguments, Sendable {
    @Option(
        help:
            "Configuration file (JSON): these settings and the owner's policy. Default: /etc/orrery/device-agent.json, skipped when absent."
    )
    public var config: String?

    @Option(help: "Write the bound addresses and the device's DID here as JSON once serving.")
    public var readyFile: String?

    @Option(help: "gRPC listen host, loopback only (env ORRERY_GRPC_HOST, file grpc.host).")
    public var grpcHost: String?

    @Option(help: "gRPC listen port, 0 for any free port (env ORRERY_GRPC_PORT, file grpc.port).")
    public var grpcPort: Int?

    @Option(help: "HTTP host for /metrics and /healthz, loopback only (env ORRERY_HTTP_HOST, file http.host).")
    public var httpHost: String?

    @Option(help: "HTTP port for /metrics and /healthz, 0 for any free port (env ORRERY_HTTP_PORT, file http.port).")
    public var httpPort: Int?

    @Option(
        help: "Log level: trace, debug, info, notice, warning, error, critical (env ORRERY_LOG_LEVEL, file log.level).")
    public var logLevel: String?

    @Option(
        help:
            "Log format: auto (JSON unless stdout is a terminal), json, text (env ORRERY_LOG_FORMAT, file log.format).")
    public var logFormat: String?

    @Option(
        help:
            "State directory: the device key, the enrollment, allocations (env ORRERY_STATE_DIR, file state.dir; default /var/lib/orrery/device-agent)."
    )
    public var stateDir: String?

    @Option(
        help:
            "Seconds in-flight work may take to finish after SIGTERM (env ORRERY_SHUTDOWN_GRACE, file shutdown.grace).")
    public var shutdownGrace: Int?

    @Option(
        help:
            "Milliseconds between heartbeats; the registry's interval (env ORRERY_LIVENESS_INTERVAL_MS, file liveness.interval_ms; default 5000)."
    )
    public var livenessIntervalMs: Int?

    @Option(
        help:
            "Milliseconds between the inventories sent to each orchestrator while a bid waits for its Deploy, six times as long otherwise (env ORRERY_INVENTORY_INTERVAL_MS, file inventory.interval_ms; default 10000)."
    )
    public var inventoryIntervalMs: Int?

    @Option(
        help:
            "OCI runtime for images: auto (the first of runc, crun that runs a test container here), runc, crun or off (env ORRERY_OCI_RUNTIME, file oci.runtime)."
    )
    public var ociRuntime: String?

    @Option(
        help:
            "MiB of image layers kept, as much again of unpacked images; least recently used go first (env ORRERY_IMAGES_CACHE_MIB, file images.cache_mib; default 10240)."
    )
    public var imagesCacheMib: Int?

    @Option(
        help:
            "MiB of allocations' input files kept; least recently used go first (env ORRERY_INPUTS_CACHE_MIB, file inputs.cache_mib; default 10240)."
    )
    public var inputsCacheMib: Int?

    @Option(
        help:
            "MiB a checkpoint archive may have (taken here, or resumed from); over 64 MiB they travel through the orchestrator's content store (env ORRERY_CHECKPOINTS_LIMIT_MIB, file checkpoints.limit_mib; default 4096)."
    )
    public var checkpointsLimitMib: Int?

    @Option(
        help:
            "MiB a checkpoint archive may inflate to when unpacked for a resume (env ORRERY_CHECKPOINTS_UNPACKED_LIMIT_MIB, file checkpoints.unpacked_limit_mib; default 16384)."
    )
    public var checkpointsUnpackedLimitMib: Int?

    @Option(
        help:
            "PEM file of CA certificates trusted for image registries and input servers besides the system's (env ORRERY_IMAGES_REGISTRY_CA, file images.registry_ca)."
    )
    public var imagesRegistryCa: String?

    @Option(
        help:
            "Which addresses image registries and input servers may be at: public (not loopback, private, link-local: a consumer cannot make this device fetch from its owner's network) or any (env ORRERY_IMAGES_REGISTRY_ADDRESSES, file images.registry_addresses; default public)."
    )
    public var imagesRegistryAddresses: String?

    public init() {}
}
