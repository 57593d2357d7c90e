import OrreryPlacement
import Testing

/// `PlacementSolver.nearest`: the feasible device with the least estimated RTT to an allocation's latency targets,
/// within a price cap — what a move for lower latency chooses.
@Suite("Nearest placement")
struct NearestPlacementTests {
    static let paris = GeoPoint(latitude: 48.85, longitude: 2.35)
    static let madrid = GeoPoint(latitude: 40.42, longitude: -3.70)
    let solver = PlacementSolver()

    static func request(
        targets: [LatencyTarget] = [LatencyTarget(place: .point(paris), maxRTTMilliseconds: 300)],
        country: [String] = [], excluded: Set<String> = []
    ) -> PlacementRequest {
        var allocation = AllocationRequest(name: "counter", cpuCores: 2, ramMiB: 1024)
        allocation.constraints.latencyTargets = targets
        allocation.constraints.acceptCountries = Set(country)
        return PlacementRequest(allocations: [allocation], excludedDevices: excluded)
    }

    let snapshot = PlacementSnapshot(devices: [
        Fleet.device("madrid", country: "ES", point: madrid, perCore: 50),
        Fleet.device("paris", country: "FR", point: paris, perCore: 100),
        Fleet.device("paris-pricey", country: "FR", point: paris, perCore: 400),
        Fleet.device("paris-cheap-unplaced", country: "FR", point: nil, perCore: 10),
        Fleet.device("berlin", perCore: 100),
    ])

    @Test("the nearest device within the price cap wins, whatever the cheaper ones elsewhere")
    func nearestWithinCap() throws {
        let found = try #require(solver.nearest(Self.request(), on: snapshot, maxHourly: 10_000))
        #expect(found.replica.deviceDID == "did:key:paris")  // paris-pricey is as near but dearer
        #expect(found.replica.hourlyPrice == 2 * 100 + 10)
        #expect(abs(found.latencyMilliseconds - GeographicLatency.accessDelayMilliseconds) < 0.01)
        // A cap below Paris's (and Berlin's) price leaves Madrid; the cheaper device off the map is passed over.
        let capped = try #require(solver.nearest(Self.request(), on: snapshot, maxHourly: 2 * 100 + 10 - 1))
        #expect(capped.replica.deviceDID == "did:key:madrid")
        let berlinOnly = try #require(
            solver.nearest(
                Self.request(excluded: ["did:key:paris", "did:key:paris-pricey"]), on: snapshot,
                maxHourly: 10_000))
        #expect(berlinOnly.replica.deviceDID == "did:key:berlin")
        #expect(berlinOnly.latencyMilliseconds > 10)
    }

    @Test("hard constraints and exclusions hold; a device whose RTT cannot be estimated is passed over")
    func constraintsHold() throws {
        // Only Spain allowed: Madrid, though farther than Paris.
        let spain = try #require(solver.nearest(Self.request(country: ["ES"]), on: snapshot, maxHourly: 10_000))
        #expect(spain.replica.deviceDID == "did:key:madrid")
        // The cheapest French device has no place on the map: never chosen for nearness.
        let french = try #require(
            solver.nearest(Self.request(country: ["FR"], excluded: ["did:key:paris"]), on: snapshot, maxHourly: 10_000))
        #expect(french.replica.deviceDID == "did:key:paris-pricey")
        #expect(solver.nearest(Self.request(country: ["FR"]), on: snapshot, maxHourly: 100) == nil)
    }

    @Test("no latency targets, no answer: nearness means nothing")
    func noTargets() {
        #expect(solver.nearest(Self.request(targets: []), on: snapshot, maxHourly: 10_000) == nil)
        #expect(
            snapshot.estimatedLatency(
                of: "did:key:paris-cheap-unplaced",
                to: Self.request().allocations[0]
                    .constraints.latencyTargets) == nil)
        #expect(snapshot.estimatedLatency(of: "did:key:nobody", to: []) == nil)
    }
}
