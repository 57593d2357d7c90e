import ArgumentParser
import Foundation
import OrreryPlacement

/// `orrery-bench placement`: the solver over a synthetic fleet of 10,000 devices (pure computation, one thread).
struct PlacementBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "placement", abstract: "Placement throughput and ensemble latency over a synthetic fleet.")

    @Option(help: "Where to write the results (Markdown).") var out = "bench-results/placement.md"
    @Option(help: "Devices in the fleet.") var devices = 10_000
    @Option(help: "Seconds for the throughput measurement.") var seconds: Double = 3

    func run() async throws {
        let fleet = SyntheticFleet(count: devices)
        let clock = ContinuousClock()
        // The snapshot as the orchestrator builds it after a change to the fleet: the median of five builds.
        var builds: [Duration] = []
        var snapshot = PlacementSnapshot(devices: [])
        for _ in 0..<5 {
            let began = clock.now
            snapshot = PlacementSnapshot(devices: fleet.devices, coordinates: fleet.coordinates)
            builds.append(clock.now - began)
        }
        builds.sort()
        // As the orchestrator updates it in place: one device's status changed, and the coordinates refitted.
        var updates: [Duration] = []
        var refits: [Duration] = []
        for round in 0..<5 {
            var device = fleet.devices[round * 7919 % fleet.devices.count]
            device.online.toggle()
            var began = clock.now
            guard let updated = snapshot.updating([device]) else { throw ValidationError("no update in place") }
            updates.append(clock.now - began)
            began = clock.now
            _ = updated.withCoordinates(fleet.coordinates)
            refits.append(clock.now - began)
        }
        updates.sort()
        refits.sort()
        let solver = PlacementSolver(timeLimit: .milliseconds(200))

        // Single allocations: varied sizes and constraints, as a stream of submissions would bring.
        let singles = (0..<64).map { fleet.singleAllocation(variant: $0) }
        var placed = 0
        var attempts = 0
        let start = clock.now
        while clock.now - start < .seconds(seconds) {
            for request in singles {
                if case .placed = solver.place(request, on: snapshot) { placed += 1 }
                attempts += 1
            }
        }
        let elapsed = clock.now - start
        let perSecond =
            Double(attempts) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)

        // Ensembles of 8 allocations joined by latency edges.
        var latencies: [Duration] = []
        var optimal = 0
        var ensemblesPlaced = 0
        for variant in 0..<200 {
            let request = fleet.ensemble(variant: variant)
            let began = clock.now
            let outcome = solver.place(request, on: snapshot)
            latencies.append(clock.now - began)
            if case .placed(let placement) = outcome {
                ensemblesPlaced += 1
                if placement.provenOptimal { optimal += 1 }
            }
        }
        latencies.sort()
        func milliseconds(_ duration: Duration) -> String {
            String(
                format: "%.1f ms",
                Double(duration.components.attoseconds) / 1e15 + Double(duration.components.seconds) * 1000)
        }
        let lines = [
            "# Placement benchmarks",
            "",
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release build, one thread, a synthetic fleet of \(devices) online devices (4 architectures' worth of sizes, 12 countries, prices varying 20×, Vivaldi coordinates on a 200 ms plane).",
            "",
            "| measurement | result |",
            "|---|---|",
            "| single-allocation placements per second (64 request shapes: size, country, price ceiling, labels, GPU) | \(Int(perSecond))/s (\(placed) of \(attempts) placed) |",
            "| 8-allocation ensemble, 9 latency edges (200 variants): p50 / p99 / max | \(milliseconds(latencies[latencies.count / 2])) / \(milliseconds(latencies[latencies.count * 99 / 100])) / \(milliseconds(latencies[latencies.count - 1])) |",
            "| ensembles placed / proven cost-optimal within the 200 ms limit | \(ensemblesPlaced) / \(optimal) of 200 |",
            "| the fleet's snapshot built from scratch (as after a device joined): median of 5 | \(milliseconds(builds[2])) |",
            "| the snapshot updated in place after one device's status changed / after the coordinates were refitted: medians of 5 | \(milliseconds(updates[2])) / \(milliseconds(refits[2])) |",
            "",
            "Goals: ≥ 20,000 single-allocation placements/s; 8-allocation ensemble with latency edges p99 ≤ 50 ms.",
        ]
        for line in lines { print(line) }
        try FileManager.default.createDirectory(
            at: URL(fileURLWithPath: out).deletingLastPathComponent(), withIntermediateDirectories: true)
        try (lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }
}
