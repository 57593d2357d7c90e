import ArgumentParser
import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import GRPCCore
import NIOCore
import OrreryHTTPClient
import OrreryProto
import SwiftProtobuf

/// `orrery-bench port-forward`: busybox httpd in a real agent's sandbox serving a file of random bytes, read through
/// `orrery port-forward` (consumer → orchestrator → the device's line → the sandbox) and, in the same run, from the
/// same server program on this host's loopback directly: one stream's throughput, 32 streams' together, and the
/// latency a small request's connection gains.
struct PortForwardBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "port-forward", abstract: "Throughput and latency through orrery port-forward, beside direct.")

    @Option(help: "The orchestrator, host:port.") var orchestrator: String
    @Option(help: "The operator's key file (the submitting consumer).") var key: String
    @Option(help: "The orrery CLI (its port-forward command is measured).") var cli: String
    @Option(help: "MiB of the file served.") var mebibytes = 1024
    @Option(help: "Streams read at once for the aggregate.") var streams = 32
    @Option(help: "Small requests timed, each on a new connection.") var requests = 200
    @Option(help: "Only devices of this owner (the benchmark's agents).") var allowedProvider: [String] = []
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/services.md"

    static let busybox = "/bin/busybox"

    func run() async throws {
        let size = UInt64(mebibytes) << 20
        let server =
            "head -c \(size) /dev/urandom > /work/big.bin; echo ok > /work/ok; "
            + "exec \(Self.busybox) httpd -f -p 127.0.0.1:8080 -h /work"
        let spec = Orrery_Orchestrator_V1_WorkloadSpec.with {
            $0.name = "bench-port-forward"
            $0.allocations = [
                .with {
                    $0.name = "web"
                    $0.executor = .process
                    $0.artifact = .with { $0.text = server }
                    $0.resources = .with {
                        $0.cpuCores = 1
                        $0.ramMib = 128
                        $0.diskMib = UInt64(mebibytes + 64)
                    }
                    $0.maxDurationSeconds = 1800
                    $0.outputs = []
                    $0.ports = [
                        .with {
                            $0.name = "http"
                            $0.port = 8080
                            $0.protocol = .http
                        }
                    ]
                    $0.health = .with {
                        $0.http = .with {
                            $0.port = 8080
                            $0.path = "/ok"
                        }
                        $0.intervalSeconds = 1
                        $0.startPeriodSeconds = 300
                    }
                    $0.constraints = .with { $0.allowedProviders = allowedProvider }
                }
            ]
        }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("orrery-bench-pf-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        // The same server program on this host's loopback, a file of the same size: the direct baseline.
        try await Self.shell("head -c \(size) /dev/urandom > '\(work.path)/big.bin'; echo ok > '\(work.path)/ok'")
        let directPort = try Self.freePort()
        let direct = try Self.start(Self.busybox, ["httpd", "-f", "-p", "127.0.0.1:\(directPort)", "-h", work.path])
        defer { Self.stop(direct) }

        let deployment = try await BenchConsumer.deployAndWait(spec, orchestrator: orchestrator, key: key)
        let forwarded = Pipe()
        let forwarder = try Self.start(
            cli, ["port-forward", deployment.id, "web:8080", "0", "--orchestrator", orchestrator, "--key", key],
            output: forwarded)
        defer { Self.stop(forwarder) }
        let forwardedPort = try Self.printedPort(forwarded)

        func url(_ port: Int, _ path: String) throws -> URL {
            guard let url = URL(string: "http://127.0.0.1:\(port)\(path)") else { throw ValidationError("no URL") }
            return url
        }
        var results: [(what: String, direct: String, forwarded: String, ratio: String)] = []
        // One stream, twice each, alternating; the better of two.
        var single: [String: Double] = [:]
        for _ in 0..<2 {
            for (name, port) in [("direct", directPort), ("forwarded", forwardedPort)] {
                let rate = try await Self.read(try url(port, "/big.bin"), expecting: size)
                single[name] = max(single[name] ?? 0, rate)
            }
        }
        results.append(
            (
                "one stream, \(mebibytes) MiB (better of 2)", String(format: "%.0f MiB/s", single["direct"] ?? 0),
                String(format: "%.0f MiB/s", single["forwarded"] ?? 0),
                String(format: "%.0f %%", 100 * (single["forwarded"] ?? 0) / max(single["direct"] ?? 1, 1))
            ))
        var aggregate: [String: Double] = [:]
        for (name, port) in [("direct", directPort), ("forwarded", forwardedPort)] {
            aggregate[name] = try await Self.aggregate(try url(port, "/big.bin"), streams: streams, for: .seconds(10))
        }
        results.append(
            (
                "\(streams) streams at once, 10 s, together", String(format: "%.0f MiB/s", aggregate["direct"] ?? 0),
                String(format: "%.0f MiB/s", aggregate["forwarded"] ?? 0),
                String(format: "%.0f %%", 100 * (aggregate["forwarded"] ?? 0) / max(aggregate["direct"] ?? 1, 1))
            ))
        var latency: [String: (p50: Double, p99: Double)] = [:]
        for (name, port) in [("direct", directPort), ("forwarded", forwardedPort)] {
            latency[name] = try await Self.latency(try url(port, "/ok"), requests: requests)
        }
        let directLatency = latency["direct"] ?? (0, 0)
        let forwardedLatency = latency["forwarded"] ?? (0, 0)
        results.append(
            (
                "GET of 3 bytes on a new connection, p50 / p99 (\(requests))",
                String(format: "%.2f / %.2f ms", directLatency.p50, directLatency.p99),
                String(format: "%.2f / %.2f ms", forwardedLatency.p50, forwardedLatency.p99),
                String(
                    format: "+%.2f / +%.2f ms", forwardedLatency.p50 - directLatency.p50,
                    forwardedLatency.p99 - directLatency.p99)
            ))
        _ = try? await BenchConsumer.withOrchestrator(orchestrator, key: key) {
            (orchestrator, _: BenchConsumer.Authorities) in
            try await orchestrator.cancelDeployment(
                .with {
                    $0.id = deployment.id
                    $0.reason = "benchmark over"
                })
        }
        var lines = [
            "",
            "## Port-forward",
            "",
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release builds: busybox httpd in a real agent's sandbox serving \(mebibytes) MiB of random bytes, read through `orrery port-forward` (client → CLI → orchestrator → the device's line → the sandbox), beside the same server program on this host's loopback read directly, in the same run, by the same in-process HTTP client (each request on a new connection).",
            "",
            "| measurement | direct | through port-forward | forwarded / direct |",
            "|---|---|---|---|",
        ]
        for result in results {
            lines.append("| \(result.what) | \(result.direct) | \(result.forwarded) | \(result.ratio) |")
        }
        lines += [
            "",
            "Goals (issue \"Services\", for ingress and the ensemble network over the same lines): one stream ≥ 40 % of direct and ≥ 100 MiB/s; added latency p50 ≤ 2 ms between agents through the orchestrator.",
        ]
        try publishResults(lines, to: out)
    }

    /// Reads all of `url`, checking its size; MiB/s.
    static func read(_ url: URL, expecting size: UInt64, headers: [(String, String)] = []) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let bytes = try await HTTPClient.stream(url, headers: headers, idleTimeout: .seconds(60)) { head, body in
            guard head.status == 200 else { throw ValidationError("\(url): HTTP \(head.status)") }
            var count: UInt64 = 0
            while let buffer = try await body.next() { count += UInt64(buffer.readableBytes) }
            return count
        }
        guard bytes == size else { throw ValidationError("\(url): \(bytes) of \(size) bytes") }
        return Double(bytes) / 1_048_576 / ImageBenchCommand.seconds(clock.now - start)
    }

    /// `streams` readers of `url` at once for `window`: the bytes all of them read in it, MiB/s.
    static func aggregate(
        _ url: URL, streams: Int, for window: Duration, headers: [(String, String)] = []
    ) async throws -> Double {
        let deadline = ContinuousClock.now + window
        let total = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for _ in 0..<streams {
                group.addTask {
                    try await HTTPClient.stream(url, headers: headers, idleTimeout: .seconds(60)) { head, body in
                        guard head.status == 200 else { throw ValidationError("\(url): HTTP \(head.status)") }
                        var count: UInt64 = 0
                        while ContinuousClock.now < deadline, let buffer = try await body.next() {
                            count += UInt64(buffer.readableBytes)
                        }
                        return count
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        return Double(total) / 1_048_576 / ImageBenchCommand.seconds(window)
    }

    /// `requests` GETs of `url` one after another, each on a new connection: p50 and p99 in milliseconds.
    static func latency(_ url: URL, requests: Int, headers: [(String, String)] = []) async throws -> (
        p50: Double, p99: Double
    ) {
        var times: [Double] = []
        let clock = ContinuousClock()
        for _ in 0..<(requests + 10) {
            let start = clock.now
            let body = try await HTTPClient.stream(url, headers: headers) { head, body in
                guard head.status == 200 else { throw ValidationError("\(url): HTTP \(head.status)") }
                return try await body.collect(limit: 1024)
            }
            guard body == Array("ok\n".utf8) else { throw ValidationError("\(url): unexpected body") }
            times.append(ImageBenchCommand.seconds(clock.now - start) * 1000)
        }
        let sorted = times.dropFirst(10).sorted()  // the first ten warm up
        return (sorted[sorted.count / 2], sorted[min(sorted.count - 1, sorted.count * 99 / 100)])
    }

    static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0
            }
        }
        guard ok else { throw ValidationError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func start(_ executable: String, _ arguments: [String], output: Pipe? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Ends a helper process started with `start`. SIGKILL: a child inherits this process's blocked signals, so
    /// busybox httpd ignored the SIGTERM of `terminate()` and outlived the benchmark, holding its port.
    static func stop(_ process: Process) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    static func shell(_ command: String) async throws {
        let process = try start("/bin/sh", ["-c", command])
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("\(command) exited \(process.terminationStatus)")
        }
    }

    /// The port `orrery port-forward` prints on its first line.
    static func printedPort(_ pipe: Pipe) throws -> Int {
        var text = ""
        while !text.contains("\n") {
            let data = pipe.fileHandleForReading.availableData
            guard !data.isEmpty else { throw ValidationError("orrery port-forward ended: \(text)") }
            text += String(decoding: data, as: UTF8.self)
        }
        guard let line = text.split(separator: "\n").first, line.hasPrefix("Forwarding 127.0.0.1:"),
            let port = Int(line.dropFirst("Forwarding 127.0.0.1:".count).prefix { $0.isNumber })
        else { throw ValidationError("orrery port-forward said: \(text)") }
        return port
    }
}
