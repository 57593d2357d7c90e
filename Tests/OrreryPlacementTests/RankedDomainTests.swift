import Testing

@testable import OrreryPlacement

@Suite("Ranked domain")
struct RankedDomainTests {
    @Test(
        "read in order, chunk by chunk, it yields exactly the fully sorted sequence",
        arguments: [
            (0, 40), (1, 40), (63, 40), (64, 40), (65, 40), (1000, 40), (5003, 40), (20_000, 40), (20_000, 1_000_000),
        ])
    func matchesFullSort(count: Int, distinctCosts: UInt64) {
        var state: UInt64 = UInt64(count) &+ 99
        func next(_ bound: UInt64) -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return (state >> 33) % bound
        }
        let items = (0..<count).map { index in
            // Few distinct costs: ties exercise every tie-break (and, over 4,096 candidates, the first chunk's
            // threshold falls among many ties); many: the first chunk is taken by its threshold.
            Candidate(
                device: index, hourly: 0, cost: next(distinctCosts), latency: Double(next(3)),
                reputation: Double(next(4)) / 4)
        }
        let expected = items.sorted(by: PlacementSolver.precedes).map(\.device)
        let domain = RankedDomain(items.shuffled())
        #expect((0..<count).map { domain[$0].device } == expected)
        #expect(RankedDomain(items.shuffled()).all.map(\.device) == expected)
    }
}
