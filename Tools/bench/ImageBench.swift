import ArgumentParser
import DeviceAgent
import Foundation
import OrreryHTTPClient
import OrreryOCI
import OrreryProto

/// `orrery-bench images`: pulling and unpacking an image from a registry on loopback, cold and from the store, beside
/// `skopeo copy` + `umoci unpack` of the same image in the same run; and the start of a stored image's container,
/// from the instruction (pull: the manifest fetched again) to the container's exit of `sh -c true` with runc.
struct ImageBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images", abstract: "Image pulls, unpacking and container starts.")

    @Option(help: "The registry, host:port (TLS).") var registry: String
    @Option(help: "The registry's CA certificate (PEM).") var ca: String
    @Option(help: "User name for the registry.") var user: String
    @Option(help: "Password for the registry.") var password: String
    @Option(help: "The image, REPOSITORY:TAG.") var image: String
    @Option(help: "A scratch directory (emptied).") var work: String
    @Option(help: "Rounds of each measurement (the median is reported).") var rounds = 3
    @Option(help: "Where to write the results (Markdown).") var out = "bench-results/images.md"

    func run() async throws {
        var lines: [String] = []
        func report(_ line: String) {
            print(line)
            lines.append(line)
        }
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work + "/certs", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: ca, toPath: work + "/certs/ca.crt")
        let reference = try ImageReference(parsing: registry + "/" + image)
        let client = RegistryClient(
            host: registry, trust: .caFile(ca), credentials: .basic(username: user, password: password))
        let platform = Platform(architecture: "amd64")

        // The same image with the reference tools: skopeo copies it into a layout, umoci unpacks it.
        var tools: [Double] = []
        var copies: [Double] = []
        for round in 0..<rounds {
            let layout = "\(work)/layout-\(round)"
            let start = ContinuousClock.now
            try run(
                "/usr/bin/skopeo",
                [
                    "copy", "-q", "--src-creds", "\(user):\(password)", "--src-cert-dir", work + "/certs",
                    "docker://\(registry)/\(image)", "oci:\(layout):bench",
                ])
            let copied = ContinuousClock.now
            try run(
                "/usr/bin/umoci", ["unpack", "--rootless", "--image", "\(layout):bench", "\(work)/bundle-\(round)"])
            tools.append(Self.seconds(ContinuousClock.now - start))
            copies.append(Self.seconds(copied - start))
            try? FileManager.default.removeItem(atPath: layout)
            try? FileManager.default.removeItem(atPath: "\(work)/bundle-\(round)")
        }

        // Ours, cold: a new store each round.
        var cold: [Double] = []
        var unpackedBytes: Int64 = 0
        for round in 0..<rounds {
            let store = try ImageStore(
                directory: "\(work)/store-\(round)", blobCapacity: 8 << 30, rootCapacity: 8 << 30)
            let start = ContinuousClock.now
            let pulled = try await store.pull(reference, platform: platform, client: client)
            cold.append(Self.seconds(ContinuousClock.now - start))
            unpackedBytes = Self.size(of: pulled.rootPath)
            if round < rounds - 1 { try? FileManager.default.removeItem(atPath: "\(work)/store-\(round)") }
        }
        // Ours, stored: the last store again (a new process's view of it: opened anew).
        var cached: [Double] = []
        for _ in 0..<max(5, rounds) {
            let store = try ImageStore(
                directory: "\(work)/store-\(rounds - 1)", blobCapacity: 8 << 30, rootCapacity: 8 << 30)
            let start = ContinuousClock.now
            let pulled = try await store.pull(reference, platform: platform, client: client)
            cached.append(Self.seconds(ContinuousClock.now - start))
            precondition(pulled.downloadedLayers == 0)
        }

        report("# Image benchmarks")
        report("")
        report(
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release build; the image \(image) from docker-registry (distribution 2.8) on loopback behind TLS, \(Self.mebibytes(unpackedBytes)) MiB unpacked; the median of \(rounds) rounds."
        )
        report("")
        report("| measurement | median | rounds |")
        report("|---|---|---|")
        report(
            "| `skopeo copy` + `umoci unpack --rootless` | \(Self.milliseconds(Self.median(tools))) | \(Self.list(tools)) |"
        )
        report("| of which `skopeo copy` | \(Self.milliseconds(Self.median(copies))) | \(Self.list(copies)) |")
        report(
            "| Orrery: pull, verify and unpack, cold (new store) | \(Self.milliseconds(Self.median(cold))) | \(Self.list(cold)) |"
        )
        report(
            "| Orrery: the same image from the store (manifest fetched again) | \(Self.milliseconds(Self.median(cached))) | \(Self.list(cached)) |"
        )

        // A container of the stored image, from the instruction to its exit, with the runtime the agent finds.
        let (runtime, failures) = await OCIRuntime.detect(.auto, stateDirectory: work + "/oci", cgroups: nil)
        if let runtime {
            try FileManager.default.createDirectory(atPath: work + "/agent", withIntermediateDirectories: true)
            var runner = try ImageRunner.open(
                runtime: runtime, stateDirectory: work + "/agent", capacityMiB: 8192, trust: .caFile(ca),
                machine: "x86_64")
            runner.addresses = .any  // the registry is on loopback
            // Stored first: the measurement starts with the image in the store, as on a device that ran it before.
            _ = try await runner.store.pull(reference, platform: platform, client: client)
            var starts: [Double] = []
            for round in 0..<max(5, rounds) {
                var spec = Orrery_Orchestrator_V1_AllocationSpec()
                spec.executor = .oci
                spec.image = reference.description
                spec.command = "/bin/sh"
                spec.args = ["-c", "true"]
                let start = ContinuousClock.now
                let command = try await runner.prepare(
                    "bench-\(round)", spec: spec, base: "\(work)/allocation-\(round)")
                try run(command[0], Array(command.dropFirst()))
                starts.append(Self.seconds(ContinuousClock.now - start))
            }
            report(
                "| Orrery: a stored image's container with \(runtime.name), instruction → `sh -c true` exited (no cgroup) | \(Self.milliseconds(Self.median(starts))) | \(Self.list(starts)) |"
            )
        } else {
            report(
                "| a stored image's container | not measured: no OCI runtime works here (\(failures.joined(separator: "; "))) | |"
            )
        }
        report("")
        report(
            "Goals (issue \"Images and data\"): cold no slower than `skopeo copy` + `umoci unpack`; a stored image's container started within 150 ms of the instruction."
        )
        try lines.joined(separator: "\n").appending("\n").write(toFile: out, atomically: true, encoding: .utf8)
    }

    private func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError(
                "\(executable) \(arguments.prefix(3).joined(separator: " ")) exited \(process.terminationStatus)")
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    static func milliseconds(_ seconds: Double) -> String { String(format: "%.0f ms", seconds * 1000) }
    static func list(_ values: [Double]) -> String {
        values.map { String(format: "%.0f", $0 * 1000) }.joined(separator: ", ")
    }
    static func mebibytes(_ bytes: Int64) -> String { String(format: "%.1f", Double(bytes) / 1_048_576) }

    /// Bytes of the regular files under `path`.
    static func size(of path: String) -> Int64 {
        guard let walker = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total: Int64 = 0
        while let name = walker.nextObject() as? String {
            if let attributes = walker.fileAttributes, attributes[.type] as? FileAttributeType == .typeRegular {
                total += (attributes[.size] as? NSNumber)?.int64Value ?? 0
            }
            _ = name
        }
        return total
    }
}
