import OrreryLedger
import OrreryProto
import Testing

/// What a contract's price makes due for cumulative use: the one rule settlement releases by and the orchestrator
/// shows as a replica's cost so far.
@Suite("Contract charge")
struct ContractChargeTests {
    func price(_ build: (inout Orrery_Notary_V1_PriceTerms) -> Void) -> Orrery_Notary_V1_PriceTerms {
        var price = Orrery_Notary_V1_PriceTerms()
        price.maxCost = 1_000_000
        build(&price)
        return price
    }

    @Test(
        "per time: the hourly price for the wall time, rounded up to a base unit, at least the minimum, at most the maximum",
        arguments: [
            // (hourly, minimum, max cost, wall seconds, due)
            (3600 as UInt64, 0 as UInt64, 1_000_000 as UInt64, 10.0, 10 as UInt64),
            (5, 0, 1_000_000, 2.5, 1),  // 0.0035 NTX rounds up: a replica that ran is never free
            (5, 0, 1_000_000, 0, 0),
            (3600, 50, 1_000_000, 10, 50),  // a short run pays the owner's minimum
            (3600, 50, 1_000_000, 60, 60),
            (3600, 0, 30, 60, 30),  // never more than escrow holds
        ])
    func perTime(hourly: UInt64, minimum: UInt64, maxCost: UInt64, wall: Double, due: UInt64) {
        let terms = price {
            $0.model = .perTime; $0.hourlyPrice = hourly; $0.minimumCharge = minimum; $0.maxCost = maxCost
        }
        #expect(ContractCharge.due(terms, for: .init(wallSeconds: wall), completed: false) == due)
    }

    @Test("per resource: CPU, GPU and memory each at their price; fixed: due once completed")
    func perResourceAndFixed() {
        let resources = price {
            $0.model = .perResource; $0.cpuHourPrice = 3600; $0.gpuHourPrice = 7200; $0.ramGibHourPrice = 1024
        }
        let use = ContractCharge.Use(cpuSeconds: 10, gpuSeconds: 1, wallSeconds: 99, ramMibHours: 2)
        #expect(ContractCharge.due(resources, for: use, completed: false) == 10 + 2 + 2)
        let fixed = price {
            $0.model = .fixed; $0.fixedPrice = 700
        }
        #expect(ContractCharge.due(fixed, for: use, completed: false) == 0)
        #expect(ContractCharge.due(fixed, for: use, completed: true) == 700)
        #expect(ContractCharge.due(price { $0.model = .unspecified }, for: use, completed: true) == 0)
    }
}
