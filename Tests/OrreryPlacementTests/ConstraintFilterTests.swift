import OrreryPlacement
import Testing

/// A small fleet where each device differs from the baseline in one way, so each constraint has a known victim.
enum Fleet {
    static func device(
        _ name: String, owner: String = "did:key:owner-a", arch: String = "x86_64", cores: Int = 8, ram: Int = 16384,
        disk: Int = 100_000, gpus: GPUInventory = GPUInventory(), country: String = "DE", region: String = "berlin",
        point: GeoPoint? = GeoPoint(latitude: 52.52, longitude: 13.40), perCore: UInt64 = 100,
        labels: [String: String] = ["tier": "datacenter"], online: Bool = true,
        reputation: Reputation = Reputation(completed: 9, failed: 0, relocatedAway: 0)
    ) -> PlacementDevice {
        PlacementDevice(
            did: "did:key:\(name)", ownerDID: owner, architecture: arch, cpuCores: cores, ramMiB: ram, diskMiB: disk,
            gpus: gpus, location: GeoLocation(country: country, region: region, point: point),
            prices: Prices(perCoreHour: perCore, perGBRAMHour: 10, perGPUHour: 1000, minimumPerJob: 0), labels: labels,
            online: online, reputation: reputation)
    }

    static let standard: [PlacementDevice] = [
        device("baseline"),
        device("offline", online: false),
        device("arm", arch: "aarch64"),
        device("small", cores: 1),
        device("lowram", ram: 512),
        device("nodisk", disk: 10),
        device("gpu", gpus: GPUInventory(vendor: "NVIDIA", model: "NVIDIA A100-SXM4-80GB", count: 2, vramMiB: 81920)),
        device("france", country: "FR", region: "paris", point: GeoPoint(latitude: 48.85, longitude: 2.35)),
        device("munich", region: "bavaria", point: GeoPoint(latitude: 48.14, longitude: 11.58)),
        device("sydney", country: "AU", region: "nsw", point: GeoPoint(latitude: -33.87, longitude: 151.21)),
        device("pricey", perCore: 10_000),
        device("unlabelled", labels: [:]),
        device("stranger", owner: "did:key:owner-b"),
        device("flaky", reputation: Reputation(completed: 0, failed: 8, relocatedAway: 0)),
    ]
}

@Suite("Placement filters")
struct ConstraintFilterTests {
    let solver = PlacementSolver()
    let snapshot = PlacementSnapshot(devices: Fleet.standard)

    func explain(_ allocation: AllocationRequest) -> PlacementExplanation {
        solver.explain(PlacementRequest(allocations: [allocation]), on: snapshot)
    }

    @Test("a plain request passes every online device with room, and chooses the cheapest")
    func plain() throws {
        let explanation = explain(AllocationRequest(name: "job", cpuCores: 2, ramMiB: 1024, diskMiB: 1000))
        #expect(explanation.allocations[0].eliminated == [.status: 1, .cpu: 1, .ram: 1, .disk: 1])
        #expect(explanation.allocations[0].candidates == Fleet.standard.count - 4)
        let placement = try #require(explanation.placement)
        #expect(placement.allocations[0].replicas[0].hourlyPrice == 2 * 100 + 10)
        #expect(placement.provenOptimal)
    }

    @Test(
        "each hard constraint eliminates exactly the device that breaks it",
        arguments: [
            (
                AllocationRequest(name: "a", cpuCores: 1, ramMiB: 1, architecture: "aarch64"),
                ConstraintKind.architecture, "arm"
            ),
            (
                AllocationRequest(
                    name: "g", cpuCores: 1, ramMiB: 1,
                    gpu: GPURequirement(count: 1, vendor: "nvidia", model: "a100", vramMiB: 40000)), .gpu, "gpu"
            ),
            (
                AllocationRequest(
                    name: "c", cpuCores: 1, ramMiB: 1, constraints: HardConstraints(acceptCountries: ["fr"])), .country,
                "france"
            ),
            (
                AllocationRequest(
                    name: "r", cpuCores: 1, ramMiB: 1, constraints: HardConstraints(acceptRegions: ["Bavaria"])),
                .region, "munich"
            ),
            (
                AllocationRequest(
                    name: "l", cpuCores: 1, ramMiB: 1, constraints: HardConstraints(requiredLabels: ["tier": "edge"])),
                .labels, nil
            ),
            (
                AllocationRequest(
                    name: "p", cpuCores: 1, ramMiB: 1,
                    constraints: HardConstraints(allowedProviders: ["did:key:owner-b"])), .providers, "stranger"
            ),
        ] as [(AllocationRequest, ConstraintKind, String?)])
    func accepts(allocation: AllocationRequest, kind: ConstraintKind, only survivor: String?) throws {
        let explanation = explain(allocation)
        let placement = explanation.placement
        if let survivor {
            #expect(explanation.allocations[0].candidates == 1)
            #expect(placement?.allocations[0].replicas[0].deviceDID == "did:key:\(survivor)")
        } else {
            #expect(placement == nil)
            #expect(explanation.allocations[0].candidates == 0)
        }
        #expect((explanation.allocations[0].eliminated[kind] ?? 0) > 0)
    }

