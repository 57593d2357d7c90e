import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import SwiftProtobuf
import OrreryTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What a service does with connections that do nothing, with more connections than it allows, and with more
/// concurrent calls on one connection than it serves — measured from outside, over raw sockets and Python's grpcio.
@Suite(
    "Connections: idle ones closed, a per-process limit, stream concurrency advertised", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct TransportLimitsTests {
    /// Runs `body` with an identity service started with `arguments` on a throwaway database (it needs nothing
    /// else) and its network's credentials; the service is killed afterwards.
    static func withIdentity(
        _ name: String, _ arguments: [String], _ body: (RunningService, TestNetwork) async throws -> Void
    ) async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory(name) { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("network"))
                let identity = try await RunningService.start(
                    "identity", extraArguments: arguments,
                    environment: database.serviceEnvironment.merging(network.environment(for: "identity")) { $1 },
                    directory: directory)
                defer { identity.child.signal(SIGKILL) }
                try await body(identity, network)
            }
        }
    }

    /// A TCP connection to 127.0.0.1:`port` that sends nothing.
    final class RawConnection {
        let descriptor: Int32

        init(port: Int) throws {
            descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        }

        deinit { close(descriptor) }

        /// Sends `bytes`; false once the peer has closed (no SIGPIPE).
        @discardableResult
        func send(_ bytes: [UInt8]) -> Bool {
            bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                == bytes.count
        }

        /// Reads until the peer closes; true once it did (end of file or a reset), false if it still had not
        /// after `timeout`.
        func closedByPeer(within timeout: Duration) async -> Bool {
            let deadline = ContinuousClock.now + timeout
            var buffer = [UInt8](repeating: 0, count: 4096)
            while ContinuousClock.now < deadline {
                var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                if poll(&poller, 1, 100) > 0 {
                    let count = read(descriptor, &buffer, buffer.count)
                    if count <= 0 { return true }
                } else {
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
            return false
        }
    }

    @Test("a connection that sends nothing is closed after the idle timeout, on the gRPC and the HTTP port")
    func idleConnectionsClosed() async throws {
        try await Self.withIdentity("transport-idle", ["--idle-timeout", "2"]) { identity, _ in
            let grpc = try RawConnection(port: identity.ready.grpcPort)
            let http = try RawConnection(port: identity.ready.httpPort)
            // Positive evidence only: the server closes each; a generous bound for a loaded machine.
            #expect(await grpc.closedByPeer(within: .seconds(60)), "the idle gRPC connection is still open")
            #expect(await http.closedByPeer(within: .seconds(60)), "the idle HTTP connection is still open")
            #expect(identity.child.isRunning)
        }
    }

    @Test(
        "a request dripped a byte at a time (slowloris) is cut though bytes keep arriving: an HTTP head at the idle timeout, an HTTP/2 HEADERS frame at the idle timeout plus gRPC's grace"
    )
    func slowRequestHeadClosed() async throws {
        try await Self.withIdentity("transport-slow-head", ["--idle-timeout", "2"]) { identity, _ in
            /// Sends `first`, then `drip` every 400 ms until the server closes; the time it took, or nil.
            func dripUntilClosed(port: Int, first: [UInt8], drip: [UInt8]) async throws -> Duration? {
                let connection = try RawConnection(port: port)
                let started = ContinuousClock.now
                #expect(connection.send(first))
                while ContinuousClock.now - started < .seconds(40) {
                    connection.send(drip)
                    if await connection.closedByPeer(within: .milliseconds(400)) {
                        return ContinuousClock.now - started
                    }
                }
                return nil
            }
            // HTTP/1.1: a header line every 400 ms, never finishing the head.
            let http = try await dripUntilClosed(
                port: identity.ready.httpPort,
                first: Array("POST /orrery.identity.v1.Identity/Info HTTP/1.1\r\nHost: localhost\r\n".utf8),
                drip: Array("X-Drip: a\r\n".utf8))
            let httpElapsed = try #require(http, "the dripping HTTP connection was never closed")
            #expect(httpElapsed >= .milliseconds(1500), "HTTP closed after \(httpElapsed), before the idle timeout")
            // HTTP/2: the preface, empty SETTINGS, then a HEADERS frame of 200 bytes for stream 1, one byte at a time.
            let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]
            let headers: [UInt8] = [0, 0, 200, 1, 4, 0, 0, 0, 1]
            let grpc = try await dripUntilClosed(
                port: identity.ready.grpcPort, first: preface + headers, drip: [0x40])
            let grpcElapsed = try #require(grpc, "the dripping HTTP/2 connection was never closed")
            #expect(grpcElapsed >= .milliseconds(1500), "HTTP/2 closed after \(grpcElapsed), before the idle timeout")
        }
    }

    @Test(
        "a gRPC connection with no call open is asked to leave (GOAWAY) after the idle timeout, though it answers pings"
    )
    func idleCallsEndConnection() async throws {
        // Idle timeout 3 s: the server pings after 3 s of silence and grpcio answers, so only the idle rule (no
        // call open for 3 s) can end this connection before the silence rule's 18 s.
        try await Self.withIdentity("transport-idle-calls", ["--idle-timeout", "3"]) { identity, _ in
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.python, arguments: [Self.probe, "idle", "127.0.0.1:\(identity.ready.grpcPort)", "60"])
            #expect(status == 0, "\(output)")
            let line = try #require(output.split(separator: "\n").last.map(String.init))
            let result = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(result["info"] as? String == "OK", "\(line)")
            let idleAfter = try #require(result["idle_after"] as? Double, "the channel never left READY: \(line)")
            #expect(idleAfter >= 2 && idleAfter < 16, "GOAWAY came \(idleAfter) s after the call, not about 3 s")
        }
    }

    @Test(
        "forged capabilities from one address cost at most its burst of verifications, then are refused RESOURCE_EXHAUSTED before any and the refused connection is not read for a while; a connection that authenticated keeps working"
    )
    func forgeriesThrottledPerSource() async throws {
        // One failure refilled per minute, three at once: nothing refills while the test runs.
        try await Self.withIdentity(
            "transport-forgeries", ["--auth-failures-per-minute", "1", "--auth-failure-burst", "3"]
        ) { identity, network in
            let audience = try DID(identity.ready.did)
            let catalog = try MethodCatalog(
                descriptorSet: try #require(Data(base64Encoded: OrreryDescriptorSet.base64)))
            let operatorKey = network.operatorKey
            let signer = InvocationSigner(
                key: operatorKey, subject: operatorKey.did, audience: audience, proofs: [], catalog: catalog)
            let list = try #require(catalog["orrery.identity.v1.Identity/ListRevocations"])
            let request = Orrery_Identity_V1_ListRevocationsRequest.with { $0.pageSize = 10 }
            let target = try #require(ServiceAddress("127.0.0.1:\(identity.ready.grpcPort)")).target
            try await withGRPCClient(
                transport: try .http2NIOPosix(target: target, transportSecurity: .plaintext), interceptors: [signer]
            ) { worker in
                let working = Orrery_Identity_V1_Identity.Client(wrapping: worker)
                #expect(await rpcCode { _ = try await working.listRevocations(request) } == nil)

                var forgedCodes: [RPCError.Code?] = []
                var durations: [Duration] = []
                var lastMessage = ""
                try await ServiceProbe.withClient(identity.grpcAddress) { attacker in
                    let identityClient = Orrery_Identity_V1_Identity.Client(wrapping: attacker)
                    for _ in 0..<6 {
                        let now = Int64(Date().timeIntervalSince1970)
                        let invocation = Invocation.issue(
                            by: operatorKey, subject: operatorKey.did, audience: audience, command: list.command,
                            arguments: ["page_size": .integer(10)], expiration: now + 120, issuedAt: now)
                        let forged = UCANEnvelope(
                            signing: invocation.envelope.payload, tag: UCANEnvelope.invocationTag, with: SigningKey())
                        var metadata = Metadata()
                        metadata.addString(
                            "Bearer " + (try UCANContainer.encodeText([forged.bytes])), forKey: "authorization")
                        let sent = ContinuousClock.now
                        do {
                            _ = try await identityClient.listRevocations(request, metadata: metadata)
                            forgedCodes.append(nil)
                        } catch let error as RPCError {
                            forgedCodes.append(error.code)
                            lastMessage = error.message
                        }
                        durations.append(ContinuousClock.now - sent)
                    }
                }
                #expect(
                    forgedCodes == [.unauthenticated, .unauthenticated, .unauthenticated]
                        + [.resourceExhausted, .resourceExhausted, .resourceExhausted],
                    "\(forgedCodes)")
                #expect(lastMessage.contains("127.0.0.1"), "\(lastMessage)")
                // After a refusal the server stops reading that connection for at least 1 s (a read it had already
                // asked for may still bring one more call): a later forgery waits in the attacker's own socket,
                // costing the server nothing meanwhile.
                let held = durations.dropFirst(4).max() ?? .zero
                #expect(held >= .milliseconds(900), "the calls after a refusal were answered in \(durations): not held")
                // The connection that authenticated before the flood is served; a new one from the same address
                // waits, even with a valid capability.
                #expect(await rpcCode { _ = try await working.listRevocations(request) } == nil)
                try await withGRPCClient(
                    transport: try .http2NIOPosix(target: target, transportSecurity: .plaintext),
                    interceptors: [signer]
                ) { fresh in
                    let newcomer = Orrery_Identity_V1_Identity.Client(wrapping: fresh)
                    #expect(await rpcCode { _ = try await newcomer.listRevocations(request) } == .resourceExhausted)
                }
            }
        }
    }

    @Test("a capability validly signed by a key the service does not trust counts against its source like a forgery")
    func untrustedRootsThrottled() async throws {
        try await Self.withIdentity(
            "transport-untrusted", ["--auth-failures-per-minute", "1", "--auth-failure-burst", "2"]
        ) { identity, _ in
            let audience = try DID(identity.ready.did)
            let catalog = try MethodCatalog(
                descriptorSet: try #require(Data(base64Encoded: OrreryDescriptorSet.base64)))
            let list = try #require(catalog["orrery.identity.v1.Identity/ListRevocations"])
            let stranger = SigningKey()
            var codes: [RPCError.Code?] = []
            try await ServiceProbe.withClient(identity.grpcAddress) { client in
                let identityClient = Orrery_Identity_V1_Identity.Client(wrapping: client)
                for _ in 0..<3 {
                    // Signed correctly, rooted in the stranger's own key: verified, then refused.
                    let now = Int64(Date().timeIntervalSince1970)
                    let invocation = Invocation.issue(
                        by: stranger, subject: stranger.did, audience: audience, command: list.command,
                        arguments: ["page_size": .integer(10)], expiration: now + 120, issuedAt: now)
                    var metadata = Metadata()
                    metadata.addString(
                        "Bearer " + (try UCANContainer.encodeText([invocation.envelope.bytes])),
                        forKey: "authorization")
                    do {
                        _ = try await identityClient.listRevocations(
                            .with { $0.pageSize = 10 }, metadata: metadata)
                        codes.append(nil)
                    } catch let error as RPCError {
                        codes.append(error.code)
                    }
                }
            }
            #expect(codes == [.permissionDenied, .permissionDenied, .resourceExhausted], "\(codes)")
        }
    }

    @Test("past the per-process limit a new connection is closed at once and counted; the service keeps serving")
    func connectionLimit() async throws {
        try await Self.withIdentity("transport-limit", ["--max-connections", "16", "--idle-timeout", "600"]) {
            identity, _ in
            // Connections are opened one at a time until the server closes one at once. On a busy machine another
            // process's client may hold a slot for a while (a reconnecting client of a service that had this port
            // before), so the refused one is the 17th or earlier, never later.
            var held: [RawConnection] = []
            var refusedAt: Int?
            for index in 0..<24 {
                let connection = try RawConnection(port: identity.ready.grpcPort)
                // Held ones stay open for 600 s; a refused one is closed as soon as it is accepted.
                if await connection.closedByPeer(within: .milliseconds(index < 12 ? 50 : 1500)) {
                    refusedAt = index
                    break
                }
                held.append(connection)
            }
            let refused = try #require(refusedAt, "24 connections were all kept past a limit of 16")
            #expect(refused <= 16, "the connection closed was number \(refused + 1), past the limit of 16")
            #expect(held.count == refused)
            // Room again once some close: metrics over HTTP count the refusal, health answers.
            held.removeFirst(4)
            var metrics = ""
            for _ in 0..<100 {
                if let text = try? await Self.fetch(port: identity.ready.httpPort, path: "/metrics"), !text.isEmpty {
                    metrics = text
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(metrics.contains("orrery_connections_refused_total 1\n"), "\(metrics.prefix(400))")
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.python,
                arguments: [Self.probe, "health", "127.0.0.1:\(identity.ready.grpcPort)"])
            #expect(status == 0 && output.contains("SERVING"), "\(output)")
            _ = held
        }
    }

    @Test("grpcio queues a call past the advertised stream limit instead of losing every call on the connection")
    func streamConcurrencyAdvertised() async throws {
        try await Self.withIdentity("transport-streams", []) { identity, _ in
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.python,
                arguments: [Self.probe, "streams", "127.0.0.1:\(identity.ready.grpcPort)", "100"])
            #expect(status == 0, "\(output)")
            let line = try #require(output.split(separator: "\n").last.map(String.init))
            let result = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(result["watching"] as? Int == 100, "\(line)")
            #expect(result["queued"] as? String == "OK", "\(line)")
            #expect(result["alive"] as? Int == 99, "\(line)")
        }
    }

    @Test("a request message past 4 MiB is refused RESOURCE_EXHAUSTED with the sizes; the connection serves on")
    func oversizedMessage() async throws {
        try await Self.withIdentity("transport-oversized", []) { identity, _ in
            let address = "127.0.0.1:\(identity.ready.grpcPort)"
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.python, arguments: [Self.probe, "oversized", address, String(5 << 20)])
            #expect(status == 0, "\(output)")
            #expect(output.contains("RESOURCE_EXHAUSTED") && output.contains("larger than the limit"), "\(output)")
            let health = try await ChildProcess.run(TestEnvironment.python, arguments: [Self.probe, "health", address])
            #expect(health.output.contains("SERVING"), "\(health.output)")
        }
    }

    static var probe: String {
        TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/grpc_probe.py").path
    }

    /// GET over HTTP/1.1 with curl.
    static func fetch(port: Int, path: String) async throws -> String {
        let (status, output) = try await ChildProcess.run(
            URL(fileURLWithPath: "/usr/bin/curl"),
            arguments: ["-sf", "--max-time", "10", "http://127.0.0.1:\(port)\(path)"])
        return status == 0 ? output : ""
    }
}
