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

/// A reproducible fleet: sizes, places, prices and network positions drawn from a fixed seed.
struct SyntheticFleet {
    var devices: [PlacementDevice] = []
    var coordinates: [String: VivaldiCoordinate] = [:]
    private var state: UInt64 = 0x0DDB_A11

    static let countries = ["DE", "FR", "NL", "US", "CA", "JP", "BR", "IN", "GB", "SE", "AU", "ZA"]

    init(count: Int) {
        for index in 0..<count {
            let did = "did:key:z6MkBench\(index)"
            let cores = [2, 4, 8, 16, 32, 64][next(6)]
            let hasGPU = next(10) == 0
            devices.append(
                PlacementDevice(
                    did: did, ownerDID: "did:key:z6MkOwner\(next(500))",
                    architecture: next(5) == 0 ? "aarch64" : "x86_64",
                    cpuCores: cores, ramMiB: cores * 2048 * (1 + next(4)), diskMiB: 50_000 * (1 + next(20)),
                    gpus: hasGPU
                        ? GPUInventory(
                            vendor: "NVIDIA", model: ["NVIDIA A100", "NVIDIA L4", "NVIDIA H100"][next(3)],
                            count: 1 + next(8), vramMiB: 24_576 * (1 + next(3)))
                        : GPUInventory(),
                    location: GeoLocation(country: Self.countries[next(Self.countries.count)], region: "r\(next(4))"),
                    prices: Prices(
                        perCoreHour: UInt64(50 + next(1000)), perGBRAMHour: UInt64(5 + next(100)),
                        perGPUHour: UInt64(5_000 + next(50_000)), minimumPerJob: UInt64(next(4) == 0 ? 500 : 0)),
                    labels: next(3) == 0 ? ["tier": "datacenter"] : ["tier": "edge"],
                    reputation: Reputation(completed: UInt64(next(100)), failed: UInt64(next(5)))))
            var vector = Array(repeating: 0.0, count: VivaldiCoordinate.dimensions)
            vector[0] = Double(next(2000)) / 10
            vector[1] = Double(next(2000)) / 10
            coordinates[did] = VivaldiCoordinate(vector: vector, height: 0.5 + Double(next(40)) / 10, error: 0.2)
        }
    }

    mutating func next(_ bound: Int) -> Int {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Int((state >> 33) % UInt64(bound))
    }

    func singleAllocation(variant: Int) -> PlacementRequest {
        var constraints = HardConstraints()
        if variant % 2 == 0 { constraints.acceptCountries = [Self.countries[variant % Self.countries.count]] }
        if variant % 3 == 0 { constraints.maxPricePerHour = UInt64(2_000 + variant * 100) }
        if variant % 5 == 0 { constraints.requiredLabels = ["tier": "datacenter"] }
        let gpu = variant % 8 == 7 ? GPURequirement(count: 1, vendor: "nvidia", model: "A100") : GPURequirement()
        return PlacementRequest(allocations: [
            AllocationRequest(
                name: "job", cpuCores: 1 << (variant % 4), ramMiB: 1024 << (variant % 3), diskMiB: 10_000,
                gpu: gpu, durationSeconds: 3600, constraints: constraints)
        ])
    }

    /// Eight allocations: a ring of seven services around a hub, each within a latency bound of its neighbours.
    func ensemble(variant: Int) -> PlacementRequest {
        let allocations = (0..<8).map { index in
            AllocationRequest(
                name: "service-\(index)", replicas: index == 0 ? 2 : 1, cpuCores: 1 + (index + variant) % 4,
                ramMiB: 1024 * (1 + index % 3), diskMiB: 1000, durationSeconds: 3600,
                constraints: HardConstraints(
                    acceptCountries: index % 3 == 0 ? [Self.countries[(variant + index) % 6]] : []),
                spread: index == 0 ? .spread : .any)
        }
        var edges = (1..<8).map { LatencyEdge(from: 0, to: $0, maxRTTMilliseconds: Double(40 + (variant % 5) * 10)) }
        edges.append(LatencyEdge(from: 1, to: 2, maxRTTMilliseconds: 30))
        edges.append(LatencyEdge(from: 3, to: 4, maxRTTMilliseconds: 30))
        return PlacementRequest(allocations: allocations, edges: edges)
    }
}
