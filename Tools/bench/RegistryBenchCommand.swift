import ArgumentParser
import Foundation
import OrreryIdentity
import OrreryRuntime

/// `orrery-bench registry`: a running registry under many devices.
struct RegistryBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry", abstract: "Registry load with many devices.")

    @Option(help: "The registry, host:port.") var registry: String
    @Option(help: "The operator's key file.") var operatorKey: String
    @Option(help: "Devices to register.") var devices = 10_000
    @Option(help: "Seconds per timed phase.") var seconds: Double = 10
    @Option(help: "pgbench's single-row insert rate on the same PostgreSQL, measured by the caller.") var pgbenchTps:
        String = "?"
    @Option(help: "Where to write the results (Markdown).") var out = "bench-results/registry.md"

    func run() async throws {
        guard let address = ServiceAddress(registry) else { throw ValidationError("--registry is not host:port") }
        let results = try await RegistryBench(
            address: address, operatorKey: try KeyFile.read(operatorKey), devices: devices, seconds: seconds
        ).run()
        let lines = [
            "# Registry benchmarks",
            "",
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores: a release registry and this driver on the same machine, PostgreSQL 15 with fsync on, authorisation on for every call.",
            "",
            "| measurement | result |",
            "|---|---|",
            "| devices registered (join: challenge, countersignature, capability chain of 2) | \(devices) at \(String(format: "%.0f", results.joinRate))/s |",
            "| heartbeats received and queued per second, sustained for \(Int(seconds)) s over \(results.heartbeatStreams) streams (written in one statement per 100 ms flush) | \(String(format: "%.0f", results.heartbeatRate))/s |",
            "| pgbench single-row INSERT rate on the same PostgreSQL (8 clients) | \(pgbenchTps)/s |",
            "| filtered QueryDevices latency (p50 / p99, one client, page of 100) | \(IdentityBenchCommand.micros(results.queryP50)) / \(IdentityBenchCommand.micros(results.queryP99)) |",
            "| watch fan-out: \(results.watchers) watchers × \(results.watchChanges) changes (re-joins) | \(results.watchEvents) events delivered at \(String(format: "%.0f", results.watchDeliveryRate))/s |",
            "",
            "Goal: ≥ 10,000 heartbeats/s sustained on this 2-core machine.",
        ]
        for line in lines { print(line) }
        try FileManager.default.createDirectory(
            at: URL(fileURLWithPath: out).deletingLastPathComponent(), withIntermediateDirectories: true)
        try (lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }
}

/// `orrery-bench agent`: the device agent's size and idle memory.
struct AgentBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Device agent binary size and idle RSS.")

    @Option(help: "The device-agent executable (release).") var binary: String
    @Option(help: "Append the results to this Markdown file.") var out = "bench-results/registry.md"
    @Option(help: "The hot-code linker script the agent is linked with (how much of it the binary still packs).")
    var hotCode = "Services/DeviceAgent/Executable/hot-code.ld"

    func run() async throws {
        let size = (try FileManager.default.attributesOfItem(atPath: binary)[.size] as? NSNumber)?.int64Value ?? 0
        let state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "orrery-agent-bench-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: state) }
        let config = state.appendingPathComponent("agent.json")
        try Data("{}".utf8).write(to: config)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--grpc-port", "0", "--http-port", "0", "--state-dir", state.path, "--config", config.path,
            "--log-level", "error",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try await Task.sleep(for: .seconds(5))
        let rollup = MemoryRollup(processID: process.processIdentifier)
        try await Task.sleep(for: .seconds(35))
        let later = MemoryRollup(processID: process.processIdentifier)
        process.terminate()
        process.waitUntilExit()
        let stripped = strippedSize(of: binary, scratch: state)
        let packing = HotCodeCoverage(script: hotCode, binary: binary)
        let lines = [
            "",
            "## Device agent",
            "",
            "| measurement | result |",
            "|---|---|",
            "| release binary size (x86_64, Swift runtime linked statically, not stripped) | \(mebibytes(size)) |",
            "| the same binary stripped (as `Deploy/install.sh` installs it) | \(stripped.map(mebibytes) ?? "strip not found") |",
            "| RSS 5 s after start (serving health and Info on loopback, not joined) | \(mebibytes(rollup.rss)) |",
            "| of which file-backed pages (code, read-only data) / anonymous memory (heap, stacks, relocated data) | \(mebibytes(rollup.rss - rollup.anonymous)) / \(mebibytes(rollup.anonymous)) |",
            "| idle RSS 40 s after start, not joined (file-backed / anonymous) | \(mebibytes(later.rss)) (\(mebibytes(later.rss - later.anonymous)) / \(mebibytes(later.anonymous))) |",
            "| hot code packed at the start of the text (`hot-code.ld`, written by `make agent-hot-code`) | \(packing) |",
            "",
            "Goals: binary ≤ 45 MiB stripped, idle RSS 40 s after start ≤ 20 MiB. Nothing gives pages back: what is",
            "resident is what the agent touched. arm64 builds are not tested here (x86_64 only).",
        ]
        for line in lines { print(line) }
        let existing = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        try (existing + lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }
}

