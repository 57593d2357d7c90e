/// Whether an allocation's sandbox has its partners' listeners (`EnsembleListeners`), decided per look at its network
/// namespace: a namespace gets listeners once every listen in it succeeded. One that failed (the connector not
/// answering yet, its namespace not readable for a moment, the address taken) is tried again at the next look — left
/// as it was, the sandbox would reach none of its partners for the rest of its life, its connections refused.
struct PartnerListening: Equatable {
    /// The namespace whose listeners serve now.
    private(set) var served: String?
    /// The namespace whose last attempt failed (its failure was reported once).
    private var failedIn: String?

    /// What to do with the sockets one attempt made.
    enum Step: Equatable {
        /// Serve them: every partner port listens.
        case serve
        /// Close them and try again at the next look; `report` on the first failure in this namespace.
        case retry(report: Bool)
    }

    /// Whether `namespace` (the sandbox's now) needs listeners made.
    func needsListening(in namespace: String) -> Bool { namespace != served }

    /// An attempt in `namespace` ended, every listen succeeding (`complete`) or not.
    mutating func listened(in namespace: String, complete: Bool) -> Step {
        guard complete else {
            let report = failedIn != namespace
            failedIn = namespace
            served = nil
            return .retry(report: report)
        }
        served = namespace
        failedIn = nil
        return .serve
    }
}
