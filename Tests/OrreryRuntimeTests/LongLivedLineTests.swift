import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOPosix
import OrreryProto
import OrreryRuntimeCore
import Testing

@Suite("A line kept open to a peer service")
struct LongLivedLineTests {
    @Test(
        "a peer back after a 30 s outage, just after a failed connection attempt, is reached within 11 s (gRPC's default back-off waits at least 13 s more)"
    )
    func peerBackAfterOutage() async throws {
        let book = HealthStatusBook()
        book.set(.serving, for: "")
        let first = try await Self.startServer(book, port: 0)
        let port = first.port
        try await withGRPCClient(
            transport: .http2NIOPosix(
                target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext,
                config: ServiceProbe.longLivedLine)
        ) { client in
            let health = Grpc_Health_V1_Health.Client(wrapping: client)
            // The first call waits for the connection as long as a loaded machine needs (a CI run's full suite once
            // took more than 2 s); the calls below fail fast while no connection is up.
            var patient = CallOptions.defaults
            patient.timeout = .seconds(60)
            #expect(try await health.check(.init(), options: patient).status == .serving)
            var options = CallOptions.defaults
            options.timeout = .seconds(2)
            options.waitForReady = false
            // The peer goes away: its port answers each connection attempt by closing it. The client keeps calling
            // (as a device's resent receipts do), so it keeps trying to connect, backing off after each failure.
            first.stop()
            try await Task.sleep(for: .seconds(1))
            let refuser = try await ConnectionRefuser.start(port: port)
            let down = ContinuousClock.now
            let calls = Task {
                while !Task.isCancelled {
                    _ = try? await health.check(.init(), options: options)
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
            defer { calls.cancel() }
            // After 30 s down, the peer comes back right after a failed attempt: the wait until the next one is the
            // back-off at that point (gRPC's default: at least 13 s; ours: at most 6 s, and 5 s more for a loaded
            // machine).
            var attempts = refuser.attempts.makeAsyncIterator()
            while let attempt = await attempts.next(), attempt < down + .seconds(30) {}
            try await refuser.stop()
            let second = try await Self.startServer(book, port: port)
            defer { second.stop() }
            let back = ContinuousClock.now
            var answered = false
            while !answered, ContinuousClock.now < back + .seconds(11) {
                answered = (try? await health.check(.init(), options: options).status) == .serving
                if !answered { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(answered, "the peer was back for 11 s and no call reached it")
            client.beginGracefulShutdown()
        }
    }

    /// A listener that closes every connection it accepts, yielding the time of each.
    struct ConnectionRefuser {
        let channel: any Channel
        let attempts: AsyncStream<ContinuousClock.Instant>

        static func start(port: Int) async throws -> ConnectionRefuser {
            let (attempts, continuation) = AsyncStream.makeStream(of: ContinuousClock.Instant.self)
            let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    continuation.yield(.now)
                    channel.close(promise: nil)
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                .bind(host: "127.0.0.1", port: port).get()
            return ConnectionRefuser(channel: channel, attempts: attempts)
        }

        func stop() async throws {
            try await channel.close()
        }
    }

    /// A health-only gRPC server on loopback, serving until `stop()`.
    struct RunningServer {
        let port: Int
        let server: GRPCServer<HTTP2ServerTransport.Posix>
        let task: Task<Void, any Error>

        func stop() {
            server.beginGracefulShutdown()
            task.cancel()
        }
    }

    static func startServer(_ book: HealthStatusBook, port: Int) async throws -> RunningServer {
        let server = GRPCServer(
            transport: .http2NIOPosix(
                address: .ipv4(host: "127.0.0.1", port: port), transportSecurity: .plaintext),
            services: [HealthService(book: book)])
        let task = Task { try await server.serve() }
        guard let address = try await server.listeningAddress?.ipv4 else {
            task.cancel()
            throw RPCError(code: .internalError, message: "the test server did not bind")
        }
        return RunningServer(port: address.port, server: server, task: task)
    }
}
