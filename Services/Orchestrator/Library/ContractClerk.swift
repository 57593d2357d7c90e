internal import Crypto
internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryIdentity
internal import OrreryProto
internal import SwiftProtobuf

/// The orchestrator's side of contracts (docs/ARCHITECTURE.md §2): drafts and signs each offer's contract on the consumer's
/// behalf, records accepted ones with the notary (propose under the consumer's delegation, then the device's
/// acceptance), and terminates the contracts of replicas that ended early.
struct ContractClerk: Sendable {
    let key: SigningKey
    let notary: NotaryLink?
    let fleet: FleetView
    let logger: Logger

    /// The duration a job without a maximum is priced for (its offer's job cost covers one hour).
    static let defaultDurationSeconds: UInt64 = 3600

    /// The contract proposed with an offer, signed by this orchestrator.
    func draft(
        offer: Orrery_Orchestrator_V1_Offer, assignment: Orrery_Orchestrator_V1_Assignment,
        spec: Orrery_Orchestrator_V1_WorkloadSpec, authority: Data, replaces: String
    ) throws -> Orrery_Common_V1_Signed {
        let resources = offer.spec.resources
        let contract = Orrery_Notary_V1_Contract.with {
            $0.id = DeploymentStore.newID(prefix: "ctr_")
            $0.consumerDid = offer.consumerDid
            $0.deviceDid = assignment.deviceDid
            $0.ownerDid = fleet.device(assignment.deviceDid)?.ownerDid ?? ""
            $0.orchestratorDid = key.did.string
            $0.deploymentID = offer.deploymentID
            $0.allocation = offer.allocation
            $0.replica = offer.replica
            $0.resources = .with {
                $0.cpuCores = resources.cpuCores
                $0.ramMib = resources.ramMib
                $0.diskMib = resources.diskMib
                $0.gpuCount = resources.gpu.count
            }
            $0.price = .with {
                $0.model = .perTime
                $0.hourlyPrice = offer.hourlyPrice
                $0.maxCost = offer.jobCost
                $0.minimumCharge = min(
                    fleet.device(assignment.deviceDid)?.capabilities.prices.minimumPerJob ?? 0, offer.jobCost)
            }
            $0.maxDurationSeconds =
                offer.spec.maxDurationSeconds == 0 ? Self.defaultDurationSeconds : UInt64(offer.spec.maxDurationSeconds)
            $0.sla = spec.sla
            $0.penalties = spec.penalties
            $0.settlementChain = "ledger"
            $0.replaces = replaces
            $0.proposedAt = Google_Protobuf_Timestamp(date: Date())
            $0.consumerAuthority = authority
        }
        return SignedMessage.make(
            type: Orrery_Notary_V1_Contract.protoMessageName, payload: try contract.serializedBytes(), signers: [key])
    }

    /// What recording a replica's contract came to.
    enum Recorded: Sendable {
        case recorded(contractID: String, entry: UInt64)
        /// The notary (or the device's acceptance) refused it: the deployment cannot be contracted.
        case refused(String)
    }

    /// Records the contracts of accepted offers: each proposed under its consumer's delegation, then every
    /// device's acceptance in one AcceptContracts call. Every call is idempotent (keyed by the contract), so a
    /// retry after a crash is safe. Returns each offer's outcome, in order.
    /// - Throws: when the notary cannot be reached (try again later).
    func record(_ accepted: [(offer: Orrery_Orchestrator_V1_Offer, bid: Orrery_Orchestrator_V1_Bid)]) async throws
        -> [(offerID: String, recorded: Recorded)]
    {
        guard let notary else {
            return accepted.map { ($0.offer.offerID, .refused("no contract notary is configured (notary.address)")) }
        }
        var outcomes: [String: Recorded] = [:]
        var acceptances: [(offerID: String, contractID: String, acceptance: Orrery_Common_V1_Signed)] = []
        for (offer, bid) in accepted {
            let contract: Orrery_Notary_V1_Contract
            let proofs: [Delegation]
            do {
                contract = try Orrery_Notary_V1_Contract(serializedBytes: offer.contract.payload)
                proofs = try UCANContainer.decode(Array(contract.consumerAuthority)).map { try Delegation(bytes: $0) }
            } catch {
                outcomes[offer.offerID] = .refused("offer \(offer.offerID) carries no readable contract: \(error)")
                continue
            }
            guard bid.hasAcceptance else {
                outcomes[offer.offerID] = .refused(
                    "device \(contract.deviceDid) bid without accepting contract \(contract.id)")
                continue
            }
            do {
                _ = try await notary.propose(
                    .with {
                        $0.proposal = offer.contract
                        $0.amount = contract.price.maxCost
                        $0.idempotencyKey = "propose/\(contract.id)"
                    }, consumer: try DID(contract.consumerDid), proofs: proofs)
                acceptances.append((offer.offerID, contract.id, bid.acceptance))
            } catch let error as RPCError where Self.isRefusal(error.code) {
                outcomes[offer.offerID] = .refused("the notary refused contract \(contract.id): \(error.message)")
            }
        }
        if !acceptances.isEmpty {
            let response = try await notary.acceptMany(
                .with {
                    $0.acceptances = acceptances.map(\.acceptance)
                    $0.idempotencyKey = "accept/" + acceptances.map(\.contractID).joined(separator: ",").prefix(180)
                })
            for (sent, result) in zip(acceptances, response.results) {
                if result.code == 0 {
                    outcomes[sent.offerID] = .recorded(
                        contractID: sent.contractID, entry: result.record.entryIndexes.first ?? 0)
                } else if let status = Status.Code(rawValue: Int(result.code)), let code = RPCError.Code(status),
                    Self.isRefusal(code)
                {
                    outcomes[sent.offerID] = .refused(
                        "the notary refused the device's acceptance of \(sent.contractID): \(result.message)")
                } else {
                    throw RPCError(code: .unavailable, message: "accepting \(sent.contractID): \(result.message)")
                }
            }
        }
        return accepted.compactMap { item in outcomes[item.offer.offerID].map { (item.offer.offerID, $0) } }
    }

    /// Tells the notary a contract ended early; true once it is terminated (or already ended otherwise).
    func terminate(_ contractID: String, reason: String) async throws -> Bool {
        guard let notary else { return false }
        let transition = Orrery_Notary_V1_ContractTransition.with {
            $0.contractID = contractID
            $0.to = .terminated
            $0.reason = String(reason.prefix(500))
            $0.at = Google_Protobuf_Timestamp(date: Date())
        }
        do {
            _ = try await notary.transition(
                .with {
                    $0.transition = SignedMessage.make(
                        type: Orrery_Notary_V1_ContractTransition.protoMessageName,
                        payload: try transition.serializedBytes(), signers: [key])
                    $0.idempotencyKey = "terminate/\(contractID)"
                })
            return true
        } catch let error as RPCError where error.code == .failedPrecondition || error.code == .notFound {
            // Completed, already terminated, or never logged: nothing to end.
            logger.info("contract not terminated", metadata: ["contract": "\(contractID)", "why": "\(error.message)"])
            return true
        }
    }

    /// A status that will not change by retrying.
    static func isRefusal(_ code: RPCError.Code) -> Bool {
        [.invalidArgument, .permissionDenied, .unauthenticated, .failedPrecondition, .alreadyExists, .notFound]
            .contains(code)
    }
}
