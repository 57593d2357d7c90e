/// A reproducible synthetic fleet, for benchmarks and tests that need a large one: devices of 4 architectures' worth of
/// sizes in 12 countries, prices varying 20×, a tenth with GPUs, a third labelled `tier=datacenter`, Vivaldi
/// coordinates on a 200 ms plane; and the request shapes `orrery-bench placement` measures on it. The same count gives
/// the same fleet.
public struct SyntheticFleet: Sendable {
    public private(set) var devices: [PlacementDevice] = []
    public private(set) var coordinates: [String: VivaldiCoordinate] = [:]
    private var state: UInt64 = 0x0DDB_A11

    public static let countries = ["DE", "FR", "NL", "US", "CA", "JP", "BR", "IN", "GB", "SE", "AU", "ZA"]

    public init(count: Int) {
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

    private mutating func next(_ bound: Int) -> Int {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Int((state >> 33) % UInt64(bound))
    }

    /// A single allocation whose size, country, price ceiling, label and GPU vary with `variant` (the benchmark
    /// uses 64 of them).
    public func singleAllocation(variant: Int) -> PlacementRequest {
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
    public func ensemble(variant: Int) -> PlacementRequest {
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