/// How much of the hot code the linker script named this binary still packs: a stale script (code renamed or moved
/// since it was profiled) packs less, so the agent's resident code grows.
struct HotCodeCoverage: CustomStringConvertible {
    /// The bytes the script's sections held when it was written.
    var profiled: Int64?
    /// The size of the binary's `.text.hot`.
    var packed: Int64?
    var description: String {
        guard let packed else { return "no packed hot code" }
        return "\(mebibytes(packed)) packed" + (profiled.map { " (\(mebibytes($0)) when profiled)" } ?? "")
    }

    init(script: String, binary: String) {
        let text = (try? String(contentsOfFile: script, encoding: .utf8)) ?? ""
        if let line = text.split(separator: "\n").first(where: { $0.contains("hot bytes when written:") }) {
            profiled = line.split(separator: " ").compactMap { Int64($0) }.first
        }
        let listing = Process()
        let pipe = Pipe()
        listing.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        listing.arguments = ["readelf", "-SW", binary]
        listing.standardOutput = pipe
        listing.standardError = FileHandle.nullDevice
        guard (try? listing.run()) != nil else { return }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        listing.waitUntilExit()
        // "  [33] .text.hot  PROGBITS  <address> <offset> <size> …"
        for line in output.split(separator: "\n") where line.contains(" .text.hot ") {
            let fields = line.split(separator: " ")
            if let name = fields.firstIndex(of: ".text.hot"), fields.count > name + 4 {
                packed = Int64(fields[name + 4], radix: 16)
            }
        }
    }
}

/// The resident memory of a process from `/proc/PID/smaps_rollup`, in bytes.
struct MemoryRollup {
    var rss: Int64 = 0
    /// Heap, stacks and file pages copied on write (relocated data).
    var anonymous: Int64 = 0

    init(processID: Int32) {
        let text = (try? String(contentsOfFile: "/proc/\(processID)/smaps_rollup", encoding: .utf8)) ?? ""
        var fields: [Substring: Int64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let kilobytes = Int64(parts[1]) else { continue }
            fields[parts[0].dropLast()] = kilobytes * 1024
        }
        rss = fields["Rss"] ?? 0
        anonymous = fields["Anonymous"] ?? 0
    }
}

/// `bytes` as MiB with one decimal.
func mebibytes(_ bytes: Int64) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }

/// The size of `binary` once stripped of symbols and debug information, or nil without `strip`.
func strippedSize(of binary: String, scratch: URL) -> Int64? {
    let copy = scratch.appendingPathComponent("stripped")
    let strip = Process()
    strip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    strip.arguments = ["strip", "-o", copy.path, binary]
    strip.standardError = FileHandle.nullDevice
    guard (try? strip.run()) != nil else { return nil }
    strip.waitUntilExit()
    guard strip.terminationStatus == 0 else { return nil }
    return (try? FileManager.default.attributesOfItem(atPath: copy.path)[.size] as? NSNumber)?.int64Value
}
