internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
public import OrreryIdentity
internal import OrreryLedger
public import OrreryProto
internal import SwiftProtobuf

/// What a device signs on its line, the same for the agent and for the fleet simulator's virtual devices: its
/// acceptance of an offer's contract, its bid, and the usage its receipts state.
public enum DeviceSignatures {
    /// The device's signed acceptance of the contract an offer carries, after checking that the orchestrator signed
    /// it and that its terms are the offer's: this device (`key`), its owner (the issuer of the last delegation in
    /// `chain`), the same replica, resources and price, and a minimum charge no lower than the owner's
    /// `minimumPerJob` (or the job's cost, when lower).
    public static func acceptance(
        of proposal: Orrery_Common_V1_Signed, in offer: Orrery_Orchestrator_V1_Offer, key: SigningKey,
        chain: [Delegation], minimumPerJob: UInt64, now: Date
    ) throws -> Orrery_Common_V1_Signed {
        let orchestrator = try DID(offer.orchestratorDid)
        try SignedMessage.verify(proposal, type: Orrery_Notary_V1_Contract.protoMessageName, requiring: [orchestrator])
        let contract = try Orrery_Notary_V1_Contract(serializedBytes: proposal.payload)
        let resources = offer.spec.resources
        let owner = chain.last { $0.audience == key.did }?.issuer.string
        var problems: [String] = []
        if contract.deviceDid != key.did.string { problems.append("it names device \(contract.deviceDid)") }
        if let owner, contract.ownerDid != owner { problems.append("it names owner \(contract.ownerDid)") }
        if contract.orchestratorDid != offer.orchestratorDid { problems.append("another orchestrator") }
        if contract.consumerDid != offer.consumerDid { problems.append("another consumer") }
        if contract.deploymentID != offer.deploymentID || contract.allocation != offer.allocation
            || contract.replica != offer.replica
        {
            problems.append("another replica")
        }
        if contract.price.maxCost != offer.jobCost {
            problems.append("max_cost \(contract.price.maxCost) ≠ \(offer.jobCost)")
        }
        if contract.price.hourlyPrice != offer.hourlyPrice { problems.append("another hourly price") }
        let minimum = min(minimumPerJob, offer.jobCost)
        if contract.price.minimumCharge < minimum {
            problems.append("minimum_charge \(contract.price.minimumCharge) < the owner's minimum per job \(minimum)")
        }
        if contract.resources.cpuCores != resources.cpuCores || contract.resources.ramMib != resources.ramMib
            || contract.resources.diskMib != resources.diskMib || contract.resources.gpuCount != resources.gpu.count
        {
            problems.append("other resources")
        }
        guard problems.isEmpty else { throw ContractMismatch(problems: problems) }
        let acceptance = Orrery_Notary_V1_ContractAcceptance.with {
            $0.contractID = contract.id
            $0.contractSha256 = Data(SHA256.hash(data: proposal.payload))
            $0.deviceDid = key.did.string
            $0.acceptedAt = Google_Protobuf_Timestamp(date: now)
            $0.deviceAuthority =
                (try? UCANContainer.encode(chain.map(\.envelope.bytes), header: .raw)).map { Data($0) } ?? Data()
        }
        return SignedMessage.make(
            type: Orrery_Notary_V1_ContractAcceptance.protoMessageName, payload: try acceptance.serializedBytes(),
            signers: [key])
    }

    /// The device's signed bid on `offer`, carrying its contract `acceptance` when the offer proposed one.
    public static func bid(
        on offer: Orrery_Orchestrator_V1_Offer, acceptance: Orrery_Common_V1_Signed?, key: SigningKey, now: Date
    ) throws -> Orrery_Common_V1_Signed {
        let bid = Orrery_Orchestrator_V1_Bid.with {
            $0.offerID = offer.offerID
            $0.deviceDid = key.did.string
            $0.orchestratorDid = offer.orchestratorDid
            $0.jobCost = offer.jobCost
            $0.signedAt = Google_Protobuf_Timestamp(date: now)
            if let acceptance { $0.acceptance = acceptance }
        }
        return SignedMessage.make(
            type: Orrery_Orchestrator_V1_Bid.protoMessageName, payload: try bid.serializedBytes(), signers: [key])
    }

    /// What an allocation used so far, as a receipt's usage: metered CPU, the RAM and GPUs it held for its wall time.
    public static func usage(
        cpuSeconds: Double, wallSeconds: Double, spec: Orrery_Orchestrator_V1_AllocationSpec?, at time: Date = Date()
    ) -> Orrery_Notary_V1_UsageReceipt {
        let use = ContractCharge.Use.held(
            cpuSeconds: cpuSeconds, wallSeconds: wallSeconds, ramMib: spec?.resources.ramMib ?? 0,
            gpus: spec?.resources.gpu.count ?? 0)
        return .with {
            $0.cpuSeconds = use.cpuSeconds
            $0.wallSeconds = use.wallSeconds
            $0.ramMibHours = use.ramMibHours
            $0.gpuSeconds = use.gpuSeconds
            $0.at = Google_Protobuf_Timestamp(date: time)
        }
    }

    /// The digest of what ran: the artifact's declared sha256, or that of the inline script.
    public static func artifactDigest(_ spec: Orrery_Orchestrator_V1_AllocationSpec?) -> String {
        guard let artifact = spec?.artifact else { return "" }
        if !artifact.sha256.isEmpty { return artifact.sha256 }
        if case .text(let text)? = artifact.source {
            return Hex.sha256(Data(text.utf8))
        }
        return ""
    }

    /// The sequence number a signed usage or completion receipt carries (0 when it is neither).
    public static func sequence(of receipt: Orrery_Common_V1_Signed) -> UInt64 {
        if receipt.type == Orrery_Notary_V1_CompletionReceipt.protoMessageName {
            return (try? Orrery_Notary_V1_CompletionReceipt(serializedBytes: receipt.payload))?.sequence ?? 0
        }
        return (try? Orrery_Notary_V1_UsageReceipt(serializedBytes: receipt.payload))?.sequence ?? 0
    }
}

/// A contract whose terms are not the offer's.
public struct ContractMismatch: Error, CustomStringConvertible {
    public let problems: [String]
    public var description: String { problems.joined(separator: "; ") }
}
