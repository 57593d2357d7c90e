public import Logging
public import PostgresNIO

/// Where a service's PostgreSQL lives and how to reach it.
public struct DatabaseSettings: Sendable, Equatable {
    /// How the connection uses TLS.
    public enum TLSMode: String, Sendable, CaseIterable {
        case disable, prefer, require
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    /// How long start-up waits for the database (migrations) before giving up.
    public var startupTimeout: Duration

    public init(
        host: String,
        port: Int,
        user: String,
        password: String?,
        database: String,
        tls: TLSMode = .disable,
        startupTimeout: Duration = .seconds(30)
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.tls = tls
        self.startupTimeout = startupTimeout
    }

    /// A `PostgresClient` whose connections start with `search_path` set to `schema`, so a service's queries name
    /// its own tables without qualification and never see another service's; at most `maximumConnections` at once
    /// (the driver's default without).
    public func makeClient(schema: String, logger: Logger, maximumConnections: Int? = nil) throws -> PostgresClient {
        let tlsConfiguration: PostgresClient.Configuration.TLS
        switch tls {
        case .disable: tlsConfiguration = .disable
        case .prefer: tlsConfiguration = .prefer(.makeClientConfiguration())
        case .require: tlsConfiguration = .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(
            host: host,
            port: port,
            username: user,
            password: password,
            database: database,
            tls: tlsConfiguration
        )
        configuration.options.additionalStartupParameters = [("search_path", try SchemaName(schema).quoted)]
        configuration.options.connectTimeout = .seconds(5)
        // No keep-alive queries: the pool scheduled a 30 s keep-alive timer on every release of a connection, i.e.
        // for every query, and the Swift runtime keeps a cancelled sleep's memory until its deadline — 20 MiB of
        // heap at 1,500 calls/s (`make abuse`). A connection the server or a proxy closes is noticed by its socket.
        configuration.options.keepAliveBehavior = nil
        if let maximumConnections {
            configuration.options.minimumConnections = 0
            configuration.options.maximumConnections = maximumConnections
        }
        return PostgresClient(configuration: configuration, backgroundLogger: logger)
    }
}

extension AsyncSequence {
    /// Every element, in order (for result sets known to be small).
    public func collected() async throws -> [Element] {
        var elements: [Element] = []
        for try await element in self { elements.append(element) }
        return elements
    }
}

/// A client or a connection: both run queries (a statement in autocommit, or inside a transaction).
public protocol PostgresQueryable: Sendable {
    func runQuery(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRowSequence
}

extension PostgresClient: PostgresQueryable {
    public func runQuery(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRowSequence {
        try await self.query(query, logger: logger)
    }
}

extension PostgresConnection: PostgresQueryable {
    public func runQuery(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRowSequence {
        try await self.query(query, logger: logger)
    }
}
