internal import Foundation
internal import GRPCCore
internal import OrreryIdentity
internal import OrreryProto

/// What a well-formed contract is, and who may move it where (docs/ARCHITECTURE.md §2).
enum ContractRules {
    static let chains: Set<String> = ["ledger", "ethereum", "cardano"]

    /// Every problem of a proposed contract, as one INVALID_ARGUMENT naming the fields.
    static func validate(_ contract: Orrery_Notary_V1_Contract) throws {
        var problems: [String] = []
        if !(contract.id.hasPrefix("ctr_") && contract.id.count == 30) {
            problems.append("id: expected \"ctr_\" and 26 base32 characters")
        }
        for (field, value) in [
            ("consumer_did", contract.consumerDid), ("device_did", contract.deviceDid),
            ("owner_did", contract.ownerDid), ("orchestrator_did", contract.orchestratorDid),
        ] where (try? DID(value)) == nil {
            problems.append("\(field): '\(value)' is not a did:key")
        }
        if contract.deploymentID.isEmpty { problems.append("deployment_id: required") }
        if contract.allocation.isEmpty { problems.append("allocation: required") }
        if contract.resources.cpuCores == 0 { problems.append("resources.cpu_cores: at least 1") }
        if contract.resources.ramMib == 0 { problems.append("resources.ram_mib: at least 1") }
        let price = contract.price
        switch price.model {
        case .perTime: if price.hourlyPrice == 0 { problems.append("price.hourly_price: required for PER_TIME") }
        case .fixed: if price.fixedPrice == 0 { problems.append("price.fixed_price: required for FIXED") }
        case .perResource:
            if price.cpuHourPrice == 0 && price.gpuHourPrice == 0 && price.ramGibHourPrice == 0 {
                problems.append(
                    "price: PER_RESOURCE needs at least one of cpu_hour_price, gpu_hour_price, ram_gib_hour_price")
            }
        default: problems.append("price.model: PER_TIME, PER_RESOURCE or FIXED")
        }
        if price.maxCost == 0 { problems.append("price.max_cost: at least 1 (what escrow holds)") }
        if price.minimumCharge > price.maxCost {
            problems.append("price.minimum_charge: above max_cost (a run cannot cost more than escrow holds)")
        }
        if price.model == .fixed && price.maxCost < price.fixedPrice {
            problems.append("price.max_cost: below fixed_price")
        }
        if contract.maxDurationSeconds == 0 { problems.append("max_duration_seconds: at least 1") }
        if !(0...1).contains(contract.sla.availability) { problems.append("sla.availability: between 0 and 1") }
        if contract.penalties.availabilityBps > 10_000 { problems.append("penalties.availability_bps: at most 10000") }
        if contract.penalties.relocationBps > 10_000 { problems.append("penalties.relocation_bps: at most 10000") }
        if !chains.contains(contract.settlementChain) {
            problems.append("settlement_chain: one of \(chains.sorted().joined(separator: ", "))")
        }
        if contract.settlementChain != "ledger" && contract.payoutAddress.isEmpty {
            problems.append("payout_address: required to settle on \(contract.settlementChain)")
        }
        if contract.replaces == contract.id { problems.append("replaces: a contract cannot replace itself") }
        if contract.consumerAuthority.isEmpty {
            problems.append("consumer_authority: the consumer's delegation to the orchestrator must be embedded")
        }
        if !contract.hasProposedAt { problems.append("proposed_at: required") }
        guard problems.isEmpty else {
            throw NotaryFailure.invalid("the contract is not valid: " + problems.joined(separator: "; "))
        }
    }

    /// Who may sign a transition to `state` (docs/ARCHITECTURE.md §2): nil when no party may request it through
    /// TransitionContract (the notary records `active` and `completed` itself).
    static func signers(
        for state: Orrery_Notary_V1_ContractState, of contract: Orrery_Notary_V1_Contract, settlementDID: String?
    ) -> [String]? {
        switch state {
        case .terminated: return [contract.orchestratorDid, contract.consumerDid]
        case .disputed: return [contract.consumerDid, contract.ownerDid]
        case .settled: return settlementDID.map { [$0] } ?? []
        default: return nil
        }
    }

    /// The states a contract may move to `state` from.
    static func allowedSources(of state: Orrery_Notary_V1_ContractState) -> Set<Orrery_Notary_V1_ContractState> {
        switch state {
        case .active: return [.proposed]
        case .completed, .terminated: return [.active]
        case .disputed: return [.active, .completed, .terminated]
        case .settled: return [.completed, .terminated, .disputed]
        default: return []
        }
    }
}