    @Test("rejections, radius, latency to a point, price ceiling, reputation and denied providers")
    func rejections() throws {
        let berlin = GeoPoint(latitude: 52.52, longitude: 13.40)
        let cases: [(HardConstraints, ConstraintKind, String)] = [
            (HardConstraints(rejectCountries: ["AU"]), .country, "sydney"),
            (HardConstraints(rejectRegions: ["paris"]), .region, "france"),
            (HardConstraints(within: GeoCircle(center: berlin, radiusKm: 400)), .radius, "munich"),
            (
                HardConstraints(latencyTargets: [LatencyTarget(place: .point(berlin), maxRTTMilliseconds: 20)]),
                .latencyTarget, "sydney"
            ),
            (HardConstraints(maxPricePerHour: 5_000), .price, "pricey"),
            (HardConstraints(minReputation: 0.5), .reputation, "flaky"),
            (HardConstraints(deniedProviders: ["did:key:owner-b"]), .providers, "stranger"),
            (HardConstraints(deniedProviders: ["did:key:baseline"]), .providers, "baseline"),
        ]
        for (constraints, kind, victim) in cases {
            let explanation = explain(AllocationRequest(name: "x", cpuCores: 1, ramMiB: 1, constraints: constraints))
            let eliminated = explanation.allocations[0].eliminated[kind] ?? 0
            #expect(eliminated >= 1, "\(kind)")
            // Without the constraint the victim is a candidate; with it, it never is.
            let withIt = try #require(explanation.placement)
            #expect(withIt.allocations[0].replicas[0].deviceDID != "did:key:\(victim)")
        }
        // Munich is 504 km from Berlin: inside a 600 km circle, outside 400.
        let wide = explain(
            AllocationRequest(
                name: "x", cpuCores: 1, ramMiB: 1,
                constraints: HardConstraints(within: GeoCircle(center: berlin, radiusKm: 600))))
        #expect(wide.allocations[0].eliminated[.radius] == 2)  // Paris (878 km) and Sydney
    }

    @Test("explaining stops within its budget however many edges there are, and says what it could not try")
    func explainIsBounded() {
        // Two allocations that can never meet (Sydney–Berlin) under an edge of 1 ms: every edge is re-solved.
        let berlin = AllocationRequest(
            name: "a", cpuCores: 1, ramMiB: 64, diskMiB: 0, durationSeconds: 60,
            constraints: .init(acceptCountries: ["DE"]))
        let sydney = AllocationRequest(
            name: "b", cpuCores: 1, ramMiB: 64, diskMiB: 0, durationSeconds: 60,
            constraints: .init(acceptCountries: ["AU"]))
        let edges = Array(repeating: LatencyEdge(from: 0, to: 1, maxRTTMilliseconds: 1), count: 100_000)
        let explanation = PlacementSolver().explain(
            PlacementRequest(allocations: [berlin, sydney], edges: edges), on: snapshot, budget: .zero)
        #expect(explanation.placement == nil)
        #expect(explanation.reason.contains("could be tried in time"), "\(explanation.reason)")
        #expect(explanation.relaxations.count < edges.count)
    }

    @Test("an unplaceable request names its nearest relaxations")
    func relaxations() throws {
        let tooCheap = explain(
            AllocationRequest(
                name: "cheap", cpuCores: 2, ramMiB: 1024,
                constraints: HardConstraints(acceptCountries: ["FR"], maxPricePerHour: 50)))
        #expect(tooCheap.placement == nil)
        #expect(tooCheap.reason.contains("cheap"))
        let price = try #require(tooCheap.relaxations.first { $0.constraint == ConstraintKind.price.rawValue })
        #expect(price.suggestion == "raise max_price_per_hour to 210")
        #expect(price.devicesAdmitted == 1)
        // Every device outside France costs more than 50 as well: dropping the country alone admits nothing.
        #expect(tooCheap.relaxations.allSatisfy { $0.constraint != ConstraintKind.country.rawValue })

        let huge = explain(AllocationRequest(name: "huge", cpuCores: 64, ramMiB: 1024))
        let cpu = try #require(huge.relaxations.first { $0.constraint == ConstraintKind.cpu.rawValue })
        #expect(cpu.suggestion == "ask for at most 8 cpu cores")
    }

