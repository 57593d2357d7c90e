internal import Crypto
internal import Foundation
internal import GRPCCore
internal import OrreryIdentity
internal import OrreryLedger
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization

/// What a release rests on (docs/ARCHITECTURE.md §2): the contract and its latest receipt, each proven included in a tree head
/// the notary signed — checked here from the proofs alone, never by reading the notary's tables.
struct ProvenRelease {
    let contract: Orrery_Notary_V1_Contract
    let usage: Orrery_Notary_V1_UsageReceipt
    /// The receipt is the completion receipt.
    let completed: Bool

    static func verify(
        _ request: Orrery_Settlement_V1_ReleaseRequest, notary: DID, heads: VerifiedTreeHeads
    ) throws -> ProvenRelease {
        let head: Orrery_Notary_V1_TreeHead
        do {
            head = try heads.verify(request.treeHead)
        } catch {
            throw RPCError(code: .invalidArgument, message: "tree_head: \(error)")
        }
        guard head.logDid == notary.string else {
            throw RPCError(
                code: .permissionDenied,
                message: "tree_head is signed by \(head.logDid), not by the notary this gateway trusts (\(notary))")
        }
        let contractEntry = try included(request.contract, "contract", head: head, notary: notary)
        let receiptEntry = try included(request.receipt, "receipt", head: head, notary: notary)
        guard contractEntry.kind == .contract, contractEntry.contractID == request.contractID else {
            throw RPCError(
                code: .invalidArgument,
                message: "contract: entry \(request.contract.index) is not contract \(request.contractID)'s")
        }
        let contract: Orrery_Notary_V1_Contract
        do {
            contract = try Orrery_Notary_V1_Contract(serializedBytes: contractEntry.act.payload)
        } catch {
            throw RPCError(code: .invalidArgument, message: "contract: the entry's act is not a contract")
        }
        guard receiptEntry.contractID == request.contractID else {
            throw RPCError(
                code: .invalidArgument, message: "receipt: entry \(request.receipt.index) is for another contract")
        }
        do {
            try SignedMessage.verify(receiptEntry.act, requiring: [try DID(contract.deviceDid)])
        } catch {
            throw RPCError(code: .permissionDenied, message: "receipt: not signed by the contract's device: \(error)")
        }
        switch receiptEntry.kind {
        case .usageReceipt:
            let usage = try Orrery_Notary_V1_UsageReceipt(serializedBytes: receiptEntry.act.payload)
            return ProvenRelease(contract: contract, usage: usage, completed: false)
        case .completionReceipt:
            let completion = try Orrery_Notary_V1_CompletionReceipt(serializedBytes: receiptEntry.act.payload)
            return ProvenRelease(contract: contract, usage: completion.usage, completed: true)
        default:
            throw RPCError(code: .invalidArgument, message: "receipt: entry \(request.receipt.index) is not a receipt")
        }
    }

    /// The log entry a proven leaf holds, after checking its inclusion and its index. The leaf's own notary
    /// signature is not checked again: its inclusion under a head the notary signed already binds the notary to it.
    static func included(
        _ proven: Orrery_Settlement_V1_ProvenEntry, _ field: String, head: Orrery_Notary_V1_TreeHead, notary: DID
    ) throws -> Orrery_Notary_V1_LogEntry {
        guard
            MerkleTree.verifyInclusion(
                leafHash: MerkleTree.leafHash(proven.leaf), index: proven.index, size: head.treeSize,
                proof: proven.path.map { [UInt8]($0) }, root: [UInt8](head.rootHash))
        else {
            throw RPCError(
                code: .invalidArgument,
                message:
                    "\(field): entry \(proven.index) is not proven included in the tree of \(head.treeSize) entries")
        }
        do {
            let signed = try Orrery_Common_V1_Signed(serializedBytes: proven.leaf)
            guard signed.type == Orrery_Notary_V1_LogEntry.protoMessageName else {
                throw RPCError(code: .invalidArgument, message: "\(field): the leaf is a \(signed.type)")
            }
            let entry = try Orrery_Notary_V1_LogEntry(serializedBytes: signed.payload)
            guard entry.index == proven.index else {
                throw RPCError(code: .invalidArgument, message: "\(field): the entry says it is \(entry.index)")
            }
            return entry
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(code: .invalidArgument, message: "\(field): not a log entry signed by the notary: \(error)")
        }
    }

