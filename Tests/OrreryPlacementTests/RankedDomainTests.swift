import Testing

@testable import OrreryPlacement

@Suite("Ranked domain")
struct RankedDomainTests {
    @Test(
        "read in order, chunk by chunk, it yields exactly the fully sorted sequence",
        arguments: [0, 1, 63, 64, 65, 1000, 5003])
    func matchesFullSort(count: Int) {
        var state: UInt64 = UInt64(count) &+ 99
        func next(_ bound: UInt64) -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return (state >> 33) % bound
        }
        let items = (0..<count).map { index in
            // Few distinct costs: ties exercise every tie-break.
            Candidate(
                device: index, hourly: 0, cost: next(40), latency: Double(next(3)), reputation: Double(next(4)) / 4)
        }
        let expected = items.sorted(by: PlacementSolver.precedes).map(\.device)
        let domain = RankedDomain(items.shuffled())
        #expect((0..<count).map { domain[$0].device } == expected)
        #expect(RankedDomain(items.shuffled()).all.map(\.device) == expected)
    }
}
