import ArgumentParser
import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import GRPCCore
import OrreryHTTPClient
import OrreryProto
import SwiftProtobuf

/// `orrery-bench ingress`: busybox httpd in a real agent's sandbox serving a file of random bytes, read (1) from this
/// host through the orchestrator's ingress by its host name, beside the same server program on this host's loopback
/// read directly by the same client; (2) from another allocation's sandbox by name over the ensemble network, beside
/// a busybox httpd inside that sandbox read directly by the same client there; and (3) what 1,000 idle connections
/// through the ingress cost the agents carrying them.
struct IngressBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingress",
        abstract: "Throughput, latency and idle-connection memory through the ingress and the ensemble network.")

    @Option(help: "The orchestrator, host:port (it runs an ingress on 127.0.0.1).") var orchestrator: String
    @Option(help: "The operator's key file (the submitting consumer).") var key: String
    @Option(help: "MiB of the file served.") var mebibytes = 1024
    @Option(help: "Streams read at once for the aggregate.") var streams = 32
    @Option(help: "Small requests timed, each on a new connection.") var requests = 200
    @Option(help: "Idle connections held through the ingress for the memory measurement.") var idle = 1000
    @Option(help: "Process ids of the agents (their resident memory is measured).") var agentPid: [Int32] = []
    @Option(help: "Only devices of this owner (the benchmark's agents).") var allowedProvider: [String] = []
    @Option(
        help:
            "Two devices (DIDs), web's and probe's, so that the ensemble network's path runs between two agents; with --agent-pid, they are its first two agents, in that order."
    ) var device: [String] = []
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/services.md"

    static let marker = "ORRERY-BENCH "

    func validate() throws {
        guard device.isEmpty || device.count == 2 else {
            throw ValidationError("--device names web's device and probe's: give two, or none")
        }
        guard device.isEmpty || agentPid.isEmpty || agentPid.count >= 2 else {
            throw ValidationError(
                "with --device, --agent-pid names web's agent and probe's first (and any others after)")
        }
    }

    func run() async throws {
        let size = UInt64(mebibytes) << 20
        let deployment = try await submit(size: size)
        do {
            try await measure(deployment, size: size)
        } catch {
            await cancel(deployment.id)
            throw error
        }
        await cancel(deployment.id)
    }

    private func cancel(_ id: String) async {
        _ = try? await BenchConsumer.withOrchestrator(orchestrator, key: key) {
            (client, _: BenchConsumer.Authorities) in
            try await client.cancelDeployment(.with { $0.id = id })
        }
    }

    private func measure(_ deployment: Orrery_Orchestrator_V1_Deployment, size: UInt64) async throws {
        guard let route = deployment.routes.first(where: { $0.allocation == "web" }),
            let keeper = deployment.routes.first(where: { $0.allocation == "probe" }),
            let port = URLComponents(string: route.url)?.port
        else {
            throw ValidationError("the deployment has no ingress routes: does the orchestrator run an ingress?")
        }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("orrery-bench-ingress-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        try await PortForwardBenchCommand.shell(
            "head -c \(size) /dev/urandom > '\(work.path)/big.bin'; echo ok > '\(work.path)/ok'")
        let directPort = try PortForwardBenchCommand.freePort()
        let direct = try PortForwardBenchCommand.start(
            PortForwardBenchCommand.busybox, ["httpd", "-f", "-p", "127.0.0.1:\(directPort)", "-h", work.path])
        defer { PortForwardBenchCommand.stop(direct) }

        func url(_ port: Int, _ path: String) throws -> URL {
            guard let url = URL(string: "http://127.0.0.1:\(port)\(path)") else { throw ValidationError("no URL") }
            return url
        }
        // First, while the agents' heaps hold nothing of the transfers below (freed memory stays resident).
        let memory = try await idleConnections(port: port, host: "\(keeper.host):\(port)")
        let host = [("Host", "\(route.host):\(port)")]
        var ingress: [String: Measured] = [:]
        for (name, port, headers) in [("direct", directPort, []), ("ingress", port, host)] {
            var one = 0.0
            for _ in 0..<2 {
                one = max(
                    one,
                    try await PortForwardBenchCommand.read(try url(port, "/big.bin"), expecting: size, headers: headers)
                )
            }
            let many = try await PortForwardBenchCommand.aggregate(
                try url(port, "/big.bin"), streams: streams, for: .seconds(10), headers: headers)
            let latency = try await PortForwardBenchCommand.latency(
                try url(port, "/ok"), requests: requests, headers: headers)
            ingress[name] = Measured(one: one, many: many, p50: latency.p50, p99: latency.p99)
        }
        // The probe measures the ensemble network once nothing else runs.
        _ = try await HTTPClient.stream(try url(port, "/go"), headers: [("Host", "\(keeper.host):\(port)")]) {
            _, body in try await body.collect(limit: 64)
        }
        let ensemble = try await probeResults(deployment.id)

        let devices = Set(
            deployment.assignments.filter { ["web", "probe"].contains($0.allocation) }.map(\.deviceDid))
        let path =
            devices.count == 2
            ? "web and probe ran on two devices (two agents)" : "web and probe ran on one device (its agent twice)"
        var lines = [
            "",
            "## Ingress and the ensemble network",
            "",
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release builds: busybox httpd in a real agent's sandbox serving \(mebibytes) MiB of random bytes. Through the ingress: read from this host by host name (client → ingress → orchestrator → the device's line → the sandbox), beside the same server program on this host's loopback read directly by the same in-process HTTP client, each request on a new connection. Through the ensemble network: read by Python from another allocation's sandbox as `web:8080` (sandbox → its agent → its line → orchestrator → the server's line → its agent → the sandbox), beside a busybox httpd inside that same sandbox read directly by the same Python client; \(path).",
            "",
            "| measurement | direct | through the ingress | ingress / direct | direct in the sandbox | through the ensemble network | ensemble / direct |",
            "|---|---|---|---|---|---|---|",
        ]
        let (d, i) = (ingress["direct"] ?? .zero, ingress["ingress"] ?? .zero)
        let (sd, se) = (ensemble.direct, ensemble.peer)
        func ratio(_ a: Double, _ b: Double) -> String { String(format: "%.0f %%", 100 * a / max(b, 0.001)) }
        func rate(_ value: Double) -> String { String(format: "%.0f MiB/s", value) }
        lines.append(
            "| one stream, \(mebibytes) MiB (better of 2) | \(rate(d.one)) | \(rate(i.one)) | \(ratio(i.one, d.one)) | \(rate(sd.one)) | \(rate(se.one)) | \(ratio(se.one, sd.one)) |"
        )
        lines.append(
            "| \(streams) streams at once, 10 s, together | \(rate(d.many)) | \(rate(i.many)) | \(ratio(i.many, d.many)) | \(rate(sd.many)) | \(rate(se.many)) | \(ratio(se.many, sd.many)) |"
        )
        lines.append(
            String(
                format:
                    "| GET of 3 bytes on a new connection, p50 / p99 (%d) | %.2f / %.2f ms | %.2f / %.2f ms | +%.2f / +%.2f ms | %.2f / %.2f ms | %.2f / %.2f ms | +%.2f / +%.2f ms |",
                requests, d.p50, d.p99, i.p50, i.p99, i.p50 - d.p50, i.p99 - d.p99, sd.p50, sd.p99, se.p50, se.p99,
                se.p50 - sd.p50, se.p99 - sd.p99))
        // The idle connections go to probe: its device is the second of --device (the agents in --agent-pid's
        // order); without --device, the agent whose memory grew most.
        let growth = zip(memory.held, memory.before).map { $0 - $1 }
        let carrier = device.count >= 2 ? 1 : growth.indices.max { growth[$0] < growth[$1] } ?? 0
        let others = growth.indices.filter { $0 != carrier }.map { growth[$0] }.reduce(0, +)
        lines += [
            "",
            String(
                format:
                    "%d idle connections through the ingress (each a tunnel over the agent's line, one request answered, then held): the resident memory of the agent carrying them %.1f MiB before, %.1f MiB while held: **+%.1f MiB** (goal ≤ 50 MiB); the other %d agents together %+.1f MiB.",
                idle, memory.before.indices.contains(carrier) ? memory.before[carrier] : 0,
                memory.held.indices.contains(carrier) ? memory.held[carrier] : 0,
                growth.indices.contains(carrier) ? growth[carrier] : 0, max(growth.count - 1, 0), others),
            "",
            "Goals (issue \"Services\"): one stream ≥ 40 % of direct and ≥ 100 MiB/s; added latency p50 ≤ 1 ms within one agent line, ≤ 2 ms through the orchestrator between two agents; 1,000 idle connections ≤ 50 MiB on the agent.",
        ]
        try publishResults(lines, to: out)
    }

    struct Measured: Decodable {
        var one: Double
        var many: Double
        var p50: Double
        var p99: Double
        static let zero = Measured(one: 0, many: 0, p50: 0, p99: 0)
    }

    /// `web` (busybox httpd, its port public) and `probe` (reads `web:8080` over the ensemble network and a busybox
    /// httpd of its own, and prints the results on one line).
    private func submit(size: UInt64) async throws -> Orrery_Orchestrator_V1_Deployment {
        let server =
            "head -c \(size) /dev/urandom > /work/big.bin; echo ok > /work/ok; "
            + "exec \(PortForwardBenchCommand.busybox) httpd -f -p 127.0.0.1:8080 -h /work"
        let probe = """
            head -c \(size) /dev/urandom > /work/big.bin; echo ok > /work/ok
            \(PortForwardBenchCommand.busybox) httpd -f -p 127.0.0.1:9090 -h /work &
            python3 -c '\(Self.keepAlive)' &
            exec python3 -c '\(Self.probe(size: size, streams: streams, requests: requests))'
            """
        func allocation(_ name: String, _ script: String) -> Orrery_Orchestrator_V1_AllocationSpec {
            .with {
                $0.name = name
                $0.executor = .process
                $0.artifact = .with { $0.text = script }
                $0.resources = .with {
                    $0.cpuCores = 1
                    $0.ramMib = 256
                    $0.diskMib = UInt64(mebibytes + 64)
                }
                $0.maxDurationSeconds = 1800
                $0.outputs = []
                $0.constraints = .with { $0.allowedProviders = allowedProvider }
            }
        }
        var web = allocation("web", server)
        web.ports = [
            .with {
                $0.name = "http"
                $0.port = 8080
                $0.protocol = .http
                $0.expose = .public
            }
        ]
        web.health = .with {
            $0.http = .with {
                $0.port = 8080
                $0.path = "/ok"
            }
            // Checks under the load of 32 streams on 2 cores are slow: a restart mid-measurement would spoil it.
            $0.intervalSeconds = 5
            $0.timeoutSeconds = 5
            $0.unhealthyThreshold = 10
            $0.startPeriodSeconds = 300
        }
        var prober = allocation("probe", probe)
        if device.count >= 2 {
            web.constraints.allowedProviders = [device[0]]
            prober.constraints.allowedProviders = [device[1]]
        }
        // Room for its page cache, 32 readers' buffers and 1,000 held connections (at 256 MiB it was killed).
        prober.resources.ramMib = 1024
        // Connections held open need a server that keeps them (busybox httpd closes after each response): the
        // probe's Python answers on 8081 with keep-alive, for the idle connections.
        prober.ports = [
            .with {
                $0.name = "idle"
                $0.port = 8081
                $0.protocol = .http
                $0.expose = .public
            }
        ]
        let spec = Orrery_Orchestrator_V1_WorkloadSpec.with {
            $0.name = "bench-ingress"
            $0.allocations = [web, prober]
        }
        return try await submitWhenPlaceable(spec)
    }

    /// Submits `spec`, again (up to a minute) while the devices still hold what an earlier benchmark released.
    private func submitWhenPlaceable(_ spec: Orrery_Orchestrator_V1_WorkloadSpec) async throws
        -> Orrery_Orchestrator_V1_Deployment
    {
        var attempt = 0
        while true {
            do {
                return try await BenchConsumer.deployAndWait(spec, orchestrator: orchestrator, key: key)
            } catch let error as ValidationError where attempt < 12 {
                attempt += 1
                print("not placed yet (\(error)); trying again in 5 s")
                try await Task.sleep(for: .seconds(5))
            }
        }
    }

    /// An HTTP/1.1 server on 127.0.0.1:8081 that keeps connections open, answering "ok" — one thread for all (the
    /// sandbox's pids limit would stop a thread per connection); GET /go tells the probe to start (no single quotes).
    static let keepAlive = """
        import asyncio
        async def answer(reader, writer):
            try:
                while True:
                    head = await reader.readuntil(b"\\r\\n\\r\\n")
                    if head.startswith(b"GET /go "): open("/work/go", "w").close()
                    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
        async def main():
            server = await asyncio.start_server(answer, "127.0.0.1", 8081, backlog=1024)
            async with server:
                await server.serve_forever()
        asyncio.run(main())
        """

    /// The Python client the probe allocation runs (no single quotes: it is passed in them).
    static func probe(size: UInt64, streams: Int, requests: Int) -> String {
        """
        import json, socket, threading, time
        SIZE = \(size)
        def request(host, port, path):
            connection = socket.create_connection((host, port), timeout=60)
            connection.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: " + host + "\\r\\nConnection: close\\r\\n\\r\\n").encode())
            head = b""
            while b"\\r\\n\\r\\n" not in head:
                chunk = connection.recv(65536)
                if not chunk: raise OSError("closed before a head")
                head += chunk
            return connection, len(head.partition(b"\\r\\n\\r\\n")[2])
        def get(host, port, path):
            connection, total = request(host, port, path)
            buffer = bytearray(1 << 20)
            while True:
                count = connection.recv_into(buffer)
                if count == 0: break
                total += count
            connection.close()
            return total
        def ready(host, port):
            for attempt in range(1200):
                try:
                    if get(host, port, "/ok") == 3: return
                except OSError: pass
                time.sleep(0.25)
            raise SystemExit("never ready: " + host)
        def one(host, port):
            start = time.monotonic()
            count = get(host, port, "/big.bin")
            assert count == SIZE, count
            return count / 1048576 / (time.monotonic() - start)
        def many(host, port, streams, window):
            totals = [0] * streams
            deadline = time.monotonic() + window
            def read(index):
                connection, totals[index] = request(host, port, "/big.bin")
                buffer = bytearray(1 << 20)
                while time.monotonic() < deadline:
                    count = connection.recv_into(buffer)
                    if count == 0: break
                    totals[index] += count
                connection.close()
            threads = [threading.Thread(target=read, args=(index,)) for index in range(streams)]
            for thread in threads: thread.start()
            for thread in threads: thread.join()
            return sum(totals) / 1048576 / window
        def latency(host, port, count):
            times = []
            for attempt in range(count + 10):
                start = time.monotonic()
                assert get(host, port, "/ok") == 3
                times.append((time.monotonic() - start) * 1000)
            times = sorted(times[10:])
            return times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]
        ready("127.0.0.1", 9090)
        ready("web", 8080)
        # Measured alone: the benchmark on the host says when (GET /go on 8081) once its own measurements are done.
        while True:
            try:
                open("/work/go").close()
                break
            except OSError:
                time.sleep(0.1)
        results = {}
        for name, host, port in (("direct", "127.0.0.1", 9090), ("peer", "web", 8080)):
            p50, p99 = latency(host, port, \(requests))
            results[name] = {"one": max(one(host, port), one(host, port)), "many": many(host, port, \(streams), 10),
                "p50": p50, "p99": p99}
        print("\(marker)" + json.dumps(results), flush=True)
        time.sleep(3600)
        """
    }

    struct ProbeResults: Decodable {
        var direct: Measured
        var peer: Measured
    }

    /// The probe's line, read from its log.
    private func probeResults(_ id: String) async throws -> ProbeResults {
        try await BenchConsumer.withOrchestrator(orchestrator, key: key) {
            (orchestrator, _: BenchConsumer.Authorities) in
            try await orchestrator.streamLogs(
                .with {
                    $0.id = id
                    $0.follow = true
                }
            ) { response in
                var text = ""
                for try await line in response.messages where line.allocation == "probe" {
                    text += String(decoding: line.data, as: UTF8.self)
                    for candidate in text.split(separator: "\n") where candidate.hasPrefix(Self.marker) {
                        return try JSONDecoder().decode(
                            ProbeResults.self, from: Data(candidate.dropFirst(Self.marker.count).utf8))
                    }
                    if text.contains("never ready") { throw ValidationError("the probe: \(text)") }
                }
                let ended = try await orchestrator.getDeployment(.with { $0.id = id })
                let replicas = ended.assignments.map {
                    "\($0.allocation)[\($0.replica)]: \($0.run.state) \($0.run.reason)"
                }
                throw ValidationError(
                    "the probe's log ended without its results (the deployment is \(ended.state): \(ended.reason); "
                        + "\(replicas.joined(separator: "; "))): \(text)")
            }
        }
    }

    /// Each agent's resident memory (MiB, in `agentPid`'s order) before and while `idle` connections through the
    /// ingress are held, each having carried one request (so each is a tunnel over an agent's line).
    private func idleConnections(port: Int, host: String) async throws -> (before: [Double], held: [Double]) {
        func resident() -> [Double] {
            agentPid.map { pid in
                let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
                let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
                return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
            }
        }
        try await Task.sleep(for: .seconds(3))
        let before = resident()
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        let request = Array("GET /ok HTTP/1.1\r\nHost: \(host)\r\n\r\n".utf8)
        for _ in 0..<idle {
            let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard socket >= 0 else { throw ValidationError("no socket: \(String(cString: strerror(errno)))") }
            sockets.append(socket)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard connected == 0, send(socket, request, request.count, 0) == request.count else {
                throw ValidationError("connection \(sockets.count): \(String(cString: strerror(errno)))")
            }
            // The answer's head and its 3 bytes.
            var answer: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !(answer.count >= 4 && String(decoding: answer, as: UTF8.self).hasSuffix("\r\n\r\nok\n")) {
                let count = recv(socket, &buffer, buffer.count, 0)
                guard count > 0 else { throw ValidationError("connection \(sockets.count) closed") }
                answer += buffer[0..<count]
            }
        }
        try await Task.sleep(for: .seconds(3))
        return (before, resident())
    }
}
