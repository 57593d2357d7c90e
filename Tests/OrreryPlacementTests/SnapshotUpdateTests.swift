import Testing

@testable import OrreryPlacement

/// A snapshot updated in place (devices described anew, coordinates refitted) answers as one built from scratch from
/// the same fleet — and shares what the change did not touch.
@Suite("Snapshots updated in place")
struct SnapshotUpdateTests {
    typealias Generator = PlacementPropertyTests.Generator

    static let countries = ["DE", "FR", "NL", "SE"]

    static func device(_ index: Int, _ random: inout Generator) -> PlacementDevice {
        let cores = [2, 4, 8, 16][random.next(4)]
        return PlacementDevice(
            did: "did:key:device\(index)", ownerDID: "did:key:owner\(random.next(6))",
            architecture: random.next(5) == 0 ? "aarch64" : "x86_64", cpuCores: cores,
            ramMiB: cores * 1024 * (1 + random.next(3)), diskMiB: 20_000,
            gpus: random.next(6) == 0
                ? GPUInventory(vendor: "NVIDIA", model: "NVIDIA L4", count: 1 + random.next(2), vramMiB: 24_576)
                : GPUInventory(),
            location: GeoLocation(
                country: countries[random.next(countries.count)], region: "r\(random.next(3))",
                point: GeoPoint(latitude: 48 + Double(random.next(8)), longitude: Double(random.next(20)))),
            prices: Prices(
                perCoreHour: UInt64(20 + random.next(200)), perGBRAMHour: UInt64(random.next(30)),
                perGPUHour: UInt64(500 + random.next(2000))),
            labels: random.next(3) == 0 ? ["tier": "datacenter"] : [:],
            online: random.next(10) != 0,
            reputation: Reputation(completed: UInt64(random.next(20)), failed: UInt64(random.next(3))))
    }

    /// `device` with some of what a registry change can carry changed: status, capacity, prices, country, labels,
    /// GPUs, owner, reputation.
    static func changed(_ device: PlacementDevice, _ random: inout Generator) -> PlacementDevice {
        var device = device
        switch random.next(8) {
        case 0: device.online.toggle()
        case 1: device.cpuCores = [2, 4, 8, 16, 32][random.next(5)]
        case 2: device.prices.perCoreHour = UInt64(20 + random.next(200))
        case 3: device.location.country = countries[random.next(countries.count)]
        case 4:
            device.labels =
                random.next(2) == 0 ? ["tier": "datacenter"] : ["tier": "edge", "zone": "z\(random.next(3))"]
        case 5:
            device.gpus =
                device.gpus.count > 0
                ? GPUInventory() : GPUInventory(vendor: "AMD", model: "AMD MI300", count: 1, vramMiB: 65_536)
        case 6: device.ownerDID = "did:key:new-owner\(random.next(3))"
        default: device.reputation.completed += UInt64(1 + random.next(5))
        }
        return device
    }

    static func coordinates(for devices: [PlacementDevice], _ random: inout Generator) -> [String: VivaldiCoordinate] {
        var coordinates: [String: VivaldiCoordinate] = [:]
        for device in devices where random.next(8) != 0 {
            var vector = Array(repeating: 0.0, count: VivaldiCoordinate.dimensions)
            vector[0] = Double(random.next(1000)) / 10
            vector[1] = Double(random.next(1000)) / 10
            coordinates[device.did] = VivaldiCoordinate(vector: vector, height: 0.5, error: 0.2)
        }
        return coordinates
    }

