import OrreryPlacement
import Testing

@testable import OrchestratorService

/// Placements at once in one orchestrator replica: each sees what the others chose and have not committed yet.
@Suite("Placement ledger: concurrent placements do not fill a device twice")
struct PlacementLedgerTests {
    static let four = Reservation(cores: 4, ramMiB: 1024)

    /// What `choose` saw on device x, with the placement reserving `reserving` there.
    static func seen(
        _ ledger: PlacementLedger, _ ticket: PlacementLedger.Ticket, committed: [String: Reservation] = [:],
        reserving: Reservation? = nil
    ) async -> Int {
        await ledger.choose(ticket, committed: committed) { reserved in
            (reserved["x"]?.cores ?? 0, reserving.map { ["x": $0] } ?? [:])
        }.outcome
    }

    @Test(
        "a choice not yet committed is counted by the others; once committed, only by those whose read may have missed it; then forgotten"
    )
    func heldUntilEveryEarlierReadIsDone() async {
        let ledger = PlacementLedger()
        let first = await ledger.begin("dep_1")
        let second = await ledger.begin("dep_2")
        #expect(await Self.seen(ledger, first, reserving: Self.four) == 0)
        // The second placement's read may have been before the first committed: it counts the first's choice.
        #expect(await Self.seen(ledger, second) == 4)
        #expect(await Self.seen(ledger, second, committed: ["x": Reservation(cores: 1)]) == 5)
        await ledger.finish(first, committed: true)
        // Committed while the second was in progress: still counted for it (its read may have come before), in
        // doubt (its read may have seen it too).
        #expect(await Self.seen(ledger, second) == 4)
        let doubted = await ledger.choose(second, committed: [:]) { _ in (0, [:]) }.doubted
        #expect(doubted)
        // A placement begun after the commit reads it from the database: not counted twice.
        let third = await ledger.begin("dep_3")
        #expect(await Self.seen(ledger, third, committed: ["x": Self.four]) == 4)
        await ledger.finish(second, committed: false)
        await ledger.finish(third, committed: false)
        #expect(await ledger.heldCount == 0)
    }

    @Test("a placement that did not commit (it lost its transition, or failed) holds nothing")
    func uncommittedDropped() async {
        let ledger = PlacementLedger()
        let first = await ledger.begin("dep_1")
        let waiting = await ledger.begin("dep_2")
        let alone = await ledger.choose(first, committed: [:]) { _ in (0, ["x": Self.four]) }.doubted
        #expect(!alone, "no other placement's reservation was counted")
        await ledger.finish(first, committed: false)
        #expect(await Self.seen(ledger, waiting) == 0)
        await ledger.finish(waiting, committed: false)
        #expect(await ledger.heldCount == 0)
    }

    @Test(
        "two placements of one deployment at once (a submit and the periodic round) do not count each other's choice: only one of them can commit"
    )
    func sameDeploymentNotCountedAgainstItself() async {
        let ledger = PlacementLedger()
        let bySubmit = await ledger.begin("dep_1")
        let byRound = await ledger.begin("dep_1")
        let other = await ledger.begin("dep_2")
        #expect(await Self.seen(ledger, byRound, reserving: Self.four) == 0)
        let (seen, doubted) = await ledger.choose(bySubmit, committed: [:]) { reserved in
            (reserved["x"]?.cores ?? 0, ["x": Self.four])
        }
        #expect(seen == 0 && !doubted, "the same deployment's other placement was counted")
        // Another deployment counts both: either may commit.
        #expect(await Self.seen(ledger, other) == 8)
        for ticket in [bySubmit, byRound, other] { await ledger.finish(ticket, committed: false) }
        #expect(await ledger.heldCount == 0)
    }
}
