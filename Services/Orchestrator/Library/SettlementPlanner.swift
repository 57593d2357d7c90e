internal import Foundation
internal import GRPCCore

/// Settlement's decisions as pure functions, as `DeploymentPlanner` is for the lifecycle: when a replica's contract
/// has ended (so its escrow's rest is refunded), which queued release or refund `SettlementClerk` asks the gateway
/// for next, and what the gateway's answer means for the task. Nothing here reads a clock, a database or a network
/// (`SettlementPlannerTests`; the SQL that selects ended contracts is checked against `contractEnded` row by row).
enum SettlementPlanner {
    // MARK: - When a contract ends

    /// Offer states whose contract ends at once: withdrawn before it ran, or it never started.
    static let endsAtOnce: [OfferState] = [.withdrawn, .failedToStart]
    /// A replica moved before it started: `relocated` with no grace to wait out.
    static let endsAtOnceWithoutGrace: [OfferState] = [.relocated]

    /// Whether the contract of an offer in `state` has ended (it is terminated with the notary, then its escrow's
    /// rest is refunded). `graceEnded`: nil when the offer has no grace for its device's final report, otherwise
    /// whether that grace is over (its device reported the end with every receipt recorded, or the time ran out).
    static func contractEnded(state: OfferState, graceEnded: Bool?) -> Bool {
        if endsAtOnce.contains(state) { return true }
        if endsAtOnceWithoutGrace.contains(state), graceEnded == nil { return true }
        return OfferState.endingAfterReport.contains(state) && graceEnded == true
    }

    // MARK: - Releases and refunds

    /// What the gateway still has to hear about a contract.
    enum Task: Hashable, Sendable, CustomStringConvertible {
        /// Pay what the receipt the notary recorded at `entry` makes due.
        case release(contract: String, entry: UInt64)
        /// Return the escrow's rest, less the penalties of the SLA breaches the notary logged (unless the operator
        /// forwent them, the gateway having refused their proof): the contract ended.
        case refund(contract: String, penalties: Bool = true)

        var contract: String {
            switch self {
            case .release(let contract, _), .refund(let contract, _): contract
            }
        }

        var description: String {
            switch self {
            case .release(let contract, let entry): "release \(contract)@\(entry)"
            case .refund(let contract, let penalties): "refund \(contract)\(penalties ? "" : " without penalties")"
            }
        }
    }

    /// A task not done yet, in the order it was queued.
    struct Queued: Sendable {
        var task: Task
        /// Held for the operator (the gateway refused its proof) and not yet sent back to the queue.
        var held: Bool = false
    }

    /// The tasks to carry out now, in order: every release that is not held, oldest first; then the refund of each
    /// contract with no release outstanding (a held release holds its contract's refund: refunding first would
    /// leave the provider's pay with nothing to come from).
    static func due(_ queued: [Queued]) -> [Task] {
        var releasesOutstanding: Set<String> = []
        for item in queued {
            if case .release(let contract, _) = item.task { releasesOutstanding.insert(contract) }
        }
        let releases = queued.filter {
            if case .release = $0.task { return !$0.held }
            return false
        }
        let refunds = queued.filter {
            if case .refund(let contract, _) = $0.task { return !$0.held && !releasesOutstanding.contains(contract) }
            return false
        }
        return (releases + refunds).map(\.task)
    }

    /// How the gateway answered a task.
    enum Answer: Sendable {
        case done
        /// The gateway answered with an error status.
        case refused(RPCError.Code, message: String)
        /// No answer for good (unreachable, timed out, the notary's proofs unavailable).
        case failed(description: String)
    }

    /// The gateway's answers to proofs that do not verify (a log entry tampered or corrupted, a head not the notary's).
    static let proofRefusals: Set<RPCError.Code> = [.invalidArgument, .permissionDenied]

    /// What becomes of a task after an answer.
    enum Outcome: Equatable, Sendable {
        /// Done for good, with a note when the gateway refused it (nothing more due, no escrow for it).
        case finished(note: String)
        /// An incident: the gateway refused the notary's proofs. Held (a release holds its contract's refund too)
        /// until the operator retries or forgoes it.
        case hold(reason: String)
        /// Asked again on a later pass; the rest of this pass waits too (the gateway is likely down).
        case retryLater(error: String)
    }

    /// - Parameter proved: the request carried the notary's inclusion proofs (every release does; a refund when the
    ///   contract has logged breaches).
    static func outcome(of task: Task, proved: Bool, _ answer: Answer) -> Outcome {
        switch answer {
        case .done:
            return .finished(note: "")
        case .refused(let code, let message) where proved && proofRefusals.contains(code):
            // Refusing it for good would forfeit the provider's pay (a release) or leave the escrow locked (a
            // refund): the operator decides.
            return .hold(reason: message)
        case .refused(let code, let message) where ContractClerk.isRefusal(code):
            return .finished(note: message)
        case .refused(let code, let message):
            return .retryLater(error: "\(code): \(message)")
        case .failed(let description):
            return .retryLater(error: description)
        }
    }
}