    /// Requests that read every part of a snapshot: single placements with each kind of constraint (countries, a
    /// label, a GPU, a price ceiling, an owner list, a latency target) and ensembles joined by latency edges.
    static func requests(_ random: inout Generator) -> [PlacementRequest] {
        var requests: [PlacementRequest] = []
        for variant in 0..<24 {
            var constraints = HardConstraints()
            if variant % 2 == 0 { constraints.acceptCountries = [countries[random.next(countries.count)]] }
            if variant % 3 == 0 { constraints.requiredLabels = ["tier": "datacenter"] }
            if variant % 5 == 0 { constraints.maxPricePerHour = UInt64(300 + random.next(800)) }
            if variant % 7 == 0 { constraints.allowedProviders = ["did:key:owner\(random.next(6))"] }
            if variant % 4 == 1 {
                constraints.latencyTargets = [
                    LatencyTarget(place: .landmark("did:key:device\(random.next(60))"), maxRTTMilliseconds: 80)
                ]
            }
            let gpu = variant % 6 == 5 ? GPURequirement(count: 1) : GPURequirement()
            requests.append(
                PlacementRequest(allocations: [
                    AllocationRequest(
                        name: "job", cpuCores: 1 + random.next(8), ramMiB: 1024 * (1 + random.next(4)), diskMiB: 100,
                        gpu: gpu, durationSeconds: 3600, constraints: constraints)
                ]))
        }
        for _ in 0..<6 {
            let allocations = (0..<3).map { index in
                AllocationRequest(
                    name: "part\(index)", replicas: 1 + random.next(2), cpuCores: 1 + random.next(4), ramMiB: 1024,
                    diskMiB: 100, durationSeconds: 3600, spread: index == 0 ? .spread : .any)
            }
            requests.append(
                PlacementRequest(
                    allocations: allocations,
                    edges: [
                        LatencyEdge(from: 0, to: 1, maxRTTMilliseconds: Double(20 + random.next(40))),
                        LatencyEdge(from: 1, to: 2, maxRTTMilliseconds: Double(20 + random.next(40))),
                    ]))
        }
        return requests
    }

    /// What a solver answers on a snapshot, for comparing two snapshots of the same fleet.
    static func answers(_ requests: [PlacementRequest], on snapshot: PlacementSnapshot) -> [String] {
        let solver = PlacementSolver(timeLimit: .seconds(60))
        return requests.map { request in
            switch solver.place(request, on: snapshot) {
            case .placed(let placement):
                let devices = placement.allocations.map { $0.replicas.map(\.deviceDID).joined(separator: ",") }
                return "\(devices.joined(separator: ";")) at \(placement.totalCost)"
            case .infeasible(let why):
                return "infeasible: \(why)"
            }
        }
    }

    @Test(
        "devices changed and coordinates refitted, in place, answer as a snapshot from scratch (200 rounds of random changes)"
    )
    func updatesAnswerAsRebuilt() throws {
        var random = Generator(state: 0xC0FFEE)
        var devices = (0..<120).map { Self.device($0, &random) }
        var coordinates = Self.coordinates(for: devices, &random)
        var updated = PlacementSnapshot(devices: devices, coordinates: coordinates)
        var placedSomewhere = 0
        for round in 0..<200 {
            var changed: [PlacementDevice] = []
            for _ in 0..<(1 + random.next(4)) {
                let index = random.next(devices.count)
                devices[index] = Self.changed(devices[index], &random)
                changed.append(devices[index])
            }
            if round % 10 == 9 {
                coordinates = Self.coordinates(for: devices, &random)
                updated = updated.withCoordinates(coordinates)
            }
            updated = try #require(updated.updating(changed), "round \(round)")
            let rebuilt = PlacementSnapshot(devices: devices, coordinates: coordinates)
            #expect(updated.devices == rebuilt.devices)
            if round % 20 == 0 || round == 199 {
                let requests = Self.requests(&random)
                let expected = Self.answers(requests, on: rebuilt)
                #expect(Self.answers(requests, on: updated) == expected, "round \(round)")
                let solver = PlacementSolver(timeLimit: .seconds(60))
                for request in requests {
                    #expect(
                        solver.explain(request, on: updated) == solver.explain(request, on: rebuilt), "round \(round)")
                }
                placedSomewhere += expected.filter { !$0.hasPrefix("infeasible") }.count
            }
        }
        // The requests must place often enough for the comparison to mean something.
        #expect(placedSomewhere > 100, "\(placedSomewhere) placed")
    }

    @Test("an update shares what it did not change; a device it does not hold or one moved on the map needs a new one")
    func sharingAndRefusals() throws {
        var random = Generator(state: 7)
        let devices = (0..<20).map { Self.device($0, &random) }
        let snapshot = PlacementSnapshot(devices: devices, coordinates: Self.coordinates(for: devices, &random))
        var offline = devices[3]
        offline.online.toggle()
        let updated = try #require(snapshot.updating([offline]))
        #expect(updated.latencies === snapshot.latencies)
        #expect(updated.devices[3].online == offline.online)
        #expect(snapshot.devices[3].online == devices[3].online)
        #expect(snapshot.updating([Self.device(99, &random)]) == nil)
        var moved = devices[4]
        moved.location.point = GeoPoint(latitude: 10, longitude: 10)
        #expect(snapshot.updating([moved]) == nil)
    }
}
