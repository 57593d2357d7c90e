extension Orrery_Notary_V1_ContractState {
    /// "proposed", "active", … — as the notary's messages and the CLI name a contract's state.
    public var name: String {
        switch self {
        case .proposed: "proposed"
        case .active: "active"
        case .completed: "completed"
        case .terminated: "terminated"
        case .disputed: "disputed"
        case .settled: "settled"
        default: "unspecified"
        }
    }
}
