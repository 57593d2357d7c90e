import Testing

@testable import OrreryPlacement

/// The snapshot's per-country, per-label and GPU lists narrow the devices a request is checked against; the answers
/// must be those of checking every device.
@Suite("Placement indexes: a request scans only its countries' or the GPU devices, and places as a full scan would")
struct PlacementIndexTests {
    static let countries = ["DE", "FR", "NL", "US", "JP"]

    static func fleet(seed: UInt64) -> PlacementSnapshot {
        var random = PlacementPropertyTests.Generator(state: seed)
        let devices = (0..<400).map { index in
            let hasGPU = random.next(5) == 0
            return PlacementDevice(
                did: "did:key:d\(index)", ownerDID: "did:key:o\(random.next(7))", architecture: "x86_64",
                cpuCores: 1 + random.next(16), ramMiB: 1024 * (1 + random.next(16)), diskMiB: 10_000,
                gpus: hasGPU
                    ? GPUInventory(
                        vendor: "NVIDIA", model: ["NVIDIA A100", "NVIDIA L4"][random.next(2)],
                        count: 1 + random.next(4),
                        vramMiB: 24_576)
                    : GPUInventory(),
                location: GeoLocation(country: countries[random.next(countries.count)]),
                prices: Prices(
                    perCoreHour: UInt64(10 + random.next(400)), perGBRAMHour: UInt64(random.next(40)),
                    perGPUHour: UInt64(1000 + random.next(9000)), minimumPerJob: UInt64(random.next(4) == 0 ? 900 : 0)),
                labels: random.next(3) == 0 ? ["tier": "datacenter"] : ["tier": "edge", "disk": "ssd"],
                online: random.next(10) != 0)
        }
        return PlacementSnapshot(devices: devices)
    }

    static func request(_ random: inout PlacementPropertyTests.Generator) -> AllocationRequest {
        var constraints = HardConstraints()
        switch random.next(4) {
        case 0: constraints.acceptCountries = [countries[random.next(countries.count)]]
        case 1: constraints.acceptCountries = [countries[random.next(countries.count)], "XX"]
        case 2: constraints.rejectCountries = [countries[random.next(countries.count)]]
        default: break
        }
        if random.next(3) == 0 { constraints.maxPricePerHour = UInt64(200 + random.next(4000)) }
        switch random.next(6) {
        case 0: constraints.requiredLabels = ["tier": "datacenter"]
        case 1: constraints.requiredLabels = ["tier": "edge", "disk": "ssd"]
        case 2: constraints.requiredLabels = ["tier": "nowhere"]
        default: break
        }
        let gpu = random.next(3) == 0 ? GPURequirement(count: 1 + random.next(2), model: "a100") : GPURequirement()
        return AllocationRequest(
            name: "job", cpuCores: 1 + random.next(12), ramMiB: 1024 * (1 + random.next(12)), diskMiB: 1000, gpu: gpu,
            durationSeconds: 600 * (1 + random.next(6)), constraints: constraints)
    }

    /// The cheapest device by checking every device against the compiled constraints (nil: none passes).
    static func cheapestByFullScan(_ allocation: AllocationRequest, on snapshot: PlacementSnapshot) -> UInt64? {
        let compiled = CompiledAllocation(allocation, snapshot: snapshot, excludedDevices: [])
        return snapshot.compiled.indices.filter { compiled.firstFailure($0, in: snapshot) == nil }.map {
            compiled.jobCost(snapshot.compiled[$0])
        }.min()
    }

    @Test(
        "600 single requests (one or two countries, a rejected country, required labels, a GPU, a price ceiling) on 400 devices: the same cost as a full scan, on a device that passes"
    )
    func singlesAsAFullScan() {
        var random = PlacementPropertyTests.Generator(state: 77)
        let solver = PlacementSolver(timeLimit: .seconds(10))
        var placed = 0
        for fleetSeed in 1...3 {
            let snapshot = Self.fleet(seed: UInt64(fleetSeed))
            for _ in 0..<200 {
                let allocation = Self.request(&random)
                let expected = Self.cheapestByFullScan(allocation, on: snapshot)
                switch solver.place(PlacementRequest(allocations: [allocation]), on: snapshot) {
                case .placed(let placement):
                    placed += 1
                    let replica = placement.allocations[0].replicas[0]
                    let index = snapshot.index(of: replica.deviceDID) ?? -1
                    let compiled = CompiledAllocation(allocation, snapshot: snapshot, excludedDevices: [])
                    #expect(compiled.firstFailure(index, in: snapshot) == nil, "\(allocation)")
                    #expect(
                        placement.totalCost == expected,
                        "\(allocation): \(placement.totalCost) vs \(String(describing: expected))")
                case .infeasible:
                    #expect(expected == nil, "\(allocation): a full scan places it for \(expected ?? 0)")
                }
            }
        }
        #expect(placed > 200 && placed < 580, "\(placed) of 600 placed: the requests must test both kinds")
    }

    @Test("an ensemble's domains hold the same devices as a full scan's")
    func domainsAsAFullScan() {
        var random = PlacementPropertyTests.Generator(state: 5)
        let snapshot = Self.fleet(seed: 9)
        let solver = PlacementSolver()
        for _ in 0..<200 {
            let allocation = Self.request(&random)
            let compiled = CompiledAllocation(allocation, snapshot: snapshot, excludedDevices: [])
            let indexed = Set(solver.candidates(for: compiled, in: snapshot).map(\.device))
            let full = Set(snapshot.compiled.indices.filter { compiled.firstFailure($0, in: snapshot) == nil })
            #expect(indexed == full, "\(allocation)")
        }
    }
}