    @Test(
        "every blocking constraint is named at once (a device under each one it fails); when no single change admits a device, the smallest combination is suggested"
    )
    func everyBlockingConstraint() throws {
        let explanation = explain(
            AllocationRequest(
                name: "train", cpuCores: 2, ramMiB: 1024, gpu: GPURequirement(count: 1),
                constraints: HardConstraints(acceptCountries: ["FR"], maxPricePerHour: 50)))
        #expect(explanation.placement == nil)
        let report = try #require(explanation.allocations.first)
        // Every online device is over the price; all but the GPU device lack a GPU; all but the French one are not
        // in France. The first-failure counts name one constraint per device; `failing` names all three.
        let online = Fleet.standard.filter(\.online).count
        #expect(report.failing[.price] == online, "\(report.failing)")
        #expect((report.failing[.gpu] ?? 0) >= online - 2 && (report.failing[.country] ?? 0) >= online - 3)
        #expect(report.failing.values.reduce(0, +) > report.eliminated.values.reduce(0, +))
        // No one constraint admits a device: the GPU device needs France and a higher price, France's a GPU too.
        #expect(explanation.relaxations.allSatisfy { $0.constraint.contains(" + ") }, "\(explanation.relaxations)")
        let gpuDevice = try #require(
            explanation.relaxations.first { $0.constraint == "country + max price per hour" },
            "\(explanation.relaxations)")
        #expect(gpuDevice.suggestion == "relax country and raise max_price_per_hour to 1210")
        #expect(gpuDevice.devicesAdmitted == 1)
    }

    @Test("a suggested value admits exactly the devices it says, enough for spread replicas; the spread is named")
    func trueCounts() throws {
        let fleet = PlacementSnapshot(devices: [
            Fleet.device("one", perCore: 100), Fleet.device("two", perCore: 200), Fleet.device("three", perCore: 300),
        ])
        func explain(replicas: Int, maxPrice: UInt64) -> PlacementExplanation {
            solver.explain(
                PlacementRequest(allocations: [
                    AllocationRequest(
                        name: "web", replicas: replicas, cpuCores: 1, ramMiB: 1024,
                        constraints: HardConstraints(maxPricePerHour: maxPrice), spread: .spread)
                ]), on: fleet)
        }
        // One replica: the cheapest device is enough (1 core × 100 + 1 GiB × 10).
        let one = try #require(explain(replicas: 1, maxPrice: 50).relaxations.first)
        #expect(one.suggestion == "raise max_price_per_hour to 110" && one.devicesAdmitted == 1, "\(one)")
        // Two spread replicas need two devices: the price that admits two, and it admits exactly two.
        let two = explain(replicas: 2, maxPrice: 50)
        let price = try #require(two.relaxations.first)
        #expect(price.suggestion == "raise max_price_per_hour to 210" && price.devicesAdmitted == 2, "\(price)")
        #expect(two.allocations.first?.needed == 2)
        // One device passes, two are needed: the reason says so rather than only "not placeable".
        let short = explain(replicas: 2, maxPrice: 150)
        #expect(short.placement == nil)
        #expect(
            short.reason.contains("allocation \"web\" spreads 2 replicas over distinct devices and 1 passes"),
            "\(short.reason)")
        #expect(short.relaxations.first?.suggestion == "raise max_price_per_hour to 210")
    }

    @Test("offline and excluded devices are never chosen, and relocation can exclude the current host")
    func exclusions() throws {
        let request = PlacementRequest(
            allocations: [AllocationRequest(name: "x", cpuCores: 1, ramMiB: 1)], excludedDevices: ["did:key:baseline"])
        guard case .placed(let placement) = solver.place(request, on: snapshot) else {
            Issue.record("not placed")
            return
        }
        #expect(placement.allocations[0].replicas[0].deviceDID != "did:key:baseline")
        #expect(placement.allocations[0].replicas[0].deviceDID != "did:key:offline")
    }

    @Test("cost is the hourly price over the maximum duration, at least the device's minimum, never overflowing")
    func costs() throws {
        var devices = [Fleet.device("one", perCore: 3600)]
        devices[0].prices.minimumPerJob = 5_000
        let snapshot = PlacementSnapshot(devices: devices)
        func cost(seconds: Int?, cores: Int = 1) -> UInt64? {
            let request = PlacementRequest(
                allocations: [AllocationRequest(name: "x", cpuCores: cores, ramMiB: 0, durationSeconds: seconds)])
            guard case .placed(let placement) = solver.place(request, on: snapshot) else { return nil }
            return placement.totalCost
        }
        #expect(cost(seconds: 7200) == 7200)
        #expect(cost(seconds: 60) == 5_000)
        #expect(cost(seconds: nil) == 5_000)
        var expensive = [Fleet.device("gold", perCore: .max / 2)]
        expensive[0].prices.perGBRAMHour = .max
        let saturated = PlacementSnapshot(devices: expensive)
        let request = PlacementRequest(
            allocations: [AllocationRequest(name: "x", cpuCores: 4, ramMiB: 4096, durationSeconds: 1_000_000)])
        guard case .placed(let placement) = solver.place(request, on: saturated) else {
            Issue.record("not placed")
            return
        }
        #expect(placement.totalCost == .max)
        let budgeted = PlacementRequest(allocations: request.allocations, budget: 1_000)
        #expect(solver.explain(budgeted, on: saturated).reason.contains("budget"))
    }
}