    /// What the contract makes due for the usage so far (cumulative), at least its minimum charge (a receipt
    /// proves the replica ran), at most its maximum cost (`ContractCharge`).
    var due: UInt64 {
        ContractCharge.due(
            contract.price,
            for: .init(
                cpuSeconds: usage.cpuSeconds, gpuSeconds: usage.gpuSeconds, wallSeconds: usage.wallSeconds,
                ramMibHours: usage.ramMibHours),
            completed: completed)
    }
}

/// Tree heads whose notary signature was checked, by the digest of their signed bytes: a release batch proven
/// against one head verifies its signature once.
final class VerifiedTreeHeads: Sendable {
    private let heads = Mutex<[Data: Orrery_Notary_V1_TreeHead]>([:])

    func verify(_ signed: Orrery_Notary_V1_SignedTreeHead) throws -> Orrery_Notary_V1_TreeHead {
        let key = Data(SHA256.hash(data: try signed.serializedBytes() as Data))
        if let known = heads.withLock({ $0[key] }) { return known }
        let head = try TreeHeadWitness.verify(signed)
        heads.withLock { heads in
            if heads.count >= 1024 { heads.removeAll() }
            heads[key] = head
        }
        return head
    }
}

/// The penalties of SLA breaches the notary logged for a contract, each proven included under a signed head with
/// the contract's own entry (which names the owner who pays them).
struct ProvenPenalties {
    let owner: String
    let total: UInt64

    /// nil when the request carries no breach.
    static func verify(_ request: Orrery_Settlement_V1_RefundRequest, notary: DID?, heads: VerifiedTreeHeads) throws
        -> ProvenPenalties?
    {
        guard !request.breaches.isEmpty else { return nil }
        guard let notary else {
            throw RPCError(code: .failedPrecondition, message: "no notary DID is configured: breaches cannot be proven")
        }
        let head: Orrery_Notary_V1_TreeHead
        do { head = try heads.verify(request.treeHead) } catch {
            throw RPCError(code: .invalidArgument, message: "tree_head: \(error)")
        }
        guard head.logDid == notary.string else {
            throw RPCError(code: .permissionDenied, message: "tree_head is signed by \(head.logDid), not by \(notary)")
        }
        let contractEntry = try ProvenRelease.included(request.contract, "contract", head: head, notary: notary)
        guard contractEntry.kind == .contract, contractEntry.contractID == request.contractID,
            let contract = try? Orrery_Notary_V1_Contract(serializedBytes: contractEntry.act.payload)
        else {
            throw RPCError(code: .invalidArgument, message: "contract: not contract \(request.contractID)'s entry")
        }
        var total: UInt64 = 0
        var counted = Set<UInt64>()
        for proven in request.breaches where counted.insert(proven.index).inserted {
            let entry = try ProvenRelease.included(proven, "breaches", head: head, notary: notary)
            guard entry.kind == .slaBreach, entry.contractID == request.contractID else {
                throw RPCError(
                    code: .invalidArgument, message: "breaches: entry \(proven.index) is not a breach of this contract")
            }
            do {
                try SignedMessage.verify(
                    entry.act, type: Orrery_Notary_V1_SlaBreach.protoMessageName, requiring: [notary])
            } catch {
                throw RPCError(code: .permissionDenied, message: "breaches: entry \(proven.index) is not the notary's")
            }
            let breach = try Orrery_Notary_V1_SlaBreach(serializedBytes: entry.act.payload)
            total = total.addingReportingOverflow(breach.penalty).overflow ? UInt64.max : total + breach.penalty
        }
        return ProvenPenalties(owner: contract.ownerDid, total: min(total, contract.price.maxCost))
    }
}
