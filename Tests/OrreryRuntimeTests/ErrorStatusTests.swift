import GRPCCore
import Logging
import NIOCore
import NIOPosix
import OrreryRuntimeCore
import OrreryTestSupport
import PostgresNIO
import Testing

@testable import OrreryRuntime

/// What a caller is answered when a handler throws something other than an `RPCError`.
@Suite("Error statuses")
struct ErrorStatusTests {
    let logger = Logger(label: "test.errors")

    func status(_ error: any Error) -> RPCError? {
        ErrorStatusInterceptor.status(for: error, method: "orrery.test.v1.Test/Call", logger: logger) as? RPCError
    }

    @Test(
        "an RPCError passes; a cancellation is CANCELLED; anything else INTERNAL with an incident id, never a bare UNKNOWN"
    )
    func mapping() {
        let refusal = RPCError(code: .permissionDenied, message: "no")
        #expect(status(refusal) == refusal)
        #expect(status(CancellationError())?.code == .cancelled)
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
