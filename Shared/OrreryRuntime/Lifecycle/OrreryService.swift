public import GRPCCore
public import Logging
public import PostgresNIO

/// What a service's handlers get from the runtime.
public struct ServiceEnvironment: Sendable {
    public let settings: RuntimeSettings
    public let logger: Logger
    /// The service's PostgreSQL pool (its own schema on the search path), or nil for a service without one.
    public let database: PostgresClient?
    public let info: ServiceInfo

    public init(settings: RuntimeSettings, logger: Logger, database: PostgresClient?, info: ServiceInfo) {
        self.settings = settings
        self.logger = logger
        self.database = database
        self.info = info
    }
}

/// A service as the runtime starts it: its description, and the gRPC services it serves once its schema is
/// migrated. Health, reflection and metrics are added by the runtime.
public struct OrreryService: Sendable {
    public let description: ServiceDescription
    public let makeRPCServices: @Sendable (ServiceEnvironment) async throws -> [any RegistrableRPCService]

    public init(
        description: ServiceDescription,
        makeRPCServices: @escaping @Sendable (ServiceEnvironment) async throws -> [any RegistrableRPCService]
    ) {
        self.description = description
        self.makeRPCServices = makeRPCServices
    }
}
