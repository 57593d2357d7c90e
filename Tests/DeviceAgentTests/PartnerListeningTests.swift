import Testing

@testable import DeviceAgent

/// A sandbox's partner listeners are made again after a failed attempt, at the next look, instead of never.
@Suite("Ensemble listeners: a failed listen is tried again")
struct PartnerListeningTests {
    @Test(
        "a failed attempt is retried (reported once per namespace) until every listen succeeds; a new namespace listens again"
    )
    func retriedUntilListening() {
        var state = PartnerListening()
        #expect(state.needsListening(in: "net:[1]"))
        #expect(state.listened(in: "net:[1]", complete: false) == .retry(report: true))
        // Still without listeners: the next look tries again, and a second failure there is not reported again.
        #expect(state.needsListening(in: "net:[1]"))
        #expect(state.listened(in: "net:[1]", complete: false) == .retry(report: false))
        #expect(state.needsListening(in: "net:[1]"))
        #expect(state.listened(in: "net:[1]", complete: true) == .serve)
        #expect(!state.needsListening(in: "net:[1]"))
        #expect(state.served == "net:[1]")
        // A restart in place: a new namespace gets listeners of its own, and its failure is reported.
        #expect(state.needsListening(in: "net:[2]"))
        #expect(state.listened(in: "net:[2]", complete: false) == .retry(report: true))
        #expect(state.served == nil)
        #expect(state.needsListening(in: "net:[2]"))
        #expect(state.listened(in: "net:[2]", complete: true) == .serve)
        #expect(!state.needsListening(in: "net:[2]"))
    }
}
