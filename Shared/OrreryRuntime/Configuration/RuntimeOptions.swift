public import ArgumentParser

/// The command-line options every Orrery service accepts (a service's own are its `ServiceSettings.Options`). Each one overrides the environment variable and the
/// configuration-file key named in its help; options left unset fall through to those, then to defaults.
public struct RuntimeOptions: ParsableArguments, Sendable {
    @Option(help: "Configuration file (JSON). Default: /etc/orrery/<service>.json, skipped when absent.")
    public var config: String?

    @Option(help: "Write the bound addresses and the DID here as JSON once serving.")
    public var readyFile: String?

    @Option(help: "gRPC listen host (env ORRERY_GRPC_HOST, file grpc.host).")
    public var grpcHost: String?

    @Option(help: "gRPC listen port, 0 for any free port (env ORRERY_GRPC_PORT, file grpc.port).")
    public var grpcPort: Int?

    @Option(
        help: "PEM certificate chain for the gRPC listener (env ORRERY_TLS_CERT, file tls.cert). Required off loopback."
    )
    public var tlsCert: String?

    @Option(help: "PEM private key of that certificate (env ORRERY_TLS_KEY, file tls.key).")
    public var tlsKey: String?

    @Option(
        help: "PEM certificates this service trusts when it calls others over TLS (env ORRERY_TLS_CA, file tls.ca).")
    public var tlsCa: String?

    @Option(help: "HTTP host for /metrics and /healthz (env ORRERY_HTTP_HOST, file http.host).")
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

    @Option(help: "PostgreSQL host (env ORRERY_DB_HOST, file db.host).")
    public var dbHost: String?

    @Option(help: "PostgreSQL port (env ORRERY_DB_PORT, file db.port).")
    public var dbPort: Int?

    @Option(
        help:
            "PostgreSQL user (env ORRERY_DB_USER, file db.user). The password: env ORRERY_DB_PASSWORD or file db.password only."
    )
    public var dbUser: String?

    @Option(help: "PostgreSQL database (env ORRERY_DB_DATABASE, file db.database).")
    public var dbDatabase: String?

    @Option(help: "PostgreSQL TLS: disable, prefer, require (env ORRERY_DB_TLS, file db.tls).")
    public var dbTls: String?

    @Option(help: "Seconds to wait for PostgreSQL at start before giving up (env ORRERY_DB_TIMEOUT, file db.timeout).")
    public var dbTimeout: Int?

    @Option(
        help:
            "This service's key file: the Ed25519 seed as hex, mode 0600; every replica shares it (env ORRERY_IDENTITY_KEY, file identity.key). The device agent creates its own in its state directory."
    )
    public var identityKey: String?

    @Option(
        help:
            "The operator's DID: the root every capability chain must start from (env ORRERY_TRUST_OPERATOR, file trust.operator)."
    )
    public var trustOperator: String?

    @Option(
        help:
            "The identity service's gRPC address, host:port, to follow revocations (env ORRERY_IDENTITY_ADDRESS, file identity.address)."
    )
    public var identityAddress: String?

    @Option(
        help:
            "A file with this service's delegation chain from the operator (a UCAN container), for its own calls (env ORRERY_IDENTITY_DELEGATION, file identity.delegation)."
    )
    public var identityDelegation: String?

    @Option(help: "State directory for local files (env ORRERY_STATE_DIR, file state.dir).")
    public var stateDir: String?

    @Option(
        help:
            "Seconds in-flight work may take to finish after SIGTERM (env ORRERY_SHUTDOWN_GRACE, file shutdown.grace).")
    public var shutdownGrace: Int?

    @Option(
        help:
            "Seconds of clock skew tolerated on a capability's exp and nbf, 0…60 (env ORRERY_AUTH_CLOCK_SKEW, file auth.clock_skew)."
    )
    public var clockSkew: Int?

    @Option(
        help:
            "Capabilities failing their signature check allowed per minute per source address (an IPv6 /64), 0 for no limit; past it and auth.failure_burst, that source's connections that have not authenticated are refused RESOURCE_EXHAUSTED (env ORRERY_AUTH_FAILURES_PER_MINUTE, file auth.failures_per_minute)."
    )
    public var authFailuresPerMinute: Int?

    @Option(
        help:
            "Failed signature checks a source address may spend at once before auth.failures_per_minute applies (env ORRERY_AUTH_FAILURE_BURST, file auth.failure_burst)."
    )
    public var authFailureBurst: Int?

    @Option(
        help:
            "Most connections open at once over the gRPC and HTTP listeners; more are closed when accepted (env ORRERY_CONNECTIONS_MAX, file connections.max)."
    )
    public var maxConnections: Int?

    @Option(
        help:
            "Seconds a connection may stay without a call in progress before it is closed (env ORRERY_CONNECTIONS_IDLE_TIMEOUT, file connections.idle_timeout)."
    )
    public var idleTimeout: Int?

    public init() {}
}
