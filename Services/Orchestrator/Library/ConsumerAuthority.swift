internal import Foundation
internal import GRPCCore
internal import OrreryIdentity

/// The consumer's authority for the orchestrator to propose contracts on its behalf (docs/ARCHITECTURE.md §2): a UCAN container
/// holding the consumer's delegation of `/orrery/notary/propose` to this orchestrator. Checked at submission so a
/// deployment never gets as far as offers without it; the notary checks it again (with its policy) on each
/// proposal, and every contract embeds it.
enum ConsumerAuthority {
    static let command = "/orrery/notary/propose"
    /// The delegation must outlive the submission by at least this long (the contracts are proposed later).
    static let minimumRemainingLife: Int64 = 300

    static let escrowCommand = "/orrery/settlement/escrow"

    /// Checks that `container` holds the consumer's valid delegation of `command` (proposing contracts, or escrow in
    /// `settlement_authority`) to this orchestrator.
    static func validate(
        _ container: Data, consumer: String, orchestrator: String, now: Int64, command: String = command,
        field: String = "consumer_authority"
    ) throws {
        let hint =
            "\(field): the consumer's delegation of \(command) to the orchestrator \(orchestrator) (`orrery run` makes it)"
        guard !container.isEmpty else { throw RPCError(code: .invalidArgument, message: "\(hint) is required") }
        let delegations: [Delegation]
        do {
            delegations = try UCANContainer.decode(Array(container)).map { try Delegation(bytes: $0) }
        } catch {
            throw RPCError(code: .invalidArgument, message: "\(hint): not a UCAN container of delegations (\(error))")
        }
        let wanted = try Command(command)
        guard
            let delegation = delegations.first(where: {
                $0.issuer.string == consumer && $0.audience.string == orchestrator
                    && $0.subject?.string == consumer && $0.command.covers(wanted)
            })
        else {
            throw RPCError(
                code: .invalidArgument,
                message:
                    "\(hint) is missing: none of its delegations is from \(consumer) to \(orchestrator) for \(command)")
        }
        guard delegation.envelope.signatureIsValid(issuer: delegation.issuer) else {
            throw RPCError(
                code: .unauthenticated, message: "\(field): the delegation's signature does not verify")
        }
        if let expiration = delegation.expiration, expiration < now + minimumRemainingLife {
            throw RPCError(
                code: .invalidArgument,
                message: "\(field): the delegation expires at \(expiration), within \(minimumRemainingLife) s"
            )
        }
    }
}
