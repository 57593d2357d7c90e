#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryPlacement

/// What this device promised to accepted offers, kept in its state directory so a restart neither forgets a
/// promise nor makes it twice. A promise lapses after its allocation's maximum duration (an hour without one).
actor CommitmentLedger {
    struct Promise: Codable {
        var resources: Commitment
        var until: Date
        /// The orchestrator (DID) whose offer it is; nil in promises journalled before it was recorded.
        var orchestrator: String?
    }

    private let path: String
    private var promises: [String: Promise]

    init(stateDirectory: String) {
        path = stateDirectory + "/commitments.json"
        promises =
            (FileManager.default.contents(atPath: path)).flatMap {
                try? JSONDecoder().decode([String: Promise].self, from: $0)
            } ?? [:]
    }

    /// Everything still promised at `now`.
    func committed(at now: Date) -> Commitment {
        promises.values.filter { $0.until > now }.reduce(Commitment()) { $0.adding($1.resources) }
    }

    func contains(_ offerID: String) -> Bool { promises[offerID] != nil }

    /// The offers of `orchestrator` that still hold promised capacity, by id.
    func promised(to orchestrator: String, at now: Date = Date()) -> [String] {
        promises.filter { $0.value.orchestrator == orchestrator && $0.value.until > now && !$0.value.resources.isZero }
            .map(\.key).sorted()
    }

    /// Records a promise, journalled before it counts: when the journal cannot be written (a full or read-only
    /// state directory) nothing is promised and the error is thrown.
    func promise(_ offerID: String, _ resources: Commitment, until: Date, orchestrator: String? = nil) throws {
        let before = promises[offerID]
        promises[offerID] = Promise(resources: resources, until: until, orchestrator: orchestrator)
        do {
            try persist()
        } catch {
            promises[offerID] = before
            throw error
        }
    }

    /// The allocation ended: what it held is free again (its record stays, so a repeated offer is recognised).
    func release(_ offerID: String) throws {
        guard var promise = promises[offerID] else { return }
        promise.resources = Commitment()
        promises[offerID] = promise
        try persist()
    }

    private func persist() throws {
        let now = Date()
        promises = promises.filter { $0.value.until > now }
        let data = try JSONEncoder().encode(promises)
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
