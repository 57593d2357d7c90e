import Foundation
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// The connector against a real network namespace of its own (`unshare --net`, as root): the sockets it hands out
/// reach the namespace's loopback, not the host's, and its helper is replaced when it dies.
@Suite("Sandbox connector: connections into a network namespace", .serialized)
struct SandboxConnectorTests {
    /// Inside its own network namespace: serves "inside\n" to every connection on 127.0.0.1:`port`, after printing
    /// "ready".
    static func server(port: Int) -> [String] {
        [
            "--net", "/bin/sh", "-c",
            """
            ip link set lo up && exec python3 -c '
            import socket
            listener = socket.create_server(("127.0.0.1", \(port)), backlog=128)
            print("ready", flush=True)
            while True:
                connection, _ = listener.accept()
                connection.sendall(b"inside\\n")
                connection.close()
            '
            """,
        ]
    }

    /// What a connected socket reads until the other side closes.
    static func read(_ socket: Int32) -> String {
        defer { close(socket) }
        var flags = fcntl(socket, F_GETFL)
        flags &= ~O_NONBLOCK
        _ = fcntl(socket, F_SETFL, flags)
        var text = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
            text += buffer[0..<count]
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The agent's connector helpers running in network namespace `network`.
    static func helpers(in network: String) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = Int32(entry),
                let arguments = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/ns/net")) == network
            else { return nil }
            let words = arguments.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return words.last == "connector" && words.contains { $0.hasSuffix("/device-agent") } ? pid : nil
        }
    }

    @Test(
        "connections made with sockets from the namespace reach its loopback: 40 at once through one helper; a closed port is refused with its reason; a killed helper is replaced",
        .enabled(if: geteuid() == 0, "makes a network namespace (as root)"))
    func connectsInside() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("connector-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let port = try TestPorts.unused()
        let server = try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/unshare"), arguments: Self.server(port: port), outputDirectory: directory)
        defer { server.signal(SIGKILL) }
        _ = try await server.firstLine { $0 == "ready" ? true : nil }
        let network = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server.pid)/ns/net")
        let connector = SandboxConnector(agentExecutable: TestEnvironment.executable("device-agent").path)
        defer { connector.forget("job") }

        // Generous: a connection's time includes starting a helper (a debug build of the agent) on a loaded machine.
        let timeout = Duration.seconds(60)
        func connectAll(_ count: Int) async throws -> [String] {
            try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<count {
                    group.addTask {
                        let socket = try await connector.connect(
                            "job", member: { server.pid }, port: port, timeout: timeout)
                        // Read on a Dispatch thread: blocking reads on the concurrency pool would stall the other
                        // suites of this test process.
                        return await withCheckedContinuation { read in
                            DispatchQueue.global().async { read.resume(returning: Self.read(socket)) }
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        // Nothing listens on the host's own loopback at that port: only the namespace's server answers. (One first:
        // the helper is started by the first connection.)
        #expect(try await connectAll(1) == ["inside\n"])
        #expect(try await connectAll(40) == Array(repeating: "inside\n", count: 40))
        let helpers = Self.helpers(in: network)
        #expect(helpers.count == 1, "\(helpers)")

        let closed = try TestPorts.unused()
        await #expect {
            _ = try await connector.connect("job", member: { server.pid }, port: closed, timeout: timeout)
        } throws: { error in
            "\(error)".contains("tcp \(closed): connection refused")
        }

        // Its helper dies: connections go on (the sockets it made ahead of need, then a new helper's).
        for helper in helpers { kill(helper, SIGKILL) }
        for _ in 0..<40 { #expect(try await connectAll(1) == ["inside\n"]) }
        let replaced = Self.helpers(in: network)
        #expect(replaced.count == 1 && replaced != helpers, "\(replaced) after \(helpers)")
    }
}

@Suite("Early bytes written before the event loop has the connection")
struct SendNowTests {
    @Test("as much as the socket takes goes at once, in order; the rest is returned; nothing to send sends nothing")
    func sendsWhatFits() throws {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { for end in pair { close(end) } }
        var small: Int32 = 4096
        setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        _ = fcntl(pair[0], F_SETFL, fcntl(pair[0], F_GETFL) | O_NONBLOCK)
        #expect(SandboxTunnels.sendNow(Data(), on: pair[0]).isEmpty)
        let bytes = Data((0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let rest = SandboxTunnels.sendNow(bytes, on: pair[0])
        #expect(!rest.isEmpty && rest.count < bytes.count)
        #expect(rest == bytes.suffix(rest.count))
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while received.count < bytes.count - rest.count {
            let count = recv(pair[1], &buffer, buffer.count, 0)
            guard count > 0 else { break }
            received += buffer[0..<count]
        }
        #expect(received == bytes.prefix(bytes.count - rest.count))
        // A small request fits at once.
        #expect(SandboxTunnels.sendNow(Data("GET / HTTP/1.1\r\n\r\n".utf8), on: pair[1]).isEmpty)
    }
}
