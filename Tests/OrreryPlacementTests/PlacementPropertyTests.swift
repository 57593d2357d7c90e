import OrreryPlacement
import Testing

/// Random small instances checked against an exhaustive search written independently of the solver.
@Suite("Placement properties")
struct PlacementPropertyTests {
    struct Generator {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
    }

    /// A device on a plane: its network coordinate is its position (RTT = distance + both heights).
    struct Site {
        var x: Double
        var y: Double
        func rtt(to other: Site) -> Double {
            ((x - other.x) * (x - other.x) + (y - other.y) * (y - other.y)).squareRoot() + 2 * 0.01
        }
    }

    struct Instance {
        var devices: [PlacementDevice]
        var sites: [Site]
        var request: PlacementRequest
    }

    static func instance(seed: UInt64) -> Instance {
        var random = Generator(state: seed)
        let countries = ["DE", "FR", "NL"]
        var devices: [PlacementDevice] = []
        var sites: [Site] = []
        for index in 0..<(3 + random.next(3)) {
            devices.append(
                PlacementDevice(
                    did: "did:key:d\(index)", ownerDID: "did:key:o\(random.next(2))", architecture: "x86_64",
                    cpuCores: 1 + random.next(6), ramMiB: 1024 * (1 + random.next(4)), diskMiB: 1000,
                    location: GeoLocation(country: countries[random.next(3)]),
                    prices: Prices(
                        perCoreHour: UInt64(10 + random.next(90)), perGBRAMHour: UInt64(random.next(20)),
                        minimumPerJob: UInt64(random.next(3) == 0 ? 300 : 0)),
                    online: random.next(8) != 0))
            sites.append(Site(x: Double(random.next(40)), y: Double(random.next(40))))
        }
        var allocations: [AllocationRequest] = []
        for index in 0..<(1 + random.next(3)) {
            var constraints = HardConstraints()
            if random.next(3) == 0 { constraints.acceptCountries = [countries[random.next(3)]] }
            if random.next(3) == 0 { constraints.maxPricePerHour = UInt64(60 + random.next(200)) }
            allocations.append(
                AllocationRequest(
                    name: "a\(index)", replicas: 1 + random.next(2), cpuCores: 1 + random.next(3),
                    ramMiB: 512 * (1 + random.next(4)), diskMiB: 100, durationSeconds: 600 * (1 + random.next(6)),
                    constraints: constraints, spread: random.next(3) == 0 ? .spread : .any))
        }
        var edges: [LatencyEdge] = []
        if allocations.count > 1 {
            for _ in 0..<random.next(3) {
                let from = random.next(allocations.count)
                let to = (from + 1 + random.next(allocations.count - 1)) % allocations.count
                edges.append(LatencyEdge(from: from, to: to, maxRTTMilliseconds: Double(10 + random.next(30))))
            }
        }
        let budget: UInt64? = random.next(3) == 0 ? UInt64(200 + random.next(3000)) : nil
        return Instance(
            devices: devices, sites: sites,
            request: PlacementRequest(allocations: allocations, edges: edges, budget: budget))
    }

    static func snapshot(_ instance: Instance) -> PlacementSnapshot {
        var coordinates: [String: VivaldiCoordinate] = [:]
        for (device, site) in zip(instance.devices, instance.sites) {
            var vector = Array(repeating: 0.0, count: VivaldiCoordinate.dimensions)
            vector[0] = site.x
            vector[1] = site.y
            coordinates[device.did] = VivaldiCoordinate(vector: vector, height: 0.01, error: 0.1)
        }
        return PlacementSnapshot(devices: instance.devices, coordinates: coordinates)
    }

    /// The price of a replica on a device, computed here from the definition.
    static func price(_ allocation: AllocationRequest, on device: PlacementDevice) -> UInt64 {
        let ramTimesPrice = UInt64(allocation.ramMiB) * device.prices.perGBRAMHour
        let hourly =
            UInt64(allocation.cpuCores) * device.prices.perCoreHour + (ramTimesPrice + 1023) / 1024
        let seconds = UInt64(allocation.durationSeconds ?? 3600)
        return max((hourly * seconds + 3599) / 3600, device.prices.minimumPerJob)
    }

