import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOPosix
import OrreryProto
import OrreryRuntimeCore
import OrreryTestSupport
import PostgresNIO
import _ConnectionPoolModule
import SwiftProtobuf
import Testing

@testable import OrreryRuntime

/// What a caller is answered when a handler throws something other than an `RPCError`.
@Suite("Error statuses")
struct ErrorStatusTests {
    let logger = Logger(label: "test.errors")

    func status(_ error: any Error) -> RPCError? {
        ErrorStatusInterceptor.status(for: error, method: "orrery.test.v1.Test/Call", logger: logger)
    }

    @Test(
        "an RPCError passes; a cancellation is CANCELLED; anything else INTERNAL with an incident id, never a bare UNKNOWN"
    )
    func mapping() {
        let refusal = RPCError(code: .permissionDenied, message: "no")
        #expect(status(refusal) == refusal)
        #expect(status(CancellationError())?.code == .cancelled)
        // A stream whose caller went away (it closed its watch) is no incident.
        #expect(status(ChannelError.ioOnClosedChannel)?.code == .cancelled)
        #expect(status(ChannelError.alreadyClosed)?.code == .cancelled)
        #expect(status(ChannelError.connectTimeout(.seconds(1)))?.code == .internalError)
        struct Surprise: Error {}
        let unexpected = status(Surprise())
        #expect(unexpected?.code == .internalError)
        #expect(
            unexpected?.message.hasPrefix("an internal error (incident ") == true, "\(String(describing: unexpected))")
    }

    @Test(
        "a message that quotes a caller's long input is cut at 1 KiB on a character boundary, saying how much was left out; JSON errors too"
    )
    func boundedMessage() throws {
        let id = String(repeating: "ü", count: 150_000)  // 300,000 bytes
        let refusal = RPCError(code: .invalidArgument, message: "id: a deployment id starts with dep_, got '\(id)'")
        let answered = try #require(status(refusal))
        #expect(answered.code == .invalidArgument)
        #expect(answered.message.utf8.count <= RPCError.maximumMessageBytes)
        #expect(answered.message.hasPrefix("id: a deployment id starts with dep_, got 'üü"))
        let cut = try #require(answered.message.split(separator: "… (").last)
        let keptBytes = answered.message.utf8.count - cut.utf8.count - "… (".utf8.count
        #expect(cut == "\(refusal.message.utf8.count - keptBytes) bytes more)")
        #expect(!answered.message.contains("\u{FFFD}"))
        let json = JSONGateway.errorBody(refusal)
        #expect(json.utf8.count < 1100 && json.hasPrefix(#"{"code": "invalid_argument", "message": "id: a deployment"#))
        // A message within the bound passes as it is.
        let short = RPCError(code: .notFound, message: String(repeating: "x", count: RPCError.maximumMessageBytes))
        #expect(status(short) == short)
    }

    @Test(
        "over gRPC: a handler's unexpected error is INTERNAL with an incident id, its long refusal bounded, a stream's error mapped too"
    )
    func overTheWire() async throws {
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
            services: [FailingHealth()], interceptors: [ErrorStatusInterceptor(logger: logger)])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            defer { server.beginGracefulShutdown() }
            let port = try #require(try await server.listeningAddress?.ipv4?.port)
            try await withGRPCClient(
                transport: .http2NIOPosix(
                    target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
            ) { client in
                let health = Grpc_Health_V1_Health.Client(wrapping: client)
                let surprise = await #expect(throws: RPCError.self) {
                    try await health.check(.with { $0.service = "surprise" })
                }
                #expect(surprise?.code == .internalError, "\(String(describing: surprise))")
                #expect(surprise?.message.hasPrefix("an internal error (incident ") == true)
                let long = await #expect(throws: RPCError.self) {
                    try await health.check(.with { $0.service = "long" })
                }
                #expect(long?.code == .invalidArgument)
                #expect((long?.message.utf8.count ?? .max) <= RPCError.maximumMessageBytes)
                #expect(long?.message.hasSuffix("bytes more)") == true)
                let streamed = await #expect(throws: RPCError.self) {
                    try await health.watch(.with { $0.service = "surprise" }) { response in
                        for try await _ in response.messages {}
                    }
                }
                #expect(streamed?.code == .internalError, "\(String(describing: streamed))")
                client.beginGracefulShutdown()
            }
        }
    }

    /// A health service that fails: "surprise" with an error that is no `RPCError`, "long" with a refusal quoting
    /// 300 KB of input; Watch fails after its first message.
    struct FailingHealth: Grpc_Health_V1_Health.SimpleServiceProtocol {
        struct Surprise: Error {}

        func check(
            request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext
        ) async throws -> Grpc_Health_V1_HealthCheckResponse {
            if request.service == "long" {
                throw RPCError(
                    code: .invalidArgument, message: "got '\(String(repeating: "x", count: 300_000))'")
            }
            throw Surprise()
        }

        func list(
            request: Grpc_Health_V1_HealthListRequest, context: ServerContext
        ) async throws -> Grpc_Health_V1_HealthListResponse {
            throw Surprise()
        }

        func watch(
            request: Grpc_Health_V1_HealthCheckRequest,
            response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
            context: ServerContext
        ) async throws {
            try await response.write(.with { $0.status = .serving })
            throw Surprise()
        }
    }

    @Test(
        "a client whose connection pool gave up making connections (the database down for a while) or shut down is UNAVAILABLE, not INTERNAL"
    )
    func connectionPoolErrors() {
        let tripped = status(ConnectionPoolError.connectionCreationCircuitBreakerTripped)
        #expect(
            tripped?.code == .unavailable && tripped?.message.contains("database") == true,
            "\(String(describing: tripped))")
        #expect(status(ConnectionPoolError.poolShutdown)?.code == .unavailable)
        #expect(status(ConnectionPoolError.requestCancelled)?.code == .cancelled)
    }

    @Test(
        "a database that cannot be reached is UNAVAILABLE (retry); a statement the server refused is INTERNAL",
        .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
    func databaseErrors() async throws {
        // A port nothing listens on.
        let closed = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = closed.localAddress?.port ?? 1
        try await closed.close()
        var unreachable: (any Error)?
        do {
            _ = try await PostgresConnection.connect(
                configuration: .init(
                    host: "127.0.0.1", port: port, username: "x", password: nil, database: "x", tls: .disable),
                id: 1, logger: logger)
        } catch {
            unreachable = error
        }
        let connectionError = try #require(unreachable as? PSQLError)
        #expect(status(connectionError)?.code == .unavailable)
        #expect(status(connectionError)?.message == "the service's database did not answer; retry")

        try await TestDatabase.withDatabase { database in
            try await database.withClient(schema: "errors") { client in
                var refused: (any Error)?
                do {
                    try await client.query("SELECT * FROM no_such_table", logger: logger)
                } catch {
                    refused = error
                }
                let serverError = try #require(refused as? PSQLError)
                #expect(status(serverError)?.code == .internalError)
            }
        }
    }
}
