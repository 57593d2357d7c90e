public import Logging
public import OrreryDatabase
public import OrreryAuth
public import OrreryRuntimeCore

/// The settings every service reads, after resolving defaults < file < environment < flags. What only one service
/// reads is that service's own `ServiceSettings`.
public struct RuntimeSettings: Sendable, Equatable {
    public static func == (lhs: RuntimeSettings, rhs: RuntimeSettings) -> Bool {
        lhs.grpc == rhs.grpc && lhs.tls?.certificate == rhs.tls?.certificate && lhs.tls?.key == rhs.tls?.key
            && lhs.tlsTrustRoots == rhs.tlsTrustRoots && lhs.http == rhs.http && lhs.logLevel == rhs.logLevel
            && lhs.logFormat == rhs.logFormat && lhs.database == rhs.database
            && lhs.stateDirectory == rhs.stateDirectory
            && lhs.shutdownGrace == rhs.shutdownGrace && lhs.clockSkew == rhs.clockSkew
            && lhs.maximumConnections == rhs.maximumConnections && lhs.idleTimeout == rhs.idleTimeout
            && lhs.authenticationFailures == rhs.authenticationFailures
            && lhs.keyFile == rhs.keyFile
            && lhs.trustedOperator == rhs.trustedOperator
            && lhs.identityAddress == rhs.identityAddress && lhs.delegationFile == rhs.delegationFile
            && lhs.readyFile == rhs.readyFile && lhs.configFile == rhs.configFile
    }

    /// How log lines are written.
    public typealias LogFormat = OrreryRuntimeCore.LogFormat

    /// A host and port to listen on; port 0 asks the system for a free one.
    public struct Listen: Sendable, Equatable {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    public var grpc: Listen
    /// The gRPC listener's certificate chain and key (PEM files); nil for plaintext, allowed on loopback only.
    public var tls: (certificate: String, key: String)?
    /// PEM roots trusted for this service's own TLS calls; nil to call in plaintext.
    public var tlsTrustRoots: String?
    public var http: Listen
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    /// Nil for a service that owns no schema.
    public var database: DatabaseSettings?
    public var stateDirectory: String
    public var shutdownGrace: Duration
    /// Seconds a capability's `exp` and `nbf` are stretched for clocks that disagree (0…60): an expired token is
    /// accepted this much longer, a read-only invocation reusable until its `exp` plus this.
    public var clockSkew: Int64
    /// The most connections open at once over the gRPC and HTTP listeners together.
    public var maximumConnections: Int
    /// How long a connection may stay without a call in progress before it is closed.
    public var idleTimeout: Duration
    /// Failed signature checks allowed per source address before its unauthenticated connections are refused.
    public var authenticationFailures: FailedAuthenticationThrottle.Limits
    /// The service's key file; nil for a service that creates its own key in its state directory.
    public var keyFile: String?
    /// The operator DID capability chains must root in.
    public var trustedOperator: String
    /// The identity service to follow revocations from; nil when this is the identity service or none is set.
    public var identityAddress: String?
    /// The service's own delegation chain (a UCAN container file), for its calls to other services.
    public var delegationFile: String?
    public var readyFile: String?
    /// The configuration file that was read, if any.
    public var configFile: String?
}
