public import OrreryProto

/// What a contract's price makes due for a replica's cumulative use: at least its minimum charge (use proves it ran),
/// at most its maximum cost, rounded up to a whole base unit. The settlement gateway releases this against receipts;
/// the orchestrator shows it as a replica's cost so far — one rule for both.
public enum ContractCharge {
    /// Cumulative use, as receipts and usage reports carry it.
    public struct Use: Sendable, Equatable {
        public var cpuSeconds: Double
        public var gpuSeconds: Double
        public var wallSeconds: Double
        public var ramMibHours: Double

        public init(cpuSeconds: Double = 0, gpuSeconds: Double = 0, wallSeconds: Double = 0, ramMibHours: Double = 0) {
            self.cpuSeconds = cpuSeconds
            self.gpuSeconds = gpuSeconds
            self.wallSeconds = wallSeconds
            self.ramMibHours = ramMibHours
        }

        /// The use a device signs receipts for: metered CPU, and the reserved RAM and GPUs held for the whole wall
        /// time. The orchestrator computes a replica's cost so far from the same rule, so both agree.
        public static func held(cpuSeconds: Double, wallSeconds: Double, ramMib: UInt64, gpus: UInt32) -> Use {
            Use(
                cpuSeconds: cpuSeconds, gpuSeconds: Double(gpus) * wallSeconds, wallSeconds: wallSeconds,
                ramMibHours: Double(ramMib) * wallSeconds / 3600)
        }
    }

    /// The amount due under `price` for `use`; a fixed price is due only once the replica `completed`.
    public static func due(_ price: Orrery_Notary_V1_PriceTerms, for use: Use, completed: Bool) -> UInt64 {
        let amount: Double
        switch price.model {
        case .perTime:
            amount = max(Double(price.hourlyPrice) * use.wallSeconds / 3600, Double(price.minimumCharge))
        case .perResource:
            amount = max(
                Double(price.cpuHourPrice) * use.cpuSeconds / 3600 + Double(price.gpuHourPrice) * use.gpuSeconds / 3600
                    + Double(price.ramGibHourPrice) * use.ramMibHours / 1024, Double(price.minimumCharge))
        case .fixed: amount = completed ? Double(price.fixedPrice) : 0
        default: amount = 0
        }
        guard amount.isFinite, amount > 0 else { return 0 }
        return min(price.maxCost, UInt64(min(amount.rounded(.up), Double(UInt64.max / 2))))
    }
}
