import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOPosix
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf
import Synchronization
import Testing

@testable import OrreryRuntime

@Suite("Connection loops")
struct ConnectionLoopsTests {
    /// Answers SERVING when its call's task ran on the event loop of the call's connection.
    final class LoopReporter: Grpc_Health_V1_Health.SimpleServiceProtocol, Sendable {
        /// The contexts of the calls answered.
        let seen = Mutex<[ServerContext]>([])

        func check(
            request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext
        ) async throws -> Grpc_Health_V1_HealthCheckResponse {
            seen.withLock { $0.append(context) }
            let loop = try #require(ConnectionLoops.executor(for: context)).eventLoop
            let onLoop = try await ConnectionLoops.onCallLoop(of: context) {
                // Before and after a suspension resumed from another thread.
                let before = loop.inEventLoop
                try await Task.sleep(for: .milliseconds(2))
                return before && loop.inEventLoop
            }
            return .with { $0.status = onLoop ? .serving : .notServing }
        }

        func list(
            request: Grpc_Health_V1_HealthListRequest, context: ServerContext
        ) async throws -> Grpc_Health_V1_HealthListResponse { .init() }

        func watch(
            request: Grpc_Health_V1_HealthCheckRequest,
            response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
            context: ServerContext
        ) async throws {}
    }

    /// A plaintext server of `reporter` on `address` that records its connections' loops as `ServiceRunner`'s do.
    static func server(on address: GRPCNIOTransportCore.SocketAddress, _ reporter: LoopReporter)
        -> GRPCServer<HTTP2ServerTransport.Posix>
    {
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
            ConnectionLoops.accepted(channel)
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        return GRPCServer(
            transport: .http2NIOPosix(address: address, transportSecurity: .plaintext, config: config),
            services: [reporter])
    }

    @Test("a call finds its connection's event loop and runs there; a closed connection is forgotten")
    func callRunsOnItsConnectionsLoop() async throws {
        let reporter = LoopReporter()
        let server = Self.server(on: .ipv4(host: "127.0.0.1", port: 0), reporter)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            defer { server.beginGracefulShutdown() }
            let port = try #require(try await server.listeningAddress?.ipv4?.port)
            // Several connections, spread over the server's loops (one per core).
            for _ in 0..<8 {
                try await withGRPCClient(
                    transport: .http2NIOPosix(
                        target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
                ) { client in
                    let health = Grpc_Health_V1_Health.Client(wrapping: client)
                    let first = try await health.check(.init())
                    let second = try await health.check(.init())
                    #expect(first.status == .serving && second.status == .serving)
                }
            }
            // Closed connections are forgotten (the server closes its side a moment after the client's).
            let deadline = ContinuousClock.now + .seconds(30)
            let contexts = reporter.seen.withLock { $0 }
            #expect(contexts.count == 16)
            while contexts.contains(where: ConnectionLoops.knows), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(!contexts.contains(where: ConnectionLoops.knows))
        }
    }

    /// Whether this machine has an IPv6 loopback to listen on.
    static var ipv6Loopback: Bool {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        guard let channel = try? ServerBootstrap(group: group).bind(host: "::1", port: 0).wait() else { return false }
        try? channel.close().wait()
        return true
    }

    @Test(
        "the key matches gRPC's own spelling of both addresses over IPv6 too",
        .enabled(if: ipv6Loopback, "this machine has no IPv6 loopback"))
    func ipv6() async throws {
        let server = Self.server(on: .ipv6(host: "::1", port: 0), LoopReporter())
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            defer { server.beginGracefulShutdown() }
            let port = try #require(try await server.listeningAddress?.ipv6?.port)
            try await withGRPCClient(
                transport: .http2NIOPosix(target: .ipv6(address: "::1", port: port), transportSecurity: .plaintext)
            ) { client in
                let answer = try await Grpc_Health_V1_Health.Client(wrapping: client).check(.init())
                #expect(answer.status == .serving)
            }
        }
    }
}
