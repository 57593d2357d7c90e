public import Logging
public import OrreryDatabase

/// A service's settings after resolving defaults < file < environment < flags.
public struct RuntimeSettings: Sendable, Equatable {
    /// How log lines are written.
    public enum LogFormat: String, Sendable, CaseIterable {
        /// JSON lines unless standard output is a terminal.
        case auto
        case json
        case text
    }

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
    public var http: Listen
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    /// Nil for a service that owns no schema.
    public var database: DatabaseSettings?
    public var stateDirectory: String
    public var shutdownGrace: Duration
    public var readyFile: String?
    /// The configuration file that was read, if any.
    public var configFile: String?
}