    /// Whether one replica may go on a device, by the hard constraints these instances use.
    static func admits(_ allocation: AllocationRequest, _ device: PlacementDevice) -> Bool {
        let hourly =
            UInt64(allocation.cpuCores) * device.prices.perCoreHour
            + (UInt64(allocation.ramMiB) * device.prices.perGBRAMHour + 1023) / 1024
        return device.online && device.cpuCores >= allocation.cpuCores && device.ramMiB >= allocation.ramMiB
            && device.diskMiB >= allocation.diskMiB
            && (allocation.constraints.acceptCountries.isEmpty
                || allocation.constraints.acceptCountries.contains(device.location.country))
            && hourly <= allocation.constraints.maxPricePerHour ?? .max
    }

    /// Whether a full assignment (device index per replica, per allocation) satisfies every hard constraint.
    static func valid(_ assignment: [[Int]], _ instance: Instance) -> Bool {
        let request = instance.request
        var cores = Array(repeating: 0, count: instance.devices.count)
        var ram = Array(repeating: 0, count: instance.devices.count)
        var total: UInt64 = 0
        for (allocation, devices) in zip(request.allocations, assignment) {
            if allocation.spread == .spread, Set(devices).count != devices.count { return false }
            for device in devices {
                guard admits(allocation, instance.devices[device]) else { return false }
                cores[device] += allocation.cpuCores
                ram[device] += allocation.ramMiB
                total += price(allocation, on: instance.devices[device])
            }
        }
        for (index, device) in instance.devices.enumerated()
        where cores[index] > device.cpuCores || ram[index] > device.ramMiB {
            return false
        }
        for edge in request.edges {
            for a in assignment[edge.from] {
                for b in assignment[edge.to]
                where instance.sites[a].rtt(to: instance.sites[b]) > edge.maxRTTMilliseconds {
                    return false
                }
            }
        }
        return total <= request.budget ?? .max
    }

    static func cost(_ assignment: [[Int]], _ instance: Instance) -> UInt64 {
        zip(instance.request.allocations, assignment).reduce(0) { sum, pair in
            pair.1.reduce(sum) { $0 + price(pair.0, on: instance.devices[$1]) }
        }
    }

    /// The cheapest valid assignment by trying them all.
    static func exhaustiveOptimum(_ instance: Instance) -> UInt64? {
        let slots = instance.request.allocations.flatMap { allocation in
            Array(repeating: allocation, count: allocation.replicas)
        }
        let deviceCount = instance.devices.count
        var best: UInt64?
        var choice = Array(repeating: 0, count: slots.count)
        while true {
            var assignment: [[Int]] = []
            var position = 0
            for allocation in instance.request.allocations {
                assignment.append(Array(choice[position..<(position + allocation.replicas)]))
                position += allocation.replicas
            }
            if valid(assignment, instance) {
                let total = cost(assignment, instance)
                best = min(best ?? .max, total)
            }
            var digit = 0
            while digit < choice.count {
                choice[digit] += 1
                if choice[digit] < deviceCount { break }
                choice[digit] = 0
                digit += 1
            }
            if digit == choice.count { return best }
        }
    }

    @Test(
        "on 400 random instances: feasible exactly when exhaustive search is, at the exhaustive optimum, never breaking a hard constraint"
    )
    func matchesExhaustiveSearch() throws {
        let solver = PlacementSolver(timeLimit: .seconds(10))
        var feasible = 0
        for seed in 1...400 {
            let instance = Self.instance(seed: UInt64(seed))
            let snapshot = Self.snapshot(instance)
            let optimum = Self.exhaustiveOptimum(instance)
            switch solver.place(instance.request, on: snapshot) {
            case .placed(let placement):
                feasible += 1
                let assignment = placement.allocations.map { allocation in
                    allocation.replicas.map { replica in snapshot.index(of: replica.deviceDID) ?? -1 }
                }
                #expect(Self.valid(assignment, instance), "seed \(seed): the placement breaks a hard constraint")
                #expect(placement.totalCost == Self.cost(assignment, instance), "seed \(seed)")
                #expect(
                    placement.totalCost == optimum,
                    "seed \(seed): solver \(placement.totalCost), exhaustive \(String(describing: optimum))")
                #expect(placement.provenOptimal)
            case .infeasible(let why):
                #expect(optimum == nil, "seed \(seed): solver says \(why), exhaustive found \(optimum ?? 0)")
            }
        }
        // The generator must produce both kinds, or the comparison proves little.
        #expect(feasible > 100 && feasible < 380, "\(feasible) of 400 feasible")
    }
}
