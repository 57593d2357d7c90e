public import OrreryDatabase

/// What the runtime must know about a service to start it: its name, its default ports, and the schema it owns.
public struct ServiceDescription: Sendable {
    /// The executable's name, e.g. `registry`; also names its config file and its metrics.
    public var name: String
    public var defaultGRPCPort: Int
    public var defaultHTTPPort: Int
    /// The PostgreSQL schema this service owns and its migrations; nil for a service without a database.
    public var schema: (name: String, migrations: [Migration])?
    /// Listeners may bind only loopback addresses (the device agent opens no network port).
    public var loopbackOnly: Bool
    /// The service creates its own key in its state directory on first start (the device agent) instead of
    /// being provisioned one.
    public var createsOwnKey: Bool
    /// This is the identity service: it keeps the revocation log itself instead of following one.
    public var keepsRevocationLog: Bool
    /// Streams one client connection may carry at once (SETTINGS_MAX_CONCURRENT_STREAMS): the orchestrator's agent
    /// lines carry a stream per tunnel.
    public var concurrentStreams: Int

    public init(
        name: String,
        defaultGRPCPort: Int,
        defaultHTTPPort: Int,
        schema: (name: String, migrations: [Migration])?,
        loopbackOnly: Bool = false,
        createsOwnKey: Bool = false,
        keepsRevocationLog: Bool = false,
        concurrentStreams: Int = 100
    ) {
        self.concurrentStreams = concurrentStreams
        self.name = name
        self.defaultGRPCPort = defaultGRPCPort
        self.defaultHTTPPort = defaultHTTPPort
        self.schema = schema
        self.loopbackOnly = loopbackOnly
        self.createsOwnKey = createsOwnKey
        self.keepsRevocationLog = keepsRevocationLog
    }

    /// The default configuration file, skipped when absent.
    public var defaultConfigFile: String { "/etc/orrery/\(name).json" }
}
